/* SPDX-License-Identifier: Apache-2.0 */
/* proc.c - run zkw's binaries from tests (see proc.h).
 *
 * One reader thread per child polls the child's stdout, stderr, stdin (while
 * there is data to feed) and a pidfd. Output is appended to buffers under
 * the child's mutex and a condition variable is broadcast, so waiting for a
 * line or for the exit is waiting for an event. When the pidfd reports the
 * exit, the thread drains what is left in the pipes, reaps the child by pid
 * and ends: a child is always reaped by its own thread, never by a
 * waitpid(-1) that could steal someone else's child.
 *
 * The registry below is the one list of live children of the tests and the
 * benchmarks (proc_spawn, proc_fork - zkh.c's servers, chaos.c's readers,
 * the benchmarks' children): an array of atomic words that a signal handler
 * can walk, and whoever reaps a child takes it out first.
 */
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zkw_clock.h"

extern char **environ;

#define PROC_REAP_AFTER_KILL_MS 10000 /* a SIGKILLed child is gone well before */
#define PROC_DUMP_MAX           8192  /* tail of an output printed in reports */
#define PROC_MAX_CHILDREN       1024  /* alive at once, in the registry */

struct proc_buf {
	char *data;
	size_t len, cap;
	bool eof;
};

struct proc {
	pid_t pid;
	int pidfd;
	int fd[3]; /* our ends: [0] child's stdin, [1] stdout, [2] stderr; -1 closed */
	char name[96];
	uint8_t *in_data;
	size_t in_len, in_off;
	struct proc_buf out[3]; /* [PROC_STDOUT], [PROC_STDERR] */
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t changed;
	bool reaped;
	int status; /* valid once reaped: exit status or PROC_SIGNALED() */
	bool timed_out;
	struct proc *next; /* in the list of handles */
};

/* ---- the registry -------------------------------------------------------- */

/* Every live child, killable from a signal handler: each entry packs
 * (owner pid << 32 | child pid), 0 = free, so that a process forked from
 * ours - which inherits the array, the atexit sweep and the handlers - never
 * touches its parent's children. */
static _Atomic uint64_t live[PROC_MAX_CHILDREN];
static pthread_once_t sweep_once = PTHREAD_ONCE_INIT;
static pid_t sweep_owner;
static struct sigaction old_action[NSIG];
static const int fatal_signals[] = {SIGINT, SIGTERM, SIGABRT, SIGHUP};
static pid_t forked_from; /* in a child of proc_fork: who forked it */

/* The proc_spawn handles not yet freed, for proc_kill_all. */
static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;
static struct proc *handles;

static uint64_t entry_of(pid_t child)
{
	return (uint64_t)(uint32_t)getpid() << 32 | (uint32_t)child;
}

static pid_t mine(uint64_t entry)
{
	return entry && (pid_t)(entry >> 32) == getpid() ? (pid_t)(uint32_t)entry : 0;
}

/* Async-signal-safe: kill and getpid only. */
static void kill_live(void)
{
	for (int i = 0; i < PROC_MAX_CHILDREN; i++) {
		pid_t pid = mine(atomic_load(&live[i]));

		if (pid > 0)
			kill(pid, SIGKILL);
	}
}

static void at_exit(void)
{
	if (getpid() == sweep_owner)
		proc_kill_all();
	for (int i = 0; i < PROC_MAX_CHILDREN; i++) {
		uint64_t entry = atomic_load(&live[i]);
		pid_t pid = mine(entry);

		if (pid > 0 && atomic_compare_exchange_strong(&live[i], &entry, 0)) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
		}
	}
}

static void on_fatal_signal(int sig)
{
	kill_live();
	/* Hand the signal on to whoever had it before us, so the process
	 * still dies (or not) the way it would have. */
	sigaction(sig, &old_action[sig], NULL);
	raise(sig);
}

static void install_sweep(void)
{
	struct sigaction sa;

	sweep_owner = getpid();
	atexit(at_exit);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_fatal_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESETHAND;
	for (size_t i = 0; i < sizeof(fatal_signals) / sizeof(fatal_signals[0]); i++) {
		int sig = fatal_signals[i];

		sigaction(sig, NULL, &old_action[sig]);
		if (old_action[sig].sa_handler == SIG_IGN)
			continue; /* e.g. SIGHUP under nohup: leave it ignored */
		sigaction(sig, &sa, NULL);
	}
}

static int register_pid(pid_t pid)
{
	pthread_once(&sweep_once, install_sweep);
	for (int i = 0; i < PROC_MAX_CHILDREN; i++) {
		uint64_t expected = 0;

		if (atomic_compare_exchange_strong(&live[i], &expected, entry_of(pid)))
			return 0;
	}
	fprintf(stderr, "proc: more than %d children alive\n", PROC_MAX_CHILDREN);
	return -EAGAIN;
}

/* Before the child is reaped: once reaped, its pid may be someone else's. */
static void unregister_pid(pid_t pid)
{
	for (int i = 0; i < PROC_MAX_CHILDREN; i++) {
		uint64_t expected = entry_of(pid);

		if (atomic_compare_exchange_strong(&live[i], &expected, 0))
			return;
	}
}

/* fork, registered; the child dies with us. In the child: 0, nothing done
 * but async-signal-safe calls (the caller may have threads). */
static pid_t fork_registered(void)
{
	pid_t parent = getpid(), pid = fork();

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		/* Die with the parent, even when it is SIGKILLed. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127); /* it died before the prctl */
		forked_from = parent;
		return 0;
	}
	if (register_pid(pid) < 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return -EAGAIN;
	}
	return pid;
}

static void add_handle(struct proc *p)
{
	pthread_mutex_lock(&handles_lock);
	p->next = handles;
	handles = p;
	pthread_mutex_unlock(&handles_lock);
}

static void remove_handle(struct proc *p)
{
	struct proc **pp;

	pthread_mutex_lock(&handles_lock);
	for (pp = &handles; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	pthread_mutex_unlock(&handles_lock);
}

/* ---- time ------------------------------------------------------------- */

/* Wait on p->changed until deadline_ms (zkw_clock_mono_ms; < 0 forever).
 * Lock held. false once the deadline has passed. */
static bool cond_wait(struct proc *p, int64_t deadline_ms)
{
	struct timespec ts;

	if (deadline_ms < 0) {
		pthread_cond_wait(&p->changed, &p->lock);
		return true;
	}
	if (zkw_clock_mono_ms() >= deadline_ms)
		return false;
	ts = zkw_clock_timespec((uint64_t)deadline_ms * 1000000u);
	pthread_cond_timedwait(&p->changed, &p->lock, &ts);
	return true;
}

static int64_t deadline_in(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : zkw_clock_mono_ms() + timeout_ms;
}

/* ---- the reader thread ------------------------------------------------- */

static void append(struct proc_buf *b, const char *data, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *bigger;

		while (b->len + n + 1 > cap)
			cap *= 2;
		bigger = realloc(b->data, cap);
		if (!bigger) {
			fprintf(stderr, "proc: out of memory capturing output\n");
			abort();
		}
		b->data = bigger;
		b->cap = cap;
	}
	memcpy(b->data + b->len, data, n);
	b->len += n;
	b->data[b->len] = '\0';
}

/* Read what is available on one output pipe. false at EOF or error. */
static bool pump(struct proc *p, int s)
{
	char chunk[65536];
	ssize_t n = read(p->fd[s], chunk, sizeof(chunk));

	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return true;
	pthread_mutex_lock(&p->lock);
	if (n > 0)
		append(&p->out[s], chunk, (size_t)n);
	else
		p->out[s].eof = true;
	pthread_cond_broadcast(&p->changed);
	pthread_mutex_unlock(&p->lock);
	if (n <= 0) {
		close(p->fd[s]);
		p->fd[s] = -1;
		return false;
	}
	return true;
}

static void feed(struct proc *p)
{
	ssize_t n = write(p->fd[0], p->in_data + p->in_off, p->in_len - p->in_off);

	if (n > 0)
		p->in_off += (size_t)n;
	if ((n < 0 && errno != EINTR && errno != EAGAIN) || p->in_off == p->in_len) {
		close(p->fd[0]); /* EOF for the child (or it closed its end: EPIPE) */
		p->fd[0] = -1;
	}
}

static void *reader_main(void *arg)
{
	struct proc *p = arg;
	bool exited = false;
	int status = 0, s;

	while (!exited) {
		struct pollfd fds[4];
		int nfds = 0, i;

		for (s = 0; s < 3; s++)
			if (p->fd[s] >= 0) {
				fds[nfds].fd = p->fd[s];
				fds[nfds].events = s == 0 ? POLLOUT : POLLIN;
				fds[nfds].revents = 0;
				nfds++;
			}
		fds[nfds].fd = p->pidfd;
		fds[nfds].events = POLLIN;
		fds[nfds].revents = 0;
		nfds++;
		if (poll(fds, (nfds_t)nfds, -1) < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "proc: %s: poll: %s\n", p->name, strerror(errno));
			abort();
		}
		for (i = 0; i < nfds; i++) {
			if (!fds[i].revents)
				continue;
			if (fds[i].fd == p->pidfd)
				exited = true;
			else if (fds[i].fd == p->fd[0])
				feed(p);
			else
				pump(p, fds[i].fd == p->fd[1] ? 1 : 2);
		}
	}
	/* The child is gone: whatever it wrote is in the pipes now. Drain
	 * without blocking (a grandchild might still hold a pipe open). */
	for (s = 1; s < 3; s++) {
		if (p->fd[s] < 0)
			continue;
		fcntl(p->fd[s], F_SETFL, fcntl(p->fd[s], F_GETFL) | O_NONBLOCK);
		for (;;) {
			char chunk[65536];
			ssize_t n = read(p->fd[s], chunk, sizeof(chunk));

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			pthread_mutex_lock(&p->lock);
			append(&p->out[s], chunk, (size_t)n);
			pthread_mutex_unlock(&p->lock);
		}
	}
	unregister_pid(p->pid);
	while (waitpid(p->pid, &status, 0) < 0 && errno == EINTR)
		;
	pthread_mutex_lock(&p->lock);
	for (s = 1; s < 3; s++)
		p->out[s].eof = true;
	p->status = WIFEXITED(status)     ? WEXITSTATUS(status)
	            : WIFSIGNALED(status) ? PROC_SIGNALED(WTERMSIG(status))
	                                  : -1;
	p->reaped = true;
	pthread_cond_broadcast(&p->changed);
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/* ---- spawn ------------------------------------------------------------ */

const char *proc_tool_path(const char *tool, char *buf, size_t cap)
{
	const char *build = getenv("ZKW_BUILD");

	if (!build || !*build)
		build = "build";
	snprintf(buf, cap, "%s/%s", build, tool);
	return buf;
}

static void close_fds(struct proc *p)
{
	for (int s = 0; s < 3; s++)
		if (p->fd[s] >= 0) {
			close(p->fd[s]);
			p->fd[s] = -1;
		}
	if (p->pidfd >= 0) {
		close(p->pidfd);
		p->pidfd = -1;
	}
}

/* Everything the child needs, built before fork: after it, the child only
 * makes async-signal-safe calls (the test has other threads). */
static char **child_env(const proc_options *o)
{
	size_t n = 0, extra = 0, i;
	char **env;

	while (environ[n])
		n++;
	while (o && o->env && o->env[extra])
		extra++;
	env = calloc(n + extra + 3, sizeof(*env));
	if (!env)
		return NULL;
	/* getenv returns the first match: the extras win. */
	for (i = 0; i < extra; i++)
		env[i] = (char *)o->env[i];
	for (i = 0; i < n; i++)
		env[extra + i] = environ[i];
	/* Last, so anything above wins: a broker a test starts listens on no
	 * control socket (the default, /run/zkw/broker.sock, is one per host)
	 * unless the test gives --socket or ZKW_SOCKET; nor does it use a
	 * state directory (the default, /var/lib/zkw, is the host's) unless
	 * the test gives --state-dir or ZKW_STATE_DIR. */
	env[extra + n] = (char *)"ZKW_SOCKET=none";
	env[extra + n + 1] = (char *)"ZKW_STATE_DIR=none";
	return env;
}

/* In the child of fork_registered: become the tool. */
static void exec_child(const char *path, char **argv, char **env, int in_fd, int out_fd, int err_fd)
{
	static const int reset[] = {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2};
	struct sigaction dfl;
	sigset_t none;
	size_t i;

	/* Ignored signals survive exec: give the tool a clean slate. */
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	for (i = 0; i < sizeof(reset) / sizeof(reset[0]); i++)
		sigaction(reset[i], &dfl, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (dup2(in_fd, STDIN_FILENO) < 0 || dup2(out_fd, STDOUT_FILENO) < 0 ||
	    dup2(err_fd, STDERR_FILENO) < 0)
		_exit(127);
	/* No test socket (a ZooKeeper session) or other child's pipe leaks in. */
	closefrom(3);
	execve(path, argv, env);
	{
		static const char msg[] = "proc: exec failed: ";
		const char *e = strerror(errno); /* not AS-safe in theory; we are exiting anyway */

		if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0 ||
		    write(STDERR_FILENO, path, strlen(path)) < 0 || write(STDERR_FILENO, ": ", 2) < 0 ||
		    write(STDERR_FILENO, e, strlen(e)) < 0 || write(STDERR_FILENO, "\n", 1) < 0)
			_exit(127);
	}
	_exit(127);
}

proc *proc_spawn_opts(const char *tool, const char *const argv[], const proc_options *o)
{
	char path[PATH_MAX];
	int in_pipe[2] = {-1, -1}, out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
	int devnull = -1, child_in;
	size_t argc = 0, i;
	char **args = NULL, **env = NULL;
	struct proc *p = NULL;
	sigset_t all, old;
	const char *base;
	int err;

	if (o && o->literal_path && strchr(tool, '/'))
		snprintf(path, sizeof(path), "%s", tool);
	else
		proc_tool_path(tool, path, sizeof(path));
	if (access(path, X_OK) != 0) {
		fprintf(stderr, "proc: cannot run %s: %s (is ZKW_BUILD right? run `make`)\n", path,
		        strerror(errno));
		return NULL;
	}
	while (argv && argv[argc])
		argc++;
	args = calloc(argc + 2, sizeof(*args));
	p = calloc(1, sizeof(*p));
	env = child_env(o);
	if (!args || !p || !env)
		goto fail_errno;
	base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	args[0] = (char *)base;
	for (i = 0; i < argc; i++)
		args[i + 1] = (char *)argv[i];
	p->fd[0] = p->fd[1] = p->fd[2] = -1;
	p->pidfd = -1;
	if (o && o->stdin_data) {
		p->in_data = malloc(o->stdin_len ? o->stdin_len : 1);
		if (!p->in_data)
			goto fail_errno;
		memcpy(p->in_data, o->stdin_data, o->stdin_len);
		p->in_len = o->stdin_len;
		if (pipe2(in_pipe, O_CLOEXEC) < 0)
			goto fail_errno;
		child_in = in_pipe[0];
	} else {
		devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (devnull < 0)
			goto fail_errno;
		child_in = devnull;
	}
	if (pipe2(out_pipe, O_CLOEXEC) < 0 || pipe2(err_pipe, O_CLOEXEC) < 0)
		goto fail_errno;

	p->pid = fork_registered();
	if (p->pid < 0) {
		errno = -p->pid;
		goto fail_errno;
	}
	if (p->pid == 0)
		exec_child(path, args, env, child_in, out_pipe[1], err_pipe[1]);

	snprintf(p->name, sizeof(p->name), "%.64s[%d]", base, (int)p->pid);
	/* The child's ends are the child's now. */
	close(out_pipe[1]);
	close(err_pipe[1]);
	if (in_pipe[0] >= 0)
		close(in_pipe[0]);
	if (devnull >= 0)
		close(devnull);
	p->fd[0] = in_pipe[1];
	p->fd[1] = out_pipe[0];
	p->fd[2] = err_pipe[0];
	in_pipe[0] = in_pipe[1] = out_pipe[0] = out_pipe[1] = err_pipe[0] = err_pipe[1] = devnull = -1;
	if (p->fd[0] >= 0) {
		fcntl(p->fd[0], F_SETFL, fcntl(p->fd[0], F_GETFL) | O_NONBLOCK);
		if (p->in_len == 0) {
			close(p->fd[0]);
			p->fd[0] = -1;
		}
	}
	p->pidfd = (int)syscall(SYS_pidfd_open, p->pid, 0);
	if (p->pidfd < 0) {
		err = errno;
		fprintf(stderr, "proc: pidfd_open(%d): %s\n", (int)p->pid, strerror(err));
		kill(p->pid, SIGKILL);
		unregister_pid(p->pid);
		waitpid(p->pid, NULL, 0);
		goto fail;
	}
	free(args);
	free(env);
	args = NULL;
	env = NULL;

	pthread_mutex_init(&p->lock, NULL);
	zkw_clock_cond_init(&p->changed);
	/* The reader thread takes no signal meant for the test, and an EPIPE
	 * on the child's stdin stays an error code, not a SIGPIPE. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(&p->thread, NULL, reader_main, p);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err) {
		fprintf(stderr, "proc: pthread_create: %s\n", strerror(err));
		kill(p->pid, SIGKILL);
		unregister_pid(p->pid);
		waitpid(p->pid, NULL, 0);
		pthread_cond_destroy(&p->changed);
		pthread_mutex_destroy(&p->lock);
		goto fail;
	}
	add_handle(p);
	return p;

fail_errno:
	fprintf(stderr, "proc: cannot spawn %s: %s\n", path, strerror(errno));
fail:
	for (i = 0; i < 2; i++) {
		if (in_pipe[i] >= 0)
			close(in_pipe[i]);
		if (out_pipe[i] >= 0)
			close(out_pipe[i]);
		if (err_pipe[i] >= 0)
			close(err_pipe[i]);
	}
	if (devnull >= 0)
		close(devnull);
	if (p) {
		close_fds(p);
		free(p->in_data);
	}
	free(p);
	free(args);
	free(env);
	return NULL;
}

void proc_collect_args(const char **argv, size_t cap, const char *first, va_list ap)
{
	size_t n = 0;

	for (const char *a = first; a; a = va_arg(ap, const char *)) {
		if (n + 1 >= cap) {
			fprintf(stderr, "proc: more than %zu arguments\n", cap - 1);
			abort();
		}
		argv[n++] = a;
	}
	argv[n] = NULL;
}

proc *proc_spawn(const char *tool, const char *const argv[])
{
	return proc_spawn_opts(tool, argv, NULL);
}

proc *proc_spawnl(const char *tool, const char *arg, ...)
{
	const char *argv[64];
	va_list ap;

	va_start(ap, arg);
	proc_collect_args(argv, sizeof(argv) / sizeof(argv[0]), arg, ap);
	va_end(ap);
	return proc_spawn_opts(tool, argv, NULL);
}

pid_t proc_pid(const proc *p)
{
	return p->pid;
}

const char *proc_name(const proc *p)
{
	return p->name;
}

/* ---- waiting ---------------------------------------------------------- */

static void describe_state(struct proc *p, char *buf, size_t cap)
{
	if (!p->reaped)
		snprintf(buf, cap, "still running");
	else if (p->status >= 128)
		snprintf(buf, cap, "killed by signal %d", p->status - 128);
	else
		snprintf(buf, cap, "exited with status %d", p->status);
}

static void dump_stream(struct proc *p, int s, const char *label)
{
	const struct proc_buf *b = &p->out[s];
	size_t from = b->len > PROC_DUMP_MAX ? b->len - PROC_DUMP_MAX : 0;

	fprintf(stderr, "---- %s %s (%zu bytes%s) ----\n", p->name, label, b->len, from ? ", tail" : "");
	if (b->len)
		fwrite(b->data + from, 1, b->len - from, stderr);
	if (b->len && b->data[b->len - 1] != '\n')
		fputc('\n', stderr);
}

/* Lock held. */
static void dump_locked(struct proc *p, const char *why)
{
	char state[64];

	describe_state(p, state, sizeof(state));
	fprintf(stderr, "proc: %s: %s (%s)\n", p->name, why, state);
	dump_stream(p, PROC_STDERR, "stderr");
	dump_stream(p, PROC_STDOUT, "stdout");
	fprintf(stderr, "----\n");
}

void proc_dump(proc *p, const char *why)
{
	pthread_mutex_lock(&p->lock);
	dump_locked(p, why);
	pthread_mutex_unlock(&p->lock);
}

static void join_reader(struct proc *p)
{
	if (p->thread) {
		pthread_join(p->thread, NULL);
		p->thread = 0;
		close_fds(p);
	}
}

int proc_wait(proc *p, int timeout_ms)
{
	int64_t deadline = deadline_in(timeout_ms);
	int status;

	pthread_mutex_lock(&p->lock);
	while (!p->reaped)
		if (!cond_wait(p, deadline))
			break;
	if (!p->reaped) {
		char why[96];

		snprintf(why, sizeof(why), "did not exit within %d ms, killing it (SIGKILL)", timeout_ms);
		dump_locked(p, why);
		p->timed_out = true;
		kill(p->pid, SIGKILL); /* not reaped yet: the pid is still ours */
		deadline = deadline_in(PROC_REAP_AFTER_KILL_MS);
		while (!p->reaped)
			if (!cond_wait(p, deadline)) {
				fprintf(stderr, "proc: %s survives SIGKILL\n", p->name);
				abort();
			}
	}
	status = p->timed_out ? PROC_TIMEOUT : p->status;
	pthread_mutex_unlock(&p->lock);
	join_reader(p);
	return status;
}

bool proc_exited(proc *p, int *status)
{
	bool reaped;

	pthread_mutex_lock(&p->lock);
	reaped = p->reaped;
	if (reaped && status)
		*status = p->timed_out ? PROC_TIMEOUT : p->status;
	pthread_mutex_unlock(&p->lock);
	return reaped;
}

int proc_count_in(const char *data, size_t len, const char *needle)
{
	size_t n = strlen(needle);
	const char *at, *end;
	int count = 0;

	if (!data || !n)
		return 0;
	end = data + len;
	/* memmem, not strstr: the output may hold NUL bytes. */
	for (at = data; at < end && (at = memmem(at, (size_t)(end - at), needle, n)); at += n)
		count++;
	return count;
}

static int count_locked(const struct proc_buf *b, const char *needle)
{
	return proc_count_in(b->data, b->len, needle);
}

int proc_count(proc *p, enum proc_stream s, const char *needle)
{
	int count;

	pthread_mutex_lock(&p->lock);
	count = count_locked(&p->out[s], needle);
	pthread_mutex_unlock(&p->lock);
	return count;
}

bool proc_wait_output_count(proc *p, enum proc_stream s, const char *needle, int count, int timeout_ms)
{
	int64_t deadline = deadline_in(timeout_ms);
	bool ok;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		ok = count_locked(&p->out[s], needle) >= count;
		if (ok || p->out[s].eof)
			break;
		if (!cond_wait(p, deadline))
			break;
	}
	if (!ok) {
		char why[512];

		snprintf(why, sizeof(why), "%d x \"%.300s\" wanted on %s, %d seen %s %d ms", count, needle,
		         s == PROC_STDOUT ? "stdout" : "stderr", count_locked(&p->out[s], needle),
		         p->out[s].eof ? "before its end, within" : "after", timeout_ms);
		dump_locked(p, why);
	}
	pthread_mutex_unlock(&p->lock);
	return ok;
}

bool proc_wait_output(proc *p, enum proc_stream s, const char *needle, int timeout_ms)
{
	return proc_wait_output_count(p, s, needle, 1, timeout_ms);
}

char *proc_output(proc *p, enum proc_stream s, size_t *len)
{
	char *copy;

	pthread_mutex_lock(&p->lock);
	copy = malloc(p->out[s].len + 1);
	if (copy) {
		if (p->out[s].len)
			memcpy(copy, p->out[s].data, p->out[s].len);
		copy[p->out[s].len] = '\0';
		if (len)
			*len = p->out[s].len;
	}
	pthread_mutex_unlock(&p->lock);
	return copy;
}

int proc_signal(proc *p, int sig)
{
	int rc = 0;

	/* Under the lock: once reaped, the pid may belong to someone else. */
	pthread_mutex_lock(&p->lock);
	if (p->reaped)
		rc = -ESRCH;
	else if (kill(p->pid, sig) < 0)
		rc = -errno;
	pthread_mutex_unlock(&p->lock);
	return rc;
}

/* ---- the end ---------------------------------------------------------- */

void proc_free(proc *p)
{
	int s;

	if (!p)
		return;
	remove_handle(p);
	pthread_mutex_lock(&p->lock);
	if (!p->reaped)
		kill(p->pid, SIGKILL);
	pthread_mutex_unlock(&p->lock);
	join_reader(p); /* the thread reaps it */
	pthread_cond_destroy(&p->changed);
	pthread_mutex_destroy(&p->lock);
	for (s = 0; s < 3; s++)
		free(p->out[s].data);
	free(p->in_data);
	free(p);
}

void proc_kill_all(void)
{
	for (;;) {
		struct proc *p;

		pthread_mutex_lock(&handles_lock);
		p = handles;
		pthread_mutex_unlock(&handles_lock);
		if (!p)
			break;
		if (!proc_exited(p, NULL))
			fprintf(stderr, "proc: killing leftover %s\n", p->name);
		proc_free(p);
	}
}

int proc_run(const char *tool, const char *const argv[], const proc_options *o, int timeout_ms, char **out,
             char **err)
{
	proc *p = proc_spawn_opts(tool, argv, o);
	int status;

	if (out)
		*out = NULL;
	if (err)
		*err = NULL;
	if (!p)
		return -1;
	status = proc_wait(p, timeout_ms);
	if (out)
		*out = proc_output(p, PROC_STDOUT, NULL);
	if (err)
		*err = proc_output(p, PROC_STDERR, NULL);
	proc_free(p);
	return status;
}

int proc_reap_pid(pid_t pid, int timeout_ms)
{
	int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
	int status = -1;

	if (pfd >= 0) {
		struct pollfd p = {.fd = pfd, .events = POLLIN};
		int n;

		do
			n = poll(&p, 1, timeout_ms);
		while (n < 0 && errno == EINTR);
		close(pfd);
		if (n == 0) {
			kill(pid, SIGKILL);
			unregister_pid(pid);
			waitpid(pid, &status, 0);
			return -1;
		}
	}
	unregister_pid(pid);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return status;
}

int proc_stop_pid(pid_t pid, int sig, int timeout_ms)
{
	kill(pid, sig);
	kill(pid, SIGCONT); /* a stopped process cannot act on SIGTERM */
	return proc_reap_pid(pid, timeout_ms);
}

void proc_kill_pids(const pid_t *pids, int n)
{
	for (int i = 0; i < n; i++)
		if (pids[i] > 0)
			kill(pids[i], SIGKILL);
	for (int i = 0; i < n; i++)
		if (pids[i] > 0)
			proc_reap_pid(pids[i], -1);
}

bool proc_pid_exited(pid_t pid, int *status)
{
	siginfo_t info = {0};

	/* Look without reaping, so the pid leaves the registry first. */
	if (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) < 0 || info.si_pid != pid)
		return false;
	unregister_pid(pid);
	while (waitpid(pid, status, 0) < 0 && errno == EINTR)
		;
	return true;
}

pid_t proc_fork(void)
{
	pid_t pid;

	fflush(NULL);
	pid = fork_registered();
	if (pid == 0)
		for (size_t i = 0; i < sizeof(fatal_signals) / sizeof(fatal_signals[0]); i++)
			signal(fatal_signals[i], SIG_DFL);
	return pid;
}

bool proc_parent_gone(void)
{
	return getppid() != forked_from;
}
