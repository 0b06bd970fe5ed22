/* SPDX-License-Identifier: Apache-2.0 */
/* test_hostile.c - what other processes on the host can do to the writer
 * and to readers, without ZooKeeper (tests/fault/test_hostile_broker.c does the
 * same against the real zkw-broker):
 *
 *   - a process with a read-only descriptor takes an OFD read lock on a
 *     segment: it neither fakes a live broker nor keeps a writer from
 *     starting (the segment is replaced and the old one retired);
 *   - another user creates the broker's lock file or the segment first, or
 *     makes a segment writable by group or others: refused, naming the
 *     owner; readers trust only root, themselves or the uid they are told;
 *   - a segment adopted with hostile lengths or sequences: the writer
 *     drops that snapshot, never crashes, never copies out of bounds;
 *   - /dev/shm too small: a clear error at open, never SIGBUS later (in a
 *     private mount namespace with a small tmpfs on /dev/shm).
 *
 * Runs as root (it creates files for uid 65534 and becomes it in
 * children); without root, the tests that need it are skipped. Every
 * segment and lock file a test names is removed by the teardown.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <zkw/client.h>
#include <zkw/segment.h>

#include "proc.h"
#include "publish/writer.h"
#include "segtest.h"

#define NOBODY  65534
#define WAIT_MS 10000 /* bound of every wait for a child's event */

/* ---- fixture: unique names, removed with their lock files -------------- */

#define MAX_NAMES 32
static char names[MAX_NAMES][64];
static int names_used;
static unsigned name_counter;

static const char *new_name(void)
{
	assert_true(names_used < MAX_NAMES);
	snprintf(names[names_used], sizeof(names[0]), "/zkw.test.hostile.%d.%u", (int)getpid(),
	         name_counter++);
	return names[names_used++];
}

static void lock_path(char *buf, size_t cap, const char *name)
{
	snprintf(buf, cap, "/dev/shm/.zkw-lock.%s", name + 1);
}

static int remove_names(void **state)
{
	char path[128];

	(void)state;
	for (int i = 0; i < names_used; i++) {
		zkw_writer_remove(names[i]);
		lock_path(path, sizeof(path), names[i]);
		unlink(path); /* left by a writer that was killed */
	}
	names_used = 0;
	unsetenv(ZKW_OWNER_ENV);
	return 0;
}

/* ---- helpers ------------------------------------------------------------ */

static void publish(zkw_writer *w, bool valid, const char *content, uint64_t serial)
{
	zkw_publication p = {
	        .valid = valid,
	        .connected = valid,
	        .content = content,
	        .len = content ? strlen(content) : 0,
	        .content_serial = serial,
	        .version = (int64_t)serial,
	        .mzxid = (int64_t)serial * 10,
	        .pointer = "/pointer/target",
	        .error = valid ? NULL : "Connection interrupted with Zookeeper, re-establishing",
	        .confirmed_ns = 1,
	};

	assert_int_equal(zkw_writer_publish(w, &p), 0);
}

static void expect_contains(const char *text, const char *part, const char *what)
{
	if (!text || !strstr(text, part))
		fail_msg("%s: \"%s\" does not mention \"%s\"", what, text ? text : "(null)", part);
}

/* One byte through a pipe: the events between parent and children. */
/* The next byte, or 0 on timeout or end of file. */
/* In a forked child that runs writer code: a fault kills the child (which
 * the parent reports), instead of landing in cmocka's handler inherited
 * from the parent, which would carry on with the parent's tests. */
static void die_of_faults(void)
{
	struct sigaction sa = {.sa_handler = SIG_DFL};
	const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};

	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
}

static bool become_nobody(void)
{
	return setgid(NOBODY) == 0 && setuid(NOBODY) == 0;
}

static void need_root(void)
{
	if (geteuid() != 0) {
		print_message("not root: cannot create files for another uid; skipped\n");
		skip();
	}
}

/* A child that opens the segment read-only and takes an OFD read lock on
 * it, then holds it until killed. It reports 'L' (locked) or 'E'. */
static pid_t start_read_locker(const char *name, int *report)
{
	int up[2];
	pid_t pid;

	assert_int_equal(pipe(up), 0);
	pid = segtest_fork();
	if (pid == 0) {
		struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
		int fd = shm_open(name, O_RDONLY, 0);

		segtest_send_byte(up[1], fd >= 0 && fcntl(fd, F_OFD_SETLK, &fl) == 0 ? 'L' : 'E');
		for (;;)
			pause();
	}
	close(up[1]);
	*report = up[0];
	return pid;
}

/* A read-write mapping of the segment, as an attacker with write access
 * (or a test) sees it. */
static uint8_t *map_rw(const char *name, size_t *len)
{
	int fd = shm_open(name, O_RDWR, 0);
	struct stat st;
	void *map;

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	map = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(map != MAP_FAILED);
	close(fd);
	*len = (size_t)st.st_size;
	return map;
}

static struct zkw_slot *slot_at(uint8_t *base, uint64_t capacity, uint64_t generation)
{
	return zkw_segment_slot(base, zkw_segment_slot_size(capacity), ZKW_SLOT_COUNT, generation);
}

/* ---- (b) a read lock neither fakes liveness nor blocks a writer ---------- */


static void test_read_lock_neither_fakes_liveness_nor_blocks_a_writer(void **state)
{
	const char *name = new_name();
	struct segtest_calls log = {""};
	zkw_handlers h = segtest_calls_handlers(&log);
	char buf[256], content[256];
	int up[2], locked, status;
	zkw_reader r, late;
	zkw_dispatcher d;
	zkw_snapshot m, before;
	pid_t writer, locker;
	uint64_t gen;

	(void)state;
	/* A writer process publishes, a reader follows it... */
	assert_int_equal(pipe(up), 0);
	writer = segtest_fork();
	if (writer == 0) {
		zkw_writer *w;
		zkw_publication p = {.valid = true,
		                     .connected = true,
		                     .content = "config one",
		                     .len = 10,
		                     .content_serial = 1,
		                     .version = 1};

		if (zkw_writer_open(&w, name, &(zkw_writer_options){.capacity = 4096, .group = (gid_t)-1},
		                    NULL, 0) != 0 ||
		    zkw_writer_publish(w, &p) != 0)
			_exit(2);
		segtest_send_byte(up[1], 'r');
		for (;;)
			pause();
	}
	if (segtest_recv_byte(up[0], WAIT_MS) != 'r')
		fail_msg("writer child did not publish");
	segtest_open_reader(&r, name);
	zkw_dispatcher_init(&d, &r, &h, content, sizeof(content));
	assert_int_equal(zkw_dispatch(&d, 0), 2);
	assert_string_equal(log.text, "config(config one) valid(true) ");
	assert_true(zkw_reader_ping(&r));
	assert_int_equal(segtest_read_text(&r, &before, buf, sizeof(buf)), 10);

	/* ...the writer dies, and a process that can only read takes a read
	 * lock on the segment. */
	kill(writer, SIGKILL);
	status = proc_reap_pid(writer, WAIT_MS);
	assert_true(status != -1 && WIFSIGNALED(status));
	locker = start_read_locker(name, &locked);
	if (segtest_recv_byte(locked, WAIT_MS) != 'L')
		fail_msg("a read-only descriptor could not take a read lock on the dead writer's segment");

	/* No false liveness: a read lock is not a broker, for a reader that
	 * was there or one that comes now. And the next writer starts: it
	 * replaces the read-locked segment. (Both checked before failing.) */
	segtest_open_reader(&late, name);
	bool fake = zkw_reader_broker_alive(&r) || zkw_reader_ping(&r) || zkw_reader_broker_alive(&late) ||
	            zkw_reader_ping(&late);
	char why[512] = "";
	zkw_writer *w = NULL;
	int err = zkw_writer_open(&w, name, &(zkw_writer_options){.capacity = 4096, .group = (gid_t)-1}, why,
	                          sizeof(why));
	if (fake || err)
		fail_msg("a reader's read lock on the dead writer's segment: %s%s%s",
		         fake ? "the dead writer was reported alive; " : "",
		         err ? "the next writer could not start: " : "", err ? why : "");
	expect_contains(zkw_writer_notice(w), "replaced", "writer notice");
	expect_contains(zkw_writer_notice(w), "read lock", "writer notice");

	/* The old segment says so in one load, wakes its waiters once more
	 * and is not alive: its readers reopen. */
	gen = zkw_reader_generation(&r);
	assert_true(zkw_reader_retired(&r));
	assert_true(zkw_reader_retired(&late));
	assert_false(zkw_reader_broker_alive(&r));
	assert_false(zkw_reader_ping(&r));
	assert_int_equal(zkw_reader_state(&r) & (ZKW_STATE_RUNNING | ZKW_STATE_CONNECTED), 0);
	assert_int_equal(zkw_reader_wait(&r, gen, WAIT_MS), -ESTALE);
	log.text[0] = '\0';
	assert_int_equal(zkw_dispatch(&d, WAIT_MS), -ESTALE);
	assert_string_equal(log.text, "");
	zkw_reader_close(&late);

	/* Reopened into the same reader, the dispatcher goes on: the new
	 * segment continues the generations and content_gen, so the content
	 * is not delivered again. */
	zkw_reader_close(&r);
	segtest_open_reader(&r, name);
	assert_false(zkw_reader_retired(&r));
	assert_true(zkw_reader_broker_alive(&r));
	assert_int_equal(zkw_reader_generation(&r), gen + 1);
	assert_int_equal(segtest_read_text(&r, &m, buf, sizeof(buf)), 10);
	assert_string_equal(buf, "config one");
	assert_false(m.valid);
	expect_contains(m.error, "restarted", "first publication of the new segment");
	assert_int_equal(m.content_gen, before.content_gen);
	assert_int_equal(m.changed_ns, before.changed_ns);
	assert_int_equal(m.version, before.version);
	assert_int_equal(zkw_dispatch(&d, WAIT_MS), 2);
	assert_string_equal(log.text, "valid(false) error(zkw-broker restarted, connecting to Zookeeper) ");
	publish(w, true, "config one", 7); /* compared byte for byte: no change */
	log.text[0] = '\0';
	assert_int_equal(zkw_dispatch(&d, WAIT_MS), 1);
	assert_string_equal(log.text, "valid(true) ");
	assert_true(zkw_reader_ping(&r));

	/* While the writer runs, nobody can take a read lock on the new
	 * segment: the writer's write lock excludes it. */
	int fd = shm_open(name, O_RDONLY, 0);
	struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
	assert_true(fd >= 0);
	assert_int_equal(fcntl(fd, F_OFD_SETLK, &fl), -1);
	assert_true(errno == EAGAIN || errno == EACCES);
	close(fd);

	zkw_reader_close(&r);
	zkw_writer_close(w, true);
	proc_kill_pids(&locker, 1);
	close(locked);
	close(up[0]);
	close(up[1]);
}

/* A writer restarted with nobody in its way keeps the segment (readers do
 * not reopen); one that finds a reader's lock replaces it each time. */
static void test_restart_keeps_the_segment_unless_a_reader_locks_it(void **state)
{
	const char *name = new_name();
	zkw_writer *w = segtest_open_writer(name, 4096);
	struct stat first, again;
	char path[128];
	zkw_reader r;

	(void)state;
	snprintf(path, sizeof(path), "/dev/shm%s", name);
	publish(w, true, "kept", 1);
	assert_int_equal(stat(path, &first), 0);
	segtest_open_reader(&r, name);
	zkw_writer_close(w, false);
	w = segtest_open_writer(name, 4096);
	assert_int_equal(stat(path, &again), 0);
	assert_int_equal(again.st_ino, first.st_ino);
	assert_string_equal(zkw_writer_notice(w), "");
	assert_false(zkw_reader_retired(&r));
	assert_true(zkw_reader_broker_alive(&r));
	assert_int_equal(zkw_reader_generation(&r), 2);
	zkw_writer_close(w, false);
	zkw_reader_close(&r);
}

/* ---- (b, c) the broker lock file ------------------------------------------ */

static void test_broker_lock_file_of_another_user_is_refused(void **state)
{
	const char *name = new_name();
	zkw_writer_options opt = {.capacity = 4096, .group = (gid_t)-1};
	char path[128], why[512];
	zkw_writer *w;
	int fd;

	(void)state;
	need_root();
	lock_path(path, sizeof(path), name);
	/* Another user was first to create the lock file. */
	fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0644);
	assert_true(fd >= 0);
	assert_int_equal(fchown(fd, NOBODY, NOBODY), 0);
	close(fd);
	assert_int_equal(zkw_writer_open(&w, name, &opt, why, sizeof(why)), -EPERM);
	expect_contains(why, "owned by uid 65534", "squatted lock file");
	expect_contains(why, ".zkw-lock.", "squatted lock file");
	assert_int_equal(shm_open(name, O_RDONLY, 0), -1); /* no segment made */
	assert_int_equal(errno, ENOENT);

	/* ...or a symbolic link pointing elsewhere. */
	assert_int_equal(unlink(path), 0);
	assert_int_equal(symlink("/etc/passwd", path), 0);
	assert_int_equal(lchown(path, NOBODY, NOBODY), 0);
	assert_int_equal(zkw_writer_open(&w, name, &opt, why, sizeof(why)), -EPERM);
	expect_contains(why, "owned by uid 65534", "symlinked lock file");

	/* Removed, the writer starts; its lock file is private and goes away
	 * with a clean close. */
	assert_int_equal(unlink(path), 0);
	assert_int_equal(zkw_writer_open(&w, name, &opt, why, sizeof(why)), 0);
	struct stat st;
	assert_int_equal(lstat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(st.st_uid, geteuid());
	zkw_writer_close(w, true);
	assert_int_equal(lstat(path, &st), -1);
}

/* ---- (c) readers trust only known owners ---------------------------------- */

static void chown_segment(const char *name, uid_t uid, mode_t mode)
{
	int fd = shm_open(name, O_RDWR, 0);

	assert_true(fd >= 0);
	assert_int_equal(fchown(fd, uid, uid), 0);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static void expect_refused(const char *name, const zkw_reader_options *opt, int err, const char *part1,
                           const char *part2)
{
	zkw_reader r;
	int got = zkw_reader_open_ex(&r, name, opt);

	if (got != err)
		fail_msg("open %s (expected_uid %d, %s=%s): got %d (%s), want %d", name,
		         opt ? (int)opt->expected_uid : -1, ZKW_OWNER_ENV,
		         getenv(ZKW_OWNER_ENV) ? getenv(ZKW_OWNER_ENV) : "unset", got, r.why ? r.why : "-",
		         err);
	expect_contains(r.why, part1, "refusal");
	if (part2)
		expect_contains(r.why, part2, "refusal");
	assert_null(r.base);
	assert_int_equal(r.fd, -1);
}

static void expect_accepted(const char *name, const zkw_reader_options *opt)
{
	zkw_reader r;
	char buf[64];
	int got = zkw_reader_open_ex(&r, name, opt);

	if (got != 0)
		fail_msg("open %s (expected_uid %d, %s=%s): got %d (%s), want 0", name,
		         opt ? (int)opt->expected_uid : -1, ZKW_OWNER_ENV,
		         getenv(ZKW_OWNER_ENV) ? getenv(ZKW_OWNER_ENV) : "unset", got, r.why ? r.why : "-");
	assert_int_equal(segtest_read_text(&r, NULL, buf, sizeof(buf)), 8);
	assert_string_equal(buf, "squatted");
	zkw_reader_close(&r);
}

static void test_readers_trust_only_known_owners(void **state)
{
	const char *name = new_name();
	zkw_writer *w = segtest_open_writer(name, 4096);
	zkw_reader_options told_nobody = {.expected_uid = NOBODY}, told_root = {.expected_uid = 0},
	                   not_told = {.expected_uid = (uid_t)-1};
	struct passwd *pw;
	pid_t pid;

	(void)state;
	need_root();
	publish(w, true, "squatted", 1);
	zkw_writer_close(w, false);
	unsetenv(ZKW_OWNER_ENV);

	/* Another user's segment under the name: refused by default, naming
	 * the owner and how to trust it. */
	chown_segment(name, NOBODY, 0644);
	expect_refused(name, NULL, -EPERM, "owner is uid 65534", ZKW_OWNER_ENV "=65534");
	expect_refused(name, &not_told, -EPERM, "not root or you (uid 0)", NULL);
	/* Told that uid: accepted. Told another: refused, naming both. */
	expect_accepted(name, &told_nobody);
	expect_refused(name, &told_root, -EPERM, "owner is uid 65534", "expected uid 0");
	/* The environment variable, a uid or a user name, for every reader. */
	setenv(ZKW_OWNER_ENV, "65534", 1);
	expect_accepted(name, NULL);
	expect_refused(name, &told_root, -EPERM, "expected uid 0", NULL); /* the option wins */
	pw = getpwuid(NOBODY);
	if (pw) {
		setenv(ZKW_OWNER_ENV, pw->pw_name, 1);
		expect_accepted(name, NULL);
	}
	setenv(ZKW_OWNER_ENV, "0", 1);
	expect_refused(name, NULL, -EPERM, "owner is uid 65534", ZKW_OWNER_ENV);
	setenv(ZKW_OWNER_ENV, "no-such-user-zkw", 1);
	expect_refused(name, NULL, -EINVAL, "no-such-user-zkw", "names no user");
	setenv(ZKW_OWNER_ENV, "12abc", 1);
	expect_refused(name, NULL, -EINVAL, "names no user", NULL);
	unsetenv(ZKW_OWNER_ENV);

	/* Writable by group or others: refused whoever owns it and whatever
	 * the reader was told. */
	const mode_t writable[] = {0660, 0606, 0666, 0620};
	for (size_t i = 0; i < sizeof(writable) / sizeof(writable[0]); i++) {
		chown_segment(name, 0, writable[i]);
		expect_refused(name, NULL, -EPERM, "writable by group or others", "owner uid 0");
		expect_refused(name, &told_root, -EPERM, "writable by group or others", NULL);
		setenv(ZKW_OWNER_ENV, "0", 1);
		expect_refused(name, NULL, -EPERM, "writable by group or others", NULL);
		unsetenv(ZKW_OWNER_ENV);
	}
	chown_segment(name, 0, 0644);
	expect_accepted(name, NULL);

	/* An unprivileged reader trusts root and itself, nobody else. */
	pid = segtest_fork();
	if (pid == 0) {
		zkw_reader r;

		if (!become_nobody())
			_exit(10);
		if (zkw_reader_open(&r, name) != 0) /* root's */
			_exit(11);
		zkw_reader_close(&r);
		_exit(0);
	}
	segtest_expect_exit_ok(pid, WAIT_MS, "reader as uid 65534 on root's segment");
	chown_segment(name, NOBODY, 0600);
	pid = segtest_fork();
	if (pid == 0) {
		zkw_reader r;

		if (!become_nobody())
			_exit(10);
		if (zkw_reader_open(&r, name) != 0) /* its own */
			_exit(12);
		zkw_reader_close(&r);
		_exit(0);
	}
	segtest_expect_exit_ok(pid, WAIT_MS, "reader as uid 65534 on its own segment");
	chown_segment(name, 1, 0644);
	pid = segtest_fork();
	if (pid == 0) {
		zkw_reader r;

		if (!become_nobody())
			_exit(10);
		_exit(zkw_reader_open(&r, name) == -EPERM && strstr(r.why, "uid 1") ? 0 : 13);
	}
	segtest_expect_exit_ok(pid, WAIT_MS, "reader as uid 65534 on uid 1's segment");
}

/* ---- (d) the writer: modes and hostile segments --------------------------- */

static void test_writer_refuses_group_or_other_write_modes(void **state)
{
	const mode_t refused[] = {0666, 0660, 0620, 0602, 0642, 04640, 01640};
	const mode_t accepted[] = {0600, 0640, 0644, 0604};
	zkw_writer_options opt = {.capacity = 4096, .group = (gid_t)-1};
	char why[512], path[128];
	zkw_writer *w;

	(void)state;
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		const char *name = new_name();

		opt.mode = refused[i];
		why[0] = '\0';
		if (zkw_writer_open(&w, name, &opt, why, sizeof(why)) != -EINVAL)
			fail_msg("mode %04o was accepted", (unsigned)refused[i]);
		expect_contains(why, "mode", "refused mode");
		assert_int_equal(shm_open(name, O_RDONLY, 0), -1);
		lock_path(path, sizeof(path), name);
		assert_int_equal(access(path, F_OK), -1);
	}
	for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
		const char *name = new_name();
		struct stat st;

		opt.mode = accepted[i];
		assert_int_equal(zkw_writer_open(&w, name, &opt, why, sizeof(why)), 0);
		snprintf(path, sizeof(path), "/dev/shm%s", name);
		assert_int_equal(stat(path, &st), 0);
		assert_int_equal(st.st_mode & 07777, accepted[i]);
		zkw_writer_close(w, true);
	}
}

enum hostile_width { W32 = 4, W64 = 8 };

struct hostile_case {
	const char *what;
	size_t offset; /* in the published slot */
	enum hostile_width width;
	uint64_t value;
	const char *notice; /* what the writer names */
};

/* In a child, so a crash is a test failure, not the end of the suite:
 * adopt the hostile segment, publish "restarted" (keep_content), read it,
 * then publish fresh content. Exit status: the stage that went wrong. */
static int adopt_hostile(const char *name, const char *notice)
{
	zkw_writer *w;
	zkw_reader r;
	zkw_snapshot m;
	char why[512], buf[8192];
	ssize_t n;

	die_of_faults();
	if (zkw_writer_open(&w, name, &(zkw_writer_options){.capacity = 4096, .group = (gid_t)-1}, why,
	                    sizeof(why)) != 0) {
		fprintf(stderr, "adopt: %s\n", why);
		return 20;
	}
	if (!strstr(zkw_writer_notice(w), "dropped") || !strstr(zkw_writer_notice(w), notice)) {
		fprintf(stderr, "adopt: notice \"%s\" does not name \"%s\"\n", zkw_writer_notice(w), notice);
		return 21;
	}
	if (zkw_reader_open(&r, name) != 0)
		return 22;
	/* The dropped snapshot reads as honest empty content, a change. */
	n = zkw_reader_read(&r, &m, buf, sizeof(buf));
	if (n != 0 || m.valid || m.generation != 3 || m.content_gen != 3 || m.pointer[0] || m.version != -1 ||
	    !strstr(m.error, "restarted")) {
		fprintf(stderr,
		        "adopt: read %zd gen %llu content_gen %llu valid %d pointer \"%s\" error \"%s\"\n", n,
		        (unsigned long long)m.generation, (unsigned long long)m.content_gen, m.valid,
		        m.pointer, m.error);
		return 23;
	}
	/* A second keep_content publication keeps that, and fresh content
	 * goes through. */
	zkw_publication keep = {.keep_content = true, .error = "still connecting"};
	zkw_publication fresh = {
	        .valid = true, .connected = true, .content = "fresh", .len = 5, .content_serial = 1};
	if (zkw_writer_publish(w, &keep) != 0 || zkw_reader_read(&r, &m, buf, sizeof(buf)) != 0 ||
	    m.content_gen != 3)
		return 24;
	if (zkw_writer_publish(w, &fresh) != 0 || zkw_reader_read(&r, &m, buf, sizeof(buf)) != 5 ||
	    memcmp(buf, "fresh", 5) != 0 || !m.valid || m.content_gen != 5)
		return 25;
	zkw_reader_close(&r);
	zkw_writer_close(w, false);
	return 0;
}

static void test_adopting_hostile_lengths_never_crashes_the_writer(void **state)
{
	const struct hostile_case cases[] = {
	        {"pointer_len 4e9", offsetof(struct zkw_slot, pointer_len), W32, 4000000000u,
	         "pointer length"},
	        {"len 2^40", offsetof(struct zkw_slot, len), W64, 1ull << 40, "content length"},
	        {"len capacity + 1", offsetof(struct zkw_slot, len), W64, 4097, "content length"},
	        {"error_len 2^32 - 1", offsetof(struct zkw_slot, error_len), W32, UINT32_MAX, "error length"},
	        {"odd seq", offsetof(struct zkw_slot, seq), W64, 7, "odd"},
	        {"slot generation", offsetof(struct zkw_slot, generation), W64, 12345, "holds generation"},
	        {"content_gen ahead", offsetof(struct zkw_slot, content_gen), W64, 1ull << 50,
	         "content generation"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *name = new_name();
		zkw_writer *w = segtest_open_writer(name, 4096);
		uint8_t *base, *field;
		size_t len;
		pid_t pid;
		int status;

		publish(w, true, "last good content", 1);
		publish(w, true, "last good content", 2); /* generation 2 is published */
		zkw_writer_close(w, false);
		base = map_rw(name, &len);
		field = (uint8_t *)slot_at(base, 4096, 2) + cases[i].offset;
		if (cases[i].width == W64)
			memcpy(field, &cases[i].value, 8);
		else
			memcpy(field, &(uint32_t){(uint32_t)cases[i].value}, 4);
		munmap(base, len);

		pid = segtest_fork();
		if (pid == 0)
			_exit(adopt_hostile(name, cases[i].notice));
		status = proc_reap_pid(pid, WAIT_MS);
		if (status == -1 || WIFSIGNALED(status) || WEXITSTATUS(status) != 0)
			fail_msg("%s: the writer adopting it %s %d", cases[i].what,
			         status == -1          ? "hung, killed"
			         : WIFSIGNALED(status) ? "died of signal"
			                               : "failed at stage",
			         status == -1          ? 0
			         : WIFSIGNALED(status) ? WTERMSIG(status)
			                               : WEXITSTATUS(status));
	}

	/* A generation no writer can have reached: refused, named. */
	const char *name = new_name();
	zkw_writer *w = segtest_open_writer(name, 4096);
	char why[512];
	size_t len;

	publish(w, true, "x", 1);
	zkw_writer_close(w, false);
	uint8_t *base = map_rw(name, &len);
	((struct zkw_segment_header *)(void *)base)->hot.generation = 1ull << 63;
	munmap(base, len);
	assert_int_equal(zkw_writer_open(&w, name,
	                                 &(zkw_writer_options){.capacity = 4096, .group = (gid_t)-1}, why,
	                                 sizeof(why)),
	                 -EEXIST);
	expect_contains(why, "generation", "absurd generation");
}

/* A segment group or others could write (an older broker's --mode 0666) is
 * replaced, not adopted: whoever opened it for writing keeps a descriptor
 * of the old object only, and can no longer reach the writer. */
static void test_group_writable_segment_is_replaced_not_adopted(void **state)
{
	const char *name = new_name();
	zkw_writer *w = segtest_open_writer(name, 4096);
	int to_attacker[2], from_attacker[2], to_writer[2], from_writer[2];
	pid_t attacker, writer;
	char path[128], buf[64];
	struct stat st;
	zkw_reader r;
	zkw_snapshot m;

	(void)state;
	need_root();
	publish(w, true, "good", 1);
	zkw_writer_close(w, false);
	chown_segment(name, 0, 0666);
	assert_int_equal(pipe(to_attacker), 0);
	assert_int_equal(pipe(from_attacker), 0);
	assert_int_equal(pipe(to_writer), 0);
	assert_int_equal(pipe(from_writer), 0);

	/* Another user opens it read-write while it is 0666. */
	attacker = segtest_fork();
	if (attacker == 0) {
		int fd;
		struct stat ast;
		uint8_t *map;

		if (!become_nobody() || (fd = shm_open(name, O_RDWR, 0)) < 0 || fstat(fd, &ast) < 0)
			_exit(10);
		map = mmap(NULL, (size_t)ast.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (map == MAP_FAILED)
			_exit(11);
		segtest_send_byte(from_attacker[1], 'o');
		if (segtest_recv_byte(to_attacker[0], WAIT_MS) != 'g')
			_exit(12);
		/* Hostile lengths into both slots of what it can reach. */
		for (uint64_t g = 0; g < 2; g++) {
			struct zkw_slot *s = slot_at(map, 4096, g);
			s->len = 1ull << 40;
			s->pointer_len = 4000000000u;
		}
		segtest_send_byte(from_attacker[1], 'w');
		if (segtest_recv_byte(to_attacker[0], WAIT_MS) != 't')
			_exit(13);
		munmap(map, (size_t)ast.st_size);
		if (ftruncate(fd, 0) < 0) /* what would SIGBUS a writer still using it */
			_exit(14);
		segtest_send_byte(from_attacker[1], 'T');
		for (;;)
			pause();
	}
	if (segtest_recv_byte(from_attacker[0], WAIT_MS) != 'o')
		fail_msg("the attacker could not open the 0666 segment read-write");

	/* The writer, in a child so that a crash fails the test cleanly. */
	writer = segtest_fork();
	if (writer == 0) {
		zkw_writer *cw;
		char why[512];
		zkw_publication keep = {.keep_content = true, .error = "connecting"};

		die_of_faults();
		if (zkw_writer_open(&cw, name, &(zkw_writer_options){.capacity = 4096, .group = (gid_t)-1},
		                    why, sizeof(why)) != 0) {
			fprintf(stderr, "writer: %s\n", why);
			_exit(20);
		}
		segtest_send_byte(from_writer[1], 'o');
		while (segtest_recv_byte(to_writer[0], WAIT_MS) == 'p') {
			if (zkw_writer_publish(cw, &keep) != 0)
				_exit(22);
			segtest_send_byte(from_writer[1], 'P');
		}
		if (!strstr(zkw_writer_notice(cw), "writable by group or others")) {
			fprintf(stderr, "writer: notice \"%s\"\n", zkw_writer_notice(cw));
			_exit(21);
		}
		zkw_writer_close(cw, false);
		_exit(0);
	}
	if (segtest_recv_byte(from_writer[0], WAIT_MS) != 'o') {
		segtest_expect_exit_ok(writer, WAIT_MS, "writer adopting a 0666 segment");
		fail_msg("writer did not open");
	}
	snprintf(path, sizeof(path), "/dev/shm%s", name);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);

	/* The attacker writes hostile lengths, then truncates, through its
	 * descriptor: the writer keeps publishing the last good content. */
	segtest_send_byte(to_attacker[1], 'g');
	assert_int_equal(segtest_recv_byte(from_attacker[0], WAIT_MS), 'w');
	segtest_send_byte(to_writer[1], 'p');
	if (segtest_recv_byte(from_writer[0], WAIT_MS) != 'P') {
		segtest_expect_exit_ok(writer, WAIT_MS, "writer after the attacker's write");
		fail_msg("writer did not publish");
	}
	segtest_send_byte(to_attacker[1], 't');
	assert_int_equal(segtest_recv_byte(from_attacker[0], WAIT_MS), 'T');
	segtest_send_byte(to_writer[1], 'p');
	if (segtest_recv_byte(from_writer[0], WAIT_MS) != 'P') {
		segtest_expect_exit_ok(writer, WAIT_MS, "writer after the attacker's truncation");
		fail_msg("writer did not publish");
	}
	segtest_open_reader(&r, name);
	assert_int_equal(segtest_read_text(&r, &m, buf, sizeof(buf)), 4);
	assert_string_equal(buf, "good");
	assert_false(m.valid);
	zkw_reader_close(&r);
	segtest_send_byte(to_writer[1], 'q');
	segtest_expect_exit_ok(writer, WAIT_MS, "writer");
	proc_kill_pids(&attacker, 1);
	close(to_attacker[0]);
	close(to_attacker[1]);
	close(from_attacker[0]);
	close(from_attacker[1]);
	close(to_writer[0]);
	close(to_writer[1]);
	close(from_writer[0]);
	close(from_writer[1]);
}

/* ---- (e) /dev/shm too small ---------------------------------------------- */

static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

/* In a child with its own mount namespace and a 256 KiB tmpfs on
 * /dev/shm. Exit 77: the kernel refuses the namespace or the mount. */
static int small_shm_child(void)
{
	static char big[1 << 20];
	zkw_writer_options opt = {.capacity = 1 << 20, .group = (gid_t)-1};
	zkw_writer *w = NULL;
	zkw_reader r;
	char why[512] = "", want[64];
	int err;

	die_of_faults();
	if (unshare(CLONE_NEWNS) < 0) {
		fprintf(stderr, "unshare(CLONE_NEWNS): %s\n", strerror(errno));
		return 77;
	}
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("zkw-test-small", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=256k,mode=1777") < 0) {
		fprintf(stderr, "mount: %s\n", strerror(errno));
		return 77;
	}
	err = zkw_writer_open(&w, "/zkw.test.small", &opt, why, sizeof(why));
	if (err == 0) {
		/* The old behaviour: only sized, so this dies of SIGBUS. */
		zkw_publication p = {.valid = true, .connected = true, .content = big, .len = sizeof(big)};

		memset(big, 'x', sizeof(big));
		zkw_writer_publish(w, &p);
		return 10;
	}
	snprintf(want, sizeof(want), "needs %llu bytes",
	         (unsigned long long)zkw_segment_size(1 << 20, ZKW_SLOT_COUNT));
	if (err != -ENOSPC || !strstr(why, want) || !strstr(why, "free") || !strstr(why, "/dev/shm")) {
		fprintf(stderr, "small /dev/shm: %d \"%s\"\n", err, why);
		return 11;
	}
	if (count_entries("/dev/shm") != 0) { /* nothing left behind */
		fprintf(stderr, "small /dev/shm: %d entries left\n", count_entries("/dev/shm"));
		return 12;
	}
	/* What fits, works, to the last byte. */
	opt.capacity = 64 * 1024;
	if (zkw_writer_open(&w, "/zkw.test.small", &opt, why, sizeof(why)) != 0) {
		fprintf(stderr, "small /dev/shm, 64 KiB: %s\n", why);
		return 13;
	}
	zkw_publication p = {.valid = true, .connected = true, .content = big, .len = opt.capacity};
	memset(big, 'y', sizeof(big));
	if (zkw_writer_publish(w, &p) != 0 || zkw_writer_publish(w, &p) != 0)
		return 14;
	if (zkw_reader_open(&r, "/zkw.test.small") != 0 ||
	    zkw_reader_read(&r, NULL, big, sizeof(big)) != 65536)
		return 15;
	zkw_reader_close(&r);
	zkw_writer_close(w, true);
	return 0;
}

static void test_too_little_shm_is_a_clear_error_at_open(void **state)
{
	pid_t pid;
	int status;

	(void)state;
	pid = segtest_fork();
	if (pid == 0)
		_exit(small_shm_child());
	status = proc_reap_pid(pid, 30000);
	if (status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 77) {
		print_message(
		        "the kernel refuses a private mount namespace or a tmpfs mount here: skipped\n");
		skip();
	}
	if (status == -1)
		fail_msg("small /dev/shm: child hung");
	if (WIFSIGNALED(status))
		fail_msg("small /dev/shm: the writer died of signal %d (%s)", WTERMSIG(status),
		         strsignal(WTERMSIG(status)));
	if (WEXITSTATUS(status) != 0)
		fail_msg("small /dev/shm: stage %d failed (10: a segment larger than /dev/shm was accepted)",
		         WEXITSTATUS(status));
}

/* A FIFO planted under a segment's name (by its owner, or by root) must
 * not hang a reader: the open never blocks, and anything but a regular
 * file is refused. A child does the open, so a hang is a bounded failure. */
static void test_fifo_under_a_segment_name_does_not_hang_a_reader(void **state)
{
	const char *name = new_name();
	char path[128];
	pid_t pid;
	int status;

	(void)state;
	snprintf(path, sizeof(path), "/dev/shm%s", name);
	assert_int_equal(mkfifo(path, 0600), 0);
	pid = segtest_fork();
	if (pid == 0) {
		zkw_reader r;
		int rc = zkw_reader_open(&r, name);

		_exit(rc == -EBADMSG && strstr(r.why, "not a shared-memory segment") ? 0 : 1);
	}
	status = proc_reap_pid(pid, WAIT_MS);
	unlink(path);
	if (status == -1)
		fail_msg("zkw_reader_open on a FIFO did not return within %d ms", WAIT_MS);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_teardown(test_read_lock_neither_fakes_liveness_nor_blocks_a_writer,
	                                  remove_names),
	        cmocka_unit_test_teardown(test_restart_keeps_the_segment_unless_a_reader_locks_it,
	                                  remove_names),
	        cmocka_unit_test_teardown(test_broker_lock_file_of_another_user_is_refused, remove_names),
	        cmocka_unit_test_teardown(test_readers_trust_only_known_owners, remove_names),
	        cmocka_unit_test_teardown(test_writer_refuses_group_or_other_write_modes, remove_names),
	        cmocka_unit_test_teardown(test_adopting_hostile_lengths_never_crashes_the_writer,
	                                  remove_names),
	        cmocka_unit_test_teardown(test_group_writable_segment_is_replaced_not_adopted, remove_names),
	        cmocka_unit_test_teardown(test_too_little_shm_is_a_clear_error_at_open, remove_names),
	        cmocka_unit_test_teardown(test_fifo_under_a_segment_name_does_not_hang_a_reader, remove_names),
	};

	return cmocka_run_group_tests(tests, NULL, remove_names);
}
