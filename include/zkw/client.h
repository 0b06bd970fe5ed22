/* client.h - header-only, lock-free reader of a zkw shared-memory segment.
 *
 * A worker process reads the configuration a zkw-broker publishes, with no
 * ZooKeeper session, no lock and no syscall on the read path. Depends on
 * libc and the futex syscall only; never allocates; compiles as C and C++.
 *
 *     zkw_reader r;
 *     if (zkw_reader_open(&r, "/zkw.tmp.myconfig") == 0) {
 *             uint64_t seen = 0;
 *             while (zkw_reader_wait(&r, seen, -1) == 1) {
 *                     zkw_snapshot meta;
 *                     ssize_t n = zkw_reader_read(&r, &meta, buf, sizeof(buf));
 *                     if (n >= 0) { seen = meta.generation; use(buf, n); }
 *             }
 *             zkw_reader_close(&r);
 *     }
 *
 * Poll: zkw_reader_generation() is one acquire load; compare it with the
 * generation you last consumed. Read: zkw_reader_read() copies a consistent
 * snapshot (seqlock, bounded retries). Wait: zkw_reader_wait() blocks on the
 * segment's futex word until the generation moves or a deadline passes.
 *
 * Caveats, as with libc: zkw_reader_wait() returns -EINTR when a signal
 * arrives; a reader trusts the segment's owner not to shrink it (demand the
 * owner uid with zkw_reader_open_ex() when the name is not yours).
 */
#ifndef ZKW_CLIENT_H
#define ZKW_CLIENT_H

#if defined(__STRICT_ANSI__) && !defined(_GNU_SOURCE) && !defined(_DEFAULT_SOURCE)
#error "zkw/client.h needs syscall(2): define _DEFAULT_SOURCE or _GNU_SOURCE (or use -std=gnu11)"
#endif

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <zkw/segment.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef F_OFD_GETLK /* Linux >= 3.15; glibc hides it without _GNU_SOURCE */
#define F_OFD_GETLK 36
#endif

#ifndef ZKW_READ_RETRIES
#define ZKW_READ_RETRIES 4096 /* seqlock retries before -EAGAIN */
#endif
#define ZKW_SHM_NAME_MAX 255 /* NAME_MAX, including the leading '/' */

typedef struct zkw_reader {
	const uint8_t *base; /* PROT_READ mapping */
	size_t map_size;
	int fd;              /* kept for ping's lock probe */
	uint32_t slot_count; /* cached at open: never re-read from the */
	uint64_t slot_size;  /* segment, so a hostile writer cannot */
	uint64_t capacity;   /* steer a reader out of bounds */
	const char *why;     /* static text naming the last open error */
} zkw_reader;

typedef struct zkw_snapshot {
	uint64_t generation;
	bool valid;
	bool connected;
	size_t len;      /* content length (needed size on -ENOBUFS) */
	int64_t version; /* ZooKeeper data version, -1 if none */
	int64_t mzxid;
	uint64_t confirmed_ns; /* CLOCK_REALTIME of the last confirmation */
	uint64_t changed_ns;   /* CLOCK_REALTIME the content last changed */
	uint64_t content_gen;  /* generation at which this content appeared */
	char error[ZKW_ERROR_MAX];
	char pointer[ZKW_POINTER_MAX];
} zkw_snapshot;

typedef struct zkw_reader_options {
	/* refuse a segment not owned by this uid; (uid_t)-1 accepts any */
	uid_t expected_uid;
} zkw_reader_options;

/* ---- names ------------------------------------------------------------ */

/* Normalise a segment name: "name" or "/name", no other '/', 1..254 chars
 * after the slash. 0 or -EINVAL / -ENAMETOOLONG. */
static inline int zkw_shm_name(char *out, size_t cap, const char *name)
{
	size_t n;

	if (!name || !*name || strcmp(name, "/") == 0)
		return -EINVAL;
	if (*name == '/')
		name++;
	if (strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return -EINVAL;
	n = strlen(name);
	if (n + 2 > cap || n + 1 > ZKW_SHM_NAME_MAX)
		return -ENAMETOOLONG;
	out[0] = '/';
	memcpy(out + 1, name, n + 1);
	return 0;
}

/* The default name of the segment that mirrors a ZooKeeper path:
 * "zkw" + path with '/' turned into '.'  ("/tmp/myconfig" -> "/zkw.tmp.myconfig"). */
static inline int zkw_shm_default_name(char *out, size_t cap, const char *zk_path)
{
	size_t n, i;

	if (!zk_path || zk_path[0] != '/')
		return -EINVAL;
	n = strlen(zk_path);
	if (n + 5 > cap || n + 4 > ZKW_SHM_NAME_MAX)
		return -ENAMETOOLONG;
	memcpy(out, "/zkw", 4);
	for (i = 0; i < n; i++)
		out[4 + i] = zk_path[i] == '/' ? '.' : zk_path[i];
	out[4 + n] = '\0';
	return 0;
}

/* ---- side effects, one small function each ---------------------------- */

static inline long zkw__futex(const uint32_t *word, int op, uint32_t val, const struct timespec *deadline,
                              uint32_t bitset)
{
	/* Non-private: the word is shared between processes. */
	return syscall(SYS_futex, word, op, val, deadline, NULL, bitset);
}

static inline uint64_t zkw__now_ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void zkw__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#endif
}

/* ---- segment access --------------------------------------------------- */

static inline const struct zkw_segment_header *zkw__header(const zkw_reader *r)
{
	return (const struct zkw_segment_header *)(const void *)r->base;
}

static inline const struct zkw_slot *zkw__slot(const zkw_reader *r, uint64_t generation)
{
	return (const struct zkw_slot *)(const void *)(r->base + ZKW_HEADER_SIZE +
	                                               (generation % r->slot_count) * r->slot_size);
}

/* Copy n bytes of seqlock-protected payload out of the segment.
 *
 * The writer may be storing these bytes concurrently; the seqlock re-check
 * discards such a copy. For that to be race-free under the C11 model the
 * loads must be atomic (Boehm, "Can seqlocks get along with programming
 * language memory models?"). Relaxed 64-bit atomic loads are, but compilers
 * will not vectorise them, which makes a 4 KiB copy 2.3x a memcpy. On x86-64
 * the copy is therefore one `rep movsb` in an asm statement: opaque to the
 * compiler (no C-level access, so no C-level race), it is the "byte-wise
 * atomic memcpy" of C++ proposal P1478, and with FSRM/ERMS it runs at memcpy
 * speed. Elsewhere, and under ThreadSanitizer (which must see the atomics),
 * relaxed word loads are used. src is 8-byte aligned. */
static inline void zkw__copy_in(void *dst, const void *src, size_t n)
{
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__) && !defined(ZKW_PORTABLE_COPY)
	__asm__ __volatile__("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
#else
	const uint64_t *s = (const uint64_t *)src;
	unsigned char *d = (unsigned char *)dst;
	size_t i, words = n / 8;

	for (i = 0; i < words; i++) {
		uint64_t w = __atomic_load_n(&s[i], __ATOMIC_RELAXED);
		memcpy(d + 8 * i, &w, 8);
	}
	if (n % 8) { /* the slot is padded to a cache line: a whole word is there */
		uint64_t w = __atomic_load_n(&s[words], __ATOMIC_RELAXED);
		memcpy(d + 8 * words, &w, n % 8);
	}
#endif
}

static inline uint64_t zkw__load64(const void *p)
{
	return __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED);
}

static inline uint32_t zkw__load32(const void *p)
{
	return __atomic_load_n((const uint32_t *)p, __ATOMIC_RELAXED);
}

/* ---- open / close ----------------------------------------------------- */

static inline int zkw__reader_fail(zkw_reader *r, int err, const char *why)
{
	if (r->base)
		munmap((void *)r->base, r->map_size);
	if (r->fd >= 0)
		close(r->fd);
	r->base = NULL;
	r->fd = -1;
	r->why = why;
	return err;
}

/* Check the identity block against the real object size. Every value that
 * later bounds an access is cached in r. */
static inline int zkw__reader_validate(zkw_reader *r, const struct stat *st)
{
	const struct zkw_segment_ident *id = &zkw__header(r)->ident;
	uint64_t capacity, slot_size, seg_size;
	uint32_t slots, header_size;

	if (zkw__load64(&id->magic) != ZKW_SEGMENT_MAGIC)
		return zkw__reader_fail(r, -EBADMSG, "bad magic: not a zkw segment");
	if (__atomic_load_n(&id->abi_major, __ATOMIC_RELAXED) != ZKW_ABI_MAJOR)
		return zkw__reader_fail(r, -EPROTO, "ABI major version mismatch");
	header_size = zkw__load32(&id->header_size);
	capacity = zkw__load64(&id->capacity);
	slot_size = zkw__load64(&id->slot_size);
	slots = zkw__load32(&id->slot_count);
	seg_size = zkw__load64(&id->segment_size);
	if (header_size != ZKW_HEADER_SIZE)
		return zkw__reader_fail(r, -EBADMSG, "corrupt segment: bad header size");
	if (slots < 2 || slots > ZKW_SLOT_COUNT_MAX)
		return zkw__reader_fail(r, -EBADMSG, "corrupt segment: bad slot count");
	if (capacity > ZKW_CAPACITY_MAX)
		return zkw__reader_fail(r, -EBADMSG, "corrupt segment: bad capacity");
	if (slot_size < zkw_segment_slot_size(capacity) || slot_size % ZKW_CACHELINE ||
	    slot_size > zkw_segment_slot_size(ZKW_CAPACITY_MAX))
		return zkw__reader_fail(r, -EBADMSG, "corrupt segment: bad slot size");
	if (seg_size != ZKW_HEADER_SIZE + slots * slot_size)
		return zkw__reader_fail(r, -EBADMSG, "corrupt segment: bad segment size");
	if ((uint64_t)st->st_size < seg_size)
		return zkw__reader_fail(r, -EBADMSG, "truncated segment: smaller than its header says");
	r->capacity = capacity;
	r->slot_size = slot_size;
	r->slot_count = slots;
	return 0;
}

/* Open and validate a segment by name ("name" or "/name"). 0 or -errno:
 * -ENOENT no such segment, -EACCES no permission, -EPERM owner is not the
 * expected uid, -EBADMSG truncated or corrupt, -EPROTO incompatible ABI,
 * -EINVAL bad name. r->why names the cause in words. */
static inline int zkw_reader_open_ex(zkw_reader *r, const char *shm_name, const zkw_reader_options *opt)
{
	char name[ZKW_SHM_NAME_MAX + 1];
	struct stat st;
	void *map;
	int err;

	memset(r, 0, sizeof(*r));
	r->fd = -1;
	err = zkw_shm_name(name, sizeof(name), shm_name);
	if (err)
		return zkw__reader_fail(r, err, "invalid segment name");
	r->fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
	if (r->fd < 0) {
		err = -errno;
		return zkw__reader_fail(r, err,
		                        err == -ENOENT   ? "no such segment (is zkw-broker running?)"
		                        : err == -EACCES ? "permission denied"
		                                         : "cannot open segment");
	}
	if (fstat(r->fd, &st) < 0)
		return zkw__reader_fail(r, -errno, "cannot stat segment");
	if (opt && opt->expected_uid != (uid_t)-1 && st.st_uid != opt->expected_uid)
		return zkw__reader_fail(r, -EPERM, "segment owner is not the expected uid");
	if ((uint64_t)st.st_size < ZKW_HEADER_SIZE + 2 * (uint64_t)ZKW_SLOT_CONTENT_OFFSET)
		return zkw__reader_fail(r, -EBADMSG, "truncated segment: smaller than a header");
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, r->fd, 0);
	if (map == MAP_FAILED)
		return zkw__reader_fail(r, -errno, "cannot map segment");
	r->base = (const uint8_t *)map;
	r->map_size = (size_t)st.st_size;
	return zkw__reader_validate(r, &st);
}

static inline int zkw_reader_open(zkw_reader *r, const char *shm_name)
{
	return zkw_reader_open_ex(r, shm_name, NULL);
}

static inline void zkw_reader_close(zkw_reader *r)
{
	if (r->base)
		munmap((void *)r->base, r->map_size);
	if (r->fd >= 0)
		close(r->fd);
	r->base = NULL;
	r->fd = -1;
}

/* ---- poll ------------------------------------------------------------- */

/* The last published generation: one acquire load. Pairs with the release
 * store in zkw_writer_publish(). 0 = nothing published yet. */
static inline uint64_t zkw_reader_generation(const zkw_reader *r)
{
	return __atomic_load_n(&zkw__header(r)->hot.generation, __ATOMIC_ACQUIRE);
}

static inline uint32_t zkw_reader_state(const zkw_reader *r)
{
	return __atomic_load_n(&zkw__header(r)->hot.state, __ATOMIC_ACQUIRE);
}

/* Is the published snapshot valid? One load. A broker that crashed leaves
 * its last state behind: ask zkw_reader_ping() for liveness. */
static inline bool zkw_reader_is_valid(const zkw_reader *r)
{
	return (zkw_reader_state(r) & ZKW_STATE_VALID) != 0;
}

/* Is a broker holding the segment's lock? Probes with F_OFD_GETLK, which
 * never takes the lock, so a reader cannot get in a restarting broker's way. */
static inline bool zkw_reader_broker_alive(const zkw_reader *r)
{
	struct flock fl;

	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	if (fcntl(r->fd, F_OFD_GETLK, &fl) < 0)
		return false;
	return fl.l_type != F_UNLCK;
}

/* True when the broker is alive and its ZooKeeper session is connected. */
static inline bool zkw_reader_ping(const zkw_reader *r)
{
	uint32_t want = ZKW_STATE_RUNNING | ZKW_STATE_CONNECTED;

	return (zkw_reader_state(r) & want) == want && zkw_reader_broker_alive(r);
}

static inline uint32_t zkw_reader_broker_pid(const zkw_reader *r)
{
	return zkw__load32(&zkw__header(r)->ident.broker_pid);
}

static inline uint64_t zkw_reader_broker_epoch(const zkw_reader *r)
{
	return zkw__load64(&zkw__header(r)->ident.broker_epoch);
}

static inline uint64_t zkw_reader_capacity(const zkw_reader *r)
{
	return r->capacity;
}

/* ---- read ------------------------------------------------------------- */

static inline void zkw__copy_text(char *dst, const char *src, uint32_t len, uint32_t max)
{
	if (len >= max) /* torn or hostile: the re-check or the bound catches it */
		len = max - 1;
	if (len) /* usually empty; a zero-length rep movsb still costs ~8 ns */
		zkw__copy_in(dst, src, len);
	dst[len] = '\0';
}

/* Copy the current snapshot: content into buf (up to cap bytes), the rest
 * into *meta (may be NULL). Returns the content length; -ENOBUFS when cap
 * is too small (meta->len says how much is needed; nothing copied into
 * buf); -EAGAIN when the writer kept overwriting the slot for
 * ZKW_READ_RETRIES attempts; -EBADMSG when a stable slot is corrupt. */
static inline ssize_t zkw_reader_read(const zkw_reader *r, zkw_snapshot *meta, void *buf, size_t cap)
{
	zkw_snapshot local;
	zkw_snapshot *m = meta ? meta : &local;
	int tries;

	for (tries = 0; tries < ZKW_READ_RETRIES; tries++) {
		uint64_t gen = zkw_reader_generation(r);
		const struct zkw_slot *s = zkw__slot(r, gen);
		uint64_t seq0, len, slot_gen;
		uint32_t flags, error_len, pointer_len;
		size_t copy;

		/* read_begin: pairs with the release store ending
		 * zkw_writer_publish()'s write of this slot. */
		seq0 = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
		if (seq0 & 1) { /* the writer lapped us onto this slot */
			zkw__cpu_relax();
			continue;
		}
		slot_gen = zkw__load64(&s->generation);
		flags = zkw__load32(&s->flags);
		error_len = zkw__load32(&s->error_len);
		len = zkw__load64(&s->len);
		m->version = (int64_t)zkw__load64(&s->version);
		m->mzxid = (int64_t)zkw__load64(&s->mzxid);
		m->confirmed_ns = zkw__load64(&s->confirmed_ns);
		m->changed_ns = zkw__load64(&s->changed_ns);
		m->content_gen = zkw__load64(&s->content_gen);
		pointer_len = zkw__load32(&s->pointer_len);
		if (meta) {
			zkw__copy_text(m->error, s->error, error_len, ZKW_ERROR_MAX);
			zkw__copy_text(m->pointer, s->pointer, pointer_len, ZKW_POINTER_MAX);
		}
		copy = len <= cap && len <= r->capacity ? (size_t)len : 0;
		if (copy)
			zkw__copy_in(buf, (const uint8_t *)s + ZKW_SLOT_CONTENT_OFFSET, copy);

		/* read_retry: the acquire fence orders the payload loads above
		 * before the re-load of seq; pairs with the release fence after
		 * the writer's odd store in zkw_writer_publish(). */
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (__atomic_load_n(&s->seq, __ATOMIC_RELAXED) != seq0 || slot_gen != gen) {
			zkw__cpu_relax();
			continue;
		}
		if (len > r->capacity || error_len >= ZKW_ERROR_MAX || pointer_len >= ZKW_POINTER_MAX)
			return -EBADMSG;
		m->generation = gen;
		m->valid = (flags & ZKW_SLOT_VALID) != 0;
		m->connected = (flags & ZKW_SLOT_CONNECTED) != 0;
		m->len = (size_t)len;
		if (len > cap)
			return -ENOBUFS;
		return (ssize_t)len;
	}
	return -EAGAIN;
}

/* ---- wait ------------------------------------------------------------- */

/* Block until the published generation differs from `seen`. Returns 1 when
 * it does, 0 on timeout, -EINTR on a signal. timeout_ms < 0 waits forever.
 * Never misses a wakeup: the futex word is loaded before the generation,
 * and the kernel compares it again before sleeping; the writer stores the
 * generation before bumping the word (zkw_writer_publish()). */
static inline int zkw_reader_wait(const zkw_reader *r, uint64_t seen, int timeout_ms)
{
	const uint32_t *word = &zkw__header(r)->hot.futex;
	struct timespec deadline, *dl = NULL;

	if (timeout_ms >= 0) {
		uint64_t end = zkw__now_ns(CLOCK_MONOTONIC) + (uint64_t)timeout_ms * 1000000u;

		deadline.tv_sec = (time_t)(end / 1000000000u);
		deadline.tv_nsec = (long)(end % 1000000000u);
		dl = &deadline;
	}
	for (;;) {
		/* Pairs with the release increment in zkw_writer_publish(). */
		uint32_t word_seen = __atomic_load_n(word, __ATOMIC_ACQUIRE);

		if (zkw_reader_generation(r) != seen)
			return 1;
		/* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline,
		 * so spurious wakeups and EAGAIN do not stretch the timeout. */
		if (zkw__futex(word, FUTEX_WAIT_BITSET, word_seen, dl, FUTEX_BITSET_MATCH_ANY) < 0) {
			if (errno == ETIMEDOUT)
				return zkw_reader_generation(r) != seen ? 1 : 0;
			if (errno == EINTR)
				return -EINTR;
			if (errno != EAGAIN)
				return -errno;
		}
	}
}

/* ---- event dispatcher ------------------------------------------------- */

/* The seed's event mode over shared memory: handlers are called once per
 * change. On success config(content) first (when the content changed), then
 * valid(true) (when validity changed); on failure valid(false) (when it
 * changed), then error(message) (when the message changed). */
typedef struct zkw_handlers {
	void (*valid)(void *ctx, bool valid);
	void (*config)(void *ctx, const void *content, size_t len);
	void (*error)(void *ctx, const char *message);
	void *ctx;
} zkw_handlers;

typedef struct zkw_dispatcher {
	const zkw_reader *reader;
	zkw_handlers handlers;
	void *buf; /* caller's content buffer */
	size_t cap;
	uint64_t seen;             /* last generation dispatched */
	uint64_t content_gen;      /* content last passed to config() */
	bool valid;                /* validity last passed to valid() */
	char error[ZKW_ERROR_MAX]; /* message last passed to error() */
	zkw_snapshot snap;         /* the snapshot last read */
} zkw_dispatcher;

static inline void zkw_dispatcher_init(zkw_dispatcher *d, const zkw_reader *r, const zkw_handlers *h,
                                       void *buf, size_t cap)
{
	memset(d, 0, sizeof(*d));
	d->reader = r;
	if (h)
		d->handlers = *h;
	d->buf = buf;
	d->cap = cap;
}

static inline int zkw__call_valid(const zkw_handlers *h, bool valid)
{
	if (!h->valid)
		return 0;
	h->valid(h->ctx, valid);
	return 1;
}

static inline int zkw__call_config(const zkw_handlers *h, const void *buf, size_t len)
{
	if (!h->config)
		return 0;
	h->config(h->ctx, buf, len);
	return 1;
}

/* Deliver one snapshot's changes; returns the number of handler calls. */
static inline int zkw__dispatch_snapshot(zkw_dispatcher *d, size_t len)
{
	const zkw_snapshot *s = &d->snap;
	const zkw_handlers *h = &d->handlers;
	int calls = 0;

	if (s->valid) {
		if (s->content_gen != d->content_gen) {
			d->content_gen = s->content_gen;
			calls += zkw__call_config(h, d->buf, len);
		}
		if (!d->valid) {
			d->valid = true;
			calls += zkw__call_valid(h, true);
		}
		d->error[0] = '\0';
		return calls;
	}
	if (d->valid) {
		d->valid = false;
		calls += zkw__call_valid(h, false);
	}
	if (s->error[0] && strcmp(s->error, d->error) != 0) {
		memcpy(d->error, s->error, sizeof(d->error));
		if (h->error) {
			h->error(h->ctx, d->error);
			calls++;
		}
	}
	return calls;
}

/* Wait up to timeout_ms for a new generation and deliver it. Returns the
 * number of handler calls (0 also on timeout), or -errno from read/wait
 * (-ENOBUFS: d->snap.len is the size needed). */
static inline int zkw_dispatch(zkw_dispatcher *d, int timeout_ms)
{
	ssize_t n;
	int rc;

	if (zkw_reader_generation(d->reader) == d->seen) {
		rc = zkw_reader_wait(d->reader, d->seen, timeout_ms);
		if (rc <= 0)
			return rc;
	}
	n = zkw_reader_read(d->reader, &d->snap, d->buf, d->cap);
	if (n < 0)
		return (int)n;
	d->seen = d->snap.generation;
	if (d->seen == 0)
		return 0;
	return zkw__dispatch_snapshot(d, (size_t)n);
}

#ifdef __cplusplus
}
#endif
#endif /* ZKW_CLIENT_H */
