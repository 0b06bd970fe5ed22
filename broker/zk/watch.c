/* SPDX-License-Identifier: Apache-2.0 */
/* watch.c - one watch: async reads, pointer switching, evaluation.
 *
 * Every function here runs with the session lock held: either on the
 * ZooKeeper completion thread (watcher callbacks, completions - they take
 * the lock themselves), or on the control / caller thread that already
 * holds it. Only asynchronous zoo_a* calls are made, so the completion
 * thread never blocks.
 *
 * Hot path (contract: minimal latency): ZOO_CHANGED_EVENT -> zoo_awget from
 * the watcher callback -> completion -> evaluate -> on_state, all on the
 * completion thread, no thread hop.
 *
 * A node moves through: get (data watch) -> OK, or ZNONODE -> exists (exists
 * watch, noticed on creation) -> MISSING until the watch fires. Pointer mode
 * chains two nodes: node[0]'s data, once parsed, names node[1].
 *
 * A removed watch (life != ACTIVE, see internal.h) still gets the answers
 * and events of what it left in flight: every callback here counts the
 * answer, then drops it - no request, no on_state - and hands the watch to
 * the spares once nothing is left (watch_settle).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zkw_clock.h>

#include "internal.h"

static void data_done(int rc, const char *value, int value_len, const struct Stat *stat, const void *ctx);
static void exists_done(int rc, const struct Stat *stat, const void *ctx);
static void node_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx);

bool zkw__rc_is_connection(int rc)
{
	return rc == ZCONNECTIONLOSS || rc == ZOPERATIONTIMEOUT || rc == ZSESSIONEXPIRED ||
	       rc == ZSESSIONMOVED || rc == ZCLOSING || rc == ZINVALIDSTATE;
}

int zkw__watch_buf_set(void **buf, size_t *cap, size_t *len, const void *src, size_t n)
{
	if (n > *cap) {
		void *p = realloc(*buf, n);

		if (!p)
			return -ENOMEM;
		*buf = p;
		*cap = n;
	}
	if (n)
		memcpy(*buf, src, n);
	*len = n;
	return 0;
}

static int node_set_path(struct zkw__node *n, const char *path)
{
	size_t len = strlen(path) + 1;
	void *p = n->path;
	int rc = zkw__watch_buf_set(&p, &n->path_cap, &len, path, len);

	n->path = p;
	return rc;
}

#define rc_is_connection zkw__rc_is_connection
#define watch_active     zkw__watch_active
#define watch_settle     zkw__watch_settle

bool zkw__watch_active(const struct zkw_watch *w)
{
	return w->life == ZKW__WATCH_ACTIVE;
}

/* An answer for a removed watch came in: once it was the last one, the
 * struct may be recycled. */
void zkw__watch_settle(struct zkw_watch *w)
{
	if (w->life == ZKW__WATCH_DRAINING && zkw__watch_idle(w))
		zkw__session_watch_drained(w);
}

/* A request was refused before reaching the wire (no completion will come). */
static void node_issue_failed(struct zkw__node *n, const char *what, int rc)
{
	n->status = rc_is_connection(rc) ? ZKW__NODE_DISCONNECTED : ZKW__NODE_FAILED;
	n->rc = rc;
	zkw__session_log(n->watch->session, ZKW_LOG_WARN, "%s %s: %s", what, n->path, zerror(rc));
}

/* Ask for n with a watch on it: its data (get), or only whether it exists
 * (exists: a missing node, noticed on creation; a node we may not read). */
static void node_request(struct zkw__node *n, bool exists)
{
	zhandle_t *zh = n->watch->session->zh;
	int rc;

	/* Not connected: the reconnect (ZOO_CONNECTED_STATE) re-reads all. */
	if (!zh || !n->watch->session->connected || !n->path[0])
		return;
	/* A bundle's node is read by rounds (bundle.c); only its existence
	 * watch, while it is missing, is ours. */
	if (!exists && n->watch->opt.bundle && n == &n->watch->node[0]) {
		zkw__bundle_read(n->watch);
		return;
	}
	if (exists)
		rc = zoo_awexists(zh, n->path, node_watcher, n, exists_done, n);
	else
		rc = zoo_awget(zh, n->path, node_watcher, n, data_done, n);
	if (rc == ZOK) {
		n->outstanding++;
		zkw__session_count(n->watch->session, ZKW_COUNT_READ);
	} else {
		node_issue_failed(n, exists ? "zoo_awexists" : "zoo_awget", rc);
	}
}

static void node_get(struct zkw__node *n)
{
	node_request(n, false);
}

static void node_exists(struct zkw__node *n)
{
	node_request(n, true);
}

void zkw__node_exists(struct zkw__node *n)
{
	node_exists(n);
}

static void create_done(int rc, const char *value, const void *ctx)
{
	struct zkw_watch *w = (struct zkw_watch *)ctx;

	(void)value;
	pthread_mutex_lock(&w->session->lock);
	if (w->creates)
		w->creates--; /* 0: answer of a torn-down handle */
	/* Losing a creation race is success; anything else shows up as the
	 * node staying missing, logged here with its cause. */
	if (!watch_active(w))
		watch_settle(w);
	else if (rc != ZOK && rc != ZNODEEXISTS && !rc_is_connection(rc))
		zkw__session_log(w->session, ZKW_LOG_WARN, "ensure %s: %s", w->node[0].path, zerror(rc));
	pthread_mutex_unlock(&w->session->lock);
}

/* Without credentials and without a chosen ACL, created nodes are open to
 * everyone (the only ACL that leaves them writable when nobody can
 * authenticate): say so once, at the first create. */
static void ensure_warn_open(struct zkw_session *s)
{
	if (!s->acl_open_default || s->acl_open_warned)
		return;
	s->acl_open_warned = true;
	zkw__session_log(
	        s, ZKW_LOG_WARN,
	        "ensure: nodes are created with the open ACL " ZKW_ACL_DEFAULT_OPEN
	        " (anyone may change or delete them): the session has no credentials; give "
	        "credentials (creator all, world read) or choose an ACL (the broker's --auth-file, --acl)");
}

/* ensure: create every prefix, then read. All in one batch: ZooKeeper
 * executes one session's requests in order, so each create sees its parent
 * and the final get sees the node. */
static void node_ensure(struct zkw__node *n)
{
	zhandle_t *zh = n->watch->session->zh;
	size_t len = strlen(n->path);
	char *prefix = malloc(len + 1);

	if (!prefix || !zh) {
		free(prefix);
		node_exists(n);
		return;
	}
	zkw__session_log(n->watch->session, ZKW_LOG_INFO, "ensure: creating %s", n->path);
	ensure_warn_open(n->watch->session);
	for (size_t i = 1; i <= len; i++) {
		if (i < len && n->path[i] != '/')
			continue;
		memcpy(prefix, n->path, i);
		prefix[i] = '\0';
		/* Parents get the ACL too: they are ours as much as the node. */
		if (zoo_acreate(zh, prefix, "", 0, &n->watch->session->acl, 0, create_done, n->watch) == ZOK)
			n->watch->creates++;
	}
	free(prefix);
	node_get(n);
}

void zkw__node_ensure(struct zkw__node *n)
{
	node_ensure(n);
}

/* Pointer mode: node[0] was just read; point node[1] at its target. */
static void follow_pointer(struct zkw_watch *w)
{
	struct zkw__node *p = &w->node[0], *t = &w->node[1];
	char target[ZKW_POINTER_MAX];
	const char *why;

	if (zkw_pointer_parse(p->data, p->len, target, sizeof target, &why) < 0) {
		w->pointer_why = why;
		t->path[0] = '\0'; /* events of the old target are now ignored */
		t->status = ZKW__NODE_UNKNOWN;
		return;
	}
	w->pointer_why = NULL;
	if (strcmp(target, t->path) == 0)
		return; /* same target: its own watch keeps it current */
	if (node_set_path(t, target) < 0) {
		w->pointer_why = "out of memory";
		t->path[0] = '\0';
		return;
	}
	zkw__session_log(w->session, ZKW_LOG_INFO, "%s now points at %s", p->path, target);
	t->status = ZKW__NODE_UNKNOWN;
	node_get(t);
}

static void node_store(struct zkw__node *n, const char *value, int value_len, const struct Stat *stat)
{
	/* Null data (value_len -1, a wipe) is empty content. */
	size_t len = value && value_len > 0 ? (size_t)value_len : 0;

	if (zkw__watch_buf_set(&n->data, &n->cap, &n->len, value, len) < 0) {
		n->status = ZKW__NODE_FAILED;
		n->rc = ZSYSTEMERROR;
		return;
	}
	n->status = ZKW__NODE_OK;
	n->version = stat ? stat->version : 0;
	n->mzxid = stat ? stat->mzxid : 0;
}

/* Common prologue of completions: true when this answer is the newest for
 * its node and the session is live (then the caller acts on it). */
static bool node_answer_current(struct zkw__node *n)
{
	struct zkw_session *s = n->watch->session;

	if (n->outstanding == 0)
		return false; /* answer of a torn-down handle */
	n->outstanding--;
	return n->outstanding == 0 && s->zh && !s->closing;
}

static void data_done(int rc, const char *value, int value_len, const struct Stat *stat, const void *ctx)
{
	struct zkw__node *n = (struct zkw__node *)ctx;
	struct zkw_watch *w = n->watch;
	bool current;

	pthread_mutex_lock(&w->session->lock);
	current = node_answer_current(n);
	if (!watch_active(w)) {
		watch_settle(w);
		goto out;
	}
	if (!current)
		goto out;
	n->rc = rc;
	if (rc == ZOK) {
		node_store(n, value, value_len, stat);
		if (n == &w->node[0] && w->opt.pointer && n->status == ZKW__NODE_OK)
			follow_pointer(w);
	} else if (rc == ZNONODE) {
		n->status = ZKW__NODE_MISSING;
		if (n == &w->node[0] && w->ensure_pending) {
			w->ensure_pending = false;
			node_ensure(n);
		} else {
			node_exists(n); /* watch for its creation */
		}
	} else if (rc == ZNOAUTH) {
		n->status = ZKW__NODE_NOAUTH;
		node_exists(n); /* exists needs no READ: still notice changes */
	} else {
		n->status = rc_is_connection(rc) ? ZKW__NODE_DISCONNECTED : ZKW__NODE_FAILED;
	}
	if (n == &w->node[0] && (rc == ZOK || rc == ZNOAUTH))
		w->ensure_pending = false; /* ensure acts at the first read only */
	zkw__watch_evaluate(w);
out:
	pthread_mutex_unlock(&w->session->lock);
}

static void exists_done(int rc, const struct Stat *stat, const void *ctx)
{
	struct zkw__node *n = (struct zkw__node *)ctx;
	struct zkw_watch *w = n->watch;
	bool current;

	(void)stat;
	pthread_mutex_lock(&w->session->lock);
	current = node_answer_current(n);
	if (!watch_active(w)) {
		watch_settle(w);
		goto out;
	}
	if (!current)
		goto out;
	if (rc == ZOK) {
		/* Created between our get and this exists: read it now. When not
		 * authorised, the data watch exists set is all we wanted. */
		if (n->status != ZKW__NODE_NOAUTH)
			node_get(n);
	} else if (rc == ZNONODE) {
		n->status = ZKW__NODE_MISSING;
	} else {
		n->status = rc_is_connection(rc) ? ZKW__NODE_DISCONNECTED : ZKW__NODE_FAILED;
		n->rc = rc;
	}
	zkw__watch_evaluate(w);
out:
	pthread_mutex_unlock(&w->session->lock);
}

static void node_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
	struct zkw__node *n = ctx;
	struct zkw_session *s = n->watch->session;

	(void)state;
	/* Session events reach every registered watcher; the session's own
	 * watcher handles them. Child and not-watching events are not ours. */
	if (type != ZOO_CHANGED_EVENT && type != ZOO_CREATED_EVENT && type != ZOO_DELETED_EVENT)
		return;
	pthread_mutex_lock(&s->lock);
	zkw__session_count(s, ZKW_COUNT_ZK_EVENT);
	/* A removed watch, a stale handle, or a watcher left on a previous
	 * pointer target (or by a previous life of a recycled struct: when the
	 * path is the same, the re-read is harmless). */
	if (watch_active(n->watch) && zh == s->zh && !s->closing && path && n->path[0] &&
	    strcmp(path, n->path) == 0)
		node_get(n);
	pthread_mutex_unlock(&s->lock);
}

/* ------------------------------------------------------------ evaluation */

static void set_error(char *dst, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(char *dst, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(dst, ZKW_ERROR_MAX, fmt, ap);
	va_end(ap);
}

/* The error a non-OK node gives, or false when the node is OK. */
static bool node_error(const struct zkw__node *n, char *err)
{
	switch (n->status) {
	case ZKW__NODE_OK: return false;
	case ZKW__NODE_MISSING: set_error(err, ZKW_ERR_NO_NODE ": %s", n->path); break;
	case ZKW__NODE_NOAUTH:
		set_error(err, ZKW_ERR_NO_AUTH ": %s (ZNOAUTH: no READ permission)", n->path);
		break;
	default: set_error(err, ZKW_ERR_NO_NODE ": %s (%s)", n->path, zerror(n->rc)); break;
	}
	return true;
}

static void watch_publish(struct zkw_watch *w)
{
	/* Removed: the caller may have freed ctx. */
	if (!watch_active(w))
		return;
	w->st.content = w->content ? w->content : ""; /* never NULL, even empty */
	w->published = true;
	w->force_publish = false;
	if (w->opt.on_state)
		w->opt.on_state(w->opt.ctx, &w->st);
}

/* Move the published state to (valid, connected, error); call on_state when
 * anything a reader can see changed (or a confirmation is due: then, with
 * nothing changed, the call is confirm_only). */
static void watch_transition(struct zkw_watch *w, bool valid, bool connected, const char *error, bool changed)
{
	changed |= !w->published || w->st.valid != valid || w->st.connected != connected ||
	           strcmp(w->error, error) != 0;
	w->st.valid = valid;
	w->st.connected = connected;
	if (w->error != error)
		snprintf(w->error, sizeof w->error, "%s", error);
	if (changed || w->force_publish) {
		w->st.confirm_only = !changed;
		watch_publish(w);
	}
}

/* Adopt a valid content node's bytes (data, len: the node's, or what its
 * manifest's chunks hold) and stat. true when something changed. */
static bool take_content(struct zkw_watch *w, const struct zkw__node *c, const void *data, size_t len)
{
	bool changed = false;

	/* Serial 0 means "no content yet": the first content, even empty, is news. */
	if (w->st.content_serial == 0 || len != w->st.len || (len && memcmp(data, w->content, len) != 0)) {
		if (zkw__watch_buf_set(&w->content, &w->content_cap, &w->st.len, data, len) < 0)
			return false; /* keep the old content; the next read retries */
		w->st.content_serial++;
		changed = true;
	}
	changed |= w->st.version != c->version || w->st.mzxid != c->mzxid;
	w->st.version = c->version;
	w->st.mzxid = c->mzxid;
	return changed;
}

static bool watch_has_node(const struct zkw_watch *w, enum zkw__node_status st)
{
	return w->node[0].status == st || (w->opt.pointer && w->node[1].path[0] && w->node[1].status == st);
}

void zkw__watch_evaluate(struct zkw_watch *w)
{
	struct zkw_session *s = w->session;
	const struct zkw__node *c = &w->node[0];
	char err[ZKW_ERROR_MAX] = "";
	bool changed = false;

	if (!s->connected || watch_has_node(w, ZKW__NODE_DISCONNECTED)) {
		w->force_publish = false; /* nothing was confirmed */
		watch_transition(w, false, false, s->conn_error, false);
		return;
	}
	/* Wait for every answer in flight: publishing in between would show a
	 * blip (a pointer switch half done, a reconnect half re-read). */
	if (w->node[0].outstanding || w->node[1].outstanding || c->status == ZKW__NODE_UNKNOWN)
		return;
	if (w->opt.bundle && zkw__bundle_error(w, err))
		goto done;
	if (node_error(c, err))
		goto done;
	if (w->opt.pointer) {
		if (w->pointer_why) {
			set_error(err, ZKW_ERR_POINTER ": %s in %s", w->pointer_why, c->path);
			goto done;
		}
		c = &w->node[1];
		if (c->status == ZKW__NODE_UNKNOWN)
			return;
		if (strcmp(w->pointer, c->path) != 0) {
			snprintf(w->pointer, sizeof w->pointer, "%s", c->path);
			changed = true;
		}
		if (node_error(c, err))
			goto done;
	}
	if (zkw__chunks_is_manifest(c->data, c->len)) {
		const void *data = NULL;
		size_t len = 0;
		int r = zkw__chunks_resolve(w, c, err, &data, &len);

		(void)data; /* the assembly, which zkw__chunks_take hands over */
		(void)len;

		if (r == 0)
			return; /* its chunks are being read: evaluated again when they are in */
		if (r > 0)
			changed |= zkw__chunks_take(w, c);
		goto done;
	}
	if (c->len > w->max_len) {
		set_error(err, ZKW_ERR_TOO_LARGE ": %s holds %zu bytes, the limit is %zu bytes", c->path,
		          c->len, w->max_len);
		goto done;
	}
	changed |= take_content(w, c, c->data, c->len);
done:
	w->st.confirmed_ns = zkw_clock_ns(CLOCK_REALTIME);
	watch_transition(w, err[0] == '\0', true, err, changed);
}

/* ----------------------------------------------------- session-level hooks */

void zkw__watch_read_all(struct zkw_watch *w)
{
	node_get(&w->node[0]);
	if (w->opt.pointer)
		node_get(&w->node[1]);
}

/* The handle is gone (all its callbacks have run or never will). */
void zkw__watch_reset_handle(struct zkw_watch *w)
{
	w->node[0].outstanding = 0;
	w->node[1].outstanding = 0;
	w->reconcile_waiting = 0;
	w->creates = 0;
	zkw__chunks_reset_handle(w);
	zkw__bundle_reset_handle(w);
}

static void reconcile_done(int rc, const struct Stat *stat, const void *ctx)
{
	struct zkw__node *n = (struct zkw__node *)ctx;
	struct zkw_watch *w = n->watch;
	bool same;

	pthread_mutex_lock(&w->session->lock);
	if (!watch_active(w)) {
		node_answer_current(n);
		if (w->reconcile_waiting)
			w->reconcile_waiting--;
		watch_settle(w);
		goto unlock;
	}
	if (!node_answer_current(n))
		goto out; /* a newer read is in flight: it confirms instead */
	same = (rc == ZOK && n->status == ZKW__NODE_OK && stat->mzxid == n->mzxid &&
	        stat->version == n->version) ||
	       (rc == ZNONODE && n->status == ZKW__NODE_MISSING);
	if (!same && !rc_is_connection(rc)) {
		/* OK or MISSING and different: a watch was missed. Otherwise the
		 * node was in error (e.g. ZNOAUTH: an ACL change fires no watch)
		 * and the re-read is the retry. */
		if (n->status == ZKW__NODE_OK || n->status == ZKW__NODE_MISSING) {
			zkw__session_log(w->session, ZKW_LOG_WARN,
			                 "reconcile: %s changed unnoticed, re-reading", n->path);
			zkw__session_count(w->session, ZKW_COUNT_REPAIR);
		}
		node_get(n);
	}
out:
	/* Answers of a handle being torn down (close, expiry) confirm nothing. */
	if (!w->session->zh || w->session->closing)
		goto unlock;
	if (w->reconcile_waiting && --w->reconcile_waiting == 0) {
		w->force_publish = true; /* refreshes confirmed_ns for the readers */
		zkw__watch_evaluate(w);
	}
unlock:
	pthread_mutex_unlock(&w->session->lock);
}

static unsigned node_reconcile(struct zkw__node *n)
{
	struct zkw_watch *w = n->watch;
	struct zkw_session *s = w->session;

	if (!n->path[0] || zoo_aexists(s->zh, n->path, 0, reconcile_done, n) != ZOK)
		return 0;
	n->outstanding++;
	w->reconcile_waiting++;
	zkw__session_count(s, ZKW_COUNT_RECONCILE);
	if (s->rc_hook)
		s->rc_hook(s->rc_hook_ctx, n->path);
	return 1;
}

/* A cheap check of every node (contract 11). Skipped while a read is in
 * flight: its answer is a confirmation already. */
unsigned zkw__watch_reconcile(struct zkw_watch *w)
{
	unsigned sent;

	if (w->opt.bundle)
		return zkw__bundle_reconcile(w);
	if (w->reconcile_waiting || w->node[0].outstanding || w->node[1].outstanding)
		return 0;
	sent = node_reconcile(&w->node[0]);
	if (w->opt.pointer)
		sent += node_reconcile(&w->node[1]);
	return sent;
}

unsigned zkw__watch_reconcile_cost(const struct zkw_watch *w)
{
	if (w->opt.bundle)
		return zkw__bundle_reconcile_cost(w);
	return 1u + (w->opt.pointer && w->node[1].path[0]);
}

/* ------------------------------------------------------------- life cycle */

int zkw__watch_init(struct zkw_watch *w, const char *path, const zkw_watch_options *o)
{
	/* session, prev, next, life and node[].watch belong to session.c; the
	 * path buffers of a recycled struct are reused. */
	if (node_set_path(&w->node[0], path) < 0 || node_set_path(&w->node[1], "") < 0)
		return -ENOMEM;
	w->opt = o ? *o : (zkw_watch_options){0};
	w->max_len = w->opt.max_len ? w->opt.max_len : SIZE_MAX;
	w->ensure_pending = w->opt.ensure;
	w->pointer_why = NULL;
	for (int i = 0; i < 2; i++) {
		struct zkw__node *n = &w->node[i];

		n->status = ZKW__NODE_UNKNOWN;
		n->rc = 0;
		n->outstanding = 0;
		n->len = 0;
		n->version = 0;
		n->mzxid = 0;
	}
	memset(&w->st, 0, sizeof w->st);
	w->published = false;
	w->pointer[0] = '\0';
	snprintf(w->error, sizeof w->error, "%s", ZKW_ERR_CONNECTING);
	w->st.pointer = w->pointer;
	w->st.error = w->error;
	w->reconcile_waiting = 0;
	w->force_publish = false;
	w->creates = 0;
	return 0;
}

bool zkw__watch_idle(const struct zkw_watch *w)
{
	return !w->node[0].outstanding && !w->node[1].outstanding && !w->creates && zkw__chunks_idle(w) &&
	       zkw__bundle_idle(w);
}

void zkw__watch_retire(struct zkw_watch *w)
{
	zhandle_t *zh = w->session->zh;

	for (int i = 0; i < 2; i++) {
		struct zkw__node *n = &w->node[i];

		/* Our watchers on the nodes' current paths, dropped locally so
		 * the client does not keep (and re-arm after a reconnect) them
		 * for nobody. Watchers left on earlier pointer targets, or whose
		 * event is already queued, stay: node_watcher ignores them. Local
		 * removal never waits for the server. */
		if (zh && n->path && n->path[0])
			(void)zoo_remove_watches(zh, n->path, ZWATCHTYPE_ANY, node_watcher, n, 1);
		free(n->data);
		n->data = NULL;
		n->len = n->cap = 0;
	}
	free(w->content);
	w->content = NULL;
	w->content_cap = 0;
	w->st.len = 0;
	zkw__chunks_free(w);
	zkw__bundle_retire(w);
}

void zkw__watch_ensure(struct zkw_watch *w)
{
	struct zkw__node *n = &w->node[0];

	w->opt.ensure = true;
	if (n->status == ZKW__NODE_OK || n->status == ZKW__NODE_NOAUTH)
		return; /* it exists */
	if (n->status == ZKW__NODE_MISSING && w->session->connected) {
		w->ensure_pending = false;
		node_ensure(n);
		return;
	}
	/* Not known yet (a read in flight, disconnected, an error): the next
	 * read that finds it missing creates it, as at a first read. */
	w->ensure_pending = true;
}

void zkw__watch_free(struct zkw_watch *w)
{
	for (int i = 0; i < 2; i++) {
		free(w->node[i].path);
		free(w->node[i].data);
	}
	free(w->content);
	zkw__chunks_free(w);
	zkw__bundle_free(w);
	free(w);
}

int zkw__watch_forget_zk_watches(struct zkw_watch *w)
{
	struct zkw_session *s = w->session;
	zhandle_t *zh;
	int rc = ZOK;

	pthread_mutex_lock(&s->lock);
	zh = s->zh;
	pthread_mutex_unlock(&s->lock);
	if (!zh)
		return -ENOTCONN;
	for (int i = 0; i < 2 && rc == ZOK; i++) {
		if (w->node[i].path && w->node[i].path[0])
			rc = zoo_remove_all_watches(zh, w->node[i].path, ZWATCHTYPE_ANY, 1);
	}
	return rc == ZOK ? 0 : -EIO;
}
