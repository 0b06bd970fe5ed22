/* SPDX-License-Identifier: Apache-2.0 */
/* zkh.h - start and stop real ZooKeeper servers on loopback for tests.
 *
 * A thin C face over tools/zk.sh (the same harness the shell, the demo and
 * the benchmarks use): each server gets free ports, its own data dir and
 * zoo.cfg under a private directory, a short tickTime, and is stopped by PID.
 * Every server started here is a child of proc_fork (proc.h): swept at exit
 * and on a fatal signal, so a failing or interrupted test never leaves a
 * JVM behind.
 *
 *     zkh_cluster *zk = zkh_start(1);            // standalone
 *     const char *hosts = zkh_hosts(zk);         // "127.0.0.1:PORT"
 *     ...
 *     zkh_stop(zk);
 */
#ifndef ZKW_TESTS_ZKH_H
#define ZKW_TESTS_ZKH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct zkh_cluster zkh_cluster;

/* Start 1 (standalone) or 3 (ensemble) servers and wait until every one
 * serves (`srvr` prints Mode:) and, for an ensemble, a leader is elected.
 * NULL on failure, with the server log tail printed to stderr. */
zkh_cluster *zkh_start(int nodes);
/* Stop every member (SIGTERM, then SIGKILL after a bound), remove its dir. */
void zkh_stop(zkh_cluster *zk);

const char *zkh_hosts(const zkh_cluster *zk); /* full connect string */
int zkh_nodes(const zkh_cluster *zk);
int zkh_port(const zkh_cluster *zk, int member); /* client port, member 0-based */
int zkh_pid(const zkh_cluster *zk, int member);  /* 0 when stopped */

/* Member control. 0 or -errno. start waits until the member serves. */
int zkh_member_stop(zkh_cluster *zk, int member); /* SIGTERM, reaped */
int zkh_member_kill(zkh_cluster *zk, int member); /* SIGKILL, reaped */
int zkh_member_start(zkh_cluster *zk, int member);
/* Empty a stopped member's data directory (`zk.sh member-wipe`): started
 * again, it is a reset server, at zxid 0, knowing no session. -EBUSY while
 * it runs. */
int zkh_member_wipe(zkh_cluster *zk, int member);
/* Member index of the current leader (ensemble) or 0 (standalone); -1 when
 * none answers within timeout_ms. */
int zkh_leader(zkh_cluster *zk, int timeout_ms);
/* true when member answers `srvr` with a Mode: line. */
bool zkh_member_serving(const zkh_cluster *zk, int member);
/* That line's value ("leader", "follower", "standalone"), or "" when the
 * member does not answer. */
void zkh_member_mode(const zkh_cluster *zk, int member, char *mode, size_t cap);
/* Wait until the cluster has a quorum serving again; 0 or -ETIMEDOUT. */
int zkh_wait_serving(zkh_cluster *zk, int timeout_ms);

/* Pause/resume a whole cluster (SIGSTOP/SIGCONT) - a network partition seen
 * from the clients, without losing server state. Pause returns once every
 * thread of every member has stopped (-ETIMEDOUT after 5 s). */
int zkh_pause(zkh_cluster *zk);
int zkh_resume(zkh_cluster *zk);

/* tickTime in ms (minimum session timeout is 2 ticks). */
int zkh_tick_ms(const zkh_cluster *zk);
/* Print the last lines of a member's log to stderr (failure messages). */
void zkh_dump_log(const zkh_cluster *zk, int member, int lines);

/* Synchronous ZooKeeper helpers for tests, each on a short-lived session of
 * its own: lib/zkw_zk.c's zkw_zk_put, zkw_zk_delete_tree and zkw_zk_get
 * (see there), returning ZooKeeper result codes as the tests compare them:
 * ZOK (0), the code zkw_zk_result() gives for the error, ZCONNECTIONLOSS
 * when no session could be had (reported on stderr). */
int zkh_set(const char *hosts, const char *path, const void *data, int len); /* create parents as needed */
int zkh_delete(const char *hosts, const char *path); /* recursive; ZNONODE when missing */
/* *len: capacity in, length out (-1: null data); larger data: ZBADARGUMENTS
 * and *len = the length needed. */
int zkh_get(const char *hosts, const char *path, char *buf, int *len);

/* Wait helpers: poll a predicate every ms until true or timeout; return
 * true when it held. Use only where no event can be awaited. */
bool zkh_eventually(bool (*pred)(void *), void *arg, int timeout_ms);

/* Additions (zkh.c):
 * zkh_start with an explicit tickTime; zkh_start uses $ZKW_TEST_TICK_MS or
 * 200 ms.  Members are started from the calling thread and die with it
 * (PR_SET_PDEATHSIG): start and restart them from the main thread. */
zkh_cluster *zkh_start_tick(int nodes, int tick_ms);
/* The cluster's directory: DIR/N/{zoo.cfg,zk.log,pid} for member N-1, as
 * tools/zk.sh lays it out (so `tools/zk.sh status DIR` works on it). */
const char *zkh_dir(const zkh_cluster *zk);
/* The four-letter-word client (srvr, stat, cons, mntr, ruok), of the tests
 * and the benchmarks: the reply, NUL-terminated, in buf. Bytes received or
 * -errno. zkh_4lw asks a member (2 s bound), zkh_4lw_at the first server of
 * a connect string ("127.0.0.1:2181,..."; IPv4 address literals). */
int zkh_4lw(const zkh_cluster *zk, int member, const char *word, char *buf, int cap);
int zkh_4lw_at(const char *hosts, const char *word, char *buf, int cap, int timeout_ms);
/* Sessions among the client connections of the first server of hosts (its
 * `cons`), -1 when it does not answer. */
int zkh_session_count(const char *hosts);
/* Does a running member still list session_id among its connections (or
 * not answer)? false once every running member has dropped it. */
bool zkh_session_listed(const zkh_cluster *zk, uint64_t session_id);

/* A positive integer from the environment, at most max; fallback when the
 * variable is unset, empty, malformed or out of range. */
int zkh_env_int(const char *name, int fallback, int max);

#endif
