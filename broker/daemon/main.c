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

#include <zkw_clock.h>

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
	/* What the log last said of it (log_state), touched only by
	 * publish_state, which the session serialises. */
	bool logged;
	bool logged_valid;
	char logged_error[ZKW_ERROR_MAX];
	zkw__log_limit log_limit;
};

struct broker {
	zkw_cli cli;
	struct broker_watch watches[ZKW_CLI_MAX_WATCHES];
	int nwatches;
};

/* ---- publishing ------------------------------------------------------- */

/* One line when a watch becomes valid or invalid, or its error changes: the
 * error comes from ZooKeeper and the watch library (paths, pointer
 * contents) and is escaped with the rest of the line. Connection loss is
 * the session's to log, once for all watches. A node whose writer flips it
 * faster than that gets STATE_LOG_BURST lines, then one a second counting
 * the changes in between; the state such a flood ends on is logged with
 * the watch's next state, at the latest at the next reconcile. */
#define STATE_LOG_BURST 10

static void log_state(struct broker_watch *w, const zkw_publication *st)
{
	const char *error = st->error ? st->error : "";
	bool changed;
	unsigned missed;
	char more[64] = "";

	if (!st->connected)
		return;
	changed = !w->logged || st->valid != w->logged_valid ||
	          (!st->valid && strncmp(error, w->logged_error, sizeof(w->logged_error)) != 0);
	if (changed ? !zkw__log_limit_event(&w->log_limit, zkw_clock_mono_ms(), &missed)
	            : !zkw__log_limit_flush(&w->log_limit, zkw_clock_mono_ms(), &missed))
		return;
	w->logged = true;
	w->logged_valid = st->valid;
	snprintf(w->logged_error, sizeof(w->logged_error), "%s", st->valid ? "" : error);
	if (missed)
		snprintf(more, sizeof(more), " (%u earlier change%s not logged)", missed,
		         missed == 1 ? "" : "s");
	if (st->valid)
		zkw__log_printf(ZKW_LOG_INFO, "%s: valid, version %lld, %zu bytes%s%s%s", w->cfg->path,
		                (long long)st->version, st->len, st->pointer && *st->pointer ? " from " : "",
		                st->pointer ? st->pointer : "", more);
	else
		zkw__log_printf(ZKW_LOG_WARN, "%s: invalid: %s%s", w->cfg->path, error, more);
}

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
	char grow_error[ZKW_ERROR_MAX];
	uint64_t capacity = zkw_writer_capacity(w->writer);
	int rc;

	rc = zkw_writer_publish(w->writer, &p);
	if (zkw_writer_capacity(w->writer) != capacity)
		zkw__log_printf(ZKW_LOG_INFO, "%s: segment %s grown to a capacity of %llu bytes",
		                w->cfg->path, w->cfg->shm,
		                (unsigned long long)zkw_writer_capacity(w->writer));
	if (rc == -EMSGSIZE) {
		/* The watcher checks max_len; this is the backstop. */
		p.valid = false;
		p.keep_content = true;
		p.error = "Content too large for the segment";
		rc = zkw_writer_publish(w->writer, &p);
	} else if (rc < 0 && *zkw_writer_error(w->writer)) {
		/* The segment could not grow to the content (/dev/shm full):
		 * the last good content stays, invalid, with the reason. */
		snprintf(grow_error, sizeof(grow_error), "Cannot grow the segment: %s",
		         zkw_writer_error(w->writer));
		p.valid = false;
		p.keep_content = true;
		p.error = grow_error;
		rc = zkw_writer_publish(w->writer, &p);
	}
	log_state(w, &p);
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
		if (*zkw_writer_notice(w->writer)) /* a replaced segment, a dropped snapshot */
			zkw__log_printf(ZKW_LOG_WARN, "%s", zkw_writer_notice(w->writer));
		zkw__log_printf(
		        ZKW_LOG_INFO,
		        "publishing %s%s into segment %s (capacity %llu of at most %llu, generation %llu)",
		        w->cfg->path, w->cfg->pointer ? " (pointer)" : "", w->cfg->shm,
		        (unsigned long long)zkw_writer_capacity(w->writer),
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

/* ---- signals ----------------------------------------------------------
 *
 * No asynchronous signal kills the broker without a word (docs/design.md,
 * "Signals"): every one whose default action would terminate it either
 * stops it cleanly or is logged and ignored. All of them are blocked in
 * every thread (the mask is set before the first thread exists and is
 * inherited) and collected here, by the main thread, with sigwaitinfo.
 * Faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT) keep
 * their default action, SIGPIPE is ignored (a write to a closed stderr
 * fails instead), SIGTSTP suspends as SIGSTOP does. */

struct sig_rule {
	int sig;
	const char *name;
	bool stops;
	const char *note; /* after "ignored" */
};

static const struct sig_rule sig_rules[] = {
        {SIGTERM, "SIGTERM", true, NULL},
        {SIGINT, "SIGINT", true, NULL},
        {SIGQUIT, "SIGQUIT", true, NULL},
        /* The soft RLIMIT_CPU: SIGKILL follows at the hard one. */
        {SIGXCPU, "SIGXCPU", true, NULL},
        {SIGHUP, "SIGHUP", false, " (configuration reload is not implemented yet)"},
        {SIGUSR1, "SIGUSR1", false, NULL},
        {SIGUSR2, "SIGUSR2", false, NULL},
        {SIGALRM, "SIGALRM", false, NULL},
        {SIGVTALRM, "SIGVTALRM", false, NULL},
        {SIGPROF, "SIGPROF", false, NULL},
        {SIGIO, "SIGIO", false, NULL}, /* SIGPOLL */
#ifdef SIGPWR
        {SIGPWR, "SIGPWR", false, NULL},
#endif
#ifdef SIGSTKFLT
        {SIGSTKFLT, "SIGSTKFLT", false, NULL},
#endif
        /* RLIMIT_FSIZE: the write fails with EFBIG, which its caller reports. */
        {SIGXFSZ, "SIGXFSZ", false, NULL},
        /* Blocked, they no longer stop a broker in a terminal's background;
         * a blocked SIGTTOU lets the write proceed. */
        {SIGTTIN, "SIGTTIN", false, NULL},
        {SIGTTOU, "SIGTTOU", false, NULL},
};

/* The rule for sig; real-time signals (SIGRTMIN..SIGRTMAX) are ignored. */
static const struct sig_rule *sig_rule(int sig, char *name, size_t cap)
{
	static const struct sig_rule realtime = {0, NULL, false, NULL};

	for (size_t i = 0; i < sizeof(sig_rules) / sizeof(sig_rules[0]); i++)
		if (sig_rules[i].sig == sig) {
			snprintf(name, cap, "%s", sig_rules[i].name);
			return &sig_rules[i];
		}
	snprintf(name, cap, "SIGRTMIN+%d", sig - SIGRTMIN);
	return &realtime;
}

/* Block every signal of the table and the real-time ones in this thread,
 * hence in every thread created after it, and give each its default action:
 * a signal ignored by whoever started us (nohup, a shell's '&') would be
 * discarded before sigwaitinfo could see it. */
static void signals_block(sigset_t *set)
{
	struct sigaction dfl;
	int sig;

	sigemptyset(set);
	for (size_t i = 0; i < sizeof(sig_rules) / sizeof(sig_rules[0]); i++)
		sigaddset(set, sig_rules[i].sig);
	for (sig = SIGRTMIN; sig <= SIGRTMAX; sig++)
		sigaddset(set, sig);
	pthread_sigmask(SIG_BLOCK, set, NULL);
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigemptyset(&dfl.sa_mask);
	for (sig = 1; sig < NSIG; sig++)
		if (sigismember(set, sig) == 1)
			sigaction(sig, &dfl, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* " from pid N (uid U)" when a process sent it. */
static void sig_sender(const siginfo_t *info, char *out, size_t cap)
{
	out[0] = '\0';
	if (info->si_code == SI_USER || info->si_code == SI_QUEUE || info->si_code == SI_TKILL)
		snprintf(out, cap, " from pid %ld (uid %ld)", (long)info->si_pid, (long)info->si_uid);
}

/* Log every ignored signal, at most one line per signal a second (a flood
 * is counted, and the count logged when its second is over), until a stop
 * signal comes: that one is returned. */
static int wait_for_stop_signal(const sigset_t *set)
{
	static zkw__log_limit limits[NSIG];
	char name[32], from[64];

	for (;;) {
		const struct sig_rule *rule;
		int64_t due = INT64_MAX, now;
		unsigned missed;
		siginfo_t info;
		int sig;

		for (sig = 1; sig < NSIG; sig++)
			if (zkw__log_limit_due(&limits[sig]) < due)
				due = zkw__log_limit_due(&limits[sig]);
		if (due == INT64_MAX) {
			sig = sigwaitinfo(set, &info);
		} else {
			int64_t left = due - zkw_clock_mono_ms();
			struct timespec ts = {0, 0};

			if (left > 0) {
				ts.tv_sec = left / 1000;
				ts.tv_nsec = (left % 1000) * 1000000L;
			}
			sig = sigtimedwait(set, &info, &ts);
		}
		now = zkw_clock_mono_ms();
		for (int s = 1; s < NSIG; s++)
			if (zkw__log_limit_flush(&limits[s], now, &missed)) {
				sig_rule(s, name, sizeof(name));
				zkw__log_printf(ZKW_LOG_WARN, "received %s %u more time%s: ignored", name,
				                missed, missed == 1 ? "" : "s");
			}
		if (sig <= 0 || sig >= NSIG)
			continue; /* EAGAIN (a count was due) or EINTR */
		rule = sig_rule(sig, name, sizeof(name));
		sig_sender(&info, from, sizeof(from));
		if (rule->stops) {
			zkw__log_printf(ZKW_LOG_INFO, "stopping on %s%s", name, from);
			return sig;
		}
		/* Counts were flushed above: missed is 0 here. */
		if (zkw__log_limit_event(&limits[sig], now, &missed))
			zkw__log_printf(ZKW_LOG_WARN, "received %s%s: ignored%s", name, from,
			                rule->note ? rule->note : "");
	}
}

/* ---- main ------------------------------------------------------------- */

int main(int argc, char **argv)
{
	static struct broker b;
	char why[512] = "";
	zkw_session *session = NULL;
	sigset_t set;
	int i;

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
	for (i = 0; i < b.nwatches; i++) {
		b.watches[i].cfg = &b.cli.watches[i];
		b.watches[i].log_limit.burst = STATE_LOG_BURST;
	}
	b.cli.session.log = zkw__log_sink;
	arm_fault_injection();

	/* Every thread (ZooKeeper's, the watcher's) inherits a mask with the
	 * signals blocked; the main thread collects them with sigwaitinfo. */
	signals_block(&set);

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
	wait_for_stop_signal(&set);
	zkw_session_close(session); /* no publish_state after this returns */
	stop_publishing(&b);
	zkw__log_printf(ZKW_LOG_INFO, "stopped%s", b.cli.unlink_on_exit ? ", segments removed" : "");
	return 0;
}
