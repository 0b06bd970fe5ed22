/* zkw-broker - one ZooKeeper session per host, every watch published into
 * its own shared-memory segment.
 *
 *     zkw-broker -z 127.0.0.1:2181 -f /tmp/myconfig
 *     zkw-broker -z HOSTS -f /tmp_pointers/pointer1 -p --shm app -f /other --ensure
 *
 * The watcher (watcher.c) knows ZooKeeper and nothing of shared memory; the
 * writer (writer.c) knows the segment and nothing of ZooKeeper. This file
 * wires each watch's state changes into its writer, and owns signals, logs
 * and the command line.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <zkw/client.h>
#include <zkw/watcher.h>

#include "log.h"
#include "writer.h"

#define EXIT_USAGE 2
#define MAX_WATCHES 64
#define STOPPED_ERROR "zkw-broker stopped"

/* One watched path and the segment it is published into. */
struct broker_watch {
	const char *path;
	bool pointer;
	bool ensure;
	char shm[ZKW_SHM_NAME_MAX + 1];
	uint64_t capacity;
	zkw_writer *writer;
	pthread_mutex_t publish_lock; /* on_state may come from two threads */
	zkw_watch *watch;
};

struct broker {
	const char *hosts;
	struct broker_watch watches[MAX_WATCHES];
	int nwatches;
	zkw_session_options session;
	zkw_writer_options segment;
	bool unlink_on_exit;
};

static void usage(FILE *out)
{
	fprintf(out,
		"usage: zkw-broker -z HOSTS -f PATH [watch options] [-f PATH [watch options]]... [options]\n"
		"Watch ZooKeeper nodes over one session and publish each into shared memory.\n"
		"\n"
		"  -z, --zookeeper HOSTS     connect string: host:port[,host:port...][/chroot]\n"
		"  -f, --file PATH           a node to watch; repeat for several watches\n"
		"watch options (apply to the preceding -f; before any -f, to every watch):\n"
		"  -p, --pointer             the node holds the path of the node to watch\n"
		"      --ensure              create the node (and parents) empty if missing\n"
		"      --shm NAME            segment name (default zkw + PATH with '/' -> '.')\n"
		"      --capacity BYTES      content capacity, suffix k or m allowed (default 1m)\n"
		"options:\n"
		"      --no-valid-init       start even when ZooKeeper does not answer; retry\n"
		"      --init-timeout MS     with valid init: give up after MS (default 10000)\n"
		"      --session-timeout MS  ZooKeeper session timeout (default 10000)\n"
		"      --reconcile SECONDS   re-check every watch this often, jittered (default 60; 0 off)\n"
		"      --mode MODE           segment permissions, octal (default 0640)\n"
		"      --group GROUP         segment group, name or gid\n"
		"      --unlink-on-exit      remove the segments when stopping\n"
		"  -v, --verbose             log ZooKeeper client details too\n"
		"  -h, --help                this help\n");
}

static int bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad_usage(const char *fmt, ...)
{
	va_list ap;

	fputs("zkw-broker: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs(" (try --help)\n", stderr);
	return EXIT_USAGE;
}

static int parse_capacity(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *s == '-')
		return -1;
	if (*end == 'k' || *end == 'K')
		v *= 1024, end++;
	else if (*end == 'm' || *end == 'M')
		v *= 1024 * 1024, end++;
	if (*end || v == 0 || v > ZKW_CAPACITY_MAX)
		return -1;
	*out = v;
	return 0;
}

static int parse_int(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static int parse_group(const char *s, gid_t *out)
{
	struct group *gr = getgrnam(s);
	long gid;

	if (gr) {
		*out = gr->gr_gid;
		return 0;
	}
	if (parse_int(s, 0, 0x7fffffff, &gid) < 0)
		return -1;
	*out = (gid_t)gid;
	return 0;
}

enum {
	OPT_ENSURE = 256,
	OPT_NO_VALID_INIT,
	OPT_INIT_TIMEOUT,
	OPT_SHM,
	OPT_CAPACITY,
	OPT_SESSION_TIMEOUT,
	OPT_RECONCILE,
	OPT_MODE,
	OPT_GROUP,
	OPT_UNLINK,
};

/* Watch options before the first -f are defaults for every watch. */
struct watch_defaults {
	bool pointer, ensure;
	const char *shm;
	uint64_t capacity;
};

static int apply_watch_option(struct broker *b, struct watch_defaults *d, int opt, const char *arg)
{
	struct broker_watch *w = b->nwatches ? &b->watches[b->nwatches - 1] : NULL;
	char name[ZKW_SHM_NAME_MAX + 1];
	uint64_t capacity;

	switch (opt) {
	case 'p':
		if (w) w->pointer = true; else d->pointer = true;
		return 0;
	case OPT_ENSURE:
		if (w) w->ensure = true; else d->ensure = true;
		return 0;
	case OPT_SHM:
		if (zkw_shm_name(name, sizeof(name), arg) < 0)
			return bad_usage("--shm %s: a segment name is one component of at most %d characters", arg,
					 ZKW_SHM_NAME_MAX - 1);
		if (w)
			memcpy(w->shm, name, sizeof(name));
		else
			d->shm = arg;
		return 0;
	default: /* OPT_CAPACITY */
		if (parse_capacity(arg, &capacity) < 0)
			return bad_usage("--capacity %s: want a byte count from 1 to %u (k and m suffixes allowed)",
					 arg, ZKW_CAPACITY_MAX);
		if (w) w->capacity = capacity; else d->capacity = capacity;
		return 0;
	}
}

static int add_watch(struct broker *b, const struct watch_defaults *d, const char *path)
{
	struct broker_watch *w;

	if (b->nwatches == MAX_WATCHES)
		return bad_usage("at most %d watches per broker", MAX_WATCHES);
	if (path[0] != '/')
		return bad_usage("-f %s: the path must be absolute (start with '/')", path);
	w = &b->watches[b->nwatches++];
	w->path = path;
	w->pointer = d->pointer;
	w->ensure = d->ensure;
	w->capacity = d->capacity;
	if (d->shm)
		zkw_shm_name(w->shm, sizeof(w->shm), d->shm);
	return 0;
}

/* Default segment names, and no two watches on one segment. */
static int finish_watches(struct broker *b)
{
	int i, j;

	for (i = 0; i < b->nwatches; i++) {
		struct broker_watch *w = &b->watches[i];

		if (!w->shm[0] && zkw_shm_default_name(w->shm, sizeof(w->shm), w->path) < 0)
			return bad_usage("-f %s: path too long for a default segment name; give --shm", w->path);
		for (j = 0; j < i; j++)
			if (strcmp(b->watches[j].shm, w->shm) == 0)
				return bad_usage("watches %s and %s would share segment %s; give each its own --shm",
						 b->watches[j].path, w->path, w->shm);
	}
	return 0;
}

static int parse_args(int argc, char **argv, struct broker *b)
{
	static const struct option opts[] = {
		{"zookeeper", required_argument, NULL, 'z'},
		{"file", required_argument, NULL, 'f'},
		{"pointer", no_argument, NULL, 'p'},
		{"ensure", no_argument, NULL, OPT_ENSURE},
		{"no-valid-init", no_argument, NULL, OPT_NO_VALID_INIT},
		{"init-timeout", required_argument, NULL, OPT_INIT_TIMEOUT},
		{"shm", required_argument, NULL, OPT_SHM},
		{"capacity", required_argument, NULL, OPT_CAPACITY},
		{"session-timeout", required_argument, NULL, OPT_SESSION_TIMEOUT},
		{"reconcile", required_argument, NULL, OPT_RECONCILE},
		{"mode", required_argument, NULL, OPT_MODE},
		{"group", required_argument, NULL, OPT_GROUP},
		{"unlink-on-exit", no_argument, NULL, OPT_UNLINK},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct watch_defaults defaults = {.capacity = ZKW_DEFAULT_CAPACITY};
	long v;
	char *end;
	int c, rc;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":z:f:pvh", opts, NULL)) != -1) {
		rc = 0;
		switch (c) {
		case 'z': b->hosts = optarg; break;
		case 'f': rc = add_watch(b, &defaults, optarg); break;
		case 'p':
		case OPT_ENSURE:
		case OPT_SHM:
		case OPT_CAPACITY: rc = apply_watch_option(b, &defaults, c, optarg); break;
		case OPT_NO_VALID_INIT: b->session.valid_init = false; break;
		case OPT_INIT_TIMEOUT:
			if (parse_int(optarg, 1, 3600000, &v) < 0)
				return bad_usage("--init-timeout %s: want milliseconds", optarg);
			b->session.init_timeout_ms = (int)v;
			break;
		case OPT_SESSION_TIMEOUT:
			if (parse_int(optarg, 1, 3600000, &v) < 0)
				return bad_usage("--session-timeout %s: want milliseconds", optarg);
			b->session.session_timeout_ms = (int)v;
			break;
		case OPT_RECONCILE:
			if (parse_int(optarg, 0, 86400, &v) < 0)
				return bad_usage("--reconcile %s: want seconds (0 turns it off)", optarg);
			b->session.reconcile_s = (int)v;
			break;
		case OPT_MODE:
			v = strtol(optarg, &end, 8);
			if (*end || end == optarg || v <= 0 || v > 0777)
				return bad_usage("--mode %s: want octal permissions such as 0640", optarg);
			b->segment.mode = (mode_t)v;
			break;
		case OPT_GROUP:
			if (parse_group(optarg, &b->segment.group) < 0)
				return bad_usage("--group %s: no such group", optarg);
			break;
		case OPT_UNLINK: b->unlink_on_exit = true; break;
		case 'v': zkw_log_verbose = true; break;
		case 'h': usage(stdout); exit(0);
		case ':': return bad_usage("option %s needs a value", argv[optind - 1]);
		default: return bad_usage("unknown option %s", argv[optind - 1]);
		}
		if (rc)
			return rc;
	}
	if (optind < argc)
		return bad_usage("unexpected argument \"%s\"", argv[optind]);
	if (!b->hosts)
		return bad_usage("missing -z HOSTS");
	if (!b->nwatches)
		return bad_usage("missing -f PATH");
	return finish_watches(b);
}

/* ---- publishing ------------------------------------------------------- */

/* Called by the watcher, possibly on the ZooKeeper completion thread: copy
 * into the segment and wake readers; never blocks beyond an uncontended
 * mutex. */
static void publish_state(void *ctx, const zkw_watch_state *st)
{
	struct broker_watch *w = ctx;
	zkw_publication p = {
		.valid = st->valid,
		.connected = st->connected,
		/* Until this broker has read the node once, the segment's
		 * content (from a previous broker) is the last good value. */
		.keep_content = st->content_serial == 0,
		.content = st->content,
		.len = st->len,
		.content_serial = st->content_serial,
		.version = st->version,
		.mzxid = st->mzxid,
		.pointer = st->pointer,
		.error = st->error,
		.confirmed_ns = st->confirmed_ns,
	};
	int rc;

	pthread_mutex_lock(&w->publish_lock);
	rc = zkw_writer_publish(w->writer, &p);
	if (rc == -EMSGSIZE) {
		/* The watcher checks max_len; this is the backstop. */
		p.valid = false;
		p.keep_content = true;
		p.error = "Content too large for the segment";
		rc = zkw_writer_publish(w->writer, &p);
	}
	pthread_mutex_unlock(&w->publish_lock);
	if (rc)
		zkw_log(ZKW_LOG_ERROR, "%s: cannot publish to %s: %s", w->path, w->shm, strerror(-rc));
	else
		zkw_log(ZKW_LOG_DEBUG, "%s: published generation %llu (valid=%d len=%zu)", w->path,
			(unsigned long long)zkw_writer_generation(w->writer), st->valid, st->len);
}

static void stop_publishing(struct broker *b)
{
	int i;

	for (i = 0; i < b->nwatches; i++) {
		struct broker_watch *w = &b->watches[i];
		zkw_publication stopped = {.keep_content = true, .error = STOPPED_ERROR};

		if (!w->writer)
			continue;
		zkw_writer_publish(w->writer, &stopped);
		zkw_writer_close(w->writer, b->unlink_on_exit);
		w->writer = NULL;
		pthread_mutex_destroy(&w->publish_lock);
	}
}

static int open_segments(struct broker *b)
{
	char why[512];
	int i, rc;

	for (i = 0; i < b->nwatches; i++) {
		struct broker_watch *w = &b->watches[i];
		zkw_writer_options o = b->segment;

		o.capacity = w->capacity;
		o.watch_path = w->path;
		rc = zkw_writer_open(&w->writer, w->shm, &o, why, sizeof(why));
		if (rc) {
			zkw_log(ZKW_LOG_ERROR, "%s", why);
			return -1;
		}
		pthread_mutex_init(&w->publish_lock, NULL);
		zkw_log(ZKW_LOG_INFO, "publishing %s%s into segment %s (capacity %llu, generation %llu)", w->path,
			w->pointer ? " (pointer)" : "", w->shm, (unsigned long long)w->capacity,
			(unsigned long long)zkw_writer_generation(w->writer));
	}
	return 0;
}

static int start_watches(struct broker *b, zkw_session *s)
{
	int i;

	for (i = 0; i < b->nwatches; i++) {
		struct broker_watch *w = &b->watches[i];
		zkw_watch_options o = {
			.pointer = w->pointer,
			.ensure = w->ensure,
			.max_len = w->capacity,
			.on_state = publish_state,
			.ctx = w,
		};

		w->watch = zkw_session_watch(s, w->path, &o);
		if (!w->watch) {
			zkw_log(ZKW_LOG_ERROR, "cannot watch %s", w->path);
			return -1;
		}
	}
	return 0;
}

/* ---- main ------------------------------------------------------------- */

static int wait_for_stop_signal(void)
{
	sigset_t set;
	int sig = 0;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigwait(&set, &sig);
	return sig;
}

int main(int argc, char **argv)
{
	static struct broker b;
	char why[512] = "";
	zkw_session *session = NULL;
	sigset_t set;
	int rc;

	zkw_session_options_init(&b.session);
	b.session.valid_init = true;
	b.session.session_timeout_ms = 10000;
	b.session.init_timeout_ms = 10000;
	b.segment.group = (gid_t)-1;
	rc = parse_args(argc, argv, &b);
	if (rc)
		return rc;
	b.session.log = zkw_log_sink;

	/* Every thread (ZooKeeper's, the watcher's) inherits a mask with the
	 * stop signals blocked; the main thread collects them with sigwait. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	zkw_log(ZKW_LOG_INFO, "starting: ZooKeeper %s, %d watch%s, session timeout %d ms", b.hosts, b.nwatches,
		b.nwatches == 1 ? "" : "es", b.session.session_timeout_ms);
	if (open_segments(&b) < 0) {
		stop_publishing(&b);
		return 1;
	}
	b.session.errbuf = why;
	b.session.errlen = sizeof(why);
	session = zkw_session_open(b.hosts, &b.session, &rc);
	if (!session) {
		zkw_log(ZKW_LOG_ERROR, "%s", why);
		stop_publishing(&b);
		return 1;
	}
	if (start_watches(&b, session) < 0) {
		zkw_session_close(session);
		stop_publishing(&b);
		return 1;
	}
	rc = wait_for_stop_signal();
	zkw_log(ZKW_LOG_INFO, "stopping on %s", strsignal(rc));
	zkw_session_close(session); /* no publish_state after this returns */
	stop_publishing(&b);
	zkw_log(ZKW_LOG_INFO, "stopped%s", b.unlink_on_exit ? ", segments removed" : "");
	return 0;
}
