/* SPDX-License-Identifier: Apache-2.0 */
/* watcher.h - watch a ZooKeeper node (or a pointer node and its target).
 *
 * Two layers, both free of any shared-memory knowledge:
 *
 *  1. zkw_session / zkw_watch: one ZooKeeper session serving any number of
 *     watches, each reporting its whole state through an on_state callback.
 *     This is what zkw-broker uses (it copies each state into its segment).
 *
 *         zkw_session *s;
 *         char why[256];
 *         if (zkw_session_open(&s, "127.0.0.1:2181", NULL, why, sizeof why) < 0)
 *                 fail(why);
 *         zkw_watch_options o = { .on_state = publish, .ctx = seg };
 *         zkw_watch *w;
 *         int rc = zkw_session_watch(s, "/tmp/myconfig", &o, &w);     // 0 or -errno
 *         ...
 *         zkw_watch_remove(w);           // optional: no callback of w after this
 *         zkw_session_close(s);          // no callback after this returns
 *
 *  2. zkw_watcher: the seed's ZookeeperWatcher class in C (one path, three
 *     handlers run on a dispatch thread of its own, polling getters).
 *
 * The watch semantics (validity, circuit breaker, exactly-once delivery,
 * reconnection, pointer mode, reconcile) are the contract of docs/design.md ("The watch contract").
 * Error strings start with the seed's texts, ZKW_ERR_* below, so a caller
 * may match them with strncmp; details follow after ": ". Return values
 * follow the convention of zkw/common.h: 0 or -errno, results through
 * out-parameters, the reason in words in the caller's errbuf.
 */
#ifndef ZKW_WATCHER_H
#define ZKW_WATCHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <zkw/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Seed-compatible error texts (prefixes of watch errors). */
#define ZKW_ERR_CONNECTION "Connection interrupted with Zookeeper, re-establishing"
#define ZKW_ERR_NO_NODE    "Invalid get on file path"
#define ZKW_ERR_POINTER    "Invalid pointer path"
#define ZKW_ERR_TOO_LARGE  "Content too large"
#define ZKW_ERR_NO_AUTH    "Not authorized to read file path"
#define ZKW_ERR_CONNECTING "Connecting to Zookeeper"
/* Content stored in chunks (a manifest, docs/design.md "Chunked content")
 * that cannot be read whole: the rest names the manifest and the chunk. */
#define ZKW_ERR_CHUNKS "Chunked content unavailable"

/* Defaults of zkw_session_options (what 0 means). */
#define ZKW_SESSION_TIMEOUT_MS_DEFAULT 10000 /* asked of the server, which clamps it */
#define ZKW_INIT_TIMEOUT_MS_DEFAULT    5000  /* valid_init: wait this long for a server */
#define ZKW_RECONCILE_S_DEFAULT        60    /* from zkw_session_options_init */
#define ZKW_RECONCILE_RATE_DEFAULT     50    /* reconcile exists requests a second */
#define ZKW_RECONNECT_MAX_MS_DEFAULT   60000 /* longest wait between new sessions */

/* Log levels of zkw_session_options.log (same order as syslog's idea). */
enum { ZKW_LOG_ERROR = 1, ZKW_LOG_WARN = 2, ZKW_LOG_INFO = 3, ZKW_LOG_DEBUG = 4 };

/* Permissions of an ACL entry: ZooKeeper's own bits (ZOO_PERM_*). */
#define ZKW_PERM_READ   0x01u /* r */
#define ZKW_PERM_WRITE  0x02u /* w */
#define ZKW_PERM_CREATE 0x04u /* c */
#define ZKW_PERM_DELETE 0x08u /* d */
#define ZKW_PERM_ADMIN  0x10u /* a */
#define ZKW_PERM_ALL    0x1fu /* cdrwa */

/* The ACLs of created nodes when none is chosen, in the --acl syntax
 * (scheme:id:perms, comma-separated): with credentials, the creator (the
 * identities the credentials give) may do everything and the world may
 * read; without, everyone may do everything - the only ACL that leaves a
 * node writable when nobody can authenticate. */
#define ZKW_ACL_DEFAULT_AUTH "auth::cdrwa,world:anyone:r"
#define ZKW_ACL_DEFAULT_OPEN "world:anyone:cdrwa"

/* One credential for zoo_add_auth: scheme ("digest") and secret (for
 * digest, "user:password"). */
typedef struct zkw_session_credential {
	const char *scheme;
	const char *secret;
} zkw_session_credential;

/* One ACL entry: ZooKeeper's scheme ("world", "auth", "digest", "ip",
 * ...), id ("anyone", "", "user:base64-sha1", "10.0.0.0/8") and
 * permissions (ZKW_PERM_* bits, at least one). */
typedef struct zkw_session_acl {
	const char *scheme;
	const char *id;
	unsigned perms;
} zkw_session_acl;

/* ---------------------------------------------------------------- pointer */

/* Parse a pointer node's content into the absolute path it points at.
 *
 * Surrounding whitespace (space, tab, CR, LF) is trimmed; the rest must be
 * an absolute ZooKeeper path: starts with '/', is not "/" itself, has no
 * empty component ("//", trailing '/'), no "." or ".." component, no NUL,
 * no control character (< 0x20, 0x7f, U+0080-U+009F), is valid UTF-8 outside
 * the ranges ZooKeeper refuses (U+D800-U+F8FF, U+FFF0-U+FFFF), and is shorter
 * than ZKW_POINTER_MAX. data may be NULL when len is 0 (a wiped node).
 *
 * Returns the length of the path written to out (NUL-terminated), or
 * -EINVAL (not a valid path) / -ENAMETOOLONG (too long) with *why set to a
 * static description, or -ENOBUFS when outcap is too small for a valid path.
 * why may be NULL. Pure function: no allocation, no global state. */
ZKW_API int zkw_pointer_parse(const void *data, size_t len, char *out, size_t outcap, const char **why);

/* ------------------------------------------------------ layer 1: session */

typedef struct zkw_session zkw_session;
typedef struct zkw_watch zkw_watch;

/* What zkw_session_options.count is told of. */
typedef enum zkw_session_count {
	ZKW_COUNT_ZK_EVENT = 0, /* a watch notification from ZooKeeper: a session event or a node's */
	ZKW_COUNT_READ,         /* a read sent: a get, or an exists with a watch */
	ZKW_COUNT_RECONCILE,    /* a reconcile exists sent (contract item 11) */
	ZKW_COUNT_REPAIR,       /* a reconcile found a node changed unnoticed: re-read */
	ZKW_COUNT_RECONNECT,    /* connected again after losing the connection or the session */
	ZKW_COUNT_SESSION_LOST  /* a session lost: expired, refused, or given up unconnected (item 5) */
} zkw_session_count;

typedef struct zkw_session_options {
	/* 0 = ZKW_SESSION_TIMEOUT_MS_DEFAULT; the server clamps it to 2..20 ticks */
	int session_timeout_ms;
	/* Fail fast: zkw_session_open waits until the session is connected and
	 * fails (-ETIMEDOUT) when no server answers in time. Without it, open
	 * returns at once and connects in the background with backoff. */
	bool valid_init;
	int init_timeout_ms; /* 0 = ZKW_INIT_TIMEOUT_MS_DEFAULT; only with valid_init */
	/* Periodic reconcile (contract 11): a cheap exists() per watched node,
	 * each node once a round; re-read only when it changed. A round lasts
	 * reconcile_s seconds +-20%, its requests spread evenly over it (never
	 * all watches at once). 0 = off. zkw_session_options_init (and
	 * opt == NULL) give ZKW_RECONCILE_S_DEFAULT. */
	int reconcile_s;
	/* Log sink for the session's own events and, rate-limited, the
	 * ZooKeeper client's messages (>= WARN). Called from any thread, must
	 * be thread-safe and must not block. NULL = silence the ZK client too.
	 * The ZooKeeper client's log callback carries no context, so its
	 * messages go to the most recently opened session that has a log. */
	void (*log)(void *log_ctx, int level, const char *message);
	void *log_ctx;
	/* Metrics (zkw-broker's counters): called once per event of the
	 * kinds of zkw_session_count, from the session's threads with its
	 * lock held. Must be thread-safe, must not block and must not call
	 * into the session. NULL = nothing counted. */
	void (*count)(void *count_ctx, zkw_session_count what);
	void *count_ctx;
	/* Recovery (contract 5): a handle that has not been connected for one
	 * session timeout (the negotiated one once known) is closed - its
	 * session is gone, or the servers refuse it - and a new session is
	 * started after a wait with no handle at all: b = the session timeout
	 * first, doubling up to reconnect_max_ms, each wait drawn from [b/2, b];
	 * a connection resets b. 0 = ZKW_RECONNECT_MAX_MS_DEFAULT. */
	int reconnect_max_ms;
	/* The most reconcile exists requests a second (a pointer watch sends
	 * two). When a round's requests do not fit in reconcile_s at this
	 * rate, the round stretches to what the rate allows (+ up to 20%
	 * jitter), said once in the log at INFO. 0 = ZKW_RECONCILE_RATE_DEFAULT. */
	int reconcile_rate;
	/* Authentication (docs/design.md, "Authentication and ACLs"): every
	 * new ZooKeeper handle gets these with zoo_add_auth before any read,
	 * and the session counts as connected only once ZooKeeper has answered
	 * them. A server that refuses them (ZOO_AUTH_FAILED_STATE) gets a new
	 * session only after the recovery waits above, never at once. Copied
	 * (and the copies zeroed when the session is freed); NULL / 0 = none.
	 * credentials_from names where they came from (a file) for the log;
	 * the secrets are never logged. */
	const zkw_session_credential *credentials;
	size_t ncredentials;
	const char *credentials_from;
	/* The ACL of every node ensure creates, parents included (copied).
	 * NULL / 0 = the default: with credentials ZKW_ACL_DEFAULT_AUTH
	 * (creator all, world read); without, ZKW_ACL_DEFAULT_OPEN, said once
	 * in the log as a warning at the first create. An "auth" entry needs
	 * credentials: zkw_session_open refuses it without (-EINVAL). */
	const zkw_session_acl *acl;
	size_t nacl;
} zkw_session_options;

/* The whole state of one watch, handed to on_state. Pointers are valid
 * only during the call: copy what you keep. */
typedef struct zkw_watch_state {
	bool valid;          /* contract 1 */
	bool connected;      /* session connected to ZooKeeper */
	const void *content; /* last good content (kept while invalid); never NULL */
	size_t len;
	uint64_t content_serial; /* +1 only when the content bytes change; 0 = none yet */
	int32_t version;         /* stat of the node the content came from */
	int64_t mzxid;           /* (the target, in pointer mode) */
	const char *pointer;     /* "" unless pointer mode: parsed target path */
	const char *error;       /* "" when valid */
	uint64_t confirmed_ns;   /* CLOCK_REALTIME ns, last confirmation by ZooKeeper; 0 = never */
	/* A reconcile found every node of the watch unchanged: this call only
	 * moves confirmed_ns, every other field equals the previous call's
	 * (content bytes included). A publisher may refresh its confirmed-at
	 * time without announcing anything new. Never true on a first call. */
	bool confirm_only;
} zkw_watch_state;

typedef struct zkw_watch_options {
	bool pointer;   /* path holds the path of the real config node */
	bool ensure;    /* create path (and parents) empty if missing at the first read */
	/* Bundle mode: path's children (one level, names and data) as one
	 * content, a consistent cut encoded as zkw/bundle.h lays it out; not
	 * with pointer (-EINVAL). */
	bool bundle;
	size_t max_len; /* content limit in bytes; 0 = no limit */
	/* Called for every change of state (valid, connected, content, version,
	 * mzxid, pointer, error) and on each reconcile confirmation (with
	 * confirm_only when nothing else changed).
	 *
	 * Runs on the ZooKeeper completion thread (or the session's control
	 * thread), with the session's lock held: calls for one session never
	 * overlap and arrive in order. It MUST NOT block, sleep, or call any
	 * zkw_session_* / zkw_watch_* function (it would deadlock). Copy the
	 * state somewhere and wake whoever needs it.
	 *
	 * Not called from zkw_session_watch itself. Until the first call the
	 * state is: invalid, not connected, error ZKW_ERR_CONNECTING. */
	void (*on_state)(void *ctx, const zkw_watch_state *st);
	void *ctx;
} zkw_watch_options;

/* Fill *o with the defaults (all zero except reconcile_s = ZKW_RECONCILE_S_DEFAULT). */
ZKW_API void zkw_session_options_init(zkw_session_options *o);

/* Open a session to hosts (a full connect string: "h1:p1,h2:p2/chroot")
 * into *out. opt may be NULL (defaults). 0, or on failure (*out = NULL)
 * -EINVAL (bad host string, an ACL entry that is not one, an "auth" ACL
 * entry without credentials), -ENOENT (no host name resolves; only with
 * valid_init, else it is retried), -ETIMEDOUT (valid_init and no server
 * answered), -EACCES (valid_init and the server refused the credentials),
 * -ENOMEM, -EAGAIN (no thread), with a one-line reason in errbuf (may be
 * NULL; it never holds a secret).
 *
 * A session and its watches are used by one owner: zkw_session_close must
 * not run concurrently with another call on the same session (on_state
 * callbacks are the library's business and are handled). */
ZKW_API int zkw_session_open(zkw_session **out, const char *hosts, const zkw_session_options *opt,
                             char *errbuf, size_t errlen);

/* Watch path (relative to the chroot, if any). Works before or after the
 * session connects, from any thread but on_state. The watch lives until
 * zkw_watch_remove or zkw_session_close. o is copied; o may be NULL and
 * o->on_state may be NULL. 0 with the watch in *out (out may be NULL), or
 * -EINVAL (s NULL, or path is not a valid absolute ZooKeeper path: the
 * rules of zkw_pointer_parse, untrimmed) or -ENOMEM. */
ZKW_API int zkw_session_watch(zkw_session *s, const char *path, const zkw_watch_options *o, zkw_watch **out);

/* Remove one watch while its session runs. When it returns, no on_state of
 * w is running and none will ever start: its ctx may be freed at once.
 * Requests of w still in flight and ZooKeeper watchers still registered
 * for it are answered into a retired struct that ignores them; the struct
 * is recycled by a later zkw_session_watch (which may return the same
 * address) and freed by zkw_session_close, so memory stays bounded by the
 * peak number of watches. w must not be used after this (not even removed
 * again). NULL is a no-op. Takes the session lock: never call it from
 * on_state (it would deadlock), nor concurrently with zkw_session_close. */
ZKW_API void zkw_watch_remove(zkw_watch *w);

/* Turn ensure on for a running watch (as zkw_watch_options.ensure at
 * creation): if the watched node (the pointer node itself, in pointer
 * mode) is missing now, create it and its parents with empty data; if its
 * state is not known yet (first read in flight, disconnected), the next
 * read that finds it missing does. A node that exists is left alone, and
 * one deleted later is not re-created. 0, or -EINVAL when w is NULL.
 * Never from on_state. */
ZKW_API int zkw_watch_ensure(zkw_watch *w);

/* Connection alive: connected, and a round trip to the server (exists "/")
 * answers within min(session timeout / 3, 2 s). Blocks the caller for at
 * most that long; never call from on_state. */
ZKW_API bool zkw_session_ping(zkw_session *s);

/* The current ZooKeeper session id and password (for logs, or for a test
 * that expires the session on purpose), each out-parameter may be NULL.
 * 0, -ENOTCONN when no session is established, -EINVAL when s is NULL. */
ZKW_API int zkw_session_identity(zkw_session *s, int64_t *id, char passwd[16]);

/* Stop everything: the ZooKeeper handle is closed and every thread joined;
 * no on_state runs after this returns; all watches are freed. Safe with
 * NULL. Never call from on_state. */
ZKW_API void zkw_session_close(zkw_session *s);

/* ----------------------------------------------- layer 2: seed's watcher */

typedef struct zkw_watcher zkw_watcher;

/* Handlers: zkw_handlers of zkw/common.h, which also states their order
 * (contract 3). Here they run on the watcher's own dispatch thread, never
 * on a ZooKeeper thread, so they may block or be slow. States are coalesced
 * when a handler is slower than ZooKeeper: the latest content is always
 * delivered, exactly once. */
typedef zkw_handlers zkw_watcher_handlers;

#define ZKW_WATCHER_POINTER    0x1u /* path is a pointer file */
#define ZKW_WATCHER_ENSURE     0x2u /* create path if missing */
#define ZKW_WATCHER_VALID_INIT 0x4u /* fail open when no server answers */

/* Open a watcher on path into *out. h may be NULL (polling use). 0, or on
 * failure (*out = NULL) the errors of zkw_session_open and
 * zkw_session_watch, -EAGAIN (no dispatch thread) or -ENOMEM, with a
 * one-line reason in errbuf (may be NULL). */
ZKW_API int zkw_watcher_open(zkw_watcher **out, const char *hosts, const char *path, const zkw_handlers *h,
                             unsigned flags, char *errbuf, size_t errlen);
/* Same, with session options (timeouts, reconcile, log); sopt may be NULL.
 * sopt->valid_init is ignored: the flag decides. */
ZKW_API int zkw_watcher_open_ex(zkw_watcher **out, const char *hosts, const char *path, const zkw_handlers *h,
                                unsigned flags, const zkw_session_options *sopt, char *errbuf, size_t errlen);

/* Current validity (the latest state, whether or not handlers caught up). */
ZKW_API bool zkw_watcher_is_valid(zkw_watcher *w);
/* Copy the last good content (pointer=false) or the pointer's target path
 * (pointer=true; "" unless pointer mode) into buf. Returns its length; when
 * cap is too small copies nothing and returns -ENOBUFS (call again with a
 * buffer of zkw_watcher_content_len()); -EINVAL when w is NULL. Content is
 * bytes: no NUL added. */
ZKW_API ssize_t zkw_watcher_get_file_contents(zkw_watcher *w, bool pointer, void *buf, size_t cap);
ZKW_API size_t zkw_watcher_content_len(zkw_watcher *w, bool pointer);
/* The latest error text ("" when valid) into buf (always NUL-terminated). */
ZKW_API void zkw_watcher_get_error(zkw_watcher *w, char *buf, size_t cap);
ZKW_API bool zkw_watcher_ping(zkw_watcher *w);
/* The session underneath (for zkw_session_ping / _identity). */
ZKW_API zkw_session *zkw_watcher_session(zkw_watcher *w);

/* Stop: closes the session and the dispatch thread; no handler starts after
 * it returns (from a handler, the running handler is the last one).
 * Idempotent - the seed's close() may be called twice; getters keep
 * answering the last state afterwards. */
ZKW_API void zkw_watcher_stop(zkw_watcher *w);
/* Stop (if not yet) and free. Safe with NULL. From inside a handler the
 * memory is released when that handler returns. */
ZKW_API void zkw_watcher_close(zkw_watcher *w);

#ifdef __cplusplus
}
#endif

#endif /* ZKW_WATCHER_H */
