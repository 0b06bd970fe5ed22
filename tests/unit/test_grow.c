/* SPDX-License-Identifier: Apache-2.0 */
/* test_grow.c - segments that follow their content: a growing writer
 * (zkw_writer_options.grow) replaces its segment by a larger one when the
 * content outgrows it, while reader processes (zkw/client.h, forked)
 * follow through -ESTALE; a small watch stays small in /dev/shm; a
 * restarted writer adopts a segment of any capacity up to its maximum and
 * replaces a larger one; a growth that /dev/shm cannot hold keeps the old
 * segment; unlinking at close retires the segment first, so a waiting
 * reader is told.
 *
 * Names are "/zkw.grow.<pid>.<n>", unlinked (with their lock files) by
 * every test's teardown. Children never call cmocka: they report through
 * their exit status and a shared anonymous mapping.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
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
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <zkw/client.h>

#include "itest.h"
#include "proc.h"
#include "zkw_clock.h"

#include "publish/writer.h"

#define MAX_BYTES  (1024u * 1024u) /* the writers' maximum */
#define WAIT_MS    20000           /* any one expected event */
#define NREADERS   3
#define HEADER_LEN 16 /* serial, length */

/* ---- fixture ------------------------------------------------------------ */

#define MAX_NAMES 16
static char names[MAX_NAMES][64];
static int names_used;
static unsigned name_counter;

static const char *new_name(void)
{
	assert_true(names_used < MAX_NAMES);
	snprintf(names[names_used], sizeof(names[0]), "/zkw.grow.%d.%u", (int)getpid(), name_counter++);
	return names[names_used++];
}

static int unlink_names(void **state)
{
	char lock[128];

	(void)state;
	for (int i = 0; i < names_used; i++) {
		zkw_writer_remove(names[i]);
		snprintf(lock, sizeof(lock), "/dev/shm/.zkw-lock.%s", names[i] + 1);
		unlink(lock);
	}
	names_used = 0;
	return 0;
}

static zkw_writer *open_growing(const char *name, uint64_t max, char *why, size_t whylen)
{
	zkw_writer_options opt = {.capacity = max, .grow = true, .group = (gid_t)-1, .watch_path = "/grow"};
	zkw_writer *w = NULL;
	int err = zkw_writer_open(&w, name, &opt, why, whylen);

	if (err)
		fail_msg("zkw_writer_open(%s, grow, max %llu): %d (%s)", name, (unsigned long long)max, err,
		         why);
	return w;
}

/* ---- content that proves itself: serial, length, then a pattern ------- */

static uint8_t pattern_byte(uint64_t serial, size_t i)
{
	return (uint8_t)(serial * 131u + i * 7u + (i >> 9));
}

static void make_content(uint8_t *buf, size_t len, uint64_t serial)
{
	uint64_t l = len;

	memcpy(buf, &serial, 8);
	memcpy(buf + 8, &l, 8);
	for (size_t i = HEADER_LEN; i < len; i++)
		buf[i] = pattern_byte(serial, i);
}

/* The serial of an intact content, 0 if it is torn or wrong. */
static uint64_t check_content(const uint8_t *buf, size_t len)
{
	uint64_t serial, l;

	if (len < HEADER_LEN)
		return 0;
	memcpy(&serial, buf, 8);
	memcpy(&l, buf + 8, 8);
	if (l != len || serial == 0)
		return 0;
	for (size_t i = HEADER_LEN; i < len; i++)
		if (buf[i] != pattern_byte(serial, i))
			return 0;
	return serial;
}

static int publish_content(zkw_writer *w, uint8_t *buf, size_t len, uint64_t serial)
{
	zkw_publication p = {
	        .valid = true,
	        .connected = true,
	        .content = buf,
	        .len = len,
	        .content_serial = serial,
	        .version = (int64_t)serial,
	};

	make_content(buf, len, serial);
	return zkw_writer_publish(w, &p);
}

/* ---- a follower process -------------------------------------------------- */

struct report {
	int bad;
	char why[240];
	uint64_t configs; /* config() calls */
	uint64_t reopens; /* -ESTALE answered by opening the name again */
	uint64_t last_serial;
};

struct follower {
	struct report *rep;
	int ack_fd; /* each config's serial, as 8 bytes; -1: none */
	uint64_t last_gen, last_content_gen;
};

static void report_bad(struct report *rep, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void report_bad(struct report *rep, const char *fmt, ...)
{
	va_list ap;

	if (rep->bad)
		return;
	rep->bad = 1;
	va_start(ap, fmt);
	vsnprintf(rep->why, sizeof(rep->why), fmt, ap);
	va_end(ap);
}

static void on_config(void *ctx, const void *content, size_t len)
{
	struct follower *f = ctx;
	uint64_t serial = check_content(content, len);

	f->rep->configs++;
	if (serial == 0)
		report_bad(f->rep, "a torn or wrong content of %zu bytes after serial %llu", len,
		           (unsigned long long)f->rep->last_serial);
	else if (serial <= f->rep->last_serial)
		report_bad(f->rep, "serial %llu delivered after %llu (twice, or backwards)",
		           (unsigned long long)serial, (unsigned long long)f->rep->last_serial);
	else
		f->rep->last_serial = serial;
	if (f->ack_fd >= 0 && write(f->ack_fd, &serial, sizeof(serial)) != (ssize_t)sizeof(serial))
		report_bad(f->rep, "cannot ack serial %llu", (unsigned long long)serial);
}

/* Follow `name` with a dispatcher until serial `last` is delivered;
 * reopen on -ESTALE. Exit status 0, or 1 with the reason in *rep. */
static int follower_main(const char *name, uint64_t last, struct report *rep, int ack_fd)
{
	struct follower f = {.rep = rep, .ack_fd = ack_fd};
	zkw_handlers h = {.config = on_config, .ctx = &f};
	zkw_dispatcher d;
	zkw_reader r;
	uint64_t ready = 0;
	void *buf = malloc(MAX_BYTES);
	int rc;

	if (!buf || zkw_reader_open(&r, name) != 0) {
		report_bad(rep, "cannot open %s", name);
		return 1;
	}
	zkw_dispatcher_init(&d, &r, &h, buf, MAX_BYTES);
	if (ack_fd >= 0 && write(ack_fd, &ready, sizeof(ready)) != (ssize_t)sizeof(ready))
		return 1;
	while (!rep->bad && rep->last_serial < last) {
		rc = zkw_dispatch(&d, WAIT_MS);
		if (rc == -ESTALE) {
			/* The writer grew the segment: the name holds the new one. */
			zkw_reader_close(&r);
			if ((rc = zkw_reader_open(&r, name)) != 0) {
				report_bad(rep, "reopen after -ESTALE: %d (%s)", rc, r.why ? r.why : "?");
				break;
			}
			rep->reopens++;
			continue;
		}
		if (rc == -EAGAIN || rc == -EINTR) /* lapped by the writer: read again */
			continue;
		if (rc < 0) {
			report_bad(rep, "zkw_dispatch: %d", rc);
			break;
		}
		if (rc == 0 && zkw_reader_generation(&r) == d.seen && d.seen == f.last_gen) {
			report_bad(rep, "no new generation for %d ms after serial %llu", WAIT_MS,
			           (unsigned long long)rep->last_serial);
			break;
		}
		if (d.snap.generation < f.last_gen || d.snap.content_gen < f.last_content_gen)
			report_bad(rep,
			           "went backwards: generation %llu after %llu, content_gen %llu after %llu",
			           (unsigned long long)d.snap.generation, (unsigned long long)f.last_gen,
			           (unsigned long long)d.snap.content_gen,
			           (unsigned long long)f.last_content_gen);
		f.last_gen = d.snap.generation;
		f.last_content_gen = d.snap.content_gen;
	}
	zkw_reader_close(&r);
	free(buf);
	return rep->bad ? 1 : 0;
}

/* Read one 8-byte ack from fd within WAIT_MS; false on timeout or EOF. */
static bool read_ack(int fd, uint64_t *serial)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	int64_t deadline = zkw_clock_mono_ms() + WAIT_MS;

	for (;;) {
		int left = (int)(deadline - zkw_clock_mono_ms());

		if (left <= 0 || poll(&pfd, 1, left) <= 0)
			return false;
		return read(fd, serial, sizeof(*serial)) == (ssize_t)sizeof(*serial);
	}
}

/* Wait until every follower acked `serial` (skipping older acks). */
static void await_acks(int fds[NREADERS], uint64_t serial, struct report *reps)
{
	for (int i = 0; i < NREADERS; i++) {
		uint64_t got = 0;

		do {
			if (!read_ack(fds[i], &got))
				fail_msg("follower %d did not deliver serial %llu within %d ms (%s)", i,
				         (unsigned long long)serial, WAIT_MS,
				         reps[i].bad ? reps[i].why : "no error");
		} while (got < serial);
		if (got != serial)
			fail_msg("follower %d delivered serial %llu, expected %llu", i,
			         (unsigned long long)got, (unsigned long long)serial);
	}
}

/* ---- growth under live readers ------------------------------------------- */

/* Paced: every content is delivered to every follower, exactly once, and
 * each growth costs each follower exactly one reopen. Unpaced: the writer
 * publishes as fast as it can across the growths; the followers see only
 * intact contents, in order, never twice, and the last one. */
static void grow_under_readers(bool paced)
{
	static const size_t paced_sizes[] = {16,     100,        1000,  4000,     8192,  8193,
	                                     9000,   16384,      17000, 33000,    70000, 140000,
	                                     300000, 900 * 1024, 65536, MAX_BYTES};
	const char *name = new_name();
	size_t nsteps = paced ? sizeof(paced_sizes) / sizeof(paced_sizes[0]) : 300;
	struct report *reps = mmap(NULL, sizeof(struct report) * NREADERS, PROT_READ | PROT_WRITE,
	                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint8_t *buf = malloc(MAX_BYTES);
	int fds[NREADERS], pipes[NREADERS][2];
	pid_t pids[NREADERS];
	uint64_t capacity, growths = 0;
	zkw_writer *w;
	char why[512] = "";

	assert_true(reps != MAP_FAILED);
	assert_non_null(buf);
	memset(reps, 0, sizeof(struct report) * NREADERS);
	w = open_growing(name, MAX_BYTES, why, sizeof(why));
	capacity = zkw_writer_capacity(w);
	assert_int_equal(capacity, ZKW_WRITER_MIN_CAPACITY);

	for (int i = 0; i < NREADERS; i++) {
		assert_int_equal(pipe2(pipes[i], O_CLOEXEC), 0);
		pids[i] = proc_fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			close(pipes[i][0]);
			_exit(follower_main(name, nsteps, &reps[i], pipes[i][1]));
		}
		close(pipes[i][1]);
		fds[i] = pipes[i][0];
	}
	await_acks(fds, 0, reps); /* every follower has the segment open */

	for (size_t k = 0; k < nsteps; k++) {
		size_t len = paced ? paced_sizes[k] : 1000 + k * 3400 + (k % 7) * 100;
		uint64_t serial = k + 1;
		int rc = publish_content(w, buf, len, serial);

		if (rc != 0)
			fail_msg("publish of %zu bytes: %d (%s)", len, rc, zkw_writer_error(w));
		if (zkw_writer_capacity(w) != capacity) {
			/* Grown, and only when needed, by the rule. */
			assert_true(len > capacity);
			assert_int_equal(zkw_writer_capacity(w), zkw_writer_sized_capacity(len, MAX_BYTES));
			capacity = zkw_writer_capacity(w);
			growths++;
		}
		assert_true(len <= capacity);
		if (paced)
			await_acks(fds, serial, reps);
	}
	/* 8 KiB -> 32 KiB -> 128 KiB -> 512 KiB -> 1 MiB, whatever the pace. */
	assert_int_equal(growths, 4);
	assert_int_equal(capacity, MAX_BYTES);

	for (int i = 0; i < NREADERS; i++) {
		int status = proc_reap_pid(pids[i], WAIT_MS);

		if (reps[i].bad || status != 0)
			fail_msg("follower %d: status %d: %s", i, status, reps[i].bad ? reps[i].why : "?");
		assert_int_equal(reps[i].last_serial, nsteps);
		if (paced) {
			assert_int_equal(reps[i].configs, nsteps);  /* every one, once */
			assert_int_equal(reps[i].reopens, growths); /* one per growth */
		} else {
			assert_true(reps[i].reopens >= 1);
		}
		close(fds[i]);
	}
	/* The name holds the last segment, with the last content. */
	{
		zkw_reader r;
		zkw_snapshot m;
		ssize_t n;

		assert_int_equal(zkw_reader_open(&r, name), 0);
		assert_false(zkw_reader_retired(&r));
		assert_true(zkw_reader_broker_alive(&r));
		assert_int_equal(zkw_reader_capacity(&r), MAX_BYTES);
		n = zkw_reader_read(&r, &m, buf, MAX_BYTES);
		assert_true(n > 0);
		assert_int_equal(check_content(buf, (size_t)n), nsteps);
		assert_int_equal(m.generation, zkw_writer_generation(w));
		assert_true(m.valid);
		zkw_reader_close(&r);
	}
	zkw_writer_close(w, false);
	munmap(reps, sizeof(struct report) * NREADERS);
	free(buf);
}

static void test_growth_paced_every_content_once(void **state)
{
	(void)state;
	grow_under_readers(true);
}

static void test_growth_unpaced_never_torn(void **state)
{
	(void)state;
	grow_under_readers(false);
}

/* ---- sizes ---------------------------------------------------------------- */

static void test_sizing_rule(void **state)
{
	(void)state;
	assert_int_equal(zkw_writer_sized_capacity(0, MAX_BYTES), 8192);
	assert_int_equal(zkw_writer_sized_capacity(4096, MAX_BYTES), 8192);
	assert_int_equal(zkw_writer_sized_capacity(4097, MAX_BYTES), 16384);
	assert_int_equal(zkw_writer_sized_capacity(8193, MAX_BYTES), 32768);
	assert_int_equal(zkw_writer_sized_capacity(300000, MAX_BYTES), MAX_BYTES);
	assert_int_equal(zkw_writer_sized_capacity(MAX_BYTES, MAX_BYTES), MAX_BYTES);
	assert_int_equal(zkw_writer_sized_capacity(10, 1024), 1024); /* never above the maximum */
}

/* A watch of 100 bytes costs kilobytes of /dev/shm, not the 2 MiB two
 * slots of the maximum would. */
static void test_small_watch_is_small(void **state)
{
	const char *name = new_name();
	char why[512] = "";
	zkw_writer *w = open_growing(name, MAX_BYTES, why, sizeof(why));
	uint8_t buf[100];
	struct stat st;
	zkw_reader r;
	uint64_t bytes;

	(void)state;
	assert_int_equal(publish_content(w, buf, sizeof(buf), 1), 0);
	assert_int_equal(zkw_reader_open(&r, name), 0);
	assert_int_equal(fstat(r.fd, &st), 0);
	bytes = (uint64_t)st.st_blocks * 512u;
	print_message("a 100-byte watch: %llu bytes of /dev/shm (segment size %llu)\n",
	              (unsigned long long)bytes, (unsigned long long)st.st_size);
	assert_true(bytes > 0);
	assert_true(bytes <= 32 * 1024); /* the old fixed 1 MiB: 2,104,064 */
	assert_int_equal(zkw_reader_capacity(&r), ZKW_WRITER_MIN_CAPACITY);
	zkw_reader_close(&r);

	/* Growing allocates the new size in full (posix_fallocate). */
	static uint8_t big[200000];
	assert_int_equal(publish_content(w, big, sizeof(big), 2), 0);
	assert_int_equal(zkw_reader_open(&r, name), 0);
	assert_int_equal(fstat(r.fd, &st), 0);
	assert_int_equal(zkw_reader_capacity(&r), 524288);
	assert_true((uint64_t)st.st_blocks * 512u >= zkw_segment_size(524288, ZKW_SLOT_COUNT));
	zkw_reader_close(&r);
	zkw_writer_close(w, false);
}

/* Above the maximum: refused, nothing published, nothing grown. */
static void test_above_maximum_refused(void **state)
{
	const char *name = new_name();
	char why[512] = "";
	zkw_writer *w = open_growing(name, 16384, why, sizeof(why));
	static uint8_t buf[16385];
	uint64_t gen;

	(void)state;
	assert_int_equal(publish_content(w, buf, 100, 1), 0);
	gen = zkw_writer_generation(w);
	assert_int_equal(publish_content(w, buf, 16385, 2), -EMSGSIZE);
	assert_int_equal(zkw_writer_generation(w), gen);
	assert_int_equal(zkw_writer_capacity(w), 8192);
	assert_string_equal(zkw_writer_error(w), "");
	assert_int_equal(publish_content(w, buf, 16384, 3), 0); /* the maximum itself fits */
	assert_int_equal(zkw_writer_capacity(w), 16384);
	zkw_writer_close(w, false);
}

/* ---- restart ---------------------------------------------------------------- */

/* A restarted writer adopts a segment of any capacity up to its maximum
 * in place (readers carry on), and replaces a larger one, sized for its
 * content (or dropping content above the new maximum). */
static void test_restart_adopts_any_capacity(void **state)
{
	const char *name = new_name();
	static uint8_t buf[20000], out[MAX_BYTES];
	char why[512] = "";
	zkw_writer *w = open_growing(name, MAX_BYTES, why, sizeof(why));
	zkw_snapshot m;
	zkw_reader r;
	uint64_t gen;

	(void)state;
	assert_int_equal(publish_content(w, buf, sizeof(buf), 1), 0);
	assert_int_equal(zkw_writer_capacity(w), 65536);
	zkw_writer_close(w, false);
	assert_int_equal(zkw_reader_open(&r, name), 0);
	gen = zkw_reader_generation(&r);

	/* Same maximum: adopted in place. */
	w = open_growing(name, MAX_BYTES, why, sizeof(why));
	assert_string_equal(zkw_writer_notice(w), "");
	assert_int_equal(zkw_writer_capacity(w), 65536);
	assert_false(zkw_reader_retired(&r));
	assert_true(zkw_reader_generation(&r) > gen); /* "restarted", into the segment we hold */
	assert_int_equal(zkw_reader_read(&r, &m, out, sizeof(out)), (ssize_t)sizeof(buf));
	assert_int_equal(check_content(out, sizeof(buf)), 1);
	zkw_writer_close(w, false);

	/* A larger maximum: still in place, no shrinking or growing. */
	w = open_growing(name, 4 * MAX_BYTES, why, sizeof(why));
	assert_int_equal(zkw_writer_capacity(w), 65536);
	assert_false(zkw_reader_retired(&r));
	zkw_writer_close(w, false);

	/* A smaller maximum than the segment: replaced; 20000 bytes do not
	 * fit in 8 KiB, so the snapshot is dropped, and the notice says so. */
	w = open_growing(name, 8192, why, sizeof(why));
	assert_true(zkw_reader_retired(&r));
	assert_int_equal(zkw_writer_capacity(w), 8192);
	assert_non_null(
	        strstr(zkw_writer_notice(w), "replaced because its capacity 65536 exceeds the maximum 8192"));
	assert_non_null(strstr(zkw_writer_notice(w), "dropped"));
	zkw_reader_close(&r);
	assert_int_equal(zkw_reader_open(&r, name), 0);
	assert_int_equal(zkw_reader_capacity(&r), 8192);
	assert_int_equal(zkw_reader_read(&r, &m, out, sizeof(out)), 0);
	assert_true(m.generation > gen); /* generations continue */

	/* Content that fits is carried into the smaller segment. */
	assert_int_equal(publish_content(w, buf, 6000, 7), 0); /* fits 8192 */
	assert_int_equal(zkw_writer_capacity(w), 8192);
	zkw_writer_close(w, false);
	zkw_reader_close(&r);
	w = open_growing(name, 8191, why, sizeof(why));
	assert_int_equal(zkw_writer_capacity(w), 8191); /* sized for 6000 bytes, at most the maximum */
	assert_non_null(strstr(zkw_writer_notice(w), "replaced because its capacity 8192"));
	assert_int_equal(zkw_reader_open(&r, name), 0);
	assert_int_equal(zkw_reader_read(&r, &m, out, sizeof(out)), 6000);
	assert_int_equal(check_content(out, 6000), 7);
	zkw_reader_close(&r);
	zkw_writer_close(w, false);
}

/* ---- growth /dev/shm cannot hold ---------------------------------------------- */

static int count_new_entries(void)
{
	DIR *d = opendir("/dev/shm");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (strncmp(e->d_name, ".zkw-new.", 9) == 0)
			n++;
	closedir(d);
	return n;
}

/* In a child with its own mount namespace and a 256 KiB tmpfs on
 * /dev/shm. Exit 77: the kernel refuses the namespace or the mount. */
static int full_shm_child(void)
{
	static uint8_t big[60000], out[MAX_BYTES];
	zkw_writer_options opt = {.capacity = MAX_BYTES, .grow = true, .group = (gid_t)-1};
	zkw_writer *w = NULL;
	zkw_reader r;
	char why[512] = "";
	int err, fd;

	if (unshare(CLONE_NEWNS) < 0)
		return 77;
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("zkw-test-grow", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=256k,mode=1777") < 0)
		return 77;
	/* A maximum that could never fit (2 MiB in a 256 KiB /dev/shm): refused
	 * at open, naming the sizes. */
	err = zkw_writer_open(&w, "/zkw.grow.full", &opt, why, sizeof(why));
	if (err != -ENOSPC || !strstr(why, "needs 2104064 bytes") || !strstr(why, "262144 in all")) {
		fprintf(stderr, "a 1 MiB maximum in a 256 KiB /dev/shm: %d \"%s\"\n", err, why);
		return 9;
	}
	/* 100 KiB fits an empty /dev/shm (211712 bytes); fill most of it. */
	opt.capacity = 100 * 1024;
	if (zkw_writer_open(&w, "/zkw.grow.full", &opt, why, sizeof(why)) != 0) {
		fprintf(stderr, "open in a 256 KiB /dev/shm: %s\n", why);
		return 10; /* the old writer: 2 x 100 KiB up front */
	}
	fd = open("/dev/shm/filler", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0 || posix_fallocate(fd, 0, 160 * 1024) != 0)
		return 15;
	close(fd);
	if (publish_content(w, big, 100, 1) != 0 || zkw_reader_open(&r, "/zkw.grow.full") != 0)
		return 11;
	err = publish_content(w, big, sizeof(big), 2); /* needs 2 x 100 KiB */
	if (err != -ENOSPC || !strstr(zkw_writer_error(w), "/dev/shm") ||
	    !strstr(zkw_writer_error(w), "needs")) {
		fprintf(stderr, "growth past /dev/shm: %d \"%s\"\n", err, zkw_writer_error(w));
		return 12;
	}
	/* The old segment goes on: not retired, last content, still writable. */
	if (zkw_reader_retired(&r) || zkw_reader_read(&r, NULL, out, sizeof(out)) != 100 ||
	    check_content(out, 100) != 1 || count_new_entries() != 0)
		return 13;
	if (publish_content(w, big, 3000, 3) != 0 || zkw_reader_read(&r, NULL, out, sizeof(out)) != 3000 ||
	    check_content(out, 3000) != 3 || zkw_reader_retired(&r))
		return 14;
	zkw_reader_close(&r);
	zkw_writer_close(w, true);
	return 0;
}

static void test_growth_without_room_keeps_the_segment(void **state)
{
	(void)state;
	itest_child_or_skip(full_shm_child, "growth in a full /dev/shm", WAIT_MS);
}

/* ---- unlink at close ----------------------------------------------------------- */

/* A reader waiting on a segment its writer unlinks at close is told
 * (-ESTALE, retired) instead of waiting for ever. */
static void test_unlink_on_close_wakes_waiters(void **state)
{
	const char *name = new_name();
	zkw_writer_options opt = {.capacity = 4096, .group = (gid_t)-1}; /* also a fixed-size writer */
	zkw_writer *w = NULL;
	char why[512] = "", c;
	int ready[2];
	pid_t pid;
	int status;

	(void)state;
	assert_int_equal(zkw_writer_open(&w, name, &opt, why, sizeof(why)), 0);
	assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
	pid = proc_fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		zkw_reader r;
		int rc;

		close(ready[0]);
		if (zkw_reader_open(&r, name) != 0)
			_exit(10);
		if (write(ready[1], "r", 1) != 1)
			_exit(11);
		rc = zkw_reader_wait(&r, zkw_reader_generation(&r), WAIT_MS);
		if (rc != -ESTALE) {
			fprintf(stderr, "zkw_reader_wait on an unlinked segment: %d, not -ESTALE\n", rc);
			_exit(12);
		}
		_exit(zkw_reader_retired(&r) && !zkw_reader_ping(&r) ? 0 : 13);
	}
	close(ready[1]);
	assert_int_equal(read(ready[0], &c, 1), 1);
	close(ready[0]);
	zkw_writer_close(w, true);
	status = proc_reap_pid(pid, 2 * WAIT_MS);
	if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("the waiting reader: status 0x%x", status);
	assert_int_equal(shm_open(name, O_RDONLY, 0), -1);
	assert_int_equal(errno, ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_teardown(test_sizing_rule, unlink_names),
	        cmocka_unit_test_teardown(test_small_watch_is_small, unlink_names),
	        cmocka_unit_test_teardown(test_above_maximum_refused, unlink_names),
	        cmocka_unit_test_teardown(test_growth_paced_every_content_once, unlink_names),
	        cmocka_unit_test_teardown(test_growth_unpaced_never_torn, unlink_names),
	        cmocka_unit_test_teardown(test_restart_adopts_any_capacity, unlink_names),
	        cmocka_unit_test_teardown(test_growth_without_room_keeps_the_segment, unlink_names),
	        cmocka_unit_test_teardown(test_unlink_on_close_wakes_waiters, unlink_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
