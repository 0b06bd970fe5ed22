/* SPDX-License-Identifier: Apache-2.0 */
/* test_hostile_broker.c - the real zkw-broker against hostile local processes,
 * with a real ZooKeeper server:
 *
 *   - a process that can only read the segment holds an OFD read lock on
 *     it across a broker SIGKILL and restart: no false liveness while no
 *     broker runs, the broker restarts (replacing the segment), readers
 *     told to reopen follow it; a restart with nobody in the way keeps the
 *     segment;
 *   - another user creates the segment or the broker's lock file first:
 *     the broker refuses, naming the owner, and readers refuse the
 *     squatter's content unless told that uid;
 *   - a segment left with hostile lengths: the restarted broker drops that
 *     snapshot instead of crashing, and serves ZooKeeper's content;
 *   - /dev/shm too small (a private mount namespace with a 512 KiB tmpfs):
 *     the broker stops at start with a clear error, never SIGBUS later.
 *
 * Runs as root (files for uid 65534); each case says why when it skips.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
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
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <zookeeper/zookeeper.h>

#include <zkw/client.h>

#include "chaos.h"
#include "proc.h"
#include "publish/writer.h"
#include "zkh.h"
#include "zkw_clock.h"

#define NOBODY     65534
#define SESSION_MS 4000
#define WAIT_MS    20000 /* bound of every wait for the broker or a reader */

static zkh_cluster *zk;

struct names {
	char path[96];
	char shm[96];
	char lock[160];
};

/* Every name a test used, removed by the teardown even when it fails. */
static struct names used[8];
static int nused;

static void names_for(struct names *n, const char *tag)
{
	snprintf(n->path, sizeof(n->path), "/zkwhostile/%d/%s", (int)getpid(), tag);
	snprintf(n->shm, sizeof(n->shm), "zkwhostile.%d.%s", (int)getpid(), tag);
	snprintf(n->lock, sizeof(n->lock), "/dev/shm/.zkw-lock.%s", n->shm);
	assert_true(nused < (int)(sizeof(used) / sizeof(used[0])));
	used[nused++] = *n;
}

static void names_remove(const struct names *n)
{
	zkw_writer_remove(n->shm);
	unlink(n->lock); /* left by a killed broker */
}

static void put(const struct names *n, const char *text)
{
	assert_int_equal(zkh_set(zkh_hosts(zk), n->path, text, (int)strlen(text)), ZOK);
}

static proc *broker_start(const struct names *n)
{
	proc *b = chaos_broker_start(zkh_hosts(zk), n->path, n->shm, SESSION_MS, NULL);

	if (!b)
		fail_msg("zkw-broker for %s did not start (see its stderr above)", n->shm);
	return b;
}

static void broker_kill(proc **b)
{
	assert_int_equal(proc_signal(*b, SIGKILL), 0);
	assert_int_equal(proc_wait(*b, 10000), PROC_SIGNALED(SIGKILL));
	proc_free(*b);
	*b = NULL;
}

static void broker_stop(proc **b)
{
	if (!*b)
		return;
	proc_signal(*b, SIGTERM);
	assert_int_equal(proc_wait(*b, 15000), 0);
	proc_free(*b);
	*b = NULL;
}

static void open_reader(zkw_reader *r, const char *shm)
{
	int err = zkw_reader_open(r, shm);

	if (err)
		fail_msg("zkw_reader_open(%s): %d (%s)", shm, err, r->why ? r->why : "?");
}

/* Wait, on the segment's futex, until the reader holds `text`, valid and
 * pinging (the broker connected). -ESTALE when the segment is retired. */
static int wait_content(zkw_reader *r, const char *text, int timeout_ms)
{
	int64_t deadline = zkw_clock_mono_ms() + timeout_ms;
	static char buf[1 << 16];
	zkw_snapshot m;

	for (;;) {
		ssize_t n = zkw_reader_read(r, &m, buf, sizeof(buf));
		int64_t left = deadline - zkw_clock_mono_ms();
		int rc;

		if (n == (ssize_t)strlen(text) && memcmp(buf, text, (size_t)n) == 0 && m.valid &&
		    zkw_reader_ping(r))
			return 0;
		if (left <= 0)
			return -ETIMEDOUT;
		/* Ping also depends on the lock probe: re-check every 100 ms. */
		rc = zkw_reader_wait(r, m.generation, left < 100 ? (int)left : 100);
		if (rc == -ESTALE)
			return rc;
	}
}

static void expect_content(zkw_reader *r, const char *text, const char *when)
{
	int rc = wait_content(r, text, WAIT_MS);

	if (rc)
		fail_msg("%s: the reader never held \"%s\", valid and pinging (%s)", when, text,
		         rc == -ESTALE ? "segment retired" : "timeout");
}

static bool output_has(proc *b, const char *needle)
{
	return proc_count(b, PROC_STDERR, needle) > 0;
}

/* A child that opens the segment read-only and holds an OFD read lock on
 * it until killed; reports 'L' or 'E' on *report. */
static pid_t start_read_locker(const char *shm, int *report)
{
	int up[2];
	pid_t pid;

	assert_int_equal(pipe(up), 0);
	pid = proc_fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
		int fd = shm_open(shm, O_RDONLY, 0);
		char c = fd >= 0 && fcntl(fd, F_OFD_SETLK, &fl) == 0 ? 'L' : 'E';

		if (write(up[1], &c, 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	close(up[1]);
	*report = up[0];
	return pid;
}

static char read_report(int fd)
{
	char c = 0;

	return read(fd, &c, 1) == 1 ? c : 0; /* the child writes at once, or dies: EOF */
}

static void need_root(void)
{
	if (geteuid() != 0) {
		print_message("not root: cannot create files for another uid; skipped\n");
		skip();
	}
}

/* ---- (b) a read lock across a broker kill and restart -------------------- */

static void test_read_lock_across_broker_kill_and_restart(void **state)
{
	struct names n;
	proc *b;
	zkw_reader r, late;
	int report;
	pid_t locker;
	uint64_t gen;

	(void)state;
	names_for(&n, "rdlock");
	put(&n, "v1");
	b = broker_start(&n);
	open_reader(&r, n.shm);
	expect_content(&r, "v1", "first start");

	broker_kill(&b);
	locker = start_read_locker(n.shm, &report);
	if (read_report(report) != 'L')
		fail_msg("a read-only descriptor could not take a read lock on the dead broker's segment");

	/* No broker runs: nobody may say otherwise, old reader or new. And
	 * the broker restarts anyway: it replaces the locked segment. (Both
	 * checked before failing.) */
	open_reader(&late, n.shm);
	bool fake = zkw_reader_broker_alive(&r) || zkw_reader_ping(&r) || zkw_reader_broker_alive(&late) ||
	            zkw_reader_ping(&late);
	zkw_reader_close(&late);
	gen = zkw_reader_generation(&r);
	b = chaos_broker_start(zkh_hosts(zk), n.path, n.shm, SESSION_MS, NULL);
	if (fake || !b)
		fail_msg("a reader's read lock on the dead broker's segment: %s%s",
		         fake ? "the dead broker was reported alive; " : "",
		         !b ? "the broker could not restart (its stderr is above)" : "");
	if (!output_has(b, "replaced because another process holds a read lock"))
		fail_msg("the restarted broker did not log the replacement");
	/* The old segment's readers are told, with a last wake. */
	assert_int_equal(zkw_reader_wait(&r, gen, WAIT_MS), -ESTALE);
	assert_true(zkw_reader_retired(&r));
	assert_false(zkw_reader_broker_alive(&r));
	zkw_reader_close(&r);
	open_reader(&r, n.shm);
	assert_true(zkw_reader_generation(&r) > gen);
	expect_content(&r, "v1", "after the replacing restart");
	put(&n, "v2");
	expect_content(&r, "v2", "a change after the replacing restart");

	/* The locker still holds the old object only: the next restart has
	 * nobody in its way and keeps the segment, readers carry on. */
	gen = zkw_reader_generation(&r);
	broker_kill(&b);
	assert_false(zkw_reader_broker_alive(&r));
	b = broker_start(&n);
	assert_false(output_has(b, "replaced"));
	assert_false(zkw_reader_retired(&r));
	assert_true(zkw_reader_generation(&r) > gen);
	assert_true(zkw_reader_broker_alive(&r));
	put(&n, "v3");
	expect_content(&r, "v3", "a restart that kept the segment");

	zkw_reader_close(&r);
	broker_stop(&b);
	proc_kill_pids(&locker, 1);
	close(report);
	names_remove(&n);
}

/* ---- (c) squatters --------------------------------------------------------- */

/* A real zkw segment holding `text`, then given to uid 65534: what another
 * user could have prepared under the name. */
static void make_squatter_segment(const char *shm, const char *text)
{
	zkw_writer_options opt = {.capacity = ZKW_DEFAULT_CAPACITY, .group = (gid_t)-1, .mode = 0644};
	zkw_publication p = {.valid = true, .connected = true, .content = text, .len = strlen(text)};
	zkw_writer *w;
	char why[512];
	int fd;

	if (zkw_writer_open(&w, shm, &opt, why, sizeof(why)) != 0)
		fail_msg("squatter segment: %s", why);
	assert_int_equal(zkw_writer_publish(w, &p), 0);
	zkw_writer_close(w, false);
	fd = shm_open(shm, O_RDWR, 0);
	assert_true(fd >= 0);
	assert_int_equal(fchown(fd, NOBODY, NOBODY), 0);
	close(fd);
}

static void test_squatted_segment_is_refused_by_broker_and_readers(void **state)
{
	struct names n;
	zkw_reader_options told = {.expected_uid = NOBODY};
	zkw_reader r;
	char buf[64];
	char *err = NULL;
	int rc;

	(void)state;
	need_root();
	names_for(&n, "squat");
	put(&n, "the real config");
	make_squatter_segment(n.shm, "the squatter's config");

	/* Readers refuse the squatter's content by default, naming it. */
	rc = zkw_reader_open(&r, n.shm);
	if (rc != -EPERM)
		fail_msg("a segment of uid 65534 was opened by default (%d): its content would be read", rc);
	assert_non_null(strstr(r.why, "uid 65534"));
	assert_non_null(strstr(r.why, ZKW_OWNER_ENV));
	/* Told that uid, a reader reads it: the check is the owner. */
	assert_int_equal(zkw_reader_open_ex(&r, n.shm, &told), 0);
	assert_int_equal(zkw_reader_read(&r, NULL, buf, sizeof(buf)), 21);
	zkw_reader_close(&r);

	/* The broker refuses it, naming the owner. */
	const char *argv[] = {"-z",  zkh_hosts(zk),    "-f",    n.path, "--shm",
	                      n.shm, "--init-timeout", "30000", NULL};
	rc = proc_run("zkw-broker", argv, NULL, WAIT_MS, NULL, &err);
	if (rc != 1 || !err || !strstr(err, "owned by uid 65534"))
		fail_msg("broker on a squatted segment: exit %d, stderr: %s", rc, err ? err : "");
	free(err);
	err = NULL;
	names_remove(&n);

	/* The same with the broker's lock file. */
	int fd = open(n.lock, O_RDWR | O_CREAT | O_EXCL, 0644);
	assert_true(fd >= 0);
	assert_int_equal(fchown(fd, NOBODY, NOBODY), 0);
	close(fd);
	rc = proc_run("zkw-broker", argv, NULL, WAIT_MS, NULL, &err);
	if (rc != 1 || !err || !strstr(err, "owned by uid 65534") || !strstr(err, ".zkw-lock."))
		fail_msg("broker with a squatted lock file: exit %d, stderr: %s", rc, err ? err : "");
	free(err);
	assert_int_equal(access(n.lock, F_OK), 0); /* another user's file is left alone */
	names_remove(&n);
}

/* ---- (d) hostile lengths left in the segment -------------------------------- */

static void test_hostile_lengths_do_not_crash_the_restarted_broker(void **state)
{
	struct names n;
	struct zkw_segment_header *h;
	struct zkw_slot *slot;
	struct stat st;
	zkw_reader r;
	proc *b;
	void *map;
	int fd;

	(void)state;
	names_for(&n, "lengths");
	put(&n, "good");
	b = broker_start(&n);
	open_reader(&r, n.shm);
	expect_content(&r, "good", "first start");
	zkw_reader_close(&r);
	broker_stop(&b);

	/* Whoever could write the segment leaves absurd lengths in the
	 * published slot. */
	fd = shm_open(n.shm, O_RDWR, 0);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	map = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(map != MAP_FAILED);
	close(fd);
	h = map;
	slot = zkw_segment_slot(map, h->ident.slot_size, h->ident.slot_count, h->hot.generation);
	slot->len = 1ull << 40;
	slot->pointer_len = 4000000000u;
	munmap(map, (size_t)st.st_size);

	b = broker_start(&n);
	if (!output_has(b, "dropped"))
		fail_msg("the broker did not log the dropped snapshot");
	open_reader(&r, n.shm);
	expect_content(&r, "good", "restart over hostile lengths");
	zkw_reader_close(&r);
	broker_stop(&b);
	names_remove(&n);
}

/* ---- (e) /dev/shm too small ---------------------------------------------------- */

static bool can_unshare_mounts(void)
{
	pid_t pid = proc_fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0)
		_exit(unshare(CLONE_NEWNS) == 0 ? 0 : 77);
	status = proc_reap_pid(pid, 10000);
	return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static void test_small_dev_shm_stops_the_broker_at_start(void **state)
{
	static char big[600 * 1024];
	char broker[4096], *err = NULL;
	struct names n;
	int rc;

	(void)state;
	if (access("/usr/bin/unshare", X_OK) != 0 || !can_unshare_mounts()) {
		print_message("no private mount namespace here (unshare(CLONE_NEWNS) refused or no "
		              "/usr/bin/unshare): skipped\n");
		skip();
	}
	names_for(&n, "small");
	memset(big, 'z', sizeof(big));
	assert_int_equal(zkh_set(zkh_hosts(zk), n.path, big, (int)sizeof(big)), ZOK);
	proc_tool_path("zkw-broker", broker, sizeof(broker));
	/* The broker alone sees a 512 KiB /dev/shm; ZooKeeper is outside. */
	const char *argv[] = {
	        "--mount",
	        "--propagation",
	        "private",
	        "/bin/sh",
	        "-c",
	        "mount -t tmpfs -o size=512k,mode=1777 zkw-small /dev/shm && exec \"$0\" \"$@\"",
	        broker,
	        "-z",
	        zkh_hosts(zk),
	        "-f",
	        n.path,
	        "--shm",
	        n.shm,
	        "--init-timeout",
	        "30000",
	        NULL};
	proc_options o = {.literal_path = true};
	rc = proc_run("/usr/bin/unshare", argv, &o, 60000, NULL, &err);
	if (rc == PROC_SIGNALED(SIGBUS))
		fail_msg("the broker died of SIGBUS: the segment was never allocated (stderr: %s)",
		         err ? err : "");
	if (rc != 1 || !err || !strstr(err, "not enough space in /dev/shm") ||
	    !strstr(err, "needs 2104064 bytes"))
		fail_msg("broker on a 512 KiB /dev/shm: exit %d, stderr: %s", rc, err ? err : "");
	free(err);
}

static int group_setup(void **state)
{
	(void)state;
	zk = zkh_start(1);
	return zk ? 0 : -1;
}

static int test_teardown(void **state)
{
	(void)state;
	proc_kill_all();
	for (int i = 0; i < nused; i++)
		names_remove(&used[i]);
	nused = 0;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	proc_kill_all();
	zkh_stop(zk);
	zk = NULL;
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_teardown(test_read_lock_across_broker_kill_and_restart, test_teardown),
	        cmocka_unit_test_teardown(test_squatted_segment_is_refused_by_broker_and_readers,
	                                  test_teardown),
	        cmocka_unit_test_teardown(test_hostile_lengths_do_not_crash_the_restarted_broker,
	                                  test_teardown),
	        cmocka_unit_test_teardown(test_small_dev_shm_stops_the_broker_at_start, test_teardown),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
