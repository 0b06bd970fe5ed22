/* SPDX-License-Identifier: Apache-2.0 */
/* zkw_zk.c - small synchronous ZooKeeper helpers (see zkw_zk.h). */
#include "zkw_zk.h"

#include <errno.h>
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
	int state;

	*zhp = NULL;
	if (!ev)
		return zkw__errorf(why, whylen, -ENOMEM, "out of memory");
	sem_init(&ev->posted, 0, 0);
	zh = zookeeper_init2(hosts, on_session_event, session_timeout_ms, NULL, ev, 0, zkw_zk_quiet_log);
	if (!zh) {
		int err = errno ? errno : EINVAL;

		sem_destroy(&ev->posted);
		free(ev);
		return zkw__errorf(why, whylen, -err, "invalid ZooKeeper host string \"%s\": %s", hosts,
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
		return zkw__errorf(why, whylen,
		                   state == ZOO_AUTH_FAILED_STATE       ? -EACCES
		                   : state == ZOO_EXPIRED_SESSION_STATE ? -ENOTCONN
		                                                        : -ETIMEDOUT,
		                   "cannot connect to ZooKeeper at %s within %d ms", hosts, timeout_ms);
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
	free(ev);
}

/* ---- nodes ----------------------------------------------------------------- */

int zkw_zk_create_parents(zhandle_t *zh, const char *path, char *why, size_t whylen)
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
		zrc = zoo_create(zh, prefix, "", 0, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
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
	int err, zrc;

	if (created)
		*created = 0;
	err = zkw_zk_set(zh, path, data, len, why, whylen);
	if (err != -ENOENT)
		return err;
	err = zkw_zk_create_parents(zh, path, why, whylen);
	if (err)
		return err;
	zrc = zoo_create(zh, path, data, data ? len : -1, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
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
