/* SPDX-License-Identifier: Apache-2.0 */
/* chaos.h - the moving parts of fault tests: checksummed config content, a
 * writer that keeps changing a node, a fleet of reader processes that check
 * every snapshot they see, and a broker started the way the tests need it.
 *
 * Used by tests/fault/test_failover.c and tests/fault/test_soak.c:
 *
 *     proc *b = chaos_broker_start(hosts, "/fo/conf", "zkwfo.1", 4000, NULL);
 *     chaos_readers *rd = chaos_readers_start("zkwfo.1", 4);
 *     chaos_writer *wr = chaos_writer_start(hosts, "/fo/conf", 1, 5);
 *     ... inject a fault, heal it ...
 *     chaos_writer_stop(wr);
 *     uint64_t last;
 *     chaos_zk_seq(hosts, "/fo/conf", &last, 20000);     // what ZooKeeper holds
 *     assert_true(chaos_readers_wait_seq(rd, last, 6000)); // everybody has it
 *     chaos_totals t;
 *     assert_int_equal(chaos_readers_stop(rd, 10000, &t), 0);
 *     assert_true(chaos_totals_clean(&t, true));
 *
 * Readers are forked processes (the contract is about processes sharing a
 * segment); they only use client.h, never allocate and report through a
 * shared mapping whose futex word the test waits on - no sleeps.
 */
#ifndef ZKW_TESTS_CHAOS_H
#define ZKW_TESTS_CHAOS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "proc.h"

/* ---- content: "zkwc1 seq=N n=L crc=XXXXXXXX\n" + L pseudo-random bytes -- */

#define CHAOS_CONTENT_MAX 8192

/* Fill buf with the content of sequence number seq (its length, 64..6000
 * payload bytes, follows from seq). Returns the length, 0 if cap is small. */
size_t chaos_content(void *buf, size_t cap, uint64_t seq);
/* 1 and *seq when buf is intact chaos content, 0 when empty, -1 when torn
 * or foreign. */
int chaos_check(const void *buf, size_t len, uint64_t *seq);

/* ---- readers ---------------------------------------------------------- */

/* Every counter a reader keeps; summed over the fleet by the _totals calls. */
typedef struct chaos_totals {
	uint64_t readers;
	uint64_t snapshots;    /* snapshots read and checked */
	uint64_t configs;      /* config() deliveries */
	uint64_t distinct;     /* deliveries whose seq was above every earlier one */
	uint64_t torn;         /* content failing its checksum: must stay 0 */
	uint64_t dups;         /* config() with the bytes of the previous one: 0 */
	uint64_t seq_regress;  /* config() with an older seq than the previous one */
	uint64_t gen_regress;  /* generation going backwards: 0 */
	uint64_t cgen_regress; /* content_gen not strictly rising across config(): 0 */
	uint64_t hangs;        /* zkw_dispatch overran its timeout by > 2 s: 0 */
	uint64_t errors;       /* zkw_dispatch errors other than -EINTR: 0 */
	uint64_t max_dispatch_ms;
} chaos_totals;

typedef struct chaos_readers chaos_readers;

/* Fork n reader processes on segment shm (they retry opening it until it
 * exists). Fork them before starting threads that might hold libc locks in
 * the middle of an operation the children would need (they need none but
 * the ones client.h uses). NULL on failure. */
chaos_readers *chaos_readers_start(const char *shm, int n);
/* Wait until every reader's latest snapshot is valid and holds content seq.
 * false on timeout, with what each reader has printed to stderr. */
bool chaos_readers_wait_seq(chaos_readers *rd, uint64_t seq, int timeout_ms);
/* Wait until every reader has read at least one snapshot of generation >= gen. */
bool chaos_readers_wait_gen(chaos_readers *rd, uint64_t gen, int timeout_ms);
void chaos_readers_totals(chaos_readers *rd, chaos_totals *t);
/* Stop, reap (bounded) and free; fills *t (may be NULL) with the final
 * counts. Returns the number of readers that did not exit cleanly. */
int chaos_readers_stop(chaos_readers *rd, int timeout_ms, chaos_totals *t);

/* true when no counter that must stay 0 moved (and, with strict, when every
 * reader's deliveries were all distinct and in order). Prints the counts. */
bool chaos_totals_clean(const chaos_totals *t, bool strict, const char *label);
void chaos_totals_print(FILE *out, const chaos_totals *t, const char *label);

/* ---- writer ----------------------------------------------------------- */

typedef struct chaos_writer chaos_writer;

/* A thread with its own ZooKeeper handle that sets path to chaos_content(seq)
 * for seq = first_seq, first_seq + 1, ..., pausing pace_ms between writes.
 * Writes that fail (no quorum, connection loss) are retried with the next
 * seq: whether a lost one was applied is ZooKeeper's to say (chaos_zk_seq). */
chaos_writer *chaos_writer_start(const char *hosts, const char *path, uint64_t first_seq, int pace_ms);
uint64_t chaos_writer_acked(chaos_writer *w); /* writes acknowledged so far */
/* Wait until `more` writes beyond those acknowledged at the call succeeded. */
bool chaos_writer_wait_more(chaos_writer *w, uint64_t more, int timeout_ms);
/* Stop and free; returns the next unused seq. */
uint64_t chaos_writer_stop(chaos_writer *w);

/* The seq of the content ZooKeeper holds at path, asked until a quorum
 * answers or timeout_ms passes. 0, or a ZooKeeper error / -1 (not chaos
 * content). */
int chaos_zk_seq(const char *hosts, const char *path, uint64_t *seq, int timeout_ms);
/* Set path to chaos_content(seq) with a short-lived session (retried until
 * timeout_ms). ZOK or the last error. */
int chaos_zk_put(const char *hosts, const char *path, uint64_t seq, int timeout_ms);

/* ---- broker ----------------------------------------------------------- */

/* zkw-broker -z hosts -f path --shm shm --session-timeout session_ms
 * --reconcile 0 (so convergence proves re-armed watches, not the periodic
 * backstop), with extra environment env (may be NULL); waits until it logs
 * its first session. NULL on failure (reported). */
proc *chaos_broker_start(const char *hosts, const char *path, const char *shm, int session_ms,
                         const char *const *env);
/* The ZooKeeper session ids the broker has logged ("connected to ZooKeeper,
 * session 0x..."), up to max; returns how many. */
int chaos_broker_sessions(proc *b, uint64_t *ids, int max);

/* Entries of /proc/PID/task and /proc/PID/fd; -1 on error. */
int chaos_thread_count(pid_t pid);
int chaos_fd_count(pid_t pid);

/* A seedable PRNG (xorshift64*). */
uint64_t chaos_rand(uint64_t *state);

#endif
