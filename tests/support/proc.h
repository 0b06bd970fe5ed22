/* SPDX-License-Identifier: Apache-2.0 */
/* proc.h - run zkw's binaries from tests: spawn, capture, await, reap.
 *
 * A child runs $ZKW_BUILD/<tool> (ZKW_BUILD defaults to "build") with its
 * stdout and stderr captured through pipes by a small reader thread per
 * child, so a chatty child never blocks on a full pipe and every wait is on
 * an event (output arriving, the child exiting - seen through a pidfd),
 * never on a sleep.
 *
 * The one registry of child processes of the tests and the benchmarks:
 * every child started here (proc_spawn, proc_fork - which zkh.c, chaos.c and
 * the benchmarks use) is registered, and gets a parent-death signal
 * (SIGKILL) for when the process itself is killed. At exit, whatever is
 * still registered is killed and reaped (proc_kill_all() first); on SIGINT,
 * SIGTERM, SIGHUP or SIGABRT it is killed, then the signal goes on to
 * whoever had it before (cmocka, ASan, a benchmark's own handler, the
 * default action). A process forked from one that registers children never
 * sweeps its parent's. Fork from the thread that lives longest (the main
 * thread): the parent-death signal fires when the *thread* that forked
 * exits.
 *
 *     const char *argv[] = {"-z", hosts, "-f", "/tmp/conf", NULL};
 *     proc *b = proc_spawn("zkw-broker", argv);
 *     assert_true(proc_wait_output(b, PROC_STDERR, "publishing", 10000));
 *     proc_signal(b, SIGTERM);
 *     assert_int_equal(proc_wait(b, 10000), 0);
 *     proc_free(b);
 *
 * Failures (timeouts, unexpected exits) are reported on stderr with the
 * child's captured stderr, so a test only has to assert on the result.
 */
#ifndef ZKW_TESTS_PROC_H
#define ZKW_TESTS_PROC_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct proc proc;

enum proc_stream { PROC_STDOUT = 1, PROC_STDERR = 2 };

/* proc_wait results besides an exit status 0..255. */
#define PROC_SIGNALED(sig) (128 + (sig)) /* killed by signal sig */
#define PROC_TIMEOUT       (-1000)       /* still running: was killed with SIGKILL */

typedef struct proc_options {
	/* Bytes fed to the child's stdin (then closed); NULL = /dev/null. */
	const void *stdin_data;
	size_t stdin_len;
	/* Extra environment entries "NAME=VALUE", NULL-terminated; may be NULL. */
	const char *const *env;
	/* Run this path instead of $ZKW_BUILD/<tool> (when it contains a '/'). */
	bool literal_path;
} proc_options;

/* Spawn $ZKW_BUILD/tool with the arguments argv (NULL-terminated, without
 * argv[0]; may be NULL). NULL on failure (reported on stderr). */
proc *proc_spawn(const char *tool, const char *const argv[]);
proc *proc_spawn_opts(const char *tool, const char *const argv[], const proc_options *o);

/* proc_spawn with the arguments listed: proc_spawnl("zkw-broker", "-z",
 * hosts, NULL) (at most 63). */
proc *proc_spawnl(const char *tool, const char *arg, ...) __attribute__((sentinel));

/* Collect the NULL-terminated string arguments first, ... of a variadic
 * wrapper into argv (NULL-terminated; aborts past cap - 1 arguments). */
void proc_collect_args(const char **argv, size_t cap, const char *first, va_list ap);

/* The full path of a tool: $ZKW_BUILD/tool, into buf. */
const char *proc_tool_path(const char *tool, char *buf, size_t cap);

pid_t proc_pid(const proc *p);
/* A name for messages: "zkw-broker[1234]". */
const char *proc_name(const proc *p);

/* Wait up to timeout_ms (< 0: forever) for the child to exit; it is reaped.
 * Returns its exit status, PROC_SIGNALED(sig), or PROC_TIMEOUT after
 * killing it with SIGKILL (reported with its stderr). Calling it again after
 * the exit returns the same result. */
int proc_wait(proc *p, int timeout_ms);
/* Has the child exited (and been reaped)? Non-blocking; *status as above. */
bool proc_exited(proc *p, int *status);

/* Wait until the stream has received `needle` (at least `count` times, for
 * the _count form), the child exits without it, or timeout_ms passes.
 * false on failure, reported with the child's stderr. */
bool proc_wait_output(proc *p, enum proc_stream s, const char *needle, int timeout_ms);
bool proc_wait_output_count(proc *p, enum proc_stream s, const char *needle, int count, int timeout_ms);
/* Occurrences of needle in what the stream has received so far. */
int proc_count(proc *p, enum proc_stream s, const char *needle);
/* Occurrences of needle in len bytes of data (NULs allowed), e.g. in the
 * output proc_run() returned. */
int proc_count_in(const char *data, size_t len, const char *needle);
/* A malloc'd, NUL-terminated copy of what the stream has received so far
 * (NULs inside are kept; *len, if given, is the byte count). free() it. */
char *proc_output(proc *p, enum proc_stream s, size_t *len);
/* Print the child's captured stderr (and stdout) to our stderr. */
void proc_dump(proc *p, const char *why);

/* Send a signal; 0 or -errno (-ESRCH once the child has been reaped). */
int proc_signal(proc *p, int sig);

/* Kill (SIGKILL) if still running, reap, free. Safe with NULL. */
void proc_free(proc *p);

/* Kill, reap and free every proc_spawn child not yet freed (teardowns;
 * children of proc_fork, such as ZooKeeper servers, are left alone). */
void proc_kill_all(void);

/* ---- children forked without exec ------------------------------------ */

/* fork() a registered child that dies with this process. stdio is flushed
 * first. In the child: 0, with SIGINT/SIGTERM/SIGHUP/SIGABRT back to their
 * default action. In the parent: the child's pid, or -errno (-EAGAIN when
 * the registry is full; reported). */
pid_t proc_fork(void);
/* In a child of proc_fork: has the process that forked it gone? */
bool proc_parent_gone(void);

/* For any child (of proc_fork, or one a test fork()ed itself): wait up to
 * timeout_ms (< 0: forever) for pid to exit (through a pidfd, no polling),
 * SIGKILL it past that, reap it and drop it from the registry. Returns the
 * wait status, or -1 on timeout or error. */
int proc_reap_pid(pid_t pid, int timeout_ms);
/* Send sig (then SIGCONT, so a stopped child can act on it) and
 * proc_reap_pid(pid, timeout_ms). */
int proc_stop_pid(pid_t pid, int sig, int timeout_ms);
/* SIGKILL every pid > 0 of pids, then reap each. */
void proc_kill_pids(const pid_t *pids, int n);
/* Non-blocking: has pid exited? If so it is reaped (*status, may be NULL,
 * gets the wait status) and dropped from the registry. */
bool proc_pid_exited(pid_t pid, int *status);

/* Run a tool to completion: spawn, wait up to timeout_ms, return the exit
 * status (or PROC_TIMEOUT / -1 when it cannot be spawned); the outputs are
 * returned malloc'd through *out / *err when not NULL. */
int proc_run(const char *tool, const char *const argv[], const proc_options *o, int timeout_ms, char **out,
             char **err);

#endif
