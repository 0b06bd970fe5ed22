/* watch_session.c - one ZooKeeper session serving many watches.
 *
 * Threads, and what each one runs:
 *
 *  - caller threads: zkw_session_open / _watch / _ping / _identity / _close.
 *    They take the session lock briefly; ping waits (bounded) on state_cond;
 *    open with valid_init waits (bounded) for the first connection; close
 *    joins the control thread.
 *  - the control thread (one per session, ours): creates the ZooKeeper
 *    handle, re-creates it after ZOO_EXPIRED_SESSION_STATE (zookeeper_close
 *    of the old one happens here, never in a callback), retries a failed
 *    zookeeper_init with backoff, fires the reconcile timer, and tears the
 *    handle down at close. It never holds the lock across zookeeper_init or
 *    zookeeper_close: both wait for ZooKeeper threads that may be waiting
 *    for the lock.
 *  - the ZooKeeper completion thread (one per handle, the client's): the
 *    session watcher below, node watchers and completions (watch_node.c),
 *    and so on_state. Everything there is non-blocking: it takes the
 *    session lock, issues async zoo_a* calls, calls on_state, returns.
 *  - the ZooKeeper I/O thread (the client's): only our log trampoline.
 *
 * One mutex (zkw_session.lock) protects the whole session and its watches.
 * It is never held while waiting on ZooKeeper, and on_state is called with
 * it held, which serialises on_state calls per session.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define ZKW__DEFAULT_SESSION_TIMEOUT_MS 10000
#define ZKW__DEFAULT_INIT_TIMEOUT_MS    5000
#define ZKW__DEFAULT_RECONCILE_S        60
#define ZKW__BACKOFF_MIN_MS             100
#define ZKW__BACKOFF_MAX_MS             10000
#define ZKW__PING_MAX_MS                2000
/* ZooKeeper client messages forwarded per minute; the rest are counted. */
#define ZKW__ZK_LOG_BURST 20

static uint64_t zkw__mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t zkw__realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Absolute CLOCK_MONOTONIC deadline for pthread_cond_timedwait. */
static struct timespec zkw__deadline(uint64_t at_ms)
{
	struct timespec ts = {.tv_sec = (time_t)(at_ms / 1000), .tv_nsec = (long)(at_ms % 1000) * 1000000L};
	return ts;
}

int zkw__cond_init(pthread_cond_t *c)
{
	pthread_condattr_t a;
	int rc;

	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	rc = pthread_cond_init(c, &a);
	pthread_condattr_destroy(&a);
	return rc;
}

/* ------------------------------------------------------------------ logs */

void zkw__log(struct zkw_session *s, int level, const char *fmt, ...)
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
static pthread_mutex_t zkw__registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct zkw_session *zkw__registry;
static uint64_t zkw__zk_log_window_ms;
static unsigned zkw__zk_log_count, zkw__zk_log_suppressed;

static int zkw__zk_log_level(const char *message)
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
static const char *zkw__zk_log_text(const char *message)
{
	const char *p = strstr(message, "):ZOO_");
	const char *at;

	if (!p || !(at = strchr(p, '@')))
		return message;
	p = strstr(at, ": ");
	return p ? p + 2 : message;
}

static void zkw__zk_log(const char *message)
{
	uint64_t now = zkw__mono_ms();
	struct zkw_session *s;

	pthread_mutex_lock(&zkw__registry_lock);
	s = zkw__registry;
	if (!s)
		goto out;
	/* A dead server makes the client log every connection attempt:
	 * forward a burst per minute, then count what we drop. */
	if (now - zkw__zk_log_window_ms >= 60000) {
		if (zkw__zk_log_suppressed)
			zkw__log(s, ZKW_LOG_WARN, "zookeeper client: %u messages suppressed",
			         zkw__zk_log_suppressed);
		zkw__zk_log_window_ms = now;
		zkw__zk_log_count = 0;
		zkw__zk_log_suppressed = 0;
	}
	if (zkw__zk_log_count++ < ZKW__ZK_LOG_BURST) {
		const char *text = zkw__zk_log_text(message);
		size_t n = strcspn(text, "\n");

		zkw__log(s, zkw__zk_log_level(message), "zookeeper client: %.*s", (int)n, text);
	} else {
		zkw__zk_log_suppressed++;
	}
out:
	pthread_mutex_unlock(&zkw__registry_lock);
}

static void zkw__registry_add(struct zkw_session *s)
{
	pthread_mutex_lock(&zkw__registry_lock);
	if (s->opt.log) {
		s->log_next = zkw__registry;
		zkw__registry = s;
	}
	/* The level is process-wide, so touch it only when someone listens.
	 * Our handles never print to stderr either way: each one logs through
	 * zkw__zk_log, which drops messages nobody listens to. */
	if (s->opt.log)
		zoo_set_debug_level(ZOO_LOG_LEVEL_WARN);
	pthread_mutex_unlock(&zkw__registry_lock);
}

static void zkw__registry_remove(struct zkw_session *s)
{
	pthread_mutex_lock(&zkw__registry_lock);
	for (struct zkw_session **p = &zkw__registry; *p; p = &(*p)->log_next) {
		if (*p == s) {
			*p = s->log_next;
			break;
		}
	}
	pthread_mutex_unlock(&zkw__registry_lock);
}

/* --------------------------------------------------------- session state */

static void zkw__evaluate_all(struct zkw_session *s)
{
	for (struct zkw_watch *w = s->watches; w; w = w->next)
		zkw__watch_evaluate(w);
}

static void zkw__session_connected(struct zkw_session *s, zhandle_t *zh)
{
	const clientid_t *id = zoo_client_id(zh);

	if (!s->connected)
		zkw__log(s, ZKW_LOG_INFO, "connected to ZooKeeper, session 0x%llx, timeout %d ms",
		         (unsigned long long)id->client_id, zoo_recv_timeout(zh));
	s->connected = true;
	s->backoff_ms = 0;
	snprintf(s->conn_error, sizeof s->conn_error, "%s", ZKW_ERR_CONNECTION);
	/* Re-read everything: a change while we were away may or may not have
	 * fired a watch; content comparison makes the re-read harmless. */
	for (struct zkw_watch *w = s->watches; w; w = w->next)
		zkw__watch_read_all(w);
	pthread_cond_broadcast(&s->state_cond);
}

static void zkw__session_lost(struct zkw_session *s, bool expired)
{
	if (s->connected || expired)
		zkw__log(s, expired ? ZKW_LOG_WARN : ZKW_LOG_INFO, "%s",
		         expired ? "ZooKeeper session expired, starting a new one"
		                 : "connection to ZooKeeper lost, reconnecting");
	s->connected = false;
	snprintf(s->conn_error, sizeof s->conn_error, "%s", ZKW_ERR_CONNECTION);
	if (expired) {
		s->need_handle = true;
		pthread_cond_signal(&s->control_cond);
	}
	zkw__evaluate_all(s);
	pthread_cond_broadcast(&s->state_cond);
}

/* The session watcher (default watcher of every handle we create). */
static void zkw__session_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
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
		if (state == ZOO_CONNECTED_STATE)
			zkw__session_connected(s, zh);
		else if (state == ZOO_EXPIRED_SESSION_STATE || state == ZOO_AUTH_FAILED_STATE)
			zkw__session_lost(s, true);
		else
			zkw__session_lost(s, false);
	}
	pthread_mutex_unlock(&s->lock);
}

/* ---------------------------------------------------------- control thread */

static uint64_t zkw__rand(struct zkw_session *s)
{
	/* xorshift64: jitter only, no need for quality. */
	s->rng ^= s->rng << 13;
	s->rng ^= s->rng >> 7;
	s->rng ^= s->rng << 17;
	return s->rng;
}

/* Next reconcile: reconcile_s +-20%, so a fleet does not herd the ensemble. */
static uint64_t zkw__next_reconcile(struct zkw_session *s, uint64_t now)
{
	uint64_t base = (uint64_t)s->opt.reconcile_s * 1000u;

	if (s->opt.reconcile_s <= 0)
		return UINT64_MAX;
	return now + base * 8 / 10 + zkw__rand(s) % (base * 4 / 10 + 1);
}

/* Close the current handle. Called and returns with the lock held; drops
 * it around zookeeper_close, which joins the completion thread. */
static void zkw__control_drop_handle(struct zkw_session *s)
{
	zhandle_t *old = s->zh;

	s->zh = NULL;
	s->connected = false;
	s->ping_answered = s->ping_sent;
	pthread_cond_broadcast(&s->state_cond);
	if (!old)
		return;
	pthread_mutex_unlock(&s->lock);
	zookeeper_close(old);
	pthread_mutex_lock(&s->lock);
	/* Every callback of the old handle has run (or never will). */
	for (struct zkw_watch *w = s->watches; w; w = w->next)
		zkw__watch_reset_handle(w);
	s->ping_answered = s->ping_sent;
}

/* Why zookeeper_init failed, in words (it only leaves errno behind). */
static const char *zkw__init_strerror(int e)
{
	if (e == EINVAL)
		return "bad host string (expected host:port[,host:port...][/chroot])";
	if (e == ENOENT)
		return "no host name resolves";
	return strerror(e);
}

static void zkw__control_init_failed(struct zkw_session *s, int e, uint64_t *retry_at)
{
	bool first = s->init_errno != e;

	s->init_errno = e;
	snprintf(s->conn_error, sizeof s->conn_error,
	         ZKW_ERR_CONNECTING ": cannot start a session for '%s': %s", s->hosts, zkw__init_strerror(e));
	if (first)
		zkw__log(s, ZKW_LOG_ERROR, "%s", s->conn_error);
	s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : ZKW__BACKOFF_MIN_MS;
	if (s->backoff_ms > ZKW__BACKOFF_MAX_MS)
		s->backoff_ms = ZKW__BACKOFF_MAX_MS;
	*retry_at = zkw__mono_ms() + s->backoff_ms / 2 + zkw__rand(s) % (s->backoff_ms / 2 + 1);
	zkw__evaluate_all(s);
	pthread_cond_broadcast(&s->state_cond);
}

/* Replace the handle (first start, or after expiry). Lock held. */
static void zkw__control_new_handle(struct zkw_session *s, uint64_t *retry_at)
{
	zhandle_t *zh;
	int e;

	zkw__control_drop_handle(s);
	if (s->closing)
		return;
	s->initializing = true;
	pthread_mutex_unlock(&s->lock);
	errno = 0;
	zh = zookeeper_init2(s->hosts, zkw__session_watcher, s->opt.session_timeout_ms, NULL, s, 0,
	                     zkw__zk_log);
	e = errno ? errno : EINVAL;
	pthread_mutex_lock(&s->lock);
	s->initializing = false;
	if (!zh) {
		zkw__control_init_failed(s, e, retry_at);
		return;
	}
	/* By default the client re-resolves its host list at every poll of
	 * its I/O thread: a getaddrinfo per packet, measured at a quarter of
	 * the broker's CPU and on the change-latency path. Resolve again only
	 * on connection loss. */
	zoo_set_servers_resolution_delay(zh, -1);
	if (!s->zh)
		s->zh = zh;
	s->need_handle = false;
	s->init_errno = 0;
}

static void *zkw__control_main(void *arg)
{
	struct zkw_session *s = arg;
	uint64_t retry_at = 0, reconcile_at;

	pthread_mutex_lock(&s->lock);
	reconcile_at = zkw__next_reconcile(s, zkw__mono_ms());
	while (!s->closing) {
		uint64_t now = zkw__mono_ms(), wake = reconcile_at;
		struct timespec ts;

		if (s->need_handle && now >= retry_at) {
			zkw__control_new_handle(s, &retry_at);
			continue;
		}
		if (now >= reconcile_at) {
			for (struct zkw_watch *w = s->watches; w && s->connected; w = w->next)
				zkw__watch_reconcile(w);
			reconcile_at = zkw__next_reconcile(s, now);
			continue;
		}
		if (s->need_handle && retry_at < wake)
			wake = retry_at;
		if (wake == UINT64_MAX) {
			pthread_cond_wait(&s->control_cond, &s->lock);
		} else {
			ts = zkw__deadline(wake);
			pthread_cond_timedwait(&s->control_cond, &s->lock, &ts);
		}
	}
	zkw__control_drop_handle(s);
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* ------------------------------------------------------------ public API */

void zkw_session_options_init(zkw_session_options *o)
{
	memset(o, 0, sizeof *o);
	o->reconcile_s = ZKW__DEFAULT_RECONCILE_S;
}

static void zkw__open_error(const zkw_session_options *o, int *err, int e, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
static void zkw__open_error(const zkw_session_options *o, int *err, int e, const char *fmt, ...)
{
	va_list ap;

	if (err)
		*err = e;
	if (o && o->errbuf && o->errlen) {
		va_start(ap, fmt);
		vsnprintf(o->errbuf, o->errlen, fmt, ap);
		va_end(ap);
	}
}

static struct zkw_session *zkw__session_alloc(const char *hosts, const zkw_session_options *opt)
{
	struct zkw_session *s = calloc(1, sizeof *s);

	if (!s)
		return NULL;
	if (opt)
		s->opt = *opt;
	else
		zkw_session_options_init(&s->opt);
	s->opt.errbuf = NULL; /* the caller's buffer is for open only */
	if (s->opt.session_timeout_ms <= 0)
		s->opt.session_timeout_ms = ZKW__DEFAULT_SESSION_TIMEOUT_MS;
	if (s->opt.init_timeout_ms <= 0)
		s->opt.init_timeout_ms = ZKW__DEFAULT_INIT_TIMEOUT_MS;
	s->hosts = strdup(hosts);
	if (!s->hosts || pthread_mutex_init(&s->lock, NULL) != 0) {
		free(s->hosts);
		free(s);
		return NULL;
	}
	zkw__cond_init(&s->control_cond);
	zkw__cond_init(&s->state_cond);
	snprintf(s->conn_error, sizeof s->conn_error, "%s", ZKW_ERR_CONNECTING);
	s->need_handle = true;
	s->rng = zkw__realtime_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)s;
	if (!s->rng)
		s->rng = 1;
	return s;
}

static void zkw__session_free(struct zkw_session *s)
{
	struct zkw_watch *w = s->watches;

	while (w) {
		struct zkw_watch *next = w->next;

		zkw__watch_free(w);
		w = next;
	}
	pthread_cond_destroy(&s->control_cond);
	pthread_cond_destroy(&s->state_cond);
	pthread_mutex_destroy(&s->lock);
	free(s->hosts);
	free(s);
}

/* valid_init: wait for the first connection, or a definite failure. */
static int zkw__session_wait_connected(struct zkw_session *s)
{
	uint64_t deadline = zkw__mono_ms() + (uint64_t)s->opt.init_timeout_ms;
	struct timespec ts = zkw__deadline(deadline);
	int rc = 0;

	pthread_mutex_lock(&s->lock);
	while (!s->connected && !s->init_errno && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&s->state_cond, &s->lock, &ts);
	rc = s->connected ? 0 : s->init_errno ? -s->init_errno : -ETIMEDOUT;
	pthread_mutex_unlock(&s->lock);
	return rc;
}

zkw_session *zkw_session_open(const char *hosts, const zkw_session_options *opt, int *err)
{
	struct zkw_session *s;
	int rc;

	if (!hosts || !hosts[0]) {
		zkw__open_error(opt, err, -EINVAL, "no ZooKeeper hosts given");
		return NULL;
	}
	s = zkw__session_alloc(hosts, opt);
	if (!s) {
		zkw__open_error(opt, err, -ENOMEM, "out of memory");
		return NULL;
	}
	zkw__registry_add(s);
	rc = pthread_create(&s->control, NULL, zkw__control_main, s);
	if (rc == 0)
		pthread_setname_np(s->control, "zkw-control");
	if (rc != 0) {
		zkw__registry_remove(s);
		zkw__session_free(s);
		zkw__open_error(opt, err, -rc, "cannot start the control thread: %s", strerror(rc));
		return NULL;
	}
	if (s->opt.valid_init && (rc = zkw__session_wait_connected(s)) != 0) {
		if (rc == -ETIMEDOUT)
			zkw__open_error(opt, err, rc, "no ZooKeeper server answered at '%s' within %d ms",
			                hosts, s->opt.init_timeout_ms);
		else
			zkw__open_error(opt, err, rc, "cannot start a ZooKeeper session for '%s': %s", hosts,
			                zkw__init_strerror(-rc));
		zkw_session_close(s);
		return NULL;
	}
	if (err)
		*err = 0;
	return s;
}

static struct zkw_watch *zkw__watch_alloc(struct zkw_session *s, const char *path, const zkw_watch_options *o)
{
	struct zkw_watch *w = calloc(1, sizeof *w);

	if (!w)
		return NULL;
	w->session = s;
	if (o)
		w->opt = *o;
	w->max_len = w->opt.max_len ? w->opt.max_len : SIZE_MAX;
	w->ensure_pending = w->opt.ensure;
	for (int i = 0; i < 2; i++)
		w->node[i].watch = w;
	w->node[0].path = strdup(path);
	w->node[1].path = calloc(1, 1);
	w->node[1].path_cap = 1;
	if (!w->node[0].path || !w->node[1].path) {
		zkw__watch_free(w);
		return NULL;
	}
	w->node[0].path_cap = strlen(path) + 1;
	snprintf(w->error, sizeof w->error, "%s", ZKW_ERR_CONNECTING);
	return w;
}

zkw_watch *zkw_session_watch(zkw_session *s, const char *path, const zkw_watch_options *o)
{
	char check[ZKW_POINTER_MAX];
	struct zkw_watch *w, **tail;

	/* The watched path obeys the pointer rules, untrimmed. */
	if (!s || !path || zkw_pointer_parse(path, strlen(path), check, sizeof check, NULL) < 0 ||
	    strcmp(check, path) != 0) {
		errno = EINVAL;
		return NULL;
	}
	w = zkw__watch_alloc(s, path, o);
	if (!w) {
		errno = ENOMEM;
		return NULL;
	}
	pthread_mutex_lock(&s->lock);
	for (tail = &s->watches; *tail; tail = &(*tail)->next)
		;
	*tail = w;
	if (s->connected)
		zkw__watch_read_all(w);
	pthread_mutex_unlock(&s->lock);
	return w;
}

static void zkw__ping_done(int rc, const struct Stat *stat, const void *ctx)
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
	uint64_t ticket, wait_ms;
	struct timespec ts;
	bool ok = false;

	if (!s)
		return false;
	wait_ms = (uint64_t)s->opt.session_timeout_ms / 3;
	if (wait_ms > ZKW__PING_MAX_MS)
		wait_ms = ZKW__PING_MAX_MS;
	ts = zkw__deadline(zkw__mono_ms() + wait_ms);
	pthread_mutex_lock(&s->lock);
	if (!s->connected || !s->zh || s->closing)
		goto out;
	if (zoo_aexists(s->zh, "/", 0, zkw__ping_done, s) != ZOK)
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

bool zkw_session_identity(zkw_session *s, int64_t *id, char passwd[16])
{
	bool ok = false;

	if (!s)
		return false;
	pthread_mutex_lock(&s->lock);
	if (s->zh && s->connected) {
		const clientid_t *cid = zoo_client_id(s->zh);

		if (id)
			*id = cid->client_id;
		if (passwd)
			memcpy(passwd, cid->passwd, 16);
		ok = true;
	}
	pthread_mutex_unlock(&s->lock);
	return ok;
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
	zkw__registry_remove(s);
	zkw__session_free(s);
}
