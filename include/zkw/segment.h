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
 *   | futex word, state       |
 *   +-------------------------+ 128
 *   | watched path            |    informational
 *   +-------------------------+ ZKW_HEADER_SIZE
 *   | slot 0 | slot 1 | ...   |    seqlock "latch": slot = generation % count
 *   +-------------------------+
 *
 * Publishing generation g fills slot g % slot_count (never the published
 * one, g - 1), under that slot's sequence counter, then stores g into the
 * hot line with release semantics, bumps the futex word and wakes all. A
 * writer killed mid-publish leaves only an unpublished slot odd, so readers
 * keep reading generation g - 1 and never spin on it.
 *
 * Generation 0 is "nothing published yet": slot 0 is all zero, which reads
 * as an empty, invalid, disconnected snapshot.
 *
 * Every field a reader may load while the writer stores is accessed with
 * __atomic builtins (relaxed for the payload, see client.h), never plain
 * loads, so the header also compiles as C++.
 */
#ifndef ZKW_SEGMENT_H
#define ZKW_SEGMENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ZKW_SEGMENT_MAGIC 0x31474553574b5a7fULL /* "\x7fZKWSEG1" little-endian */
#define ZKW_ABI_MAJOR     1u                    /* incompatible layout change: readers refuse */
#define ZKW_ABI_MINOR     0u                    /* compatible additions: readers accept newer */

#define ZKW_CACHELINE        64u
#define ZKW_SLOT_COUNT       2u              /* slots this writer creates */
#define ZKW_SLOT_COUNT_MAX   16u             /* readers refuse more */
#define ZKW_DEFAULT_CAPACITY (1024u * 1024u) /* ZooKeeper's jute.maxbuffer */
#define ZKW_CAPACITY_MAX     (256u * 1024u * 1024u)
#define ZKW_ERROR_MAX        1280 /* error text incl. NUL; same tokens as in watcher.h */
#define ZKW_POINTER_MAX      1024 /* pointer path incl. NUL; same tokens as in watcher.h */
#define ZKW_WATCH_PATH_MAX   1024u

/* Bits of zkw_segment_hot.state: a summary of the published slot plus the
 * broker's own state, so polling readers need one load. */
#define ZKW_STATE_VALID     0x1u /* published snapshot is valid */
#define ZKW_STATE_CONNECTED 0x2u /* broker's ZooKeeper session is connected */
#define ZKW_STATE_RUNNING   0x4u /* broker started and has not exited cleanly */

/* Bits of zkw_slot.flags. */
#define ZKW_SLOT_VALID     0x1u
#define ZKW_SLOT_CONNECTED 0x2u

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
	uint8_t pad_[ZKW_CACHELINE - 16];
};

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

#ifdef __cplusplus
}
#endif
#endif /* ZKW_SEGMENT_H */
