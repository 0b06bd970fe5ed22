/* zksync.c - small synchronous ZooKeeper helpers for the command-line tools. */
#include "zkw_zk.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct connect_wait {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int state;
};

/* Runs on the client's completion thread: record, signal, never block. */
static void on_session_event(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
	struct connect_wait *cw = ctx;

	(void)zh;
	(void)path;
	if (type != ZOO_SESSION_EVENT)
		return;
	pthread_mutex_lock(&cw->lock);
	cw->state = state;
	pthread_cond_broadcast(&cw->cond);
	pthread_mutex_unlock(&cw->lock);
}

static struct connect_wait *connect_wait_new(void)
{
	struct connect_wait *cw = calloc(1, sizeof(*cw));
	pthread_condattr_t attr;

	if (!cw)
		return NULL;
	pthread_mutex_init(&cw->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&cw->cond, &attr);
	pthread_condattr_destroy(&attr);
	return cw;
}

zhandle_t *zkw_zk_connect(const char *hosts, int timeout_ms, int session_timeout_ms, char *why, size_t whylen)
{
	struct connect_wait *cw = connect_wait_new();
	struct timespec deadline;
	zhandle_t *zh;
	int state;

	if (!cw) {
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	zoo_set_debug_level(0); /* our own one-line errors say what failed */
	zh = zookeeper_init(hosts, on_session_event, session_timeout_ms, NULL, cw, 0);
	if (!zh) {
		snprintf(why, whylen, "invalid ZooKeeper host string \"%s\": %s", hosts, strerror(errno));
		free(cw);
		return NULL;
	}
	/* By default the client re-resolves its host list at every poll of
	 * its I/O thread (getaddrinfo per packet); resolve on connection loss
	 * only. */
	zoo_set_servers_resolution_delay(zh, -1);
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += timeout_ms / 1000;
	deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&cw->lock);
	while (cw->state != ZOO_CONNECTED_STATE && cw->state != ZOO_AUTH_FAILED_STATE &&
	       cw->state != ZOO_EXPIRED_SESSION_STATE)
		if (pthread_cond_timedwait(&cw->cond, &cw->lock, &deadline) == ETIMEDOUT)
			break;
	state = cw->state;
	pthread_mutex_unlock(&cw->lock);
	if (state != ZOO_CONNECTED_STATE) {
		snprintf(why, whylen, "cannot connect to ZooKeeper at %s within %d ms", hosts, timeout_ms);
		zookeeper_close(zh);
		free(cw);
		return NULL;
	}
	/* cw lives as long as the handle: the watcher may still fire. */
	return zh;
}

void zkw_zk_close(zhandle_t *zh)
{
	struct connect_wait *cw;

	if (!zh)
		return;
	cw = (struct connect_wait *)zoo_get_context(zh);
	zookeeper_close(zh); /* joins the client's threads: no callback after */
	free(cw);
}

int zkw_zk_create_parents(zhandle_t *zh, const char *path)
{
	char buf[4096];
	size_t n = strlen(path);
	char *slash;
	int rc;

	if (n >= sizeof(buf))
		return ZBADARGUMENTS;
	memcpy(buf, path, n + 1);
	for (slash = strchr(buf + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
		*slash = '\0';
		rc = zoo_create(zh, buf, NULL, -1, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
		*slash = '/';
		if (rc != ZOK && rc != ZNODEEXISTS)
			return rc;
	}
	return ZOK;
}

int zkw_zk_put(zhandle_t *zh, const char *path, const void *data, int len, int *created)
{
	int rc;

	*created = 0;
	rc = zoo_set(zh, path, data, data ? len : -1, -1);
	if (rc != ZNONODE)
		return rc;
	rc = zkw_zk_create_parents(zh, path);
	if (rc != ZOK)
		return rc;
	rc = zoo_create(zh, path, data, data ? len : -1, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
	if (rc == ZNODEEXISTS) /* lost a race with another creator: update it */
		return zoo_set(zh, path, data, data ? len : -1, -1);
	*created = rc == ZOK;
	return rc;
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
