/* zksync.h - small synchronous ZooKeeper helpers for the command-line tools.
 *
 * The tools (zkw-push, the benchmarks, tests) talk to ZooKeeper from their
 * own main thread, where the client's synchronous API is fine. The broker's
 * watcher never uses these: it is asynchronous end to end (watcher.c).
 */
#ifndef ZKW_BROKER_ZKSYNC_H
#define ZKW_BROKER_ZKSYNC_H

#include <stddef.h>
#include <zookeeper/zookeeper.h>

/* ZooKeeper's default jute.maxbuffer: the largest packet a server accepts.
 * A node's data must leave room for the request around it. */
#define ZKW_ZK_PACKET_MAX (1024 * 1024 - 1)
#define ZKW_ZK_DATA_MAX   (ZKW_ZK_PACKET_MAX - 1024)

/* Connect and wait until the session is established, at most timeout_ms.
 * The client's own logging is silenced. NULL with `why` filled on failure
 * (bad host string, nobody answering in time). */
zhandle_t *zkw_zk_connect(const char *hosts, int timeout_ms, int session_timeout_ms, char *why,
                          size_t whylen);
void zkw_zk_close(zhandle_t *zh);

/* Create every missing ancestor of path with empty data. ZOK or an error. */
int zkw_zk_create_parents(zhandle_t *zh, const char *path);

/* Set a node's data (data NULL = null data), creating it and its parents
 * when missing; *created tells which. ZOK or a ZooKeeper error. */
int zkw_zk_put(zhandle_t *zh, const char *path, const void *data, int len, int *created);

/* Join a parent path and a node id with exactly one '/' between them:
 * ("/tmp/", "myconfig") and ("/tmp", "myconfig") both give "/tmp/myconfig".
 * 0, or -EINVAL / -ENAMETOOLONG. The result is not yet validated. */
int zkw_zk_join(char *out, size_t cap, const char *parent, const char *id);

#endif
