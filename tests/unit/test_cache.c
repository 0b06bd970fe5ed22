/* SPDX-License-Identifier: Apache-2.0 */
/* test_cache.c - the liburcu reader cache (client/cache.c, zkw/cache.h)
 * against segments written in this process with broker/writer.h.
 *
 * Every published content carries the generation it was published at and
 * a checksum of itself, so a reader can tell a torn, stale-but-relabelled
 * or freed snapshot from a good one. Reader threads never call cmocka
 * asserts (not thread-safe): they record their first failure, and the main
 * thread asserts after joining them. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <zkw/cache.h>
#include <zkw/client.h>

#include "publish/writer.h"
#include "zkw_clock.h"

#define READERS          8
#define STRESS_PUBLISHES 5000
#define PACED_PUBLISHES  200
#define CAPACITY         (64u * 1024u)
#define HEADER           16u   /* content: u64 generation, u64 checksum, payload */
#define WAIT_MS          10000 /* bound of every wait for an event */

/* ---- self-checking content ------------------------------------------------- */

static uint64_t fnv1a(const unsigned char *p, size_t n, uint64_t h)
{
	size_t i;

	for (i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	return h;
}

/* Length for a generation: mostly small and varying, now and then large,
 * so the follower's buffer guess is wrong both ways. */
static size_t content_len(uint64_t gen)
{
	if (gen % 97 == 0)
		return CAPACITY - 8;
	return HEADER + (size_t)(gen * 7919u % 6000u);
}

static size_t make_content(unsigned char *buf, uint64_t gen)
{
	size_t len = content_len(gen), i;
	uint64_t x = gen * 0x9e3779b97f4a7c15ULL | 1, sum;

	for (i = HEADER; i < len; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		buf[i] = (unsigned char)x;
	}
	sum = fnv1a(buf + HEADER, len - HEADER, 0xcbf29ce484222325ULL ^ gen);
	memcpy(buf, &gen, 8);
	memcpy(buf + 8, &sum, 8);
	return len;
}

/* NULL when s is a coherent snapshot of the content published at its own
 * generation; else what is wrong. */
static const char *check_snapshot(const zkw_cache_snapshot *s)
{
	uint64_t gen, sum;

	if (s->generation == 0)
		return NULL; /* nothing published yet: empty */
	if (s->len < HEADER || s->len > CAPACITY)
		return "bad length";
	if (s->content[s->len] != '\0')
		return "content not terminated";
	memcpy(&gen, s->content, 8);
	memcpy(&sum, s->content + 8, 8);
	if (gen != s->generation)
		return "content is not the content of its generation";
	if (s->len != content_len(gen))
		return "length does not match the generation";
	if (sum != fnv1a(s->content + HEADER, s->len - HEADER, 0xcbf29ce484222325ULL ^ gen))
		return "checksum mismatch";
	if (s->content_gen != s->generation || !s->valid || !s->connected)
		return "metadata does not match";
	return NULL;
}

/* ---- fixture: a fresh segment and its writer --------------------------------- */

struct fixture {
	char name[64];
	zkw_writer *w;
	unsigned char buf[CAPACITY];
};

static int setup(void **state)
{
	static unsigned serial;
	struct fixture *f = calloc(1, sizeof(*f));
	zkw_writer_options opt = {.capacity = CAPACITY, .group = (gid_t)-1, .watch_path = "/test/cache"};
	char why[256];
	int err;

	if (!f)
		return -1;
	snprintf(f->name, sizeof(f->name), "/zkw.test.cache.%d.%u", (int)getpid(), serial++);
	err = zkw_writer_open(&f->w, f->name, &opt, why, sizeof(why));
	if (err) {
		fprintf(stderr, "zkw_writer_open(%s): %s\n", f->name, why);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	zkw_writer_close(f->w, true);
	zkw_writer_remove(f->name); /* a test that failed without its writer */
	free(f);
	return 0;
}

/* Publish the self-checking content of the next generation. */
static uint64_t publish_next(zkw_writer *w, unsigned char *buf)
{
	uint64_t gen = zkw_writer_generation(w) + 1;
	zkw_publication p = {
	        .valid = true,
	        .connected = true,
	        .content = buf,
	        .len = make_content(buf, gen),
	        .content_serial = gen,
	        .version = (int64_t)gen,
	        .mzxid = (int64_t)gen * 10,
	        .confirmed_ns = zkw_clock_mono_ns(),
	};

	assert_int_equal(zkw_writer_publish(w, &p), 0);
	return gen;
}

/* Wait (bounded) until the cache has published generation >= want. */
static void wait_cache_generation(zkw_cache *c, uint64_t want)
{
	int64_t deadline = zkw_clock_mono_ms() + WAIT_MS;
	uint64_t g;

	while ((g = zkw_cache_generation(c)) < want) {
		int left = (int)zkw_clock_ms_left(deadline);

		if (left <= 0)
			fail_msg("cache stuck at generation %llu, expected %llu within %d ms",
			         (unsigned long long)g, (unsigned long long)want, WAIT_MS);
		assert_true(zkw_cache_wait(c, g, left) >= 0);
	}
}

/* ---- reader threads ----------------------------------------------------------- */

struct reader {
	pthread_t thread;
	zkw_cache *c;
	const int *stop; /* stop when set, unless until_null */
	bool until_null; /* run until get returns NULL (shutdown) */
	sem_t *warm;     /* posted once after WARM_READS reads */
	uint64_t reads;
	uint64_t distinct; /* generations seen */
	uint64_t last_gen;
	bool saw_null;
	char failure[160];
};
#define WARM_READS 1000

static void reader_fail(struct reader *r, const char *fmt, ...)
{
	va_list ap;

	if (r->failure[0])
		return;
	va_start(ap, fmt);
	vsnprintf(r->failure, sizeof(r->failure), fmt, ap);
	va_end(ap);
}

static void *reader_main(void *arg)
{
	struct reader *r = arg;

	for (;;) {
		uint64_t before = zkw_cache_generation(r->c);
		const zkw_cache_snapshot *s = zkw_cache_get(r->c);
		const char *bad;
		size_t i, sum = 0;

		if (!s) {
			r->saw_null = true;
			if (!r->until_null)
				reader_fail(r, "get returned NULL while open");
			break;
		}
		if (r->saw_null)
			reader_fail(r, "a snapshot after NULL");
		if (s->generation < r->last_gen)
			reader_fail(r, "generation went back from %llu to %llu",
			            (unsigned long long)r->last_gen, (unsigned long long)s->generation);
		if (s->generation < before)
			reader_fail(r, "get returned generation %llu after zkw_cache_generation() said %llu",
			            (unsigned long long)s->generation, (unsigned long long)before);
		bad = check_snapshot(s);
		if (bad)
			reader_fail(r, "generation %llu: %s", (unsigned long long)s->generation, bad);
		/* Touch every byte: under ASan, a snapshot freed too early is a
		 * heap-use-after-free report here. */
		for (i = 0; i < s->len; i += 64)
			sum += s->content[i];
		__asm__ __volatile__("" : : "r"(sum));
		if (s->generation != r->last_gen)
			r->distinct++;
		r->last_gen = s->generation;
		zkw_cache_put(r->c, s);
		if (++r->reads == WARM_READS && r->warm)
			sem_post(r->warm);
		if (!r->until_null && __atomic_load_n(r->stop, __ATOMIC_ACQUIRE))
			break;
	}
	return NULL;
}

static void readers_start(struct reader *rs, int n, zkw_cache *c, const int *stop, bool until_null,
                          sem_t *warm)
{
	int i;

	for (i = 0; i < n; i++) {
		memset(&rs[i], 0, sizeof(rs[i]));
		rs[i].c = c;
		rs[i].stop = stop;
		rs[i].until_null = until_null;
		rs[i].warm = warm;
		assert_int_equal(pthread_create(&rs[i].thread, NULL, reader_main, &rs[i]), 0);
	}
}

static void readers_join_and_check(struct reader *rs, int n)
{
	int i;

	for (i = 0; i < n; i++)
		assert_int_equal(pthread_join(rs[i].thread, NULL), 0);
	for (i = 0; i < n; i++) {
		if (rs[i].failure[0])
			fail_msg("reader %d: %s", i, rs[i].failure);
		assert_true(rs[i].reads > 0);
	}
}

static void sem_wait_bounded(sem_t *sem, int count, const char *what)
{
	struct timespec dl = zkw_clock_deadline_ms(CLOCK_REALTIME, WAIT_MS);
	int i;

	for (i = 0; i < count; i++)
		if (sem_timedwait(sem, &dl) != 0)
			fail_msg("%s: only %d of %d within %d ms", what, i, count, WAIT_MS);
}

/* ---- a writer thread --------------------------------------------------------- */

struct publisher {
	pthread_t thread;
	zkw_writer *w;
	unsigned char *buf;
	int count; /* publish this many, or until stop when 0 */
	const int *stop;
	uint64_t last;
};

static void *publisher_main(void *arg)
{
	struct publisher *p = arg;
	int i;

	for (i = 0; p->count == 0 || i < p->count; i++) {
		if (p->stop && __atomic_load_n(p->stop, __ATOMIC_ACQUIRE))
			break;
		p->last = publish_next(p->w, p->buf);
		if (i % 64 == 63)
			sched_yield(); /* let the follower run on 2 cores */
	}
	return NULL;
}

/* ---- change callback ------------------------------------------------------------ */

struct changes {
	pthread_mutex_t lock;
	pthread_cond_t called;
	uint64_t calls;
	uint64_t last_gen;
	char failure[160];
};
#define CHANGES_INIT                                                                                         \
	{                                                                                                    \
		.lock = PTHREAD_MUTEX_INITIALIZER, .called = PTHREAD_COND_INITIALIZER                        \
	}

static uint64_t changes_calls(struct changes *ch)
{
	uint64_t n;

	pthread_mutex_lock(&ch->lock);
	n = ch->calls;
	pthread_mutex_unlock(&ch->lock);
	return n;
}

/* Wait (bounded) until the callback has seen generation >= gen. */
static void changes_wait(struct changes *ch, uint64_t gen)
{
	struct timespec dl = zkw_clock_deadline_ms(CLOCK_REALTIME, WAIT_MS);
	uint64_t seen;

	pthread_mutex_lock(&ch->lock);
	while (ch->last_gen < gen)
		if (pthread_cond_timedwait(&ch->called, &ch->lock, &dl) != 0)
			break;
	seen = ch->last_gen;
	pthread_mutex_unlock(&ch->lock);
	if (seen < gen)
		fail_msg("on_change stuck at generation %llu, expected %llu within %d ms",
		         (unsigned long long)seen, (unsigned long long)gen, WAIT_MS);
}

static void on_change(void *ctx, const zkw_cache_snapshot *s)
{
	struct changes *ch = ctx;
	const char *bad = check_snapshot(s);

	pthread_mutex_lock(&ch->lock);
	if (!ch->failure[0] && bad)
		snprintf(ch->failure, sizeof(ch->failure), "callback, generation %llu: %s",
		         (unsigned long long)s->generation, bad);
	if (!ch->failure[0] && s->generation <= ch->last_gen)
		snprintf(ch->failure, sizeof(ch->failure), "callback generation %llu after %llu",
		         (unsigned long long)s->generation, (unsigned long long)ch->last_gen);
	ch->last_gen = s->generation;
	ch->calls++;
	pthread_cond_broadcast(&ch->called);
	pthread_mutex_unlock(&ch->lock);
}

/* ---- tests ------------------------------------------------------------------------- */

static void test_open_missing_segment_is_enoent(void **state)
{
	zkw_cache *c = (zkw_cache *)1;

	(void)state;
	assert_int_equal(zkw_cache_open(&c, "/zkw.test.cache.does-not-exist", NULL), -ENOENT);
	assert_null(c);
	assert_int_equal(zkw_cache_open(&c, "a/b", NULL), -EINVAL);
	assert_int_equal(zkw_cache_open(NULL, "/x", NULL), -EINVAL);
	zkw_cache_close(NULL);
}

static void test_expected_uid(void **state)
{
	struct fixture *f = *state;
	zkw_cache_options wrong = {.require_uid = true, .expected_uid = getuid() + 1};
	zkw_cache_options right = {.require_uid = true, .expected_uid = getuid()};
	zkw_cache *c;

	assert_int_equal(zkw_cache_open(&c, f->name, &wrong), -EPERM);
	assert_int_equal(zkw_cache_open(&c, f->name, &right), 0);
	zkw_cache_close(c);
}

/* The default owner policy of zkw/client.h: root, ourselves or the uid of
 * ZKW_SEGMENT_OWNER; require_uid trusts exactly expected_uid; never a
 * segment group or others may write. */
static void test_owner_policy(void **state)
{
	struct fixture *f = *state;
	zkw_cache_options told = {.require_uid = true, .expected_uid = 65534};
	zkw_cache_options told_root = {.require_uid = true, .expected_uid = 0};
	zkw_cache *c = NULL;
	int fd;

	if (geteuid() != 0) {
		print_message("not root: cannot give the segment away; skipped\n");
		skip();
	}
	publish_next(f->w, f->buf);
	fd = shm_open(f->name, O_RDWR, 0);
	assert_true(fd >= 0);
	assert_int_equal(fchown(fd, 65534, 65534), 0);
	unsetenv(ZKW_OWNER_ENV);
	assert_int_equal(zkw_cache_open(&c, f->name, NULL), -EPERM);
	assert_null(c);
	assert_int_equal(zkw_cache_open(&c, f->name, &told_root), -EPERM);
	assert_int_equal(zkw_cache_open(&c, f->name, &told), 0);
	zkw_cache_close(c);
	setenv(ZKW_OWNER_ENV, "65534", 1);
	assert_int_equal(zkw_cache_open(&c, f->name, NULL), 0);
	zkw_cache_close(c);
	unsetenv(ZKW_OWNER_ENV);
	assert_int_equal(fchown(fd, 0, 0), 0);
	assert_int_equal(fchmod(fd, 0660), 0);
	assert_int_equal(zkw_cache_open(&c, f->name, NULL), -EPERM);
	assert_int_equal(zkw_cache_open(&c, f->name, &told_root), -EPERM);
	assert_int_equal(fchmod(fd, 0640), 0);
	close(fd);
	assert_int_equal(zkw_cache_open(&c, f->name, NULL), 0);
	zkw_cache_close(c);
}

/* A writer that finds a reader's lock on the segment replaces it: the
 * cache reopens the name by itself and follows the new segment, with
 * rising generations. */
static void test_follows_a_replaced_segment(void **state)
{
	struct fixture *f = *state;
	zkw_writer_options opt = {.capacity = CAPACITY, .group = (gid_t)-1};
	const zkw_cache_snapshot *s;
	uint64_t gen;
	char why[512], report = 0;
	zkw_cache *c;
	int up[2], status;
	pid_t locker;

	gen = publish_next(f->w, f->buf);
	assert_int_equal(zkw_cache_open(&c, f->name, NULL), 0);
	wait_cache_generation(c, gen);
	zkw_writer_close(f->w, false);
	f->w = NULL;

	assert_int_equal(pipe(up), 0);
	locker = fork();
	assert_true(locker >= 0);
	if (locker == 0) {
		struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
		int fd = shm_open(f->name, O_RDONLY, 0);
		char c1 = fd >= 0 && fcntl(fd, F_OFD_SETLK, &fl) == 0 ? 'L' : 'E';

		if (write(up[1], &c1, 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	assert_int_equal(read(up[0], &report, 1), 1);
	assert_int_equal(report, 'L');

	if (zkw_writer_open(&f->w, f->name, &opt, why, sizeof(why)) != 0)
		fail_msg("writer could not replace the locked segment: %s", why);
	assert_non_null(strstr(zkw_writer_notice(f->w), "replaced"));
	gen = publish_next(f->w, f->buf);
	wait_cache_generation(c, gen);
	s = zkw_cache_get(c);
	assert_non_null(s);
	assert_int_equal(s->generation, gen);
	assert_null(check_snapshot(s));
	zkw_cache_put(c, s);
	assert_int_equal(zkw_cache_follower_error(c), 0);
	gen = publish_next(f->w, f->buf);
	wait_cache_generation(c, gen);
	zkw_cache_close(c);
	kill(locker, SIGKILL);
	assert_int_equal(waitpid(locker, &status, 0), locker);
	close(up[0]);
	close(up[1]);
}

static void test_empty_segment_reads_as_generation_zero(void **state)
{
	struct fixture *f = *state;
	const zkw_cache_snapshot *s;
	zkw_cache *c;

	assert_int_equal(zkw_cache_open(&c, f->name, NULL), 0);
	s = zkw_cache_get(c);
	assert_non_null(s);
	assert_int_equal(s->generation, 0);
	assert_int_equal(s->len, 0);
	assert_false(s->valid);
	assert_string_equal((const char *)s->content, "");
	zkw_cache_put(c, s);
	assert_int_equal(zkw_cache_wait(c, 0, 20), 0); /* timeout: nothing changes */
	zkw_cache_close(c);
}

static void test_snapshot_fields_and_circuit_breaker(void **state)
{
	struct fixture *f = *state;
	zkw_publication bad = {.keep_content = true,
	                       .connected = false,
	                       .error = "Connection interrupted with Zookeeper, re-establishing"};
	zkw_publication ptr = {.valid = true,
	                       .connected = true,
	                       .content = "ab\0c",
	                       .len = 4,
	                       .content_serial = 1000,
	                       .version = 7,
	                       .mzxid = 70,
	                       .pointer = "/tmp/real"};
	const zkw_cache_snapshot *s;
	zkw_cache *c;
	uint64_t gen = publish_next(f->w, f->buf);

	assert_int_equal(zkw_cache_open(&c, f->name, NULL), 0);
	s = zkw_cache_get(c);
	assert_int_equal(s->generation, gen);
	assert_null(check_snapshot(s));
	assert_int_equal(s->version, (int64_t)gen);
	assert_int_equal(s->mzxid, (int64_t)gen * 10);
	assert_string_equal(s->error, "");
	assert_string_equal(s->pointer, "");
	zkw_cache_put(c, s);

	/* Invalid: the last good content stays, with the error. */
	assert_int_equal(zkw_writer_publish(f->w, &bad), 0);
	wait_cache_generation(c, gen + 1);
	s = zkw_cache_get(c);
	assert_false(s->valid);
	assert_false(s->connected);
	assert_int_equal(s->content_gen, gen);
	assert_int_equal(s->len, content_len(gen));
	assert_string_equal(s->error, bad.error);
	zkw_cache_put(c, s);

	/* Binary content and the pointer path. */
	assert_int_equal(zkw_writer_publish(f->w, &ptr), 0);
	wait_cache_generation(c, gen + 2);
	s = zkw_cache_get(c);
	assert_true(s->valid);
	assert_int_equal(s->len, 4);
	assert_memory_equal(s->content, "ab\0c", 5);
	assert_string_equal(s->pointer, "/tmp/real");
	assert_int_equal(s->version, 7);
	assert_int_equal(s->content_gen, gen + 2);
	zkw_cache_put(c, s);
	assert_int_equal(zkw_cache_follower_error(c), 0);
	zkw_cache_close(c);
}

static void test_get_put_nest(void **state)
{
	struct fixture *f = *state;
	const zkw_cache_snapshot *outer, *inner;
	zkw_cache *c;

	publish_next(f->w, f->buf);
	assert_int_equal(zkw_cache_open(&c, f->name, NULL), 0);
	outer = zkw_cache_get(c);
	publish_next(f->w, f->buf);
	inner = zkw_cache_get(c);
	assert_true(inner->generation >= outer->generation);
	assert_int_equal(zkw_cache_shutdown(c), -EDEADLK); /* inside a read section */
	zkw_cache_put(c, inner);
	/* The outer snapshot is still ours: the follower cannot free it. */
	assert_null(check_snapshot(outer));
	zkw_cache_put(c, outer);
	zkw_cache_close(c);
}

static void test_wait_wakes_on_change_and_times_out(void **state)
{
	struct fixture *f = *state;
	zkw_cache *c;
	uint64_t g;
	int64_t t0;

	assert_int_equal(zkw_cache_open(&c, f->name, NULL), 0);
	g = zkw_cache_generation(c);
	t0 = (int64_t)zkw_clock_mono_ns();
	assert_int_equal(zkw_cache_wait(c, g, 50), 0);
	/* a real timeout, not an early return */
	assert_true((int64_t)zkw_clock_mono_ns() - t0 >= 45 * 1000000);
	publish_next(f->w, f->buf);
	assert_int_equal(zkw_cache_wait(c, g, WAIT_MS), 1);
	assert_int_equal(zkw_cache_generation(c), g + 1);
	assert_int_equal(zkw_cache_wait(c, g, 0), 1); /* already differs: no wait */
	zkw_cache_close(c);
}

/* Thousands of publishes, 8 readers checking every snapshot, the change
 * callback checking its own. */
static void test_stress_readers_and_callback(void **state)
{
	struct fixture *f = *state;
	struct changes ch = CHANGES_INIT;
	zkw_cache_options opt = {.on_change = on_change, .ctx = &ch};
	struct reader rs[READERS];
	struct publisher pub = {.w = f->w, .buf = f->buf, .count = STRESS_PUBLISHES};
	uint64_t total_distinct = 0, calls_before;
	int stop = 0, i;
	zkw_cache *c;

	assert_int_equal(zkw_cache_open(&c, f->name, &opt), 0);
	readers_start(rs, READERS, c, &stop, false, NULL);
	assert_int_equal(pthread_create(&pub.thread, NULL, publisher_main, &pub), 0);
	assert_int_equal(pthread_join(pub.thread, NULL), 0);
	assert_int_equal(pub.last, STRESS_PUBLISHES);
	wait_cache_generation(c, pub.last);
	changes_wait(&ch, pub.last);

	/* Paced: when the follower keeps up, every publish is one callback. */
	calls_before = changes_calls(&ch);
	for (i = 0; i < PACED_PUBLISHES; i++)
		changes_wait(&ch, publish_next(f->w, f->buf));
	assert_int_equal(changes_calls(&ch) - calls_before, PACED_PUBLISHES);
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	readers_join_and_check(rs, READERS);
	for (i = 0; i < READERS; i++)
		total_distinct += rs[i].distinct;
	zkw_cache_close(c); /* joins the follower: ch is final */

	if (ch.failure[0])
		fail_msg("%s", ch.failure);
	assert_int_equal(ch.last_gen, pub.last + PACED_PUBLISHES);
	assert_true(ch.calls > PACED_PUBLISHES && ch.calls <= (uint64_t)STRESS_PUBLISHES + PACED_PUBLISHES);
	assert_true(total_distinct > READERS); /* readers did see changes */
	print_message("stress: %d + %d publishes, %llu callbacks, readers saw %llu generation changes\n",
	              STRESS_PUBLISHES, PACED_PUBLISHES, (unsigned long long)ch.calls,
	              (unsigned long long)total_distinct);
}

/* A thread that holds a snapshot (without blocking) when shutdown starts:
 * shutdown must not return before that thread's put. */
struct holder {
	zkw_cache *c;
	sem_t got;
	const int *shutdown_started;
	int64_t put_ns;
	const char *bad;
};

static void *holder_main(void *arg)
{
	struct holder *h = arg;
	const zkw_cache_snapshot *s = zkw_cache_get(h->c);
	int64_t until;

	sem_post(&h->got);
	/* Busy, not blocked (the rule between get and put): spin until
	 * shutdown has started, then 20 ms more. */
	until = (int64_t)zkw_clock_mono_ns() + (int64_t)WAIT_MS * 1000000;
	while (!__atomic_load_n(h->shutdown_started, __ATOMIC_ACQUIRE) &&
	       (int64_t)zkw_clock_mono_ns() < until)
		zkw__cpu_relax();
	until = (int64_t)zkw_clock_mono_ns() + 20 * 1000000;
	while ((int64_t)zkw_clock_mono_ns() < until)
		zkw__cpu_relax();
	h->bad = s ? check_snapshot(s) : "NULL before shutdown";
	h->put_ns = (int64_t)zkw_clock_mono_ns();
	zkw_cache_put(h->c, s);
	return NULL;
}

/* Shutdown while 8 readers and a writer are running: every reader stops at
 * a NULL get; no snapshot is freed under a reader (ASan); shutdown waits
 * for a snapshot still held; wait() returns -ESHUTDOWN; close frees. */
static void test_shutdown_while_readers_active(void **state)
{
	struct fixture *f = *state;
	struct changes ch = CHANGES_INIT;
	zkw_cache_options opt = {.on_change = on_change, .ctx = &ch};
	struct reader rs[READERS];
	struct publisher pub = {.w = f->w, .buf = f->buf};
	struct holder h = {0};
	int stop_pub = 0, started = 0;
	uint64_t calls_after;
	int64_t returned_ns;
	sem_t warm;
	zkw_cache *c;

	pub.stop = &stop_pub;
	publish_next(f->w, f->buf);
	assert_int_equal(zkw_cache_open(&c, f->name, &opt), 0);
	assert_int_equal(sem_init(&warm, 0, 0), 0);
	readers_start(rs, READERS, c, NULL, true, &warm);
	assert_int_equal(pthread_create(&pub.thread, NULL, publisher_main, &pub), 0);
	sem_wait_bounded(&warm, READERS, "readers warmed up");

	h.c = c;
	h.shutdown_started = &started;
	assert_int_equal(sem_init(&h.got, 0, 0), 0);
	pthread_t holder;
	assert_int_equal(pthread_create(&holder, NULL, holder_main, &h), 0);
	sem_wait_bounded(&h.got, 1, "holder got a snapshot");

	__atomic_store_n(&started, 1, __ATOMIC_RELEASE);
	assert_int_equal(zkw_cache_shutdown(c), 0);
	returned_ns = (int64_t)zkw_clock_mono_ns();
	calls_after = changes_calls(&ch);

	assert_int_equal(pthread_join(holder, NULL), 0);
	assert_null(h.bad);
	assert_true(h.put_ns <= returned_ns); /* the grace period waited for it */

	readers_join_and_check(rs, READERS); /* each stopped at its first NULL */
	for (int i = 0; i < READERS; i++)
		assert_true(rs[i].saw_null);

	/* After shutdown: NULL, -ESHUTDOWN, idempotent, no more callbacks
	 * although the writer keeps publishing. */
	assert_null(zkw_cache_get(c));
	zkw_cache_put(c, NULL);
	assert_int_equal(zkw_cache_wait(c, zkw_cache_generation(c), WAIT_MS), -ESHUTDOWN);
	assert_int_equal(zkw_cache_shutdown(c), 0);
	__atomic_store_n(&stop_pub, 1, __ATOMIC_RELEASE);
	assert_int_equal(pthread_join(pub.thread, NULL), 0);
	publish_next(f->w, f->buf);
	assert_int_equal(changes_calls(&ch), calls_after);
	if (ch.failure[0])
		fail_msg("%s", ch.failure);
	zkw_cache_close(c);
	sem_destroy(&warm);
	sem_destroy(&h.got);
}

/* A thread blocked in zkw_cache_wait() forever is released by shutdown. */
struct waiter {
	zkw_cache *c;
	uint64_t seen;
	sem_t ready;
	int rc;
};

static void *waiter_main(void *arg)
{
	struct waiter *wt = arg;

	sem_post(&wt->ready);
	wt->rc = zkw_cache_wait(wt->c, wt->seen, -1);
	return NULL;
}

static void test_shutdown_releases_waiters(void **state)
{
	struct fixture *f = *state;
	struct waiter wt = {0};
	pthread_t t;
	int64_t t0;

	assert_int_equal(zkw_cache_open(&wt.c, f->name, NULL), 0);
	wt.seen = zkw_cache_generation(wt.c);
	assert_int_equal(sem_init(&wt.ready, 0, 0), 0);
	assert_int_equal(pthread_create(&t, NULL, waiter_main, &wt), 0);
	sem_wait_bounded(&wt.ready, 1, "waiter started");
	/* Whether it is already in the futex or not, it must return. */
	t0 = (int64_t)zkw_clock_mono_ns();
	assert_int_equal(zkw_cache_shutdown(wt.c), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(wt.rc, -ESHUTDOWN);
	/* Prompt: the follower is woken, not polled (futex_waitv). */
	assert_true((int64_t)zkw_clock_mono_ns() - t0 < 1000 * 1000000LL);
	zkw_cache_close(wt.c);
	sem_destroy(&wt.ready);
}

/* on_change may not shut its own cache down (it would join itself). */
struct self_stop {
	zkw_cache *c;
	int rc;
	sem_t called;
};

static void on_change_shutdown(void *ctx, const zkw_cache_snapshot *s)
{
	struct self_stop *ss = ctx;

	(void)s;
	ss->rc = zkw_cache_shutdown(__atomic_load_n(&ss->c, __ATOMIC_ACQUIRE));
	sem_post(&ss->called);
}

static void test_shutdown_from_callback_refused(void **state)
{
	struct fixture *f = *state;
	struct self_stop ss = {0};
	zkw_cache_options opt = {.on_change = on_change_shutdown, .ctx = &ss};
	zkw_cache *c;

	assert_int_equal(sem_init(&ss.called, 0, 0), 0);
	assert_int_equal(zkw_cache_open(&c, f->name, &opt), 0);
	__atomic_store_n(&ss.c, c, __ATOMIC_RELEASE);
	publish_next(f->w, f->buf);
	sem_wait_bounded(&ss.called, 1, "on_change called");
	assert_int_equal(ss.rc, -EDEADLK);
	zkw_cache_close(c);
	sem_destroy(&ss.called);
}

/* Threads register lazily, may unregister early and register again; many
 * short-lived threads leave nothing registered behind (the key destructor):
 * a later grace period would otherwise touch their dead TLS. */
static void *short_lived(void *arg)
{
	zkw_cache *c = arg;
	const zkw_cache_snapshot *s = zkw_cache_get(c);
	intptr_t ok = s != NULL && check_snapshot(s) == NULL;

	zkw_cache_put(c, s);
	if ((intptr_t)pthread_self() & 1) { /* half of them unregister early */
		zkw_cache_thread_exit();
		s = zkw_cache_get(c);
		ok &= s != NULL;
		zkw_cache_put(c, s);
		zkw_cache_thread_exit();
	}
	return (void *)ok;
}

static void test_thread_registration(void **state)
{
	struct fixture *f = *state;
	zkw_cache *c;
	int i;

	publish_next(f->w, f->buf);
	assert_int_equal(zkw_cache_open(&c, f->name, NULL), 0);
	for (i = 0; i < 200; i++) {
		pthread_t t;
		void *ok;

		assert_int_equal(pthread_create(&t, NULL, short_lived, c), 0);
		assert_int_equal(pthread_join(t, &ok), 0);
		assert_true(ok != NULL);
		if (i % 50 == 0) { /* grace periods over the registry */
			publish_next(f->w, f->buf);
			wait_cache_generation(c, zkw_writer_generation(f->w));
		}
	}
	zkw_cache_close(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_open_missing_segment_is_enoent),
	        cmocka_unit_test_setup_teardown(test_expected_uid, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_owner_policy, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_follows_a_replaced_segment, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_empty_segment_reads_as_generation_zero, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_snapshot_fields_and_circuit_breaker, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_get_put_nest, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_wait_wakes_on_change_and_times_out, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_stress_readers_and_callback, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_shutdown_while_readers_active, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_shutdown_releases_waiters, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_shutdown_from_callback_refused, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_thread_registration, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
