/* SPDX-License-Identifier: Apache-2.0 */
/* bench.h - what zkw's benchmarks share (tests/bench/bench.c).
 *
 * Not a bench_*.c, so the Makefile builds bench.c into the library every
 * benchmark links (with tests/support and lib/, which hold the rest: the
 * child-process registry is proc.h's, the four-letter words zkh.h's, the
 * ZooKeeper helpers lib/zkw_zk.h's, the clocks lib/zkw_clock.h's, options
 * lib/zkw_opt.h's). Here: messages, statistics (min/median/p99), shared
 * anonymous mappings and a futex rendezvous, forking children and starting
 * a zkw-broker, ZooKeeper set-up in one call, /proc readings (RSS, PSS,
 * CPU), and the numbered 100-byte config the latency benchmarks publish.
 *
 *     bench_init("bench_latency");                // before the first fork
 *     pid_t b = bench_broker_start(bin, hosts, path, shm, log);
 *     ...
 *     bench_stats s; bench_stats_of(v, n, &s);    // s.min, s.median, s.p99
 *
 * Inline, and only these, because they run inside a measured interval:
 * bench_futex (the wake floor's FUTEX_WAKE lies between its t0 and the
 * stamps), bench_reader_next (a latency reader wakes, reads and then
 * stamps), bench_config_seq (a reader parses the sequence number between
 * its read and its stamp) and bench_rendezvous_arrive (every reader calls it
 * right after its stamp, on the CPU the next reader needs). The clock the
 * stamps come from, zkw_clock_mono_ns(), is inline in zkw_clock.h.
 */
#ifndef ZKW_BENCH_H
#define ZKW_BENCH_H

#include <ctype.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <zkw/client.h>
#include <zookeeper/zookeeper.h>

#include "proc.h"
#include "zkh.h"
#include "zkw_clock.h"
#include "zkw_opt.h"
#include "zkw_zk.h"

#define BENCH_CONFIG_LEN 100 /* bytes of the numbered config */

/* ---- messages ------------------------------------------------------------ */

/* The benchmark's name for messages; SIGPIPE ignored; the ZooKeeper
 * client's own log off (our messages say what failed). Call first. */
void bench_init(const char *name);
/* "NAME: error: ..." on stderr, then exit(1) (the registry's sweep kills
 * the children). */
void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void bench_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The command line of a benchmark that takes [--quick] [--markdown] only
 * (and -q, -m, -h/--help): 0, or 2 (the exit status) once the usage is on
 * stderr. */
int bench_quick_markdown(int argc, char **argv, const char *name, void (*usage)(FILE *out), bool *quick,
                         bool *markdown);

/* ---- statistics ---------------------------------------------------------- */

typedef struct bench_stats {
	size_t n;
	double min, median, p99, max, mean;
} bench_stats;

/* qsort order of doubles. */
int bench_cmp_double(const void *a, const void *b);
/* Sorts v in place. Median of the two middle values for an even n;
 * percentiles by nearest rank. */
void bench_stats_of(double *v, size_t n, bench_stats *s);
const char *bench_verdict(bool met); /* "met" or "**missed**" */

/* ---- shared memory between the bench and its forked children ------------ */

void *bench_shared_alloc(size_t size); /* or die */

static inline long bench_futex(uint32_t *word, int op, uint32_t val, const struct timespec *rel)
{
	return syscall(SYS_futex, word, op, val, rel, NULL, 0);
}

/* "Everybody recorded": children add 1 to `count`; the one that reaches
 * `target` wakes the bench, which sleeps on the count word itself. */
typedef struct bench_rendezvous {
	uint32_t count;
	uint32_t target;
	uint64_t expect; /* the sequence number the children must see */
} bench_rendezvous;

static inline void bench_rendezvous_arrive(bench_rendezvous *rv)
{
	uint32_t target = __atomic_load_n(&rv->target, __ATOMIC_ACQUIRE);

	if (__atomic_add_fetch(&rv->count, 1, __ATOMIC_ACQ_REL) == target)
		bench_futex(&rv->count, FUTEX_WAKE, INT_MAX, NULL);
}

void bench_rendezvous_reset(bench_rendezvous *rv, uint32_t target, uint64_t expect);
/* Wait until every child arrived; false after timeout_ms. */
bool bench_rendezvous_wait(bench_rendezvous *rv, int timeout_ms);

/* ---- children ------------------------------------------------------------ */

/* proc_fork (proc.h: registered, dies with the bench, swept on any exit
 * path), or die. 0 in the child, the pid in the parent. Stop children with
 * proc_stop_pid / proc_kill_pids; a child checks proc_parent_gone(). */
pid_t bench_fork(void);
/* shm_unlink(name) at exit and on SIGINT/SIGTERM/SIGHUP, after the
 * registry's sweep: for a segment whose owner may be killed before it can
 * remove it. One name at a time. */
void bench_unlink_on_exit(const char *name);
/* The same for every /dev/shm entry whose name contains mark (segments and
 * lock files of many brokers), and for up to 4 files (control sockets). */
void bench_sweep_on_exit(const char *mark);
void bench_unlink_file_on_exit(const char *path);
/* In a forked reader: open the broker's segment, waiting (up to 20 s) for
 * the broker to create it; exit the child when it never comes. */
void bench_reader_open(zkw_reader *r, const char *shm);

/* In a forked reader: block (timeout_ms at a time) until the segment's
 * generation is past *seen, exiting the child once the bench is gone; then
 * zkw_reader_read into meta and buf. Its result: the content's length, and
 * *seen = meta->generation; or -errno (*seen unchanged: the next call reads
 * again at once). */
static inline ssize_t bench_reader_next(zkw_reader *r, uint64_t *seen, int timeout_ms, zkw_snapshot *meta,
                                        void *buf, size_t cap)
{
	for (;;) {
		int rc = zkw_reader_wait(r, *seen, timeout_ms);
		ssize_t n;

		if (proc_parent_gone())
			_exit(0);
		if (rc <= 0)
			continue;
		n = zkw_reader_read(r, meta, buf, cap);
		if (n >= 0)
			*seen = meta->generation;
		return n;
	}
}

/* Start `broker` on `path`, publishing into segment `shm` (unlinked at the
 * bench's exit); wait (bounded) until the segment holds a valid snapshot.
 * The broker listens on the control socket `socket_path` (NULL: none; the
 * default, /run/zkw/broker.sock, is one per host and never a bench's).
 * The broker gets SIGTERM when the bench dies. Dies on failure. */
pid_t bench_broker_start(const char *broker, const char *hosts, const char *path, const char *shm,
                         const char *socket_path, const char *log_path);
/* exec argv[0] with argv (NULL-terminated) as a child of the bench that gets
 * SIGTERM when the bench dies, stderr appended to log_path (NULL: ours). */
pid_t bench_spawn(const char *const *argv, const char *log_path);

/* ---- a broker's control socket (docs/design.md, "The control socket") ---- */

/* A connected, blocking socket to path, or -errno. */
int bench_ctl_connect(const char *path);
/* One request line (without its newline) to the broker at path; its answer
 * (the first line, or all of it for LIST/READERS when `all`) into out.
 * 0, or -errno. Bounded by timeout_ms. */
int bench_ctl_request(const char *path, const char *line, char *out, size_t cap, bool all, int timeout_ms);
/* Wait (bounded by timeout_ms) until the broker `pid` answers STATUS on
 * path with connected=1; dies naming log_path when it exits or never does. */
void bench_ctl_wait_ready(const char *path, pid_t pid, int timeout_ms, const char *log_path);

/* ---- ZooKeeper ----------------------------------------------------------- */

/* zkw_zk_connect (15 s to connect, 10 s sessions), or die. */
zhandle_t *bench_zk_connect(const char *hosts);
/* zkw_zk_put, or die. */
void bench_zk_put(zhandle_t *zh, const char *path, const void *data, int len);
/* zk_num_alive_connections from `mntr` of the first server, -1 if unknown. */
long bench_zk_connections(const char *hosts);
/* Any numeric `mntr` key of the first server of hosts ("zk_packets_received"),
 * -1 if unknown. */
long long bench_zk_mntr(const char *hosts, const char *key);

/* ---- workers that report "IDX SEQ NS" lines through a pipe -------------- */

/* The kazoo and Python workers write one line per change they take; the
 * bench reads them back. */
typedef struct bench_lines {
	int fd;
	size_t have;
	char buf[1 << 16];
} bench_lines;

/* Read lines from l->fd until n workers (IDX 0..n-1) reported seq, at most
 * timeout_ms: the latest NS of them, or 0 when not all did. */
uint64_t bench_lines_collect(bench_lines *l, int n, uint64_t seq, int timeout_ms);

/* ---- data for the plots ---------------------------------------------------- */

/* --data FILE: every bench_data() line is appended there (tab-separated,
 * the first word names the series); nothing without it. run.sh draws the
 * plots from these files. */
void bench_data_open(const char *path);
void bench_data(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- the numbered config ------------------------------------------------- */

/* A len-byte config that carries its sequence number; returns its length. */
int bench_config(char *buf, size_t cap, uint64_t seq, size_t len);

/* The sequence number in a config, or 0 when there is none. */
static inline uint64_t bench_config_seq(const void *buf, ssize_t len)
{
	const char *s = buf;
	uint64_t v = 0;
	ssize_t i;

	if (len < 5 || memcmp(s, "seq=", 4) != 0)
		return 0;
	for (i = 4; i < len && isdigit((unsigned char)s[i]); i++)
		v = v * 10 + (uint64_t)(s[i] - '0');
	return v;
}

/* ---- stamps ------------------------------------------------------------------
 * What a reader process records when it has a change: which one, when
 * (CLOCK_MONOTONIC ns); one per process, each on its own cache line. */

struct bench_stamp {
	uint64_t seq;
	uint64_t ns;
	uint8_t pad_[48];
};

/* ---- pipelined writes --------------------------------------------------------
 *
 * Sets of one node issued asynchronously (zoo_aset), seq as their context:
 * what is in flight, completed and failed, and when the newest completed
 * (CLOCK_MONOTONIC ns). One writer a process; lock it to read or reset. */

struct bench_writer {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned inflight;
	uint64_t completed, failed;
	uint64_t last_done_seq, last_done_ns;
};

extern struct bench_writer bench_wr;

/* zoo_aset of n bytes of buf to path, counted in flight (dies on refusal). */
void bench_set_issue(zhandle_t *zh, const char *path, const char *buf, int n, uint64_t seq);
/* Wait until fewer than limit sets are in flight (dies after timeout_ms). */
void bench_set_wait_below(unsigned limit, int timeout_ms);

/* ---- /proc --------------------------------------------------------------- */

long bench_rss_kb(pid_t pid); /* VmRSS, -1 if unknown */
/* Any "Key: N kB" line of /proc/PID/status (RssAnon, RssShmem), -1 if unknown. */
long bench_status_kb(pid_t pid, const char *key);
long bench_pss_kb(pid_t pid);  /* Pss of smaps_rollup, -1 if unknown */
double bench_cpu_s(pid_t pid); /* utime + stime in seconds, -1 if unknown */

#endif /* ZKW_BENCH_H */
