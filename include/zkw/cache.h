/* SPDX-License-Identifier: Apache-2.0 */
/* cache.h - multi-threaded reader cache of a zkw segment, on userspace RCU.
 *
 * One follower thread per cache blocks on the segment's futex and, at each
 * new generation, copies the snapshot once into an immutable heap snapshot
 * and publishes it. Worker threads then read the current snapshot in place:
 * no copy, no syscall, no retry, no lock - two plain loads and two stores to
 * thread-local words. Old snapshots are freed after an RCU grace period.
 *
 *     zkw_cache *c;
 *     if (zkw_cache_open(&c, "/zkw.tmp.myconfig", NULL) == 0) {
 *             const zkw_cache_snapshot *s = zkw_cache_get(c);   // any thread
 *             if (s) { use(s->content, s->len); zkw_cache_put(c, s); }
 *             zkw_cache_close(c);
 *     }
 *
 * Why liburcu's "memb" flavour (-lurcu-memb): it is the one meant for
 * library code. Its readers need no signal handler (unlike urcu-signal,
 * which would steal a signal from the application), the application never
 * has to announce quiescent states (unlike urcu-qsbr, which would require
 * every user thread to call rcu_quiescent_state() periodically), and the
 * read side is a compiler barrier only: the writer's grace period pays with
 * membarrier(2) instead (urcu-mb would put a full fence on every get).
 *
 * Threads. A urcu-memb reader thread must be registered. The cache does it
 * lazily, at a thread's first zkw_cache_get(), and unregisters the thread
 * at its exit through a pthread key destructor, so worker threads need no
 * set-up at all. A thread may unregister earlier with
 * zkw_cache_thread_exit() (e.g. a long-lived thread that is done with every
 * cache). Caveat: a program that itself uses liburcu-memb must not register
 * with urcu-memb the threads it uses with the cache (the registration would
 * be doubled); use a different flavour for its own RCU, or let the cache's
 * registration serve both. Do not dlclose() libzkw-cache while threads that
 * used it are alive (their key destructor lives in it).
 *
 * Rules between zkw_cache_get() and zkw_cache_put() (an RCU read-side
 * critical section):
 *   - put on the same thread that did get, with the snapshot get returned;
 *   - do not block or sleep in between (it holds back the reclamation of
 *     every older snapshot, and so the follower); in particular never call
 *     zkw_cache_wait(), zkw_cache_shutdown() or zkw_cache_close() there;
 *   - get/put pairs nest (inner gets may return a newer snapshot; each put
 *     ends the matching get);
 *   - the snapshot and everything it points to is valid until the put and
 *     must not be used after it; copy what you want to keep.
 *
 * Stopping, safe by design while workers are reading:
 *   zkw_cache_shutdown(c) may be called while other threads are between
 *   get and put, or are calling get/put/generation/wait. It stops the
 *   follower (no on_change call after it returns), unpublishes the
 *   snapshot so that every later zkw_cache_get() returns NULL, wakes every
 *   zkw_cache_wait() (which returns -ESHUTDOWN), waits for a grace period
 *   (every thread that still held a snapshot has put it) and frees the
 *   snapshots. The cache object itself stays allocated.
 *   zkw_cache_close(c) shuts down (if not yet) and frees the object: no
 *   thread may call anything on c once close has started - typical use is
 *   shutdown, join the workers (which stop at their first NULL get), close.
 *   Calling close directly is fine when no other thread uses c any more.
 *
 * Errors are 0 or a negative errno, as in client.h.
 */
#ifndef ZKW_CACHE_H
#define ZKW_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <zkw/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct zkw_cache zkw_cache;

/* One immutable snapshot, as the broker published it. Everything it points
 * to lives in the same allocation and is freed after a grace period. */
typedef struct zkw_cache_snapshot {
	uint64_t generation;          /* segment generation this was read at; 0 = nothing published */
	uint64_t content_gen;         /* generation at which this content appeared */
	const unsigned char *content; /* len bytes, plus a '\0' after them (not counted) */
	size_t len;
	bool valid;
	bool connected;
	int64_t version; /* ZooKeeper data version, -1 if none */
	int64_t mzxid;
	uint64_t confirmed_ns; /* CLOCK_REALTIME of the last confirmation */
	uint64_t changed_ns;   /* CLOCK_REALTIME the content last changed */
	const char *pointer;   /* pointer path ("" when not in pointer mode) */
	const char *error;     /* error text ("" when valid) */
	/* Added in 0.13 (at the end: the library allocates snapshots). As in
	 * zkw_snapshot: the content came from the broker's disk cache at a
	 * cold start; newer content failed the watch's validation. */
	bool cached;
	bool rejected;
} zkw_cache_snapshot;

/* Zero-initialised options are the defaults (hence require_uid rather than
 * client.h's (uid_t)-1 convention: {0} must not mean "owned by root").
 *
 * Owner policy, as zkw_reader_open() in zkw/client.h: by default a segment
 * is accepted only from root, the caller's effective uid, or the uid that
 * ZKW_SEGMENT_OWNER names (exactly that one, when set); with require_uid,
 * only from expected_uid. A segment writable by group or others is always
 * refused (-EPERM). A segment the broker replaces (ZKW_STATE_RETIRED) is
 * reopened by name under the same policy, without a gap in generations. */
typedef struct zkw_cache_options {
	bool require_uid; /* trust exactly expected_uid instead of the default owners */
	uid_t expected_uid;
	/* Called on the follower thread with the snapshot current at open
	 * (once the follower starts) and then once per published snapshot.
	 * Generations that arrive faster than the follower reads are
	 * coalesced: the callback sees the newest. s is valid during the call
	 * only (no get/put needed). The callback must not call
	 * zkw_cache_shutdown()/close() on its own cache (-EDEADLK). */
	void (*on_change)(void *ctx, const zkw_cache_snapshot *s);
	void *ctx;
} zkw_cache_options;

/* Map the segment, read the current snapshot, start the follower thread.
 * 0 or -errno: -ENOENT no such segment (is zkw-broker running?), -EACCES,
 * -EPERM owner not trusted or segment writable by group or others (see
 * zkw_cache_options), -EBADMSG corrupt, -EPROTO ABI mismatch, -EINVAL bad
 * name or a ZKW_SEGMENT_OWNER naming no user, -ENOMEM, -EAGAIN (could not
 * get a stable read, or create the thread). opt may be NULL. */
ZKW_API int zkw_cache_open(zkw_cache **out, const char *shm_name, const zkw_cache_options *opt);

/* Begin reading: the current snapshot, never NULL while the cache is open;
 * NULL once zkw_cache_shutdown() has begun (then there is nothing to put).
 * No copy, no syscall. Registers the calling thread on first use. */
ZKW_API const zkw_cache_snapshot *zkw_cache_get(zkw_cache *c);

/* End reading what zkw_cache_get() returned (NULL is a no-op). Does not
 * dereference c, so it is safe while zkw_cache_close() waits for it. */
ZKW_API void zkw_cache_put(zkw_cache *c, const zkw_cache_snapshot *s);

/* Generation of the snapshot currently published by the cache (one acquire
 * load). A zkw_cache_get() after it returned g returns a snapshot with
 * generation >= g. */
ZKW_API uint64_t zkw_cache_generation(const zkw_cache *c);

/* Block until the cache publishes a generation other than `seen`: 1 when it
 * did, 0 on timeout, -EINTR on a signal, -ESHUTDOWN when the cache is shut
 * down. timeout_ms < 0 waits forever. Must not be called between get and put. */
ZKW_API int zkw_cache_wait(zkw_cache *c, uint64_t seen, int timeout_ms);

/* The follower's last read error (0 if its last read succeeded): -EBADMSG
 * for a corrupt slot, for instance, or what reopening a replaced segment
 * failed with (-ENOENT, -EPERM: it retries every 100 ms). The cache keeps
 * its last snapshot. */
ZKW_API int zkw_cache_follower_error(const zkw_cache *c);

/* Stop following and unpublish (see "Stopping" above). 0, or -EDEADLK when
 * called from on_change or between get and put on the calling thread.
 * Idempotent. */
ZKW_API int zkw_cache_shutdown(zkw_cache *c);

/* Shut down if needed and free. NULL is fine. Must not be called from
 * on_change or between get and put. */
ZKW_API void zkw_cache_close(zkw_cache *c);

/* Unregister the calling thread from RCU now instead of at its exit. Not
 * between get and put. A later zkw_cache_get() registers it again. */
ZKW_API void zkw_cache_thread_exit(void);

#ifdef __cplusplus
}
#endif
#endif /* ZKW_CACHE_H */
