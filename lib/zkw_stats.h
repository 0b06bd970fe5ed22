/* SPDX-License-Identifier: Apache-2.0 */
/* zkw_stats.h - a broker's counters in shared memory, which anyone allowed
 * to read its segments reads without the broker's help (docs/design.md,
 * "The broker's counters").
 *
 * Each running zkw-broker publishes one page, /dev/shm/zkw-stats.<pid>:
 * an identity line, 64-bit counters it increments with relaxed atomic
 * adds, and the last error it met (text and time) under a sequence
 * counter. The broker holds an OFD write lock on it for its life (the
 * segments' liveness rule) and removes it at a clean stop. The writer is
 * broker/daemon/stats.c; zkw-inspect (--list, --prometheus) reads it with
 * the helpers below, after the segments' trust rules (a known owner, no
 * group or other write bits).
 *
 *     struct zkw_stats_view v;
 *     if (zkw_stats_load(map, st.st_size, &v) == 0)        // map: PROT_READ, trusted
 *             printf("%llu publishes\n", (unsigned long long)v.counter[ZKW_STAT_PUBLISHES]);
 *
 * The layout is an ABI of its own, versioned like the segment's: a reader
 * refuses another major, accepts any minor, and reads a counter only when
 * its index is below the writer's counter_count (a newer counter is 0 on
 * an older broker's page: shown as absent, not as zero).
 */
#ifndef ZKW_LIB_STATS_H
#define ZKW_LIB_STATS_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define ZKW_STATS_MAGIC        0x31415453574b5a7fULL /* "\x7fZKWSTA1" little-endian */
#define ZKW_STATS_ABI_MAJOR    1u
#define ZKW_STATS_ABI_MINOR    1u /* 1: counters 11..14 */
#define ZKW_STATS_SIZE         4096u        /* the whole object: one page */
#define ZKW_STATS_PREFIX       "zkw-stats." /* /dev/shm/zkw-stats.<pid> */
#define ZKW_STATS_COUNTERS_MAX 48u
#define ZKW_STATS_VERSION_MAX  32u
#define ZKW_STATS_SOCKET_MAX   128u
#define ZKW_STATS_ERROR_MAX    1024u
#define ZKW_STATS_READ_RETRIES 4096 /* of the last error's sequence, then -EAGAIN */

/* Counter indexes: the ABI. New counters are appended (a minor change);
 * an index is never reused. */
enum zkw_stat {
	ZKW_STAT_ZK_EVENTS = 0,             /* watch notifications from ZooKeeper: session and node events */
	ZKW_STAT_ZK_READS = 1,              /* reads sent: a get, or an exists with a watch */
	ZKW_STAT_RECONCILE_CHECKS = 2,      /* reconcile exists requests sent */
	ZKW_STAT_RECONCILE_REPAIRS = 3,     /* reconciles that found a node changed unnoticed */
	ZKW_STAT_RECONNECTS = 4,            /* connected again after losing the connection or the session */
	ZKW_STAT_SESSION_EXPIRIES = 5,      /* sessions lost: expired, refused, or given up unconnected */
	ZKW_STAT_PUBLISHES = 6,             /* generations published into segments */
	ZKW_STAT_CONFIRMATIONS = 7,         /* confirmations alone: confirmed-at moved, no generation */
	ZKW_STAT_SUBSCRIPTIONS = 8,         /* subscriptions accepted on the control socket */
	ZKW_STAT_SUBSCRIPTIONS_REFUSED = 9, /* refused by the policy or a cap */
	ZKW_STAT_ERRORS = 10,               /* errors recorded (each became the last error) */
	ZKW_STAT_REJECTIONS = 11,           /* contents refused by a watch's validation */
	ZKW_STAT_STATE_WRITES = 12,         /* snapshots written to the state directory */
	ZKW_STAT_STATE_FAILURES = 13,       /* writes to the state directory that failed */
	ZKW_STAT_COLD_STARTS = 14,          /* watches published from the state directory at their start */
	ZKW_STAT_COUNT = 15                 /* counters this version keeps */
};

/* The object. Offsets are pinned below; the identity is written before
 * the magic, which is stored last with release. */
struct zkw_stats_object {
	uint64_t magic;                           /* 0 */
	uint16_t abi_major;                       /* 8 */
	uint16_t abi_minor;                       /* 10 */
	uint32_t size;                            /* 12: ZKW_STATS_SIZE */
	uint32_t broker_pid;                      /* 16 */
	uint32_t counter_count;                   /* 20: counters the writer keeps (ZKW_STAT_COUNT) */
	uint64_t broker_started_ns;               /* 24: CLOCK_REALTIME */
	char version[ZKW_STATS_VERSION_MAX];      /* 32: ZKW_VERSION, NUL-terminated */
	uint64_t counter[ZKW_STATS_COUNTERS_MAX]; /* 64: relaxed atomic adds */
	char socket[ZKW_STATS_SOCKET_MAX];        /* 448: the control socket, "" = none */
	uint8_t reserved0[64];                    /* 576: zero */
	/* The last error: written under error_seq (odd while written), a
	 * seqlock like a segment slot's. */
	uint64_t error_seq;              /* 640 */
	uint64_t error_ns;               /* 648: CLOCK_REALTIME; 0 = none yet */
	uint32_t error_level;            /* 656: ZKW_LOG_ERROR 1, ZKW_LOG_WARN 2 */
	uint32_t error_len;              /* 660: < ZKW_STATS_ERROR_MAX */
	char error[ZKW_STATS_ERROR_MAX]; /* 664 */
	uint8_t reserved1[ZKW_STATS_SIZE - 664 - ZKW_STATS_ERROR_MAX];
};

_Static_assert(sizeof(struct zkw_stats_object) == ZKW_STATS_SIZE, "stats object is one page");
_Static_assert(offsetof(struct zkw_stats_object, counter) == 64, "counters at 64");
_Static_assert(offsetof(struct zkw_stats_object, socket) == 448, "socket at 448");
_Static_assert(offsetof(struct zkw_stats_object, error_seq) == 640, "last error at 640");
_Static_assert(offsetof(struct zkw_stats_object, error) == 664, "error text at 664");
_Static_assert(ZKW_STAT_COUNT <= ZKW_STATS_COUNTERS_MAX, "room for the counters");

/* What a reader copies out of a trusted, mapped object. */
struct zkw_stats_view {
	unsigned abi_major, abi_minor;
	uint32_t broker_pid;
	uint32_t counter_count; /* min(the writer's, ZKW_STATS_COUNTERS_MAX) */
	uint64_t broker_started_ns;
	char version[ZKW_STATS_VERSION_MAX];
	char socket[ZKW_STATS_SOCKET_MAX];
	uint64_t counter[ZKW_STATS_COUNTERS_MAX]; /* 0 past counter_count */
	uint64_t error_ns;                        /* 0 = no error yet */
	uint32_t error_level;
	bool error_torn; /* the writer kept rewriting it: error_ns 0, text "" */
	char error[ZKW_STATS_ERROR_MAX];
};

/* A NUL-terminated copy of a fixed text field, byte by byte (relaxed). */
static inline void zkw__stats_text(char *dst, const char *src, size_t cap)
{
	size_t i;

	for (i = 0; i + 1 < cap; i++) {
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
		if (!dst[i])
			break;
	}
	dst[i < cap ? i : cap - 1] = '\0';
}

/* Validate the object at base (size bytes mapped, from a trusted owner)
 * and copy it into *v. 0, or -EBADMSG (not a stats object, too small),
 * -EPROTO (another major). */
static inline int zkw_stats_load(const void *base, size_t size, struct zkw_stats_view *v)
{
	const struct zkw_stats_object *o = (const struct zkw_stats_object *)base;
	int tries;

	memset(v, 0, sizeof(*v));
	if (size < ZKW_STATS_SIZE)
		return -EBADMSG;
	/* Pairs with the release store of the magic in stats.c's
	 * stats_publish_identity(): seeing it means seeing the identity. */
	if (__atomic_load_n(&o->magic, __ATOMIC_ACQUIRE) != ZKW_STATS_MAGIC)
		return -EBADMSG;
	v->abi_major = __atomic_load_n(&o->abi_major, __ATOMIC_RELAXED);
	v->abi_minor = __atomic_load_n(&o->abi_minor, __ATOMIC_RELAXED);
	if (v->abi_major != ZKW_STATS_ABI_MAJOR)
		return -EPROTO;
	v->broker_pid = __atomic_load_n(&o->broker_pid, __ATOMIC_RELAXED);
	v->broker_started_ns = __atomic_load_n(&o->broker_started_ns, __ATOMIC_RELAXED);
	v->counter_count = __atomic_load_n(&o->counter_count, __ATOMIC_RELAXED);
	if (v->counter_count > ZKW_STATS_COUNTERS_MAX)
		v->counter_count = ZKW_STATS_COUNTERS_MAX;
	zkw__stats_text(v->version, o->version, sizeof(v->version));
	zkw__stats_text(v->socket, o->socket, sizeof(v->socket));
	for (uint32_t i = 0; i < v->counter_count; i++)
		v->counter[i] = __atomic_load_n(&o->counter[i], __ATOMIC_RELAXED);
	for (tries = 0; tries < ZKW_STATS_READ_RETRIES; tries++) {
		/* Pairs with the release store that ends a write in stats.c's
		 * zkw__stats_error(): an even start brings that write's text. */
		uint64_t seq = __atomic_load_n(&o->error_seq, __ATOMIC_ACQUIRE);
		uint32_t len;

		if (seq & 1)
			continue;
		v->error_ns = __atomic_load_n(&o->error_ns, __ATOMIC_RELAXED);
		v->error_level = __atomic_load_n(&o->error_level, __ATOMIC_RELAXED);
		len = __atomic_load_n(&o->error_len, __ATOMIC_RELAXED);
		if (len >= ZKW_STATS_ERROR_MAX) /* torn or hostile: the re-check decides */
			len = ZKW_STATS_ERROR_MAX - 1;
		for (uint32_t i = 0; i < len; i++)
			v->error[i] = __atomic_load_n(&o->error[i], __ATOMIC_RELAXED);
		v->error[len] = '\0';
		/* Pairs with the release fence after the odd store in
		 * zkw__stats_error(): a reader that loaded any byte of a later
		 * write sees the sequence moved. */
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (__atomic_load_n(&o->error_seq, __ATOMIC_RELAXED) == seq)
			return 0;
	}
	v->error_torn = true;
	v->error_ns = 0;
	v->error[0] = '\0';
	return 0;
}

#endif
