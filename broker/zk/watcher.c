/* watch_seed.c - the seed's ZookeeperWatcher class, on top of zkw_session.
 *
 * The seed called its handlers from kazoo's own thread, so one slow handler
 * stalled ZooKeeper for the whole process. Here on_state (ZooKeeper's
 * completion thread) only copies the latest state under w->lock and wakes
 * the watcher's dispatch thread, which compares it with what it delivered
 * last and calls the user's handlers in the contract's order:
 *
 *   success: config(content) if the bytes changed, then valid(true) if it was false
 *   failure: valid(false) if it was true, then error(message) if it changed
 *
 * Threads: the completion thread runs zkw__seed_on_state; the dispatch
 * thread runs the handlers; callers run the getters, stop and close. The
 * latest state (valid, content, pointer, error, seq) is protected by lock.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

struct zkw_watcher {
	zkw_watcher_handlers h;
	zkw_session *session; /* NULL once stopped */
	pthread_t dispatch;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_cond_t first_state; /* CLOCK_MONOTONIC; signalled by on_state */
	/* Latest state, from on_state. */
	bool valid;
	uint64_t serial;
	void *content;
	size_t len, cap;
	char pointer[ZKW_POINTER_MAX];
	char error[ZKW_ERROR_MAX];
	uint64_t seq; /* bumped at every on_state */
	/* Lifecycle. stopping is also read without the lock between handlers. */
	bool stopping;
	bool stop_claimed, stopped, joined, free_on_exit;
};

/* Set on the dispatch thread: lets stop/close know they run in a handler. */
static __thread struct zkw_watcher *zkw__dispatching;

static void zkw__seed_on_state(void *ctx, const zkw_watch_state *st)
{
	struct zkw_watcher *w = ctx;

	pthread_mutex_lock(&w->lock);
	w->valid = st->valid;
	if (st->content_serial != w->serial) {
		void *p = st->len > w->cap ? realloc(w->content, st->len) : w->content;

		if (p || st->len == 0) {
			if (st->len > w->cap) {
				w->content = p;
				w->cap = st->len;
			}
			if (st->len)
				memcpy(w->content, st->content, st->len);
			w->len = st->len;
			w->serial = st->content_serial;
		}
	}
	snprintf(w->pointer, sizeof w->pointer, "%s", st->pointer);
	snprintf(w->error, sizeof w->error, "%s", st->error);
	w->seq++;
	pthread_cond_signal(&w->cond);
	pthread_cond_broadcast(&w->first_state);
	pthread_mutex_unlock(&w->lock);
}

static bool zkw__seed_stopping(struct zkw_watcher *w)
{
	return __atomic_load_n(&w->stopping, __ATOMIC_ACQUIRE);
}

/* What the dispatch thread delivered last. */
struct zkw__delivered {
	bool valid;
	uint64_t serial;
	char error[ZKW_ERROR_MAX];
};

/* One snapshot, taken under the lock, delivered without it. */
struct zkw__snapshot {
	bool valid;
	uint64_t serial;
	void *content;
	size_t len, cap;
	char error[ZKW_ERROR_MAX];
};

static bool zkw__seed_take(struct zkw_watcher *w, struct zkw__snapshot *snap, const struct zkw__delivered *d)
{
	snap->valid = w->valid;
	snap->serial = w->serial;
	snprintf(snap->error, sizeof snap->error, "%s", w->error);
	if (w->serial == d->serial)
		return true;
	if (w->len > snap->cap) {
		void *p = realloc(snap->content, w->len);

		if (!p)
			return false;
		snap->content = p;
		snap->cap = w->len;
	}
	if (w->len)
		memcpy(snap->content, w->content, w->len);
	snap->len = w->len;
	return true;
}

static void zkw__seed_deliver(struct zkw_watcher *w, const struct zkw__snapshot *snap,
                              struct zkw__delivered *d)
{
	const zkw_watcher_handlers *h = &w->h;

	if (snap->valid) {
		if (snap->serial != d->serial && !zkw__seed_stopping(w)) {
			d->serial = snap->serial;
			if (h->config)
				h->config(h->ctx, snap->content ? snap->content : "", snap->len);
		}
		if (!d->valid && !zkw__seed_stopping(w)) {
			d->valid = true;
			if (h->valid)
				h->valid(h->ctx, true);
		}
		d->error[0] = '\0'; /* the same error after a recovery is news again */
		return;
	}
	if (d->valid && !zkw__seed_stopping(w)) {
		d->valid = false;
		if (h->valid)
			h->valid(h->ctx, false);
	}
	if (strcmp(d->error, snap->error) != 0 && !zkw__seed_stopping(w)) {
		snprintf(d->error, sizeof d->error, "%s", snap->error);
		if (h->error)
			h->error(h->ctx, snap->error);
	}
}

static void zkw__seed_free(struct zkw_watcher *w)
{
	pthread_cond_destroy(&w->cond);
	pthread_cond_destroy(&w->first_state);
	pthread_mutex_destroy(&w->lock);
	free(w->content);
	free(w);
}

static void *zkw__seed_dispatch(void *arg)
{
	struct zkw_watcher *w = arg;
	struct zkw__delivered d = {0};
	struct zkw__snapshot snap = {0};
	uint64_t seen = 0;
	bool free_self;

	zkw__dispatching = w;
	pthread_mutex_lock(&w->lock);
	while (!w->stopping) {
		if (seen == w->seq) {
			pthread_cond_wait(&w->cond, &w->lock);
			continue;
		}
		seen = w->seq;
		if (!zkw__seed_take(w, &snap, &d))
			continue; /* out of memory: the next state retries */
		pthread_mutex_unlock(&w->lock);
		zkw__seed_deliver(w, &snap, &d);
		pthread_mutex_lock(&w->lock);
	}
	free_self = w->free_on_exit;
	pthread_mutex_unlock(&w->lock);
	free(snap.content);
	zkw__dispatching = NULL;
	if (free_self)
		zkw__seed_free(w); /* closed from a handler: we are the last user */
	return NULL;
}

/* With valid_init the seed's constructor returned with the file read, so a
 * poller's first is_valid() is already the truth: wait (bounded) for the
 * watch's first complete evaluation. The session is connected by now, so
 * this is one read round trip; on timeout the watcher simply starts invalid. */
static void zkw__seed_wait_first_state(struct zkw_watcher *w, int timeout_ms)
{
	struct timespec deadline;

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += timeout_ms / 1000;
	deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&w->lock);
	while (w->seq == 0)
		if (pthread_cond_timedwait(&w->first_state, &w->lock, &deadline) == ETIMEDOUT)
			break;
	pthread_mutex_unlock(&w->lock);
}

zkw_watcher *zkw_watcher_open_ex(const char *hosts, const char *path, const zkw_watcher_handlers *h,
                                 unsigned flags, const zkw_session_options *sopt, char *errbuf, size_t errlen)
{
	zkw_session_options so;
	zkw_watch_options wo = {0};
	struct zkw_watcher *w = calloc(1, sizeof *w);
	int rc;

	if (errbuf && errlen)
		errbuf[0] = '\0';
	if (!w) {
		if (errbuf && errlen)
			snprintf(errbuf, errlen, "out of memory");
		return NULL;
	}
	if (h)
		w->h = *h;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	zkw__cond_init(&w->first_state);
	if (sopt)
		so = *sopt;
	else
		zkw_session_options_init(&so);
	so.valid_init = flags & ZKW_WATCHER_VALID_INIT;
	so.errbuf = errbuf;
	so.errlen = errlen;
	w->session = zkw_session_open(hosts, &so, NULL);
	if (!w->session)
		goto fail;
	wo.pointer = flags & ZKW_WATCHER_POINTER;
	wo.ensure = flags & ZKW_WATCHER_ENSURE;
	wo.on_state = zkw__seed_on_state;
	wo.ctx = w;
	if (!zkw_session_watch(w->session, path ? path : "", &wo)) {
		if (errbuf && errlen)
			snprintf(errbuf, errlen, "invalid path to watch: '%s'", path ? path : "(null)");
		goto fail;
	}
	rc = pthread_create(&w->dispatch, NULL, zkw__seed_dispatch, w);
	if (rc == 0)
		pthread_setname_np(w->dispatch, "zkw-dispatch");
	if (rc != 0) {
		if (errbuf && errlen)
			snprintf(errbuf, errlen, "cannot start the dispatch thread: %s", strerror(rc));
		goto fail;
	}
	if (flags & ZKW_WATCHER_VALID_INIT)
		zkw__seed_wait_first_state(w, so.init_timeout_ms > 0 ? so.init_timeout_ms : 5000);
	return w;
fail:
	zkw_session_close(w->session);
	zkw__seed_free(w);
	return NULL;
}

zkw_watcher *zkw_watcher_open(const char *hosts, const char *path, const zkw_watcher_handlers *h,
                              unsigned flags, char *errbuf, size_t errlen)
{
	return zkw_watcher_open_ex(hosts, path, h, flags, NULL, errbuf, errlen);
}

void zkw_watcher_stop(zkw_watcher *w)
{
	bool in_handler = zkw__dispatching == w;
	zkw_session *s;

	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	__atomic_store_n(&w->stopping, true, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&w->cond);
	if (w->stop_claimed) {
		/* Someone else stops: wait for it (not from a handler, which the
		 * other stopper may be joining). */
		while (!w->stopped && !in_handler)
			pthread_cond_wait(&w->cond, &w->lock);
		pthread_mutex_unlock(&w->lock);
		return;
	}
	w->stop_claimed = true;
	s = w->session;
	pthread_mutex_unlock(&w->lock);

	zkw_session_close(s); /* after this, on_state never runs again */
	if (!in_handler) {
		pthread_join(w->dispatch, NULL);
		w->joined = true;
	}
	pthread_mutex_lock(&w->lock);
	w->session = NULL;
	w->stopped = true;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

void zkw_watcher_close(zkw_watcher *w)
{
	if (!w)
		return;
	zkw_watcher_stop(w);
	if (zkw__dispatching == w) {
		/* From a handler: the dispatch thread frees w when it returns. */
		pthread_mutex_lock(&w->lock);
		w->free_on_exit = true;
		pthread_mutex_unlock(&w->lock);
		pthread_detach(w->dispatch);
		return;
	}
	if (!w->joined)
		pthread_join(w->dispatch, NULL);
	zkw__seed_free(w);
}

bool zkw_watcher_is_valid(zkw_watcher *w)
{
	bool valid;

	if (!w)
		return false;
	pthread_mutex_lock(&w->lock);
	valid = w->valid;
	pthread_mutex_unlock(&w->lock);
	return valid;
}

size_t zkw_watcher_content_len(zkw_watcher *w, bool pointer)
{
	size_t n;

	if (!w)
		return 0;
	pthread_mutex_lock(&w->lock);
	n = pointer ? strlen(w->pointer) : w->len;
	pthread_mutex_unlock(&w->lock);
	return n;
}

ssize_t zkw_watcher_get_file_contents(zkw_watcher *w, bool pointer, void *buf, size_t cap)
{
	const void *src;
	ssize_t n;

	if (!w)
		return -EINVAL;
	pthread_mutex_lock(&w->lock);
	src = pointer ? (const void *)w->pointer : w->content;
	n = (ssize_t)(pointer ? strlen(w->pointer) : w->len);
	if ((size_t)n > cap)
		n = -ENOBUFS;
	else if (n > 0)
		memcpy(buf, src, (size_t)n);
	pthread_mutex_unlock(&w->lock);
	return n;
}

void zkw_watcher_get_error(zkw_watcher *w, char *buf, size_t cap)
{
	if (!w || !cap)
		return;
	pthread_mutex_lock(&w->lock);
	snprintf(buf, cap, "%s", w->error);
	pthread_mutex_unlock(&w->lock);
}

bool zkw_watcher_ping(zkw_watcher *w)
{
	zkw_session *s = zkw_watcher_session(w);

	/* A stop racing with this ping would free s: pings belong to the
	 * owner, who does not stop concurrently (documented). */
	return s ? zkw_session_ping(s) : false;
}

zkw_session *zkw_watcher_session(zkw_watcher *w)
{
	zkw_session *s;

	if (!w)
		return NULL;
	pthread_mutex_lock(&w->lock);
	s = w->stop_claimed ? NULL : w->session;
	pthread_mutex_unlock(&w->lock);
	return s;
}
