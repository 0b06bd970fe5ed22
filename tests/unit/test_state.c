/* SPDX-License-Identifier: Apache-2.0 */
/* test_state.c - the state directory (broker/publish/state.[ch]) without
 * ZooKeeper: what is loaded is a snapshot that was saved, whole, for that
 * watch, or a refusal with its reason - never a torn, corrupt or foreign
 * one:
 *
 *   - round trip of every field, and what a save refuses;
 *   - a file of another watch, every single-byte corruption and every
 *     truncation of a file, a file of a future format: refused;
 *   - a process SIGKILLed at random moments of its save loop, hundreds of
 *     times: the file holds its last completed snapshot or the next one;
 *   - a full disk (a small tmpfs in a private mount namespace): saves fail
 *     with ENOSPC, reported once, the old file stays, and saving works
 *     again once there is room;
 *   - a storm of 10,000 saves of one watch while the disk is stuck: no save
 *     waits, two writes in all, the last snapshot on disk;
 *   - hostile directories and files: refused, symbolic links not followed;
 *   - remove, close and the temporary files of dead processes.
 *
 * Every test works in a directory of its own under $ZKW_TEST_RUNDIR (else
 * $TMPDIR, else /tmp), removed by the teardown. Children never call
 * cmocka: they report through their exit status and a pipe.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include <cmocka.h>

#include <zkw/segment.h>

#include "itest.h"
#include "proc.h"
#include "publish/state.h"

#define NOBODY           65534
#define WAIT_MS          20000 /* bound of every wait for an event */
#define MAX_CONTENT      (64u * 1024u)
#define CRASH_ROUNDS     300
#define CRASH_BUDGET_S   15 /* the crash loop stops there even before CRASH_ROUNDS */
#define CRASH_MIN_ROUNDS 50
#define STORM            10000

/* The file layout of docs/design.md, "The state directory". */
#define FILE_FORMAT_OFFSET 8
#define FILE_CHECKSUM_LEN  8

/* ---- fixture: a directory per test ------------------------------------- */

static char base[256]; /* the test's directory */
static char dir[1024]; /* base/state: the store's, created by the open */

static int make_base(void **state)
{
	const char *root = getenv("ZKW_TEST_RUNDIR");

	(void)state;
	if (!root || !*root)
		root = getenv("TMPDIR");
	if (!root || !*root)
		root = "/tmp";
	snprintf(base, sizeof(base), "%s/zkw-state.%d.XXXXXX", root, (int)getpid());
	if (!mkdtemp(base))
		return -1;
	snprintf(dir, sizeof(dir), "%s/state", base);
	return 0;
}

static int remove_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)type;
	(void)ftw;
	remove(path);
	return 0;
}

static int remove_base(void **state)
{
	(void)state;
	nftw(base, remove_one, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

/* ---- snapshots derived from their generation ----------------------------- */

static uint8_t content_buf[MAX_CONTENT];
static char pointer_buf[64];

static size_t content_len(uint64_t g, size_t max)
{
	return 1000 + (size_t)((g * 7919u) % (max - 1000));
}

static uint8_t content_byte(uint64_t g, size_t i)
{
	return (uint8_t)(g * 131u + i * 7u + (i >> 8));
}

/* The snapshot of generation g (content up to max bytes). */
static zkw_state_snapshot snapshot_of(uint64_t g, size_t max)
{
	zkw_state_snapshot s = {0};

	s.len = content_len(g, max);
	for (size_t i = 0; i < s.len; i++)
		content_buf[i] = content_byte(g, i);
	s.content = content_buf;
	snprintf(pointer_buf, sizeof(pointer_buf), "/target/%llu", (unsigned long long)g);
	s.pointer = pointer_buf;
	s.version = (int64_t)g;
	s.mzxid = (int64_t)(g * 3 + 1);
	s.generation = g;
	s.content_gen = g - g / 3;
	s.changed_ns = g * 1000;
	s.confirmed_ns = g * 2000;
	s.saved_ns = 1700000000000000000ull + g;
	return s;
}

/* Is snap exactly snapshot_of(g, max)? */
static bool is_snapshot_of(const zkw_state_snapshot *s, uint64_t g, size_t max)
{
	char pointer[64];
	const uint8_t *c = s->content;

	snprintf(pointer, sizeof(pointer), "/target/%llu", (unsigned long long)g);
	if (s->generation != g || s->len != content_len(g, max) || strcmp(s->pointer, pointer) != 0 ||
	    s->version != (int64_t)g || s->mzxid != (int64_t)(g * 3 + 1) || s->content_gen != g - g / 3 ||
	    s->changed_ns != g * 1000 || s->confirmed_ns != g * 2000 ||
	    s->saved_ns != 1700000000000000000ull + g)
		return false;
	for (size_t i = 0; i < s->len; i++)
		if (c[i] != content_byte(g, i))
			return false;
	return true;
}

static const zkw_state_key key_a = {.path = "/app/config", .pointer = false, .shm_name = "/zkw.app.config"};

static zkw_state *open_store(const zkw_state_options *opt)
{
	zkw_state_options dflt = {.max_content = MAX_CONTENT};
	zkw_state *st = NULL;
	char why[512] = "";
	int err = zkw_state_open(&st, dir, opt ? opt : &dflt, why, sizeof(why));

	if (err)
		fail_msg("zkw_state_open(%s): %d %s", dir, err, why);
	return st;
}

static void *load_buffer(zkw_state *st)
{
	void *buf = malloc(zkw_state_load_size(st));

	assert_non_null(buf);
	return buf;
}

static void file_path(char *out, size_t cap, const zkw_state_key *key)
{
	char name[ZKW_STATE_FILE_NAME_MAX];

	assert_int_equal(zkw_state_file_name(key, name, sizeof(name)), 0);
	assert_true((size_t)snprintf(out, cap, "%s/%s", dir, name) < cap);
}

static uint8_t *read_file(const char *path, size_t *len)
{
	struct stat sb;
	uint8_t *buf;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &sb), 0);
	buf = malloc((size_t)sb.st_size + 1);
	assert_non_null(buf);
	assert_int_equal(pread(fd, buf, (size_t)sb.st_size, 0), sb.st_size);
	close(fd);
	*len = (size_t)sb.st_size;
	return buf;
}

static void write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}

/* Entries of a directory, "." and ".." aside; those starting with prefix
 * when given. */
static int count_entries(const char *path, const char *prefix)
{
	DIR *d = opendir(path);
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
		    (!prefix || strncmp(e->d_name, prefix, strlen(prefix)) == 0))
			n++;
	closedir(d);
	return n;
}

/* ---- round trip ------------------------------------------------------------ */

static void test_round_trip(void **state)
{
	const zkw_state_key ptr = {
	        .path = "/app/pointer", .pointer = true, .shm_name = "/zkw.app.pointer@pointer"};
	const zkw_state_key empty = {.path = "/empty", .shm_name = "/zkw.empty"};
	zkw_state_snapshot s, got;
	zkw_state_stats stats;
	zkw_state *st;
	struct stat sb;
	char why[512];
	void *buf;
	uint64_t before, after;

	(void)state;
	st = open_store(NULL);
	assert_int_equal(stat(dir, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0700); /* created, one level */
	buf = load_buffer(st);
	assert_int_equal(zkw_state_load(st, &key_a, &got, buf, zkw_state_load_size(st), why, sizeof(why)),
	                 -ENOENT);

	s = snapshot_of(7, MAX_CONTENT);
	assert_int_equal(zkw_state_save(st, &key_a, &s), 0);
	s = snapshot_of(8, MAX_CONTENT);
	assert_int_equal(zkw_state_save(st, &ptr, &s), 0);
	/* Empty content, no pointer, saved "now". */
	memset(&s, 0, sizeof(s));
	s.version = -1;
	s.generation = 1;
	s.content_gen = 1;
	before = zkw__now_ns(CLOCK_REALTIME);
	assert_int_equal(zkw_state_save(st, &empty, &s), 0);
	after = zkw__now_ns(CLOCK_REALTIME);
	assert_int_equal(zkw_state_flush(st), 0);

	assert_int_equal(zkw_state_load(st, &key_a, &got, buf, zkw_state_load_size(st), why, sizeof(why)), 0);
	assert_true(is_snapshot_of(&got, 7, MAX_CONTENT));
	assert_int_equal(zkw_state_load(st, &ptr, &got, buf, zkw_state_load_size(st), why, sizeof(why)), 0);
	assert_true(is_snapshot_of(&got, 8, MAX_CONTENT));
	assert_int_equal(zkw_state_load(st, &empty, &got, buf, zkw_state_load_size(st), why, sizeof(why)), 0);
	assert_int_equal(got.len, 0);
	assert_string_equal(got.pointer, "");
	assert_int_equal(got.version, -1);
	assert_true(got.saved_ns >= before && got.saved_ns <= after);
	/* The buffer is checked, not overrun. */
	assert_int_equal(zkw_state_load(st, &key_a, &got, buf, 100, why, sizeof(why)), -ENOBUFS);

	/* What a save refuses, at once. */
	s = snapshot_of(9, MAX_CONTENT);
	s.len = MAX_CONTENT + 1;
	assert_int_equal(zkw_state_save(st, &key_a, &s), -EMSGSIZE);
	s = snapshot_of(9, MAX_CONTENT);
	s.content_gen = s.generation + 1;
	assert_int_equal(zkw_state_save(st, &key_a, &s), -EINVAL);
	s = snapshot_of(9, MAX_CONTENT);
	s.generation = s.content_gen = ZKW_GENERATION_MAX + 1;
	assert_int_equal(zkw_state_save(st, &key_a, &s), -EINVAL);
	s = snapshot_of(9, MAX_CONTENT);
	{
		static char long_text[ZKW_WATCH_PATH_MAX + 1];
		zkw_state_key bad = key_a;

		memset(long_text, 'x', ZKW_WATCH_PATH_MAX);
		long_text[0] = '/';
		bad.path = long_text;
		assert_int_equal(zkw_state_save(st, &bad, &s), -EINVAL);
		bad = key_a;
		bad.shm_name = "zkw.no.slash";
		assert_int_equal(zkw_state_save(st, &bad, &s), -EINVAL);
		bad.shm_name = "/zkw/two";
		assert_int_equal(zkw_state_save(st, &bad, &s), -EINVAL);
		bad.shm_name = key_a.shm_name;
		bad.path = "";
		assert_int_equal(zkw_state_save(st, &bad, &s), -EINVAL);
		s.pointer = long_text + ZKW_WATCH_PATH_MAX - ZKW_POINTER_MAX; /* ZKW_POINTER_MAX bytes */
		assert_int_equal(zkw_state_save(st, &key_a, &s), -EINVAL);
	}
	zkw_state_get_stats(st, &stats);
	assert_int_equal(stats.saves, 3);
	assert_int_equal(stats.writes, 3);
	assert_int_equal(stats.failures, 0);
	assert_int_equal(stats.last_error, 0);
	assert_int_equal(zkw_state_close(st), 0);

	/* Another store on the same directory finds them. */
	st = open_store(NULL);
	assert_int_equal(zkw_state_load(st, &ptr, &got, buf, zkw_state_load_size(st), why, sizeof(why)), 0);
	assert_true(is_snapshot_of(&got, 8, MAX_CONTENT));
	assert_int_equal(zkw_state_close(st), 0);
	/* A store with a smaller maximum refuses the larger content. */
	{
		zkw_state_options small = {.max_content = 2000};

		st = open_store(&small);
		assert_int_equal(zkw_state_load(st, &ptr, &got, buf, MAX_CONTENT * 2, why, sizeof(why)),
		                 -EMSGSIZE);
		assert_int_equal(zkw_state_close(st), 0);
	}
	free(buf);
	assert_int_equal(count_entries(dir, NULL), 3);
}

/* ---- refused files ----------------------------------------------------------- */

/* The file of key_a, saved with a small snapshot; its bytes in *image. */
static zkw_state *saved_small(uint8_t **image, size_t *len, char *path, size_t cap)
{
	zkw_state *st = open_store(NULL);
	zkw_state_snapshot s = snapshot_of(5, 1100); /* 1000..1099 bytes */

	s.len = 64; /* a short file: every byte of it is tried */
	assert_int_equal(zkw_state_save(st, &key_a, &s), 0);
	assert_int_equal(zkw_state_flush(st), 0);
	file_path(path, cap, &key_a);
	*image = read_file(path, len);
	return st;
}

static void test_file_of_another_watch_refused(void **state)
{
	static const zkw_state_key others[] = {
	        {.path = "/app/other", .pointer = false, .shm_name = "/zkw.app.config"},
	        {.path = "/app/config", .pointer = true, .shm_name = "/zkw.app.config"},
	        {.path = "/app/config", .pointer = false, .shm_name = "/zkw.app.config2"},
	};
	char path[1024], other[1024], why[512];
	zkw_state_snapshot got;
	uint8_t *image;
	size_t len;
	void *buf;
	zkw_state *st;

	(void)state;
	st = saved_small(&image, &len, path, sizeof(path));
	buf = load_buffer(st);
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
		file_path(other, sizeof(other), &others[i]);
		assert_string_not_equal(other, path); /* each has a file of its own */
		write_file(other, image, len);        /* key_a's file under its name */
		why[0] = '\0';
		assert_int_equal(
		        zkw_state_load(st, &others[i], &got, buf, zkw_state_load_size(st), why, sizeof(why)),
		        -EBADMSG);
		assert_non_null(strstr(why, "another watch"));
	}
	assert_int_equal(zkw_state_load(st, &key_a, &got, buf, zkw_state_load_size(st), why, sizeof(why)), 0);
	free(buf);
	free(image);
	assert_int_equal(zkw_state_close(st), 0);
}

static void test_every_corruption_refused(void **state)
{
	char path[1024], why[512];
	zkw_state_snapshot got;
	uint8_t *image, orig, v;
	size_t len, refused = 0;
	void *buf;
	zkw_state *st;
	int fd, err;

	(void)state;
	st = saved_small(&image, &len, path, sizeof(path));
	buf = load_buffer(st);
	fd = open(path, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	/* Every other value of every byte. */
	for (size_t off = 0; off < len; off++) {
		orig = image[off];
		for (unsigned x = 1; x < 256; x++) {
			v = (uint8_t)(orig ^ x);
			assert_int_equal(pwrite(fd, &v, 1, (off_t)off), 1);
			why[0] = '\0';
			err = zkw_state_load(st, &key_a, &got, buf, zkw_state_load_size(st), why,
			                     sizeof(why));
			if (err >= 0 || err == -ENOENT || !why[0])
				fail_msg("byte %zu of %zu set to 0x%02x (was 0x%02x): load %d \"%s\"", off,
				         len, v, orig, err, why);
			refused++;
		}
		assert_int_equal(pwrite(fd, &orig, 1, (off_t)off), 1);
	}
	/* Every truncation, and one byte more. */
	for (size_t n = 0; n <= len; n++) {
		assert_int_equal(ftruncate(fd, (off_t)(n == len ? len + 1 : n)), 0);
		why[0] = '\0';
		err = zkw_state_load(st, &key_a, &got, buf, zkw_state_load_size(st), why, sizeof(why));
		if (err >= 0 || err == -ENOENT || !why[0])
			fail_msg("file cut to %zu of %zu bytes: load %d \"%s\"", n, len, err, why);
		assert_int_equal(pwrite(fd, image, len, 0), (ssize_t)len);
		refused++;
	}
	assert_int_equal(ftruncate(fd, (off_t)len), 0);
	close(fd);
	/* The untouched file still loads: the loop above tried a good one. */
	assert_int_equal(zkw_state_load(st, &key_a, &got, buf, zkw_state_load_size(st), why, sizeof(why)), 0);
	assert_int_equal(got.len, 64);
	print_message("%zu corrupt or torn versions of a %zu-byte file refused\n", refused, len);
	free(buf);
	free(image);
	assert_int_equal(zkw_state_close(st), 0);
}

/* A file whose checksum is right but whose content is not what this
 * broker reads: a future format, a foreign magic, a forged field. */
static void reseal(uint8_t *image, size_t len)
{
	uint64_t sum = XXH3_64bits(image, len - FILE_CHECKSUM_LEN);

	memcpy(image + len - FILE_CHECKSUM_LEN, &sum, sizeof(sum));
}

static void test_future_format_refused(void **state)
{
	char path[1024], why[512];
	zkw_state_snapshot got;
	uint8_t *image, *copy;
	uint32_t format = 2;
	uint64_t gen;
	size_t len;
	void *buf;
	zkw_state *st;

	(void)state;
	st = saved_small(&image, &len, path, sizeof(path));
	buf = load_buffer(st);
	copy = malloc(len);
	assert_non_null(copy);

	memcpy(copy, image, len);
	memcpy(copy + FILE_FORMAT_OFFSET, &format, sizeof(format));
	reseal(copy, len);
	write_file(path, copy, len);
	assert_int_equal(zkw_state_load(st, &key_a, &got, buf, zkw_state_load_size(st), why, sizeof(why)),
	                 -EPROTO);
	assert_non_null(strstr(why, "format 2"));

	memcpy(copy, image, len);
	copy[1] ^= 0x20; /* "\x7fzKW...": not our magic */
	reseal(copy, len);
	write_file(path, copy, len);
	assert_int_equal(zkw_state_load(st, &key_a, &got, buf, zkw_state_load_size(st), why, sizeof(why)),
	                 -EBADMSG);
	assert_non_null(strstr(why, "magic"));

	memcpy(copy, image, len);
	gen = ZKW_GENERATION_MAX + 1; /* generation at 56 */
	memcpy(copy + 56, &gen, sizeof(gen));
	reseal(copy, len);
	write_file(path, copy, len);
	assert_int_equal(zkw_state_load(st, &key_a, &got, buf, zkw_state_load_size(st), why, sizeof(why)),
	                 -EBADMSG);

	write_file(path, image, len);
	assert_int_equal(zkw_state_load(st, &key_a, &got, buf, zkw_state_load_size(st), why, sizeof(why)), 0);
	free(copy);
	free(buf);
	free(image);
	assert_int_equal(zkw_state_close(st), 0);
}

/* ---- crash during save ---------------------------------------------------------- */

/* The child: continue from what is on disk, then save generation after
 * generation, each flushed, and report each completed one (8 bytes) on
 * fd. Runs until killed. */
static int crash_child(int fd)
{
	zkw_state_options opt = {.max_content = MAX_CONTENT};
	zkw_state_snapshot s;
	zkw_state *st = NULL;
	char why[512];
	void *buf;
	uint64_t g = 0;
	int err;

	if (zkw_state_open(&st, dir, &opt, why, sizeof(why)) != 0) {
		fprintf(stderr, "child: open: %s\n", why);
		return 2;
	}
	buf = malloc(zkw_state_load_size(st));
	if (!buf)
		return 2;
	err = zkw_state_load(st, &key_a, &s, buf, zkw_state_load_size(st), why, sizeof(why));
	if (err == 0)
		g = s.generation;
	else if (err != -ENOENT) {
		fprintf(stderr, "child: load: %s\n", why);
		return 3;
	}
	for (;;) {
		g++;
		s = snapshot_of(g, MAX_CONTENT);
		if (zkw_state_save(st, &key_a, &s) != 0 || (err = zkw_state_flush(st)) != 0) {
			fprintf(stderr, "child: save %llu: %d\n", (unsigned long long)g, err);
			return 4;
		}
		if (write(fd, &g, sizeof(g)) != (ssize_t)sizeof(g))
			return 5;
	}
}

/* Wait (bounded) for one report of the child; false when none came. */
static bool read_report(int fd, uint64_t *g, int timeout_ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};

	return poll(&p, 1, timeout_ms) == 1 && read(fd, g, sizeof(*g)) == (ssize_t)sizeof(*g);
}

static void test_crash_during_save(void **state)
{
	unsigned seed = (unsigned)time(NULL);
	uint64_t last = 0, g, start_ns = zkw__now_ns(CLOCK_MONOTONIC);
	int rounds = 0, ahead = 0, temps = 0;
	zkw_state_snapshot got;
	char why[512];
	void *buf = NULL;

	(void)state;
	if (getenv("ZKW_STATE_CRASH_SEED"))
		seed = (unsigned)strtoul(getenv("ZKW_STATE_CRASH_SEED"), NULL, 0);
	for (; rounds < CRASH_ROUNDS; rounds++) {
		zkw_state *st;
		int report[2], status, err;
		pid_t pid;

		if (zkw__now_ns(CLOCK_MONOTONIC) - start_ns > CRASH_BUDGET_S * 1000000000ull)
			break;
		assert_int_equal(pipe2(report, O_CLOEXEC), 0);
		pid = proc_fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(report[0]);
			_exit(crash_child(report[1]));
		}
		close(report[1]);
		/* One completed save, so that the kill lands in the loop. */
		if (!read_report(report[0], &g, WAIT_MS)) {
			status = proc_reap_pid(pid, WAIT_MS);
			fail_msg("round %d: the child completed no save (status 0x%x)", rounds, status);
		}
		last = g;
		/* A random moment of the loop: this sleep picks it, it waits
		 * for nothing. */
		usleep((useconds_t)(rand_r(&seed) % 4000));
		kill(pid, SIGKILL);
		status = proc_reap_pid(pid, WAIT_MS);
		if (status == -1 || !WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
			fail_msg("round %d: the child ended by itself (status 0x%x)", rounds, status);
		while (read(report[0], &g, sizeof(g)) == (ssize_t)sizeof(g))
			last = g;
		close(report[0]);
		temps += count_entries(dir, ".zkws-tmp.");

		st = open_store(NULL);
		if (!buf)
			buf = load_buffer(st);
		why[0] = '\0';
		err = zkw_state_load(st, &key_a, &got, buf, zkw_state_load_size(st), why, sizeof(why));
		if (err != 0)
			fail_msg("round %d (seed %u): after a kill, the load fails: %d %s", rounds, seed, err,
			         why);
		if (got.generation != last && got.generation != last + 1)
			fail_msg("round %d (seed %u): generation %llu on disk, the last completed save was "
			         "%llu",
			         rounds, seed, (unsigned long long)got.generation, (unsigned long long)last);
		if (!is_snapshot_of(&got, got.generation, MAX_CONTENT))
			fail_msg("round %d (seed %u): generation %llu on disk is not what was saved", rounds,
			         seed, (unsigned long long)got.generation);
		ahead += got.generation == last + 1;
		assert_int_equal(zkw_state_close(st), 0);
	}
	free(buf);
	print_message("%d kills in %.1f s (seed %u): the last completed snapshot %d times, the one in "
	              "progress %d times; %d temporary files of killed savers removed\n",
	              rounds, (double)(zkw__now_ns(CLOCK_MONOTONIC) - start_ns) / 1e9, seed, rounds - ahead,
	              ahead, temps);
	if (rounds < CRASH_MIN_ROUNDS)
		fail_msg("only %d rounds in %d s", rounds, CRASH_BUDGET_S);
	/* The temporary files of the dead were removed by the opens. */
	assert_int_equal(count_entries(dir, NULL), 1);
}

/* ---- a full disk ------------------------------------------------------------------- */

struct error_log {
	int calls;
	int last;
	char why[512];
};

static void log_error(void *ctx, int err, const char *why)
{
	struct error_log *l = ctx;

	l->calls++;
	l->last = err;
	snprintf(l->why, sizeof(l->why), "%s", why);
}

/* In a child with its own mount namespace and a 256 KiB tmpfs holding the
 * state directory. Exit 77: the kernel refuses the namespace or the mount. */
static int full_disk_child(void)
{
	struct error_log log = {0};
	zkw_state_options opt = {.max_content = MAX_CONTENT,
	                         .on_error = log_error,
	                         .ctx = &log,
	                         .retry_ms = 1,
	                         .retry_max_ms = 5};
	static uint8_t chunk[4096];
	zkw_state_snapshot s, got;
	zkw_state_stats stats;
	zkw_state *st = NULL;
	char mnt[512], filler[600], why[512];
	void *buf;
	int fd, err;
	uint64_t g;

	if (unshare(CLONE_NEWNS) < 0)
		return 77;
	snprintf(mnt, sizeof(mnt), "%s/tmpfs", base);
	if (mkdir(mnt, 0700) < 0)
		return 2;
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("zkw-test-state", mnt, "tmpfs", MS_NOSUID | MS_NODEV, "size=256k,mode=0700") < 0)
		return 77;
	snprintf(dir, sizeof(dir), "%s/state", mnt);
	if (zkw_state_open(&st, dir, &opt, why, sizeof(why)) != 0) {
		fprintf(stderr, "open: %s\n", why);
		return 3;
	}
	buf = malloc(zkw_state_load_size(st));
	s = snapshot_of(1, MAX_CONTENT); /* about 8 KiB */
	if (!buf || zkw_state_save(st, &key_a, &s) != 0 || zkw_state_flush(st) != 0 || log.calls != 0)
		return 4;
	/* Fill the disk. */
	snprintf(filler, sizeof(filler), "%s/filler", mnt);
	fd = open(filler, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return 5;
	while (write(fd, chunk, sizeof(chunk)) > 0)
		;
	if (errno != ENOSPC)
		return 6;
	close(fd);
	/* Every save fails, the cause is reported once, the file stays. */
	for (g = 2; g <= 21; g++) {
		s = snapshot_of(g, MAX_CONTENT);
		if (zkw_state_save(st, &key_a, &s) != 0)
			return 7;
		err = zkw_state_flush(st);
		if (err != -ENOSPC) {
			fprintf(stderr, "save %llu on a full disk: %d\n", (unsigned long long)g, err);
			return 8;
		}
	}
	zkw_state_get_stats(st, &stats);
	if (log.calls != 1 || log.last != -ENOSPC || !strstr(log.why, "No space left") ||
	    !strstr(log.why, dir) || stats.failures < 20 || stats.last_error != -ENOSPC ||
	    stats.writes != 1) {
		fprintf(stderr, "reported %d times (%d \"%s\"), %llu failures, %llu writes\n", log.calls,
		        log.last, log.why, (unsigned long long)stats.failures,
		        (unsigned long long)stats.writes);
		return 9;
	}
	err = zkw_state_load(st, &key_a, &got, buf, zkw_state_load_size(st), why, sizeof(why));
	if (err != 0 || !is_snapshot_of(&got, 1, MAX_CONTENT)) {
		fprintf(stderr, "the old file after failed saves: %d %s\n", err, why);
		return 10;
	}
	if (count_entries(dir, NULL) != 1) /* no temporary file left behind */
		return 11;
	/* Room again: the pending snapshot (the last) is written. */
	if (unlink(filler) < 0)
		return 12;
	err = zkw_state_flush(st);
	if (err != 0 || log.calls != 2 || log.last != 0) {
		fprintf(stderr, "after freeing space: flush %d, reported %d times (last %d)\n", err,
		        log.calls, log.last);
		return 13;
	}
	err = zkw_state_load(st, &key_a, &got, buf, zkw_state_load_size(st), why, sizeof(why));
	if (err != 0 || !is_snapshot_of(&got, 21, MAX_CONTENT))
		return 14;
	/* And the saver goes on. */
	s = snapshot_of(22, MAX_CONTENT);
	if (zkw_state_save(st, &key_a, &s) != 0 || zkw_state_flush(st) != 0 ||
	    zkw_state_load(st, &key_a, &got, buf, zkw_state_load_size(st), why, sizeof(why)) != 0 ||
	    !is_snapshot_of(&got, 22, MAX_CONTENT) || log.calls != 2)
		return 15;
	free(buf);
	return zkw_state_close(st) == 0 ? 0 : 16;
}

static void test_full_disk(void **state)
{
	(void)state;
	itest_child_or_skip(full_disk_child, "a full disk", WAIT_MS);
}

/* ---- a storm while the disk is stuck ------------------------------------------------- */

static sem_t hook_entered, hook_release;
static int hook_calls; /* saver thread only, read after a flush */

static void stuck_first_write(void)
{
	struct timespec until;

	if (hook_calls++ != 0)
		return;
	sem_post(&hook_entered);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += WAIT_MS / 1000;
	sem_timedwait(&hook_release, &until);
}

static bool sem_wait_ms(sem_t *sem, int ms)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ms / 1000;
	while (sem_timedwait(sem, &until) < 0)
		if (errno != EINTR)
			return false;
	return true;
}

static void test_storm_coalesced(void **state)
{
	zkw_state_snapshot s, got;
	zkw_state_stats stats;
	uint64_t t0, slowest = 0;
	char why[512];
	zkw_state *st;
	void *buf;

	(void)state;
	sem_init(&hook_entered, 0, 0);
	sem_init(&hook_release, 0, 0);
	hook_calls = 0;
	zkw_state_write_hook = stuck_first_write;
	st = open_store(NULL);
	s = snapshot_of(1, 5000);
	assert_int_equal(zkw_state_save(st, &key_a, &s), 0);
	if (!sem_wait_ms(&hook_entered, WAIT_MS))
		fail_msg("the saver did not start writing within %d ms", WAIT_MS);
	/* The disk is "stuck" in the first write: every save still returns. */
	for (uint64_t g = 2; g <= STORM; g++) {
		s = snapshot_of(g, 5000);
		t0 = zkw__now_ns(CLOCK_MONOTONIC);
		assert_int_equal(zkw_state_save(st, &key_a, &s), 0);
		t0 = zkw__now_ns(CLOCK_MONOTONIC) - t0;
		slowest = t0 > slowest ? t0 : slowest;
	}
	zkw_state_get_stats(st, &stats);
	assert_int_equal(stats.writes, 0); /* still stuck */
	sem_post(&hook_release);
	assert_int_equal(zkw_state_flush(st), 0);
	zkw_state_get_stats(st, &stats);
	assert_int_equal(stats.saves, STORM);
	assert_int_equal(hook_calls, 2); /* the stuck one, then the last */
	assert_int_equal(stats.writes, 2);
	assert_int_equal(stats.coalesced, STORM - 2);
	assert_int_equal(stats.pending, 0);
	buf = load_buffer(st);
	assert_int_equal(zkw_state_load(st, &key_a, &got, buf, zkw_state_load_size(st), why, sizeof(why)), 0);
	assert_true(is_snapshot_of(&got, STORM, 5000));
	print_message("%d saves of one watch during a stuck write: %llu writes, slowest save %.1f us\n",
	              STORM, (unsigned long long)stats.writes, (double)slowest / 1e3);
	free(buf);
	assert_int_equal(zkw_state_close(st), 0);
	zkw_state_write_hook = NULL;
	sem_destroy(&hook_entered);
	sem_destroy(&hook_release);
}

/* ---- hostile directories and files ------------------------------------------------------ */

static void expect_open_refused(int want, const char *needle)
{
	zkw_state *st = NULL;
	char why[512] = "";
	int err = zkw_state_open(&st, dir, NULL, why, sizeof(why));

	if (err != want || st || !strstr(why, needle))
		fail_msg("open %s: %d \"%s\", expected %d with \"%s\"", dir, err, why, want, needle);
}

static void test_hostile_directory_refused(void **state)
{
	char file[1024];

	(void)state;
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(chmod(dir, 0770), 0);
	expect_open_refused(-EPERM, "writable by group or others (mode 0770)");
	assert_int_equal(chmod(dir, 01777), 0);
	expect_open_refused(-EPERM, "writable by group or others");
	assert_int_equal(chmod(dir, 0755), 0);
	if (geteuid() == 0) {
		assert_int_equal(chown(dir, NOBODY, NOBODY), 0);
		expect_open_refused(-EPERM, "owned by uid 65534");
		assert_int_equal(chown(dir, 0, 0), 0);
	} else {
		print_message("not root: another owner's directory not tried\n");
	}
	assert_int_equal(rmdir(dir), 0);
	/* Not a directory; a missing parent (only one level is created). */
	write_file(dir, "x", 1);
	expect_open_refused(-ENOTDIR, "cannot open");
	assert_int_equal(unlink(dir), 0);
	snprintf(file, sizeof(file), "%s", dir);
	snprintf(dir, sizeof(dir), "%s/missing/state", base);
	expect_open_refused(-ENOENT, "cannot create");
	snprintf(dir, sizeof(dir), "%s", file);
}

static void test_hostile_files_refused(void **state)
{
	char path[1024], decoy_dir[1024], decoy[1024], why[512];
	zkw_state_snapshot s, got;
	uint8_t *before, *after;
	size_t before_len, after_len;
	struct stat sb;
	zkw_state *st;
	void *buf;

	(void)state;
	/* A valid file of key_a elsewhere, for a symbolic link to point at. */
	snprintf(decoy_dir, sizeof(decoy_dir), "%s/decoy", base);
	snprintf(path, sizeof(path), "%s", dir);
	snprintf(dir, sizeof(dir), "%s", decoy_dir);
	st = open_store(NULL);
	s = snapshot_of(666, MAX_CONTENT);
	assert_int_equal(zkw_state_save(st, &key_a, &s), 0);
	assert_int_equal(zkw_state_close(st), 0);
	file_path(decoy, sizeof(decoy), &key_a);
	before = read_file(decoy, &before_len);
	snprintf(dir, sizeof(dir), "%s", path);

	st = open_store(NULL);
	buf = load_buffer(st);
	file_path(path, sizeof(path), &key_a);
	assert_int_equal(symlink(decoy, path), 0);
	why[0] = '\0';
	assert_int_equal(zkw_state_load(st, &key_a, &got, buf, zkw_state_load_size(st), why, sizeof(why)),
	                 -ELOOP);
	assert_non_null(strstr(why, "symbolic link"));
	/* A save replaces the link, never writes through it. */
	s = snapshot_of(3, MAX_CONTENT);
	assert_int_equal(zkw_state_save(st, &key_a, &s), 0);
	assert_int_equal(zkw_state_flush(st), 0);
	assert_int_equal(lstat(path, &sb), 0);
	assert_true(S_ISREG(sb.st_mode));
	assert_int_equal(sb.st_mode & 07777, 0600);
	after = read_file(decoy, &after_len);
	assert_int_equal(after_len, before_len);
	assert_memory_equal(after, before, before_len);
	assert_int_equal(zkw_state_load(st, &key_a, &got, buf, zkw_state_load_size(st), why, sizeof(why)), 0);
	assert_true(is_snapshot_of(&got, 3, MAX_CONTENT));

	/* Writable by group or others; another owner's. */
	assert_int_equal(chmod(path, 0620), 0);
	assert_int_equal(zkw_state_load(st, &key_a, &got, buf, zkw_state_load_size(st), why, sizeof(why)),
	                 -EPERM);
	assert_non_null(strstr(why, "writable by group or others"));
	assert_int_equal(chmod(path, 0600), 0);
	if (geteuid() == 0) {
		assert_int_equal(chown(path, NOBODY, NOBODY), 0);
		assert_int_equal(
		        zkw_state_load(st, &key_a, &got, buf, zkw_state_load_size(st), why, sizeof(why)),
		        -EPERM);
		assert_non_null(strstr(why, "owned by uid 65534"));
	}
	/* Not a regular file: a directory, a FIFO (which must not block). */
	assert_int_equal(unlink(path), 0);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_int_equal(zkw_state_load(st, &key_a, &got, buf, zkw_state_load_size(st), why, sizeof(why)),
	                 -EBADMSG);
	assert_int_equal(rmdir(path), 0);
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_int_equal(zkw_state_load(st, &key_a, &got, buf, zkw_state_load_size(st), why, sizeof(why)),
	                 -EBADMSG);
	assert_non_null(strstr(why, "not a regular file"));
	assert_int_equal(unlink(path), 0);
	free(before);
	free(after);
	free(buf);
	assert_int_equal(zkw_state_close(st), 0);
}

/* ---- remove, close, the temporary files of the dead ------------------------------------- */

struct remover {
	zkw_state *st;
	const zkw_state_key *key;
	int err;
};

static void *remover_main(void *arg)
{
	struct remover *r = arg;

	r->err = zkw_state_remove(r->st, r->key);
	return NULL;
}

static void test_remove_and_close(void **state)
{
	const zkw_state_key key_b = {.path = "/b", .shm_name = "/zkw.b"};
	zkw_state_snapshot s, got;
	zkw_state_stats stats;
	char path[1024], why[512];
	zkw_state *st;
	void *buf;

	(void)state;
	/* Close writes what is pending. */
	st = open_store(NULL);
	s = snapshot_of(4, MAX_CONTENT);
	assert_int_equal(zkw_state_save(st, &key_a, &s), 0);
	s = snapshot_of(5, MAX_CONTENT);
	assert_int_equal(zkw_state_save(st, &key_b, &s), 0);
	assert_int_equal(zkw_state_close(st), 0);
	st = open_store(NULL);
	buf = load_buffer(st);
	assert_int_equal(zkw_state_load(st, &key_a, &got, buf, zkw_state_load_size(st), why, sizeof(why)), 0);
	assert_true(is_snapshot_of(&got, 4, MAX_CONTENT));
	assert_int_equal(zkw_state_load(st, &key_b, &got, buf, zkw_state_load_size(st), why, sizeof(why)), 0);
	assert_true(is_snapshot_of(&got, 5, MAX_CONTENT));

	/* Remove: the file goes; removing what is not there is fine. */
	assert_int_equal(zkw_state_remove(st, &key_a), 0);
	assert_int_equal(zkw_state_load(st, &key_a, &got, buf, zkw_state_load_size(st), why, sizeof(why)),
	                 -ENOENT);
	assert_int_equal(zkw_state_remove(st, &key_a), 0);

	/* Remove while a write of it is in progress (stuck) and a newer
	 * snapshot pending: the pending one is dropped at once, the write in
	 * progress is waited for, and no file is left. */
	sem_init(&hook_entered, 0, 0);
	sem_init(&hook_release, 0, 0);
	assert_int_equal(zkw_state_close(st), 0);
	hook_calls = 0;
	zkw_state_write_hook = stuck_first_write;
	st = open_store(NULL);
	s = snapshot_of(6, MAX_CONTENT);
	assert_int_equal(zkw_state_save(st, &key_b, &s), 0);
	assert_true(sem_wait_ms(&hook_entered, WAIT_MS));
	s = snapshot_of(7, MAX_CONTENT);
	assert_int_equal(zkw_state_save(st, &key_b, &s), 0);
	{
		struct remover r = {.st = st, .key = &key_b, .err = 1};
		pthread_t t;
		int waited = 0;

		assert_int_equal(pthread_create(&t, NULL, remover_main, &r), 0);
		/* No event says "remove is waiting": poll the counter it
		 * moves first, bounded. */
		for (zkw_state_get_stats(st, &stats); stats.dropped == 0 && waited < WAIT_MS; waited++) {
			nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
			zkw_state_get_stats(st, &stats);
		}
		assert_int_equal(stats.dropped, 1); /* generation 7 */
		sem_post(&hook_release);
		assert_int_equal(pthread_join(t, NULL), 0);
		assert_int_equal(r.err, 0);
	}
	file_path(path, sizeof(path), &key_b);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(zkw_state_flush(st), 0);
	assert_int_equal(access(path, F_OK), -1);
	zkw_state_get_stats(st, &stats);
	assert_int_equal(stats.writes, 1); /* generation 6, then removed */
	assert_int_equal(zkw_state_close(st), 0);
	zkw_state_write_hook = NULL;
	sem_destroy(&hook_entered);
	sem_destroy(&hook_release);
	assert_int_equal(count_entries(dir, NULL), 0);
	free(buf);
}

static void test_dead_temporary_files_removed(void **state)
{
	char dead[1100], live[1100], other[1100];
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
	zkw_state *st;
	int fd;

	(void)state;
	assert_int_equal(mkdir(dir, 0700), 0);
	snprintf(dead, sizeof(dead), "%s/.zkws-tmp.00000000000000aa", dir);
	snprintf(live, sizeof(live), "%s/.zkws-tmp.00000000000000bb", dir);
	snprintf(other, sizeof(other), "%s/.zkws-tmp.00000000000000cc", dir);
	write_file(dead, "x", 1);
	fd = open(live, O_RDWR | O_CREAT | O_CLOEXEC, 0600); /* a saver writing it */
	assert_true(fd >= 0);
	assert_int_equal(fcntl(fd, F_OFD_SETLK, &fl), 0);
	assert_int_equal(symlink("/etc/passwd", other), 0); /* not ours to remove: not a file we make */
	st = open_store(NULL);
	assert_int_equal(access(dead, F_OK), -1);
	assert_int_equal(access(live, F_OK), 0);
	assert_int_equal(lstat(other, &(struct stat){0}), 0);
	assert_int_equal(zkw_state_close(st), 0);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_round_trip, make_base, remove_base),
	        cmocka_unit_test_setup_teardown(test_file_of_another_watch_refused, make_base, remove_base),
	        cmocka_unit_test_setup_teardown(test_every_corruption_refused, make_base, remove_base),
	        cmocka_unit_test_setup_teardown(test_future_format_refused, make_base, remove_base),
	        cmocka_unit_test_setup_teardown(test_crash_during_save, make_base, remove_base),
	        cmocka_unit_test_setup_teardown(test_full_disk, make_base, remove_base),
	        cmocka_unit_test_setup_teardown(test_storm_coalesced, make_base, remove_base),
	        cmocka_unit_test_setup_teardown(test_hostile_directory_refused, make_base, remove_base),
	        cmocka_unit_test_setup_teardown(test_hostile_files_refused, make_base, remove_base),
	        cmocka_unit_test_setup_teardown(test_remove_and_close, make_base, remove_base),
	        cmocka_unit_test_setup_teardown(test_dead_temporary_files_removed, make_base, remove_base),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
