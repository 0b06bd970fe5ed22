/* SPDX-License-Identifier: Apache-2.0 */
/* zkw-example - the seed's example program, in polling or event mode.
 *
 * In-process (a watcher with its own ZooKeeper session, like the seed):
 *     zkw-example -z 127.0.0.1:2181 -f /tmp/myconfig --poll
 *     zkw-example -z 127.0.0.1:2181 -f /tmp_pointers/pointer1 -p --event
 * Attached to a zkw-broker through shared memory (no session of its own):
 *     zkw-example --shm zkw.tmp.myconfig --event
 *
 * It prints exactly the seed's lines: "Valid File? True", "Contents: ...",
 * "The valid state is now True", "Your file contents: ...", "An error was
 * thrown: ...", "Use a keyboard interrupt to shut down the process."
 * Content and error texts come from outside (a segment, a ZooKeeper node):
 * they are printed through lib/zkw_text.h, lines kept, every other control
 * byte, escape sequence and invalid UTF-8 byte shown as \xNN.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zkw/client.h>
#include <zkw/watcher.h>

#include "zkw_opt.h"
#include "zkw_text.h"

#define EXIT_USAGE 2

struct example {
	const char *hosts, *path, *shm;
	const char *socket; /* --socket; with --broker alone: $ZKW_SOCKET or the default */
	bool broker;        /* subscribe to -f PATH through a zkw-broker's control socket */
	bool pointer, valid_init, poll, event;
	int sleep_s;
	int exit_after_s; /* 0 = until interrupted */
	uid_t owner;      /* --owner; (uid_t)-1: the reader's default policy */
	bool owner_set;
};

/* SIGINT and SIGTERM stay blocked in every thread and are taken with
 * sigtimedwait: no handler, so none can be lost between a check and a
 * sleep, and none is deferred by a sanitizer's runtime. */
static sigset_t stop_signals;
static bool stop_requested;

/* Has a stop signal arrived? Waits for one up to ms (0: just look). */
static bool stop_signal_within(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};

	if (!stop_requested && sigtimedwait(&stop_signals, NULL, &ts) > 0)
		stop_requested = true;
	return stop_requested;
}

static const char *py_bool(bool b)
{
	return b ? "True" : "False";
}

/* The seed's three handlers. stdout is line-buffered; handlers of the
 * in-process watcher run on its dispatch thread, and stdio locks. */
static void valid_file(void *ctx, bool state)
{
	(void)ctx;
	printf("The valid state is now %s\n", py_bool(state));
}

static void change_file(void *ctx, const void *content, size_t len)
{
	(void)ctx;
	flockfile(stdout);
	fputs("Your file contents: ", stdout);
	zkw_text_put(stdout, content, len, ZKW_TEXT_LINES);
	fputc('\n', stdout);
	funlockfile(stdout);
}

static void error_file(void *ctx, const char *message)
{
	(void)ctx;
	flockfile(stdout);
	fputs("An error was thrown: ", stdout);
	zkw_text_puts(stdout, message, ZKW_TEXT_LINES);
	fputc('\n', stdout);
	funlockfile(stdout);
}

static void print_poll(bool valid, const void *content, size_t len)
{
	flockfile(stdout);
	printf("Valid File? %s\nContents: ", py_bool(valid));
	zkw_text_put(stdout, content, len, ZKW_TEXT_LINES);
	fputc('\n', stdout);
	funlockfile(stdout);
}

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: zkw-example (-z HOSTS -f PATH | -f PATH --broker [--socket PATH] | --shm NAME)\n"
	        "                   [--owner USER|UID] [-p] [-s SEC] [-v]\n"
	        "                   --poll|--event\n"
	        "The Zookeeper Watcher example: print the watched file as it changes.\n"
	        "  -z, --zoo-keeper HOSTS  ZooKeeper connect string (in-process watcher)\n"
	        "  -f, --file PATH         the file to watch in ZooKeeper\n"
	        "      --broker            subscribe to -f PATH through a zkw-broker instead of ZooKeeper\n"
	        "      --socket PATH       the broker's control socket (implies --broker; default\n"
	        "                          $ZKW_SOCKET, else " ZKW_SOCKET_DEFAULT ")\n"
	        "      --shm NAME          attach to a zkw-broker's segment by name instead\n"
	        "      --owner USER|UID    with --shm or --broker: trust only this owner\n"
	        "                          (default: root or yourself, or $ZKW_SEGMENT_OWNER)\n"
	        "  -p, --pointer           the file holds the path of the real config file\n"
	        "  -s, --sleep SEC         seconds between poll checks (default 1)\n"
	        "  -v, --valid-init        do NOT require ZooKeeper to be up at start\n"
	        "      --poll              polling example\n"
	        "      --event             event driven example\n"
	        "      --exit-after SEC    stop by itself after SEC seconds (default: on Ctrl-C)\n"
	        "  -V, --version           print the version\n"
	        "  -h, --help              this help\n"
	        "The short options are the original Zookeeper Watcher example's (-z, -f, -p, -s, -v\n"
	        "for valid-init): they are its contract, kept as they were; the other zkw tools\n"
	        "use -v for --verbose.\n");
}

static int parse_args(int argc, char **argv, struct example *ex)
{
	struct zkw_opt o;
	int c;

	zkw_opt_init(&o, argc, argv, "zkw-example",
	             "z|zoo-keeper: f|file: p|pointer s|sleep: v|valid-init P=poll E=event S=shm: "
	             "X=exit-after: O=owner: B=broker K=socket: V|version h|help Z=zookeeper:",
	             usage);
	while ((c = zkw_opt_next(&o)) != -1) {
		switch (c) {
		case 'z':
		case 'Z': /* --zookeeper: the other tools' spelling, accepted too */
			ex->hosts = o.arg;
			break;
		case 'f': ex->path = o.arg; break;
		case 'p': ex->pointer = true; break;
		case 'v': ex->valid_init = false; break;
		case 'P': ex->poll = true; break;
		case 'E': ex->event = true; break;
		case 'S': ex->shm = o.arg; break;
		case 'B': ex->broker = true; break;
		case 'V': printf("zkw-example %s\n", ZKW_VERSION); exit(0);
		case 'K':
			ex->broker = true;
			ex->socket = o.arg;
			break;
		case 'O':
			if (zkw_opt_uid(&o, &ex->owner))
				return EXIT_USAGE;
			ex->owner_set = true;
			break;
		case 's':
			if (zkw_opt_int(&o, "a number of seconds", 1, 86400, &ex->sleep_s))
				return EXIT_USAGE;
			break;
		case 'X':
			if (zkw_opt_int(&o, "seconds", 0, 86400, &ex->exit_after_s))
				return EXIT_USAGE;
			break;
		default: return EXIT_USAGE;
		}
	}
	if (zkw_opt_no_operands(&o))
		return EXIT_USAGE;
	if (ex->poll == ex->event) {
		fprintf(stderr, "zkw-example: give exactly one of --poll and --event\n");
		return EXIT_USAGE;
	}
	if (ex->broker && (ex->shm || ex->hosts || !ex->path)) {
		fprintf(stderr, "zkw-example: --broker takes -f PATH, and neither -z nor --shm\n");
		return EXIT_USAGE;
	}
	if (!ex->shm && !ex->broker && (!ex->hosts || !ex->path)) {
		fprintf(stderr, "zkw-example: give -z HOSTS and -f PATH, -f PATH --broker, or --shm NAME\n");
		return EXIT_USAGE;
	}
	if (ex->owner_set && !ex->shm && !ex->broker) {
		fprintf(stderr, "zkw-example: --owner goes with --shm or --broker (a segment's owner)\n");
		return EXIT_USAGE;
	}
	return 0;
}

static bool time_is_up(const struct example *ex, time_t start)
{
	return stop_signal_within(0) || (ex->exit_after_s && time(NULL) - start >= ex->exit_after_s);
}

/* Sleep up to seconds, returning early on a stop signal. */
static void nap(int seconds)
{
	stop_signal_within((long)seconds * 1000);
}

static int run_in_process(const struct example *ex, time_t start)
{
	zkw_handlers h = {.valid = valid_file, .config = change_file, .error = error_file};
	unsigned flags = ZKW_WATCHER_ENSURE | (ex->pointer ? ZKW_WATCHER_POINTER : 0) |
	                 (ex->valid_init || ex->poll ? ZKW_WATCHER_VALID_INIT : 0);
	char why[512] = "", *buf = NULL;
	zkw_watcher *w;

	if (zkw_watcher_open(&w, ex->hosts, ex->path, ex->event ? &h : NULL, flags, why, sizeof(why)) < 0) {
		fprintf(stderr, "zkw-example: %s\n", why);
		return 1;
	}
	printf("Use a keyboard interrupt to shut down the process.\n");
	while (!time_is_up(ex, start)) {
		if (ex->poll) {
			size_t len = zkw_watcher_content_len(w, false);
			char *bigger = realloc(buf, len + 1);
			ssize_t n;

			if (!bigger)
				break;
			buf = bigger;
			n = zkw_watcher_get_file_contents(w, false, buf, len + 1);
			print_poll(zkw_watcher_is_valid(w), buf, n > 0 ? (size_t)n : 0);
		}
		nap(ex->sleep_s);
	}
	zkw_watcher_close(w);
	free(buf);
	return 0;
}

/* The segment, by name (--shm) or through the broker's socket (--broker). */
static int open_segment(const struct example *ex, zkw_reader *r)
{
	zkw_reader_options ropt = {.expected_uid = ex->owner};
	zkw_subscribe_options sopt = {.timeout_ms = 0, .expected_uid = ex->owner};

	if (!ex->broker)
		return zkw_reader_open_ex(r, ex->shm, &ropt);
	return zkw_reader_subscribe_ex(r, ex->socket, ex->path, ex->pointer ? ZKW_SUBSCRIBE_POINTER : 0, &sopt);
}

/* The broker replaced the segment (retired): open the name again into the
 * same reader, which the dispatcher goes on with (generations and
 * content_gen continue: nothing is delivered twice), and grow the buffer
 * if the new segment holds more. 0, or -errno after saying why. */
static int reopen(const struct example *ex, zkw_reader *r, zkw_dispatcher *d, char **buf, size_t *cap)
{
	int rc;

	zkw_reader_close(r);
	rc = open_segment(ex, r);
	if (rc) {
		fprintf(stderr, "zkw-example: segment %s was replaced by its broker; reopening it: %s\n",
		        ex->shm ? ex->shm : ex->path, r->why);
		return rc;
	}
	if (zkw_reader_capacity(r) > *cap) {
		char *bigger = realloc(*buf, (size_t)zkw_reader_capacity(r) + 1);

		if (!bigger) {
			fprintf(stderr, "zkw-example: segment %s: out of memory\n", ex->shm);
			return -ENOMEM;
		}
		*buf = bigger;
		*cap = (size_t)zkw_reader_capacity(r);
	}
	d->buf = *buf;
	d->cap = *cap;
	return 0;
}

static int run_shm(const struct example *ex, time_t start)
{
	zkw_handlers h = {.valid = valid_file, .config = change_file, .error = error_file};
	const char *what = ex->shm ? ex->shm : ex->path;
	zkw_dispatcher d;
	zkw_snapshot meta;
	zkw_reader r;
	char *buf;
	size_t cap;
	int rc = open_segment(ex, &r);

	if (rc) {
		fprintf(stderr, "zkw-example: %s %s: %s\n", ex->shm ? "segment" : "subscription to", what, r.why);
		return 1;
	}
	cap = (size_t)zkw_reader_capacity(&r);
	buf = malloc(cap + 1);
	if (!buf) {
		zkw_reader_close(&r);
		return 1;
	}
	zkw_dispatcher_init(&d, &r, &h, buf, cap);
	if (ex->event)
		zkw_dispatch(&d, 0); /* the current state, before the banner */
	printf("Use a keyboard interrupt to shut down the process.\n");
	while (!time_is_up(ex, start)) {
		if (ex->event) {
			/* Wake five times a second to notice a stop signal
			 * (blocked: it cannot interrupt the wait) and --exit-after. */
			rc = zkw_dispatch(&d, 200);
			if (rc == -ESTALE && (rc = reopen(ex, &r, &d, &buf, &cap)) < 0)
				break;
		} else {
			ssize_t n;

			if (zkw_reader_retired(&r) && (rc = reopen(ex, &r, &d, &buf, &cap)) < 0)
				break;
			n = zkw_reader_read(&r, &meta, buf, cap);
			rc = n < 0 ? (int)n : 0;
			print_poll(n >= 0 && meta.valid, buf, n > 0 ? (size_t)n : 0);
			nap(ex->sleep_s);
		}
		if (rc < 0 && rc != -EINTR && rc != -EAGAIN) {
			fprintf(stderr, "zkw-example: reading %s: %s\n", what, strerror(-rc));
			break;
		}
	}
	free(buf);
	zkw_reader_close(&r);
	return rc < 0 && rc != -EINTR && rc != -EAGAIN ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct example ex = {.valid_init = true, .sleep_s = 1, .owner = (uid_t)-1};
	int rc;

	rc = parse_args(argc, argv, &ex);
	if (rc)
		return rc;
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* Before any thread exists, so that every thread inherits the mask. */
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGINT);
	sigaddset(&stop_signals, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
	return ex.shm || ex.broker ? run_shm(&ex, time(NULL)) : run_in_process(&ex, time(NULL));
}
