/* SPDX-License-Identifier: Apache-2.0 */
/* zkw_zk.c - small synchronous ZooKeeper helpers (see zkw_zk.h). */
#include "zkw_zk.h"

#include <errno.h>
#include <netdb.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zkw/common.h>

#include "zkw_clock.h"

#define PATH_CAP   4096 /* a node path with its terminating NUL */
#define TREE_DEPTH 64   /* deepest tree zkw_zk_delete_tree walks */

/* ---- errors ------------------------------------------------------------- */

/* The one table of ZooKeeper result codes and the errno each stands for;
 * read both ways. */
static const struct {
	int zrc, err;
} errno_of[] = {
        {ZNONODE, ENOENT},
        {ZNODEEXISTS, EEXIST},
        {ZNOAUTH, EACCES},
        {ZAUTHFAILED, EACCES},
        {ZBADARGUMENTS, EINVAL},
        {ZCONNECTIONLOSS, ENOTCONN},
        {ZSESSIONEXPIRED, ENOTCONN},
        {ZINVALIDSTATE, ENOTCONN},
        {ZCLOSING, ENOTCONN},
        {ZOPERATIONTIMEOUT, ETIMEDOUT},
        {ZNOTEMPTY, ENOTEMPTY},
        {ZBADVERSION, ESTALE},
        {ZNOCHILDRENFOREPHEMERALS, EPERM},
        {ZSYSTEMERROR, EIO},
};

int zkw_zk_errno(int zrc)
{
	if (zrc == ZOK)
		return 0;
	for (size_t i = 0; i < sizeof(errno_of) / sizeof(errno_of[0]); i++)
		if (errno_of[i].zrc == zrc)
			return -errno_of[i].err;
	return -EIO;
}

int zkw_zk_result(int err)
{
	if (err == 0)
		return ZOK;
	for (size_t i = 0; i < sizeof(errno_of) / sizeof(errno_of[0]); i++)
		if (-errno_of[i].err == err)
			return errno_of[i].zrc;
	return ZSYSTEMERROR;
}

/* A ZooKeeper result: 0, or its errno with zerror() in why. */
static int result(int zrc, char *why, size_t whylen)
{
	return zrc == ZOK ? 0 : zkw__errorf(why, whylen, zkw_zk_errno(zrc), "%s", zerror(zrc));
}

static int check_path(const char *path, char *why, size_t whylen)
{
	if (!path || path[0] != '/')
		return zkw__errorf(why, whylen, -EINVAL, "\"%s\" is not an absolute path",
		                   path ? path : "(null)");
	if (strlen(path) >= PATH_CAP)
		return zkw__errorf(why, whylen, -EINVAL, "path longer than %d bytes", PATH_CAP - 1);
	return 0;
}

/* ---- sessions ------------------------------------------------------------ */

/* The handle's context, alive as long as the handle: the client reports
 * every session state change, on its completion thread, through it. */
struct session_events {
	sem_t posted; /* one post per session event */
	atomic_int state;
	/* zkw_zk_auth: one post per answer to a credential, on the I/O thread. */
	sem_t auth_posted;
	atomic_int auth_refused; /* a result code other than ZOK, else 0 */
};

static void on_session_event(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
	struct session_events *ev = ctx;

	(void)zh;
	(void)path;
	if (type == ZOO_SESSION_EVENT) {
		atomic_store(&ev->state, state);
		sem_post(&ev->posted); /* never blocks the client's thread */
	}
}

void zkw_zk_quiet_log(const char *message)
{
	(void)message;
}

/* ---- connect strings ------------------------------------------------------ */

/* One server of a connect string (len bytes at s, leading blanks skipped as
 * the client does) split into host (brackets of an IPv6 address dropped)
 * and port text. 0 or -EINVAL with the reason. */
static int split_server(const char *s, size_t len, char *host, size_t hostcap, char *port, size_t portcap,
                        char *why, size_t whylen)
{
	char server[300];
	const char *colon;
	char *end;
	unsigned long v;
	size_t hl;

	while (len && (*s == ' ' || *s == '\t'))
		s++, len--;
	if (len == 0)
		return zkw__errorf(why, whylen, -EINVAL,
		                   "an empty server in the list (want host:port[,host:port...][/chroot])");
	if (len >= sizeof(server))
		return zkw__errorf(why, whylen, -EINVAL, "a server name longer than %zu bytes",
		                   sizeof(server) - 1);
	memcpy(server, s, len);
	server[len] = '\0';
	colon = strrchr(server, ':');
	if (!colon || colon == server || (server[0] == '[' && colon[-1] != ']'))
		return zkw__errorf(why, whylen, -EINVAL,
		                   "server '%s' has no port (want host:port[,host:port...][/chroot])",
		                   server);
	errno = 0;
	v = strtoul(colon + 1, &end, 10);
	if (errno || !colon[1] || *end || colon[1] == '-' || colon[1] == '+' || v == 0 || v > 65535)
		return zkw__errorf(why, whylen, -EINVAL,
		                   "server '%s': the port must be a number from 1 to 65535", server);
	hl = (size_t)(colon - server);
	if (server[0] == '[') /* [v6addr]:port */
		hl -= 2;
	if (hl == 0 || hl >= hostcap || strlen(colon + 1) >= portcap)
		return zkw__errorf(why, whylen, -EINVAL, "server '%s': no host before the port", server);
	memcpy(host, server + (server[0] == '['), hl);
	host[hl] = '\0';
	snprintf(port, portcap, "%s", colon + 1);
	return 0;
}

int zkw_zk_hosts_check(const char *hosts, char *why, size_t whylen)
{
	const char *chroot, *p;
	char host[300], port[8];
	size_t len;
	int err;

	if (!hosts || !hosts[0])
		return zkw__errorf(why, whylen, -EINVAL,
		                   "no server given (want host:port[,host:port...][/chroot])");
	for (p = hosts; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return zkw__errorf(why, whylen, -EINVAL, "a control character at byte %zu",
			                   (size_t)(p - hosts) + 1);
	chroot = strchr(hosts, '/');
	len = chroot ? (size_t)(chroot - hosts) : strlen(hosts);
	for (p = hosts; p <= hosts + len;) {
		const char *comma = memchr(p, ',', (size_t)(hosts + len - p));
		size_t n = comma ? (size_t)(comma - p) : (size_t)(hosts + len - p);

		if ((err = split_server(p, n, host, sizeof(host), port, sizeof(port), why, whylen)))
			return err;
		p += n + 1;
	}
	/* The client's own path rules, which it would only answer with EINVAL. */
	if (chroot && chroot[1] &&
	    (strstr(chroot, "//") || chroot[strlen(chroot) - 1] == '/' || strstr(chroot, "/./") ||
	     strstr(chroot, "/../")))
		return zkw__errorf(why, whylen, -EINVAL,
		                   "chroot '%s': an empty, '.' or '..' component, or a trailing '/'", chroot);
	return 0;
}

/* zookeeper_init2 failed (ENOENT: no server resolved; EINVAL: a string it
 * would not take): which name, and why. */
static int unresolved(const char *hosts, int err, char *why, size_t whylen)
{
	const char *chroot = strchr(hosts, '/');
	size_t len = chroot ? (size_t)(chroot - hosts) : strlen(hosts);
	char host[300], port[8], first[512] = "";

	for (const char *p = hosts; p <= hosts + len;) {
		const char *server = p, *comma = memchr(p, ',', (size_t)(hosts + len - p));
		size_t n = comma ? (size_t)(comma - p) : (size_t)(hosts + len - p);
		struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
		int rc;

		p += n + 1;
		if (split_server(server, n, host, sizeof(host), port, sizeof(port), NULL, 0))
			continue;
		rc = getaddrinfo(host, port, &hints, &res);
		if (rc == 0) {
			freeaddrinfo(res);
			continue;
		}
		if (!first[0])
			snprintf(first, sizeof(first), "'%s': %s", host,
			         rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
	}
	if (first[0])
		return zkw__errorf(why, whylen, -ENOENT, "no server of %s resolves (%s)", hosts, first);
	return zkw__errorf(why, whylen, -err, "the ZooKeeper client refuses the connect string %s", hosts);
}

/* A state the session will not leave by itself while we wait. */
static bool settled(int state)
{
	return state == ZOO_CONNECTED_STATE || state == ZOO_AUTH_FAILED_STATE ||
	       state == ZOO_EXPIRED_SESSION_STATE;
}

int zkw_zk_connect(zhandle_t **zhp, const char *hosts, int timeout_ms, int session_timeout_ms, char *why,
                   size_t whylen)
{
	struct session_events *ev = calloc(1, sizeof(*ev));
	struct timespec deadline;
	zhandle_t *zh;
	int state, err;

	*zhp = NULL;
	if (!ev)
		return zkw__errorf(why, whylen, -ENOMEM, "out of memory");
	err = zkw_zk_hosts_check(hosts, why, whylen);
	if (err) {
		free(ev);
		return err;
	}
	sem_init(&ev->posted, 0, 0);
	sem_init(&ev->auth_posted, 0, 0);
	errno = 0;
	zh = zookeeper_init2(hosts, on_session_event, session_timeout_ms, NULL, ev, 0, zkw_zk_quiet_log);
	if (!zh) {
		err = errno ? errno : EINVAL;
		sem_destroy(&ev->posted);
		sem_destroy(&ev->auth_posted);
		free(ev);
		/* The client resolves every server at once and keeps only errno:
		 * say which name did not resolve, and why. */
		if (err == ENOENT || err == EINVAL)
			return unresolved(hosts, err, why, whylen);
		return zkw__errorf(why, whylen, -err, "cannot start a ZooKeeper session for %s: %s", hosts,
		                   strerror(err));
	}
	/* By default the client re-resolves its host list at every poll of
	 * its I/O thread (a getaddrinfo - a netlink socket and a route dump -
	 * around every packet, 100-200 us each); resolve on connection loss
	 * only. The benchmarks' ZooKeeper floor is measured this way too. */
	zoo_set_servers_resolution_delay(zh, -1);
	deadline = zkw_clock_deadline_ms(CLOCK_MONOTONIC, timeout_ms);
	while (!settled(atomic_load(&ev->state)))
		if (sem_clockwait(&ev->posted, CLOCK_MONOTONIC, &deadline) == -1 && errno == ETIMEDOUT)
			break;
	state = atomic_load(&ev->state);
	if (state != ZOO_CONNECTED_STATE) {
		zkw_zk_close(zh);
		if (state == ZOO_AUTH_FAILED_STATE)
			return zkw__errorf(why, whylen, -EACCES,
			                   "ZooKeeper at %s refused the session (authentication failed)",
			                   hosts);
		if (state == ZOO_EXPIRED_SESSION_STATE)
			return zkw__errorf(why, whylen, -ENOTCONN,
			                   "ZooKeeper at %s expired the session at once", hosts);
		return zkw__errorf(why, whylen, -ETIMEDOUT, "no ZooKeeper server answered at %s within %d ms",
		                   hosts, timeout_ms);
	}
	*zhp = zh;
	return 0;
}

void zkw_zk_close(zhandle_t *zh)
{
	struct session_events *ev;

	if (!zh)
		return;
	ev = (struct session_events *)zoo_get_context(zh);
	zookeeper_close(zh); /* joins the client's threads: no event after */
	sem_destroy(&ev->posted);
	sem_destroy(&ev->auth_posted);
	free(ev);
}

/* The answer to one credential (all of them come at the first answer). */
static void on_auth(int rc, const void *ctx)
{
	struct session_events *ev = (struct session_events *)ctx;

	if (rc != ZOK)
		atomic_store(&ev->auth_refused, rc);
	sem_post(&ev->auth_posted);
}

int zkw_zk_auth(zhandle_t *zh, const zkw_session_credential *cred, size_t n, int timeout_ms, char *why,
                size_t whylen)
{
	struct session_events *ev = (struct session_events *)zoo_get_context(zh);
	struct timespec deadline = zkw_clock_deadline_ms(CLOCK_MONOTONIC, timeout_ms);
	size_t sent = 0, answered = 0;

	for (size_t i = 0; i < n; i++) {
		int zrc = zoo_add_auth(zh, cred[i].scheme, cred[i].secret, (int)strlen(cred[i].secret),
		                       on_auth, ev);

		if (zrc != ZOK)
			return zkw__errorf(why, whylen, zkw_zk_errno(zrc),
			                   "cannot hand the %s credentials to the ZooKeeper client: %s",
			                   cred[i].scheme, zerror(zrc));
		sent++;
	}
	while (answered < sent) {
		if (sem_clockwait(&ev->auth_posted, CLOCK_MONOTONIC, &deadline) == 0)
			answered++;
		else if (errno == ETIMEDOUT)
			return zkw__errorf(why, whylen, -ETIMEDOUT,
			                   "ZooKeeper did not answer the credentials within %d ms",
			                   timeout_ms);
	}
	if (atomic_load(&ev->auth_refused))
		return zkw__errorf(why, whylen, -EACCES,
		                   "ZooKeeper refused the %s credentials (authentication failed)",
		                   n ? cred[0].scheme : "");
	return 0;
}

int zkw_zk_acl_vector(const zkw_session_acl *acl, size_t n, struct ACL_vector *out)
{
	out->count = 0;
	out->data = NULL;
	if (n > INT32_MAX)
		return -EINVAL;
	if (!n)
		return 0;
	out->data = calloc(n, sizeof(*out->data));
	if (!out->data)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		/* The client only serialises them: the casts drop a const
		 * its struct Id does not spell. */
		out->data[i].perms = (int32_t)acl[i].perms;
		out->data[i].id.scheme = (char *)acl[i].scheme;
		out->data[i].id.id = (char *)acl[i].id;
	}
	out->count = (int32_t)n;
	return 0;
}

/* ---- nodes ----------------------------------------------------------------- */

int zkw_zk_create_parents(zhandle_t *zh, const char *path, char *why, size_t whylen)
{
	return zkw_zk_create_parents_acl(zh, path, &ZOO_OPEN_ACL_UNSAFE, why, whylen);
}

int zkw_zk_create_parents_acl(zhandle_t *zh, const char *path, const struct ACL_vector *acl, char *why,
                              size_t whylen)
{
	char prefix[PATH_CAP];
	int err = check_path(path, why, whylen);

	if (err)
		return err;
	for (const char *slash = strchr(path + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
		int zrc;

		memcpy(prefix, path, (size_t)(slash - path));
		prefix[slash - path] = '\0';
		/* Empty data, as the broker's --ensure creates them. */
		zrc = zoo_create(zh, prefix, "", 0, acl, 0, NULL, 0);
		if (zrc != ZOK && zrc != ZNODEEXISTS)
			return result(zrc, why, whylen);
	}
	return 0;
}

int zkw_zk_set(zhandle_t *zh, const char *path, const void *data, int len, char *why, size_t whylen)
{
	int err = check_path(path, why, whylen);

	return err ? err : result(zoo_set(zh, path, data, data ? len : -1, -1), why, whylen);
}

int zkw_zk_put(zhandle_t *zh, const char *path, const void *data, int len, int *created, char *why,
               size_t whylen)
{
	return zkw_zk_put_acl(zh, path, data, len, &ZOO_OPEN_ACL_UNSAFE, created, why, whylen);
}

int zkw_zk_put_acl(zhandle_t *zh, const char *path, const void *data, int len, const struct ACL_vector *acl,
                   int *created, char *why, size_t whylen)
{
	int err, zrc;

	if (created)
		*created = 0;
	err = zkw_zk_set(zh, path, data, len, why, whylen);
	if (err != -ENOENT)
		return err;
	err = zkw_zk_create_parents_acl(zh, path, acl, why, whylen);
	if (err)
		return err;
	zrc = zoo_create(zh, path, data, data ? len : -1, acl, 0, NULL, 0);
	if (zrc == ZNODEEXISTS) /* lost a race with another creator: update it */
		return zkw_zk_set(zh, path, data, len, why, whylen);
	if (created)
		*created = zrc == ZOK;
	return result(zrc, why, whylen);
}

int zkw_zk_get(zhandle_t *zh, const char *path, void *buf, int *len, char *why, size_t whylen)
{
	struct Stat stat;
	int err = check_path(path, why, whylen), cap, zrc;

	if (err)
		return err;
	if (!len || *len < 0 || (*len > 0 && !buf))
		return zkw__errorf(why, whylen, -EINVAL, "no buffer for the data of %s", path);
	cap = *len;
	zrc = zoo_get(zh, path, 0, buf, len, &stat);
	if (zrc == ZOK && stat.dataLength > cap) {
		*len = stat.dataLength;
		return zkw__errorf(why, whylen, -EMSGSIZE, "%s holds %d bytes, more than %d", path,
		                   stat.dataLength, cap);
	}
	return result(zrc, why, whylen);
}

static int delete_below(zhandle_t *zh, const char *path, int depth, char *why, size_t whylen)
{
	struct String_vector children = {0};
	int zrc, err = 0;

	if (depth > TREE_DEPTH)
		return zkw__errorf(why, whylen, -EINVAL, "tree deeper than %d levels at %s", TREE_DEPTH,
		                   path);
	zrc = zoo_get_children(zh, path, 0, &children);
	if (zrc != ZOK)
		return result(zrc, why, whylen);
	for (int i = 0; i < children.count && !err; i++) {
		char child[PATH_CAP];
		int n = snprintf(child, sizeof(child), "%s/%s", strcmp(path, "/") ? path : "",
		                 children.data[i]);

		if (n < 0 || (size_t)n >= sizeof(child))
			err = zkw__errorf(why, whylen, -EINVAL, "path longer than %d bytes below %s",
			                  PATH_CAP - 1, path);
		else if (strcmp(child, "/zookeeper") != 0)
			err = delete_below(zh, child, depth + 1, why, whylen);
		if (err == -ENOENT) /* gone meanwhile */
			err = 0;
	}
	deallocate_String_vector(&children);
	if (!err && strcmp(path, "/") != 0)
		err = result(zoo_delete(zh, path, -1), why, whylen);
	return err;
}

int zkw_zk_delete_tree(zhandle_t *zh, const char *path, char *why, size_t whylen)
{
	int err = check_path(path, why, whylen);

	return err ? err : delete_below(zh, path, 0, why, whylen);
}

int zkw_zk_stat(zhandle_t *zh, const char *path, struct Stat *st, char *why, size_t whylen)
{
	int err = check_path(path, why, whylen);

	return err ? err : result(zoo_exists(zh, path, 0, st), why, whylen);
}

int zkw_zk_get_stat(zhandle_t *zh, const char *path, void *buf, int *len, struct Stat *st, char *why,
                    size_t whylen)
{
	int err = check_path(path, why, whylen);

	if (err)
		return err;
	if (!len || *len < 0 || (*len > 0 && !buf) || !st)
		return zkw__errorf(why, whylen, -EINVAL, "no buffer for the data of %s", path);
	return result(zoo_get(zh, path, 0, buf, len, st), why, whylen);
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b); /* bytewise: strcmp compares unsigned */
}

int zkw_zk_children(zhandle_t *zh, const char *path, struct String_vector *names, struct Stat *parent,
                    char *why, size_t whylen)
{
	struct Stat ignored;
	int err = check_path(path, why, whylen), zrc;

	names->count = 0;
	names->data = NULL;
	if (err)
		return err;
	zrc = zoo_get_children2(zh, path, 0, names, parent ? parent : &ignored);
	if (zrc != ZOK)
		return result(zrc, why, whylen);
	if (names->count > 1)
		qsort(names->data, (size_t)names->count, sizeof(names->data[0]), by_name);
	return 0;
}

void zkw_zk_children_free(zkw_zk_child *children, size_t n)
{
	for (size_t i = 0; children && i < n; i++)
		free(children[i].name);
	free(children);
}

int zkw_zk_children_stat(zhandle_t *zh, const char *path, zkw_zk_child **children, size_t *n, char *why,
                         size_t whylen)
{
	struct String_vector names;
	zkw_zk_child *out = NULL;
	size_t got = 0;
	int err = zkw_zk_children(zh, path, &names, NULL, why, whylen);

	*children = NULL;
	*n = 0;
	if (err)
		return err;
	if (names.count > 0 && !(out = calloc((size_t)names.count, sizeof(*out))))
		err = zkw__errorf(why, whylen, -ENOMEM, "out of memory listing %d children of %s",
		                  names.count, path);
	for (int i = 0; i < names.count && !err; i++) {
		char child[PATH_CAP];
		int len =
		        snprintf(child, sizeof(child), "%s/%s", strcmp(path, "/") ? path : "", names.data[i]);

		if (len < 0 || (size_t)len >= sizeof(child)) {
			err = zkw__errorf(why, whylen, -EINVAL, "path longer than %d bytes below %s",
			                  PATH_CAP - 1, path);
			break;
		}
		err = zkw_zk_stat(zh, child, &out[got].stat, why, whylen);
		if (err == -ENOENT) { /* gone meanwhile */
			err = 0;
			continue;
		}
		if (!err && !(out[got].name = strdup(names.data[i])))
			err = zkw__errorf(why, whylen, -ENOMEM, "out of memory");
		if (!err)
			got++;
	}
	deallocate_String_vector(&names);
	if (err) {
		zkw_zk_children_free(out, got);
		return err;
	}
	*children = out;
	*n = got;
	return 0;
}

/* An op's kind and path, for messages. */
static const char *op_path(const zoo_op_t *op, const char **kind)
{
	switch (op->type) {
	case ZOO_CREATE_OP: *kind = "create"; return op->create_op.path;
	case ZOO_DELETE_OP: *kind = "delete"; return op->delete_op.path;
	case ZOO_SETDATA_OP: *kind = "set"; return op->set_op.path;
	case ZOO_CHECK_OP: *kind = "check"; return op->check_op.path;
	default: *kind = "op"; return "?";
	}
}

int zkw_zk_multi(zhandle_t *zh, int n, const zoo_op_t *ops, zoo_op_result_t *results, int *failed, char *why,
                 size_t whylen)
{
	const char *kind, *path;
	int zrc;

	if (failed)
		*failed = -1;
	/* A request that fails as a whole fills no result: ZOK in each then
	 * says "not this op". */
	for (int i = 0; i < n; i++)
		results[i] = (zoo_op_result_t){.err = ZOK};
	zrc = zoo_multi(zh, n, ops, results);
	if (zrc == ZOK)
		return 0;
	/* The server answers ZOK for the ops before the one that failed and
	 * ZRUNTIMEINCONSISTENCY for those after it. */
	for (int i = 0; i < n; i++) {
		if (results[i].err == ZOK || results[i].err == ZRUNTIMEINCONSISTENCY)
			continue;
		if (failed)
			*failed = i;
		path = op_path(&ops[i], &kind);
		return zkw__errorf(why, whylen, zkw_zk_errno(results[i].err), "%s %s: %s", kind, path,
		                   zerror(results[i].err));
	}
	return result(zrc, why, whylen);
}

/* Jute: a string or a buffer is its int32 length, then its bytes (none for
 * null, length -1). */
static size_t jute_bytes(const char *s, int len)
{
	return 4 + (s && len > 0 ? (size_t)len : 0);
}

size_t zkw_zk_multi_size(const zoo_op_t *ops, int n, size_t chroot_len)
{
	const size_t multi_header = 4 + 1 + 4; /* type, done, err */
	size_t size = 4 + 4 + 4;               /* packet length, xid, type */

	for (int i = 0; i < n; i++) {
		const zoo_op_t *op = &ops[i];
		const char *kind, *path = op_path(op, &kind);

		size += multi_header + 4 + strlen(path) + chroot_len;
		switch (op->type) {
		case ZOO_CREATE_OP:
			size += jute_bytes(op->create_op.data, op->create_op.datalen) + 4 +
			        4; /* acl count, flags */
			for (int a = 0; op->create_op.acl && a < op->create_op.acl->count; a++) {
				const struct ACL *acl = &op->create_op.acl->data[a];

				size += 4 + 4 + strlen(acl->id.scheme) + 4 + strlen(acl->id.id);
			}
			if (op->create_op.ttl > 0)
				size += 8;
			break;
		case ZOO_SETDATA_OP: size += jute_bytes(op->set_op.data, op->set_op.datalen) + 4; break;
		default: size += 4; break; /* delete, check: the version */
		}
	}
	return size + multi_header; /* the closing header */
}

/* zkw_zk_create_pipelined: what the completions share, and one request's
 * context (allocated per request, freed by its completion). */
struct pipeline {
	sem_t answered; /* one post per completion */
	atomic_int failed_rc;
	atomic_size_t failed_index;
};

struct pipelined_create {
	struct pipeline *p;
	size_t index;
};

static void on_pipelined_create(int rc, const char *value, const void *data)
{
	struct pipelined_create *req = (struct pipelined_create *)data;
	struct pipeline *p = req->p;
	int expected = ZOK;

	(void)value;
	if (rc != ZOK && atomic_compare_exchange_strong(&p->failed_rc, &expected, rc))
		atomic_store(&p->failed_index, req->index);
	free(req);
	sem_post(&p->answered); /* last: the waiter may return at once */
}

/* Wait for one answer. The client answers every request it accepted (with
 * ZCONNECTIONLOSS or ZOPERATIONTIMEOUT when the server does not), so this
 * wait is bounded by the session timeout. */
static void await_answer(struct pipeline *p)
{
	while (sem_wait(&p->answered) == -1 && errno == EINTR)
		;
}

int zkw_zk_create_pipelined(zhandle_t *zh, size_t n, zkw_zk_node_fn *node, void *ctx,
                            const struct ACL_vector *acl, int window, char *why, size_t whylen)
{
	struct pipeline p = {.failed_rc = ZOK};
	size_t sent = 0, answered = 0;
	char path[PATH_CAP];
	int err = 0;

	if (window < 1)
		window = 1;
	sem_init(&p.answered, 0, 0);
	while (sent < n && !err && atomic_load(&p.failed_rc) == ZOK) {
		struct pipelined_create *req;
		const char *data;
		int len, zrc;

		if (sent - answered >= (size_t)window) {
			await_answer(&p);
			answered++;
			continue;
		}
		err = node(ctx, sent, path, sizeof(path), &data, &len, why, whylen);
		if (err)
			break;
		req = malloc(sizeof(*req));
		if (!req) {
			err = zkw__errorf(why, whylen, -ENOMEM, "out of memory");
			break;
		}
		*req = (struct pipelined_create){.p = &p, .index = sent};
		zrc = zoo_acreate(zh, path, data, len, acl, 0, on_pipelined_create, req);
		if (zrc != ZOK) { /* not accepted: no completion will come */
			free(req);
			err = zkw__errorf(why, whylen, zkw_zk_errno(zrc), "%s: %s", path, zerror(zrc));
			break;
		}
		sent++;
	}
	for (; answered < sent; answered++)
		await_answer(&p);
	sem_destroy(&p.answered);
	if (!err && atomic_load(&p.failed_rc) != ZOK) {
		int zrc = atomic_load(&p.failed_rc);
		size_t i = atomic_load(&p.failed_index);
		const char *data;
		int len;
		char ignored[8];

		if (node(ctx, i, path, sizeof(path), &data, &len, ignored, sizeof(ignored)))
			snprintf(path, sizeof(path), "node %zu", i);
		err = zkw__errorf(why, whylen, zkw_zk_errno(zrc), "%s: %s", path, zerror(zrc));
	}
	return err;
}

int zkw_zk_join(char *out, size_t cap, const char *parent, const char *id)
{
	size_t plen, ilen;

	if (!parent || !id || !*id)
		return -EINVAL;
	plen = strlen(parent);
	while (plen > 0 && parent[plen - 1] == '/')
		plen--;
	while (*id == '/')
		id++;
	ilen = strlen(id);
	if (!ilen)
		return -EINVAL;
	if (plen + 1 + ilen + 1 > cap)
		return -ENAMETOOLONG;
	memcpy(out, parent, plen);
	out[plen] = '/';
	memcpy(out + plen + 1, id, ilen + 1);
	return 0;
}
