/* SPDX-License-Identifier: Apache-2.0 */
/* itest.h - the fixtures the integration tests share: the run's ZooKeeper
 * and names, the broker started and stopped, its counters read, a reader
 * of its segment that awaits a state, ZooKeeper and local files written,
 * zkw-* tools run and the control socket asked.
 *
 * Each helper fails the test (cmocka) with a message that says what was
 * expected and what was found, the broker's output included where there
 * is a broker; every wait is bounded by the run's wait_ms.
 *
 *     zk = itest_zk_start(&(struct itest_config){.prefix = "zkwtv", .wait_ms = 20000});
 *     proc *b = itest_broker_start("-z", itest_hosts(), "-f", path, "--shm", shm, NULL);
 *     itest_broker_wait_segment(b, shm);
 *     struct itest_seg *s = itest_seg_open(shm, b);
 *     ITEST_WAIT_FOR(s, "v1 valid", .valid = ITEST_YES, .content = "v1");
 *     itest_seg_close(s);
 *     itest_broker_stop(b);
 *
 * The state is the process's own (one test binary, one run): forked
 * children must not use it.
 */
#ifndef ZKW_TESTS_ITEST_H
#define ZKW_TESTS_ITEST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include <zookeeper/zookeeper.h>

#include <zkw/client.h>

#include "proc.h"
#include "zkh.h"
#include "zkw_stats.h"

/* Sanitizers slow processes and their start-up many times over: tests
 * shorten their runs, or lengthen their bounds, under them. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ITEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define ITEST_SANITIZED 1
#endif
#endif
#ifndef ITEST_SANITIZED
#define ITEST_SANITIZED 0
#endif
#if defined(__SANITIZE_THREAD__)
#define ITEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ITEST_TSAN 1
#endif
#endif
#ifndef ITEST_TSAN
#define ITEST_TSAN 0
#endif

/* ---- the run ----------------------------------------------------------- */

struct itest_config {
	/* Names of the run: nodes below "/<prefix><pid>", segments
	 * "<prefix>.<pid>.<tag>", directories "<prefix>.<pid>...". */
	const char *prefix;
	int wait_ms;     /* the bound of any single expected change; 0: 20000 */
	size_t read_cap; /* the content a segment reader reads; 0: 64 KiB */
	bool follow;     /* readers follow a retired segment to its successor (itest_seg) */
};

/* Group setup: the run's names, then one standalone ZooKeeper server
 * (zkh_start(1)). NULL when it does not start (reported). */
zkh_cluster *itest_zk_start(const struct itest_config *c);
/* Only the names and bounds, for a test without ZooKeeper. */
void itest_configure(const struct itest_config *c);
/* Group teardown: ZooKeeper back if a test left it stopped, the nodes below
 * the root removed, the server stopped. */
void itest_zk_stop(void);
/* Member 0 started again if it is stopped: 1 restarted, 0 running, -1 it
 * would not start (reported). */
int itest_zk_up(void);

/* Teardowns: readers closed, children of proc_spawn killed, segments
 * unlinked; the group's also stops ZooKeeper (itest_zk_stop). */
void itest_test_cleanup(void);
void itest_group_cleanup(void);

zkh_cluster *itest_zk(void);
const char *itest_hosts(void);
const char *itest_root(void); /* "/<prefix><pid>" */
int itest_wait_ms(void);

/* ---- names ------------------------------------------------------------- */

/* "<root>/<tag>" into buf. */
const char *itest_node(char *buf, size_t cap, const char *tag);
/* "<prefix>.<pid>.<tag>": a leftover of a crashed run with a recycled pid
 * removed, the name remembered for itest_seg_unlink_all. */
const char *itest_seg_name(const char *tag);
/* Remember a name made elsewhere (a broker's default name). */
void itest_seg_remember(const char *name);
/* Unlink every remembered segment (teardowns). */
void itest_seg_unlink_all(void);
bool itest_seg_exists(const char *name); /* /dev/shm/<name> is there */

/* A new directory of this run, into buf (cap bytes): below
 * $ZKW_TEST_RUNDIR when set and the path fits, else mkdtemp() below $TMPDIR
 * or /tmp. NULL (reported) on failure. */
const char *itest_dir_make(char *buf, size_t cap);
/* Remove what path holds, and path itself unless keep_top; symbolic links
 * are removed, never followed. */
void itest_tree_remove(const char *path, bool keep_top);

/* ---- ZooKeeper, written synchronously ----------------------------------- */

/* Through zkh_set on the run's server (parents created as needed); text
 * NULL sets null data. */
void itest_put(const char *path, const char *text);
void itest_put_bytes(const char *path, const void *data, size_t len);
/* zkh_delete: recursive, a missing node is fine. */
void itest_delete(const char *path);
/* The same through a session of the test's own (lib/zkw_zk.h); len -1
 * sets null data. */
void itest_zk_put(zhandle_t *zh, const char *path, const void *data, int len);
void itest_zk_delete_tree(zhandle_t *zh, const char *path);
/* A raw handle on the run's server, to the session cid (its id and
 * password; NULL: a new session), once connected or after wait_ms. */
zhandle_t *itest_zk_attach(const clientid_t *cid, int session_timeout_ms);
/* Close a handle of itest_zk_attach (and free its watcher's context). */
void itest_zk_close(zhandle_t *zh);
/* End a session for real: a second handle attaches to it and closes it,
 * so the server ends the session under its owner. */
void itest_zk_session_end(const clientid_t *cid, int session_timeout_ms);

/* ---- local files ------------------------------------------------------- */

/* Write path with printf's fmt, replaced whole (a rename), as an editor or
 * a config manager does. */
void itest_write_file(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* dir/name holding len bytes of data; its path into buf. */
const char *itest_local_file(char *buf, size_t cap, const char *dir, const char *name, const void *data,
                             size_t len);

/* ---- assertions on text ------------------------------------------------ */

#define itest_assert_contains(text, needle)                                                                  \
	do {                                                                                                 \
		if (!strstr((text), (needle)))                                                               \
			fail_msg("expected \"%s\" in:\n%s", (needle), (text));                               \
	} while (0)

#define itest_assert_lacks(text, needle)                                                                     \
	do {                                                                                                 \
		if (strstr((text), (needle)))                                                                \
			fail_msg("did not expect \"%s\" in:\n%s", (needle), (text));                         \
	} while (0)

/* fail_msg, freeing a and b first (fail_msg does not return, and a leak
 * would add noise to a failing run under LeakSanitizer). */
void itest_fail_free(char *a, char *b, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- zkw-* tools, run to completion -------------------------------------- */

struct itest_run {
	int status;
	char *out, *err; /* never NULL */
};

/* proc_run of tool with the arguments given (NULL-terminated), bounded by
 * wait_ms; o may be NULL. */
struct itest_run itest_run_tool(const char *tool, const proc_options *o, const char *first, ...)
        __attribute__((sentinel));
void itest_run_free(struct itest_run *r);

#define ITEST_EXPECT_RUN(r, want_status)                                                                     \
	do {                                                                                                 \
		if ((r).status != (want_status))                                                             \
			itest_fail_free((r).out, (r).err,                                                    \
			                "exit %d, want %d; stdout: \"%.6000s\" stderr: \"%.6000s\"",         \
			                (r).status, (want_status), (r).out, (r).err);                        \
	} while (0)

/* The run's output holds needle on the stream named (out or err). */
#define ITEST_EXPECT_IN(r, stream, needle)                                                                   \
	do {                                                                                                 \
		if (!strstr((r).stream, (needle)))                                                           \
			itest_fail_free((r).out, (r).err,                                                    \
			                "want \"%s\" in " #stream                                            \
			                "; stdout: \"%.6000s\" stderr: \"%.6000s\"",                         \
			                (needle), (r).out, (r).err);                                         \
	} while (0)

/* zkw-inspect with the arguments given: its status (0..3: 3 is "not
 * valid", an answer too), its stdout malloc'd into *out. */
int itest_inspect(char **out, const char *first, ...) __attribute__((sentinel));

/* ---- the broker -------------------------------------------------------- */

/* zkw-broker with the arguments given (NULL-terminated); and with extra
 * environment entries env ("NAME=VALUE", NULL-terminated; may be NULL). */
proc *itest_broker_start_env(const char *const *env, const char *first, ...) __attribute__((sentinel));
#define itest_broker_start(...) itest_broker_start_env(NULL, __VA_ARGS__)
/* zkw-broker with the arguments of fixed (NULL-terminated), then those of
 * ap, once it has logged that it listens on its control socket sock;
 * fails (the broker dumped and killed) when it does not. */
proc *itest_broker_listening(const char *sock, const char *const *fixed, const char *first, va_list ap);
/* The segment exists once the broker has logged "into segment /<shm> ". */
void itest_broker_wait_segment(proc *b, const char *shm);
/* SIGTERM; it must exit with 0. Freed. */
void itest_broker_stop(proc *b);
/* SIGKILL; it must die of it. Freed. */
void itest_broker_kill(proc *b);

/* ---- the broker's counters (lib/zkw_stats.h) ------------------------------ */

/* "/dev/shm/zkw-stats.<pid>" into buf. */
const char *itest_stats_path(char *buf, size_t cap, pid_t pid);
/* The stats object of pid, copied; false when it cannot be read. */
bool itest_stats_load(pid_t pid, struct zkw_stats_view *v);
/* A counter now; fails without a stats object that has it. */
uint64_t itest_stat(pid_t pid, enum zkw_stat which);
/* Wait until a counter is at least min; name is for the message. */
void itest_stat_wait(pid_t pid, enum zkw_stat which, uint64_t min, const char *name);

/* ---- the control socket ------------------------------------------------ */

/* A connected stream socket, or -1 with errno. */
int itest_connect(const char *path);
/* Send req (unless NULL), read until `lines` lines have come or the peer
 * closes: the text, malloc'd and NUL-terminated. */
char *itest_ask(int fd, const char *req, int lines);
/* The same on a connection of its own to sock. */
char *itest_ask_at(const char *sock, const char *req, int lines);

/* ---- reader processes ---------------------------------------------------- */

/* What a forked reader process runs: it writes one byte to ready_fd once
 * it reads, then its report to report_fd, and _exits: it never returns. */
typedef void itest_child_fn(void *arg, int ready_fd, int report_fd);

/* Fork n processes (proc_fork) running fn(arg, ...), and wait until each
 * has written its ready byte; pids[] and reports[] (the read ends of their
 * report pipes) get them. Fails, every one killed, when one does not
 * start within wait_ms. */
void itest_children_start(int n, pid_t *pids, int *reports, itest_child_fn *fn, void *arg);
/* Reap each within timeout_ms and read its report, size bytes, into
 * out + i * size. Fails, every one killed, unless each exited with 0 and
 * a whole report. */
void itest_children_reports(int n, pid_t *pids, int *reports, void *out, size_t size, int timeout_ms);

/* ---- a reader that awaits a state --------------------------------------- */

/* Readers live in a small table, so that a teardown closes whatever a
 * failed test left open (itest_seg_close_all). */
struct itest_seg {
	bool used;
	bool follow; /* a retired segment is reopened by name (grown, re-created) */
	char name[ZKW_SHM_NAME_MAX + 1];
	zkw_reader r;
	proc *broker; /* for failure reports; may be NULL */
	zkw_snapshot snap;
	ssize_t len; /* of the last read; -1 before one */
	char *buf;   /* read_cap bytes of content, a NUL after them */
};

enum itest_tri { ITEST_ANY = 0, ITEST_YES, ITEST_NO };

/* What a snapshot must be; unset fields match anything. */
struct itest_want {
	int valid, connected, rejected, cached; /* enum itest_tri */
	const char *content;                    /* exactly this NUL-terminated content */
	const void *bytes;                      /* or exactly these len bytes */
	size_t len;
	const char *bundle;                                 /* or a bundle whose itest_bundle_text is this */
	const char *error;                                  /* the error starts with this */
	const char *error_has;                              /* the error holds this */
	const char *pointer;                                /* exactly this pointer */
	uint64_t after_gen;                                 /* a generation above this */
	bool (*pred)(const struct itest_seg *s, void *arg); /* and this holds */
	void *arg;
};

/* zkw_reader_open; fails with the reason (the broker's output dumped). */
struct itest_seg *itest_seg_open(const char *shm, proc *broker);
/* The same, NULL and *err (-errno) when it does not open. */
struct itest_seg *itest_seg_try_open(const char *shm, proc *broker, int *err);
/* zkw_reader_subscribe on the control socket; fails with the reason. */
struct itest_seg *itest_seg_subscribe(const char *sock, const char *path, unsigned flags, proc *broker);
void itest_seg_close(struct itest_seg *s); /* NULL is fine */
void itest_seg_close_all(void);            /* teardowns */
/* Read the snapshot (again while -EAGAIN) into s->buf and s->snap. */
ssize_t itest_seg_read(struct itest_seg *s);
bool itest_seg_matches(const struct itest_seg *s, const struct itest_want *w);
/* The last snapshot, on stderr. */
void itest_seg_describe(const struct itest_seg *s);
/* Wait on the segment's futex until its snapshot matches w; false, with
 * the snapshot and the broker's output on stderr, after timeout_ms. */
bool itest_seg_wait(struct itest_seg *s, const struct itest_want *w, int timeout_ms, const char *what);

#define ITEST_WAIT_FOR(s, what, ...)                                                                         \
	assert_true(itest_seg_wait((s), &(struct itest_want){__VA_ARGS__}, itest_wait_ms(), (what)))

/* "name=data,name=data,..." of a bundle (data shown up to 40 bytes), for
 * messages and comparisons; -1, and why in out, when it does not open. */
int itest_bundle_text(const void *content, size_t len, char *out, size_t cap);

/* Deliver everything published so far. */
void itest_dispatch_all(zkw_dispatcher *d);

/* Run child() in a forked process (waited for at most timeout_ms): 0 is a
 * pass, 77 a skip (the kernel refused what the child needs, e.g. a private
 * mount namespace for a small tmpfs: said once), anything else fails the
 * test, naming what. */
void itest_child_or_skip(int (*child)(void), const char *what, int timeout_ms);

#endif
