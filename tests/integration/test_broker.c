/* SPDX-License-Identifier: Apache-2.0 */
/* test_broker.c - zkw-broker end to end: a real ZooKeeper (zkh), the real
 * zkw-broker binary (proc), and readers through zkw/client.h.
 *
 * Every wait is on an event: a broker's stderr line (the segment exists once
 * it logs "into segment NAME"), the segment's futex (zkw_reader_wait), a
 * child's exit (proc_wait). The one exception is the server's connection
 * count (no event for "the server has dropped a closed connection"), polled
 * with zkh_eventually. Segment names include the test's pid and are unlinked
 * by every test's teardown.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <zookeeper/zookeeper.h>

#include <zkw/client.h>
#include <zkw/watcher.h>

#include "itest.h"
#include "proc.h"
#include "zkh.h"
#include "zkw_clock.h"
#include "zkw_zk.h"
#include "publish/writer.h"

#define WAIT_MS      20000 /* any single expected change */
#define EXIT_WAIT_MS 20000 /* a broker asked to stop, or failing at start */
#define CONTENT_CAP  (2u * 1024 * 1024)

static zkh_cluster *zk;
static const char *hosts;

/* Nodes live below "/zkwtb<pid>", segments are "zkwtb.<pid>.<tag>" (itest.h). */
enum { ANY = ITEST_ANY, YES = ITEST_YES, NO = ITEST_NO };
#define WAIT_FOR ITEST_WAIT_FOR

/* ---- names ------------------------------------------------------------- */

/* Text a broker wrote for a terminal or a journal: no raw control byte but
 * the newline ending each line (no CR, ESC, TAB, DEL), no C1 control (UTF-8
 * C2 80..C2 9F) - what came from outside is escaped. */
static void assert_clean_text(const char *what, const char *text, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)text[i];

		if ((c < 0x20 && c != '\n') || c == 0x7f ||
		    (c == 0xc2 && i + 1 < len && (unsigned char)text[i + 1] <= 0x9f))
			fail_msg("%s: raw byte 0x%02x at offset %zu of:\n%.*s", what, c, i, (int)len, text);
	}
}

/* ---- a dispatcher that counts ------------------------------------------ */

struct counts {
	int config, valid_true, valid_false, error;
	char last_config[256];
};

static void count_valid(void *ctx, bool valid)
{
	struct counts *c = ctx;

	if (valid)
		c->valid_true++;
	else
		c->valid_false++;
}

static void count_config(void *ctx, const void *content, size_t len)
{
	struct counts *c = ctx;

	c->config++;
	snprintf(c->last_config, sizeof(c->last_config), "%.*s", (int)len, (const char *)content);
}

static void count_error(void *ctx, const char *message)
{
	struct counts *c = ctx;

	(void)message;
	c->error++;
}

static char dispatch_buf[CONTENT_CAP]; /* static: nothing to free on failure */

/* ---- group and per-test fixtures ----------------------------------------- */

static int group_setup(void **state)
{
	(void)state;
	zk = itest_zk_start(
	        &(struct itest_config){.prefix = "zkwtb", .wait_ms = WAIT_MS, .read_cap = CONTENT_CAP - 1});
	if (!zk)
		return -1;
	hosts = zkh_hosts(zk);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	itest_group_cleanup();
	return 0;
}

static int test_teardown(void **state)
{
	(void)state;
	itest_test_cleanup();
	return 0;
}

/* ---- tests ------------------------------------------------------------ */

struct blocked_reader {
	const char *shm;
	bool ok;
};

/* A second reader, blocked in zkw_reader_wait until the update lands. */
static void *blocked_reader_main(void *arg)
{
	struct blocked_reader *br = arg;
	char *buf = malloc(CONTENT_CAP);
	zkw_snapshot snap = {0};
	zkw_reader r;
	uint64_t seen;

	if (!buf || zkw_reader_open(&r, br->shm) != 0) {
		free(buf);
		return NULL;
	}
	seen = zkw_reader_generation(&r);
	for (;;) {
		int rc = zkw_reader_wait(&r, seen, WAIT_MS);
		ssize_t len;

		if (rc <= 0)
			break;
		do
			len = zkw_reader_read(&r, &snap, buf, CONTENT_CAP - 1);
		while (len == -EAGAIN);
		if (len >= 0)
			buf[len] = '\0';
		seen = snap.generation;
		if (len >= 0 && strcmp(buf, "second content") == 0 && snap.valid) {
			br->ok = true;
			break;
		}
	}
	zkw_reader_close(&r);
	free(buf);
	return NULL;
}

static bool version_above(const struct itest_seg *s, void *arg)
{
	return s->snap.version > *(int64_t *)arg;
}

static bool is_binary(const struct itest_seg *s, void *arg)
{
	(void)arg;
	return s->len == 5 && memcmp(s->buf, "a\0b\0\xff", 5) == 0;
}

static void test_one_watch(void **state)
{
	char path[128];
	const char *shm = itest_seg_name("one");
	struct counts counts = {0};
	zkw_handlers h = {count_valid, count_config, count_error, &counts};
	zkw_dispatcher d;
	struct blocked_reader br = {.shm = shm};
	pthread_t thread;
	uint64_t gen, content_gen, now;
	int64_t version;
	struct itest_seg *s;
	proc *b;

	(void)state;
	itest_node(path, sizeof(path), "one");
	itest_put(path, "first content");
	b = itest_broker_start("-z", hosts, "-f", path, "--shm", shm, NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);

	/* Pushed before the start: published. */
	WAIT_FOR(s, "valid, first content", .valid = YES, .content = "first content");
	now = zkw_clock_ns(CLOCK_REALTIME);
	assert_true(s->snap.connected);
	assert_true(s->snap.version >= 0);
	assert_true(s->snap.mzxid > 0);
	assert_true(s->snap.confirmed_ns > now - 30ull * 1000000000u &&
	            s->snap.confirmed_ns <= now + 1000000000u);
	assert_string_equal(s->snap.pointer, "");
	assert_string_equal(s->snap.error, "");
	assert_true(zkw_reader_ping(&s->r));
	assert_true(zkw_reader_is_valid(&s->r));
	assert_int_equal(zkw_reader_broker_pid(&s->r), proc_pid(b));

	zkw_dispatcher_init(&d, &s->r, &h, dispatch_buf, sizeof(dispatch_buf));
	itest_dispatch_all(&d);
	assert_int_equal(counts.config, 1);
	assert_string_equal(counts.last_config, "first content");
	assert_int_equal(counts.valid_true, 1);

	/* An update wakes a reader blocked in zkw_reader_wait. */
	assert_int_equal(pthread_create(&thread, NULL, blocked_reader_main, &br), 0);
	itest_put(path, "second content");
	pthread_join(thread, NULL);
	assert_true(br.ok);
	WAIT_FOR(s, "valid, second content", .valid = YES, .content = "second content");
	itest_dispatch_all(&d);
	assert_int_equal(counts.config, 2);
	assert_string_equal(counts.last_config, "second content");

	/* An identical rewrite: a new generation (new version), same content_gen,
	 * and no second config delivery. */
	gen = s->snap.generation;
	content_gen = s->snap.content_gen;
	version = s->snap.version;
	itest_put(path, "second content");
	WAIT_FOR(s, "a newer version of the same content", .valid = YES, .content = "second content",
	         .pred = version_above, .arg = &version);
	assert_true(s->snap.generation > gen);
	assert_int_equal(s->snap.content_gen, content_gen);
	itest_dispatch_all(&d);
	assert_int_equal(counts.config, 2);
	assert_int_equal(counts.valid_true, 1);
	assert_int_equal(counts.valid_false, 0);

	/* A wipe (null data): empty content, still valid. */
	itest_put(path, NULL);
	WAIT_FOR(s, "valid and empty after a wipe", .valid = YES, .content = "");
	assert_int_equal(s->snap.len, 0);
	itest_dispatch_all(&d);
	assert_int_equal(counts.config, 3);
	assert_string_equal(counts.last_config, "");

	/* Content is bytes: NULs pass through, the length is the length. */
	assert_int_equal(zkh_set(hosts, path, "a\0b\0\xff", 5), ZOK);
	WAIT_FOR(s, "binary content", .valid = YES, .pred = is_binary);
	assert_memory_equal(s->buf, "a\0b\0\xff", 5);

	itest_seg_close(s);
	itest_broker_stop(b);
}

static void test_missing_node_lifecycle(void **state)
{
	char path[128];
	const char *shm = itest_seg_name("missing");
	struct itest_seg *s;
	uint64_t gen;
	proc *b;

	(void)state;
	itest_node(path, sizeof(path), "missing/node");
	zkh_delete(hosts, path);
	b = itest_broker_start("-z", hosts, "-f", path, "--shm", shm, NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);

	WAIT_FOR(s, "invalid: no node", .valid = NO, .error = ZKW_ERR_NO_NODE);
	assert_true(s->snap.connected);
	assert_true(zkw_reader_ping(&s->r));

	itest_put(path, "born later");
	WAIT_FOR(s, "valid once created", .valid = YES, .content = "born later");

	assert_int_equal(zkh_delete(hosts, path), ZOK);
	WAIT_FOR(s, "invalid once deleted, content kept", .valid = NO, .error = ZKW_ERR_NO_NODE,
	         .content = "born later");
	gen = s->snap.generation;

	itest_put(path, "born again");
	WAIT_FOR(s, "valid once recreated", .valid = YES, .content = "born again", .after_gen = gen);

	itest_seg_close(s);
	itest_broker_stop(b);
}

static void test_ensure_creates_node(void **state)
{
	char path[128], buf[16];
	const char *shm = itest_seg_name("ensure");
	struct itest_seg *s;
	int len = sizeof(buf);
	proc *b;

	(void)state;
	itest_node(path, sizeof(path), "ensure/deep/node");
	zkh_delete(hosts, path);
	b = itest_broker_start("-z", hosts, "-f", path, "--ensure", "--shm", shm, NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "valid and empty: created by --ensure", .valid = YES, .content = "");
	assert_int_equal(zkh_get(hosts, path, buf, &len), ZOK);
	assert_true(len <= 0);
	itest_put(path, "filled in");
	WAIT_FOR(s, "filled in", .valid = YES, .content = "filled in");
	itest_seg_close(s);
	itest_broker_stop(b);
}

static bool one_session(void *arg)
{
	(void)arg;
	return zkh_session_count(hosts) == 1;
}

static void test_several_watches_one_session(void **state)
{
	char p1[128], p2[128], p3[128], target[128];
	const char *s1 = itest_seg_name("multi1"), *s2 = itest_seg_name("multi2"),
	           *s3 = itest_seg_name("multi3");
	struct itest_seg *a, *b, *c;
	proc *br;

	(void)state;
	itest_node(p1, sizeof(p1), "multi/one");
	itest_node(p2, sizeof(p2), "multi/two");
	itest_node(p3, sizeof(p3), "multi/pointer");
	itest_node(target, sizeof(target), "multi/target");
	itest_put(p1, "one");
	itest_put(p2, "two");
	itest_put(target, "pointed at");
	itest_put(p3, target);
	br = itest_broker_start("-z", hosts, "-f", p1, "--shm", s1, "-f", p2, "--shm", s2, "-f", p3, "-p",
	                        "--shm", s3, NULL);
	itest_broker_wait_segment(br, s1);
	itest_broker_wait_segment(br, s2);
	itest_broker_wait_segment(br, s3);
	a = itest_seg_open(s1, br);
	b = itest_seg_open(s2, br);
	c = itest_seg_open(s3, br);
	WAIT_FOR(a, "one", .valid = YES, .content = "one", .pointer = "");
	WAIT_FOR(b, "two", .valid = YES, .content = "two", .pointer = "");
	WAIT_FOR(c, "pointed at", .valid = YES, .content = "pointed at", .pointer = target);

	/* Each segment follows its own node, and only its own. */
	itest_put(p2, "two, updated");
	WAIT_FOR(b, "two updated", .valid = YES, .content = "two, updated");
	itest_put(target, "target, updated");
	WAIT_FOR(c, "target updated", .valid = YES, .content = "target, updated");
	itest_put(p1, "one, updated");
	WAIT_FOR(a, "one updated", .valid = YES, .content = "one, updated");
	itest_seg_read(b);
	assert_string_equal(b->buf, "two, updated");
	itest_seg_read(c);
	assert_string_equal(c->buf, "target, updated");

	/* One ZooKeeper session for the three watches (our helper sessions are
	 * closed; the server drops their connections asynchronously). */
	if (!zkh_eventually(one_session, NULL, WAIT_MS)) {
		char reply[16384];

		zkh_4lw(zk, 0, "cons", reply, sizeof(reply));
		fprintf(stderr, "server connections:\n%s\n", reply);
		fail_msg("expected exactly one ZooKeeper session, found %d", zkh_session_count(hosts));
	}

	itest_seg_close(a);
	itest_seg_close(b);
	itest_seg_close(c);
	itest_broker_stop(br);
}

static void test_pointer_mode(void **state)
{
	char pointer[128], t1[128], t2[128], with_newline[160];
	const char *shm = itest_seg_name("pointer");
	char too_long[ZKW_POINTER_MAX + 64];
	const char *bad[] = {"relative/path", "/a/../b", "/a//b", "/a\001b", too_long, "/"};
	struct itest_seg *s;
	proc *b;

	(void)state;
	itest_node(pointer, sizeof(pointer), "ptr/pointer1");
	itest_node(t1, sizeof(t1), "ptr/conf1");
	itest_node(t2, sizeof(t2), "ptr/conf2");
	itest_put(t1, "config one");
	itest_put(t2, "config two");
	snprintf(with_newline, sizeof(with_newline), "%s\n", t1); /* as `echo` writes it */
	itest_put(pointer, with_newline);
	too_long[0] = '/';
	memset(too_long + 1, 'a', sizeof(too_long) - 2);
	too_long[sizeof(too_long) - 1] = '\0';

	b = itest_broker_start("-z", hosts, "-f", pointer, "-p", "--shm", shm, NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "valid through the pointer (trailing newline trimmed)", .valid = YES,
	         .content = "config one", .pointer = t1);

	itest_put(pointer, t2);
	WAIT_FOR(s, "switched to conf2", .valid = YES, .content = "config two", .pointer = t2);
	itest_put(t2, "config two, updated");
	WAIT_FOR(s, "conf2 updated", .valid = YES, .content = "config two, updated", .pointer = t2);

	/* The target deleted: invalid, content kept; recreated: noticed. */
	assert_int_equal(zkh_delete(hosts, t2), ZOK);
	WAIT_FOR(s, "target deleted", .valid = NO, .error = ZKW_ERR_NO_NODE, .content = "config two, updated",
	         .pointer = t2);
	itest_put(t2, "config two, reborn");
	WAIT_FOR(s, "target recreated", .valid = YES, .content = "config two, reborn", .pointer = t2);
	itest_put(t2, "config two, updated");
	WAIT_FOR(s, "conf2 updated again", .valid = YES, .content = "config two, updated");

	/* The pointer node itself deleted and recreated. */
	assert_int_equal(zkh_delete(hosts, pointer), ZOK);
	WAIT_FOR(s, "pointer deleted", .valid = NO, .error = ZKW_ERR_NO_NODE,
	         .content = "config two, updated");
	itest_put(pointer, t1);
	WAIT_FOR(s, "pointer recreated", .valid = YES, .content = "config one", .pointer = t1);
	itest_put(pointer, t2);
	WAIT_FOR(s, "back on conf2", .valid = YES, .content = "config two, updated", .pointer = t2);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t gen = s->snap.generation;

		itest_put(pointer, bad[i]);
		if (!itest_seg_wait(s,
		                    &(struct itest_want){.valid = NO,
		                                         .error = ZKW_ERR_POINTER,
		                                         .content = "config two, updated",
		                                         .after_gen = gen},
		                    WAIT_MS, "invalid pointer, last good content kept"))
			fail_msg("bad pointer #%zu \"%.40s\" not refused", i, bad[i]);
		itest_put(pointer, t2);
		WAIT_FOR(s, "valid again", .valid = YES, .content = "config two, updated", .pointer = t2);
	}

	itest_seg_close(s);
	itest_broker_stop(b);
}

static void test_second_broker_refused(void **state)
{
	char path[128], pid[32];
	const char *shm = itest_seg_name("twice");
	char *err;
	struct itest_seg *s;
	proc *first, *second;

	(void)state;
	itest_node(path, sizeof(path), "twice");
	itest_put(path, "only one writer");
	first = itest_broker_start("-z", hosts, "-f", path, "--shm", shm, NULL);
	itest_broker_wait_segment(first, shm);
	s = itest_seg_open(shm, first);
	WAIT_FOR(s, "valid", .valid = YES, .content = "only one writer");

	second = itest_broker_start("-z", hosts, "-f", path, "--shm", shm, NULL);
	assert_int_equal(proc_wait(second, EXIT_WAIT_MS), 1);
	err = proc_output(second, PROC_STDERR, NULL);
	snprintf(pid, sizeof(pid), "pid %d", (int)proc_pid(first));
	if (!strstr(err, "held by another zkw-broker") || !strstr(err, pid)) {
		fprintf(stderr, "second broker's stderr:\n%s\n", err);
		free(err);
		fail_msg("the second broker's message does not name the first (%s)", pid);
	}
	free(err);
	proc_free(second);

	/* The first is undisturbed. */
	assert_true(zkw_reader_ping(&s->r));
	assert_int_equal(zkw_reader_broker_pid(&s->r), proc_pid(first));
	itest_seg_read(s);
	assert_true(s->snap.valid);
	itest_seg_close(s);
	itest_broker_stop(first);
}

static void test_broker_restart_under_readers(void **state)
{
	char path[128];
	const char *shm = itest_seg_name("restart");
	struct counts counts = {0};
	zkw_handlers h = {count_valid, count_config, count_error, &counts};
	zkw_dispatcher d;
	uint64_t before, epoch;
	struct itest_seg *s;
	proc *b;

	(void)state;
	itest_node(path, sizeof(path), "restart");
	itest_put(path, "survives restarts");
	b = itest_broker_start("-z", hosts, "-f", path, "--shm", shm, NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	zkw_dispatcher_init(&d, &s->r, &h, dispatch_buf, sizeof(dispatch_buf));
	WAIT_FOR(s, "valid", .valid = YES, .content = "survives restarts");
	itest_dispatch_all(&d);
	assert_int_equal(counts.config, 1);
	assert_true(zkw_reader_ping(&s->r));
	epoch = zkw_reader_broker_epoch(&s->r);

	/* Killed: ping says so at once (the lock died with the process), and
	 * the last content stays readable. */
	assert_int_equal(proc_signal(b, SIGKILL), 0);
	assert_int_equal(proc_wait(b, EXIT_WAIT_MS), PROC_SIGNALED(SIGKILL));
	proc_free(b);
	assert_false(zkw_reader_ping(&s->r));
	assert_false(zkw_reader_broker_alive(&s->r));
	assert_int_equal(itest_seg_read(s), (ssize_t)strlen("survives restarts"));
	assert_string_equal(s->buf, "survives restarts");
	before = s->snap.generation;

	/* A new broker on the same segment: the same reader, never reopened. */
	b = itest_broker_start("-z", hosts, "-f", path, "--shm", shm, NULL);
	s->broker = b;
	WAIT_FOR(s, "valid again after the restart", .valid = YES, .content = "survives restarts",
	         .after_gen = before);
	assert_true(s->snap.generation > before);
	assert_true(zkw_reader_ping(&s->r));
	assert_int_equal(zkw_reader_broker_pid(&s->r), proc_pid(b));
	assert_true(zkw_reader_broker_epoch(&s->r) != epoch);
	itest_dispatch_all(&d);
	assert_int_equal(counts.config, 1); /* no duplicate after the restart */
	assert_string_equal(counts.last_config, "survives restarts");

	/* And it still follows the node. */
	itest_put(path, "after the restart");
	WAIT_FOR(s, "updated after the restart", .valid = YES, .content = "after the restart");
	itest_dispatch_all(&d);
	assert_int_equal(counts.config, 2);

	/* Changed while no broker ran: the next broker delivers it, once. */
	assert_int_equal(proc_signal(b, SIGKILL), 0);
	assert_int_equal(proc_wait(b, EXIT_WAIT_MS), PROC_SIGNALED(SIGKILL));
	proc_free(b);
	itest_put(path, "changed while down");
	before = zkw_reader_generation(&s->r);
	b = itest_broker_start("-z", hosts, "-f", path, "--shm", shm, NULL);
	s->broker = b;
	WAIT_FOR(s, "the change made while down", .valid = YES, .content = "changed while down",
	         .after_gen = before);
	itest_dispatch_all(&d);
	assert_int_equal(counts.config, 3);
	assert_string_equal(counts.last_config, "changed while down");

	itest_seg_close(s);
	itest_broker_stop(b);
}

static void test_sigterm(void **state)
{
	char path[128];
	const char *shm = itest_seg_name("term"), *gone = itest_seg_name("term-unlink");
	struct itest_seg *s;
	proc *b;

	(void)state;
	itest_node(path, sizeof(path), "term");
	itest_put(path, "last words");
	b = itest_broker_start("-z", hosts, "-f", path, "--shm", shm, NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "valid", .valid = YES, .content = "last words");

	assert_int_equal(proc_signal(b, SIGTERM), 0);
	assert_int_equal(proc_wait(b, EXIT_WAIT_MS), 0);
	itest_seg_read(s);
	assert_string_equal(s->buf, "last words");
	assert_false(s->snap.valid);
	assert_string_equal(s->snap.error, "zkw-broker stopped");
	assert_false(zkw_reader_ping(&s->r));
	assert_false(zkw_reader_is_valid(&s->r));
	proc_free(b);
	itest_seg_close(s);
	/* Reopened after the exit: the same. */
	s = itest_seg_open(shm, NULL);
	itest_seg_read(s);
	assert_string_equal(s->buf, "last words");
	assert_false(s->snap.valid);
	itest_seg_close(s);

	/* --unlink-on-exit removes it; SIGINT stops as SIGTERM does. */
	b = itest_broker_start("-z", hosts, "-f", path, "--shm", gone, "--unlink-on-exit", NULL);
	itest_broker_wait_segment(b, gone);
	s = itest_seg_open(gone, b);
	WAIT_FOR(s, "valid", .valid = YES, .content = "last words");
	itest_seg_close(s);
	assert_int_equal(proc_signal(b, SIGINT), 0);
	assert_int_equal(proc_wait(b, EXIT_WAIT_MS), 0);
	proc_free(b);
	assert_false(itest_seg_exists(gone));
	assert_int_equal(zkw_reader_open(&s->r, gone), -ENOENT);
}

/* Stopping must not hang on a server that does not answer. */
static void test_sigterm_while_zookeeper_paused(void **state)
{
	char path[128];
	const char *shm = itest_seg_name("paused");
	struct itest_seg *s;
	int64_t start;
	int status;
	proc *b;

	(void)state;
	itest_node(path, sizeof(path), "paused");
	itest_put(path, "frozen");
	b = itest_broker_start("-z", hosts, "-f", path, "--shm", shm, NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "valid", .valid = YES, .content = "frozen");

	assert_int_equal(zkh_pause(zk), 0);
	start = zkw_clock_mono_ms();
	assert_int_equal(proc_signal(b, SIGTERM), 0);
	status = proc_wait(b, 15000);
	fprintf(stderr, "  stopped in %lld ms with the server paused\n",
	        (long long)(zkw_clock_mono_ms() - start));
	assert_int_equal(zkh_resume(zk), 0);
	assert_int_equal(status, 0);
	proc_free(b);
	itest_seg_read(s);
	assert_false(s->snap.valid);
	assert_string_equal(s->buf, "frozen");
	assert_int_equal(zkh_wait_serving(zk, WAIT_MS), 0);
	itest_seg_close(s);
}

static bool mentions_sizes(const struct itest_seg *s, void *arg)
{
	(void)arg;
	return strstr(s->snap.error, "2048") && strstr(s->snap.error, "1024");
}

static void test_oversized_content(void **state)
{
	char path[128], big[2049];
	const char *shm = itest_seg_name("big");
	struct itest_seg *s;
	proc *b;

	(void)state;
	itest_node(path, sizeof(path), "big");
	itest_put(path, "small");
	b = itest_broker_start("-z", hosts, "-f", path, "--shm", shm, "--capacity", "1k", NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	assert_int_equal(zkw_reader_capacity(&s->r), 1024);
	WAIT_FOR(s, "valid", .valid = YES, .content = "small");

	/* Exactly the capacity fits. */
	memset(big, 'y', 1024);
	big[1024] = '\0';
	itest_put(path, big);
	WAIT_FOR(s, "1024 bytes: valid", .valid = YES, .content = big);

	itest_put(path, "small");
	WAIT_FOR(s, "valid", .valid = YES, .content = "small");
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	itest_put(path, big);
	WAIT_FOR(s, "invalid: too large, both sizes named, last good kept", .valid = NO, .content = "small",
	         .pred = mentions_sizes);
	assert_true(s->snap.error[0] != '\0');

	itest_put(path, "small again");
	WAIT_FOR(s, "valid again", .valid = YES, .content = "small again", .error = "");

	itest_seg_close(s);
	itest_broker_stop(b);
}

static void test_unknown_host(void **state)
{
	const char *bad_hosts[] = {"nonexistent.invalid:2181", "nonexistent.invalid:2181,also.invalid:2182"};
	const char *shm = itest_seg_name("nohost");
	struct itest_seg *s;

	(void)state;
	/* A connect string that cannot be one is bad usage, told once, at the
	 * start (not by the ZooKeeper client, the session and the broker in
	 * turn). */
	{
		const char *argv[] = {"-z", "::::", "-f", "/zkwtb/nohost", "--shm", shm, "--no-valid-init", NULL};
		char *err = NULL;

		assert_int_equal(proc_run("zkw-broker", argv, NULL, EXIT_WAIT_MS, NULL, &err), 2);
		assert_non_null(strstr(err, "-z ::::"));
		assert_int_equal(proc_count_in(err, strlen(err), "\n"), 1);
		free(err);
	}
	for (size_t i = 0; i < sizeof(bad_hosts) / sizeof(bad_hosts[0]); i++) {
		int64_t start = zkw_clock_mono_ms();
		proc *b = itest_broker_start("-z", bad_hosts[i], "-f", "/zkwtb/nohost", "--shm", shm, NULL);
		char *err;
		int status = proc_wait(b, EXIT_WAIT_MS);

		if (status != 1) {
			proc_dump(b, "expected exit 1");
			fail_msg("-z %s: exit %d, want 1", bad_hosts[i], status);
		}
		err = proc_output(b, PROC_STDERR, NULL);
		/* The cause once: not the client's, the session's and the
		 * broker's words for it in turn. */
		if (proc_count_in(err, strlen(err), " error: ") != 1) {
			fprintf(stderr, "broker's stderr:\n%s\n", err);
			free(err);
			fail_msg("-z %s: the cause is not told exactly once", bad_hosts[i]);
		}
		if (!strstr(err, bad_hosts[i]) || !strstr(err, "error")) {
			fprintf(stderr, "broker's stderr:\n%s\n", err);
			free(err);
			fail_msg("-z %s: the message does not name the host string", bad_hosts[i]);
		}
		fprintf(stderr, "  -z %s: exit 1 after %lld ms\n", bad_hosts[i],
		        (long long)(zkw_clock_mono_ms() - start));
		free(err);
		proc_free(b);
	}

	/* Without valid-init the broker keeps running, invalid, with an error. */
	for (size_t i = 0; i < sizeof(bad_hosts) / sizeof(bad_hosts[0]); i++) {
		proc *b = itest_broker_start("-z", bad_hosts[i], "-f", "/zkwtb/nohost", "--shm", shm,
		                             "--no-valid-init", NULL);

		itest_broker_wait_segment(b, shm);
		s = itest_seg_open(shm, b);
		WAIT_FOR(s, "invalid with an error", .valid = NO, .pred = NULL);
		assert_true(s->snap.error[0] != '\0');
		assert_false(s->snap.connected);
		assert_false(zkw_reader_ping(&s->r));
		assert_true(zkw_reader_broker_alive(&s->r));
		assert_false(proc_exited(b, NULL));
		itest_seg_close(s);
		itest_broker_stop(b);
	}
}

static void test_zookeeper_down_at_start(void **state)
{
	const char *shm = itest_seg_name("down");
	zkh_cluster *zk2;
	struct itest_seg *s;
	proc *b;

	(void)state;
	zk2 = zkh_start(1);
	assert_non_null(zk2);
	assert_int_equal(zkh_set(zkh_hosts(zk2), "/down/conf", "there all along", 15), ZOK);
	assert_int_equal(zkh_member_stop(zk2, 0), 0);

	b = itest_broker_start("-z", zkh_hosts(zk2), "-f", "/down/conf", "--shm", shm, "--no-valid-init",
	                       NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	/* Nothing published yet, or an invalid state: never valid. */
	itest_seg_read(s);
	assert_false(s->snap.valid);
	assert_false(zkw_reader_ping(&s->r));
	assert_false(proc_exited(b, NULL));

	assert_int_equal(zkh_member_start(zk2, 0), 0);
	WAIT_FOR(s, "converged once the server is up", .valid = YES, .content = "there all along");
	assert_true(s->snap.connected);
	assert_true(zkw_reader_ping(&s->r));

	itest_seg_close(s);
	itest_broker_stop(b);
	zkh_stop(zk2);
}

/* ---- ACL: a node only its creator may read ------------------------------ */

/* An authenticated session of the test's own (zkw_zk_connect: the tools'
 * synchronous helper). Requests are ordered: what follows runs authenticated. */
static zhandle_t *connect_with_digest(void)
{
	char why[256];
	zhandle_t *zh;

	if (zkw_zk_connect(&zh, hosts, WAIT_MS, 10000, why, sizeof(why)))
		fail_msg("%s", why);
	assert_int_equal(zoo_add_auth(zh, "digest", "zkwtest:secret", 14, NULL, NULL), ZOK);
	return zh;
}

static void test_acl_protected_node(void **state)
{
	char parent[128], path[128];
	const char *shm = itest_seg_name("acl");
	zhandle_t *zh;
	struct itest_seg *s;
	proc *b;

	(void)state;
	itest_node(parent, sizeof(parent), "acl");
	itest_node(path, sizeof(path), "acl/secret");
	itest_put(parent, "");
	zh = connect_with_digest();
	zoo_delete(zh, path, -1);
	assert_int_equal(zoo_create(zh, path, "hidden", 6, &ZOO_CREATOR_ALL_ACL, 0, NULL, 0), ZOK);

	b = itest_broker_start("-z", hosts, "-f", path, "--shm", shm, "--reconcile", "1", NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "invalid: not authorized", .valid = NO, .error = ZKW_ERR_NO_AUTH);
	assert_true(s->snap.connected);
	assert_int_equal(s->len, 0);

	/* Opened up (and touched, so the change is visible to a data watch or
	 * to the reconcile's cheap check): becomes valid without a restart. */
	assert_int_equal(zoo_set_acl(zh, path, -1, &ZOO_OPEN_ACL_UNSAFE), ZOK);
	assert_int_equal(zoo_set(zh, path, "public now", 10, -1), ZOK);
	WAIT_FOR(s, "valid after the ACL was opened", .valid = YES, .content = "public now");

	zkw_zk_close(zh);
	itest_seg_close(s);
	itest_broker_stop(b);
}

static mode_t segment_mode(const char *name)
{
	char path[128];
	struct stat st;

	snprintf(path, sizeof(path), "/dev/shm/%s", name);
	if (stat(path, &st) != 0)
		fail_msg("stat %s: %s", path, strerror(errno));
	return st.st_mode & 07777;
}

static void test_segment_permissions(void **state)
{
	char path[128];
	const char *dflt = itest_seg_name("mode-default"), *strict = itest_seg_name("mode-0600");
	proc *b;

	(void)state;
	itest_node(path, sizeof(path), "mode");
	itest_put(path, "x");
	b = itest_broker_start("-z", hosts, "-f", path, "--shm", dflt, NULL);
	itest_broker_wait_segment(b, dflt);
	assert_int_equal(segment_mode(dflt), 0640);
	itest_broker_stop(b);

	b = itest_broker_start("-z", hosts, "-f", path, "--shm", strict, "--mode", "0600", NULL);
	itest_broker_wait_segment(b, strict);
	assert_int_equal(segment_mode(strict), 0600);
	itest_broker_stop(b);
}

static void test_bad_command_lines(void **state)
{
	const char *dup = itest_seg_name("dup");
	struct {
		const char *what;
		const char *argv[12];
	} cases[] = {
	        {"no -z", {"-f", "/x", NULL}},
	        {"no -f", {"-z", hosts, NULL}},
	        {"unknown option", {"-z", hosts, "-f", "/x", "--frobnicate", NULL}},
	        {"unknown short option", {"-z", hosts, "-f", "/x", "-q", NULL}},
	        {"option without value", {"-z", hosts, "-f", NULL}},
	        {"relative -f", {"-z", hosts, "-f", "relative/path", NULL}},
	        {"--capacity 0", {"-z", hosts, "-f", "/x", "--capacity", "0", NULL}},
	        {"--capacity garbage", {"-z", hosts, "-f", "/x", "--capacity", "lots", NULL}},
	        {"--capacity 12q", {"-z", hosts, "-f", "/x", "--capacity", "12q", NULL}},
	        {"--capacity -1", {"-z", hosts, "-f", "/x", "--capacity", "-1", NULL}},
	        {"--capacity too big", {"-z", hosts, "-f", "/x", "--capacity", "300m", NULL}},
	        {"--capacity overflowing",
	         {"-z", hosts, "-f", "/x", "--capacity", "99999999999999999999", NULL}},
	        {"--mode 999", {"-z", hosts, "-f", "/x", "--mode", "999", NULL}},
	        {"--mode 01777", {"-z", hosts, "-f", "/x", "--mode", "01777", NULL}},
	        {"--session-timeout abc", {"-z", hosts, "-f", "/x", "--session-timeout", "abc", NULL}},
	        {"--session-timeout -5", {"-z", hosts, "-f", "/x", "--session-timeout", "-5", NULL}},
	        {"--reconcile x", {"-z", hosts, "-f", "/x", "--reconcile", "x", NULL}},
	        {"--shm with a slash", {"-z", hosts, "-f", "/x", "--shm", "a/b", NULL}},
	        {"two watches, one --shm",
	         {"-z", hosts, "-f", "/x", "--shm", dup, "-f", "/y", "--shm", dup, NULL}},
	        {"two watches, one default name", {"-z", hosts, "-f", "/x", "-f", "/x", NULL}},
	        {"positional argument", {"-z", hosts, "-f", "/x", "extra", NULL}},
	};
	char *out, *err;
	int status;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		status = proc_run("zkw-broker", cases[i].argv, NULL, EXIT_WAIT_MS, &out, &err);
		if (status != 2 || strncmp(err, "zkw-broker: ", 12) != 0 ||
		    strchr(err, '\n') != err + strlen(err) - 1) {
			fprintf(stderr, "%s: stderr (want one line \"zkw-broker: ...\"): \"%s\"\n",
			        cases[i].what, err);
			free(out);
			free(err);
			fail_msg("%s: exit %d (want 2)", cases[i].what, status);
		}
		free(out);
		free(err);
	}
	assert_false(itest_seg_exists(dup));

	status = proc_run("zkw-broker", (const char *[]){"--help", NULL}, NULL, EXIT_WAIT_MS, &out, &err);
	assert_int_equal(status, 0);
	assert_non_null(strstr(out, "usage: zkw-broker"));
	assert_non_null(strstr(out, "--shm"));
	assert_string_equal(err, "");
	free(out);
	free(err);
}

/* ---- signals (docs/design.md, "Signals") -------------------------------- */

/* The broker is alive and serving: its segment says running, connected and
 * valid, and it still follows the node. */
static void assert_serving(struct itest_seg *s, proc *b, const char *path, const char *content,
                           const char *after)
{
	int status;

	if (proc_exited(b, &status)) {
		proc_dump(b, "the broker exited");
		fail_msg("the broker exited (status %d) %s", status, after);
	}
	itest_put(path, content);
	WAIT_FOR(s, "still following the node", .valid = YES, .content = content);
	assert_true(s->snap.connected);
	assert_true(zkw_reader_ping(&s->r));
	assert_int_equal(zkw_reader_state(&s->r) &
	                         (ZKW_STATE_RUNNING | ZKW_STATE_CONNECTED | ZKW_STATE_VALID),
	                 ZKW_STATE_RUNNING | ZKW_STATE_CONNECTED | ZKW_STATE_VALID);
}

/* Send sig; the broker logs it once ("received NAME from pid <ours>") and
 * goes on serving. */
static void signal_ignored(struct itest_seg *s, proc *b, const char *path, int sig, const char *name)
{
	char line[96], content[96];

	snprintf(line, sizeof(line), "received %s from pid %d ", name, (int)getpid());
	assert_int_equal(proc_signal(b, sig), 0);
	if (!proc_wait_output(b, PROC_STDERR, line, WAIT_MS))
		fail_msg("%s: no log line \"%s\"", name, line);
	snprintf(line, sizeof(line), "received %s ", name);
	assert_int_equal(proc_count(b, PROC_STDERR, line), 1);
	snprintf(content, sizeof(content), "after %s", name);
	assert_serving(s, b, path, content, name);
}

/* Events of one signal in the log: a line per signal logged ("received NAME
 * from ...") and the counts of the summaries ("received NAME N more
 * times"); returns the signals accounted for, *lines the lines. */
static int signals_accounted(proc *b, const char *name, int *lines)
{
	char *err = proc_output(b, PROC_STDERR, NULL), from[64], more[64];
	const char *p;
	int total = 0;

	snprintf(from, sizeof(from), "received %s from ", name);
	snprintf(more, sizeof(more), "received %s ", name);
	*lines = 0;
	for (p = err; (p = strstr(p, more)); p += strlen(more)) {
		unsigned n;

		(*lines)++;
		if (strncmp(p, from, strlen(from)) == 0)
			total++;
		else if (sscanf(p + strlen(more), "%u more time", &n) == 1)
			total += (int)n;
		else
			fail_msg("unexpected line about %s: %.80s", name, p);
	}
	free(err);
	return total;
}

static void test_signals_logged_and_ignored(void **state)
{
	static const struct {
		int sig;
		const char *name;
	} ignored[] = {
	        {SIGUSR1, "SIGUSR1"},     {SIGUSR2, "SIGUSR2"}, {SIGALRM, "SIGALRM"},
	        {SIGVTALRM, "SIGVTALRM"}, {SIGPROF, "SIGPROF"}, {SIGIO, "SIGIO"},     {SIGPWR, "SIGPWR"},
	        {SIGSTKFLT, "SIGSTKFLT"}, {SIGXFSZ, "SIGXFSZ"}, {SIGTTIN, "SIGTTIN"}, {SIGTTOU, "SIGTTOU"},
	};
	enum { FLOOD = 200 };
	char path[128], rt[32], line[96];
	const char *shm = itest_seg_name("signals");
	int64_t start;
	int lines = 0, total = 0;
	struct itest_seg *s;
	proc *b;

	(void)state;
	itest_node(path, sizeof(path), "signals");
	itest_put(path, "before any signal");
	b = itest_broker_start("-z", hosts, "-f", path, "--shm", shm, NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "valid", .valid = YES, .content = "before any signal");

	for (size_t i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++)
		signal_ignored(s, b, path, ignored[i].sig, ignored[i].name);
	/* SIGHUP reloads; with no configuration file there is nothing to
	 * read again, and the broker goes on serving. */
	assert_int_equal(proc_signal(b, SIGHUP), 0);
	assert_true(proc_wait_output(b, PROC_STDERR, "reload: no configuration file (--config)", WAIT_MS));
	itest_put(path, "after SIGHUP");
	WAIT_FOR(s, "valid after SIGHUP", .valid = YES, .content = "after SIGHUP");
	snprintf(rt, sizeof(rt), "SIGRTMIN+%d", 1);
	signal_ignored(s, b, path, SIGRTMIN + 1, rt);
	assert_int_equal(proc_signal(b, SIGRTMAX), 0);
	snprintf(line, sizeof(line), "received SIGRTMIN+%d from pid %d ", SIGRTMAX - SIGRTMIN, (int)getpid());
	assert_true(proc_wait_output(b, PROC_STDERR, line, WAIT_MS));

	/* A flood: real-time signals queue, so each one reaches the broker.
	 * One line a second at most for them, and every one counted. Then a
	 * higher real-time signal, delivered after every lower pending one:
	 * once it is logged, the whole flood has been taken. */
	start = zkw_clock_mono_ms();
	for (int i = 0; i < FLOOD; i++)
		assert_int_equal(sigqueue(proc_pid(b), SIGRTMIN + 2, (union sigval){.sival_int = i}), 0);
	assert_int_equal(proc_signal(b, SIGRTMIN + 3), 0);
	snprintf(line, sizeof(line), "received SIGRTMIN+%d from pid %d ", 3, (int)getpid());
	assert_true(proc_wait_output(b, PROC_STDERR, line, WAIT_MS));
	snprintf(rt, sizeof(rt), "SIGRTMIN+%d", 2);
	snprintf(line, sizeof(line), "received %s ", rt);
	while ((total = signals_accounted(b, rt, &lines)) < FLOOD)
		if (!proc_wait_output_count(b, PROC_STDERR, line, lines + 1, WAIT_MS))
			fail_msg("%d %s sent, %d logged or counted", FLOOD, rt, total);
	assert_int_equal(total, FLOOD);
	/* At most one line a second, plus the summary of the last one. */
	if (lines > 2 + (int)((zkw_clock_mono_ms() - start) / 1000)) {
		proc_dump(b, "flooded");
		fail_msg("%d lines for %d %s in %lld ms", lines, FLOOD, rt,
		         (long long)(zkw_clock_mono_ms() - start));
	}
	assert_serving(s, b, path, "after the flood", "after the flood");

	{
		char *err = proc_output(b, PROC_STDERR, NULL);

		assert_clean_text("the broker's log", err, strlen(err));
		free(err);
	}

	/* And SIGTERM still stops it cleanly. */
	assert_int_equal(proc_signal(b, SIGTERM), 0);
	assert_int_equal(proc_wait(b, EXIT_WAIT_MS), 0);
	assert_int_equal(proc_count(b, PROC_STDERR, "stopping on SIGTERM from pid "), 1);
	itest_seg_read(s);
	assert_false(s->snap.valid);
	assert_string_equal(s->snap.error, "zkw-broker stopped");
	assert_string_equal(s->buf, "after the flood");
	assert_false(zkw_reader_ping(&s->r));
	proc_free(b);
	itest_seg_close(s);
}

/* SIGQUIT and SIGXCPU (the soft CPU limit, before the SIGKILL of the hard
 * one) stop the broker as SIGTERM does: logged, segment "stopped". */
static void test_signals_that_stop(void **state)
{
	static const struct {
		int sig;
		const char *name;
	} stops[] = {{SIGQUIT, "SIGQUIT"}, {SIGXCPU, "SIGXCPU"}};
	char path[128], line[64];
	const char *shm = itest_seg_name("signal-stop");
	struct itest_seg *s;

	(void)state;
	itest_node(path, sizeof(path), "signal-stop");
	itest_put(path, "stop me");
	for (size_t i = 0; i < sizeof(stops) / sizeof(stops[0]); i++) {
		proc *b = itest_broker_start("-z", hosts, "-f", path, "--shm", shm, NULL);
		int status;

		itest_broker_wait_segment(b, shm);
		s = itest_seg_open(shm, b);
		WAIT_FOR(s, "valid", .valid = YES, .content = "stop me");
		assert_int_equal(proc_signal(b, stops[i].sig), 0);
		status = proc_wait(b, EXIT_WAIT_MS);
		if (status != 0) {
			proc_dump(b, "expected a clean stop");
			fail_msg("%s: exit status %d, want 0", stops[i].name, status);
		}
		snprintf(line, sizeof(line), "stopping on %s from pid ", stops[i].name);
		assert_int_equal(proc_count(b, PROC_STDERR, line), 1);
		itest_seg_read(s);
		assert_false(s->snap.valid);
		assert_string_equal(s->snap.error, "zkw-broker stopped");
		assert_string_equal(s->buf, "stop me");
		assert_false(zkw_reader_ping(&s->r));
		proc_free(b);
		itest_seg_close(s);
	}
}

/* ---- input from outside: refused, or escaped ------------------------------ */

/* Hostile watched paths, segment names, hosts and groups: refused at once
 * (exit 2) with one line naming the bad byte, no raw control byte in it, and
 * nothing created in /dev/shm. */
static void test_hostile_names_refused(void **state)
{
	char esc_path[128], default_name[ZKW_SHM_NAME_MAX + 1], bad_shm[64];
	const char *shm = itest_seg_name("hostile");
	struct {
		const char *what;
		const char *argv[12];
		const char *says; /* in the message */
	} cases[] = {
	        {"-f with ESC",
	         {"-z", hosts, "-f", "/zkwtb/a\x1b[31mred", "--shm", shm, NULL},
	         "byte 9 ('\\x1b')"},
	        {"-f with CR",
	         {"-z", hosts, "-f", "/zkwtb/fake\r2026-01-01 error: x", "--shm", shm, NULL},
	         "byte 12"},
	        {"-f with LF", {"-z", hosts, "-f", "/zkwtb/a\nb", "--shm", shm, NULL}, "byte 9"},
	        {"-f with a space, then ESC",
	         {"-z", hosts, "-f", "/zkwtb/a b/c\x1b", "--shm", shm, NULL},
	         "byte 13"},
	        {"-f with TAB", {"-z", hosts, "-f", "/zkwtb/a\tb", "--shm", shm, NULL}, "byte 9"},
	        {"-f with DEL", {"-z", hosts, "-f", "/zkwtb/a\x7f", "--shm", shm, NULL}, "byte 9"},
	        {"-f with a C1 CSI", {"-z", hosts, "-f", "/zkwtb/\xc2\x9bJ", "--shm", shm, NULL}, "byte 8"},
	        {"-f with invalid UTF-8", {"-z", hosts, "-f", "/zkwtb/\xc3(", "--shm", shm, NULL}, "byte 8"},
	        {"-f ending in CR", {"-z", hosts, "-f", "/zkwtb/a\r", "--shm", shm, NULL}, "byte 9"},
	        {"-f ending in a space", {"-z", hosts, "-f", "/zkwtb/a ", "--shm", shm, NULL}, "byte 9"},
	        {"-f with //", {"-z", hosts, "-f", "/zkwtb//a", "--shm", shm, NULL}, "byte 8"},
	        {"-f ending in /", {"-z", hosts, "-f", "/zkwtb/", "--shm", shm, NULL}, "byte 7"},
	        {"-f with ..", {"-z", hosts, "-f", "/zkwtb/../a", "--shm", shm, NULL}, "byte 8"},
	        {"-f with .", {"-z", hosts, "-f", "/zkwtb/./a", "--shm", shm, NULL}, "byte 8"},
	        {"-f /", {"-z", hosts, "-f", "/", "--shm", shm, NULL}, "root"},
	        {"-f with ESC, default segment name", {"-z", hosts, "-f", esc_path, NULL}, "\\x1b"},
	        {"--shm with ESC", {"-z", hosts, "-f", "/zkwtb/x", "--shm", bad_shm, NULL}, "\\x1b"},
	        {"-z with ESC",
	         {"-z", "127.0.0.1:1\x1b[2J", "-f", "/zkwtb/x", "--shm", shm, NULL},
	         "byte 12"},
	        {"--group with ESC",
	         {"-z", hosts, "-f", "/zkwtb/x", "--shm", shm, "--group", "\x1b[2Jx", NULL},
	         "\\x1b[2Jx"},
	        {"unknown option with CR", {"-z", hosts, "-f", "/zkwtb/x", "--\r", NULL}, "\\x0d"},
	};
	char *out, *err;
	int status;

	(void)state;
	snprintf(esc_path, sizeof(esc_path), "%s/esc\x1b[31m", itest_root());
	assert_int_equal(zkw_shm_default_name(default_name, sizeof(default_name), esc_path), 0);
	itest_seg_remember(default_name);
	snprintf(bad_shm, sizeof(bad_shm), "%s\x1b[2J", itest_seg_name("hostile-shm"));
	itest_seg_remember(bad_shm);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		status = proc_run("zkw-broker", cases[i].argv, NULL, EXIT_WAIT_MS, &out, &err);
		if (status != 2 || strncmp(err, "zkw-broker: ", 12) != 0 ||
		    strchr(err, '\n') != err + strlen(err) - 1 || !strstr(err, cases[i].says)) {
			fprintf(stderr,
			        "%s: stderr (want one line \"zkw-broker: ...\" saying \"%s\"): \"%s\"\n",
			        cases[i].what, cases[i].says, err);
			free(out);
			free(err);
			fail_msg("%s: exit %d (want 2)", cases[i].what, status);
		}
		assert_clean_text(cases[i].what, err, strlen(err));
		assert_string_equal(out, "");
		free(out);
		free(err);
		assert_false(itest_seg_exists(shm));
		assert_false(itest_seg_exists(default_name + 1));
		assert_false(itest_seg_exists(bad_shm));
	}
}

/* --mode: group and other write bits refused (whoever may write a segment
 * can crash or fool its readers); read bits are fine. */
static void test_mode_write_bits_refused(void **state)
{
	static const char *refused[] = {"0666", "0620", "0622", "0660", "0602", "0642"};
	char path[128], *out, *err;
	const char *shm = itest_seg_name("mode-write"), *ok = itest_seg_name("mode-0644");
	int status;
	proc *b;

	(void)state;
	itest_node(path, sizeof(path), "mode-write");
	itest_put(path, "x");
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		const char *argv[] = {"-z", hosts, "-f", path, "--shm", shm, "--mode", refused[i], NULL};

		status = proc_run("zkw-broker", argv, NULL, EXIT_WAIT_MS, &out, &err);
		if (status != 2 || !strstr(err, "--mode") || !strstr(err, "write") ||
		    strchr(err, '\n') != err + strlen(err) - 1) {
			fprintf(stderr, "--mode %s: stderr: \"%s\"\n", refused[i], err);
			free(out);
			free(err);
			fail_msg("--mode %s: exit %d (want 2, one line about write permission)", refused[i],
			         status);
		}
		free(out);
		free(err);
		assert_false(itest_seg_exists(shm));
	}

	b = itest_broker_start("-z", hosts, "-f", path, "--shm", ok, "--mode", "0644", NULL);
	itest_broker_wait_segment(b, ok);
	assert_int_equal(segment_mode(ok), 0644);
	itest_broker_stop(b);
}

/* What ZooKeeper and the watch library hand the broker reaches its log
 * escaped: a pointer node holding ESC, CR and LF makes the watch invalid,
 * the broker logs why on one line, and no raw byte gets through. */
static void test_watch_errors_logged_escaped(void **state)
{
	char pointer[128], target[128], hostile[256], line[160];
	const char *shm = itest_seg_name("hostile-pointer");
	char *err;
	struct itest_seg *s;
	proc *b;

	(void)state;
	itest_node(pointer, sizeof(pointer), "hostile/pointer");
	itest_node(target, sizeof(target), "hostile/target");
	itest_put(target, "the real config");
	itest_put(pointer, target);
	b = itest_broker_start("-z", hosts, "-f", pointer, "-p", "--shm", shm, NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "valid through the pointer", .valid = YES, .content = "the real config");

	snprintf(hostile, sizeof(hostile),
	         "%s\x1b]0;owned\x07\x1b[2J\r\n2026-01-01T00:00:00.000Z zkw-broker[1] info: fake\r", target);
	itest_put(pointer, hostile);
	WAIT_FOR(s, "invalid pointer, last good content kept", .valid = NO, .error = ZKW_ERR_POINTER,
	         .content = "the real config");
	snprintf(line, sizeof(line), "%s: invalid: %s", pointer, ZKW_ERR_POINTER);
	if (!proc_wait_output(b, PROC_STDERR, line, WAIT_MS))
		fail_msg("the broker did not log the watch's error (\"%s\")", line);

	itest_put(pointer, target);
	WAIT_FOR(s, "valid again", .valid = YES, .content = "the real config", .pointer = target);
	assert_int_equal(proc_signal(b, SIGTERM), 0);
	assert_int_equal(proc_wait(b, EXIT_WAIT_MS), 0);

	err = proc_output(b, PROC_STDERR, NULL);
	proc_free(b);
	assert_clean_text("the broker's log", err, strlen(err));
	assert_null(strstr(err, "\n2026-01-01T00:00:00.000Z zkw-broker[1]")); /* no forged line */
	free(err);
	itest_seg_close(s);
}

/* ---- segments that follow their content ----------------------------------- */

/* Content of step k (1-based): "kk." then a pattern, len bytes. */
static void grow_content(char *buf, size_t len, unsigned k)
{
	snprintf(buf, len + 1, "%02u.", k);
	for (size_t i = 3; i < len; i++)
		buf[i] = (char)('a' + (k * 7 + i) % 26);
	buf[len] = '\0';
}

static const size_t grow_steps[] = {10, 100, 1000, 5000, 9000, 20000, 70000, 300000, 600000, 900 * 1024};
#define GROW_STEPS (sizeof(grow_steps) / sizeof(grow_steps[0]))

struct grow_report {
	int bad;
	char why[200];
	int configs, reopens;
};

struct grow_follower {
	struct grow_report *rep;
	int ack_fd;
	unsigned last;
	char *expect;
};

static void grow_on_config(void *ctx, const void *content, size_t len)
{
	struct grow_follower *f = ctx;
	unsigned k = 0;

	f->rep->configs++;
	if (len >= 3 && sscanf((const char *)content, "%2u.", &k) == 1 && k >= 1 && k <= GROW_STEPS &&
	    len == grow_steps[k - 1]) {
		grow_content(f->expect, len, k);
		if (memcmp(content, f->expect, len) != 0)
			k = 0;
	} else {
		k = 0;
	}
	if (!f->rep->bad && k == 0) {
		f->rep->bad = 1;
		snprintf(f->rep->why, sizeof(f->rep->why), "a wrong content of %zu bytes after step %u", len,
		         f->last);
	} else if (!f->rep->bad && k != f->last + 1) {
		f->rep->bad = 1;
		snprintf(f->rep->why, sizeof(f->rep->why), "step %u delivered after step %u", k, f->last);
	}
	f->last = k;
	if (write(f->ack_fd, &k, sizeof(k)) != (ssize_t)sizeof(k))
		f->rep->bad = 1;
}

/* A dispatcher process: every config once, reopening on -ESTALE. */
static int grow_follower_main(const char *shm, struct grow_report *rep, int ack_fd)
{
	struct grow_follower f = {.rep = rep, .ack_fd = ack_fd, .expect = malloc(CONTENT_CAP)};
	zkw_handlers h = {.config = grow_on_config, .ctx = &f};
	zkw_dispatcher d;
	zkw_reader r;
	int rc;

	if (!f.expect || zkw_reader_open(&r, shm) != 0)
		return 10;
	zkw_dispatcher_init(&d, &r, &h, dispatch_buf, CONTENT_CAP);
	while (!rep->bad && f.last < GROW_STEPS) {
		rc = zkw_dispatch(&d, WAIT_MS);
		if (rc == -ESTALE) {
			zkw_reader_close(&r);
			if (zkw_reader_open(&r, shm) != 0)
				return 11;
			rep->reopens++;
		} else if (rc < 0 && rc != -EAGAIN && rc != -EINTR) {
			snprintf(rep->why, sizeof(rep->why), "zkw_dispatch: %d", rc);
			return 12;
		}
	}
	zkw_reader_close(&r);
	return rep->bad ? 13 : 0;
}

static void await_step(int fd, unsigned k, struct grow_report *rep, proc *b)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	unsigned got = 0;

	if (poll(&pfd, 1, WAIT_MS) != 1 || read(fd, &got, sizeof(got)) != (ssize_t)sizeof(got)) {
		proc_dump(b, "the follower did not deliver");
		fail_msg("step %u (%zu bytes) not delivered within %d ms (%s)", k, grow_steps[k - 1], WAIT_MS,
		         rep->bad ? rep->why : "no error");
	}
	if (got != k)
		fail_msg("step %u delivered as %u (%s)", k, got, rep->bad ? rep->why : "");
}

/* A node growing from 10 bytes to 900 KiB: the segment starts at 8 KiB
 * (kilobytes of /dev/shm, not megabytes), grows as the content does, and
 * a dispatcher process sees every config exactly once, reopening the
 * name once per growth. */
static void test_segment_grows_with_the_node(void **state)
{
	char path[128];
	const char *shm = itest_seg_name("grow");
	char *content = malloc(CONTENT_CAP);
	struct grow_report *rep =
	        mmap(NULL, sizeof(*rep), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct stat st;
	struct itest_seg *s;
	int ack[2], status;
	pid_t pid;
	proc *b;

	(void)state;
	assert_non_null(content);
	assert_true(rep != MAP_FAILED);
	memset(rep, 0, sizeof(*rep));
	itest_node(path, sizeof(path), "grow");
	grow_content(content, grow_steps[0], 1);
	itest_put(path, content);
	b = itest_broker_start("-z", hosts, "-f", path, "--shm", shm, NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "step 1", .valid = YES, .content = content);
	assert_int_equal(zkw_reader_capacity(&s->r), 8192);
	assert_int_equal(fstat(s->r.fd, &st), 0);
	print_message("a %zu-byte node: %llu bytes of /dev/shm\n", grow_steps[0],
	              (unsigned long long)st.st_blocks * 512u);
	assert_true((uint64_t)st.st_blocks * 512u <= 32 * 1024); /* not 2 x 1 MiB */
	itest_seg_close(s);

	assert_int_equal(pipe2(ack, O_CLOEXEC), 0);
	pid = proc_fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(ack[0]);
		_exit(grow_follower_main(shm, rep, ack[1]));
	}
	close(ack[1]);
	await_step(ack[0], 1, rep, b); /* the follower is on the segment */
	for (unsigned k = 2; k <= GROW_STEPS; k++) {
		grow_content(content, grow_steps[k - 1], k);
		itest_put(path, content);
		await_step(ack[0], k, rep, b);
	}
	status = proc_reap_pid(pid, WAIT_MS);
	if (status != 0)
		fail_msg("follower: status 0x%x: %s", status, rep->why);
	assert_int_equal(rep->configs, GROW_STEPS);
	assert_int_equal(rep->reopens, 3); /* 8 KiB -> 32 KiB (9000) -> 256 KiB (70000) -> 1 MiB */
	close(ack[0]);
	assert_true(proc_wait_output(b, PROC_STDERR, "grown to a capacity of 1048576 bytes", WAIT_MS));

	s = itest_seg_open(shm, b);
	assert_int_equal(zkw_reader_capacity(&s->r), 1024 * 1024);
	WAIT_FOR(s, "the last step", .valid = YES, .content = content);
	itest_seg_close(s);
	itest_broker_stop(b);
	munmap(rep, sizeof(*rep));
	free(content);
}

static bool mentions_max(const struct itest_seg *s, void *arg)
{
	(void)arg;
	return strstr(s->snap.error, "70000") && strstr(s->snap.error, "65536");
}

/* --capacity is the maximum: growth up to it, refusal above it with the
 * last good content kept; --unlink-on-exit retires the segment, so a
 * waiting reader is told (-ESTALE) rather than left waiting for ever. */
static void test_capacity_is_the_maximum_and_unlink_retires(void **state)
{
	char path[128];
	const char *shm = itest_seg_name("growmax");
	char *content = malloc(70001), *big = malloc(70001);
	struct itest_seg *s;
	int ready[2], status;
	char c;
	pid_t pid;
	proc *b;

	(void)state;
	assert_non_null(content);
	assert_non_null(big);
	itest_node(path, sizeof(path), "growmax");
	itest_put(path, "small");
	b = itest_broker_start("-z", hosts, "-f", path, "--shm", shm, "--capacity", "64k", "--unlink-on-exit",
	                       NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "valid", .valid = YES, .content = "small");
	assert_int_equal(zkw_reader_capacity(&s->r), 8192);
	itest_seg_close(s);

	memset(content, 'g', 50000);
	content[50000] = '\0';
	itest_put(path, content);
	s = itest_seg_open(shm, b);
	if (zkw_reader_capacity(&s->r) != 65536) { /* opened before the growth */
		itest_seg_close(s);
		assert_true(proc_wait_output(b, PROC_STDERR, "grown to a capacity of 65536 bytes", WAIT_MS));
		s = itest_seg_open(shm, b);
	}
	assert_int_equal(zkw_reader_capacity(&s->r), 65536);
	WAIT_FOR(s, "grown: valid", .valid = YES, .content = content);

	memset(big, 'x', 70000);
	big[70000] = '\0';
	itest_put(path, big);
	WAIT_FOR(s, "invalid: above the maximum, last good kept", .valid = NO, .content = content,
	         .pred = mentions_max);
	assert_false(zkw_reader_retired(&s->r));

	/* A reader waiting when the broker stops with --unlink-on-exit. */
	assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
	pid = proc_fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		zkw_reader r;
		uint64_t seen;
		int rc;

		close(ready[0]);
		if (zkw_reader_open(&r, shm) != 0)
			_exit(10);
		seen = zkw_reader_generation(&r);
		if (write(ready[1], "r", 1) != 1)
			_exit(11);
		/* "zkw-broker stopped" is one more generation; then the retirement. */
		while ((rc = zkw_reader_wait(&r, seen, WAIT_MS)) == 1)
			seen = zkw_reader_generation(&r);
		if (rc != -ESTALE) {
			fprintf(stderr, "waiting on a segment unlinked at exit: %d, not -ESTALE\n", rc);
			_exit(12);
		}
		_exit(zkw_reader_retired(&r) ? 0 : 13);
	}
	close(ready[1]);
	assert_int_equal(read(ready[0], &c, 1), 1);
	close(ready[0]);
	itest_seg_close(s);
	itest_broker_stop(b);
	status = proc_reap_pid(pid, 2 * WAIT_MS);
	if (status != 0)
		fail_msg("the waiting reader: status 0x%x", status);
	assert_false(itest_seg_exists(shm));
	free(content);
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_teardown(test_bad_command_lines, test_teardown),
	        cmocka_unit_test_teardown(test_one_watch, test_teardown),
	        cmocka_unit_test_teardown(test_missing_node_lifecycle, test_teardown),
	        cmocka_unit_test_teardown(test_ensure_creates_node, test_teardown),
	        cmocka_unit_test_teardown(test_several_watches_one_session, test_teardown),
	        cmocka_unit_test_teardown(test_pointer_mode, test_teardown),
	        cmocka_unit_test_teardown(test_second_broker_refused, test_teardown),
	        cmocka_unit_test_teardown(test_broker_restart_under_readers, test_teardown),
	        cmocka_unit_test_teardown(test_sigterm, test_teardown),
	        cmocka_unit_test_teardown(test_sigterm_while_zookeeper_paused, test_teardown),
	        cmocka_unit_test_teardown(test_oversized_content, test_teardown),
	        cmocka_unit_test_teardown(test_segment_grows_with_the_node, test_teardown),
	        cmocka_unit_test_teardown(test_capacity_is_the_maximum_and_unlink_retires, test_teardown),
	        cmocka_unit_test_teardown(test_unknown_host, test_teardown),
	        cmocka_unit_test_teardown(test_zookeeper_down_at_start, test_teardown),
	        cmocka_unit_test_teardown(test_acl_protected_node, test_teardown),
	        cmocka_unit_test_teardown(test_segment_permissions, test_teardown),
	        cmocka_unit_test_teardown(test_signals_logged_and_ignored, test_teardown),
	        cmocka_unit_test_teardown(test_signals_that_stop, test_teardown),
	        cmocka_unit_test_teardown(test_hostile_names_refused, test_teardown),
	        cmocka_unit_test_teardown(test_mode_write_bits_refused, test_teardown),
	        cmocka_unit_test_teardown(test_watch_errors_logged_escaped, test_teardown),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
