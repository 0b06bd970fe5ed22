/* SPDX-License-Identifier: Apache-2.0 */
/* zkw_zk.h - small synchronous ZooKeeper helpers for the tools, the tests
 * and the benchmarks.
 *
 * zkw-push, the test harness (tests/support/zkh.c) and the benchmarks talk
 * to ZooKeeper from their own thread, where the client's synchronous API is
 * fine. The broker's watcher never uses these: it is asynchronous end to end
 * (broker/zk/).
 *
 * Every function returns 0 or a negative errno and, on failure, puts words
 * in the caller's buffer `why` (whylen bytes; why may be NULL): for a
 * ZooKeeper error exactly zerror() of its result code, so a caller can say
 * "cannot write PATH: <why>". zkw_zk_errno() is the one mapping of result
 * codes to errno numbers.
 *
 *     zhandle_t *zh;
 *     char why[256];
 *     int created;
 *     if (zkw_zk_connect(&zh, "127.0.0.1:2181", 10000, 10000, why, sizeof(why)) ||
 *         zkw_zk_put(zh, "/a/b", "v", 1, &created, why, sizeof(why)))
 *             ... why ...
 *     zkw_zk_close(zh);
 */
#ifndef ZKW_LIB_ZK_H
#define ZKW_LIB_ZK_H

#include <stddef.h>
#include <zookeeper/zookeeper.h>

#include <zkw/watcher.h>

/* ZooKeeper's default jute.maxbuffer: the largest packet a server accepts.
 * A node's data must leave room for the request around it. */
#define ZKW_ZK_PACKET_MAX (1024 * 1024 - 1)
#define ZKW_ZK_DATA_MAX   (ZKW_ZK_PACKET_MAX - 1024)

/* 0 for ZOK, else the negative errno a ZooKeeper result code stands for:
 * ZNONODE -ENOENT, ZNODEEXISTS -EEXIST, ZNOAUTH/ZAUTHFAILED -EACCES,
 * ZBADARGUMENTS -EINVAL, ZCONNECTIONLOSS/ZSESSIONEXPIRED/ZINVALIDSTATE/
 * ZCLOSING -ENOTCONN, ZOPERATIONTIMEOUT -ETIMEDOUT, ZNOTEMPTY -ENOTEMPTY,
 * ZBADVERSION -ESTALE, ZNOCHILDRENFOREPHEMERALS -EPERM, anything else -EIO. */
int zkw_zk_errno(int zrc);
/* The other way, for callers that speak ZooKeeper result codes (the test
 * harness's zkh_set & co.): the first code of that table for err, ZOK for 0,
 * ZSYSTEMERROR for an errno the table does not hold. */
int zkw_zk_result(int err);

/* A log callback for zookeeper_init2() that drops every message: a
 * handle's own log, silenced without touching the process-wide level. */
void zkw_zk_quiet_log(const char *message);

/* Is hosts a connect string the client takes: host:port[,host:port...]
 * with an optional /chroot, ports 1 to 65535, an IPv6 address in brackets?
 * 0, or -EINVAL with one reason (which does not repeat hosts: the caller
 * names the option). Nothing is resolved. */
int zkw_zk_hosts_check(const char *hosts, char *why, size_t whylen);

/* Connect and wait until the session is established, at most timeout_ms;
 * *zh is the handle. The client's log of this handle is dropped (our own
 * one-line errors say what failed; the process-wide log level is left
 * alone), and its host list is resolved on connection loss only (by
 * default it calls getaddrinfo around every packet). -EINVAL (bad host
 * string: zkw_zk_hosts_check's reason), -ENOENT (no server name resolves:
 * the first one that does not, and the resolver's reason), -ETIMEDOUT
 * (nobody answered in time), -EACCES (authentication failed), -ENOTCONN
 * (session expired during the wait), -ENOMEM. */
int zkw_zk_connect(zhandle_t **zh, const char *hosts, int timeout_ms, int session_timeout_ms, char *why,
                   size_t whylen);
void zkw_zk_close(zhandle_t *zh); /* NULL is fine */

/* Authenticate a session of zkw_zk_connect with n credentials and wait
 * for ZooKeeper's answer, at most timeout_ms. What is asked afterwards runs
 * authenticated. 0, -EACCES (refused: the handle is dead), -ETIMEDOUT; the
 * reason names the scheme, never the secret. */
int zkw_zk_auth(zhandle_t *zh, const zkw_session_credential *cred, size_t n, int timeout_ms, char *why,
                size_t whylen);

/* An ACL_vector of the n entries of acl, for zoo_create: out->data is
 * allocated (free() it), its strings are acl's. 0, -EINVAL, -ENOMEM. */
int zkw_zk_acl_vector(const zkw_session_acl *acl, size_t n, struct ACL_vector *out);

/* Create every missing ancestor of path (absolute) with empty data and an
 * open ACL (world:anyone:cdrwa); _acl with the one given. */
int zkw_zk_create_parents(zhandle_t *zh, const char *path, char *why, size_t whylen);
int zkw_zk_create_parents_acl(zhandle_t *zh, const char *path, const struct ACL_vector *acl, char *why,
                              size_t whylen);

/* Set an existing node's data (data NULL = null data): -ENOENT when there
 * is no such node. */
int zkw_zk_set(zhandle_t *zh, const char *path, const void *data, int len, char *why, size_t whylen);

/* Set a node's data (data NULL = null data), creating it and its parents
 * when missing (with an open ACL; _acl: with acl, parents too; an existing
 * node keeps its own); *created (may be NULL) tells which. */
int zkw_zk_put(zhandle_t *zh, const char *path, const void *data, int len, int *created, char *why,
               size_t whylen);
int zkw_zk_put_acl(zhandle_t *zh, const char *path, const void *data, int len, const struct ACL_vector *acl,
                   int *created, char *why, size_t whylen);

/* A node's data into buf: *len is the capacity in, the data's length out
 * (-1 for null data). Data larger than the buffer: -EMSGSIZE, *len = the
 * length needed. */
int zkw_zk_get(zhandle_t *zh, const char *path, void *buf, int *len, char *why, size_t whylen);

/* Delete path and everything below it (children that vanish meanwhile are
 * fine); "/" empties the tree but for /zookeeper. -ENOENT when path does
 * not exist; -EINVAL for a relative, overlong or deeper than 64 path. */
int zkw_zk_delete_tree(zhandle_t *zh, const char *path, char *why, size_t whylen);

/* A node's stat: -ENOENT when there is no such node. */
int zkw_zk_stat(zhandle_t *zh, const char *path, struct Stat *st, char *why, size_t whylen);

/* zkw_zk_get with the node's stat in *st, and larger data no error: the
 * buffer holds the first *len bytes of it, st->dataLength says how many
 * there are (a comparison needs no more than the length it compares to). */
int zkw_zk_get_stat(zhandle_t *zh, const char *path, void *buf, int *len, struct Stat *st, char *why,
                    size_t whylen);

/* The names of path's children, sorted bytewise, into *names (release with
 * deallocate_String_vector); *parent (may be NULL) gets path's own stat
 * (cversion, pzxid, numChildren). -ENOENT when path does not exist. */
int zkw_zk_children(zhandle_t *zh, const char *path, struct String_vector *names, struct Stat *parent,
                    char *why, size_t whylen);

/* The children of path with each one's stat (ctime, mzxid, version,
 * numChildren), sorted by name: *children is one allocation of *n entries
 * (release with zkw_zk_children_free). A child that vanishes between the
 * listing and its stat is left out. */
typedef struct zkw_zk_child {
	char *name;
	struct Stat stat;
} zkw_zk_child;
int zkw_zk_children_stat(zhandle_t *zh, const char *path, zkw_zk_child **children, size_t *n, char *why,
                         size_t whylen);
void zkw_zk_children_free(zkw_zk_child *children, size_t n);

/* Run the n ops (zoo_create_op_init & co.) as one transaction: all of them
 * or none. results has n entries. On failure *failed (may be NULL) is the
 * index of the op that failed (-1 when the request as a whole did, e.g. the
 * connection was lost) and why names it: "create /a/b: node exists". A
 * failure for a lost connection leaves the outcome unknown, as for any
 * request. */
int zkw_zk_multi(zhandle_t *zh, int n, const zoo_op_t *ops, zoo_op_result_t *results, int *failed, char *why,
                 size_t whylen);
/* The bytes of the request zkw_zk_multi sends for the n ops, as the server
 * reads them against its jute.maxbuffer (1 MiB by default): the jute
 * encoding of every op and header, each path counted chroot_len bytes
 * longer (the client prefixes the connect string's chroot). */
size_t zkw_zk_multi_size(const zoo_op_t *ops, int n, size_t chroot_len);

/* Create n nodes with at most window creates in flight (zoo_acreate): a
 * round trip per window rather than per node. node(ctx, i, ...) gives the
 * i-th node's path (into path, cap bytes; the client copies it at once) and
 * data (which must stay valid until the call returns), 0 or a negative
 * errno to stop (with words in why). Stops at the first failure, waits for
 * what is in flight (the client answers every request, with a connection
 * loss at worst) and names the node: "/a/b/00000003: node exists". Nodes
 * created before a failure stay. */
typedef int zkw_zk_node_fn(void *ctx, size_t i, char *path, size_t cap, const char **data, int *len,
                           char *why, size_t whylen);
int zkw_zk_create_pipelined(zhandle_t *zh, size_t n, zkw_zk_node_fn *node, void *ctx,
                            const struct ACL_vector *acl, int window, char *why, size_t whylen);

/* Join a parent path and a node id with exactly one '/' between them:
 * ("/tmp/", "myconfig") and ("/tmp", "myconfig") both give "/tmp/myconfig".
 * 0, or -EINVAL / -ENAMETOOLONG. The result is not yet validated. */
int zkw_zk_join(char *out, size_t cap, const char *parent, const char *id);

#endif
