/* SPDX-License-Identifier: Apache-2.0 */
/* session.c - one ZooKeeper session serving many watches.
 *
 * Threads, and what each one runs:
 *
 *  - caller threads: zkw_session_open / _watch / _ping / _identity / _close,
 *    zkw_watch_remove / _ensure. They take the session lock briefly; ping
 *    waits (bounded) on state_cond; open with valid_init waits (bounded)
 *    for the first connection; close joins the control thread.
 *  - the control thread (one per session, ours): creates the ZooKeeper
 *    handle, re-creates it after ZOO_EXPIRED_SESSION_STATE (zookeeper_close
 *    of the old one happens here, never in a callback), closes a handle
 *    that has not been connected for a session timeout and starts a new
 *    one after a backoff spent with no handle (control_give_up), retries a
 *    failed zookeeper_init with backoff, runs the reconcile rotation (a
 *    slice of the watches at each tick, reconcile_step), and tears the
 *    handle down at close. It never holds the lock across
 *    zookeeper_init or zookeeper_close: both wait for ZooKeeper threads
 *    that may be waiting for the lock.
 *  - the ZooKeeper completion thread (one per handle, the client's): the
 *    session watcher below, node watchers and completions (watch.c),
 *    and so on_state. Everything there is non-blocking: it takes the
 *    session lock, issues async zoo_a* calls, calls on_state, returns.
 *  - the ZooKeeper I/O thread (the client's): our log trampoline, and the
 *    answer to a new handle's credentials (auth_done, which takes the lock
 *    and may complete the connection: see "credentials" below).
 *
 * One mutex (zkw_session.lock) protects the whole session and its watches.
 * It is never held while waiting on ZooKeeper, and on_state is called with
 * it held, which serialises on_state calls per session.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zkw_clock.h>

#include "internal.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 10000
#define PING_MAX_MS    2000
/* The reconcile rotation sends what is due at most every this often. */
#define RECONCILE_TICK_MS 100
/* ZooKeeper client messages forwarded per minute; the rest are counted. */
#define ZK_LOG_BURST 20
/* "No deadline" in the control thread's CLOCK_MONOTONIC milliseconds. */
#define NEVER INT64_MAX

/* ------------------------------------------------------------------ logs */

void zkw__session_log(struct zkw_session *s, int level, const char *fmt, ...)
{
	char msg[1536];
	va_list ap;

	if (!s->opt.log)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	s->opt.log(s->opt.log_ctx, level, msg);
}

/* The ZooKeeper client's log callback has no context argument, so its
 * messages go to the most recently opened session that has a log sink
 * (a broker has one session). The registry lock also keeps that session
 * alive while its sink runs: close unregisters under it. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct zkw_session *registry;
static int64_t zk_log_window_ms;
static unsigned zk_log_count, zk_log_suppressed;

static int zk_log_level(const char *message)
{
	if (strstr(message, "ZOO_ERROR"))
		return ZKW_LOG_ERROR;
	if (strstr(message, "ZOO_WARN"))
		return ZKW_LOG_WARN;
	if (strstr(message, "ZOO_INFO"))
		return ZKW_LOG_INFO;
	return ZKW_LOG_DEBUG;
}

/* The client's lines carry their own time, pid and thread before
 * "ZOO_LEVEL@function@line: text"; our log has its own time and level, so
 * keep the text. */
static const char *zk_log_text(const char *message)
{
	const char *p = strstr(message, "):ZOO_");
	const char *at;

	if (!p || !(at = strchr(p, '@')))
		return message;
	p = strstr(at, ": ");
	return p ? p + 2 : message;
}

static void zk_log(const char *message)
{
	int64_t now = zkw_clock_mono_ms();
	struct zkw_session *s;

	/* A refused credential: the session says it, once until it changes
	 * (control_auth_refused); the client would at every new session. */
	if (strstr(message, "Authentication scheme "))
		return;
	pthread_mutex_lock(&registry_lock);
	s = registry;
	if (!s)
		goto out;
	/* A dead server makes the client log every connection attempt:
	 * forward a burst per minute, then count what we drop. */
	if (now - zk_log_window_ms >= 60000) {
		if (zk_log_suppressed)
			zkw__session_log(s, ZKW_LOG_WARN, "zookeeper client: %u messages suppressed",
			                 zk_log_suppressed);
		zk_log_window_ms = now;
		zk_log_count = 0;
		zk_log_suppressed = 0;
	}
	if (__atomic_load_n(&s->opening, __ATOMIC_RELAXED))
		goto out; /* the open's caller says why it failed, once */
	if (zk_log_count++ < ZK_LOG_BURST) {
		const char *text = zk_log_text(message);
		size_t n = strcspn(text, "\n");

		zkw__session_log(s, zk_log_level(message), "zookeeper client: %.*s", (int)n, text);
	} else {
		zk_log_suppressed++;
	}
out:
	pthread_mutex_unlock(&registry_lock);
}

static void registry_add(struct zkw_session *s)
{
	pthread_mutex_lock(&registry_lock);
	if (s->opt.log) {
		s->log_next = registry;
		registry = s;
	}
	/* The level is process-wide, so touch it only when someone listens.
	 * Our handles never print to stderr either way: each one logs through
	 * zk_log, which drops messages nobody listens to. */
	if (s->opt.log)
		zoo_set_debug_level(ZOO_LOG_LEVEL_WARN);
	pthread_mutex_unlock(&registry_lock);
}

static void registry_remove(struct zkw_session *s)
{
	pthread_mutex_lock(&registry_lock);
	for (struct zkw_session **p = &registry; *p; p = &(*p)->log_next) {
		if (*p == s) {
			*p = s->log_next;
			break;
		}
	}
	pthread_mutex_unlock(&registry_lock);
}

/* ----------------------------------------------------------- watch lists */

static void list_append(struct zkw__watch_list *l, struct zkw_watch *w)
{
	w->prev = l->tail;
	w->next = NULL;
	if (l->tail)
		l->tail->next = w;
	else
		l->head = w;
	l->tail = w;
	l->count++;
}

static void list_unlink(struct zkw__watch_list *l, struct zkw_watch *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		l->head = w->next;
	if (w->next)
		w->next->prev = w->prev;
	else
		l->tail = w->prev;
	w->prev = w->next = NULL;
	l->count--;
}

static void list_free(struct zkw__watch_list *l)
{
	struct zkw_watch *w = l->head;

	while (w) {
		struct zkw_watch *next = w->next;

		zkw__watch_free(w);
		w = next;
	}
	l->head = l->tail = NULL;
	l->count = 0;
}

void zkw__session_watch_drained(struct zkw_watch *w)
{
	struct zkw_session *s = w->session;

	list_unlink(&s->draining, w);
	zkw__watch_retire(w);
	w->life = ZKW__WATCH_SPARE;
	list_append(&s->spare, w);
}

/* --------------------------------------------------------- session state */

static void evaluate_all(struct zkw_session *s)
{
	for (struct zkw_watch *w = s->watches.head; w; w = w->next)
		zkw__watch_evaluate(w);
}

static void session_connected(struct zkw_session *s, zhandle_t *zh)
{
	const clientid_t *id = zoo_client_id(zh);

	if (!s->connected) {
		zkw__session_log(s, ZKW_LOG_INFO, "connected to ZooKeeper, session 0x%llx, timeout %d ms",
		                 (unsigned long long)id->client_id, zoo_recv_timeout(zh));
		if (s->was_connected)
			zkw__session_count(s, ZKW_COUNT_RECONNECT);
		s->was_connected = true;
	}
	if (s->auth_refusals) {
		zkw__session_log(s, ZKW_LOG_INFO, "ZooKeeper accepted the credentials after %u refusal%s",
		                 s->auth_refusals, s->auth_refusals == 1 ? "" : "s");
		s->auth_refusals = 0;
	}
	s->connected = true;
	s->backoff_ms = 0;
	s->reconnect_ms = 0;
	s->down_since = 0;
	s->give_up_at = 0;
	s->timeout_ms = zoo_recv_timeout(zh); /* negotiated */
	snprintf(s->conn_error, sizeof s->conn_error, "%s", ZKW_ERR_CONNECTION);
	/* Re-read everything: a change while we were away may or may not have
	 * fired a watch; content comparison makes the re-read harmless. */
	for (struct zkw_watch *w = s->watches.head; w; w = w->next)
		zkw__watch_read_all(w);
	pthread_cond_broadcast(&s->state_cond);
	pthread_cond_signal(&s->control_cond); /* the reconcile rotation resumes */
}

static void session_lost(struct zkw_session *s, bool expired)
{
	if (s->connected || expired)
		zkw__session_log(s, expired ? ZKW_LOG_WARN : ZKW_LOG_INFO, "%s",
		                 expired ? "ZooKeeper session expired, starting a new one"
		                         : "connection to ZooKeeper lost, reconnecting");
	if (s->connected) {
		/* The client reconnects on its own; past one session timeout the
		 * session is gone and the control thread takes over. */
		s->down_since = zkw_clock_mono_ms();
		s->give_up_at = s->down_since + s->timeout_ms + 1;
		pthread_cond_signal(&s->control_cond);
	}
	s->connected = false;
	snprintf(s->conn_error, sizeof s->conn_error, "%s", ZKW_ERR_CONNECTION);
	if (expired) {
		zkw__session_count(s, ZKW_COUNT_SESSION_LOST);
		s->need_handle = true;
		pthread_cond_signal(&s->control_cond);
	}
	evaluate_all(s);
	pthread_cond_broadcast(&s->state_cond);
}

/* ---------------------------------------------------------- credentials
 *
 * Every new handle gets the session's credentials (zoo_add_auth) right
 * after zookeeper_init2, and counts as connected only once ZooKeeper has
 * answered them (auth_done) as well as said ZOO_CONNECTED_STATE: the client
 * sends them first on every connection of the handle, but its first
 * handshake may be over before zoo_add_auth is called, and a read sent
 * before them would be answered ZNOAUTH. A refusal kills the handle
 * (ZOO_AUTH_FAILED_STATE). It is not an expiry: a new session at once would
 * be refused again, as fast as the server answers, so the control thread
 * waits as after control_give_up (control_auth_refused). */

/* The answer to the current handle's credentials. The client calls it on
 * its I/O thread, from its packet loop, holding none of its own locks (one
 * call per credential, all at the first answer). A refusal comes again as
 * ZOO_AUTH_FAILED_STATE, handled there. Only the current handle's answer
 * can arrive: an old handle is closed, its threads joined, before a new
 * one is made. */
static void auth_done(int rc, const void *ctx)
{
	struct zkw_session *s = (struct zkw_session *)ctx;

	pthread_mutex_lock(&s->lock);
	if (rc == ZOK && s->zh && !s->closing && !s->auth_answered) {
		s->auth_answered = true;
		if (s->handshake && !s->connected)
			session_connected(s, s->zh);
	}
	pthread_mutex_unlock(&s->lock);
}

/* ZOO_AUTH_FAILED_STATE: the handle is dead; the control thread closes it
 * and waits before the next (control_auth_refused). */
static void session_auth_refused(struct zkw_session *s)
{
	if (s->connected)
		s->down_since = zkw_clock_mono_ms();
	s->connected = false;
	s->give_up_at = 0; /* the control thread takes over now */
	s->auth_refused = true;
	s->need_handle = true;
	zkw__session_count(s, ZKW_COUNT_SESSION_LOST);
	/* The same text at every refusal: a retry wakes no reader. */
	snprintf(s->conn_error, sizeof s->conn_error, "%s",
	         ZKW_ERR_CONNECTING ": ZooKeeper refused the credentials (authentication failed)");
	evaluate_all(s);
	pthread_cond_broadcast(&s->state_cond);
	pthread_cond_signal(&s->control_cond);
}

/* What the log says of the credentials: their schemes and where they came
 * from, never a secret. */
static void auth_describe(const struct zkw_session *s, char *buf, size_t cap)
{
	size_t n = 0;

	buf[0] = '\0';
	if (!s->opt.ncredentials) {
		snprintf(buf, cap, "no credentials given");
		return;
	}
	for (size_t i = 0; i < s->opt.ncredentials && n < cap; i++) {
		const char *scheme = s->opt.credentials[i].scheme;
		bool again = false;

		for (size_t j = 0; j < i; j++)
			again |= strcmp(s->opt.credentials[j].scheme, scheme) == 0;
		if (!again)
			n += (size_t)snprintf(buf + n, cap - n, "%s%s", n ? "/" : "", scheme);
	}
	if (n < cap)
		snprintf(buf + n, cap - n, " credentials%s%s", s->opt.credentials_from ? " from " : "",
		         s->opt.credentials_from ? s->opt.credentials_from : "");
}

/* The session watcher (default watcher of every handle we create). */
static void session_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
	struct zkw_session *s = ctx;

	(void)path;
	if (type != ZOO_SESSION_EVENT)
		return;
	pthread_mutex_lock(&s->lock);
	/* The new handle may report before zookeeper_init has returned. */
	if (!s->zh && s->initializing)
		s->zh = zh;
	if (zh == s->zh && !s->closing) {
		zkw__session_count(s, ZKW_COUNT_ZK_EVENT);
		s->handshake = state == ZOO_CONNECTED_STATE;
		if (state == ZOO_CONNECTED_STATE && s->auth_answered)
			session_connected(s, zh);
		else if (state == ZOO_CONNECTED_STATE)
			; /* connected once the credentials are answered (auth_done) */
		else if (state == ZOO_AUTH_FAILED_STATE)
			session_auth_refused(s);
		else
			session_lost(s, state == ZOO_EXPIRED_SESSION_STATE);
	}
	pthread_mutex_unlock(&s->lock);
}

/* ---------------------------------------------------------- control thread */

static uint64_t jitter_rand(struct zkw_session *s)
{
	/* xorshift64: jitter only, no need for quality. */
	s->rng ^= s->rng << 13;
	s->rng ^= s->rng >> 7;
	s->rng ^= s->rng << 17;
	return s->rng;
}

/* One step of a jittered exponential backoff: the nominal wait *b starts
 * at first, doubles, and stops at max; the wait returned is drawn from
 * [*b/2, *b], so a fleet that lost the ensemble together does not come
 * back together. */
static unsigned backoff_next(struct zkw_session *s, unsigned *b, unsigned first, unsigned max)
{
	*b = !*b ? first : *b > max / 2 ? max : *b * 2;
	if (*b > max)
		*b = max;
	return *b / 2 + (unsigned)(jitter_rand(s) % (*b / 2 + 1));
}

/* ---------------------------------------------------- reconcile rotation
 *
 * Contract 11, spread and capped. A round walks the watch list once and
 * sends each watch's exists requests (zkw__watch_reconcile), evenly spaced
 * over the round: request k of a round of length L planned for N requests
 * is due at start + k * L / N. L is reconcile_s +-20% (so a fleet does not
 * herd the ensemble), stretched to N / reconcile_rate seconds (plus up to
 * 20%) when the period is too short for the rate. A watch added meanwhile
 * is appended to the list, so it joins this round or the next; a removed
 * one leaves it (zkw_watch_remove moves the cursor). The control thread
 * wakes at the next due time, or every RECONCILE_TICK_MS when requests are
 * closer than that, and sends what is due. After a pause (disconnected, or
 * the thread was late) the schedule slips rather than catching up in a
 * burst, so no second ever sees much more than the rate. */

/* One round's nominal length: reconcile_s +-20%, in ms. */
static int64_t reconcile_period(struct zkw_session *s)
{
	uint64_t base = (uint64_t)s->opt.reconcile_s * 1000u;

	return (int64_t)(base * 8 / 10 + jitter_rand(s) % (base * 4 / 10 + 1));
}

static int64_t reconcile_due(const struct zkw_session *s)
{
	return s->rc_round_start + (int64_t)((uint64_t)s->rc_sent * (uint64_t)s->rc_round_ms / s->rc_planned);
}

static void reconcile_round_start(struct zkw_session *s, int64_t now)
{
	uint64_t planned = 0, need_ms, rate = (uint64_t)s->opt.reconcile_rate;
	int64_t period = reconcile_period(s);

	for (struct zkw_watch *w = s->watches.head; w; w = w->next)
		planned += zkw__watch_reconcile_cost(w);
	if (!planned) {
		s->rc_next_round = now + period;
		return;
	}
	need_ms = (planned * 1000 + rate - 1) / rate;
	if ((int64_t)need_ms > period) {
		if (!s->rc_stretch_logged && need_ms > (uint64_t)s->opt.reconcile_s * 1000u) {
			zkw__session_log(
			        s, ZKW_LOG_INFO,
			        "reconcile: %llu requests a round at %llu a second take %.1f s, more "
			        "than the %d s period: rounds last that long (reconcile rate)",
			        (unsigned long long)planned, (unsigned long long)rate,
			        (double)need_ms / 1000.0, s->opt.reconcile_s);
			s->rc_stretch_logged = true;
		}
		period = (int64_t)(need_ms + jitter_rand(s) % (need_ms / 5 + 1));
	}
	s->rc_cursor = s->watches.head;
	s->rc_round_start = now;
	s->rc_round_ms = period;
	s->rc_planned = planned > UINT_MAX ? UINT_MAX : (unsigned)planned;
	s->rc_sent = 0;
}

/* Send the reconcile requests due by now; returns when the next are due.
 * Lock held. */
static int64_t reconcile_step(struct zkw_session *s, int64_t now)
{
	int64_t due, end;

	if (s->opt.reconcile_s <= 0 || !s->connected)
		return NEVER; /* session_connected wakes us */
	if (!s->rc_cursor) {
		if (now < s->rc_next_round)
			return s->rc_next_round;
		reconcile_round_start(s, now);
		if (!s->rc_cursor)
			return s->rc_next_round;
	}
	due = reconcile_due(s);
	if (due < now - RECONCILE_TICK_MS) {
		s->rc_round_start += now - RECONCILE_TICK_MS - due; /* slip, do not burst */
		due = now - RECONCILE_TICK_MS;
	}
	while (s->rc_cursor && due <= now) {
		struct zkw_watch *w = s->rc_cursor;

		s->rc_cursor = w->next;
		s->rc_sent += zkw__watch_reconcile(w);
		due = reconcile_due(s);
	}
	if (!s->rc_cursor) {
		/* Next round: one period after this one started, or one spacing
		 * after its last request when watches added meanwhile made it
		 * longer. */
		end = s->rc_round_start + s->rc_round_ms;
		s->rc_next_round = due > end ? due : end;
		return s->rc_next_round;
	}
	return due > now + RECONCILE_TICK_MS ? due : now + RECONCILE_TICK_MS;
}

/* Close the current handle. Called and returns with the lock held; drops
 * it around zookeeper_close, which joins the completion thread. */
static void control_drop_handle(struct zkw_session *s)
{
	zhandle_t *old = s->zh;

	s->zh = NULL;
	s->connected = false;
	s->handshake = false;
	s->ping_answered = s->ping_sent;
	pthread_cond_broadcast(&s->state_cond);
	if (!old)
		return;
	pthread_mutex_unlock(&s->lock);
	zookeeper_close(old);
	pthread_mutex_lock(&s->lock);
	/* Every callback of the old handle has run (or never will): removed
	 * watches still waiting for one are done. */
	for (struct zkw_watch *w = s->watches.head; w; w = w->next)
		zkw__watch_reset_handle(w);
	while (s->draining.head) {
		zkw__watch_reset_handle(s->draining.head);
		zkw__session_watch_drained(s->draining.head);
	}
	s->ping_answered = s->ping_sent;
}

/* Why zookeeper_init failed, in words (it only leaves errno behind). */
static const char *init_strerror(int e)
{
	if (e == EINVAL)
		return "bad host string (expected host:port[,host:port...][/chroot])";
	if (e == ENOENT)
		return "no host name resolves";
	return strerror(e);
}

static void control_init_failed(struct zkw_session *s, int e, int64_t *retry_at)
{
	bool first = s->init_errno != e;

	s->init_errno = e;
	snprintf(s->conn_error, sizeof s->conn_error,
	         ZKW_ERR_CONNECTING ": cannot start a session for '%s': %s", s->hosts, init_strerror(e));
	/* While zkw_session_open waits (valid_init), its caller is told the
	 * cause and says it: once. */
	if (first && !s->opening)
		zkw__session_log(s, ZKW_LOG_ERROR, "%s", s->conn_error);
	*retry_at = zkw_clock_mono_ms() + backoff_next(s, &s->backoff_ms, BACKOFF_MIN_MS, BACKOFF_MAX_MS);
	evaluate_all(s);
	pthread_cond_broadcast(&s->state_cond);
}

/* The current handle has not been connected for longer than the session
 * timeout. Its session is gone (the servers expire a session not heard of
 * for that long), or it is refused: a server whose data was reset answers
 * "client has seen zxid ..., our last zxid is ..." to every reconnection of
 * a session that saw newer data, and only a new session (last zxid 0) gets
 * in. Meanwhile the client retries the host list every timeout/60 ms, so
 * close the handle and wait with none at all: b = the session timeout,
 * doubling up to reconnect_max_ms, each wait drawn from [b/2, b]. A
 * connection resets b (session_connected). Lock held; dropped around
 * zookeeper_close. */
static void control_give_up(struct zkw_session *s, int64_t now, int64_t *retry_at)
{
	unsigned wait =
	        backoff_next(s, &s->reconnect_ms, (unsigned)s->timeout_ms, (unsigned)s->opt.reconnect_max_ms);
	int64_t lost_ms = now - s->down_since;
	zkw__session_log(s, ZKW_LOG_WARN, "session lost for %lld ms (> %d ms timeout): new session in %u ms",
	                 (long long)lost_ms, s->timeout_ms, wait);
	s->give_up_at = 0;
	s->need_handle = true;
	zkw__session_count(s, ZKW_COUNT_SESSION_LOST);
	control_drop_handle(s);
	*retry_at = zkw_clock_mono_ms() + wait;
}

/* The server refused the credentials and the handle is dead: close it and
 * wait as control_give_up does (b = the session timeout, doubling up to
 * reconnect_max_ms, each wait drawn from [b/2, b]; a connection resets b)
 * before the next. Said once until it changes: the first refusal since the
 * last connection is an error in the log, the next ones are debug lines.
 * Lock held; dropped around zookeeper_close. */
static void control_auth_refused(struct zkw_session *s, int64_t *retry_at)
{
	unsigned wait =
	        backoff_next(s, &s->reconnect_ms, (unsigned)s->timeout_ms, (unsigned)s->opt.reconnect_max_ms);
	char what[512];

	auth_describe(s, what, sizeof what);
	if (s->open_waiting)
		s->auth_refusals++; /* zkw_session_open fails with the reason: no retry to announce */
	else if (s->auth_refusals++ == 0)
		zkw__session_log(
		        s, ZKW_LOG_ERROR,
		        "ZooKeeper refused the session's credentials (%s): authentication failed; "
		        "new session in %u ms, then waits doubling up to %d ms until they are accepted",
		        what, wait, s->opt.reconnect_max_ms);
	else
		zkw__session_log(s, ZKW_LOG_DEBUG,
		                 "credentials refused again (%u times): new session in %u ms",
		                 s->auth_refusals, wait);
	s->auth_refused = false;
	s->give_up_at = 0;
	s->need_handle = true;
	control_drop_handle(s);
	*retry_at = zkw_clock_mono_ms() + wait;
}

/* Hand the credentials to a new handle, before anything else is asked of
 * it. Lock held. */
static void control_add_auth(struct zkw_session *s, zhandle_t *zh)
{
	for (size_t i = 0; i < s->opt.ncredentials; i++) {
		const zkw_session_credential *c = &s->opt.credentials[i];
		int rc = zoo_add_auth(zh, c->scheme, c->secret, (int)strlen(c->secret), auth_done, s);

		/* Only a dead handle refuses; its state event follows. */
		if (rc != ZOK)
			zkw__session_log(s, ZKW_LOG_ERROR,
			                 "cannot hand the %s credentials to the ZooKeeper client: %s",
			                 c->scheme, zerror(rc));
	}
}

/* Replace the handle (first start, after expiry, after control_give_up or
 * control_auth_refused). Lock held. */
static void control_new_handle(struct zkw_session *s, int64_t *retry_at)
{
	void (*auth_hook)(void *ctx, zhandle_t *zh);
	void *auth_hook_ctx;
	zhandle_t *zh;
	int e;

	control_drop_handle(s);
	if (s->closing)
		return;
	/* The new handle gets one session timeout to connect. */
	if (!s->down_since)
		s->down_since = zkw_clock_mono_ms();
	s->give_up_at = zkw_clock_mono_ms() + s->timeout_ms + 1;
	s->initializing = true;
	/* Its connection waits for the credentials' answer (auth_done). */
	s->handshake = false;
	s->auth_answered = s->opt.ncredentials == 0;
	auth_hook = s->auth_hook;
	auth_hook_ctx = s->auth_hook_ctx;
	pthread_mutex_unlock(&s->lock);
	errno = 0;
	zh = zookeeper_init2(s->hosts, session_watcher, s->opt.session_timeout_ms, NULL, s, 0, zk_log);
	e = errno ? errno : EINVAL;
	if (zh && auth_hook)
		auth_hook(auth_hook_ctx, zh);
	pthread_mutex_lock(&s->lock);
	s->initializing = false;
	if (!zh) {
		s->give_up_at = 0;
		control_init_failed(s, e, retry_at);
		return;
	}
	/* By default the client re-resolves its host list at every poll of
	 * its I/O thread: a getaddrinfo per packet, measured at a quarter of
	 * the broker's CPU and on the change-latency path. Resolve again only
	 * on connection loss. */
	zoo_set_servers_resolution_delay(zh, -1);
	if (!s->zh)
		s->zh = zh;
	control_add_auth(s, zh);
	s->need_handle = false;
	s->init_errno = 0;
}

static void *control_main(void *arg)
{
	struct zkw_session *s = arg;
	int64_t retry_at = 0;

	pthread_mutex_lock(&s->lock);
	if (s->opt.reconcile_s > 0)
		s->rc_next_round = zkw_clock_mono_ms() + reconcile_period(s);
	while (!s->closing) {
		int64_t now = zkw_clock_mono_ms(), wake;
		struct timespec ts;

		if (s->auth_refused) {
			control_auth_refused(s, &retry_at);
			continue;
		}
		if (s->need_handle && now >= retry_at) {
			control_new_handle(s, &retry_at);
			continue;
		}
		if (s->zh && !s->connected && s->give_up_at && now >= s->give_up_at) {
			control_give_up(s, now, &retry_at);
			continue;
		}
		wake = reconcile_step(s, now);
		if (wake <= now)
			continue;
		if (s->need_handle && retry_at < wake)
			wake = retry_at;
		if (s->zh && !s->connected && s->give_up_at && s->give_up_at < wake)
			wake = s->give_up_at;
		if (wake == NEVER) {
			pthread_cond_wait(&s->control_cond, &s->lock);
		} else {
			ts = zkw_clock_deadline_ms(CLOCK_MONOTONIC, zkw_clock_ms_left(wake));
			pthread_cond_timedwait(&s->control_cond, &s->lock, &ts);
		}
	}
	control_drop_handle(s);
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* ------------------------------------------------------------ public API */

void zkw_session_options_init(zkw_session_options *o)
{
	memset(o, 0, sizeof *o);
	o->reconcile_s = ZKW_RECONCILE_S_DEFAULT;
}

static void session_free(struct zkw_session *s);

static int session_alloc(struct zkw_session **out, const char *hosts, const zkw_session_options *opt)
{
	struct zkw_session *s = calloc(1, sizeof *s);
	int rc;

	*out = NULL;
	if (!s)
		return -ENOMEM;
	if (opt)
		s->opt = *opt;
	else
		zkw_session_options_init(&s->opt);
	if (s->opt.session_timeout_ms <= 0)
		s->opt.session_timeout_ms = ZKW_SESSION_TIMEOUT_MS_DEFAULT;
	if (s->opt.init_timeout_ms <= 0)
		s->opt.init_timeout_ms = ZKW_INIT_TIMEOUT_MS_DEFAULT;
	if (s->opt.reconnect_max_ms <= 0)
		s->opt.reconnect_max_ms = ZKW_RECONNECT_MAX_MS_DEFAULT;
	if (s->opt.reconcile_rate <= 0)
		s->opt.reconcile_rate = ZKW_RECONCILE_RATE_DEFAULT;
	s->timeout_ms = s->opt.session_timeout_ms;
	s->hosts = strdup(hosts);
	if (!s->hosts) {
		free(s);
		return -ENOMEM;
	}
	if ((rc = -pthread_mutex_init(&s->lock, NULL)) < 0) {
		free(s->hosts);
		free(s);
		return rc;
	}
	/* Timed waits take CLOCK_MONOTONIC deadlines (clock steps ignored). */
	if ((rc = zkw_clock_cond_init(&s->control_cond)) < 0 ||
	    (rc = zkw_clock_cond_init(&s->state_cond)) < 0) {
		/* destroying a never-initialised condition is harmless on Linux */
		session_free(s);
		return rc;
	}
	snprintf(s->conn_error, sizeof s->conn_error, "%s", ZKW_ERR_CONNECTING);
	s->need_handle = true;
	s->rng = zkw_clock_ns(CLOCK_REALTIME) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)s;
	if (!s->rng)
		s->rng = 1;
	*out = s;
	return 0;
}

/* The ACLs of ZKW_ACL_DEFAULT_AUTH and ZKW_ACL_DEFAULT_OPEN (watcher.h). */
static const zkw_session_acl acl_default_auth[] = {{"auth", "", ZKW_PERM_ALL},
                                                   {"world", "anyone", ZKW_PERM_READ}};
static const zkw_session_acl acl_default_open[] = {{"world", "anyone", ZKW_PERM_ALL}};

/* Copy the credentials (with credentials_from) and build the ACL of
 * created nodes, each into one allocation; opt's credential pointers then
 * point at the copy, opt.acl is dropped (s->acl holds it). 0, or -EINVAL /
 * -ENOMEM with the reason in errbuf. The caller frees s on failure. */
static int session_take_auth(struct zkw_session *s, char *errbuf, size_t errlen)
{
	size_t ncred = s->opt.credentials ? s->opt.ncredentials : 0;
	const zkw_session_acl *acl = s->opt.acl && s->opt.nacl ? s->opt.acl : NULL;
	size_t nacl = acl ? s->opt.nacl : 0, len, i;
	const char *from = s->opt.credentials_from;
	zkw_session_credential *cred;
	struct ACL *entries;
	char *p;

	len = ncred * sizeof *cred + (from ? strlen(from) + 1 : 0);
	for (i = 0; i < ncred; i++) {
		const zkw_session_credential *c = &s->opt.credentials[i];

		if (!c->scheme || !c->scheme[0] || !c->secret || !c->secret[0])
			return zkw__errorf(errbuf, errlen, -EINVAL,
			                   "credential %zu has no scheme or no secret", i + 1);
		len += strlen(c->scheme) + strlen(c->secret) + 2;
	}
	if (ncred) {
		if (!(s->cred_block = p = malloc(len)))
			return zkw__errorf(errbuf, errlen, -ENOMEM, "no memory for the credentials");
		s->cred_block_len = len;
		cred = (zkw_session_credential *)(void *)p;
		p += ncred * sizeof *cred;
		for (i = 0; i < ncred; i++) {
			cred[i].scheme = strcpy(p, s->opt.credentials[i].scheme);
			p += strlen(p) + 1;
			cred[i].secret = strcpy(p, s->opt.credentials[i].secret);
			p += strlen(p) + 1;
		}
		s->opt.credentials_from = from ? strcpy(p, from) : NULL;
		s->opt.credentials = cred;
	} else {
		s->opt.credentials = NULL;
		s->opt.credentials_from = NULL;
	}
	s->opt.ncredentials = ncred;

	if (!acl) {
		acl = ncred ? acl_default_auth : acl_default_open;
		nacl = ncred ? 2 : 1;
		s->acl_open_default = !ncred;
	}
	s->opt.acl = NULL;
	s->opt.nacl = 0;
	if (nacl > INT32_MAX / 2)
		return zkw__errorf(errbuf, errlen, -EINVAL, "%zu ACL entries are too many", nacl);
	len = nacl * sizeof *entries;
	for (i = 0; i < nacl; i++) {
		const zkw_session_acl *a = &acl[i];

		if (!a->scheme || !a->scheme[0] || !a->id || !a->perms || (a->perms & ~ZKW_PERM_ALL))
			return zkw__errorf(errbuf, errlen, -EINVAL,
			                   "ACL entry %zu needs a scheme, an id and permissions among cdrwa",
			                   i + 1);
		if (strcmp(a->scheme, "auth") == 0 && !ncred)
			return zkw__errorf(
			        errbuf, errlen, -EINVAL,
			        "ACL entry auth:%s: gives the creator's identities, and there are none "
			        "without credentials",
			        a->id);
		len += strlen(a->scheme) + strlen(a->id) + 2;
	}
	if (!(s->acl_block = p = malloc(len)))
		return zkw__errorf(errbuf, errlen, -ENOMEM, "no memory for the ACL");
	entries = (struct ACL *)(void *)p;
	p += nacl * sizeof *entries;
	for (i = 0; i < nacl; i++) {
		entries[i].perms = (int32_t)acl[i].perms;
		entries[i].id.scheme = strcpy(p, acl[i].scheme);
		p += strlen(p) + 1;
		entries[i].id.id = strcpy(p, acl[i].id);
		p += strlen(p) + 1;
	}
	s->acl.count = (int32_t)nacl;
	s->acl.data = entries;
	return 0;
}

static void session_free(struct zkw_session *s)
{
	if (s->cred_block) {
		explicit_bzero(s->cred_block, s->cred_block_len);
		free(s->cred_block);
	}
	free(s->acl_block);
	list_free(&s->watches);
	list_free(&s->draining);
	list_free(&s->spare);
	pthread_cond_destroy(&s->control_cond);
	pthread_cond_destroy(&s->state_cond);
	pthread_mutex_destroy(&s->lock);
	free(s->hosts);
	free(s);
}

/* valid_init: wait for the first connection, or a definite failure. */
static int session_wait_connected(struct zkw_session *s)
{
	struct timespec ts = zkw_clock_deadline_ms(CLOCK_MONOTONIC, s->opt.init_timeout_ms);
	int rc = 0;

	pthread_mutex_lock(&s->lock);
	s->open_waiting = true;
	while (!s->connected && !s->init_errno && !s->auth_refused && !s->auth_refusals && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&s->state_cond, &s->lock, &ts);
	s->open_waiting = false;
	rc = s->connected                          ? 0
	     : s->init_errno                       ? -s->init_errno
	     : s->auth_refused || s->auth_refusals ? -EACCES
	                                           : -ETIMEDOUT;
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int zkw_session_open(zkw_session **out, const char *hosts, const zkw_session_options *opt, char *errbuf,
                     size_t errlen)
{
	struct zkw_session *s;
	int rc, init_timeout_ms;
	char what[512];

	*out = NULL;
	if (errbuf && errlen)
		errbuf[0] = '\0';
	if (!hosts || !hosts[0])
		return zkw__errorf(errbuf, errlen, -EINVAL, "no ZooKeeper hosts given");
	if ((rc = session_alloc(&s, hosts, opt)) < 0)
		return zkw__errorf(errbuf, errlen, rc, "cannot set up a session: %s", strerror(-rc));
	if ((rc = session_take_auth(s, errbuf, errlen)) < 0) {
		session_free(s);
		return rc;
	}
	__atomic_store_n(&s->opening, s->opt.valid_init, __ATOMIC_RELAXED);
	registry_add(s);
	rc = pthread_create(&s->control, NULL, control_main, s);
	if (rc != 0) {
		registry_remove(s);
		session_free(s);
		return zkw__errorf(errbuf, errlen, -rc, "cannot start the control thread: %s", strerror(rc));
	}
	pthread_setname_np(s->control, "zkw-control");
	rc = s->opt.valid_init ? session_wait_connected(s) : 0;
	pthread_mutex_lock(&s->lock);
	__atomic_store_n(&s->opening, false, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&s->lock);
	if (rc != 0) {
		init_timeout_ms = s->opt.init_timeout_ms;
		auth_describe(s, what, sizeof what);
		zkw_session_close(s);
		if (rc == -EACCES)
			return zkw__errorf(errbuf, errlen, rc,
			                   "ZooKeeper at '%s' refused the session's credentials (%s): "
			                   "authentication failed",
			                   hosts, what);
		if (rc == -ETIMEDOUT)
			return zkw__errorf(errbuf, errlen, rc,
			                   "no ZooKeeper server answered at '%s' within %d ms", hosts,
			                   init_timeout_ms);
		return zkw__errorf(errbuf, errlen, rc, "cannot start a ZooKeeper session for '%s': %s", hosts,
		                   init_strerror(-rc));
	}
	*out = s;
	return 0;
}

/* A spare struct to recycle, else a new one. Lock held (a stale watcher
 * may be looking at a spare). NULL when out of memory. */
static struct zkw_watch *watch_take(struct zkw_session *s)
{
	struct zkw_watch *w = s->spare.head;

	if (w) {
		list_unlink(&s->spare, w);
		return w;
	}
	w = calloc(1, sizeof *w);
	if (!w)
		return NULL;
	w->session = s;
	w->life = ZKW__WATCH_SPARE;
	for (int i = 0; i < 2; i++)
		w->node[i].watch = w;
	return w;
}

int zkw_session_watch(zkw_session *s, const char *path, const zkw_watch_options *o, zkw_watch **out)
{
	char check[ZKW_POINTER_MAX];
	struct zkw_watch *w;
	int rc = 0;

	if (out)
		*out = NULL;
	/* The watched path obeys the pointer rules, untrimmed. */
	if (!s || !path || zkw_pointer_parse(path, strlen(path), check, sizeof check, NULL) < 0 ||
	    strcmp(check, path) != 0 || (o && o->bundle && o->pointer))
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	if (!(w = watch_take(s))) {
		rc = -ENOMEM;
	} else if ((rc = zkw__watch_init(w, path, o)) < 0) {
		list_append(&s->spare, w); /* kept for later, freed at close */
	} else {
		w->life = ZKW__WATCH_ACTIVE;
		list_append(&s->watches, w);
		if (s->connected)
			zkw__watch_read_all(w);
		if (out)
			*out = w;
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

void zkw_watch_remove(zkw_watch *w)
{
	struct zkw_session *s;

	if (!w)
		return;
	s = w->session;
	pthread_mutex_lock(&s->lock);
	if (w->life == ZKW__WATCH_ACTIVE) {
		if (s->rc_cursor == w)
			s->rc_cursor = w->next;
		list_unlink(&s->watches, w);
		w->life = ZKW__WATCH_DRAINING;
		list_append(&s->draining, w);
		if (zkw__watch_idle(w))
			zkw__session_watch_drained(w);
	}
	pthread_mutex_unlock(&s->lock);
}

int zkw_watch_ensure(zkw_watch *w)
{
	int rc = 0;

	if (!w)
		return -EINVAL;
	pthread_mutex_lock(&w->session->lock);
	if (w->life == ZKW__WATCH_ACTIVE)
		zkw__watch_ensure(w);
	else
		rc = -EINVAL;
	pthread_mutex_unlock(&w->session->lock);
	return rc;
}

void zkw__session_watch_counts(struct zkw_session *s, unsigned *active, unsigned *draining, unsigned *spare)
{
	pthread_mutex_lock(&s->lock);
	*active = s->watches.count;
	*draining = s->draining.count;
	*spare = s->spare.count;
	pthread_mutex_unlock(&s->lock);
}

void zkw__session_set_auth_hook(struct zkw_session *s, void (*hook)(void *ctx, zhandle_t *zh), void *ctx)
{
	pthread_mutex_lock(&s->lock);
	s->auth_hook = hook;
	s->auth_hook_ctx = ctx;
	pthread_mutex_unlock(&s->lock);
}

void zkw__session_set_reconcile_hook(struct zkw_session *s, void (*hook)(void *ctx, const char *path),
                                     void *ctx)
{
	pthread_mutex_lock(&s->lock);
	s->rc_hook = hook;
	s->rc_hook_ctx = ctx;
	pthread_mutex_unlock(&s->lock);
}

static void ping_done(int rc, const struct Stat *stat, const void *ctx)
{
	struct zkw_session *s = (struct zkw_session *)ctx;

	(void)stat;
	pthread_mutex_lock(&s->lock);
	if (s->zh && s->ping_answered < s->ping_sent) {
		s->ping_answered++;
		/* "/" of a chroot may not exist: any answer proves the link. */
		if (rc == ZOK || rc == ZNONODE)
			s->ping_rc = 0;
		else
			s->ping_rc = rc;
		pthread_cond_broadcast(&s->state_cond);
	}
	pthread_mutex_unlock(&s->lock);
}

bool zkw_session_ping(zkw_session *s)
{
	uint64_t ticket;
	int wait_ms;
	struct timespec ts;
	bool ok = false;

	if (!s)
		return false;
	wait_ms = s->opt.session_timeout_ms / 3;
	if (wait_ms > PING_MAX_MS)
		wait_ms = PING_MAX_MS;
	ts = zkw_clock_deadline_ms(CLOCK_MONOTONIC, wait_ms);
	pthread_mutex_lock(&s->lock);
	if (!s->connected || !s->zh || s->closing)
		goto out;
	if (zoo_aexists(s->zh, "/", 0, ping_done, s) != ZOK)
		goto out;
	ticket = ++s->ping_sent;
	while (s->ping_answered < ticket && !s->closing &&
	       pthread_cond_timedwait(&s->state_cond, &s->lock, &ts) == 0)
		;
	/* Answers come in order: ours is in once the count reaches our ticket. */
	ok = s->ping_answered >= ticket && s->zh && s->connected && s->ping_rc == 0;
out:
	pthread_mutex_unlock(&s->lock);
	return ok;
}

int zkw_session_identity(zkw_session *s, int64_t *id, char passwd[16])
{
	int rc = -ENOTCONN;

	if (!s)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	if (s->zh && s->connected) {
		const clientid_t *cid = zoo_client_id(s->zh);

		if (id)
			*id = cid->client_id;
		if (passwd)
			memcpy(passwd, cid->passwd, 16);
		rc = 0;
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

void zkw_session_close(zkw_session *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->closing = true;
	pthread_cond_signal(&s->control_cond);
	pthread_cond_broadcast(&s->state_cond);
	pthread_mutex_unlock(&s->lock);
	/* The control thread closes the handle: after the join no ZooKeeper
	 * thread of ours exists, so no callback can run. */
	pthread_join(s->control, NULL);
	registry_remove(s);
	session_free(s);
}
