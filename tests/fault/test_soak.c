/* SPDX-License-Identifier: Apache-2.0 */
/* test_soak.c - random faults, writes, pointer switches, deletes and
 * recreates against a real 3-node ensemble, a real zkw-broker and reader
 * processes that check every snapshot; after each round's quiet period
 * every reader must hold what ZooKeeper holds.
 *
 * Short inside `make test` (ZKW_SOAK_SECONDS, default 20); `make soak`
 * (tests/fault/soak.sh) runs it for minutes. Prints the counts at the end:
 * faults by kind, writes, snapshots checked, torn, lost, duplicates.
 *
 * Environment: ZKW_SOAK_SECONDS, ZKW_SOAK_READERS (per segment, default 2),
 * ZKW_SOAK_SEED (default: time and pid; printed so a run can be replayed
 * as far as timing allows).
 */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
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

#define SESSION_MS  4000
#define QUORUM_MS   60000
#define CONVERGE_MS (SESSION_MS + 2000)

enum fault { F_NONE, F_LEADER, F_FOLLOWER, F_QUORUM, F_BROKER_KILL, F_BROKER_STOP, F_KINDS };
static const char *const fault_name[F_KINDS] = {"none",        "leader_kill",    "follower_stop",
                                                "quorum_loss", "broker_sigkill", "broker_session_expiry"};

struct soak {
	zkh_cluster *zk;
	const char *hosts;
	uint64_t rng;
	uint64_t seq;
	char conf[64], ptr[64], target[2][64];
	char shm_conf[64], shm_ptr[64];
	int current; /* target the pointer names */
	proc *broker;
	chaos_readers *fleet_conf, *fleet_ptr;
	/* counts */
	uint64_t faults[F_KINDS];
	uint64_t writes, switches, deletes, rounds, lost, down_missed;
};

static proc *soak_broker(struct soak *s)
{
	const char *argv[] = {"-z",
	                      s->hosts,
	                      "--session-timeout",
	                      "4000",
	                      "--reconcile",
	                      "0",
	                      "--init-timeout",
	                      "30000",
	                      "-f",
	                      s->conf,
	                      "--shm",
	                      s->shm_conf,
	                      "-f",
	                      s->ptr,
	                      "-p",
	                      "--shm",
	                      s->shm_ptr,
	                      NULL};
	proc *b = proc_spawn("zkw-broker", argv);

	if (b && !proc_wait_output(b, PROC_STDERR, "connected to ZooKeeper, session 0x", 40000)) {
		proc_free(b);
		b = NULL;
	}
	return b;
}

static uint64_t pick(struct soak *s, uint64_t n)
{
	return chaos_rand(&s->rng) % n;
}

static void put(struct soak *s, const char *path)
{
	if (chaos_zk_put(s->hosts, path, ++s->seq, 20000) == ZOK)
		s->writes++;
}

static void random_op(struct soak *s)
{
	char p[80];

	switch (pick(s, 6)) {
	case 0:
	case 1: put(s, s->conf); break;
	case 2: put(s, s->target[pick(s, 2)]); break;
	case 3: /* switch the pointer, sometimes just rewriting it with a newline */
		s->current = (int)pick(s, 2);
		int n = snprintf(p, sizeof(p), "%s%s", s->target[s->current], pick(s, 2) ? "\n" : "");
		if (zkh_set(s->hosts, s->ptr, p, n) == ZOK)
			s->switches++;
		break;
	case 4: /* delete and recreate the config node */
		if (zkh_delete(s->hosts, s->conf) == ZOK)
			s->deletes++;
		if (pick(s, 2))
			put(s, s->conf);
		break;
	default: /* delete the pointer's current target (recreated at round end) */
		if (zkh_delete(s->hosts, s->target[s->current]) == ZOK)
			s->deletes++;
		break;
	}
}

/* Wait on the test's own reader for "not pingable". */
static bool broker_reports_down(const char *shm, int timeout_ms)
{
	zkw_reader r;
	int64_t deadline = zkw_clock_mono_ms() + timeout_ms;
	bool down = false;

	if (zkw_reader_open(&r, shm) != 0)
		return false;
	while (!(down = !zkw_reader_ping(&r) && !zkw_reader_is_valid(&r)) && zkw_clock_mono_ms() < deadline)
		zkw_reader_wait(&r, zkw_reader_generation(&r), 100);
	zkw_reader_close(&r);
	return down;
}

struct session_probe {
	zkh_cluster *zk;
	uint64_t id;
};

static bool session_gone(void *arg)
{
	const struct session_probe *p = arg;

	return !zkh_session_listed(p->zk, p->id);
}

static void inject(struct soak *s, enum fault f)
{
	int leader;

	s->faults[f]++;
	switch (f) {
	case F_LEADER:
		leader = zkh_leader(s->zk, 10000);
		assert_true(leader >= 0);
		assert_int_equal(zkh_member_kill(s->zk, leader), 0);
		assert_int_equal(zkh_wait_serving(s->zk, QUORUM_MS), 0);
		random_op(s);
		assert_int_equal(zkh_member_start(s->zk, leader), 0);
		break;
	case F_FOLLOWER:
		leader = zkh_leader(s->zk, 10000);
		assert_true(leader >= 0);
		int follower = (leader + 1 + (int)pick(s, 2)) % 3;
		assert_int_equal(zkh_member_stop(s->zk, follower), 0);
		random_op(s);
		assert_int_equal(zkh_member_start(s->zk, follower), 0);
		break;
	case F_QUORUM: {
		int keep = (int)pick(s, 3);
		for (int i = 0; i < 3; i++)
			if (i != keep)
				assert_int_equal(zkh_member_stop(s->zk, i), 0);
		if (!broker_reports_down(s->shm_conf, SESSION_MS + 10000))
			s->down_missed++;
		assert_int_equal(zkh_member_start(s->zk, (keep + 1) % 3), 0);
		assert_int_equal(zkh_member_start(s->zk, (keep + 2) % 3), 0);
		break;
	}
	case F_BROKER_KILL:
		random_op(s);
		assert_int_equal(proc_signal(s->broker, SIGKILL), 0);
		assert_int_equal(proc_wait(s->broker, 10000), PROC_SIGNALED(SIGKILL));
		proc_free(s->broker);
		random_op(s);
		s->broker = soak_broker(s);
		assert_non_null(s->broker);
		break;
	case F_BROKER_STOP: {
		uint64_t ids[64];
		int n = chaos_broker_sessions(s->broker, ids, 64);
		assert_true(n > 0);
		struct session_probe probe = {s->zk, ids[n - 1]};
		int seen = proc_count(s->broker, PROC_STDERR, "connected to ZooKeeper, session 0x");

		assert_int_equal(proc_signal(s->broker, SIGSTOP), 0);
		random_op(s);
		bool gone = zkh_eventually(session_gone, &probe, SESSION_MS + 20000);
		assert_int_equal(proc_signal(s->broker, SIGCONT), 0);
		assert_true(gone);
		assert_true(proc_wait_output_count(s->broker, PROC_STDERR,
		                                   "connected to ZooKeeper, session 0x", seen + 1, 30000));
		break;
	}
	default: break;
	}
}

/* Quiet period: everything exists again, then both fleets must hold what
 * ZooKeeper holds. A miss is counted as lost (and reported), not fatal at
 * once, so the run's counts are complete. */
static void converge(struct soak *s)
{
	uint64_t want_conf = 0, want_ptr = 0;
	char p[80];

	assert_int_equal(zkh_wait_serving(s->zk, QUORUM_MS), 0);
	put(s, s->conf);
	put(s, s->target[s->current]);
	int n = snprintf(p, sizeof(p), "%s", s->target[s->current]);
	/* Serving is not yet answering writes within one session timeout
	 * after a fault: retry (bounded), as put() does. */
	int64_t until = zkw_clock_mono_ms() + QUORUM_MS;
	int rc;

	while ((rc = zkh_set(s->hosts, s->ptr, p, n)) != ZOK && zkw_clock_mono_ms() < until)
		zkw_clock_sleep_ms(100);
	assert_int_equal(rc, ZOK);
	assert_int_equal(chaos_zk_seq(s->hosts, s->conf, &want_conf, QUORUM_MS), 0);
	assert_int_equal(chaos_zk_seq(s->hosts, s->target[s->current], &want_ptr, QUORUM_MS), 0);
	if (!chaos_readers_wait_seq(s->fleet_conf, want_conf, CONVERGE_MS)) {
		fprintf(stderr, "soak: round %" PRIu64 ": config readers lost seq %" PRIu64 "\n", s->rounds,
		        want_conf);
		s->lost++;
	}
	if (!chaos_readers_wait_seq(s->fleet_ptr, want_ptr, CONVERGE_MS)) {
		fprintf(stderr, "soak: round %" PRIu64 ": pointer readers lost seq %" PRIu64 " (%s)\n",
		        s->rounds, want_ptr, s->target[s->current]);
		s->lost++;
	}
}

static void test_soak(void **state)
{
	struct soak s = {0};
	int seconds = zkh_env_int("ZKW_SOAK_SECONDS", 20, 10000000);
	int readers = zkh_env_int("ZKW_SOAK_READERS", 2, 10000000);
	const char *seed = getenv("ZKW_SOAK_SEED");
	chaos_totals tc, tp;

	(void)state;
	s.rng = seed && *seed ? strtoull(seed, NULL, 10) : ((uint64_t)time(NULL) << 16) ^ (uint64_t)getpid();
	uint64_t seed0 = s.rng;

	fprintf(stderr, "soak: %d s, %d readers per segment, seed %" PRIu64 "\n", seconds, readers, seed0);
	s.zk = zkh_start(3);
	assert_non_null(s.zk);
	s.hosts = zkh_hosts(s.zk);
	snprintf(s.conf, sizeof(s.conf), "/zkwsoak/conf");
	snprintf(s.ptr, sizeof(s.ptr), "/zkwsoak/ptr");
	snprintf(s.target[0], sizeof(s.target[0]), "/zkwsoak/t0");
	snprintf(s.target[1], sizeof(s.target[1]), "/zkwsoak/t1");
	snprintf(s.shm_conf, sizeof(s.shm_conf), "zkwsoak.%d.conf", (int)getpid());
	snprintf(s.shm_ptr, sizeof(s.shm_ptr), "zkwsoak.%d.ptr", (int)getpid());
	put(&s, s.conf);
	put(&s, s.target[0]);
	put(&s, s.target[1]);
	assert_int_equal(zkh_set(s.hosts, s.ptr, s.target[0], (int)strlen(s.target[0])), ZOK);
	s.broker = soak_broker(&s);
	assert_non_null(s.broker);
	s.fleet_conf = chaos_readers_start(s.shm_conf, readers);
	s.fleet_ptr = chaos_readers_start(s.shm_ptr, readers);
	assert_non_null(s.fleet_conf);
	assert_non_null(s.fleet_ptr);
	converge(&s);

	int64_t end = zkw_clock_mono_ms() + (int64_t)seconds * 1000;
	while (zkw_clock_mono_ms() < end) {
		s.rounds++;
		for (int i = 3 + (int)pick(&s, 10); i > 0; i--)
			random_op(&s);
		inject(&s, (enum fault)pick(&s, F_KINDS));
		converge(&s);
	}

	int bad = chaos_readers_stop(s.fleet_conf, 10000, &tc) + chaos_readers_stop(s.fleet_ptr, 10000, &tp);
	proc_signal(s.broker, SIGTERM);
	int broker_rc = proc_wait(s.broker, 15000);
	proc_free(s.broker);
	zkw_writer_remove(s.shm_conf);
	zkw_writer_remove(s.shm_ptr);
	zkh_stop(s.zk);

	printf("soak: seed=%" PRIu64 " seconds=%d rounds=%" PRIu64 " readers=%d\n", seed0, seconds, s.rounds,
	       2 * readers);
	printf("soak: faults:");
	for (int f = 1; f < F_KINDS; f++)
		printf(" %s=%" PRIu64, fault_name[f], s.faults[f]);
	printf(" (quiet rounds=%" PRIu64 ")\n", s.faults[F_NONE]);
	printf("soak: writes=%" PRIu64 " pointer_switches=%" PRIu64 " deletes=%" PRIu64 "\n", s.writes,
	       s.switches, s.deletes);
	printf("soak: snapshots_checked=%" PRIu64 " configs=%" PRIu64 " torn=%" PRIu64 " lost=%" PRIu64
	       " duplicates=%" PRIu64 " gen_regress=%" PRIu64 " hangs=%" PRIu64 " reader_errors=%" PRIu64
	       " quorum_loss_not_reported=%" PRIu64 "\n",
	       tc.snapshots + tp.snapshots, tc.configs + tp.configs, tc.torn + tp.torn, s.lost,
	       tc.dups + tp.dups, tc.gen_regress + tp.gen_regress, tc.hangs + tp.hangs, tc.errors + tp.errors,
	       s.down_missed);
	fflush(stdout);
	assert_int_equal(bad, 0);
	assert_int_equal(broker_rc, 0);
	assert_true(chaos_totals_clean(&tc, true, "soak config readers"));
	assert_true(chaos_totals_clean(&tp, false, "soak pointer readers"));
	assert_int_equal(s.lost, 0);
	assert_int_equal(s.down_missed, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_soak),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
