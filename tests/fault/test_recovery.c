/* SPDX-License-Identifier: Apache-2.0 */
/* test_recovery.c - recovery after an outage longer than the session
 * timeout, and the load a broker puts on the ensemble meanwhile
 * (docs/design.md, contract item 5), with a real zkw-broker, a real
 * standalone ZooKeeper and reader processes on the segment:
 *
 *   - a reset server: stopped, its data directory wiped, started again on
 *     the same port, the node re-created with new content. The server
 *     refuses the broker's session ("client has seen zxid 0x..., our last
 *     zxid is 0x...") for ever; only a new session gets in. The segment
 *     must be valid with the new content within session timeout + 2 s of
 *     the server serving, delivered exactly once.
 *   - a counted outage: the server stopped and a listener of ours on its
 *     port that accepts and closes, counting every connection attempt. The
 *     count must stay under what the design allows (attempts_bound below);
 *     before, the client retried every timeout/60 ms for ever (about 29
 *     attempts per second with a 2 s session timeout).
 *
 * Environment: ZKW_RECOVERY_OUTAGE_S (the counted outage, default 12 s; the
 * issue's version is 30), ZKW_RECOVERY_READERS (default 3).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
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
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <zookeeper/zookeeper.h>

#include <zkw/client.h>
#include <zkw/watcher.h>

#include "chaos.h"
#include "proc.h"
#include "zkh.h"
#include "zkw_clock.h"
#include "publish/writer.h"

#define SESSION_MS           2000 /* the broker's; within the server's 2..20 ticks of 200 ms */
#define CONVERGE_MS(session) ((session) + 2000)
#define START_MS             30000 /* a first session, a JVM start, on a loaded 2-core box */
#define ZXID_PUSH            40    /* writes before the broker starts: its zxid outruns a reset server */

static zkh_cluster *zk;

static int readers_n(void)
{
	return zkh_env_int("ZKW_RECOVERY_READERS", 3, 64);
}

/* ---- a broker and its readers ---------------------------------------- */

struct scene {
	char path[64];
	char shm[64];
	char session[16];
	proc *broker;
	chaos_readers *readers;
	zkw_reader r; /* the test's own reader */
	bool r_open;
	pid_t pid;
	int threads, fds; /* the broker's, connected and settled */
};

/* Node at content seq 1, a broker on it (extra arguments after the usual
 * ones, NULL-terminated), readers holding seq 1. */
static void scene_start(struct scene *s, const char *name, const char *extra)
{
	memset(s, 0, sizeof(*s));
	snprintf(s->path, sizeof(s->path), "/zkwrc/%s", name);
	snprintf(s->shm, sizeof(s->shm), "zkwrc.%d.%s", (int)getpid(), name);
	snprintf(s->session, sizeof(s->session), "%d", SESSION_MS);
	assert_int_equal(chaos_zk_put(zkh_hosts(zk), s->path, 1, START_MS), ZOK);
	s->broker = proc_spawnl("zkw-broker", "-z", zkh_hosts(zk), "-f", s->path, "--shm", s->shm,
	                        "--session-timeout", s->session, "--reconcile", "0", "--init-timeout",
	                        "30000", extra ? "--reconnect-max" : NULL, extra, (char *)NULL);
	assert_non_null(s->broker);
	assert_true(proc_wait_output(s->broker, PROC_STDERR, "connected to ZooKeeper, session 0x", START_MS));
	assert_int_equal(zkw_reader_open(&s->r, s->shm), 0);
	s->r_open = true;
	s->readers = chaos_readers_start(s->shm, readers_n());
	assert_non_null(s->readers);
	assert_true(chaos_readers_wait_seq(s->readers, 1, START_MS));
	s->pid = proc_pid(s->broker);
}

static bool settled(void *arg)
{
	struct scene *s = arg;
	int t = chaos_thread_count(s->pid), f = chaos_fd_count(s->pid);
	bool same = t == s->threads && f == s->fds;

	s->threads = t;
	s->fds = f;
	return same && t > 0;
}

/* The broker's thread and descriptor counts once two looks agree. */
static void scene_count_resources(struct scene *s)
{
	s->threads = s->fds = -1;
	assert_true(zkh_eventually(settled, s, 5000));
}

struct resources {
	pid_t pid;
	int threads, fds;
};

static bool resources_back(void *arg)
{
	const struct resources *r = arg;

	return chaos_thread_count(r->pid) == r->threads && chaos_fd_count(r->pid) == r->fds;
}

/* Every handle before the last one is closed: no thread, no descriptor more
 * than before the outage. */
static void scene_assert_resources(struct scene *s, const char *after)
{
	struct resources r = {s->pid, s->threads, s->fds};

	if (!zkh_eventually(resources_back, &r, 5000))
		fail_msg("after %s: broker threads %d -> %d, descriptors %d -> %d", after, s->threads,
		         chaos_thread_count(s->pid), s->fds, chaos_fd_count(s->pid));
}

/* Stop everything; the totals of the readers into *t. */
static void scene_finish(struct scene *s, chaos_totals *t)
{
	assert_int_equal(chaos_readers_stop(s->readers, 10000, t), 0);
	s->readers = NULL;
	if (s->r_open)
		zkw_reader_close(&s->r);
	s->r_open = false;
	proc_signal(s->broker, SIGTERM);
	assert_int_equal(proc_wait(s->broker, 15000), 0);
	proc_free(s->broker);
	s->broker = NULL;
	zkw_writer_remove(s->shm);
}

static void read_snapshot(struct scene *s, zkw_snapshot *snap)
{
	static char buf[CHAOS_CONTENT_MAX];

	assert_true(zkw_reader_read(&s->r, snap, buf, sizeof(buf)) >= 0);
}

/* The zxid a server reports (`srvr`), or -1. */
static int64_t server_zxid(void)
{
	char reply[2048];
	const char *z;

	if (zkh_4lw(zk, 0, "srvr", reply, sizeof(reply)) < 0 || !(z = strstr(reply, "Zxid: ")))
		return -1;
	return (int64_t)strtoull(z + strlen("Zxid: "), NULL, 16);
}

/* ---- a listener that counts connection attempts ------------------------ */

#define STAMPS_MAX 100000

struct counter {
	int fd, stop_fd;
	pthread_t thread;
	int64_t start_ms;
	int count;       /* written by the thread; read after the join */
	int64_t *stamps; /* ms since start_ms of each accept */
};

static void *counter_main(void *arg)
{
	struct counter *c = arg;
	struct pollfd pfd[2] = {{.fd = c->fd, .events = POLLIN}, {.fd = c->stop_fd, .events = POLLIN}};

	for (;;) {
		if (poll(pfd, 2, -1) < 0 && errno != EINTR)
			break;
		if (pfd[1].revents)
			break;
		if (!(pfd[0].revents & POLLIN))
			continue;
		int fd = accept4(c->fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		close(fd);
		if (c->count < STAMPS_MAX)
			c->stamps[c->count] = zkw_clock_mono_ms() - c->start_ms;
		c->count++;
	}
	return NULL;
}

/* Listen on 127.0.0.1:port (a stopped server's), accept and close. */
static void counter_start(struct counter *c, int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int one = 1, rc = -1;
	int64_t deadline = zkw_clock_mono_ms() + 5000;

	memset(c, 0, sizeof(*c));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	c->stamps = calloc(STAMPS_MAX, sizeof(*c->stamps));
	assert_non_null(c->stamps);
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(c->fd >= 0);
	assert_int_equal(setsockopt(c->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)), 0);
	/* The server is reaped: its socket is gone. Only a port taken by
	 * someone else in between could refuse us, and then not for long. */
	while ((rc = bind(c->fd, (struct sockaddr *)&sa, sizeof(sa))) < 0 && errno == EADDRINUSE &&
	       zkw_clock_mono_ms() < deadline)
		zkw_clock_sleep_ms(20);
	if (rc < 0)
		fail_msg("cannot listen on the server's port %d: %s", port, strerror(errno));
	assert_int_equal(listen(c->fd, 256), 0);
	c->stop_fd = eventfd(0, EFD_CLOEXEC);
	assert_true(c->stop_fd >= 0);
	c->start_ms = zkw_clock_mono_ms();
	assert_int_equal(pthread_create(&c->thread, NULL, counter_main, c), 0);
}

/* Stop listening; the number of connections accepted. */
static int counter_stop(struct counter *c)
{
	uint64_t one = 1;

	assert_int_equal(write(c->stop_fd, &one, sizeof(one)), (ssize_t)sizeof(one));
	pthread_join(c->thread, NULL);
	close(c->fd);
	close(c->stop_fd);
	return c->count;
}

/* Attempts per second of the window, for the log: "12 9 0 0 31 ...". */
static void counter_print(const struct counter *c, int window_s)
{
	fprintf(stderr, "attempts per second:");
	for (int s = 0; s < window_s; s++) {
		int n = 0;

		for (int i = 0; i < c->count && i < STAMPS_MAX; i++)
			n += c->stamps[i] / 1000 == s;
		fprintf(stderr, " %d", n);
	}
	fprintf(stderr, "\n");
}

/* The most connection attempts a broker may make in the first window_ms of
 * an outage, by design (docs/design.md, contract item 5):
 *  - a handle that is not connected lives at most one session timeout T
 *    (plus the control thread's wake-up, slack_ms on a loaded machine);
 *  - meanwhile the ZooKeeper client tries each host of its list, then
 *    pauses T/60 ms: at most lifetime / (T/60) + 1 rounds of `hosts`
 *    attempts per handle;
 *  - between two handles there is none for at least b/2, b = T, 2T, 4T, ...
 *    up to the maximum.
 * *handles gets the number of handles the window can hold. */
static int attempts_bound(int t_ms, int max_ms, int hosts, int window_ms, int *handles)
{
	const int slack_ms = 250;
	int64_t at = 0, b = 0; /* start of the next handle; nominal wait */
	int n = 0;

	while (at < window_ms) {
		n++;
		at += t_ms + slack_ms;
		b = b ? (2 * b < max_ms ? 2 * b : max_ms) : (t_ms < max_ms ? t_ms : max_ms);
		at += b / 2;
	}
	*handles = n;
	return n * hosts * ((t_ms + slack_ms) / (t_ms / 60) + 1);
}

/* The wait of the broker's last "new session in M ms" line, or -1. */
static int last_wait_ms(proc *b)
{
	static const char needle[] = "new session in ";
	char *out = proc_output(b, PROC_STDERR, NULL), *p = out, *last = NULL;
	int ms = -1;

	while (p && (p = strstr(p, needle))) {
		last = p + sizeof(needle) - 1;
		p = last;
	}
	if (last)
		ms = atoi(last);
	free(out);
	return ms;
}

/* The broker's session decisions, for the log of the test. */
static void print_decisions(proc *b)
{
	char *out = proc_output(b, PROC_STDERR, NULL);

	for (char *line = out, *next; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		if (strstr(line, "session lost for") || strstr(line, "connected to ZooKeeper") ||
		    strstr(line, "connection to ZooKeeper lost"))
			fprintf(stderr, "  %s\n", line);
		if (!next)
			break;
	}
	free(out);
}

/* ---- group ------------------------------------------------------------- */

static int group_setup(void **state)
{
	(void)state;
	zk = zkh_start(1);
	return zk ? 0 : -1;
}

static int group_teardown(void **state)
{
	char shm[64];

	(void)state;
	proc_kill_all();
	for (int i = 0; i < 2; i++) { /* left by a failed test */
		snprintf(shm, sizeof(shm), "/zkwrc.%d.%s", (int)getpid(), i ? "outage" : "reset");
		zkw_writer_remove(shm);
	}
	zkh_stop(zk);
	zk = NULL;
	return 0;
}

/* The server serves (a failed test may have left it stopped), and no
 * broker of a failed test is left to add its attempts to the count. */
static int test_setup(void **state)
{
	(void)state;
	proc_kill_all();
	if (zkh_pid(zk, 0) <= 0 && zkh_member_start(zk, 0) != 0)
		return -1;
	return zkh_wait_serving(zk, START_MS) == 0 ? 0 : -1;
}

/* ---- tests --------------------------------------------------------------- */

/* A rebuilt server on the same address, with an empty data directory: it
 * refuses the old session for ever ("client has seen zxid ..."), so only a
 * new session recovers. The segment is valid with the new content within
 * T + 2 s of the server serving; the new content reaches every reader
 * once, the old one is never delivered again. With --reconnect-max equal
 * to T, no wait between sessions outlasts T however long the restart
 * takes (the default schedule is measured by the next test). */
static void test_reset_data_dir_same_port(void **state)
{
	struct scene s;
	zkw_snapshot before, after;
	chaos_totals t;
	uint64_t ids[8];
	int64_t serving, reset_zxid, waited;
	int left;

	(void)state;
	/* A history the reset server will not have: the broker's first read
	 * answers with the zxid of all of it. */
	for (int i = 0; i < ZXID_PUSH; i++)
		assert_int_equal(chaos_zk_put(zkh_hosts(zk), "/zkwrc/history", 1, START_MS), ZOK);
	scene_start(&s, "reset", "2000");
	read_snapshot(&s, &before);
	assert_true(before.valid);
	scene_count_resources(&s);
	assert_int_equal(chaos_broker_sessions(s.broker, ids, 8), 1);

	assert_int_equal(zkh_member_stop(zk, 0), 0);
	assert_int_equal(zkh_member_wipe(zk, 0), 0);
	assert_int_equal(zkh_member_start(zk, 0), 0);
	serving = zkw_clock_mono_ms();
	reset_zxid = server_zxid();
	assert_int_equal(chaos_zk_put(zkh_hosts(zk), s.path, 2, START_MS), ZOK);
	/* The scenario holds: the server is behind what the broker has seen. */
	fprintf(stderr, "broker has seen zxid >= 0x%" PRIx64 ", the reset server is at 0x%" PRIx64 "\n",
	        (uint64_t)before.mzxid, (uint64_t)reset_zxid);
	assert_true(reset_zxid >= 0 && reset_zxid < before.mzxid);

	left = (int)(CONVERGE_MS(SESSION_MS) - (zkw_clock_mono_ms() - serving));
	if (left <= 0 || !chaos_readers_wait_seq(s.readers, 2, left)) {
		proc_dump(s.broker, "reset server");
		zkh_dump_log(zk, 0, 20);
		fail_msg("the readers do not hold the reset server's content %d ms after it served",
		         CONVERGE_MS(SESSION_MS));
	}
	waited = zkw_clock_mono_ms() - serving;
	fprintf(stderr, "reset server: valid with the new content %" PRId64 " ms after it served\n", waited);
	print_decisions(s.broker);

	read_snapshot(&s, &after);
	assert_true(after.valid);
	assert_true(after.content_gen > before.content_gen);
	assert_true(after.mzxid < before.mzxid); /* served by the reset server */
	/* One decision per abandoned handle, and a new session. */
	assert_true(proc_count(s.broker, PROC_STDERR, "session lost for ") >= 1);
	assert_true(proc_count(s.broker, PROC_STDERR, "(> 2000 ms timeout): new session in ") >= 1);
	assert_int_equal(chaos_broker_sessions(s.broker, ids, 8), 2);
	scene_assert_resources(&s, "the reset");

	scene_finish(&s, &t);
	assert_true(chaos_totals_clean(&t, true, s.path));
	/* A and B, each once, in every reader. */
	assert_int_equal(t.configs, 2 * t.readers);
}

/* An outage of ZKW_RECOVERY_OUTAGE_S seconds with the default schedule:
 * the connection attempts stay within attempts_bound (before: about 29 a
 * second for ever with T = 2 s); then the server comes back with its data,
 * and the broker is valid again within the longest wait plus T + 2 s, its
 * unchanged content not announced again. */
static void test_outage_attempts_bounded(void **state)
{
	int outage_s = zkh_env_int("ZKW_RECOVERY_OUTAGE_S", 12, 3600);
	struct scene s;
	struct counter c;
	zkw_snapshot before, after;
	chaos_totals t;
	int attempts, bound, handles, decisions, wait_ms, left;
	int64_t serving;

	(void)state;
	scene_start(&s, "outage", NULL);
	read_snapshot(&s, &before);
	assert_true(before.valid);
	scene_count_resources(&s);

	assert_int_equal(zkh_member_stop(zk, 0), 0);
	counter_start(&c, zkh_port(zk, 0));
	/* The measurement window: time passing is what is measured. */
	zkw_clock_sleep_ms((int64_t)outage_s * 1000);
	attempts = counter_stop(&c);
	counter_print(&c, outage_s);
	free(c.stamps);
	bound = attempts_bound(SESSION_MS, ZKW_RECONNECT_MAX_MS_DEFAULT, 1, outage_s * 1000, &handles);
	decisions = proc_count(s.broker, PROC_STDERR, "session lost for ");
	fprintf(stderr,
	        "outage of %d s: %d connection attempts, %.1f/s; bound %d (%d handles), %.1f/s; "
	        "%d new sessions decided\n",
	        outage_s, attempts, attempts / (double)outage_s, bound, handles, bound / (double)outage_s,
	        decisions);
	if (attempts > bound) {
		proc_dump(s.broker, "outage");
		fail_msg("%d connection attempts in %d s, the design allows %d", attempts, outage_s, bound);
	}
	assert_true(attempts > 0); /* the listener does see the broker */
	/* Each decision logged once: one line per abandoned handle. */
	assert_true(decisions >= 1 && decisions <= handles);
	assert_int_equal(proc_count(s.broker, PROC_STDERR, "connection to ZooKeeper lost"), 1);

	wait_ms = last_wait_ms(s.broker);
	assert_true(wait_ms > 0 && wait_ms <= ZKW_RECONNECT_MAX_MS_DEFAULT);
	assert_int_equal(zkh_member_start(zk, 0), 0);
	serving = zkw_clock_mono_ms();
	/* At worst a wait of the longest kind starts just now. */
	left = ZKW_RECONNECT_MAX_MS_DEFAULT + CONVERGE_MS(SESSION_MS);
	if (!chaos_readers_wait_seq(s.readers, 1, left)) {
		proc_dump(s.broker, "after the outage");
		fail_msg("the readers are not valid again %d ms after the server came back", left);
	}
	fprintf(stderr,
	        "outage: valid again %" PRId64 " ms after the server served (last wait announced %d ms)\n",
	        zkw_clock_mono_ms() - serving, wait_ms);
	print_decisions(s.broker);
	read_snapshot(&s, &after);
	assert_true(after.valid);
	assert_int_equal(after.content_gen, before.content_gen); /* not announced again */
	scene_assert_resources(&s, "the outage");

	scene_finish(&s, &t);
	assert_true(chaos_totals_clean(&t, true, s.path));
	assert_int_equal(t.configs, t.readers); /* A, once */
}

/* --reconnect-max: a bad value is refused, naming the option, once. */
static void test_reconnect_max_option(void **state)
{
	static const char *const bad[] = {"-z", "127.0.0.1:1", "-f", "/x", "--reconnect-max", "5", NULL};
	static const char *const help[] = {"--help", NULL};
	char *out = NULL, *err = NULL;

	(void)state;
	assert_int_equal(proc_run("zkw-broker", bad, NULL, 10000, &out, &err), 2);
	assert_non_null(strstr(err, "--reconnect-max 5: want milliseconds from 100 to 3600000"));
	assert_null(strstr(strstr(err, "--reconnect-max 5") + 1, "--reconnect-max 5"));
	free(out);
	free(err);
	assert_int_equal(proc_run("zkw-broker", help, NULL, 10000, &out, &err), 0);
	assert_non_null(strstr(out, "--reconnect-max MS"));
	free(out);
	free(err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_reconnect_max_option),
	        cmocka_unit_test_setup(test_reset_data_dir_same_port, test_setup),
	        cmocka_unit_test_setup(test_outage_attempts_bounded, test_setup),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
