/* SPDX-License-Identifier: Apache-2.0 */
/* zkw-broker - one ZooKeeper session per host, every watch published into
 * its own shared-memory segment.
 *
 *     zkw-broker -z 127.0.0.1:2181 -f /tmp/myconfig
 *     zkw-broker -z HOSTS -f /tmp_pointers/pointer1 -p --shm app -f /other --ensure
 *
 * The watch library (broker/zk/) knows ZooKeeper and nothing of shared memory; the
 * writer (broker/publish/) knows the segment and nothing of ZooKeeper. This file
 * wires each watch's state changes into its writer, and owns signals, logs
 * and the command line.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <zkw/client.h>
#include <zkw/watcher.h>

#include "daemon/cli.h"
#include "daemon/log.h"
#include "publish/writer.h"

#define STOPPED_ERROR "zkw-broker stopped"
#define EXIT_USAGE    2 /* bad command line */

/* One watch at run time: its configuration and what serves it. */
struct broker_watch {
	const zkw_cli_watch *cfg;
	zkw_writer *writer;
	zkw_watch *watch;
};

struct broker {
	zkw_cli cli;
	struct broker_watch watches[ZKW_CLI_MAX_WATCHES];
	int nwatches;
};

/* ---- publishing ------------------------------------------------------- */

/* Called by the watcher, possibly on the ZooKeeper completion thread: copy
 * into the segment and wake readers, never block. The watcher serialises
 * on_state calls of one session (it holds the session lock), which is what
 * the writer's single-writer rule needs: no lock of our own. */
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

	rc = zkw_writer_publish(w->writer, &p);
	if (rc == -EMSGSIZE) {
		/* The watcher checks max_len; this is the backstop. */
		p.valid = false;
		p.keep_content = true;
		p.error = "Content too large for the segment";
		rc = zkw_writer_publish(w->writer, &p);
	}
	if (rc)
		zkw__log_printf(ZKW_LOG_ERROR, "%s: cannot publish to %s: %s", w->cfg->path, w->cfg->shm,
		                strerror(-rc));
	else
		zkw__log_printf(ZKW_LOG_DEBUG, "%s: published generation %llu (valid=%d len=%zu)",
		                w->cfg->path, (unsigned long long)zkw_writer_generation(w->writer), st->valid,
		                st->len);
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
		zkw_writer_close(w->writer, b->cli.unlink_on_exit);
		w->writer = NULL;
	}
}

/* 0 or -errno (logged). */
static int open_segments(struct broker *b)
{
	char why[512];
	int i, rc;

	for (i = 0; i < b->nwatches; i++) {
		struct broker_watch *w = &b->watches[i];
		zkw_writer_options o = b->cli.segment;

		o.capacity = w->cfg->capacity;
		o.watch_path = w->cfg->path;
		rc = zkw_writer_open(&w->writer, w->cfg->shm, &o, why, sizeof(why));
		if (rc < 0) {
			zkw__log_printf(ZKW_LOG_ERROR, "%s", why);
			return rc;
		}
		zkw__log_printf(ZKW_LOG_INFO,
		                "publishing %s%s into segment %s (capacity %llu, generation %llu)",
		                w->cfg->path, w->cfg->pointer ? " (pointer)" : "", w->cfg->shm,
		                (unsigned long long)w->cfg->capacity,
		                (unsigned long long)zkw_writer_generation(w->writer));
	}
	return 0;
}

/* 0 or -errno (logged). */
static int start_watches(struct broker *b, zkw_session *s)
{
	int i, rc;

	for (i = 0; i < b->nwatches; i++) {
		struct broker_watch *w = &b->watches[i];
		zkw_watch_options o = {
		        .pointer = w->cfg->pointer,
		        .ensure = w->cfg->ensure,
		        .max_len = w->cfg->capacity,
		        .on_state = publish_state,
		        .ctx = w,
		};

		rc = zkw_session_watch(s, w->cfg->path, &o, &w->watch);
		if (rc < 0) {
			zkw__log_printf(ZKW_LOG_ERROR, "cannot watch %s: %s", w->cfg->path, strerror(-rc));
			return rc;
		}
	}
	return 0;
}

/* ---- fault injection (tests only) -------------------------------------
 *
 * ZKW_TEST_FAULT_STALL_MID_PUBLISH_US=N makes every publish announce itself
 * on stderr ("zkw-fault: mid-publish") and stall N microseconds (at most one
 * second) between the odd and the even store of the slot's sequence, so a
 * test can SIGKILL the broker exactly mid-publish (tests/fault/test_failover.c).
 * Compiled in unless ZKW_NO_FAULT_INJECTION: unarmed it costs one getenv at
 * start, and the tests then exercise the very binary that ships. */
#ifndef ZKW_NO_FAULT_INJECTION
static useconds_t fault_stall_us;

static void fault_stall_mid_publish(void)
{
	static const char line[] = "zkw-fault: mid-publish\n";

	if (write(STDERR_FILENO, line, sizeof(line) - 1) < 0) {
		/* nothing to do: the stall below is what matters */
	}
	usleep(fault_stall_us);
}

static void arm_fault_injection(void)
{
	const char *v = getenv("ZKW_TEST_FAULT_STALL_MID_PUBLISH_US");
	long us;

	if (!v || !*v)
		return;
	us = strtol(v, NULL, 10);
	fault_stall_us = (useconds_t)(us < 0 ? 0 : us > 1000000 ? 1000000 : us);
	zkw_writer_fault_hook = fault_stall_mid_publish;
	zkw__log_printf(ZKW_LOG_WARN, "fault injection armed: stalling %u us mid-publish (tests only)",
	                (unsigned)fault_stall_us);
}
#else
static void arm_fault_injection(void)
{
}
#endif

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
	int sig, i;

	if (zkw__cli_parse(&b.cli, argc, argv, why, sizeof(why)) < 0) {
		fprintf(stderr, "zkw-broker: %s (try --help)\n", why);
		return EXIT_USAGE;
	}
	if (b.cli.help) {
		zkw__cli_usage(stdout);
		return 0;
	}
	zkw__log_verbose = b.cli.verbose;
	b.nwatches = b.cli.nwatches;
	for (i = 0; i < b.nwatches; i++)
		b.watches[i].cfg = &b.cli.watches[i];
	b.cli.session.log = zkw__log_sink;
	arm_fault_injection();

	/* Every thread (ZooKeeper's, the watcher's) inherits a mask with the
	 * stop signals blocked; the main thread collects them with sigwait. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	zkw__log_printf(ZKW_LOG_INFO, "starting: ZooKeeper %s, %d watch%s, session timeout %d ms",
	                b.cli.hosts, b.nwatches, b.nwatches == 1 ? "" : "es",
	                b.cli.session.session_timeout_ms);
	if (open_segments(&b) < 0) {
		stop_publishing(&b);
		return 1;
	}
	if (zkw_session_open(&session, b.cli.hosts, &b.cli.session, why, sizeof(why)) < 0) {
		zkw__log_printf(ZKW_LOG_ERROR, "%s", why);
		stop_publishing(&b);
		return 1;
	}
	if (start_watches(&b, session) < 0) {
		zkw_session_close(session);
		stop_publishing(&b);
		return 1;
	}
	sig = wait_for_stop_signal();
	zkw__log_printf(ZKW_LOG_INFO, "stopping on %s", strsignal(sig));
	zkw_session_close(session); /* no publish_state after this returns */
	stop_publishing(&b);
	zkw__log_printf(ZKW_LOG_INFO, "stopped%s", b.cli.unlink_on_exit ? ", segments removed" : "");
	return 0;
}
