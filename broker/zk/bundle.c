/* SPDX-License-Identifier: Apache-2.0 */
/* bundle.c - a watch in bundle mode: a znode's children as one snapshot.
 *
 * The watched node P is a directory: its children (one level, names and
 * data) are published together, encoded as a bundle (zkw/bundle.h), and
 * every published bundle is a consistent cut - the children as they were
 * at one moment - so a set of changes made in one ZooKeeper multi-op is
 * never seen half-applied (docs/design.md, "Bundle watches").
 *
 * A round: get_children2(P) with a child watch; a get of every child with
 * a data watch; then exists(P) as the confirmation. The round is a cut
 * when, at the confirmation's answer, (1) P's cversion and pzxid are what
 * the listing said (no child added or removed since), and (2) no watch
 * event of P or of a child has come in since the round began. (2) is the
 * child mzxid check, done by the server's ordering: every child was read
 * with a data watch, a change to it after its read fires that watch, and
 * ZooKeeper delivers a client the event of a change before the answer to
 * any later request - the confirmation included. So a child changed after
 * it was read is known by the time the confirmation answers, and a cut
 * that passed both checks holds every child as of the confirmation: the
 * later of two children read across a multi-op cannot come back without
 * the event of the earlier. Otherwise the round starts again.
 *
 * All of it runs with the session lock held (completions and watchers take
 * it), asynchronously, like watch.c. The watcher context of every ZooKeeper
 * watch here is the watch struct itself, which never moves (internal.h);
 * completions carry a small allocated context, freed by the completion
 * (the client calls each exactly once, even for a handle being closed).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zkw/bundle.h>

#include "internal.h"

struct bundle_child {
	char *name;
	size_t name_len;
	void *data;
	size_t len, cap;
	int64_t mzxid;
	int32_t version;
};

struct zkw__bundle {
	uint64_t round;       /* the round in progress (or the last one) */
	uint64_t handle_gen;  /* bumped when a handle is torn down */
	unsigned outstanding; /* requests of the current handle in flight */
	bool in_round;
	bool dirty;     /* an event of P or a child since the round began */
	bool reconcile; /* this round is a reconcile: confirm when unchanged */
	bool disconnected;
	int child_rc; /* a child's read failed (ZNOAUTH, ...): the round's error */
	char child_failed[ZKW_POINTER_MAX];
	int64_t pzxid;
	int32_t cversion;
	struct bundle_child *kids;
	size_t n, cap;
	unsigned retries; /* rounds in a row that found a change */
	bool busy_logged;
};

enum req_kind { REQ_CHILDREN, REQ_CHILD, REQ_CONFIRM };

struct bundle_req {
	struct zkw_watch *w;
	uint64_t round, handle_gen;
	enum req_kind kind;
	size_t index;
};

/* Rounds in a row that find a change before the log says so (once per
 * run of them): a writer that never pauses keeps a bundle from a cut. */
#define BUSY_LOG_ROUNDS 100

static void start_round(struct zkw_watch *w);

static struct zkw__bundle *bundle_of(struct zkw_watch *w)
{
	if (!w->bundle)
		w->bundle = calloc(1, sizeof(*w->bundle));
	return w->bundle;
}

static struct bundle_req *req_new(struct zkw_watch *w, enum req_kind kind, size_t index)
{
	struct bundle_req *r = malloc(sizeof(*r));

	if (r)
		*r = (struct bundle_req){w, w->bundle->round, w->bundle->handle_gen, kind, index};
	return r;
}

/* Common prologue of completions: count the answer; true when it belongs
 * to the round in progress of a live watch (then the caller acts on it). */
static bool answer_current(struct bundle_req *r)
{
	struct zkw_watch *w = r->w;
	struct zkw__bundle *b = w->bundle;

	if (!b)
		return false;
	if (r->handle_gen == b->handle_gen && b->outstanding)
		b->outstanding--;
	if (!zkw__watch_active(w)) {
		zkw__watch_settle(w);
		return false;
	}
	return r->round == b->round && r->handle_gen == b->handle_gen && b->in_round && w->session->zh &&
	       !w->session->closing;
}

static void node_status_from(struct zkw__node *n, int rc)
{
	n->rc = rc;
	n->status = zkw__rc_is_connection(rc) ? ZKW__NODE_DISCONNECTED
	            : rc == ZNONODE            ? ZKW__NODE_MISSING
	            : rc == ZNOAUTH            ? ZKW__NODE_NOAUTH
	                                       : ZKW__NODE_FAILED;
}

/* The round cannot go on (rc: why): the node's status says so, and the
 * evaluation publishes it; answers still in flight are dropped. */
static void round_failed(struct zkw_watch *w, int rc)
{
	w->bundle->in_round = false;
	node_status_from(&w->node[0], rc);
	zkw__watch_evaluate(w);
}

/* Is path P or a child of P? */
static bool ours(const struct zkw_watch *w, const char *path)
{
	const char *p = w->node[0].path;
	size_t n = strlen(p);

	if (!path || strncmp(path, p, n) != 0)
		return false;
	if (path[n] == '\0')
		return true;
	if (n == 1) /* P is "/" */
		return path[1] && !strchr(path + 1, '/');
	return path[n] == '/' && path[n + 1] && !strchr(path + n + 1, '/');
}

static void bundle_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
	struct zkw_watch *w = ctx;
	struct zkw_session *s = w->session;

	(void)state;
	if (type != ZOO_CHANGED_EVENT && type != ZOO_CREATED_EVENT && type != ZOO_DELETED_EVENT &&
	    type != ZOO_CHILD_EVENT)
		return;
	pthread_mutex_lock(&s->lock);
	zkw__session_count(s, ZKW_COUNT_ZK_EVENT);
	/* A stale handle, a removed watch, or a recycled one whose path is
	 * another: ignored (see node_watcher in watch.c). */
	if (zkw__watch_active(w) && w->opt.bundle && zh == s->zh && !s->closing && ours(w, path))
		zkw__bundle_read(w);
	pthread_mutex_unlock(&s->lock);
}

static void child_path(const struct zkw_watch *w, const char *name, char *out, size_t cap)
{
	const char *p = w->node[0].path;

	snprintf(out, cap, "%s/%s", strcmp(p, "/") == 0 ? "" : p, name);
}

/* The order readers search in (zkw/bundle.h). */
static int cmp_child(const void *a, const void *b)
{
	const struct bundle_child *x = a, *y = b;

	return zkw_bundle_name_cmp(x->name, x->name_len, y->name, y->name_len);
}

/* The listing is in: keep the names (sorted as zkw/bundle.h orders them),
 * then read every child and confirm. */
static void children_done(int rc, const struct String_vector *strings, const struct Stat *stat, const void *ctx)
{
	struct bundle_req *r = (struct bundle_req *)ctx;
	struct zkw_watch *w = r->w;
	struct zkw_session *s = w->session;
	struct zkw__bundle *b;
	struct zkw__node *n = &w->node[0];
	char path[ZKW_POINTER_MAX + 8];
	size_t count;

	pthread_mutex_lock(&s->lock);
	if (!answer_current(r))
		goto out;
	b = w->bundle;
	if (rc != ZOK) {
		b->in_round = false;
		node_status_from(n, rc);
		if (rc == ZNONODE && w->ensure_pending) {
			w->ensure_pending = false;
			zkw__node_ensure(n);
		} else if (rc == ZNONODE || rc == ZNOAUTH) {
			zkw__node_exists(n); /* noticed when created, or when allowed */
		}
		zkw__watch_evaluate(w);
		goto out;
	}
	w->ensure_pending = false;
	/* Events that came before this answer are of changes the server made
	 * before it handled the listing (it sends a session's events and
	 * answers in the order it handles them), and the gets sent from here
	 * on see them: they do not spoil this round. A change that fired one
	 * event per child (a multi-op over every child) then costs one round,
	 * not two. */
	b->dirty = false;
	count = strings ? (size_t)strings->count : 0;
	if (count > b->cap) {
		struct bundle_child *k = realloc(b->kids, count * sizeof(*k));

		if (!k) {
			round_failed(w, ZSYSTEMERROR);
			goto out;
		}
		memset(k + b->cap, 0, (count - b->cap) * sizeof(*k));
		b->kids = k;
		b->cap = count;
	}
	for (size_t i = 0; i < b->n; i++) {
		free(b->kids[i].name);
		b->kids[i].name = NULL;
	}
	b->n = 0;
	for (size_t i = 0; i < count; i++) {
		struct bundle_child *k = &b->kids[b->n];

		k->name = strdup(strings->data[i]);
		if (!k->name) {
			round_failed(w, ZSYSTEMERROR);
			goto out;
		}
		k->name_len = strlen(k->name);
		k->len = 0;
		k->mzxid = 0;
		k->version = 0;
		b->n++;
	}
	if (b->n > 1) /* kids is NULL while P never had a child: qsort(NULL, 0) is undefined */
		qsort(b->kids, b->n, sizeof(*b->kids), cmp_child);
	b->pzxid = stat ? stat->pzxid : 0;
	b->cversion = stat ? stat->cversion : 0;
	b->child_rc = ZOK;
	for (size_t i = 0; i < b->n; i++) {
		struct bundle_req *cr = req_new(w, REQ_CHILD, i);
		int zrc;

		child_path(w, b->kids[i].name, path, sizeof(path));
		zrc = cr ? zoo_awget(s->zh, path, bundle_watcher, w, zkw__bundle_child_done, cr) : ZSYSTEMERROR;
		if (zrc != ZOK) {
			free(cr);
			round_failed(w, zrc);
			goto out;
		}
		b->outstanding++;
		zkw__session_count(s, ZKW_COUNT_READ);
	}
	{
		struct bundle_req *cr = req_new(w, REQ_CONFIRM, 0);
		int zrc = cr ? zoo_aexists(s->zh, n->path, 0, zkw__bundle_confirm_done, cr) : ZSYSTEMERROR;

		if (zrc != ZOK) {
			free(cr);
			round_failed(w, zrc);
			goto out;
		}
		b->outstanding++;
	}
out:
	pthread_mutex_unlock(&s->lock);
	free(r);
}

void zkw__bundle_child_done(int rc, const char *value, int value_len, const struct Stat *stat, const void *ctx)
{
	struct bundle_req *r = (struct bundle_req *)ctx;
	struct zkw_watch *w = r->w;
	struct zkw_session *s = w->session;
	struct zkw__bundle *b;
	struct bundle_child *k;

	pthread_mutex_lock(&s->lock);
	if (!answer_current(r))
		goto out;
	b = w->bundle;
	if (r->index >= b->n)
		goto out;
	k = &b->kids[r->index];
	if (rc == ZOK) {
		size_t len = value && value_len > 0 ? (size_t)value_len : 0;

		if (zkw__watch_buf_set(&k->data, &k->cap, &k->len, value, len) < 0) {
			b->child_rc = ZSYSTEMERROR;
			child_path(w, k->name, b->child_failed, sizeof(b->child_failed));
		}
		k->mzxid = stat ? stat->mzxid : 0;
		k->version = stat ? stat->version : 0;
	} else if (rc == ZNONODE) {
		b->dirty = true; /* removed after the listing: the child watch tells too */
	} else if (zkw__rc_is_connection(rc)) {
		b->disconnected = true;
	} else if (b->child_rc == ZOK) {
		b->child_rc = rc;
		child_path(w, k->name, b->child_failed, sizeof(b->child_failed));
	}
out:
	pthread_mutex_unlock(&s->lock);
	free(r);
}

/* Encode the round's children into node[0], which the evaluation reads as
 * the content. 0, or a ZooKeeper-style error code. */
static int encode_cut(struct zkw_watch *w)
{
	struct zkw__bundle *b = w->bundle;
	struct zkw__node *n = &w->node[0];
	zkw_bundle_input *in = b->n ? malloc(b->n * sizeof(*in)) : NULL;
	int64_t mzxid = b->pzxid;
	size_t size;
	int rc;

	if (b->n && !in)
		return ZSYSTEMERROR;
	for (size_t i = 0; i < b->n; i++) {
		in[i] = (zkw_bundle_input){b->kids[i].name, b->kids[i].name_len, b->kids[i].data, b->kids[i].len,
		                           b->kids[i].mzxid, b->kids[i].version};
		if (b->kids[i].mzxid > mzxid)
			mzxid = b->kids[i].mzxid;
	}
	size = zkw_bundle_encoded_size(in, (uint32_t)b->n);
	if (size > n->cap) {
		void *p = realloc(n->data, size);

		if (!p) {
			free(in);
			return ZSYSTEMERROR;
		}
		n->data = p;
		n->cap = size;
	}
	rc = zkw_bundle_encode(n->data, n->cap, in, (uint32_t)b->n, b->pzxid, b->cversion);
	free(in);
	if (rc < 0)
		return ZSYSTEMERROR;
	n->len = size;
	n->status = ZKW__NODE_OK;
	n->rc = ZOK;
	/* The bundle's version is the parent's cversion (it moves when a
	 * child comes or goes); its mzxid the newest change in the cut. */
	n->version = b->cversion;
	n->mzxid = mzxid;
	return ZOK;
}

void zkw__bundle_confirm_done(int rc, const struct Stat *stat, const void *ctx)
{
	struct bundle_req *r = (struct bundle_req *)ctx;
	struct zkw_watch *w = r->w;
	struct zkw_session *s = w->session;
	struct zkw__bundle *b;
	struct zkw__node *n = &w->node[0];
	bool reconcile;

	pthread_mutex_lock(&s->lock);
	if (!answer_current(r))
		goto out;
	b = w->bundle;
	b->in_round = false;
	reconcile = b->reconcile;
	b->reconcile = false;
	if (zkw__rc_is_connection(rc) || b->disconnected) {
		b->disconnected = false;
		node_status_from(n, zkw__rc_is_connection(rc) ? rc : ZCONNECTIONLOSS);
		zkw__watch_evaluate(w);
		goto out;
	}
	if (b->child_rc != ZOK && !b->dirty) {
		/* A child we may not read (or a failure): an error naming it. */
		node_status_from(n, b->child_rc);
		zkw__watch_evaluate(w);
		goto out;
	}
	if (rc != ZOK || b->dirty || !stat || stat->pzxid != b->pzxid || stat->cversion != b->cversion) {
		/* Something changed while we read: not a cut, read again. */
		if (++b->retries >= BUSY_LOG_ROUNDS && !b->busy_logged) {
			b->busy_logged = true;
			zkw__session_log(s, ZKW_LOG_WARN,
			                 "bundle %s: %u rounds in a row found a change while reading; still trying "
			                 "(the last consistent cut stays published)",
			                 n->path, b->retries);
		}
		start_round(w);
		goto out;
	}
	if (b->busy_logged)
		zkw__session_log(s, ZKW_LOG_INFO, "bundle %s: a consistent cut after %u rounds", n->path, b->retries);
	b->retries = 0;
	b->busy_logged = false;
	if (encode_cut(w) != ZOK)
		node_status_from(n, ZSYSTEMERROR);
	if (reconcile)
		w->force_publish = true; /* confirms when nothing changed */
	zkw__watch_evaluate(w);
out:
	pthread_mutex_unlock(&s->lock);
	free(r);
}

static void start_round(struct zkw_watch *w)
{
	struct zkw_session *s = w->session;
	struct zkw__bundle *b = w->bundle;
	struct bundle_req *r;
	int rc;

	b->round++;
	b->dirty = false;
	b->disconnected = false;
	b->child_rc = ZOK;
	r = req_new(w, REQ_CHILDREN, 0);
	rc = r ? zoo_awget_children2(s->zh, w->node[0].path, bundle_watcher, w, children_done, r) : ZSYSTEMERROR;
	if (rc != ZOK) {
		free(r);
		b->reconcile = false;
		zkw__session_log(s, ZKW_LOG_WARN, "zoo_awget_children2 %s: %s", w->node[0].path, zerror(rc));
		round_failed(w, rc);
		return;
	}
	b->in_round = true;
	b->outstanding++;
	zkw__session_count(s, ZKW_COUNT_READ);
}

void zkw__bundle_read(struct zkw_watch *w)
{
	struct zkw_session *s = w->session;
	struct zkw__bundle *b = bundle_of(w);

	if (!b) {
		node_status_from(&w->node[0], ZSYSTEMERROR);
		return;
	}
	if (!s->zh || !s->connected)
		return; /* the reconnection reads everything again */
	if (b->in_round) {
		b->dirty = true; /* the round in progress is not a cut: it reads again */
		return;
	}
	start_round(w);
}

unsigned zkw__bundle_reconcile(struct zkw_watch *w)
{
	struct zkw__bundle *b = bundle_of(w);

	if (!b || b->in_round || w->node[0].outstanding || !w->session->zh)
		return 0;
	b->reconcile = true;
	start_round(w);
	return b->in_round ? (unsigned)b->n + 2 : 0;
}

unsigned zkw__bundle_reconcile_cost(const struct zkw_watch *w)
{
	return (w->bundle ? (unsigned)w->bundle->n : 0) + 2;
}

bool zkw__bundle_error(const struct zkw_watch *w, char *err)
{
	const struct zkw__bundle *b = w->bundle;

	if (!b || w->node[0].status == ZKW__NODE_OK || b->child_rc == ZOK || !b->child_failed[0])
		return false;
	snprintf(err, ZKW_ERROR_MAX, "%s: %.900s (%s)",
	         b->child_rc == ZNOAUTH ? ZKW_ERR_NO_AUTH : ZKW_ERR_NO_NODE, b->child_failed, zerror(b->child_rc));
	return true;
}

void zkw__bundle_reset_handle(struct zkw_watch *w)
{
	struct zkw__bundle *b = w->bundle;

	if (!b)
		return;
	b->handle_gen++;
	b->outstanding = 0;
	b->in_round = false;
	b->reconcile = false;
}

bool zkw__bundle_idle(const struct zkw_watch *w)
{
	return !w->bundle || !w->bundle->outstanding;
}

void zkw__bundle_retire(struct zkw_watch *w)
{
	struct zkw__bundle *b = w->bundle;
	zhandle_t *zh = w->session->zh;
	char path[ZKW_POINTER_MAX + 8];

	if (!b)
		return;
	/* Our watches, dropped locally (see zkw__watch_retire). */
	if (zh && w->node[0].path && w->node[0].path[0]) {
		(void)zoo_remove_watches(zh, w->node[0].path, ZWATCHTYPE_ANY, bundle_watcher, w, 1);
		for (size_t i = 0; i < b->n; i++) {
			child_path(w, b->kids[i].name, path, sizeof(path));
			(void)zoo_remove_watches(zh, path, ZWATCHTYPE_ANY, bundle_watcher, w, 1);
		}
	}
	zkw__bundle_free(w);
}

void zkw__bundle_free(struct zkw_watch *w)
{
	struct zkw__bundle *b = w->bundle;

	if (!b)
		return;
	for (size_t i = 0; i < b->cap; i++) {
		free(b->kids[i].name);
		free(b->kids[i].data);
	}
	free(b->kids);
	free(b);
	w->bundle = NULL;
}
