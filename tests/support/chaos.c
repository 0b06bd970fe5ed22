/* SPDX-License-Identifier: Apache-2.0 */
/* chaos.c - the moving parts of fault tests (see chaos.h). */
#include "chaos.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zookeeper/zookeeper.h>
#include <zkw/client.h>

#include "zkh.h"
#include "zkw_clock.h"
#include "zkw_zk.h"

#define CHAOS_DISPATCH_MS   200  /* a reader's zkw_dispatch timeout */
#define CHAOS_HANG_SLACK_MS 2000 /* overrun that counts as a hang (2-core box) */
#define CHAOS_MAX_READERS   64
#define CHAOS_READER_BUF    (ZKW_DEFAULT_CAPACITY + 4096)

uint64_t chaos_rand(uint64_t *s)
{
	uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ULL;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dULL;
}

/* ---- content ---------------------------------------------------------- */

static uint32_t content_crc32(const uint8_t *p, size_t n)
{
	uint32_t crc = 0xffffffffu;

	for (size_t i = 0; i < n; i++) {
		crc ^= p[i];
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xedb88320u & -(crc & 1u));
	}
	return ~crc;
}

size_t chaos_content(void *buf, size_t cap, uint64_t seq)
{
	uint64_t rng = seq * 0x9e3779b97f4a7c15ULL + 1;
	size_t payload = 64 + chaos_rand(&rng) % (6000 - 64);
	char *out = buf;
	int head;

	if (cap < payload + 64)
		return 0;
	/* Payload first (after room for the header), then the header over it. */
	uint8_t *p = (uint8_t *)out + 64;
	for (size_t i = 0; i < payload; i++)
		p[i] = (uint8_t)chaos_rand(&rng);
	head = snprintf(out, 64, "zkwc1 seq=%" PRIu64 " n=%zu crc=%08x\n", seq, payload,
	                content_crc32(p, payload));
	memmove(out + head, p, payload);
	return (size_t)head + payload;
}

int chaos_check(const void *buf, size_t len, uint64_t *seq)
{
	const char *s = buf;
	const char *nl;
	uint64_t sq;
	size_t n;
	unsigned crc;
	char head[80];

	if (len == 0)
		return 0;
	nl = memchr(s, '\n', len < sizeof(head) ? len : sizeof(head) - 1);
	if (!nl)
		return -1;
	memcpy(head, s, (size_t)(nl - s));
	head[nl - s] = '\0';
	if (sscanf(head, "zkwc1 seq=%" SCNu64 " n=%zu crc=%x", &sq, &n, &crc) != 3)
		return -1;
	if ((size_t)(nl + 1 - s) + n != len)
		return -1;
	if (content_crc32((const uint8_t *)nl + 1, n) != crc)
		return -1;
	if (seq)
		*seq = sq;
	return 1;
}

/* ---- readers ---------------------------------------------------------- */

/* One reader's view, written by it (relaxed atomics), read by the test. */
struct chaos_reader_slot {
	uint64_t c[12];    /* chaos_totals fields, same order, readers excluded */
	uint64_t last_seq; /* seq of the latest snapshot's content, 0 = none */
	uint64_t last_gen; /* generation of the latest snapshot */
	uint32_t last_valid;
	uint32_t opened;
	char note[256]; /* first problem, for the failure message */
};
enum { C_SNAP, C_CONFIG, C_DISTINCT, C_TORN, C_DUP, C_SEQREG, C_GENREG, C_CGENREG, C_HANG, C_ERR, C_MAXMS };

struct chaos_shared {
	uint32_t progress; /* futex word: bumped after every reader update */
	uint32_t stop;
	struct chaos_reader_slot r[CHAOS_MAX_READERS];
};

struct chaos_readers {
	struct chaos_shared *sh;
	int n;
	pid_t pid[CHAOS_MAX_READERS];
	char shm[ZKW_SHM_NAME_MAX + 1];
};

static void bump(struct chaos_shared *sh)
{
	__atomic_fetch_add(&sh->progress, 1, __ATOMIC_RELEASE);
	syscall(SYS_futex, &sh->progress, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static void count_add(struct chaos_reader_slot *r, int k, uint64_t v)
{
	__atomic_fetch_add(&r->c[k], v, __ATOMIC_RELAXED);
}

static void note(struct chaos_reader_slot *r, const char *what, uint64_t a, uint64_t b)
{
	if (r->note[0])
		return;
	snprintf(r->note, sizeof(r->note), "%s (%" PRIu64 ", %" PRIu64 ")", what, a, b);
}

/* The reader child's own state (it has one dispatcher). */
struct reader_child {
	struct chaos_reader_slot *slot;
	uint8_t *buf;
	zkw_dispatcher *d;
	uint64_t last_cgen;
	uint64_t last_config_seq;
	uint64_t max_seq;
	uint32_t last_crc;
	size_t last_len;
	bool any_config;
};

static void on_config(void *ctx, const void *content, size_t len)
{
	struct reader_child *c = ctx;
	uint64_t seq = 0, cgen = c->d->snap.content_gen;
	int ok = chaos_check(content, len, &seq);
	uint32_t crc = content_crc32(content, len);

	count_add(c->slot, C_CONFIG, 1);
	if (ok < 0) {
		count_add(c->slot, C_TORN, 1);
		note(c->slot, "config() with torn content, len/gen", len, c->d->snap.generation);
	}
	/* The same bytes twice in a row: a duplicate when the content did not
	 * change in between (content_gen did not rise); when it did, the
	 * content went to something else and back faster than this reader
	 * dispatched (a pointer switched A -> B -> A): a return to an earlier
	 * content, counted with the sequence regressions, which only pointer
	 * readers may see. */
	if (c->any_config && len == c->last_len && crc == c->last_crc) {
		if (cgen <= c->last_cgen) {
			count_add(c->slot, C_DUP, 1);
			note(c->slot, "config() twice for one content, seq/gen", seq, c->d->snap.generation);
		} else {
			count_add(c->slot, C_SEQREG, 1);
		}
	}
	if (c->any_config && cgen <= c->last_cgen) {
		count_add(c->slot, C_CGENREG, 1);
		note(c->slot, "content_gen not rising", c->last_cgen, cgen);
	}
	if (c->any_config && seq < c->last_config_seq)
		count_add(c->slot, C_SEQREG, 1);
	if (!c->any_config || seq > c->max_seq) {
		count_add(c->slot, C_DISTINCT, 1);
		c->max_seq = seq;
	}
	c->any_config = true;
	c->last_cgen = cgen;
	c->last_config_seq = seq;
	c->last_crc = crc;
	c->last_len = len;
}

static void reader_main(struct chaos_shared *sh, int idx, const char *shm)
{
	struct chaos_reader_slot *slot = &sh->r[idx];
	zkw_reader r;
	zkw_dispatcher d;
	struct reader_child c = {.slot = slot, .d = &d};
	zkw_handlers h = {.config = on_config, .ctx = &c};
	uint64_t last_gen = 0;

	c.buf = mmap(NULL, CHAOS_READER_BUF, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (c.buf == MAP_FAILED)
		_exit(3);
	/* The segment may not exist yet, or be mid-creation (magic still 0):
	 * there is no event to wait for, so retry at a modest pace. */
	while (zkw_reader_open(&r, shm) != 0) {
		if (__atomic_load_n(&sh->stop, __ATOMIC_ACQUIRE))
			_exit(0);
		zkw_clock_sleep_ms(20);
	}
	__atomic_store_n(&slot->opened, 1, __ATOMIC_RELEASE);
	zkw_dispatcher_init(&d, &r, &h, c.buf, CHAOS_READER_BUF);
	while (!__atomic_load_n(&sh->stop, __ATOMIC_ACQUIRE)) {
		int64_t t0 = zkw_clock_mono_ms(), dt;
		int rc = zkw_dispatch(&d, CHAOS_DISPATCH_MS);

		dt = zkw_clock_mono_ms() - t0;
		if ((uint64_t)dt > __atomic_load_n(&slot->c[C_MAXMS], __ATOMIC_RELAXED))
			__atomic_store_n(&slot->c[C_MAXMS], (uint64_t)dt, __ATOMIC_RELAXED);
		if (dt > CHAOS_DISPATCH_MS + CHAOS_HANG_SLACK_MS) {
			count_add(slot, C_HANG, 1);
			note(slot, "zkw_dispatch hung, ms/gen", (uint64_t)dt, d.seen);
		}
		if (rc == -ESTALE) {
			/* The broker replaced the segment (it grew, or a reader
			 * lock was in its way): reopen the name and go on with
			 * the same dispatcher, as client.h says; generations and
			 * content_gen continue, so nothing is delivered twice. */
			zkw_reader_close(&r);
			while (zkw_reader_open(&r, shm) != 0) {
				if (__atomic_load_n(&sh->stop, __ATOMIC_ACQUIRE))
					_exit(0);
				zkw_clock_sleep_ms(20);
			}
			continue;
		}
		if (rc < 0 && rc != -EINTR) {
			count_add(slot, C_ERR, 1);
			note(slot, "zkw_dispatch error, -errno/gen", (uint64_t)-rc, d.seen);
			zkw_clock_sleep_ms(10);
			continue;
		}
		if (d.snap.generation == last_gen)
			continue; /* timeout: nothing new */
		uint64_t seq = 0;
		int ok = chaos_check(c.buf, d.snap.len, &seq);

		count_add(slot, C_SNAP, 1);
		if (ok < 0) {
			count_add(slot, C_TORN, 1);
			note(slot, "torn snapshot, len/gen", d.snap.len, d.snap.generation);
		}
		if (d.snap.generation < last_gen) {
			count_add(slot, C_GENREG, 1);
			note(slot, "generation went back", last_gen, d.snap.generation);
		}
		last_gen = d.snap.generation;
		__atomic_store_n(&slot->last_seq, ok > 0 ? seq : 0, __ATOMIC_RELAXED);
		__atomic_store_n(&slot->last_valid, d.snap.valid, __ATOMIC_RELAXED);
		__atomic_store_n(&slot->last_gen, last_gen, __ATOMIC_RELEASE);
		bump(sh);
	}
	zkw_reader_close(&r);
	_exit(0);
}

chaos_readers *chaos_readers_start(const char *shm, int n)
{
	chaos_readers *rd;

	if (n < 1 || n > CHAOS_MAX_READERS)
		return NULL;
	rd = calloc(1, sizeof(*rd));
	if (!rd)
		return NULL;
	rd->sh = mmap(NULL, sizeof(*rd->sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (rd->sh == MAP_FAILED) {
		free(rd);
		return NULL;
	}
	snprintf(rd->shm, sizeof(rd->shm), "%s", shm);
	for (int i = 0; i < n; i++) {
		pid_t pid = proc_fork();

		if (pid == 0)
			reader_main(rd->sh, i, rd->shm);
		if (pid < 0) {
			fprintf(stderr, "chaos: fork: %s\n", strerror(-pid));
			chaos_readers_stop(rd, 5000, NULL);
			return NULL;
		}
		rd->pid[i] = pid;
		rd->n = i + 1;
	}
	return rd;
}

static void report(chaos_readers *rd, const char *why)
{
	fprintf(stderr, "chaos: %s\n", why);
	for (int i = 0; i < rd->n; i++) {
		struct chaos_reader_slot *s = &rd->sh->r[i];
		fprintf(stderr,
		        "  reader %d (pid %d): opened=%u gen=%" PRIu64 " valid=%u seq=%" PRIu64
		        " snapshots=%" PRIu64 " configs=%" PRIu64 "%s%s\n",
		        i, (int)rd->pid[i], s->opened, s->last_gen, s->last_valid, s->last_seq, s->c[C_SNAP],
		        s->c[C_CONFIG], s->note[0] ? " first problem: " : "", s->note);
	}
}

/* Wait on the progress word until pred holds for every reader. */
static bool readers_wait(chaos_readers *rd, bool (*pred)(const struct chaos_reader_slot *, uint64_t),
                         uint64_t arg, int timeout_ms, const char *what)
{
	int64_t deadline = zkw_clock_mono_ms() + timeout_ms;

	for (;;) {
		uint32_t word = __atomic_load_n(&rd->sh->progress, __ATOMIC_ACQUIRE);
		int ok = 0;

		for (int i = 0; i < rd->n; i++)
			ok += pred(&rd->sh->r[i], arg);
		if (ok == rd->n)
			return true;
		int64_t left = deadline - zkw_clock_mono_ms();
		if (left <= 0) {
			char why[160];
			snprintf(why, sizeof(why), "readers did not reach %s %" PRIu64 " within %d ms", what,
			         arg, timeout_ms);
			report(rd, why);
			return false;
		}
		struct timespec rel = zkw_clock_timespec((uint64_t)left * 1000000u);
		syscall(SYS_futex, &rd->sh->progress, FUTEX_WAIT, word, &rel, NULL, 0);
	}
}

static bool at_seq(const struct chaos_reader_slot *s, uint64_t seq)
{
	return __atomic_load_n(&s->last_gen, __ATOMIC_ACQUIRE) && s->last_valid &&
	       __atomic_load_n(&s->last_seq, __ATOMIC_RELAXED) == seq;
}

static bool at_gen(const struct chaos_reader_slot *s, uint64_t gen)
{
	return __atomic_load_n(&s->last_gen, __ATOMIC_ACQUIRE) >= gen;
}

bool chaos_readers_wait_seq(chaos_readers *rd, uint64_t seq, int timeout_ms)
{
	return readers_wait(rd, at_seq, seq, timeout_ms, "valid content seq");
}

bool chaos_readers_wait_gen(chaos_readers *rd, uint64_t gen, int timeout_ms)
{
	return readers_wait(rd, at_gen, gen, timeout_ms, "generation");
}

void chaos_readers_totals(chaos_readers *rd, chaos_totals *t)
{
	uint64_t *f = &t->snapshots;

	memset(t, 0, sizeof(*t));
	t->readers = (uint64_t)rd->n;
	for (int i = 0; i < rd->n; i++) {
		for (int k = 0; k < C_MAXMS; k++)
			f[k] += __atomic_load_n(&rd->sh->r[i].c[k], __ATOMIC_RELAXED);
		uint64_t ms = __atomic_load_n(&rd->sh->r[i].c[C_MAXMS], __ATOMIC_RELAXED);
		if (ms > t->max_dispatch_ms)
			t->max_dispatch_ms = ms;
	}
}

int chaos_readers_stop(chaos_readers *rd, int timeout_ms, chaos_totals *t)
{
	int64_t deadline = zkw_clock_mono_ms() + timeout_ms;
	int bad = 0;

	if (!rd)
		return 0;
	__atomic_store_n(&rd->sh->stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < rd->n; i++) {
		/* Readers notice stop within one dispatch timeout. */
		int64_t left = deadline - zkw_clock_mono_ms();
		int status = proc_reap_pid(rd->pid[i], left > 0 ? (int)left : 0);

		if (status == -1) {
			fprintf(stderr, "chaos: reader %d (pid %d) did not stop in %d ms: killed\n", i,
			        (int)rd->pid[i], timeout_ms);
			bad++;
		} else if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
			fprintf(stderr, "chaos: reader %d (pid %d) ended with status 0x%x\n", i,
			        (int)rd->pid[i], status);
			bad++;
		}
	}
	if (t)
		chaos_readers_totals(rd, t);
	for (int i = 0; i < rd->n; i++)
		if (rd->sh->r[i].note[0])
			fprintf(stderr, "chaos: reader %d first problem: %s\n", i, rd->sh->r[i].note);
	munmap(rd->sh, sizeof(*rd->sh));
	free(rd);
	return bad;
}

void chaos_totals_print(FILE *out, const chaos_totals *t, const char *label)
{
	fprintf(out,
	        "%s: readers=%" PRIu64 " snapshots=%" PRIu64 " configs=%" PRIu64 " distinct=%" PRIu64
	        " torn=%" PRIu64 " dups=%" PRIu64 " seq_regress=%" PRIu64 " gen_regress=%" PRIu64
	        " content_gen_regress=%" PRIu64 " hangs=%" PRIu64 " errors=%" PRIu64
	        " max_dispatch_ms=%" PRIu64 "\n",
	        label, t->readers, t->snapshots, t->configs, t->distinct, t->torn, t->dups, t->seq_regress,
	        t->gen_regress, t->cgen_regress, t->hangs, t->errors, t->max_dispatch_ms);
}

bool chaos_totals_clean(const chaos_totals *t, bool strict, const char *label)
{
	bool ok = t->torn == 0 && t->dups == 0 && t->gen_regress == 0 && t->cgen_regress == 0 &&
	          t->hangs == 0 && t->errors == 0;

	if (strict)
		ok = ok && t->seq_regress == 0 && t->configs == t->distinct;
	chaos_totals_print(stderr, t, label);
	return ok;
}

/* ---- writer ----------------------------------------------------------- */

struct chaos_writer {
	char hosts[1024];
	char path[512];
	uint64_t seq;
	int pace_ms;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond; /* CLOCK_MONOTONIC */
	bool stop;
	uint64_t acked;
	/* the one outstanding write */
	bool pending;
	int result;
};

static void writer_done(int rc, const struct Stat *stat, const void *data)
{
	struct chaos_writer *w = (struct chaos_writer *)data;

	(void)stat;
	pthread_mutex_lock(&w->lock);
	w->pending = false;
	w->result = rc;
	if (rc == ZOK)
		w->acked++;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

static void no_watch(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
	(void)zh, (void)type, (void)state, (void)path, (void)ctx;
}

static void *writer_main(void *arg)
{
	struct chaos_writer *w = arg;
	char buf[CHAOS_CONTENT_MAX];
	zhandle_t *zh = zookeeper_init2(w->hosts, no_watch, 4000, NULL, NULL, 0, zkw_zk_quiet_log);

	pthread_mutex_lock(&w->lock);
	while (zh && !w->stop) {
		size_t len = chaos_content(buf, sizeof(buf), w->seq);

		w->pending = true;
		pthread_mutex_unlock(&w->lock);
		int rc = zoo_aset(zh, w->path, buf, (int)len, -1, writer_done, w);
		pthread_mutex_lock(&w->lock);
		if (rc != ZOK) { /* not even queued (expired/closing handle) */
			w->pending = false;
			if (rc == ZINVALIDSTATE) {
				/* expired: start a new handle */
				pthread_mutex_unlock(&w->lock);
				zookeeper_close(zh);
				zh = zookeeper_init2(w->hosts, no_watch, 4000, NULL, NULL, 0,
				                     zkw_zk_quiet_log);
				pthread_mutex_lock(&w->lock);
			}
		}
		/* Completions are bounded by the client (connection loss fails
		 * them); wake early on stop. */
		while (w->pending && !w->stop)
			pthread_cond_wait(&w->cond, &w->lock);
		w->seq++;
		if (w->stop)
			break;
		if (w->pace_ms > 0 || (!w->pending && w->result != ZOK)) {
			struct timespec until =
			        zkw_clock_deadline_ms(CLOCK_MONOTONIC, w->pace_ms > 0 ? w->pace_ms : 20);

			while (!w->stop && pthread_cond_timedwait(&w->cond, &w->lock, &until) != ETIMEDOUT)
				;
		}
	}
	pthread_mutex_unlock(&w->lock);
	if (zh)
		zookeeper_close(zh); /* runs any pending completion (ZCLOSING) */
	return NULL;
}

chaos_writer *chaos_writer_start(const char *hosts, const char *path, uint64_t first_seq, int pace_ms)
{
	chaos_writer *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	snprintf(w->hosts, sizeof(w->hosts), "%s", hosts);
	snprintf(w->path, sizeof(w->path), "%s", path);
	w->seq = first_seq;
	w->pace_ms = pace_ms;
	pthread_mutex_init(&w->lock, NULL);
	zkw_clock_cond_init(&w->cond);
	if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
		free(w);
		return NULL;
	}
	return w;
}

uint64_t chaos_writer_acked(chaos_writer *w)
{
	pthread_mutex_lock(&w->lock);
	uint64_t n = w->acked;
	pthread_mutex_unlock(&w->lock);
	return n;
}

bool chaos_writer_wait_more(chaos_writer *w, uint64_t more, int timeout_ms)
{
	struct timespec until = zkw_clock_deadline_ms(CLOCK_MONOTONIC, timeout_ms);
	bool ok;

	pthread_mutex_lock(&w->lock);
	uint64_t target = w->acked + more;
	while (w->acked < target && pthread_cond_timedwait(&w->cond, &w->lock, &until) != ETIMEDOUT)
		;
	ok = w->acked >= target;
	if (!ok)
		fprintf(stderr,
		        "chaos: writer acknowledged %" PRIu64 " of %" PRIu64
		        " more writes in %d ms (last rc %d)\n",
		        w->acked + more - target, more, timeout_ms, w->result);
	pthread_mutex_unlock(&w->lock);
	return ok;
}

uint64_t chaos_writer_stop(chaos_writer *w)
{
	uint64_t next;

	if (!w)
		return 0;
	pthread_mutex_lock(&w->lock);
	w->stop = true;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
	pthread_join(w->thread, NULL);
	next = w->seq + 1;
	pthread_cond_destroy(&w->cond);
	pthread_mutex_destroy(&w->lock);
	free(w);
	return next;
}

int chaos_zk_seq(const char *hosts, const char *path, uint64_t *seq, int timeout_ms)
{
	int64_t deadline = zkw_clock_mono_ms() + timeout_ms;
	static char buf[CHAOS_CONTENT_MAX];
	int rc;

	for (;;) {
		int len = (int)sizeof(buf);

		rc = zkh_get(hosts, path, buf, &len);
		if (rc == ZOK)
			return chaos_check(buf, (size_t)(len < 0 ? 0 : len), seq) > 0 ? 0 : -1;
		if (zkw_clock_mono_ms() >= deadline) {
			fprintf(stderr, "chaos: cannot read %s from %s: %s\n", path, hosts, zerror(rc));
			return rc;
		}
		zkw_clock_sleep_ms(100); /* no quorum yet: nothing to wait on but time */
	}
}

int chaos_zk_put(const char *hosts, const char *path, uint64_t seq, int timeout_ms)
{
	int64_t deadline = zkw_clock_mono_ms() + timeout_ms;
	char buf[CHAOS_CONTENT_MAX];
	size_t len = chaos_content(buf, sizeof(buf), seq);
	int rc;

	while ((rc = zkh_set(hosts, path, buf, (int)len)) != ZOK && zkw_clock_mono_ms() < deadline)
		zkw_clock_sleep_ms(100);
	return rc;
}

/* ---- broker ----------------------------------------------------------- */

proc *chaos_broker_start(const char *hosts, const char *path, const char *shm, int session_ms,
                         const char *const *env)
{
	char session[16];
	const char *argv[] = {"-z",
	                      hosts,
	                      "-f",
	                      path,
	                      "--shm",
	                      shm,
	                      "--session-timeout",
	                      session,
	                      "--reconcile",
	                      "0",
	                      "--init-timeout",
	                      "30000",
	                      NULL};
	proc_options o = {.env = env};
	proc *b;

	snprintf(session, sizeof(session), "%d", session_ms);
	b = proc_spawn_opts("zkw-broker", argv, &o);
	if (!b)
		return NULL;
	if (!proc_wait_output(b, PROC_STDERR, "connected to ZooKeeper, session 0x", 40000)) {
		proc_free(b);
		return NULL;
	}
	return b;
}

int chaos_broker_sessions(proc *b, uint64_t *ids, int max)
{
	static const char needle[] = "connected to ZooKeeper, session 0x";
	char *out = proc_output(b, PROC_STDERR, NULL);
	int n = 0;

	for (char *p = out; p && n < max && (p = strstr(p, needle)); p += sizeof(needle) - 1)
		ids[n++] = strtoull(p + sizeof(needle) - 1, NULL, 16);
	free(out);
	return n;
}

static int count_dir(pid_t pid, const char *what)
{
	char path[64];
	struct dirent *e;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, what);
	if (!(d = opendir(path)))
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

int chaos_thread_count(pid_t pid)
{
	return count_dir(pid, "task");
}

int chaos_fd_count(pid_t pid)
{
	return count_dir(pid, "fd");
}
