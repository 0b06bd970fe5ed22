/* SPDX-License-Identifier: Apache-2.0 */
/* test_harness.c - the ZooKeeper test harness (tests/support/zkh.c) against
 * real servers: lifecycle, ensemble election and re-election seen by a C
 * client, member restart, the synchronous helpers, pause/resume. */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <zookeeper/zookeeper.h>

#include "zkh.h"
#include "zkw_clock.h"
#include "zkw_zk.h"

#define WAIT_MS 20000

/* ---- a C client whose session state can be awaited --------------------- */

struct client {
	zhandle_t *zh;
	pthread_mutex_t lock;
	pthread_cond_t changed;
	int state;
	int connected_events;
};

static void client_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
	struct client *c = ctx;
	(void)zh, (void)path;

	if (type != ZOO_SESSION_EVENT)
		return;
	pthread_mutex_lock(&c->lock);
	c->state = state;
	if (state == ZOO_CONNECTED_STATE)
		c->connected_events++;
	pthread_cond_broadcast(&c->changed);
	pthread_mutex_unlock(&c->lock);
}

static void client_open(struct client *c, const char *hosts, int session_ms)
{
	memset(c, 0, sizeof(*c));
	pthread_mutex_init(&c->lock, NULL);
	zkw_clock_cond_init(&c->changed);
	c->zh = zookeeper_init2(hosts, client_watcher, session_ms, NULL, c, 0, zkw_zk_quiet_log);
	assert_non_null(c->zh);
}

static void client_close(struct client *c)
{
	if (!c->zh)
		return;
	zookeeper_close(c->zh);
	c->zh = NULL;
	pthread_cond_destroy(&c->changed);
	pthread_mutex_destroy(&c->lock);
}

/* The one client a test may hold. It lives outside the test's stack frame,
 * and the test's teardown closes it, so a failed assertion (cmocka jumps out
 * of the test) never leaves a ZooKeeper handle calling into a dead frame. */
static struct client test_client;

static int close_test_client(void **state)
{
	(void)state;
	client_close(&test_client);
	return 0;
}

/* A failed pause test must not leave the group's server stopped. */
static int resume_and_close_test_client(void **state)
{
	zkh_resume(*state);
	return close_test_client(state);
}

/* Wait until pred(state, connected_events, arg) holds; false on timeout. */
static bool client_await(struct client *c, bool (*pred)(const struct client *, int), int arg, int timeout_ms)
{
	struct timespec deadline = zkw_clock_deadline_ms(CLOCK_MONOTONIC, timeout_ms);
	bool held;

	pthread_mutex_lock(&c->lock);
	while (!(held = pred(c, arg)))
		if (pthread_cond_timedwait(&c->changed, &c->lock, &deadline) == ETIMEDOUT) {
			held = pred(c, arg);
			break;
		}
	pthread_mutex_unlock(&c->lock);
	return held;
}

static bool is_connected(const struct client *c, int unused)
{
	(void)unused;
	return c->state == ZOO_CONNECTED_STATE;
}

static bool is_not_connected(const struct client *c, int unused)
{
	(void)unused;
	return c->state != ZOO_CONNECTED_STATE;
}

static bool reconnected_since(const struct client *c, int events_before)
{
	return c->state == ZOO_CONNECTED_STATE && c->connected_events > events_before;
}

/* A write through this client, retried while the session reconnects. */
static int client_write(struct client *c, const char *path, const char *value, int timeout_ms)
{
	int64_t deadline = zkw_clock_mono_ms() + timeout_ms;
	int rc;

	for (;;) {
		rc = zoo_set(c->zh, path, value, (int)strlen(value), -1);
		if (rc == ZNONODE)
			rc = zoo_create(c->zh, path, value, (int)strlen(value), &ZOO_OPEN_ACL_UNSAFE, 0, NULL,
			                0);
		if (rc == ZOK || (rc != ZCONNECTIONLOSS && rc != ZOPERATIONTIMEOUT && rc != ZNODEEXISTS))
			return rc;
		int left = (int)(deadline - zkw_clock_mono_ms());
		if (left <= 0)
			return rc;
		client_await(c, is_connected, 0, left);
	}
}

/* ---- helpers --------------------------------------------------------------- */

static bool port_refuses(int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool refused;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_true(fd >= 0);
	refused = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1 && errno == ECONNREFUSED;
	close(fd);
	return refused;
}

static bool pid_gone(int pid)
{
	return kill(pid, 0) == -1 && errno == ESRCH;
}

static void fail_with_logs(zkh_cluster *zk, const char *why)
{
	for (int i = 0; i < zkh_nodes(zk); i++)
		zkh_dump_log(zk, i, 30);
	fail_msg("%s", why);
}

/* Read a node through one member only: proves that member holds the data. */
static void assert_member_has(zkh_cluster *zk, int member, const char *path, const char *want)
{
	char hosts[64], buf[128];
	int len = sizeof(buf);

	snprintf(hosts, sizeof(hosts), "127.0.0.1:%d", zkh_port(zk, member));
	assert_int_equal(zkh_get(hosts, path, buf, &len), ZOK);
	assert_int_equal(len, (int)strlen(want));
	assert_memory_equal(buf, want, (size_t)len);
}

/* ---- lifecycle (each test starts its own cluster) ---------------------- */

static void test_standalone_start_stop_leaves_nothing(void **state)
{
	(void)state;
	int64_t t0 = zkw_clock_mono_ms();
	zkh_cluster *zk = zkh_start(1);
	assert_non_null(zk);
	print_message("standalone serving after %lld ms\n", (long long)(zkw_clock_mono_ms() - t0));

	int pid = zkh_pid(zk, 0), port = zkh_port(zk, 0);
	char expect[32], mode[32];
	assert_true(pid > 0);
	snprintf(expect, sizeof(expect), "127.0.0.1:%d", port);
	assert_string_equal(zkh_hosts(zk), expect);
	assert_int_equal(zkh_nodes(zk), 1);
	assert_true(zkh_member_serving(zk, 0));
	assert_int_equal(zkh_leader(zk, 1000), 0);
	zkh_member_mode(zk, 0, mode, sizeof(mode));
	assert_string_equal(mode, "standalone");

	t0 = zkw_clock_mono_ms();
	zkh_stop(zk);
	print_message("standalone stopped in %lld ms\n", (long long)(zkw_clock_mono_ms() - t0));
	assert_true(pid_gone(pid));
	assert_true(port_refuses(port));
}

static void test_ensemble_start_elects_one_leader(void **state)
{
	(void)state;
	int64_t t0 = zkw_clock_mono_ms();
	zkh_cluster *zk = zkh_start(3);
	assert_non_null(zk);
	print_message("3-node ensemble with a leader after %lld ms\n", (long long)(zkw_clock_mono_ms() - t0));

	int leaders = 0, followers = 0, pids[3];
	for (int i = 0; i < 3; i++) {
		char mode[32];
		zkh_member_mode(zk, i, mode, sizeof(mode));
		leaders += !strcmp(mode, "leader");
		followers += !strcmp(mode, "follower");
		pids[i] = zkh_pid(zk, i);
		assert_true(pids[i] > 0);
	}
	assert_int_equal(leaders, 1);
	assert_int_equal(followers, 2);
	assert_int_equal(zkh_wait_serving(zk, 1000), 0);

	zkh_stop(zk);
	for (int i = 0; i < 3; i++)
		assert_true(pid_gone(pids[i]));
}

/* ---- standalone group: one server for all tests ------------------------ */

static int standalone_setup(void **state)
{
	*state = zkh_start(1);
	return *state ? 0 : -1;
}

static int cluster_teardown(void **state)
{
	zkh_stop(*state);
	return 0;
}

static void test_set_get_delete_round_trip(void **state)
{
	const char *hosts = zkh_hosts(*state);
	const char binary[] = {'a', '\0', 'b', '\n', (char)0xff};
	char buf[64];
	int len = sizeof(buf);

	zkh_delete(hosts, "/zkh");
	assert_int_equal(zkh_set(hosts, "/zkh/deep/nested/node", binary, sizeof(binary)), ZOK);
	assert_int_equal(zkh_get(hosts, "/zkh/deep/nested/node", buf, &len), ZOK);
	assert_int_equal(len, (int)sizeof(binary));
	assert_memory_equal(buf, binary, sizeof(binary));

	/* The parents exist, with empty data. */
	len = sizeof(buf);
	assert_int_equal(zkh_get(hosts, "/zkh/deep", buf, &len), ZOK);
	assert_int_equal(len, 0);

	/* Overwrite with a shorter value. */
	assert_int_equal(zkh_set(hosts, "/zkh/deep/nested/node", "xy", 2), ZOK);
	len = sizeof(buf);
	assert_int_equal(zkh_get(hosts, "/zkh/deep/nested/node", buf, &len), ZOK);
	assert_int_equal(len, 2);
	assert_memory_equal(buf, "xy", 2);

	/* Too small a buffer says how much is needed. */
	len = 1;
	assert_int_equal(zkh_get(hosts, "/zkh/deep/nested/node", buf, &len), ZBADARGUMENTS);
	assert_int_equal(len, 2);

	/* Null data (a wipe) reads back as length -1. */
	assert_int_equal(zkh_set(hosts, "/zkh/null", NULL, 0), ZOK);
	len = sizeof(buf);
	assert_int_equal(zkh_get(hosts, "/zkh/null", buf, &len), ZOK);
	assert_int_equal(len, -1);

	/* Recursive delete. */
	assert_int_equal(zkh_delete(hosts, "/zkh"), ZOK);
	len = sizeof(buf);
	assert_int_equal(zkh_get(hosts, "/zkh/deep/nested/node", buf, &len), ZNONODE);
	assert_int_equal(zkh_delete(hosts, "/zkh"), ZNONODE);
}

static void test_helpers_reject_relative_paths(void **state)
{
	char buf[8];
	int len = sizeof(buf);

	assert_int_equal(zkh_set(zkh_hosts(*state), "relative", "v", 1), ZBADARGUMENTS);
	assert_int_equal(zkh_get(zkh_hosts(*state), "relative", buf, &len), ZBADARGUMENTS);
	assert_int_equal(zkh_delete(zkh_hosts(*state), ""), ZBADARGUMENTS);
}

static void test_four_letter_words_answer(void **state)
{
	zkh_cluster *zk = *state;
	char reply[8192];

	assert_true(zkh_4lw(zk, 0, "ruok", reply, sizeof(reply)) > 0);
	assert_string_equal(reply, "imok");
	assert_true(zkh_4lw(zk, 0, "mntr", reply, sizeof(reply)) > 0);
	assert_non_null(strstr(reply, "zk_server_state"));
	assert_true(zkh_4lw(zk, 0, "cons", reply, sizeof(reply)) > 0);
	assert_true(zkh_4lw(zk, 0, "stat", reply, sizeof(reply)) > 0);
	assert_non_null(strstr(reply, "Mode: standalone"));
}

static void test_pause_disconnects_and_resume_recovers(void **state)
{
	zkh_cluster *zk = *state;
	struct client *c = &test_client;

	/* Short session: the client notices silence after 2/3 of it. */
	client_open(c, zkh_hosts(zk), 6 * zkh_tick_ms(zk));
	if (!client_await(c, is_connected, 0, WAIT_MS))
		fail_with_logs(zk, "client never connected");

	assert_int_equal(zkh_pause(zk), 0);
	assert_false(zkh_member_serving(zk, 0));
	if (!client_await(c, is_not_connected, 0, WAIT_MS)) {
		zkh_resume(zk);
		fail_msg("client still connected to a paused server");
	}

	assert_int_equal(zkh_resume(zk), 0);
	assert_int_equal(zkh_wait_serving(zk, WAIT_MS), 0);
	assert_true(zkh_member_serving(zk, 0));
	assert_int_equal(zkh_set(zkh_hosts(zk), "/zkh-paused", "ok", 2), ZOK);
	client_close(c);
}

/* A multi-process test's children inherit the sweep: their exit - normal or
 * by SIGTERM - must leave the parent's servers alone. */
static void test_forked_child_exit_spares_servers(void **state)
{
	zkh_cluster *zk = *state;
	int status, pid = zkh_pid(zk, 0);

	for (int how = 0; how < 2; how++) {
		pid_t child = fork();
		assert_true(child >= 0);
		if (child == 0) {
			if (how == 1)
				raise(SIGTERM);
			exit(0);
		}
		assert_int_equal(waitpid(child, &status, 0), child);
		assert_true(how == 0 ? WIFEXITED(status) : WIFSIGNALED(status));
	}
	assert_int_equal(kill(pid, 0), 0);
	assert_int_equal(zkh_pid(zk, 0), pid);
	assert_true(zkh_member_serving(zk, 0));
}

/* ---- ensemble group: three servers for all tests ----------------------- */

static int ensemble_setup(void **state)
{
	*state = zkh_start(3);
	return *state ? 0 : -1;
}

static void test_leader_kill_reelects_and_client_writes(void **state)
{
	zkh_cluster *zk = *state;
	struct client *c = &test_client;
	int old_leader, new_leader, events;
	char mode[32];

	client_open(c, zkh_hosts(zk), 20 * zkh_tick_ms(zk));
	if (!client_await(c, is_connected, 0, WAIT_MS))
		fail_with_logs(zk, "client never connected to the ensemble");
	assert_int_equal(client_write(c, "/reelect", "before", WAIT_MS), ZOK);

	old_leader = zkh_leader(zk, WAIT_MS);
	assert_true(old_leader >= 0);
	pthread_mutex_lock(&c->lock);
	events = c->connected_events;
	pthread_mutex_unlock(&c->lock);

	int64_t t0 = zkw_clock_mono_ms();
	assert_int_equal(zkh_member_kill(zk, old_leader), 0);
	assert_int_equal(zkh_pid(zk, old_leader), 0);
	assert_false(zkh_member_serving(zk, old_leader));

	new_leader = zkh_leader(zk, WAIT_MS);
	if (new_leader < 0)
		fail_with_logs(zk, "no new leader after the leader was killed");
	print_message("re-election after leader kill: %lld ms\n", (long long)(zkw_clock_mono_ms() - t0));
	assert_int_not_equal(new_leader, old_leader);
	assert_int_equal(zkh_wait_serving(zk, WAIT_MS), 0);

	/* Every member drops its clients when the leader goes; the session
	 * comes back (same session, it did not expire) and writes work. */
	if (!client_await(c, reconnected_since, events, WAIT_MS))
		fail_with_logs(zk, "client session did not reconnect after re-election");
	assert_int_equal(client_write(c, "/reelect", "after", WAIT_MS), ZOK);

	/* The old leader rejoins as a follower and catches up. */
	assert_int_equal(zkh_member_start(zk, old_leader), 0);
	zkh_member_mode(zk, old_leader, mode, sizeof(mode));
	assert_string_equal(mode, "follower");
	assert_int_equal(zkh_leader(zk, WAIT_MS), new_leader);
	assert_member_has(zk, old_leader, "/reelect", "after");
	client_close(c);
}

static void test_follower_stop_keeps_quorum_and_rejoins(void **state)
{
	zkh_cluster *zk = *state;
	int leader = zkh_leader(zk, WAIT_MS), follower;

	assert_true(leader >= 0);
	follower = (leader + 1) % 3;
	int pid = zkh_pid(zk, follower);
	assert_int_equal(zkh_member_stop(zk, follower), 0);
	assert_true(pid_gone(pid));
	assert_true(port_refuses(zkh_port(zk, follower)));

	/* Two of three still form a quorum: writes succeed. */
	assert_int_equal(zkh_wait_serving(zk, WAIT_MS), 0);
	assert_int_equal(zkh_set(zkh_hosts(zk), "/rejoin", "while-down", 10), ZOK);

	assert_int_equal(zkh_member_start(zk, follower), 0);
	assert_true(zkh_pid(zk, follower) > 0);
	assert_int_equal(zkh_member_start(zk, follower), -EALREADY);
	assert_member_has(zk, follower, "/rejoin", "while-down");
}

static void test_lost_quorum_stops_serving_until_restart(void **state)
{
	zkh_cluster *zk = *state;
	int leader = zkh_leader(zk, WAIT_MS);
	int a = (leader + 1) % 3, b = (leader + 2) % 3;

	assert_int_equal(zkh_member_kill(zk, a), 0);
	assert_int_equal(zkh_member_kill(zk, b), 0);
	/* Alone, the old leader gives up leadership and stops serving. */
	assert_int_equal(zkh_wait_serving(zk, 10 * zkh_tick_ms(zk)), -ETIMEDOUT);

	assert_int_equal(zkh_member_start(zk, a), 0);
	assert_int_equal(zkh_wait_serving(zk, WAIT_MS), 0);
	assert_int_equal(zkh_member_start(zk, b), 0);
	assert_true(zkh_leader(zk, WAIT_MS) >= 0);
	assert_member_has(zk, b, "/rejoin", "while-down");
}

int main(void)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	/* The harness is test code, its servers are Java: checked once, in
	 * make test, not again under the sanitizers (make check, make tsan). */
	puts("test_harness: skipped under a sanitizer (it checks the test harness, run by make test)");
	return 77;
#endif
	const struct CMUnitTest lifecycle[] = {
	        cmocka_unit_test(test_standalone_start_stop_leaves_nothing),
	        cmocka_unit_test(test_ensemble_start_elects_one_leader),
	};
	const struct CMUnitTest standalone[] = {
	        cmocka_unit_test(test_set_get_delete_round_trip),
	        cmocka_unit_test(test_helpers_reject_relative_paths),
	        cmocka_unit_test(test_four_letter_words_answer),
	        cmocka_unit_test_teardown(test_pause_disconnects_and_resume_recovers,
	                                  resume_and_close_test_client),
	        cmocka_unit_test(test_forked_child_exit_spares_servers),
	};
	const struct CMUnitTest ensemble[] = {
	        cmocka_unit_test_teardown(test_leader_kill_reelects_and_client_writes, close_test_client),
	        cmocka_unit_test(test_follower_stop_keeps_quorum_and_rejoins),
	        cmocka_unit_test(test_lost_quorum_stops_serving_until_restart),
	};
	int failed = 0;

	zoo_set_debug_level(0); /* 0 turns the C client's logging off */
	failed += cmocka_run_group_tests_name("harness_lifecycle", lifecycle, NULL, NULL);
	failed += cmocka_run_group_tests_name("harness_standalone", standalone, standalone_setup,
	                                      cluster_teardown);
	failed += cmocka_run_group_tests_name("harness_ensemble", ensemble, ensemble_setup, cluster_teardown);
	return failed;
}
