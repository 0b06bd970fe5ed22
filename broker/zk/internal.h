/* SPDX-License-Identifier: Apache-2.0 */
/* internal.h - private structures of the session/watch layer.
 *
 * Shared by session.c (session, control thread, ZooKeeper handle), watch.c
 * (per-watch reads, evaluation, reconcile) and watcher.c (the seed's
 * zkw_watcher). Everything in a zkw_session and its watches is protected by
 * zkw_session.lock unless a field says otherwise; see the thread map at the
 * top of session.c.
 *
 * Naming: zkw_<module>_* is the public API (zkw/watcher.h); zkw__<module>_*
 * is shared between the .c files here and declared below; everything else
 * is static to its file, plain snake_case. Errors: zkw/common.h.
 */
#ifndef ZKW_ZK_INTERNAL_H
#define ZKW_ZK_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zookeeper/zookeeper.h>

#include <zkw/watcher.h>

/* Chunked content (chunks.c): the largest content a manifest may describe
 * (the segments' ZKW_CAPACITY_MAX, which this layer does not see) and the
 * largest chunk (ZooKeeper's own limit is about 1 MiB). */
#define ZKW_CAPACITY_MAX_BYTES (256u * 1024u * 1024u)
#define ZKW_CHUNK_SIZE_MAX     1048576u

struct zkw__chunks;
struct zkw__bundle;

/* What the last read told us about one node. */
enum zkw__node_status {
	ZKW__NODE_UNKNOWN = 0, /* never read (or target path just switched) */
	ZKW__NODE_OK,          /* data and stat below are current */
	ZKW__NODE_MISSING,     /* ZNONODE; an exists watch waits for creation */
	ZKW__NODE_NOAUTH,      /* ZNOAUTH */
	ZKW__NODE_FAILED,      /* any other error (rc says which) */
	ZKW__NODE_DISCONNECTED /* ZCONNECTIONLOSS / ZOPERATIONTIMEOUT */
};

/* One watched znode: the watch's path, or (pointer mode) its target.
 * Its address is the ZooKeeper watcher context and completion context, so
 * it must stay put for the session's lifetime: a removed watch is never
 * freed, only recycled (see struct zkw_watch), and every struct is freed
 * after the last ZooKeeper handle is closed. watch never changes. */
struct zkw__node {
	struct zkw_watch *watch;
	char *path; /* "" = unused (no target yet) */
	size_t path_cap;
	enum zkw__node_status status;
	int rc; /* ZooKeeper rc behind a FAILED status */
	/* Requests in flight on the current handle. ZooKeeper answers one
	 * session's requests in order, so a completion is the newest one for
	 * this node exactly when this drops to 0: older answers (a previous
	 * target, a value already superseded) are ignored without any per-
	 * request allocation. Reset when a handle is torn down. */
	unsigned outstanding;
	void *data; /* last data read (status OK) */
	size_t len, cap;
	int32_t version;
	int64_t mzxid;
};

/* Where a watch struct is in its life. A handle may call into a removed
 * watch for as long as it lives: answers to requests in flight (counted,
 * below) and ZooKeeper watchers registered with its nodes (not counted: a
 * watcher stays registered until its node changes, and one left on an old
 * pointer target cannot even be named). So zkw_watch_remove never frees:
 *
 *   ACTIVE --remove--> DRAINING --last answer in--> SPARE --watch--> ACTIVE
 *
 * An inactive watch ignores every answer and event (no request, no
 * on_state); once nothing of it is in flight it becomes a spare, which the
 * next zkw_session_watch recycles. A stale watcher that fires later on a
 * recycled struct only re-reads when its path is the new watch's path: a
 * harmless re-read, since content is compared. Memory is bounded by the
 * peak number of watches; zkw_session_close frees them all. */
enum zkw__watch_life { ZKW__WATCH_ACTIVE, ZKW__WATCH_DRAINING, ZKW__WATCH_SPARE };

struct zkw__watch_list {
	struct zkw_watch *head, *tail;
	unsigned count;
};

struct zkw_watch {
	struct zkw_session *session;   /* never changes, even when recycled */
	struct zkw_watch *prev, *next; /* in the list of its life stage */
	enum zkw__watch_life life;
	zkw_watch_options opt;
	size_t max_len;           /* opt.max_len, 0 mapped to SIZE_MAX */
	bool ensure_pending;      /* ensure runs once, at the first missing read */
	struct zkw__node node[2]; /* [0] path, [1] pointer target */
	const char *pointer_why;  /* NULL = pointer parsed, else the reason */

	/* Published state: what on_state saw last (published: at all). It is
	 * handed to on_state as is; st.content is set from content at each
	 * call (it moves on realloc), st.len is content's length, st.pointer
	 * and st.error point at the arrays below. */
	zkw_watch_state st;
	bool published;
	void *content;
	size_t content_cap;
	char pointer[ZKW_POINTER_MAX];
	char error[ZKW_ERROR_MAX];

	/* Reconcile round in progress. */
	unsigned reconcile_waiting;
	bool force_publish; /* next evaluation calls on_state even if equal */
	/* ensure's creates in flight (create_done's context is the watch). A
	 * watch is idle - recyclable once removed - when this and both nodes'
	 * outstanding (which count reconcile requests too) are 0, and no chunk
	 * is being read. */
	unsigned creates;
	/* The content node holds a manifest: its chunks (chunks.c); NULL
	 * until the first manifest. */
	struct zkw__chunks *chunks;
	/* Bundle mode (bundle.c): the rounds and the last cut's children;
	 * node[0] holds the encoded cut as its data. NULL until the first read. */
	struct zkw__bundle *bundle;
};

struct zkw_session {
	char *hosts;
	zkw_session_options opt;
	pthread_mutex_t lock;
	pthread_cond_t control_cond; /* wakes the control thread */
	pthread_cond_t state_cond;   /* connected / init failure / ping answers */
	pthread_t control;

	zhandle_t *zh;     /* current handle, NULL between handles */
	bool initializing; /* zookeeper_init running on the control thread */
	bool connected;
	bool need_handle; /* control thread must (re)create the handle */
	bool closing;
	/* zkw_session_open is waiting for the first connection (valid_init):
	 * its caller reports a failure, the session does not log it too.
	 * Read without the lock by the client's log trampoline (atomics). */
	bool opening;
	bool was_connected;             /* connected once: the next connection is a reconnect (counted) */
	int init_errno;                 /* last zookeeper_init failure, 0 = none */
	char conn_error[ZKW_ERROR_MAX]; /* the error of a disconnected watch */
	unsigned backoff_ms;            /* retry of a failed zookeeper_init */

	/* Recovery (session.c, control_give_up): CLOCK_MONOTONIC ms. */
	int64_t down_since;    /* no session connected since; 0 = connected */
	int64_t give_up_at;    /* close the current handle then unless connected; 0 = no deadline */
	int timeout_ms;        /* the last negotiated session timeout, else the requested one */
	unsigned reconnect_ms; /* nominal wait before the next new handle; 0 = none since connected */

	struct zkw__watch_list watches; /* ACTIVE, in the order they were added */
	struct zkw__watch_list draining, spare;

	/* Reconcile rotation (session.c, reconcile_step): a round walks the
	 * watches once, one request every round_ms / planned ms. */
	struct zkw_watch *rc_cursor; /* next watch of the round; NULL = between rounds */
	int64_t rc_round_start;      /* CLOCK_MONOTONIC ms */
	int64_t rc_round_ms;         /* this round's length */
	int64_t rc_next_round;       /* when the next round starts (cursor NULL) */
	unsigned rc_planned;         /* requests the round was planned for (>= 1) */
	unsigned rc_sent;            /* requests sent in this round */
	bool rc_stretch_logged;
	/* Test hook: called for each reconcile request sent (lock held). */
	void (*rc_hook)(void *ctx, const char *path);
	void *rc_hook_ctx;

	/* Ping: requests and answers counted per handle (answers come in order). */
	uint64_t ping_sent, ping_answered;
	int ping_rc;

	uint64_t rng;                 /* reconcile jitter */
	struct zkw_session *log_next; /* registry of sessions with a log sink */

	/* Authentication and ACLs (session.c, "credentials"): copies of what
	 * zkw_session_options gave (opt.credentials, opt.acl and
	 * opt.credentials_from point at them), each in one allocation. */
	void *cred_block; /* the credentials and their strings; zeroed when freed */
	size_t cred_block_len;
	void *acl_block;       /* acl's entries and strings */
	struct ACL_vector acl; /* what ensure creates nodes with */
	bool acl_open_default; /* no credentials and no ACL chosen: warned once (watch.c) */
	bool acl_open_warned;
	/* Per handle: a handle is connected (session_connected) only when the
	 * client said ZOO_CONNECTED_STATE and ZooKeeper has answered the
	 * credentials, so no read goes out before them whatever the order. */
	bool handshake;         /* ZOO_CONNECTED_STATE seen, not lost since */
	bool auth_answered;     /* the credentials' answer is in (true without credentials) */
	bool auth_refused;      /* ZOO_AUTH_FAILED_STATE: the control thread backs off */
	unsigned auth_refusals; /* refusals since the last connection (logged at the first) */
	bool open_waiting;      /* zkw_session_open waits (valid_init): it reports a refusal */
	/* Test hook (zkw__session_set_auth_hook). */
	void (*auth_hook)(void *ctx, zhandle_t *zh);
	void *auth_hook_ctx;
};

/* Tell the caller's metrics hook of one event (zkw_session_options.count). */
static inline void zkw__session_count(struct zkw_session *s, zkw_session_count what)
{
	if (s->opt.count)
		s->opt.count(s->opt.count_ctx, what);
}

/* watch.c: called with session->lock held. */
bool zkw__watch_active(const struct zkw_watch *w);
/* An answer for a removed watch came in: recycle it once idle. */
void zkw__watch_settle(struct zkw_watch *w);
bool zkw__rc_is_connection(int rc);

/* watch.c: a get (data watch) and an exists (existence watch) of n, and
 * ensure's creates. */
void zkw__node_exists(struct zkw__node *n);
void zkw__node_ensure(struct zkw__node *n);

/* bundle.c, lock held. Read the bundle (a new round, or the round in
 * progress marked to read again). */
void zkw__bundle_read(struct zkw_watch *w);
/* Completions (exported only for the prototypes' sake). */
void zkw__bundle_child_done(int rc, const char *value, int value_len, const struct Stat *stat, const void *ctx);
void zkw__bundle_confirm_done(int rc, const struct Stat *stat, const void *ctx);
unsigned zkw__bundle_reconcile(struct zkw_watch *w);
unsigned zkw__bundle_reconcile_cost(const struct zkw_watch *w);
/* A child the last round could not read: true with the error in err. */
bool zkw__bundle_error(const struct zkw_watch *w, char *err);
void zkw__bundle_reset_handle(struct zkw_watch *w);
bool zkw__bundle_idle(const struct zkw_watch *w);
void zkw__bundle_retire(struct zkw_watch *w);
void zkw__bundle_free(struct zkw_watch *w);

/* chunks.c, lock held. Is this content a manifest ("zkw-chunked ")? */
bool zkw__chunks_is_manifest(const void *data, size_t len);
/* The content the manifest in node c stands for: 1 with *data and *len
 * (valid until the next call), 0 while its chunks are being read (the
 * evaluation runs again when they are in), -1 with the reason in err
 * (ZKW_ERROR_MAX bytes). */
int zkw__chunks_resolve(struct zkw_watch *w, const struct zkw__node *c, char *err, const void **data, size_t *len);
/* After a resolve that returned 1: make it the watch's content (the
 * assembly buffer is handed over, not copied; a change is told by the
 * hashes when it can be) and take c's version and mzxid. true when
 * anything changed. */
bool zkw__chunks_take(struct zkw_watch *w, const struct zkw__node *c);
void zkw__chunks_reset_handle(struct zkw_watch *w);
bool zkw__chunks_idle(const struct zkw_watch *w);
void zkw__chunks_free(struct zkw_watch *w);

void zkw__watch_read_all(struct zkw_watch *w);
void zkw__watch_evaluate(struct zkw_watch *w);
/* Send the reconcile requests of w; returns how many (0: skipped). */
unsigned zkw__watch_reconcile(struct zkw_watch *w);
/* What zkw__watch_reconcile would send: 1, or 2 with a pointer target. */
unsigned zkw__watch_reconcile_cost(const struct zkw_watch *w);
void zkw__watch_reset_handle(struct zkw_watch *w);
/* Set w up as a new watch of path (fresh from calloc, or a spare being
 * recycled: its buffers are reused). 0 or -ENOMEM. */
int zkw__watch_init(struct zkw_watch *w, const char *path, const zkw_watch_options *o);
/* Nothing of w in flight on the current handle. */
bool zkw__watch_idle(const struct zkw_watch *w);
/* An inactive watch has drained: drop what the handle still holds for it
 * (its ZooKeeper watchers, locally) and its content buffers. */
void zkw__watch_retire(struct zkw_watch *w);
void zkw__watch_ensure(struct zkw_watch *w);
void zkw__watch_free(struct zkw_watch *w);
/* Store n bytes into a growable buffer (*buf of *cap bytes, *len used).
 * 0, or -ENOMEM (buffer kept). No lock needed: it touches only its args. */
int zkw__watch_buf_set(void **buf, size_t *cap, size_t *len, const void *src, size_t n);

/* session.c */
void zkw__session_log(struct zkw_session *s, int level, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
/* An inactive watch just became idle: retire it to the spares. Lock held. */
void zkw__session_watch_drained(struct zkw_watch *w);

/* Test hooks (session.c). The watch structs of each life stage. */
void zkw__session_watch_counts(struct zkw_session *s, unsigned *active, unsigned *draining, unsigned *spare);
/* Call hook(ctx, path) for every reconcile request sent, on the control
 * thread with the session lock held (hook NULL: off). */
void zkw__session_set_reconcile_hook(struct zkw_session *s, void (*hook)(void *ctx, const char *path),
                                     void *ctx);

/* Test hook: call hook(ctx, zh) for every new handle, on the control
 * thread without the session lock, after zookeeper_init2 and before the
 * credentials are handed to it - a test can let the handshake finish
 * first, the order the session must survive (hook NULL: off). */
void zkw__session_set_auth_hook(struct zkw_session *s, void (*hook)(void *ctx, zhandle_t *zh), void *ctx);

/* Test hook: drop our ZooKeeper watches on the watch's nodes locally (the
 * server still fires, the client has nobody to tell) - a missed watch, for
 * the reconcile test. 0, -ENOTCONN (no handle) or -EIO (ZooKeeper refused). */
int zkw__watch_forget_zk_watches(struct zkw_watch *w);

#endif /* ZKW_ZK_INTERNAL_H */
