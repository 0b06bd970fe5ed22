/* SPDX-License-Identifier: Apache-2.0 */
/* watcher.c - the seed's ZookeeperWatcher class, on top of zkw_session.
 *
 * The seed called its handlers from kazoo's own thread, so one slow handler
 * stalled ZooKeeper for the whole process. Here on_state (ZooKeeper's
 * completion thread) only copies the latest state under w->lock and wakes
 * the watcher's dispatch thread, which compares it with what it delivered
 * last and calls the user's handlers in the contract's order - the rule of
 * zkw/common.h (zkw_delivery_next, zkw_delivery_call).
 *
 * Threads: the completion thread runs watcher_on_state; the dispatch
 * thread runs the handlers; callers run the getters, stop and close. The
 * latest state (valid, content, pointer, error, seq) is protected by lock.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zkw_clock.h>

#include "internal.h"

struct zkw_watcher {
	zkw_handlers h;
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
static __thread struct zkw_watcher *dispatching;

static void watcher_on_state(void *ctx, const zkw_watch_state *st)
{
	struct zkw_watcher *w = ctx;

	/* A reconcile that changed nothing: no handler could be due, so the
	 * dispatch thread is not even woken (confirm_only is never a first
	 * call, so first_state has been signalled already). */
	if (st->confirm_only)
		return;
	pthread_mutex_lock(&w->lock);
	w->valid = st->valid;
	/* Out of memory: the old content stays, and the next state retries. */
	if (st->content_serial != w->serial &&
	    zkw__watch_buf_set(&w->content, &w->cap, &w->len, st->content, st->len) == 0)
		w->serial = st->content_serial;
	snprintf(w->pointer, sizeof w->pointer, "%s", st->pointer);
	snprintf(w->error, sizeof w->error, "%s", st->error);
	w->seq++;
	pthread_cond_signal(&w->cond);
	pthread_cond_broadcast(&w->first_state);
	pthread_mutex_unlock(&w->lock);
}

static void watcher_free(struct zkw_watcher *w)
{
	pthread_cond_destroy(&w->cond);
	pthread_cond_destroy(&w->first_state);
	pthread_mutex_destroy(&w->lock);
	free(w->content);
	free(w);
}

/* The dispatch thread: for every new state, decide under the lock which
 * handlers are due (copying the content they need), call them without it.
 * A stop between two handlers of one state stops the rest. */
static void *dispatch_main(void *arg)
{
	struct zkw_watcher *w = arg;
	zkw_delivery d = {0};
	void *content = NULL; /* private copy of the content of serial `copied` */
	size_t len = 0, cap = 0;
	uint64_t seen = 0, copied = 0;
	unsigned bits;
	bool free_self;

	dispatching = w;
	pthread_mutex_lock(&w->lock);
	while (!w->stopping) {
		if (seen == w->seq) {
			pthread_cond_wait(&w->cond, &w->lock);
			continue;
		}
		seen = w->seq;
		if (w->serial != copied) {
			if (zkw__watch_buf_set(&content, &cap, &len, w->content, w->len) < 0)
				continue; /* out of memory: the next state retries */
			copied = w->serial;
		}
		bits = zkw_delivery_next(&d, w->valid, w->serial, w->error);
		pthread_mutex_unlock(&w->lock);
		zkw_delivery_call(&d, bits, &w->h, content, len, &w->stopping);
		pthread_mutex_lock(&w->lock);
	}
	free_self = w->free_on_exit;
	pthread_mutex_unlock(&w->lock);
	free(content);
	dispatching = NULL;
	if (free_self)
		watcher_free(w); /* closed from a handler: we are the last user */
	return NULL;
}

/* With valid_init the seed's constructor returned with the file read, so a
 * poller's first is_valid() is already the truth: wait (bounded) for the
 * watch's first complete evaluation. The session is connected by now, so
 * this is one read round trip; on timeout the watcher simply starts invalid. */
static void wait_first_state(struct zkw_watcher *w, int timeout_ms)
{
	struct timespec deadline = zkw_clock_deadline_ms(CLOCK_MONOTONIC, timeout_ms);

	pthread_mutex_lock(&w->lock);
	while (w->seq == 0)
		if (pthread_cond_timedwait(&w->first_state, &w->lock, &deadline) == ETIMEDOUT)
			break;
	pthread_mutex_unlock(&w->lock);
}

int zkw_watcher_open_ex(zkw_watcher **out, const char *hosts, const char *path, const zkw_handlers *h,
                        unsigned flags, const zkw_session_options *sopt, char *errbuf, size_t errlen)
{
	zkw_session_options so;
	zkw_watch_options wo = {0};
	struct zkw_watcher *w = calloc(1, sizeof *w);
	int rc;

	*out = NULL;
	if (errbuf && errlen)
		errbuf[0] = '\0';
	if (!w)
		return zkw__errorf(errbuf, errlen, -ENOMEM, "out of memory");
	if (h)
		w->h = *h;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	if ((rc = zkw_clock_cond_init(&w->first_state)) < 0) {
		watcher_free(w);
		return zkw__errorf(errbuf, errlen, rc, "cannot set up a watcher: %s", strerror(-rc));
	}
	if (sopt)
		so = *sopt;
	else
		zkw_session_options_init(&so);
	so.valid_init = flags & ZKW_WATCHER_VALID_INIT;
	if ((rc = zkw_session_open(&w->session, hosts, &so, errbuf, errlen)) < 0)
		goto fail;
	wo.pointer = flags & ZKW_WATCHER_POINTER;
	wo.ensure = flags & ZKW_WATCHER_ENSURE;
	wo.on_state = watcher_on_state;
	wo.ctx = w;
	if ((rc = zkw_session_watch(w->session, path ? path : "", &wo, NULL)) < 0) {
		if (rc == -EINVAL)
			zkw__errorf(errbuf, errlen, rc, "invalid path to watch: '%s'",
			            path ? path : "(null)");
		else
			zkw__errorf(errbuf, errlen, rc, "cannot watch '%s': %s", path, strerror(-rc));
		goto fail;
	}
	rc = -pthread_create(&w->dispatch, NULL, dispatch_main, w);
	if (rc < 0) {
		zkw__errorf(errbuf, errlen, rc, "cannot start the dispatch thread: %s", strerror(-rc));
		goto fail;
	}
	pthread_setname_np(w->dispatch, "zkw-dispatch");
	if (flags & ZKW_WATCHER_VALID_INIT)
		wait_first_state(w,
		                 so.init_timeout_ms > 0 ? so.init_timeout_ms : ZKW_INIT_TIMEOUT_MS_DEFAULT);
	*out = w;
	return 0;
fail:
	zkw_session_close(w->session);
	watcher_free(w);
	return rc;
}

int zkw_watcher_open(zkw_watcher **out, const char *hosts, const char *path, const zkw_handlers *h,
                     unsigned flags, char *errbuf, size_t errlen)
{
	return zkw_watcher_open_ex(out, hosts, path, h, flags, NULL, errbuf, errlen);
}

void zkw_watcher_stop(zkw_watcher *w)
{
	bool in_handler = dispatching == w;
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
	if (dispatching == w) {
		/* From a handler: the dispatch thread frees w when it returns. */
		pthread_mutex_lock(&w->lock);
		w->free_on_exit = true;
		pthread_mutex_unlock(&w->lock);
		pthread_detach(w->dispatch);
		return;
	}
	if (!w->joined)
		pthread_join(w->dispatch, NULL);
	watcher_free(w);
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
