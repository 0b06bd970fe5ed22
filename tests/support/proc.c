/* proc.c - run zkw's binaries from tests (see proc.h).
 *
 * One reader thread per child polls the child's stdout, stderr, stdin (while
 * there is data to feed) and a pidfd. Output is appended to buffers under
 * the child's mutex and a condition variable is broadcast, so waiting for a
 * line or for the exit is waiting for an event. When the pidfd reports the
 * exit, the thread drains what is left in the pipes, reaps the child by pid
 * and ends: a child is always reaped by its own thread, never by a
 * waitpid(-1) that could steal someone else's child.
 */
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define PROC_REAP_AFTER_KILL_MS 10000 /* a SIGKILLed child is gone well before */
#define PROC_DUMP_MAX           8192  /* tail of an output printed in reports */

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
	struct proc *next; /* registry */
};

/* ---- registry --------------------------------------------------------- */

static pthread_mutex_t proc__registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct proc *proc__registry;
static pid_t proc__owner; /* a forked test child must not sweep our children */
static pthread_once_t proc__once = PTHREAD_ONCE_INIT;

static void proc__at_exit(void)
{
	if (getpid() == proc__owner)
		proc_kill_all();
}

static void proc__install(void)
{
	proc__owner = getpid();
	atexit(proc__at_exit);
}

static void proc__register(struct proc *p)
{
	pthread_mutex_lock(&proc__registry_lock);
	p->next = proc__registry;
	proc__registry = p;
	pthread_mutex_unlock(&proc__registry_lock);
}

static void proc__unregister(struct proc *p)
{
	struct proc **pp;

	pthread_mutex_lock(&proc__registry_lock);
	for (pp = &proc__registry; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	pthread_mutex_unlock(&proc__registry_lock);
}

/* ---- time ------------------------------------------------------------- */

static int64_t proc__now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait on p->changed until deadline_ms (monotonic; < 0 forever). Lock held.
 * false once the deadline has passed. */
static bool proc__cond_wait(struct proc *p, int64_t deadline_ms)
{
	struct timespec ts;

	if (deadline_ms < 0) {
		pthread_cond_wait(&p->changed, &p->lock);
		return true;
	}
	if (proc__now_ms() >= deadline_ms)
		return false;
	ts.tv_sec = deadline_ms / 1000;
	ts.tv_nsec = (deadline_ms % 1000) * 1000000;
	pthread_cond_timedwait(&p->changed, &p->lock, &ts);
	return true;
}

static int64_t proc__deadline(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : proc__now_ms() + timeout_ms;
}

/* ---- the reader thread ------------------------------------------------- */

static void proc__append(struct proc_buf *b, const char *data, size_t n)
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
static bool proc__pump(struct proc *p, int s)
{
	char chunk[65536];
	ssize_t n = read(p->fd[s], chunk, sizeof(chunk));

	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return true;
	pthread_mutex_lock(&p->lock);
	if (n > 0)
		proc__append(&p->out[s], chunk, (size_t)n);
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

static void proc__feed(struct proc *p)
{
	ssize_t n = write(p->fd[0], p->in_data + p->in_off, p->in_len - p->in_off);

	if (n > 0)
		p->in_off += (size_t)n;
	if ((n < 0 && errno != EINTR && errno != EAGAIN) || p->in_off == p->in_len) {
		close(p->fd[0]); /* EOF for the child (or it closed its end: EPIPE) */
		p->fd[0] = -1;
	}
}

static void *proc__reader(void *arg)
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
				proc__feed(p);
			else
				proc__pump(p, fds[i].fd == p->fd[1] ? 1 : 2);
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
			proc__append(&p->out[s], chunk, (size_t)n);
			pthread_mutex_unlock(&p->lock);
		}
	}
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

static void proc__close_fds(struct proc *p)
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
static char **proc__env(const proc_options *o)
{
	size_t n = 0, extra = 0, i;
	char **env;

	while (environ[n])
		n++;
	while (o && o->env && o->env[extra])
		extra++;
	env = calloc(n + extra + 1, sizeof(*env));
	if (!env)
		return NULL;
	/* getenv returns the first match: the extras win. */
	for (i = 0; i < extra; i++)
		env[i] = (char *)o->env[i];
	for (i = 0; i < n; i++)
		env[extra + i] = environ[i];
	return env;
}

static void proc__child(const char *path, char **argv, char **env, int in_fd, int out_fd, int err_fd,
                        pid_t parent)
{
	static const int reset[] = {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2};
	struct sigaction dfl;
	sigset_t none;
	size_t i;

	/* Die with the test, even when it is SIGKILLed. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(127);
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
	pthread_condattr_t ca;
	sigset_t all, old;
	pid_t parent = getpid();
	const char *base;
	int err;

	pthread_once(&proc__once, proc__install);
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
	env = proc__env(o);
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

	p->pid = fork();
	if (p->pid < 0)
		goto fail_errno;
	if (p->pid == 0)
		proc__child(path, args, env, child_in, out_pipe[1], err_pipe[1], parent);

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
		waitpid(p->pid, NULL, 0);
		goto fail;
	}
	free(args);
	free(env);
	args = NULL;
	env = NULL;

	pthread_mutex_init(&p->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->changed, &ca);
	pthread_condattr_destroy(&ca);
	/* The reader thread takes no signal meant for the test, and an EPIPE
	 * on the child's stdin stays an error code, not a SIGPIPE. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(&p->thread, NULL, proc__reader, p);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err) {
		fprintf(stderr, "proc: pthread_create: %s\n", strerror(err));
		kill(p->pid, SIGKILL);
		waitpid(p->pid, NULL, 0);
		pthread_cond_destroy(&p->changed);
		pthread_mutex_destroy(&p->lock);
		goto fail;
	}
	proc__register(p);
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
		proc__close_fds(p);
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

pid_t proc_pid(const proc *p)
{
	return p->pid;
}

const char *proc_name(const proc *p)
{
	return p->name;
}

/* ---- waiting ---------------------------------------------------------- */

static void proc__describe_state(struct proc *p, char *buf, size_t cap)
{
	if (!p->reaped)
		snprintf(buf, cap, "still running");
	else if (p->status >= 128)
		snprintf(buf, cap, "killed by signal %d", p->status - 128);
	else
		snprintf(buf, cap, "exited with status %d", p->status);
}

static void proc__dump_stream(struct proc *p, int s, const char *label)
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
static void proc__dump_locked(struct proc *p, const char *why)
{
	char state[64];

	proc__describe_state(p, state, sizeof(state));
	fprintf(stderr, "proc: %s: %s (%s)\n", p->name, why, state);
	proc__dump_stream(p, PROC_STDERR, "stderr");
	proc__dump_stream(p, PROC_STDOUT, "stdout");
	fprintf(stderr, "----\n");
}

void proc_dump(proc *p, const char *why)
{
	pthread_mutex_lock(&p->lock);
	proc__dump_locked(p, why);
	pthread_mutex_unlock(&p->lock);
}

static void proc__join(struct proc *p)
{
	if (p->thread) {
		pthread_join(p->thread, NULL);
		p->thread = 0;
		proc__close_fds(p);
	}
}

int proc_wait(proc *p, int timeout_ms)
{
	int64_t deadline = proc__deadline(timeout_ms);
	int status;

	pthread_mutex_lock(&p->lock);
	while (!p->reaped)
		if (!proc__cond_wait(p, deadline))
			break;
	if (!p->reaped) {
		char why[96];

		snprintf(why, sizeof(why), "did not exit within %d ms, killing it (SIGKILL)", timeout_ms);
		proc__dump_locked(p, why);
		p->timed_out = true;
		kill(p->pid, SIGKILL); /* not reaped yet: the pid is still ours */
		deadline = proc__deadline(PROC_REAP_AFTER_KILL_MS);
		while (!p->reaped)
			if (!proc__cond_wait(p, deadline)) {
				fprintf(stderr, "proc: %s survives SIGKILL\n", p->name);
				abort();
			}
	}
	status = p->timed_out ? PROC_TIMEOUT : p->status;
	pthread_mutex_unlock(&p->lock);
	proc__join(p);
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

static int proc__count_locked(const struct proc_buf *b, const char *needle)
{
	size_t n = strlen(needle);
	const char *at, *end;
	int count = 0;

	if (!b->data || !n)
		return 0;
	end = b->data + b->len;
	/* memmem, not strstr: the output may hold NUL bytes. */
	for (at = b->data; at < end && (at = memmem(at, (size_t)(end - at), needle, n)); at += n)
		count++;
	return count;
}

int proc_count(proc *p, enum proc_stream s, const char *needle)
{
	int count;

	pthread_mutex_lock(&p->lock);
	count = proc__count_locked(&p->out[s], needle);
	pthread_mutex_unlock(&p->lock);
	return count;
}

bool proc_wait_output_count(proc *p, enum proc_stream s, const char *needle, int count, int timeout_ms)
{
	int64_t deadline = proc__deadline(timeout_ms);
	bool ok;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		ok = proc__count_locked(&p->out[s], needle) >= count;
		if (ok || p->out[s].eof)
			break;
		if (!proc__cond_wait(p, deadline))
			break;
	}
	if (!ok) {
		char why[512];

		snprintf(why, sizeof(why), "%d x \"%.300s\" wanted on %s, %d seen %s %d ms", count, needle,
		         s == PROC_STDOUT ? "stdout" : "stderr", proc__count_locked(&p->out[s], needle),
		         p->out[s].eof ? "before its end, within" : "after", timeout_ms);
		proc__dump_locked(p, why);
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
	proc__unregister(p);
	pthread_mutex_lock(&p->lock);
	if (!p->reaped)
		kill(p->pid, SIGKILL);
	pthread_mutex_unlock(&p->lock);
	proc__join(p); /* the thread reaps it */
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

		pthread_mutex_lock(&proc__registry_lock);
		p = proc__registry;
		pthread_mutex_unlock(&proc__registry_lock);
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
			waitpid(pid, &status, 0);
			return -1;
		}
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return status;
}
