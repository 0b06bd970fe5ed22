/* SPDX-License-Identifier: Apache-2.0 */
/* test_metrics.c - health and metrics (issue 13, item 5) against a real
 * ZooKeeper (zkh) and the real binaries: the watch library's counting hook
 * (zkw_session_options.count), the broker's stats object in /dev/shm
 * (lib/zkw_stats.h; docs/design.md, "The broker's counters"), and what
 * zkw-inspect makes of it: --list, --check, and --prometheus checked by
 * `promtool check metrics` (Debian's prometheus package, tools/deps.sh).
 *
 * Waits are on events (the broker's log lines, the segment's futex, a
 * child's exit) except for the counters themselves, which no event
 * announces: those are polled, with a bound, by zkh_eventually.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <zookeeper/zookeeper.h>

#include <zkw/client.h>
#include <zkw/watcher.h>

#include "itest.h"
#include "proc.h"
#include "zk/internal.h" /* test hook: zkw__watch_forget_zk_watches */
#include "zkh.h"
#include "zkw_clock.h"
#include "zkw_stats.h"

#include "publish/writer.h"

#define WAIT_MS    20000
#define SESSION_MS 4000
#define PROMTOOL   "/usr/bin/promtool"

static zkh_cluster *zk;
static const char *hosts;
static char sock[108]; /* the broker's control socket */
static proc *broker;

/* Nodes live below "/zkwtm<pid>" (itest.h). */
static const char *root;

/* "/zkwtm.<pid>.<tag>": the test's segment names. */
static const char *seg(char *buf, size_t cap, const char *tag)
{
	snprintf(buf, cap, "/zkwtm.%d.%s", (int)getpid(), tag);
	return buf;
}

/* ---- the library's counting hook --------------------------------------------- */

struct tally {
	uint64_t n[ZKW_COUNT_SESSION_LOST + 1];
	pthread_mutex_t lock;
	pthread_cond_t cond;
	char content[64]; /* the last content on_state saw */
};

static void tally_count(void *ctx, zkw_session_count what)
{
	struct tally *t = ctx;

	__atomic_fetch_add(&t->n[what], 1, __ATOMIC_RELAXED);
}

static void tally_state(void *ctx, const zkw_watch_state *st)
{
	struct tally *t = ctx;

	pthread_mutex_lock(&t->lock);
	snprintf(t->content, sizeof(t->content), "%.*s", (int)st->len, (const char *)st->content);
	pthread_cond_broadcast(&t->cond);
	pthread_mutex_unlock(&t->lock);
}

static void wait_content(struct tally *t, const char *want, int timeout_ms)
{
	struct timespec ts = zkw_clock_deadline_ms(CLOCK_REALTIME, timeout_ms);

	pthread_mutex_lock(&t->lock);
	while (strcmp(t->content, want) != 0 && pthread_cond_timedwait(&t->cond, &t->lock, &ts) != ETIMEDOUT)
		;
	if (strcmp(t->content, want) != 0) {
		pthread_mutex_unlock(&t->lock);
		fail_msg("the watch never saw \"%s\" (last: \"%s\")", want, t->content);
	}
	pthread_mutex_unlock(&t->lock);
}

struct at_least {
	const uint64_t *word;
	uint64_t min;
};

static bool reached(void *arg)
{
	const struct at_least *a = arg;

	return __atomic_load_n(a->word, __ATOMIC_RELAXED) >= a->min;
}

static void wait_tally(struct tally *t, zkw_session_count what, uint64_t min, const char *name)
{
	struct at_least a = {&t->n[what], min};

	if (!zkh_eventually(reached, &a, WAIT_MS))
		fail_msg("%s: counted %llu, want at least %llu", name,
		         (unsigned long long)__atomic_load_n(&t->n[what], __ATOMIC_RELAXED),
		         (unsigned long long)min);
}

static void test_library_counts_its_events(void **state)
{
	struct tally t = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
	zkw_session_options o;
	zkw_watch_options wo = {.on_state = tally_state, .ctx = &t};
	zkw_session *s;
	zkw_watch *w;
	clientid_t cid;
	char path[96], why[256];
	uint64_t events;

	(void)state;
	itest_put(itest_node(path, sizeof(path), "lib"), "first");
	zkw_session_options_init(&o);
	o.session_timeout_ms = SESSION_MS;
	o.valid_init = true;
	o.reconcile_s = 1;
	o.count = tally_count;
	o.count_ctx = &t;
	if (zkw_session_open(&s, hosts, &o, why, sizeof(why)) != 0)
		fail_msg("zkw_session_open: %s", why);
	assert_int_equal(zkw_session_watch(s, path, &wo, &w), 0);
	wait_content(&t, "first", WAIT_MS);
	wait_tally(&t, ZKW_COUNT_ZK_EVENT, 1, "session event (connected)");
	wait_tally(&t, ZKW_COUNT_READ, 1, "first read");
	assert_int_equal(__atomic_load_n(&t.n[ZKW_COUNT_RECONNECT], __ATOMIC_RELAXED),
	                 0); /* the first connection */

	/* A change: a node event, and a read for it. */
	events = __atomic_load_n(&t.n[ZKW_COUNT_ZK_EVENT], __ATOMIC_RELAXED);
	itest_put(path, "second");
	wait_content(&t, "second", WAIT_MS);
	wait_tally(&t, ZKW_COUNT_ZK_EVENT, events + 1, "node event");
	wait_tally(&t, ZKW_COUNT_READ, 2, "read after the change");

	/* The reconcile (every second here) checks; a lost watch is repaired. */
	wait_tally(&t, ZKW_COUNT_RECONCILE, 1, "reconcile check");
	assert_int_equal(__atomic_load_n(&t.n[ZKW_COUNT_REPAIR], __ATOMIC_RELAXED), 0);
	assert_int_equal(zkw__watch_forget_zk_watches(w), 0);
	itest_put(path, "third");
	wait_content(&t, "third", WAIT_MS);
	wait_tally(&t, ZKW_COUNT_REPAIR, 1, "reconcile repair");

	/* The session expired under us: lost once, then a new connection. */
	assert_int_equal(__atomic_load_n(&t.n[ZKW_COUNT_SESSION_LOST], __ATOMIC_RELAXED), 0);
	assert_int_equal(zkw_session_identity(s, &cid.client_id, cid.passwd), 0);
	for (int attempt = 0; attempt < 5 && !__atomic_load_n(&t.n[ZKW_COUNT_SESSION_LOST], __ATOMIC_RELAXED);
	     attempt++) {
		struct at_least lost = {&t.n[ZKW_COUNT_SESSION_LOST], 1};

		itest_zk_session_end(&cid, SESSION_MS);
		zkh_eventually(reached, &lost, 3000); /* our client may win the session back: again */
	}
	wait_tally(&t, ZKW_COUNT_SESSION_LOST, 1, "session expiry");
	wait_tally(&t, ZKW_COUNT_RECONNECT, 1, "reconnection after the expiry");
	zkw_session_close(s);
}

/* ---- the broker's stats object --------------------------------------------------- */

static pid_t broker_pid;

static void start_broker(const char *first, ...)
{
	char cfg[96], missing[96], s1[96], s2[96];
	const char *fixed[] = {"-z",
	                       hosts,
	                       "--socket",
	                       sock,
	                       "--session-timeout",
	                       "4000",
	                       "-f",
	                       itest_node(cfg, sizeof(cfg), "cfg"),
	                       "--shm",
	                       seg(s1, sizeof(s1), "cfg"),
	                       "-f",
	                       itest_node(missing, sizeof(missing), "missing"),
	                       "--shm",
	                       seg(s2, sizeof(s2), "missing"),
	                       NULL};
	va_list ap;

	va_start(ap, first);
	broker = itest_broker_listening(sock, fixed, first, ap);
	va_end(ap);
	broker_pid = proc_pid(broker);
}

static void stop_broker(void)
{
	itest_broker_stop(broker);
	broker = NULL;
}

static void expect_in(const char *text, const char *needle, const char *what)
{
	if (!strstr(text, needle))
		fail_msg("%s: lacks \"%s\":\n%s", what, needle, text);
}

/* The broker publishes its counters where any reader allowed its segments
 * reads them: /dev/shm/zkw-stats.<pid>, with the segments' owner and mode,
 * a magic, a version, counters that move with what the broker does, and the
 * last error with its time; zkw-inspect --list shows them; a clean stop
 * removes the object. */
static void test_broker_publishes_its_counters(void **state)
{
	char path[96], text[256], pidtext[64];
	struct zkw_stats_view v;
	zkw_reader sub, sub2;
	struct stat st;
	uint64_t published, events;
	char *out = NULL, comm[32] = "";
	int rc;

	(void)state;
	itest_put(itest_node(path, sizeof(path), "cfg"), "one");
	start_broker("--max-peer-subscriptions", "1", NULL);
	assert_int_equal(lstat(itest_stats_path(path, sizeof(path), broker_pid), &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_uid, geteuid());
	assert_int_equal(st.st_mode & 07777, 0640); /* the segments' default mode */
	assert_true(itest_stats_load(broker_pid, &v));
	assert_int_equal(v.abi_major, ZKW_STATS_ABI_MAJOR);
	assert_int_equal(v.broker_pid, broker_pid);
	assert_int_equal(v.counter_count, ZKW_STAT_COUNT);
	assert_string_equal(v.version, ZKW_VERSION);
	assert_string_equal(v.socket, sock);
	assert_true(v.broker_started_ns > 0);

	/* Two watches, each read and published; the missing one is the last error. */
	itest_stat_wait(broker_pid, ZKW_STAT_PUBLISHES, 2, "publishes");
	itest_stat_wait(broker_pid, ZKW_STAT_ZK_READS, 2, "reads");
	itest_stat_wait(broker_pid, ZKW_STAT_ZK_EVENTS, 1, "ZooKeeper events");
	itest_stat_wait(broker_pid, ZKW_STAT_ERRORS, 1, "errors");
	assert_true(itest_stats_load(broker_pid, &v));
	snprintf(text, sizeof(text), "%s/missing: invalid: Invalid get on file path", root);
	if (!strstr(v.error, text))
		fail_msg("last error: \"%s\", want \"%s\"", v.error, text);
	assert_true(v.error_ns > 0 && v.error_level == ZKW_LOG_WARN);

	/* A change: a node event, a read, a publish. */
	published = itest_stat(broker_pid, ZKW_STAT_PUBLISHES);
	events = itest_stat(broker_pid, ZKW_STAT_ZK_EVENTS);
	itest_put(itest_node(path, sizeof(path), "cfg"), "two");
	itest_stat_wait(broker_pid, ZKW_STAT_PUBLISHES, published + 1, "publishes after a change");
	itest_stat_wait(broker_pid, ZKW_STAT_ZK_EVENTS, events + 1, "ZooKeeper events after a change");

	/* A subscription, then one over the cap (1 per uid): refused. The
	 * subscriber's process name, which it chooses, is hostile. */
	assert_int_equal(itest_stat(broker_pid, ZKW_STAT_SUBSCRIPTIONS), 0);
	assert_int_equal(prctl(PR_GET_NAME, comm, 0, 0, 0), 0);
	assert_int_equal(prctl(PR_SET_NAME, "zkw\x1b[1m\xff\"x", 0, 0, 0), 0);
	rc = zkw_reader_subscribe(&sub, sock, itest_node(path, sizeof(path), "cfg"), 0);
	prctl(PR_SET_NAME, comm, 0, 0, 0);
	if (rc != 0)
		fail_msg("subscribe: %s", sub.why);
	assert_int_equal(itest_stat(broker_pid, ZKW_STAT_SUBSCRIPTIONS), 1); /* counted before the answer */
	assert_int_equal(zkw_reader_subscribe(&sub2, sock, itest_node(path, sizeof(path), "other"), 0),
	                 -ENOSPC);
	assert_int_equal(itest_stat(broker_pid, ZKW_STAT_SUBSCRIPTIONS_REFUSED), 1);

	/* What --list makes of it. */
	assert_int_equal(itest_inspect(&out, "--list", NULL), 0);
	snprintf(text, sizeof(text), "broker /zkw-stats.%d: pid %d, alive, zkw %s", (int)broker_pid,
	         (int)broker_pid, ZKW_VERSION);
	expect_in(out, text, "--list");
	expect_in(out, ", 1 subscriptions, 1 refused subscriptions,", "--list");
	snprintf(text, sizeof(text), "last error: ");
	expect_in(out, text, "--list");
	snprintf(text, sizeof(text), "%s ", seg(path, sizeof(path), "cfg"));
	expect_in(out, text, "--list");
	free(out);
	assert_int_equal(itest_inspect(&out, "--list", "--json", NULL), 0);
	snprintf(pidtext, sizeof(pidtext), "\"broker_pid\":%d,\"broker_alive\":true", (int)broker_pid);
	expect_in(out, pidtext, "--list --json");
	expect_in(out, "\"subscriptions\":1,\"subscriptions_refused\":1", "--list --json");
	free(out);

	/* --readers shows that name escaped, never raw (before: bytes from
	 * 0x80 went out raw, in JSON too). */
	seg(path, sizeof(path), "cfg");
	assert_int_equal(itest_inspect(&out, path, "--readers", "--socket", sock, "--json", NULL), 0);
	expect_in(out, "\"process\":\"zkw\\u001b[1m\\u00ff\\\"x\"", "--readers --json");
	assert_null(strchr(out, 0x1b));
	assert_null(strchr(out, (char)0xff));
	free(out);
	assert_int_equal(itest_inspect(&out, path, "--readers", "--socket", sock, NULL), 0);
	expect_in(out, " zkw\\x1b[1m\\xff\"x ", "--readers");
	assert_null(strchr(out, 0x1b));
	assert_null(strchr(out, (char)0xff));
	free(out);
	zkw_reader_close(&sub);

	/* A clean stop removes it. */
	stop_broker();
	assert_int_equal(lstat(itest_stats_path(path, sizeof(path), broker_pid), &st), -1);
	assert_int_equal(errno, ENOENT);
}

/* --prometheus prints every segment and every broker's counters in the
 * text exposition format, which promtool accepts - label values from
 * hostile paths and names included (quotes, backslashes, newlines, ESC,
 * invalid UTF-8) - with the families and labels promised. */
static void test_prometheus_output_passes_promtool(void **state)
{
	char path[96], want[512], file[] = "/tmp/zkw-test-metrics.XXXXXX", hostile_seg[96], fifo[160];
	zkw_writer_options wo = {
	        .capacity = 8192, .group = (gid_t)-1, .watch_path = "/tmp/q\"b\\s\nl\x1b\xff}"};
	zkw_publication p = {.valid = true, .connected = true, .content = "x", .len = 1, .content_serial = 1};
	char why[256], *out = NULL, *check_out = NULL, *check_err = NULL;
	zkw_writer *w;
	int fd, status;

	(void)state;
	if (access(PROMTOOL, X_OK) != 0)
		fail_msg(PROMTOOL " not found: tools/deps.sh installs Debian's prometheus package");
	itest_put(itest_node(path, sizeof(path), "cfg"), "one");
	start_broker(NULL);
	itest_stat_wait(broker_pid, ZKW_STAT_PUBLISHES, 2, "publishes");
	if (zkw_writer_open(&w, seg(hostile_seg, sizeof(hostile_seg), "hostile"), &wo, why, sizeof(why)) != 0)
		fail_msg("writer: %s", why);
	assert_int_equal(zkw_writer_publish(w, &p), 0);
	snprintf(fifo, sizeof(fifo), "/dev/shm/zkwtm.%d.q\"\\\n\x1b\xff", (int)getpid());
	assert_int_equal(mkfifo(fifo, 0600), 0);

	status = itest_inspect(&out, "--prometheus", NULL);
	unlink(fifo);
	zkw_writer_close(w, true);
	assert_int_equal(status, 0);
	fd = mkstemp(file);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, out, strlen(out)), (ssize_t)strlen(out));
	close(fd);
	{
		const char *argv[] = {"-c", PROMTOOL " check metrics < \"$0\"", file, NULL};
		proc_options o = {.literal_path = true};

		status = proc_run("/bin/sh", argv, &o, WAIT_MS, &check_out, &check_err);
	}
	unlink(file);
	if (status != 0)
		fail_msg("promtool check metrics: status %d\n%s%s\n--- metrics ---\n%s", status, check_out,
		         check_err, out);
	free(check_out);
	free(check_err);

	expect_in(out, "# TYPE zkw_segment_valid gauge\n", "--prometheus");
	expect_in(out, "# TYPE zkw_broker_publishes_total counter\n", "--prometheus");
	snprintf(want, sizeof(want), "zkw_segment_valid{name=\"%s\",path=\"%s/cfg\",broker_pid=\"%d\"} 1\n",
	         seg(path, sizeof(path), "cfg"), root, (int)broker_pid);
	expect_in(out, want, "--prometheus");
	snprintf(want, sizeof(want),
	         "zkw_segment_valid{name=\"%s\",path=\"%s/missing\",broker_pid=\"%d\"} 0\n",
	         seg(path, sizeof(path), "missing"), root, (int)broker_pid);
	expect_in(out, want, "--prometheus");
	snprintf(want, sizeof(want),
	         "zkw_broker_up{name=\"/zkw-stats.%d\",broker_pid=\"%d\",socket=\"%s\"} 1\n", (int)broker_pid,
	         (int)broker_pid, sock);
	expect_in(out, want, "--prometheus");
	snprintf(want, sizeof(want),
	         "zkw_broker_publishes_total{name=\"/zkw-stats.%d\",broker_pid=\"%d\",socket=\"%s\"} ",
	         (int)broker_pid, (int)broker_pid, sock);
	expect_in(out, want, "--prometheus");
	/* The hostile path as the text report shows it (\\, \n, \x1b, \xff),
	 * then escaped for the exposition format. */
	snprintf(want, sizeof(want),
	         "zkw_segment_valid{name=\"%s\",path=\"/tmp/q\\\"b\\\\\\\\s\\\\nl\\\\x1b\\\\xff}\",",
	         hostile_seg);
	expect_in(out, want, "--prometheus");
	snprintf(want, sizeof(want),
	         "zkw_segment_unreadable{name=\"/zkwtm.%d.q\\\"\\\\\\\\\\\\n\\\\x1b\\\\xff\",status=\"bad\"",
	         (int)getpid());
	expect_in(out, want, "--prometheus");
	free(out);
	stop_broker();
}

/* Wait until the segment's state has (or lacks) the connected bit. */
static void wait_connected(const char *name, bool want)
{
	zkw_reader r;
	int64_t deadline = zkw_clock_mono_ms() + WAIT_MS;

	if (zkw_reader_open(&r, name) != 0)
		fail_msg("open %s: %s", name, r.why);
	while (((zkw_reader_state(&r) & ZKW_STATE_CONNECTED) != 0) != want) {
		if (zkw_clock_mono_ms() > deadline)
			fail_msg("%s never became %s", name, want ? "connected" : "disconnected");
		zkw_reader_wait(&r, zkw_reader_generation(&r), 1000);
	}
	zkw_reader_close(&r);
}

static void expect_plugin(const char *name, int code, const char *needle)
{
	char *out = NULL;
	int status = itest_inspect(&out, "--check", name, NULL);

	if (status != code || !strstr(out, needle))
		fail_msg("--check %s: exit %d, want %d with \"%s\":\n%s", name, status, code, needle, out);
	free(out);
}

/* --check against a real broker: OK while served; WARNING while ZooKeeper
 * is unreachable (the last good content kept), OK again after the broker
 * reconnects (counted); CRITICAL once the broker is killed. The killed
 * broker's stats object stays (--list shows it dead) until the next broker
 * sweeps it at its start. */
static void test_check_and_sweep_with_a_real_broker(void **state)
{
	char path[96], name[96], stale[64], text[128];
	struct stat st;
	char *out = NULL;
	pid_t killed;

	(void)state;
	itest_put(itest_node(path, sizeof(path), "cfg"), "one");
	start_broker(NULL);
	seg(name, sizeof(name), "cfg");
	wait_connected(name, true);
	expect_plugin(name, 0, "ZKW OK - ");
	assert_int_equal(itest_stat(broker_pid, ZKW_STAT_RECONNECTS), 0);

	assert_int_equal(zkh_pause(zk), 0);
	wait_connected(name, false);
	expect_plugin(name, 1, "disconnected from ZooKeeper");
	assert_int_equal(zkh_resume(zk), 0);
	wait_connected(name, true);
	expect_plugin(name, 0, "ZKW OK - ");
	itest_stat_wait(broker_pid, ZKW_STAT_RECONNECTS, 1, "reconnects");

	killed = broker_pid;
	proc_signal(broker, SIGKILL);
	proc_wait(broker, WAIT_MS);
	proc_free(broker);
	broker = NULL;
	expect_plugin(name, 2, "has no broker");
	assert_int_equal(lstat(itest_stats_path(stale, sizeof(stale), killed), &st), 0);
	assert_int_equal(itest_inspect(&out, "--list", NULL), 0);
	snprintf(text, sizeof(text), "broker /zkw-stats.%d: pid %d, dead,", (int)killed, (int)killed);
	expect_in(out, text, "--list after a kill");
	free(out);

	start_broker(NULL);
	assert_int_equal(lstat(stale, &st), -1); /* swept at the start */
	assert_int_equal(lstat(itest_stats_path(path, sizeof(path), broker_pid), &st), 0);
	stop_broker();
}

/* ---- fixtures ------------------------------------------------------------------- */

static int teardown_each(void **state)
{
	char path[64];

	(void)state;
	if (broker) {
		pid_t pid = proc_pid(broker);

		proc_signal(broker, SIGKILL);
		proc_wait(broker, WAIT_MS);
		proc_free(broker);
		broker = NULL;
		unlink(itest_stats_path(path, sizeof(path), pid));
	}
	unlink(sock);
	return 0;
}

static int setup(void **state)
{
	(void)state;
	zk = itest_zk_start(&(struct itest_config){.prefix = "zkwtm", .wait_ms = WAIT_MS});
	if (!zk)
		return -1;
	hosts = zkh_hosts(zk);
	root = itest_root();
	snprintf(sock, sizeof(sock), "/tmp/zkwtm.%d.sock", (int)getpid());
	return 0;
}

static int teardown(void **state)
{
	char name[96];

	(void)state;
	zkw_writer_remove(seg(name, sizeof(name), "cfg"));
	zkw_writer_remove(seg(name, sizeof(name), "missing"));
	itest_zk_stop();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_teardown(test_library_counts_its_events, teardown_each),
	        cmocka_unit_test_teardown(test_broker_publishes_its_counters, teardown_each),
	        cmocka_unit_test_teardown(test_prometheus_output_passes_promtool, teardown_each),
	        cmocka_unit_test_teardown(test_check_and_sweep_with_a_real_broker, teardown_each),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
