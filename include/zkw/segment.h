/* SPDX-License-Identifier: Apache-2.0 */
/* segment.h - the zkw shared-memory segment ABI (writer and readers).
 *
 * One POSIX shared-memory segment mirrors one watched ZooKeeper node. The
 * broker is its only writer; any number of processes map it read-only.
 *
 *   +-------------------------+ 0
 *   | identity (magic, ABI,   |    written once per broker start
 *   | sizes, pid, epoch)      |
 *   +-------------------------+ 64
 *   | hot line: generation,   |    written at every publish
 *   | futex word, state,      |    (confirmed_ns also at a
 *   | confirmed_ns            |    confirmation alone)
 *   +-------------------------+ 128
 *   | watched path            |    informational
 *   +-------------------------+ ZKW_HEADER_SIZE
 *   | slot 0 | slot 1 | ...   |    seqlock "latch": slot = generation % count
 *   +-------------------------+
 *
 * Publishing generation g fills slot g % slot_count (never the published
 * one: g - 1, or, when a cold start continues a saved generation and
 * skips ahead, an earlier one of another slot), under that slot's
 * sequence counter, then stores g into the
 * hot line with release semantics, bumps the futex word and wakes all. A
 * writer killed mid-publish leaves only an unpublished slot odd, so readers
 * keep reading generation g - 1 and never spin on it.
 *
 * Generation 0 is "nothing published yet": slot 0 is all zero, which reads
 * as an empty, invalid, disconnected snapshot.
 *
 * Liveness: the running broker holds an open-file-description WRITE lock
 * (F_OFD_SETLK, F_WRLCK) on the whole segment; a reader asks with
 * F_OFD_GETLK and l_type F_RDLCK, which only a write lock answers. A
 * read-only descriptor cannot take a write lock, so no reader can fake a
 * live broker, and a read lock taken by a reader makes the next broker
 * replace the segment (ZKW_STATE_RETIRED) rather than wait.
 *
 * Every field a reader may load while the writer stores is accessed with
 * __atomic builtins (relaxed for the payload, see "the seqlock" below),
 * never plain loads, so the header also compiles as C++.
 *
 * Both halves of the protocol live here, each step a named function: the
 * seqlock of a slot (zkw_slot_read_begin/_retry, zkw_slot_write_begin/_end),
 * the one slot accessor (zkw_segment_slot), the one payload copy
 * (zkw_payload_load/_store) and the hot line (zkw_segment_announce, paired
 * with zkw_segment_generation/_state/_futex_word; zkw_segment_set_confirmed
 * with zkw_segment_confirmed_ns). zkw/client.h is the
 * reader built on them; broker/publish/writer.c is the writer.
 */
#ifndef ZKW_SEGMENT_H
#define ZKW_SEGMENT_H

#if defined(__STRICT_ANSI__) && !defined(_GNU_SOURCE) && !defined(_DEFAULT_SOURCE)
#error "zkw/segment.h needs syscall(2): define _DEFAULT_SOURCE or _GNU_SOURCE (or use -std=gnu11)"
#endif

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ZKW_SEGMENT_MAGIC 0x31474553574b5a7fULL /* "\x7fZKWSEG1" little-endian */
#define ZKW_ABI_MAJOR     1u                    /* incompatible layout change: readers refuse */
#define ZKW_ABI_MINOR     3u                    /* compatible additions: readers accept newer */

#define ZKW_CACHELINE        64u
#define ZKW_SLOT_COUNT       2u              /* slots this writer creates */
#define ZKW_SLOT_COUNT_MAX   16u             /* readers refuse more */
#define ZKW_DEFAULT_CAPACITY (1024u * 1024u) /* ZooKeeper's jute.maxbuffer */
#define ZKW_CAPACITY_MAX     (256u * 1024u * 1024u)
#include <zkw/common.h> /* ZKW_ERROR_MAX, ZKW_POINTER_MAX */
#define ZKW_WATCH_PATH_MAX 1024u

/* Bits of zkw_segment_hot.state: a summary of the published slot plus the
 * broker's own state, so polling readers need one load. Every bit lives in
 * the word's low byte (the writer sets RETIRED with pwrite(2), see
 * broker/publish/writer.c: a one-byte change is never torn). */
#define ZKW_STATE_VALID     0x1u /* published snapshot is valid */
#define ZKW_STATE_CONNECTED 0x2u /* broker's ZooKeeper session is connected */
#define ZKW_STATE_RUNNING   0x4u /* broker started and has not exited cleanly */
/* ABI minor 1: a broker replaced this segment with a new one under the
 * same name (RUNNING and CONNECTED are cleared, the generation no longer
 * moves, waiters got a last wake): close it and open the name again. The
 * new segment continues the generations. */
#define ZKW_STATE_RETIRED 0x8u
/* ABI minor 3, mirrors of the published slot's ZKW_SLOT_CACHED and
 * ZKW_SLOT_REJECTED (0 from older writers). */
#define ZKW_STATE_CACHED   0x10u
#define ZKW_STATE_REJECTED 0x20u

/* Generations above this are corrupt (a writer would need 2^62 publishes):
 * a broker refuses to continue from one. */
#define ZKW_GENERATION_MAX (1ull << 62)

/* Bits of zkw_slot.flags. */
#define ZKW_SLOT_VALID     0x1u
#define ZKW_SLOT_CONNECTED 0x2u
/* ABI minor 3. CACHED: the content was loaded from the broker's state
 * directory at a cold start and ZooKeeper has not confirmed it since (the
 * slot is invalid; its error names the save time - or, with REJECTED, why
 * the content ZooKeeper answered with was refused). REJECTED: the
 * newest content ZooKeeper holds failed the watch's validation (its error
 * says why); the content is the last good one. Both are about the content:
 * CONNECTED and VALID still say what ZooKeeper and the watch do. */
#define ZKW_SLOT_CACHED   0x4u
#define ZKW_SLOT_REJECTED 0x8u
/* ABI minor 3: the content is a bundle (zkw/bundle.h): a watch in bundle
 * mode publishes a znode's children as one snapshot. */
#define ZKW_SLOT_BUNDLE 0x10u

/* Written once per broker start (pid, epoch, started_ns change on restart
 * and are stored with relaxed atomics; the rest never changes). */
struct zkw_segment_ident {
	uint64_t magic;
	uint16_t abi_major;
	uint16_t abi_minor;
	uint32_t header_size;  /* offset of slot 0 */
	uint64_t segment_size; /* header_size + slot_count * slot_size */
	uint64_t slot_size;    /* bytes per slot, multiple of ZKW_CACHELINE */
	uint64_t capacity;     /* content bytes per slot */
	uint32_t slot_count;
	uint32_t broker_pid;
	uint64_t broker_epoch;      /* random, new at every broker start */
	uint64_t broker_started_ns; /* CLOCK_REALTIME */
};

/* The hot words, alone on their cache line. */
struct zkw_segment_hot {
	uint64_t generation; /* last published; release store by the writer */
	uint32_t futex;      /* bumped after each publish; FUTEX_WAKE all */
	uint32_t state;      /* ZKW_STATE_* */
	/* ABI minor 2: CLOCK_REALTIME ns of the last confirmation by
	 * ZooKeeper, stored at every publish (the published slot's value) and
	 * by a confirmation that changes nothing else (no generation, no
	 * wake). Believe it only when ident.abi_minor >= 2: an older writer
	 * leaves it 0, or stale when it adopted a newer writer's segment. */
	uint64_t confirmed_ns;
	uint8_t pad_[ZKW_CACHELINE - 24];
};

/* The first ABI minor whose writers keep zkw_segment_hot.confirmed_ns. */
#define ZKW_ABI_MINOR_HOT_CONFIRMED 2u

#define ZKW_HEADER_SIZE 2048u
struct zkw_segment_header {
	struct zkw_segment_ident ident;
	struct zkw_segment_hot hot;
	uint64_t watch_path_len;
	char watch_path[ZKW_WATCH_PATH_MAX];
	uint8_t pad1_[ZKW_HEADER_SIZE - 2 * ZKW_CACHELINE - 8 - ZKW_WATCH_PATH_MAX];
};

/* One snapshot. Every field below seq is payload: stored and loaded as
 * relaxed atomic 64-bit words (or an opaque copy) inside the seqlock. */
struct zkw_slot {
	uint64_t seq;          /* odd while being written */
	uint64_t generation;   /* the generation this slot holds */
	uint32_t flags;        /* ZKW_SLOT_* */
	uint32_t error_len;    /* < ZKW_ERROR_MAX */
	uint64_t len;          /* content length, <= capacity */
	int64_t version;       /* ZooKeeper data version, -1 if none */
	int64_t mzxid;         /* zxid of the last change, 0 if none */
	uint64_t confirmed_ns; /* CLOCK_REALTIME of last confirmation */
	uint64_t changed_ns;   /* CLOCK_REALTIME the content last changed */
	uint64_t content_gen;  /* generation at which this content appeared */
	uint32_t pointer_len;  /* < ZKW_POINTER_MAX */
	uint32_t reserved0_;
	uint64_t reserved_[6];
	char error[ZKW_ERROR_MAX];
	char pointer[ZKW_POINTER_MAX];
	/* content follows at ZKW_SLOT_CONTENT_OFFSET */
};
#define ZKW_SLOT_FIXED_SIZE     128u /* seq .. reserved_: copied word by word */
#define ZKW_SLOT_CONTENT_OFFSET 2432u

/* The layout is the ABI: pin it. */
#ifdef __cplusplus
#define ZKW_STATIC_ASSERT(c, m) static_assert(c, m)
#else
#define ZKW_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif
ZKW_STATIC_ASSERT(sizeof(struct zkw_segment_ident) == ZKW_CACHELINE, "ident size");
ZKW_STATIC_ASSERT(offsetof(struct zkw_segment_ident, slot_count) == 40, "ident");
ZKW_STATIC_ASSERT(offsetof(struct zkw_segment_ident, broker_epoch) == 48, "ident");
ZKW_STATIC_ASSERT(offsetof(struct zkw_segment_header, hot) == ZKW_CACHELINE, "hot line");
ZKW_STATIC_ASSERT(offsetof(struct zkw_segment_header, hot.generation) == 64, "gen");
ZKW_STATIC_ASSERT(offsetof(struct zkw_segment_header, hot.futex) == 72, "futex");
ZKW_STATIC_ASSERT(offsetof(struct zkw_segment_header, hot.state) == 76, "state");
ZKW_STATIC_ASSERT(offsetof(struct zkw_segment_header, hot.confirmed_ns) == 80, "confirmed");
ZKW_STATIC_ASSERT(sizeof(struct zkw_segment_hot) == ZKW_CACHELINE, "hot line size");
ZKW_STATIC_ASSERT(offsetof(struct zkw_segment_header, watch_path) == 136, "path");
ZKW_STATIC_ASSERT(sizeof(struct zkw_segment_header) == ZKW_HEADER_SIZE, "header");
ZKW_STATIC_ASSERT(offsetof(struct zkw_slot, generation) == 8, "slot");
ZKW_STATIC_ASSERT(offsetof(struct zkw_slot, len) == 24, "slot");
ZKW_STATIC_ASSERT(offsetof(struct zkw_slot, content_gen) == 64, "slot");
ZKW_STATIC_ASSERT(offsetof(struct zkw_slot, pointer_len) == 72, "slot");
ZKW_STATIC_ASSERT(offsetof(struct zkw_slot, error) == ZKW_SLOT_FIXED_SIZE, "slot");
ZKW_STATIC_ASSERT(offsetof(struct zkw_slot, pointer) == 1408, "slot");
ZKW_STATIC_ASSERT(sizeof(struct zkw_slot) == ZKW_SLOT_CONTENT_OFFSET, "slot");
ZKW_STATIC_ASSERT(ZKW_SLOT_CONTENT_OFFSET % ZKW_CACHELINE == 0, "content align");
ZKW_STATIC_ASSERT(sizeof(uint64_t) == 8 && __atomic_always_lock_free(8, 0),
                  "zkw needs lock-free 64-bit atomics");
ZKW_STATIC_ASSERT(__atomic_always_lock_free(4, 0), "zkw needs lock-free 32-bit atomics");

/* Bytes per slot for a content capacity (a multiple of the cache line). */
static inline uint64_t zkw_segment_slot_size(uint64_t capacity)
{
	return (ZKW_SLOT_CONTENT_OFFSET + capacity + ZKW_CACHELINE - 1) & ~(uint64_t)(ZKW_CACHELINE - 1);
}

static inline uint64_t zkw_segment_size(uint64_t capacity, uint32_t slots)
{
	return ZKW_HEADER_SIZE + (uint64_t)slots * zkw_segment_slot_size(capacity);
}

/* ---- names ------------------------------------------------------------ */

#define ZKW_SHM_NAME_MAX 255 /* NAME_MAX, including the leading '/' */

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

#ifndef F_OFD_GETLK /* Linux >= 3.15; glibc hides them without _GNU_SOURCE */
#define F_OFD_GETLK 36
#define F_OFD_SETLK 37
#endif

/* The liveness lock (see the top of this file): take an open-file-
 * description WRITE lock on the whole of fd, without waiting. 0, or -errno
 * (-EAGAIN / -EACCES: someone holds a lock on it). */
static inline int zkw__ofd_write_lock(int fd)
{
	struct flock fl;

	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* Does anyone hold a write lock on fd? Asks whether a READ lock could be
 * taken (F_OFD_GETLK), which only a write lock refuses, and takes none: a
 * read lock, all a read-only descriptor can hold, never counts. */
static inline bool zkw__ofd_write_locked(int fd)
{
	struct flock fl;

	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_RDLCK;
	fl.l_whence = SEEK_SET;
	return fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type == F_WRLCK;
}

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

/* The absolute CLOCK_MONOTONIC time timeout_ms from now, for
 * FUTEX_WAIT_BITSET, in *ts; NULL (wait forever) when timeout_ms < 0. */
static inline const struct timespec *zkw__deadline(struct timespec *ts, int timeout_ms)
{
	uint64_t end;

	if (timeout_ms < 0)
		return NULL;
	end = zkw__now_ns(CLOCK_MONOTONIC) + (uint64_t)timeout_ms * 1000000u;
	ts->tv_sec = (time_t)(end / 1000000000u);
	ts->tv_nsec = (long)(end % 1000000000u);
	return ts;
}

/* ---- relaxed words ---------------------------------------------------- */

/* The seqlock and hot-line steps below are always inlined, as the kernel's
 * seqcount helpers are (__always_inline): a step is a load, a store or a
 * fence, never a call, and inlining it late would change how the
 * compiler lays out the caller's retry loop. */
#define ZKW__ALWAYS_INLINE static inline __attribute__((always_inline))

/* Fields another process may store concurrently: atomic, but unordered.
 * The ordering comes from the seqlock or the hot line around them. */
ZKW__ALWAYS_INLINE uint64_t zkw__load64(const void *p)
{
	return __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED);
}

ZKW__ALWAYS_INLINE uint32_t zkw__load32(const void *p)
{
	return __atomic_load_n((const uint32_t *)p, __ATOMIC_RELAXED);
}

ZKW__ALWAYS_INLINE void zkw__store64(void *p, uint64_t v)
{
	__atomic_store_n((uint64_t *)p, v, __ATOMIC_RELAXED);
}

ZKW__ALWAYS_INLINE void zkw__store32(void *p, uint32_t v)
{
	__atomic_store_n((uint32_t *)p, v, __ATOMIC_RELAXED);
}

/* ---- the seqlock ------------------------------------------------------
 *
 * What: every slot is a sequence lock, the Linux kernel's seqcount_t. The
 * single writer makes slot->seq odd, stores the payload, then makes seq even
 * again; a reader loads seq, copies the payload, loads seq again, and keeps
 * its copy only when seq was even and has not moved.
 *
 * Why: readers live in other processes, map the segment read-only and must
 * never block the writer or each other. A seqlock costs a reader two loads
 * of seq and no store, lock or syscall. Torn copies are possible and are
 * thrown away; for that to be no data race under the C11 model, every
 * payload access inside the section is atomic: relaxed words (zkw__load64,
 * zkw__store64) or the opaque copy of zkw_payload_load/_store.
 *
 * Reader (bounded retries: zkw_reader_read() in zkw/client.h):
 *     uint64_t start = zkw_slot_read_begin(s);        (odd: retry)
 *     len = zkw__load64(&s->len); zkw_payload_load(buf, content, len);
 *     if ((start & 1) || zkw_slot_read_retry(s, start)) retry;
 * Writer (one per segment, zkw_writer_publish() in broker/publish/writer.c):
 *     uint64_t start = zkw_slot_write_begin(s);
 *     zkw__store64(&s->len, len); zkw_payload_store(content, buf, len);
 *     zkw_slot_write_end(s, start);
 */

/* The slot that holds (or will hold) `generation`, for reader and writer
 * alike. slot_size and slot_count must be the validated values (a reader
 * caches them at open, never re-reads them). Like strchr(), it takes a
 * const base and returns a plain pointer: the writer's mapping is writable,
 * a reader's is PROT_READ and it keeps the result const. */
ZKW__ALWAYS_INLINE struct zkw_slot *zkw_segment_slot(const void *base, uint64_t slot_size,
                                                     uint32_t slot_count, uint64_t generation)
{
	return (struct zkw_slot *)(uintptr_t)((const uint8_t *)base + ZKW_HEADER_SIZE +
	                                      (generation % slot_count) * slot_size);
}

/* Reader, step 1: the sequence at the start of a read. Odd means the writer
 * is inside the slot (it lapped the reader onto it): retry. The acquire
 * load pairs with the release store in zkw_slot_write_end(): an even start
 * brings every payload store of that write with it. */
ZKW__ALWAYS_INLINE uint64_t zkw_slot_read_begin(const struct zkw_slot *s)
{
	return __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
}

/* Reader, step 2, after the payload loads: true when the copy may be torn
 * and must be retried. The acquire fence keeps the payload loads above
 * before the re-load of seq; it pairs with the release fence in
 * zkw_slot_write_begin(): a reader that loaded any store made after the odd
 * store sees the odd (or a later) seq here. */
ZKW__ALWAYS_INLINE bool zkw_slot_read_retry(const struct zkw_slot *s, uint64_t start)
{
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	return __atomic_load_n(&s->seq, __ATOMIC_RELAXED) != start;
}

/* Writer, step 1: make seq odd. Returns the even start value for
 * zkw_slot_write_end(). Only the writer stores seq, so its own load of it
 * needs no ordering. The release fence keeps every payload store below
 * after the odd store; it pairs with the acquire fence in
 * zkw_slot_read_retry(). */
ZKW__ALWAYS_INLINE uint64_t zkw_slot_write_begin(struct zkw_slot *s)
{
	uint64_t start = __atomic_load_n(&s->seq, __ATOMIC_RELAXED);

	__atomic_store_n(&s->seq, start + 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	return start;
}

/* Writer, step 2, after the payload stores: make seq even again. The
 * release store pairs with the acquire load in zkw_slot_read_begin(). */
ZKW__ALWAYS_INLINE void zkw_slot_write_end(struct zkw_slot *s, uint64_t start)
{
	__atomic_store_n(&s->seq, start + 2, __ATOMIC_RELEASE);
}

/* Writer, at adoption: a writer killed between write_begin and write_end
 * left seq odd. That slot was never published (the generation moves only
 * after write_end), so make seq even and let the next publish overwrite
 * it. The release store pairs with the acquire load in
 * zkw_slot_read_begin(), as write_end's does. */
ZKW__ALWAYS_INLINE void zkw_slot_write_repair(struct zkw_slot *s)
{
	uint64_t seq = __atomic_load_n(&s->seq, __ATOMIC_RELAXED);

	if (seq & 1)
		__atomic_store_n(&s->seq, seq + 1, __ATOMIC_RELEASE);
}

/* Copy n bytes of seqlock-protected payload between the segment and private
 * memory, in either direction (ZKW__PAYLOAD_LOAD: src is in the segment;
 * ZKW__PAYLOAD_STORE: dst is). The segment side is 8-byte aligned.
 *
 * The other side may be storing these bytes concurrently; the seqlock
 * re-check discards such a copy. For that to be race-free under the C11
 * model the accesses must be atomic (Boehm, "Can seqlocks get along with
 * programming language memory models?"). Relaxed 64-bit atomics are, but
 * compilers will not vectorise them, which makes a 4 KiB copy 2.3x a
 * memcpy. On x86-64 the copy is therefore one `rep movsb` in an asm
 * statement: opaque to the compiler (no C-level access, so no C-level
 * race), it is the "byte-wise atomic memcpy" of C++ proposal P1478, and with
 * FSRM/ERMS it runs at memcpy speed. Elsewhere, and under ThreadSanitizer
 * (which must see the atomics), relaxed atomic words are used. Storing a
 * partial last word writes zeros past n, up to the word's end: the slot,
 * its text fields and the watch path all have room for it. */
#define ZKW__PAYLOAD_LOAD  0
#define ZKW__PAYLOAD_STORE 1

/* Bytes [8 i, 8 i + k), k <= 8, as one relaxed atomic word of the segment. */
ZKW__ALWAYS_INLINE void zkw__payload_word(void *dst, const void *src, size_t i, size_t k, int direction)
{
	uint64_t w = 0;

	if (direction == ZKW__PAYLOAD_STORE) {
		memcpy(&w, (const unsigned char *)src + 8 * i, k);
		__atomic_store_n((uint64_t *)dst + i, w, __ATOMIC_RELAXED);
	} else {
		w = __atomic_load_n((const uint64_t *)src + i, __ATOMIC_RELAXED);
		memcpy((unsigned char *)dst + 8 * i, &w, k);
	}
}

/* The portable copy: relaxed atomic words (always compiled, so the tests
 * exercise it on x86-64 too). */
ZKW__ALWAYS_INLINE void zkw__payload_copy_words(void *dst, const void *src, size_t n, int direction)
{
	size_t i, words = n / 8;

	for (i = 0; i < words; i++)
		zkw__payload_word(dst, src, i, 8, direction);
	if (n % 8) /* the slot is padded to a cache line: a whole word is there */
		zkw__payload_word(dst, src, words, n % 8, direction);
}

ZKW__ALWAYS_INLINE void zkw__payload_copy(void *dst, const void *src, size_t n, int direction)
{
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__) && !defined(ZKW_PORTABLE_COPY)
	(void)direction; /* one instruction for both */
	__asm__ __volatile__("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
#else
	zkw__payload_copy_words(dst, src, n, direction);
#endif
}

/* Payload out of the segment (a reader, inside zkw_slot_read_begin/_retry). */
ZKW__ALWAYS_INLINE void zkw_payload_load(void *dst, const void *segment_src, size_t n)
{
	zkw__payload_copy(dst, segment_src, n, ZKW__PAYLOAD_LOAD);
}

/* Payload into the segment (the writer, inside zkw_slot_write_begin/_end). */
ZKW__ALWAYS_INLINE void zkw_payload_store(void *segment_dst, const void *src, size_t n)
{
	zkw__payload_copy(segment_dst, src, n, ZKW__PAYLOAD_STORE);
}

/* ---- the hot line ------------------------------------------------------
 *
 * Readers poll the generation, or sleep on the futex word; the writer
 * announces a publish by storing the state, then the generation, then
 * bumping the futex word and waking every waiter. A waiter loads the word
 * before the generation, and the kernel compares the word again before
 * sleeping, so no wakeup is missed. The confirmation time (minor 2) is
 * stored before the generation at a publish, and alone when ZooKeeper
 * confirms what is published: then nobody is woken. */

/* The last published generation: one acquire load. Pairs with the release
 * store in zkw_segment_announce(): a reader that sees generation g sees
 * slot g's zkw_slot_write_end() too. 0 = nothing published yet. */
ZKW__ALWAYS_INLINE uint64_t zkw_segment_generation(const struct zkw_segment_hot *hot)
{
	return __atomic_load_n(&hot->generation, __ATOMIC_ACQUIRE);
}

/* ZKW_STATE_* bits. The acquire load pairs with the release stores (and the
 * release fetch-and) in zkw_segment_set_state() and
 * zkw_segment_announce_stopped(). */
ZKW__ALWAYS_INLINE uint32_t zkw_segment_state(const struct zkw_segment_hot *hot)
{
	return __atomic_load_n(&hot->state, __ATOMIC_ACQUIRE);
}

/* The futex word, loaded by a waiter before it checks the generation. The
 * acquire load pairs with the release increment in zkw_segment_wake(). */
ZKW__ALWAYS_INLINE uint32_t zkw_segment_futex_word(const struct zkw_segment_hot *hot)
{
	return __atomic_load_n(&hot->futex, __ATOMIC_ACQUIRE);
}

/* Sleep while the futex word still equals `seen` (from
 * zkw_segment_futex_word()), until zkw_segment_wake() or the absolute
 * CLOCK_MONOTONIC deadline (NULL: none). 0, or -1 with errno as futex(2):
 * EAGAIN the word moved, ETIMEDOUT, EINTR. */
static inline int zkw_segment_futex_wait(const struct zkw_segment_hot *hot, uint32_t seen,
                                         const struct timespec *deadline)
{
	return zkw__futex(&hot->futex, FUTEX_WAIT_BITSET, seen, deadline, FUTEX_BITSET_MATCH_ANY) < 0 ? -errno
	                                                                                              : 0;
}

/* Writer: store the state bits. The release store pairs with the acquire
 * load in zkw_segment_state(). */
ZKW__ALWAYS_INLINE void zkw_segment_set_state(struct zkw_segment_hot *hot, uint32_t state)
{
	__atomic_store_n(&hot->state, state, __ATOMIC_RELEASE);
}

/* The last confirmation by ZooKeeper (CLOCK_REALTIME ns; 0 = none), on a
 * segment whose ident.abi_minor >= ZKW_ABI_MINOR_HOT_CONFIRMED: one load.
 * A lone timestamp, nothing is read through it, so relaxed suffices; a
 * reader that acquired generation g (zkw_segment_generation) sees at
 * least the value stored before g was announced. */
ZKW__ALWAYS_INLINE uint64_t zkw_segment_confirmed_ns(const struct zkw_segment_hot *hot)
{
	return __atomic_load_n(&hot->confirmed_ns, __ATOMIC_RELAXED);
}

/* Writer: store the confirmation time. At a publish it goes before
 * zkw_segment_announce(), whose release store of the generation orders it;
 * alone (a confirmation that changes nothing) it moves no generation and
 * wakes nobody: pollers see it at their next load. */
ZKW__ALWAYS_INLINE void zkw_segment_set_confirmed(struct zkw_segment_hot *hot, uint64_t confirmed_ns)
{
	__atomic_store_n(&hot->confirmed_ns, confirmed_ns, __ATOMIC_RELAXED);
}

/* Writer: bump the futex word and wake every waiter. The release increment
 * pairs with the acquire load in zkw_segment_futex_word(). */
static inline void zkw_segment_wake(struct zkw_segment_hot *hot)
{
	__atomic_fetch_add(&hot->futex, 1, __ATOMIC_RELEASE);
	zkw__futex(&hot->futex, FUTEX_WAKE, INT_MAX, NULL, 0);
}

/* Writer: publish `generation` (its slot already closed by
 * zkw_slot_write_end()) with its state bits: state, then the generation,
 * then the futex word, then wake everybody. The release store of the
 * generation pairs with the acquire load in zkw_segment_generation(). */
static inline void zkw_segment_announce(struct zkw_segment_hot *hot, uint64_t generation, uint32_t state)
{
	zkw_segment_set_state(hot, state);
	__atomic_store_n(&hot->generation, generation, __ATOMIC_RELEASE);
	zkw_segment_wake(hot);
}

/* Writer, at exit: clear RUNNING and CONNECTED (the generation stays) and
 * wake everybody. The release fetch-and pairs with the acquire load in
 * zkw_segment_state(). */
static inline void zkw_segment_announce_stopped(struct zkw_segment_hot *hot)
{
	__atomic_fetch_and(&hot->state, ~(uint32_t)(ZKW_STATE_RUNNING | ZKW_STATE_CONNECTED),
	                   __ATOMIC_RELEASE);
	zkw_segment_wake(hot);
}

#ifdef __cplusplus
}
#endif
#endif /* ZKW_SEGMENT_H */
