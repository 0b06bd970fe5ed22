/* SPDX-License-Identifier: Apache-2.0 */
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
 * The protocol's steps (seqlock, slot accessor, payload copy, hot line)
 * are in zkw/segment.h, shared with the writer.
 *
 * Trust: a segment's owner decides what readers see and could shrink the
 * object under their mapping (every access would then fault with SIGBUS),
 * so zkw_reader_open() accepts a segment only from a known owner - root,
 * the caller's effective uid, or the one uid it was told (the environment
 * variable ZKW_SEGMENT_OWNER, a uid or a user name, for every reader of a
 * process; zkw_reader_options.expected_uid for one open, which takes
 * precedence) - and never one that group or others may write. r->why then
 * names the owner and how to trust it.
 *
 * Replacement: a broker that cannot take over a segment in place (a reader
 * holds a lock on it, or it was writable by others) replaces it under the
 * same name and marks the old one ZKW_STATE_RETIRED: zkw_reader_retired()
 * turns true, zkw_reader_wait() and zkw_dispatch() return -ESTALE. Close
 * the reader and open the name again; the new segment continues the
 * generations and content_gen, so a dispatcher carries on without
 * delivering anything twice.
 *
 * Caveats, as with libc: zkw_reader_wait() returns -EINTR when a signal
 * arrives.
 */
#ifndef ZKW_CLIENT_H
#define ZKW_CLIENT_H

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <zkw/segment.h> /* the ABI, the seqlock, the futex and clock calls */

#ifdef __cplusplus
extern "C" {
#endif

#ifndef F_OFD_GETLK /* Linux >= 3.15; glibc hides it without _GNU_SOURCE */
#define F_OFD_GETLK 36
#endif

/* The environment variable naming the one owner (a uid or a user name) that
 * every reader of the process trusts, instead of root or itself. */
#define ZKW_OWNER_ENV "ZKW_SEGMENT_OWNER"

#ifndef ZKW_READ_RETRIES
#define ZKW_READ_RETRIES 4096 /* seqlock retries before -EAGAIN */
#endif

typedef struct zkw_reader {
	const uint8_t *base; /* PROT_READ mapping */
	size_t map_size;
	int fd;              /* kept for ping's lock probe */
	uint32_t slot_count; /* cached at open: never re-read from the */
	uint64_t slot_size;  /* segment, so a hostile writer cannot */
	uint64_t capacity;   /* steer a reader out of bounds */
	/* The last open error in words: a static text, or why_buf for a
	 * refused owner or mode. It may point into r itself: copy the text,
	 * not the pointer, before freeing or moving r. */
	const char *why;
	char why_buf[256];
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
	/* The one owner to trust: the segment must be owned by exactly this
	 * uid (ZKW_SEGMENT_OWNER is then not consulted). (uid_t)-1 = not
	 * told: ZKW_SEGMENT_OWNER if set (exactly that uid), else root or the
	 * caller's effective uid. Group- or other-writable segments are
	 * refused whatever the owner. */
	uid_t expected_uid;
} zkw_reader_options;

/* ---- segment access --------------------------------------------------- */

/* Spin hint between two seqlock attempts. */
static inline void zkw__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#endif
}

static inline const struct zkw_segment_header *zkw__header(const zkw_reader *r)
{
	return (const struct zkw_segment_header *)(const void *)r->base;
}

/* ---- open / close ----------------------------------------------------- */

static inline void zkw_reader_close(zkw_reader *r)
{
	if (r->base)
		munmap((void *)r->base, r->map_size);
	if (r->fd >= 0)
		close(r->fd);
	r->base = NULL;
	r->fd = -1;
}

static inline int zkw__reader_fail(zkw_reader *r, int err, const char *why)
{
	zkw_reader_close(r);
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

	/* The acquire load pairs with the release store of the magic in the
	 * writer's init_segment() (broker/publish/writer.c): once the magic is
	 * seen, every other identity field below is there too. */
	if (__atomic_load_n(&id->magic, __ATOMIC_ACQUIRE) != ZKW_SEGMENT_MAGIC)
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

/* The owner ZKW_SEGMENT_OWNER names, a uid or a user name: 0 with *uid
 * set; 1 when it is unset or empty, or the process is set-id (whoever
 * started it must not widen its trust, as secure_getenv(3)); -EINVAL when
 * it names no user. */
static inline int zkw__owner_from_env(uid_t *uid)
{
	struct passwd pw, *found = NULL;
	char scratch[1024], *end;
	const char *v;
	unsigned long n;

	if (getuid() != geteuid() || getgid() != getegid())
		return 1;
	v = getenv(ZKW_OWNER_ENV);
	if (!v || !*v)
		return 1;
	if (*v >= '0' && *v <= '9') {
		errno = 0;
		n = strtoul(v, &end, 10);
		if (*end || errno || n >= (unsigned long)(uid_t)-1)
			return -EINVAL;
		*uid = (uid_t)n;
		return 0;
	}
	if (getpwnam_r(v, &pw, scratch, sizeof(scratch), &found) != 0 || !found)
		return -EINVAL;
	*uid = found->pw_uid;
	return 0;
}

/* The trust policy (see the top of this file), on the open segment's
 * stat. 0, or -EPERM / -EINVAL with the reason in r->why_buf. */
static inline int zkw__reader_trust(zkw_reader *r, const struct stat *st, const zkw_reader_options *opt)
{
	uid_t told = opt ? opt->expected_uid : (uid_t)-1;
	bool from_env = false;
	char owner[64];
	bool trusted;

	if (told == (uid_t)-1) {
		int rc = zkw__owner_from_env(&told);

		if (rc < 0) {
			snprintf(r->why_buf, sizeof(r->why_buf),
			         ZKW_OWNER_ENV "=%.64s names no user (want a uid or a user name)",
			         getenv(ZKW_OWNER_ENV));
			return -EINVAL;
		}
		if (rc > 0)
			told = (uid_t)-1;
		from_env = rc == 0;
	}
	trusted = told == (uid_t)-1 ? st->st_uid == 0 || st->st_uid == geteuid() : st->st_uid == told;
	if (!trusted) {
		zkw__uid_text(owner, sizeof(owner), st->st_uid);
		if (told == (uid_t)-1)
			snprintf(r->why_buf, sizeof(r->why_buf),
			         "segment owner is %s, not root or you (uid %u): to trust it, "
			         "set " ZKW_OWNER_ENV "=%u or pass expected_uid",
			         owner, (unsigned)geteuid(), (unsigned)st->st_uid);
		else if (from_env)
			snprintf(r->why_buf, sizeof(r->why_buf),
			         "segment owner is %s, not uid %u named by " ZKW_OWNER_ENV, owner,
			         (unsigned)told);
		else
			snprintf(r->why_buf, sizeof(r->why_buf),
			         "segment owner is %s, not the expected uid %u", owner, (unsigned)told);
		return -EPERM;
	}
	if (st->st_mode & (S_IWGRP | S_IWOTH)) {
		zkw__uid_text(owner, sizeof(owner), st->st_uid);
		snprintf(r->why_buf, sizeof(r->why_buf),
		         "segment is writable by group or others (mode %04o, owner %s): whoever may write it "
		         "could change what you read; refused",
		         (unsigned)(st->st_mode & 07777), owner);
		return -EPERM;
	}
	return 0;
}

/* Open and validate a segment by name ("name" or "/name"). 0 or -errno:
 * -ENOENT no such segment, -EACCES no permission, -EPERM owner not trusted
 * or segment writable by group or others, -EBADMSG truncated or corrupt,
 * -EPROTO incompatible ABI, -EINVAL bad name or a ZKW_SEGMENT_OWNER that
 * names no user. r->why names the cause in words (for a refused owner: the
 * owner, and how to trust it). */
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
	err = zkw__reader_trust(r, &st, opt);
	if (err)
		return zkw__reader_fail(r, err, r->why_buf);
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

/* ---- poll ------------------------------------------------------------- */

/* The last published generation: one acquire load (zkw_segment_generation,
 * paired with the release store in zkw_segment_announce()). 0 = nothing
 * published yet. */
static inline uint64_t zkw_reader_generation(const zkw_reader *r)
{
	return zkw_segment_generation(&zkw__header(r)->hot);
}

/* ZKW_STATE_* bits: one acquire load (zkw_segment_state). */
static inline uint32_t zkw_reader_state(const zkw_reader *r)
{
	return zkw_segment_state(&zkw__header(r)->hot);
}

/* Is the published snapshot valid? One load. A broker that crashed leaves
 * its last state behind: ask zkw_reader_ping() for liveness. */
static inline bool zkw_reader_is_valid(const zkw_reader *r)
{
	return (zkw_reader_state(r) & ZKW_STATE_VALID) != 0;
}

/* Has a broker replaced this segment by a new one under the same name
 * (ZKW_STATE_RETIRED)? One load. Nothing is published here any more:
 * close the reader and open the name again. */
static inline bool zkw_reader_retired(const zkw_reader *r)
{
	return (zkw_reader_state(r) & ZKW_STATE_RETIRED) != 0;
}

/* Is a broker holding the segment? The running broker holds a write lock
 * on it. The probe asks F_OFD_GETLK whether a READ lock could be taken,
 * which only a write lock prevents: a read lock (all that a read-only
 * descriptor can take) never counts, so nobody but the broker can make
 * this true. The probe takes no lock itself. */
static inline bool zkw_reader_broker_alive(const zkw_reader *r)
{
	struct flock fl;

	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_RDLCK;
	fl.l_whence = SEEK_SET;
	if (fcntl(r->fd, F_OFD_GETLK, &fl) < 0)
		return false;
	return fl.l_type == F_WRLCK;
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
		zkw_payload_load(dst, src, len);
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
		const struct zkw_slot *s = zkw_segment_slot(r->base, r->slot_size, r->slot_count, gen);
		uint64_t seq0, len, slot_gen;
		uint32_t flags, error_len, pointer_len;
		size_t copy;

		/* The seqlock's read side (zkw/segment.h): begin, relaxed
		 * payload loads, retry. */
		seq0 = zkw_slot_read_begin(s);
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
			zkw_payload_load(buf, (const uint8_t *)s + ZKW_SLOT_CONTENT_OFFSET, copy);

		if (zkw_slot_read_retry(s, seq0) || slot_gen != gen) {
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
 * it does, 0 on timeout, -EINTR on a signal, -ESTALE when the segment is
 * retired (zkw_reader_retired(): reopen the name; a new generation is still
 * reported first). timeout_ms < 0 waits forever.
 * Never misses a wakeup: the futex word is loaded before the generation,
 * and the kernel compares it again before sleeping; the writer stores the
 * generation before bumping the word (zkw_segment_announce()). */
static inline int zkw_reader_wait(const zkw_reader *r, uint64_t seen, int timeout_ms)
{
	const struct zkw_segment_hot *hot = &zkw__header(r)->hot;
	struct timespec deadline;
	const struct timespec *dl = zkw__deadline(&deadline, timeout_ms);

	for (;;) {
		uint32_t word_seen = zkw_segment_futex_word(hot);
		int rc;

		if (zkw_reader_generation(r) != seen)
			return 1;
		/* The retiring broker stores the state, then bumps the word
		 * and wakes: seeing the new word means seeing the bit. */
		if (zkw_reader_retired(r))
			return -ESTALE;
		/* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline,
		 * so spurious wakeups and EAGAIN do not stretch the timeout. */
		rc = zkw_segment_futex_wait(hot, word_seen, dl);
		if (rc == -ETIMEDOUT)
			return zkw_reader_generation(r) != seen;
		if (rc && rc != -EAGAIN)
			return rc; /* -EINTR on a signal */
	}
}

/* ---- event dispatcher ------------------------------------------------- */

/* The seed's event mode over shared memory: the handlers (zkw_handlers of
 * zkw/common.h) are called once per change, in the order and under the
 * rule zkw/common.h states (zkw_delivery_next, zkw_delivery_call). */
typedef struct zkw_dispatcher {
	const zkw_reader *reader;
	zkw_handlers handlers;
	void *buf; /* caller's content buffer */
	size_t cap;
	uint64_t seen;          /* last generation dispatched */
	zkw_delivery delivered; /* what the handlers were given last */
	zkw_snapshot snap;      /* the snapshot last read */
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

/* Wait up to timeout_ms for a new generation and deliver it. Returns the
 * number of handler calls (0 also on timeout), or -errno from read/wait
 * (-ENOBUFS: d->snap.len is the size needed; -ESTALE: the segment was
 * replaced - zkw_reader_close() the reader, zkw_reader_open() the name
 * into the same zkw_reader and go on dispatching with this dispatcher:
 * generations and content_gen continue, nothing is delivered twice). */
static inline int zkw_dispatch(zkw_dispatcher *d, int timeout_ms)
{
	ssize_t n;
	unsigned bits;
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
	bits = zkw_delivery_next(&d->delivered, d->snap.valid, d->snap.content_gen, d->snap.error);
	return zkw_delivery_call(&d->delivered, bits, &d->handlers, d->buf, (size_t)n, NULL);
}

#ifdef __cplusplus
}
#endif
#endif /* ZKW_CLIENT_H */
