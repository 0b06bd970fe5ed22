/* cli.c - zkw-broker's command line (see cli.h). Moved out of main.c
 * unchanged in behaviour: same options, same messages, same defaults. */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void zkw_cli_usage(FILE *out)
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

struct cli_why {
	char *buf;
	size_t len;
};

static int bad_usage(struct cli_why *why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad_usage(struct cli_why *why, const char *fmt, ...)
{
	va_list ap;

	if (why->buf && why->len) {
		va_start(ap, fmt);
		vsnprintf(why->buf, why->len, fmt, ap);
		va_end(ap);
	}
	return ZKW_CLI_USAGE;
}

static int parse_capacity(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *s == '-')
		return -1;
	/* Refuse before multiplying: a wrapped product could land in range. */
	if (*end == 'k' || *end == 'K') {
		if (v > ZKW_CAPACITY_MAX / 1024)
			return -1;
		v *= 1024, end++;
	} else if (*end == 'm' || *end == 'M') {
		if (v > ZKW_CAPACITY_MAX / (1024 * 1024))
			return -1;
		v *= 1024 * 1024, end++;
	}
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

static int apply_watch_option(zkw_cli *c, struct watch_defaults *d, int opt, const char *arg,
                              struct cli_why *why)
{
	zkw_cli_watch *w = c->nwatches ? &c->watches[c->nwatches - 1] : NULL;
	char name[ZKW_SHM_NAME_MAX + 1];
	uint64_t capacity;

	switch (opt) {
	case 'p':
		if (w)
			w->pointer = true;
		else
			d->pointer = true;
		return 0;
	case OPT_ENSURE:
		if (w)
			w->ensure = true;
		else
			d->ensure = true;
		return 0;
	case OPT_SHM:
		if (zkw_shm_name(name, sizeof(name), arg) < 0)
			return bad_usage(why,
			                 "--shm %s: a segment name is one component of at most %d characters",
			                 arg, ZKW_SHM_NAME_MAX - 1);
		if (w)
			memcpy(w->shm, name, sizeof(name));
		else
			d->shm = arg;
		return 0;
	default: /* OPT_CAPACITY */
		if (parse_capacity(arg, &capacity) < 0)
			return bad_usage(
			        why,
			        "--capacity %s: want a byte count from 1 to %u (k and m suffixes allowed)",
			        arg, ZKW_CAPACITY_MAX);
		if (w)
			w->capacity = capacity;
		else
			d->capacity = capacity;
		return 0;
	}
}

static int add_watch(zkw_cli *c, const struct watch_defaults *d, const char *path, struct cli_why *why)
{
	zkw_cli_watch *w;

	if (c->nwatches == ZKW_CLI_MAX_WATCHES)
		return bad_usage(why, "at most %d watches per broker", ZKW_CLI_MAX_WATCHES);
	if (path[0] != '/')
		return bad_usage(why, "-f %s: the path must be absolute (start with '/')", path);
	w = &c->watches[c->nwatches++];
	w->path = path;
	w->pointer = d->pointer;
	w->ensure = d->ensure;
	w->capacity = d->capacity;
	if (d->shm)
		zkw_shm_name(w->shm, sizeof(w->shm), d->shm);
	return 0;
}

/* Default segment names, and no two watches on one segment. */
static int finish_watches(zkw_cli *c, struct cli_why *why)
{
	int i, j;

	for (i = 0; i < c->nwatches; i++) {
		zkw_cli_watch *w = &c->watches[i];

		if (!w->shm[0] && zkw_shm_default_name(w->shm, sizeof(w->shm), w->path) < 0)
			return bad_usage(why, "-f %s: path too long for a default segment name; give --shm",
			                 w->path);
		for (j = 0; j < i; j++)
			if (strcmp(c->watches[j].shm, w->shm) == 0)
				return bad_usage(
				        why,
				        "watches %s and %s would share segment %s; give each its own --shm",
				        c->watches[j].path, w->path, w->shm);
	}
	return 0;
}

static void cli_defaults(zkw_cli *c)
{
	memset(c, 0, sizeof(*c));
	zkw_session_options_init(&c->session);
	c->session.valid_init = true;
	c->session.session_timeout_ms = 10000;
	c->session.init_timeout_ms = 10000;
	c->segment.group = (gid_t)-1;
}

int zkw_cli_parse(zkw_cli *c, int argc, char **argv, char *whybuf, size_t whylen)
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
	struct cli_why why = {whybuf, whylen};
	long v;
	char *end;
	int ch, rc;

	cli_defaults(c);
	if (whybuf && whylen)
		whybuf[0] = '\0';
	opterr = 0;
	optind = 0; /* glibc: full re-initialisation, so the parser can run again */
	while ((ch = getopt_long(argc, argv, ":z:f:pvh", opts, NULL)) != -1) {
		rc = 0;
		switch (ch) {
		case 'z': c->hosts = optarg; break;
		case 'f': rc = add_watch(c, &defaults, optarg, &why); break;
		case 'p':
		case OPT_ENSURE:
		case OPT_SHM:
		case OPT_CAPACITY: rc = apply_watch_option(c, &defaults, ch, optarg, &why); break;
		case OPT_NO_VALID_INIT: c->session.valid_init = false; break;
		case OPT_INIT_TIMEOUT:
			if (parse_int(optarg, 1, 3600000, &v) < 0)
				return bad_usage(&why, "--init-timeout %s: want milliseconds", optarg);
			c->session.init_timeout_ms = (int)v;
			break;
		case OPT_SESSION_TIMEOUT:
			if (parse_int(optarg, 1, 3600000, &v) < 0)
				return bad_usage(&why, "--session-timeout %s: want milliseconds", optarg);
			c->session.session_timeout_ms = (int)v;
			break;
		case OPT_RECONCILE:
			if (parse_int(optarg, 0, 86400, &v) < 0)
				return bad_usage(&why, "--reconcile %s: want seconds (0 turns it off)",
				                 optarg);
			c->session.reconcile_s = (int)v;
			break;
		case OPT_MODE:
			v = strtol(optarg, &end, 8);
			if (*end || end == optarg || v <= 0 || v > 0777)
				return bad_usage(&why, "--mode %s: want octal permissions such as 0640",
				                 optarg);
			c->segment.mode = (mode_t)v;
			break;
		case OPT_GROUP:
			if (parse_group(optarg, &c->segment.group) < 0)
				return bad_usage(&why, "--group %s: no such group", optarg);
			break;
		case OPT_UNLINK: c->unlink_on_exit = true; break;
		case 'v': c->verbose = true; break;
		case 'h': return ZKW_CLI_HELP;
		case ':': return bad_usage(&why, "option %s needs a value", argv[optind - 1]);
		default: return bad_usage(&why, "unknown option %s", argv[optind - 1]);
		}
		if (rc)
			return rc;
	}
	if (optind < argc)
		return bad_usage(&why, "unexpected argument \"%s\"", argv[optind]);
	if (!c->hosts)
		return bad_usage(&why, "missing -z HOSTS");
	if (!c->nwatches)
		return bad_usage(&why, "missing -f PATH");
	return finish_watches(c, &why);
}
