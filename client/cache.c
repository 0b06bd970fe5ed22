/* SPDX-License-Identifier: Apache-2.0 */
/* cache.c - multi-threaded reader cache of a zkw segment (see zkw/cache.h).
 *
 * Writer side: one follower thread per cache reads each new generation of
 * the segment once into a heap snapshot ("node"), publishes it with
 * rcu_assign_pointer(), and frees the node it replaced after
 * synchronize_rcu(). Read side: zkw_cache_get() = rcu_read_lock() +
 * rcu_dereference(), zkw_cache_put() = rcu_read_unlock().
 *
 * Why synchronize_rcu() in the follower rather than call_rcu(): the follower
 * has nothing else to do between generations, so blocking it for a grace
 * period costs nothing but a little latency on a burst (a burst is coalesced
 * anyway: the follower always reads the newest generation). In exchange at
 * most two snapshots are ever alive (current + the one being retired),
 * which matters with 1 MiB contents; no call_rcu worker thread is created
 * in the user's process; and shutdown needs no rcu_barrier() to know that
 * every callback has run. It also keeps ThreadSanitizer's view simple (see
 * ZKW_TSAN below).
 */
#include <zkw/cache.h>
#include <zkw/client.h>

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

/* Inline rcu_dereference()/rcu_assign_pointer() (a load and a store; 10
 * lines or less): licence-neutral by liburcu's own terms. _LGPL_SOURCE
 * would also inline rcu_read_lock()/unlock() (get+put ~9 ns instead of
 * ~20 ns, see tests/bench/bench_cache.c) but makes this file LGPL-derived:
 * opt in with -DZKW_CACHE_LGPL_INLINE when zkw's licence allows it. Both
 * need headers matching the library's major version (the Debian package
 * guarantees it). */
#ifdef ZKW_CACHE_LGPL_INLINE
#define _LGPL_SOURCE
#endif
#define URCU_INLINE_SMALL_FUNCTIONS
#include <urcu/urcu-memb.h>
#include <urcu/pointer.h>

/* ---- ThreadSanitizer ------------------------------------------------------
 *
 * liburcu is not instrumented, so TSan would see neither the ordering of
 * rcu_assign_pointer()/rcu_dereference() nor the grace period between a
 * reader's rcu_read_unlock() and the follower's free(). Under TSan the
 * pointer is published and loaded with the equivalent (stronger)
 * __atomic release/acquire operations, and the grace period is described
 * with __tsan_release() in put and __tsan_acquire() after
 * synchronize_rcu(): every put that precedes the end of the grace period
 * happens-before the free, which is exactly what RCU guarantees. */
#if defined(__SANITIZE_THREAD__)
#define ZKW_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ZKW_TSAN 1
#endif
#endif

#ifdef ZKW_TSAN
#include <sanitizer/tsan_interface.h>
#define cache_publish_pointer(p, v) __atomic_store_n(&(p), (v), __ATOMIC_RELEASE)
#define cache_load_pointer(p)       __atomic_load_n(&(p), __ATOMIC_ACQUIRE)
#define tsan_release(addr)          __tsan_release((void *)(addr))
#define tsan_acquire(addr)          __tsan_acquire((void *)(addr))
#else
#define cache_publish_pointer(p, v) rcu_assign_pointer(p, v)
#define cache_load_pointer(p)       rcu_dereference(p)
#define tsan_release(addr)          ((void)(addr))
#define tsan_acquire(addr)          ((void)(addr))
#endif

/* Follower's fallback poll period, used only where futex_waitv(2) (Linux
 * 5.16) is missing: it bounds how long shutdown waits for the follower. */
#define CACHE_FALLBACK_POLL_MS 100
/* Attempts at a stable read when opening before giving up with -EAGAIN. */
#define CACHE_OPEN_READ_ATTEMPTS 64
/* follower_wait(): the segment was replaced, reopen it. */
#define FOLLOW_RETIRED 2
/* A node whose buffer exceeds its content by more than this is shrunk. */
#define CACHE_SLACK_MAX (64u * 1024u)

/* One published snapshot; pub first so get() can hand out &node->pub. */
struct cache_node {
	zkw_cache_snapshot pub;
	zkw_snapshot meta; /* zkw_reader_read() fills it; pub.error/pointer point here */
	size_t cap;
	unsigned char content[]; /* cap bytes + 1 for the terminating '\0' */
};

struct zkw_cache {
	/* Read by every worker: the RCU-protected pointer and its generation. */
	struct cache_node *current; /* NULL once shutdown began */
	uint64_t generation;        /* of current; release store by the follower */
	uint32_t changed;           /* private futex word: bumped per publish and at shutdown */
	uint32_t shut;              /* 1 once shutdown unpublished (read by zkw_cache_wait) */

	/* Follower and shutdown only. */
	uint32_t stop;      /* private futex word: 1 = follower must return */
	int follower_error; /* relaxed atomic, see zkw_cache_follower_error() */
	bool no_waitv;      /* kernel without futex_waitv: poll instead */
	size_t len_hint;    /* last content length: first guess of the next */
	pthread_t follower;
	bool follower_running;
	bool shutdown_done;
	pthread_mutex_t shutdown_lock; /* serialises concurrent shutdowns */
	zkw_reader reader;
	zkw_cache_options opt;
	char name[ZKW_SHM_NAME_MAX + 1]; /* to reopen a retired segment */
};

/* ---- thread registration -------------------------------------------------
 *
 * urcu-memb readers must be registered. A thread registers at its first
 * get; the pthread key's destructor unregisters it when it exits (the
 * thread-local flag is still readable in key destructors). The key is
 * created once per process and never deleted. */

static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t thread_key;
static bool key_ok;
/* initial-exec: one %fs-relative load on the get path instead of a
 * __tls_get_addr() call; a 1-byte variable fits glibc's static TLS surplus
 * even when libzkw-cache.so is dlopen()ed. */
static __thread bool thread_registered __attribute__((tls_model("initial-exec")));

static void thread_unregister(void *unused)
{
	(void)unused;
	if (thread_registered) {
		urcu_memb_unregister_thread();
		thread_registered = false;
	}
}

static void make_key(void)
{
	key_ok = pthread_key_create(&thread_key, thread_unregister) == 0;
}

static void __attribute__((noinline)) thread_register_slow(void)
{
	/* key_ok is guaranteed by zkw_cache_open(), which every caller of get
	 * went through (it happens-before, via whatever gave them c). */
	urcu_memb_register_thread();
	thread_registered = true;
	/* Non-NULL so the destructor runs at thread exit. */
	pthread_setspecific(thread_key, (void *)1);
}

static inline void thread_register(void)
{
	if (__builtin_expect(!thread_registered, 0))
		thread_register_slow();
}

void zkw_cache_thread_exit(void)
{
	if (!thread_registered)
		return;
	pthread_setspecific(thread_key, NULL);
	thread_unregister(NULL);
}

/* ---- futex helpers (private words of this process) ---------------------- */

/* 0 or -errno, like zkw_segment_futex_wait() on the segment's shared word. */
static int futex_private(uint32_t *word, int op, uint32_t val, const struct timespec *deadline)
{
	return syscall(SYS_futex, word, op | FUTEX_PRIVATE_FLAG, val, deadline, NULL,
	               FUTEX_BITSET_MATCH_ANY) < 0
	               ? -errno
	               : 0;
}

static void wake_all(uint32_t *word)
{
	futex_private(word, FUTEX_WAKE, INT_MAX, NULL);
}

/* ---- snapshots ------------------------------------------------------------ */

/* Read the segment's current snapshot into a new node. 0, or -errno from
 * zkw_reader_read() (-EAGAIN: the writer kept lapping us; -EBADMSG), or
 * -ENOMEM. The buffer is sized from the last content length, then from the
 * length the read reported, then the capacity, so this ends. */
static int node_read(zkw_cache *c, struct cache_node **out)
{
	size_t cap = c->len_hint, capacity = (size_t)zkw_reader_capacity(&c->reader);
	struct cache_node *node = NULL;
	ssize_t n;
	int attempt;

	for (attempt = 0;; attempt++) {
		struct cache_node *grown = realloc(node, sizeof(*node) + cap + 1);

		if (!grown) {
			free(node);
			return -ENOMEM;
		}
		node = grown;
		node->cap = cap;
		n = zkw_reader_read(&c->reader, &node->meta, node->content, cap);
		if (n != -ENOBUFS)
			break;
		/* A newer, longer generation can overtake the length we were
		 * told, hence the capacity at the third attempt. */
		cap = attempt == 0 && node->meta.len > cap ? node->meta.len : capacity;
	}
	if (n < 0) {
		free(node);
		return (int)n;
	}
	if (node->cap - (size_t)n > CACHE_SLACK_MAX) {
		struct cache_node *shrunk = realloc(node, sizeof(*node) + (size_t)n + 1);

		if (shrunk)
			node = shrunk;
		node->cap = (size_t)n;
	}
	node->content[n] = '\0';
	node->pub = (zkw_cache_snapshot){
	        .generation = node->meta.generation,
	        .content_gen = node->meta.content_gen,
	        .content = node->content,
	        .len = (size_t)n,
	        .valid = node->meta.valid,
	        .connected = node->meta.connected,
	        .version = node->meta.version,
	        .mzxid = node->meta.mzxid,
	        .confirmed_ns = node->meta.confirmed_ns,
	        .changed_ns = node->meta.changed_ns,
	        .pointer = node->meta.pointer,
	        .error = node->meta.error,
	        .cached = node->meta.cached,
	        .rejected = node->meta.rejected,
	};
	c->len_hint = (size_t)n;
	*out = node;
	return 0;
}

/* Make node the current snapshot and wake zkw_cache_wait()ers. Follower
 * (or open, before the follower exists) only. Returns the replaced node,
 * which the caller frees after a grace period. */
static struct cache_node *node_publish(zkw_cache *c, struct cache_node *node)
{
	struct cache_node *old = c->current; /* only this thread stores it */

	/* Release: the node's contents are visible before the pointer. Pairs
	 * with rcu_dereference() in zkw_cache_get(). */
	cache_publish_pointer(c->current, node);
	/* Pairs with the acquire loads in zkw_cache_generation() and
	 * zkw_cache_wait(); after the pointer store, so a reader that sees
	 * generation g then gets a node of generation >= g. */
	__atomic_store_n(&c->generation, node->pub.generation, __ATOMIC_RELEASE);
	/* Pairs with the acquire load of the word in zkw_cache_wait(): a
	 * waiter that loaded the old value sees the new generation, or the
	 * kernel sees the new word and does not sleep. */
	__atomic_fetch_add(&c->changed, 1, __ATOMIC_RELEASE);
	wake_all(&c->changed);
	return old;
}

/* Free a node nobody can reach any more once a grace period has passed. */
static void node_retire(struct cache_node *old)
{
	if (!old)
		return;
	/* Waits until every reader that may have loaded old (rcu_read_lock
	 * before the pointer store in node_publish) has called
	 * rcu_read_unlock() in zkw_cache_put(). */
	urcu_memb_synchronize_rcu();
	tsan_acquire(old); /* pairs with tsan_release() in zkw_cache_put() */
	free(old);
}

/* ---- the follower ------------------------------------------------------------- */

static bool follower_stopping(zkw_cache *c)
{
	/* Pairs with the release store in zkw_cache_shutdown(). */
	return __atomic_load_n(&c->stop, __ATOMIC_ACQUIRE) != 0;
}

/* Sleep up to ms, or until shutdown: a back-off after a failed read. */
static void follower_backoff(zkw_cache *c, int ms)
{
	struct timespec dl;

	futex_private(&c->stop, FUTEX_WAIT_BITSET, 0, zkw__deadline(&dl, ms));
}

/* Block until the segment's generation differs from seen (1), the segment
 * is retired (FOLLOW_RETIRED) or shutdown is asked (0); -errno on an
 * unexpected error. One futex_waitv(2) waits on
 * the segment's shared word and our private stop word at once, so
 * shutdown wakes exactly this thread, without a wakeup for the segment's
 * other readers and without a polling period. */
static int follower_wait(zkw_cache *c, uint64_t seen)
{
	const struct zkw_segment_hot *hot = &zkw__header(&c->reader)->hot;
	const uint32_t *word = &hot->futex;

	for (;;) {
		/* Loaded before the generation, as in zkw_reader_wait(): an
		 * acquire load paired with the release increment in
		 * zkw_segment_wake() (zkw/segment.h). */
		uint32_t word_seen = zkw_segment_futex_word(hot);
		int rc;

		if (follower_stopping(c))
			return 0;
		if (zkw_reader_generation(&c->reader) != seen)
			return 1;
		/* The retiring broker stores the state before it bumps the
		 * word: a wake we slept through shows here. */
		if (zkw_reader_retired(&c->reader))
			return FOLLOW_RETIRED;
#ifdef SYS_futex_waitv
		if (!c->no_waitv) {
			struct futex_waitv w[2] = {
			        {.val = word_seen, .uaddr = (uintptr_t)word, .flags = FUTEX_32},
			        {.val = 0,
			         .uaddr = (uintptr_t)&c->stop,
			         .flags = FUTEX_32 | FUTEX_PRIVATE_FLAG},
			};

			/* The kernel re-checks both words before sleeping: a
			 * publish or a stop after our loads makes it return. */
			if (syscall(SYS_futex_waitv, w, 2, 0, NULL, 0) >= 0 || errno == EAGAIN ||
			    errno == EINTR)
				continue;
			if (errno != ENOSYS && errno != EINVAL)
				return -errno;
			c->no_waitv = true;
		}
#endif
		/* Old kernels: a bounded wait, so the stop flag is seen. */
		rc = zkw_reader_wait(&c->reader, seen, CACHE_FALLBACK_POLL_MS);
		if (rc < 0 && rc != -EINTR && rc != -ESTALE)
			return rc;
	}
}

/* The owner policy of zkw_cache_options, as reader options. */
static zkw_reader_options cache_reader_options(const zkw_cache *c)
{
	zkw_reader_options ropt = {.expected_uid = (uid_t)-1}; /* the default policy */

	if (c->opt.require_uid)
		ropt.expected_uid = c->opt.expected_uid;
	return ropt;
}

/* The broker replaced the segment: open the name again, under the same
 * owner policy, and follow the new one (it continues the generations).
 * 0, or -errno (the follower tries again after a back-off). Only the
 * follower uses c->reader, so it may swap it. */
static int follower_reopen(zkw_cache *c)
{
	zkw_reader_options ropt = cache_reader_options(c);
	zkw_reader fresh;
	int err = zkw_reader_open_ex(&fresh, c->name, &ropt);

	if (err)
		return err;
	if (zkw_reader_retired(&fresh)) { /* replaced again meanwhile */
		zkw_reader_close(&fresh);
		return -ESTALE;
	}
	zkw_reader_close(&c->reader);
	c->reader = fresh; /* why is NULL after a successful open: nothing points into fresh */
	return 0;
}

static void follower_call(zkw_cache *c, const struct cache_node *node)
{
	if (c->opt.on_change)
		c->opt.on_change(c->opt.ctx, &node->pub);
}

static void *follower_main(void *arg)
{
	zkw_cache *c = arg;
	uint64_t seen = c->current->pub.generation;

	if (seen > 0)
		follower_call(c, c->current);
	for (;;) {
		struct cache_node *node;
		int rc = follower_wait(c, seen);

		if (rc == 0)
			break;
		if (rc == FOLLOW_RETIRED) {
			rc = follower_reopen(c);
			__atomic_store_n(&c->follower_error, rc, __ATOMIC_RELAXED);
			if (rc)
				follower_backoff(c, CACHE_FALLBACK_POLL_MS);
			continue;
		}
		if (rc < 0) {
			__atomic_store_n(&c->follower_error, rc, __ATOMIC_RELAXED);
			follower_backoff(c, 10);
			continue;
		}
		rc = node_read(c, &node);
		__atomic_store_n(&c->follower_error, rc, __ATOMIC_RELAXED);
		if (rc == -EAGAIN || rc == -ENOMEM) {
			follower_backoff(c, 1);
			continue;
		}
		if (rc < 0) {
			/* Corrupt slot: keep the last snapshot, wait for the next. */
			seen = zkw_reader_generation(&c->reader);
			continue;
		}
		seen = node->pub.generation;
		node = node_publish(c, node);
		follower_call(c, c->current);
		node_retire(node);
	}
	return NULL;
}

/* ---- public API ------------------------------------------------------------------ */

int zkw_cache_open(zkw_cache **out, const char *shm_name, const zkw_cache_options *opt)
{
	zkw_reader_options ropt;
	struct cache_node *node = NULL;
	sigset_t all, saved;
	zkw_cache *c;
	int err, i;

	if (!out)
		return -EINVAL;
	*out = NULL;
	pthread_once(&key_once, make_key);
	if (!key_ok)
		return -EAGAIN;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	if (opt)
		c->opt = *opt;
	ropt = cache_reader_options(c);
	err = zkw_reader_open_ex(&c->reader, shm_name, &ropt);
	if (!err)
		zkw_shm_name(c->name, sizeof(c->name), shm_name); /* valid: the open took it */
	if (err) {
		free(c);
		return err;
	}
	for (i = 0; i < CACHE_OPEN_READ_ATTEMPTS; i++) {
		err = node_read(c, &node);
		if (err != -EAGAIN)
			break;
		sched_yield();
	}
	if (err)
		goto fail;
	node_publish(c, node); /* nobody else sees c yet: nothing to retire */
	err = -pthread_mutex_init(&c->shutdown_lock, NULL);
	if (err)
		goto fail;

	/* The follower blocks every signal, so process-directed signals go to
	 * the application's own threads, never to a library thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &saved);
	err = -pthread_create(&c->follower, NULL, follower_main, c);
	pthread_sigmask(SIG_SETMASK, &saved, NULL);
	if (err) {
		pthread_mutex_destroy(&c->shutdown_lock);
		goto fail;
	}
	pthread_setname_np(c->follower, "zkw-cache");
	c->follower_running = true;
	*out = c;
	return 0;
fail:
	free(c->current);
	zkw_reader_close(&c->reader);
	free(c);
	return err;
}

const zkw_cache_snapshot *zkw_cache_get(zkw_cache *c)
{
	struct cache_node *node;

	thread_register();
	urcu_memb_read_lock(); /* ended by zkw_cache_put(), or below */
	/* Pairs with the release in node_publish() (and with the NULL store
	 * in zkw_cache_shutdown()). */
	node = cache_load_pointer(c->current);
	if (__builtin_expect(!node, 0)) {
		urcu_memb_read_unlock();
		return NULL;
	}
	return &node->pub;
}

void zkw_cache_put(zkw_cache *c, const zkw_cache_snapshot *s)
{
	(void)c; /* not touched: close may be waiting for this very put */
	if (!s)
		return;
	tsan_release(s); /* pairs with tsan_acquire() in node_retire() */
	/* Ends the read-side critical section begun in zkw_cache_get(); the
	 * grace period in node_retire()/zkw_cache_shutdown() waits for it. */
	urcu_memb_read_unlock();
}

uint64_t zkw_cache_generation(const zkw_cache *c)
{
	/* Pairs with the release store in node_publish(). */
	return __atomic_load_n(&c->generation, __ATOMIC_ACQUIRE);
}

int zkw_cache_follower_error(const zkw_cache *c)
{
	return __atomic_load_n(&c->follower_error, __ATOMIC_RELAXED);
}

int zkw_cache_wait(zkw_cache *c, uint64_t seen, int timeout_ms)
{
	struct timespec deadline;
	const struct timespec *dl = zkw__deadline(&deadline, timeout_ms);

	for (;;) {
		/* Loaded before the generation and the shut flag: pairs with
		 * the release increments in node_publish() and shutdown. */
		uint32_t word = __atomic_load_n(&c->changed, __ATOMIC_ACQUIRE);
		int rc;

		if (__atomic_load_n(&c->shut, __ATOMIC_ACQUIRE))
			return -ESHUTDOWN;
		if (zkw_cache_generation(c) != seen)
			return 1;
		rc = futex_private(&c->changed, FUTEX_WAIT_BITSET, word, dl);
		if (rc == -ETIMEDOUT)
			return zkw_cache_generation(c) != seen;
		if (rc && rc != -EAGAIN)
			return rc; /* -EINTR on a signal */
	}
}

int zkw_cache_shutdown(zkw_cache *c)
{
	struct cache_node *old;

	if (c->follower_running && pthread_equal(pthread_self(), c->follower))
		return -EDEADLK; /* from on_change: we would join ourselves */
	if (thread_registered && urcu_memb_read_ongoing())
		return -EDEADLK; /* between get and put: the grace period would wait for us */
	pthread_mutex_lock(&c->shutdown_lock);
	if (c->shutdown_done) {
		pthread_mutex_unlock(&c->shutdown_lock);
		return 0;
	}
	/* Pairs with the acquire load in follower_stopping(); the wake ends
	 * the follower's futex_waitv() (or its bounded fallback wait). */
	__atomic_store_n(&c->stop, 1, __ATOMIC_RELEASE);
	futex_private(&c->stop, FUTEX_WAKE, INT_MAX, NULL);
	pthread_join(c->follower, NULL); /* no on_change call after this */

	old = c->current;
	/* Unpublish: a get from now on returns NULL. Pairs with the load in
	 * zkw_cache_get(). */
	cache_publish_pointer(c->current, NULL);
	/* Pairs with the acquire load of shut in zkw_cache_wait(), and the
	 * word's increment with its futex re-check. */
	__atomic_store_n(&c->shut, 1, __ATOMIC_RELEASE);
	__atomic_fetch_add(&c->changed, 1, __ATOMIC_RELEASE);
	wake_all(&c->changed);
	/* Every thread that got old before the NULL store puts it before
	 * this returns; later gets see NULL. Then old is unreachable. */
	node_retire(old);
	zkw_reader_close(&c->reader);
	c->shutdown_done = true;
	pthread_mutex_unlock(&c->shutdown_lock);
	return 0;
}

void zkw_cache_close(zkw_cache *c)
{
	int err;

	if (!c)
		return;
	err = zkw_cache_shutdown(c);
	assert(err == 0 && "zkw_cache_close() from on_change or between get and put");
	if (err)
		return; /* leak rather than free under a reader */
	pthread_mutex_destroy(&c->shutdown_lock);
	free(c);
}
