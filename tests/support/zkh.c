/* zkh.c - real ZooKeeper servers on loopback for tests (see zkh.h).
 *
 * tools/zk.sh stays the one place that knows how a server is configured and
 * launched: `zk.sh prepare` picks ports and writes DIR/N/zoo.cfg, and each
 * member is a child of the test process that sets PR_SET_PDEATHSIG and then
 * becomes the JVM through `zk.sh exec` (bash execs java, so the pid we hold
 * is the JVM's).  The test process therefore reaps its servers itself, and a
 * test killed by anything - even SIGKILL - takes its servers with it.  On
 * top of that, exit and SIGINT/SIGTERM/SIGABRT/SIGHUP kill every registered
 * server.
 *
 * The parent-death signal fires when the *thread* that forked exits: start
 * and restart members from the main thread (cmocka runs tests there).
 */
#include "zkh.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zookeeper/zookeeper.h>

#define ZKH_MAX_NODES          5
#define ZKH_DEFAULT_TICK_MS    200
#define ZKH_STOP_TIMEOUT_MS    5000
#define ZKH_SESSION_MS         4000
#define ZKH_CONNECT_TIMEOUT_MS 15000

struct zkh_member {
	int port;
	pid_t pid; /* 0 when stopped */
};

struct zkh_cluster {
	int nodes;
	int tick_ms;
	bool own_tmpdir; /* dir made under /tmp rather than ZKW_TEST_RUNDIR */
	char dir[PATH_MAX];
	char zk_sh[PATH_MAX];
	char hosts[ZKH_MAX_NODES * 24];
	struct zkh_member member[ZKH_MAX_NODES];
};

/* ---- time ------------------------------------------------------------ */

static int64_t zkh__now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void zkh__sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static int zkh__env_int(const char *name, int fallback)
{
	const char *v = getenv(name);
	char *end;
	long n;

	if (!v || !*v)
		return fallback;
	n = strtol(v, &end, 10);
	return (*end || n <= 0 || n > INT_MAX) ? fallback : (int)n;
}

static int zkh__start_timeout_ms(void)
{
	return zkh__env_int("ZKW_ZK_START_TIMEOUT", 30) * 1000;
}

/* ---- the sweep: every live server pid, killable from a signal handler --- */

/* Each entry packs (owner pid << 32 | server pid): a child forked by a
 * multi-process test inherits the registry and the handlers, and must not
 * kill its parent's servers when it exits. */
#define ZKH_REGISTRY_SIZE 64
static _Atomic uint64_t zkh__registry[ZKH_REGISTRY_SIZE];
static pthread_once_t zkh__once = PTHREAD_ONCE_INIT;
static struct sigaction zkh__old_action[NSIG];
static const int zkh__fatal_signals[] = {SIGINT, SIGTERM, SIGABRT, SIGHUP};

static uint64_t zkh__entry(pid_t server)
{
	return (uint64_t)(uint32_t)getpid() << 32 | (uint32_t)server;
}

static pid_t zkh__mine(uint64_t entry)
{
	return entry && (pid_t)(entry >> 32) == getpid() ? (pid_t)(uint32_t)entry : 0;
}

static void zkh__kill_all(void)
{
	for (int i = 0; i < ZKH_REGISTRY_SIZE; i++) {
		pid_t pid = zkh__mine(atomic_load(&zkh__registry[i]));
		if (pid > 0)
			kill(pid, SIGKILL); /* async-signal-safe, as is getpid */
	}
}

static void zkh__on_exit(void)
{
	for (int i = 0; i < ZKH_REGISTRY_SIZE; i++) {
		uint64_t entry = atomic_load(&zkh__registry[i]);
		pid_t pid = zkh__mine(entry);
		if (pid > 0 && atomic_compare_exchange_strong(&zkh__registry[i], &entry, 0)) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
		}
	}
}

static void zkh__on_signal(int sig)
{
	zkh__kill_all();
	/* Hand the signal on to whoever had it before us (cmocka, ASan, the
	 * default action), so the process still dies the way it would have. */
	sigaction(sig, &zkh__old_action[sig], NULL);
	raise(sig);
}

static void zkh__install_sweep(void)
{
	struct sigaction sa;

	atexit(zkh__on_exit);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = zkh__on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESETHAND;
	for (size_t i = 0; i < sizeof(zkh__fatal_signals) / sizeof(zkh__fatal_signals[0]); i++) {
		int sig = zkh__fatal_signals[i];
		sigaction(sig, NULL, &zkh__old_action[sig]);
		if (zkh__old_action[sig].sa_handler == SIG_IGN)
			continue; /* e.g. SIGHUP under nohup: leave it ignored */
		sigaction(sig, &sa, NULL);
	}
}

static void zkh__register(pid_t pid)
{
	for (int i = 0; i < ZKH_REGISTRY_SIZE; i++) {
		uint64_t expected = 0;
		if (atomic_compare_exchange_strong(&zkh__registry[i], &expected, zkh__entry(pid)))
			return;
	}
	/* Full: the child still has its parent-death signal. */
	fprintf(stderr, "zkh: more than %d servers alive, pid %d not swept at exit\n", ZKH_REGISTRY_SIZE,
	        (int)pid);
}

static void zkh__unregister(pid_t pid)
{
	for (int i = 0; i < ZKH_REGISTRY_SIZE; i++) {
		uint64_t expected = zkh__entry(pid);
		if (atomic_compare_exchange_strong(&zkh__registry[i], &expected, 0))
			return;
	}
}

/* ---- files and paths ---------------------------------------------------- */

static bool zkh__is_file(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* tools/zk.sh: $ZKW_ZK_SH, else search upwards from the working directory
 * and from the test binary (build/tests/test_x or build/asan/tests/test_x). */
static int zkh__find_zk_sh(char *out, size_t cap)
{
	const char *env = getenv("ZKW_ZK_SH");
	char base[2][PATH_MAX];

	if (env && *env)
		return snprintf(out, cap, "%s", env) < (int)cap && zkh__is_file(out) ? 0 : -ENOENT;
	if (!getcwd(base[0], sizeof(base[0])))
		base[0][0] = '\0';
	ssize_t n = readlink("/proc/self/exe", base[1], sizeof(base[1]) - 1);
	base[1][n > 0 ? n : 0] = '\0';
	for (int b = 0; b < 2; b++) {
		char dir[PATH_MAX];
		if (snprintf(dir, sizeof(dir), "%s", base[b]) >= (int)sizeof(dir))
			continue;
		for (int depth = 0; depth < 8 && dir[0]; depth++) {
			if (snprintf(out, cap, "%s/tools/zk.sh", dir) < (int)cap && zkh__is_file(out))
				return 0;
			char *slash = strrchr(dir, '/');
			if (!slash)
				break;
			*slash = '\0';
		}
	}
	return -ENOENT;
}

static int zkh__rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	remove(path);
	return 0;
}

static void zkh__rm_rf(const char *dir)
{
	nftw(dir, zkh__rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void zkh__write_pid(const zkh_cluster *zk, int member, pid_t pid)
{
	char path[PATH_MAX + 32];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%d/pid", zk->dir, member + 1);
	if (pid == 0) {
		unlink(path);
		return;
	}
	f = fopen(path, "w");
	if (f) {
		fprintf(f, "%d\n", (int)pid);
		fclose(f);
	}
}

/* ---- processes ---------------------------------------------------------- */

/* Run `zk.sh ARGS...` to completion; its stdout into out (may be NULL). */
static int zkh__run_zk_sh(const zkh_cluster *zk, char *out, size_t cap, ...)
{
	const char *argv[12];
	int argc = 0, pipefd[2], status;
	va_list ap;
	pid_t pid;
	size_t used = 0;

	argv[argc++] = "bash";
	argv[argc++] = zk->zk_sh;
	va_start(ap, cap);
	while (argc < 11 && (argv[argc] = va_arg(ap, const char *)) != NULL)
		argc++;
	va_end(ap);
	argv[argc] = NULL;

	if (pipe2(pipefd, O_CLOEXEC) == -1)
		return -errno;
	pid = fork();
	if (pid == -1) {
		int err = errno;
		close(pipefd[0]);
		close(pipefd[1]);
		return -err;
	}
	if (pid == 0) {
		dup2(pipefd[1], STDOUT_FILENO);
		execvp("bash", (char *const *)argv);
		_exit(127);
	}
	close(pipefd[1]);
	for (;;) {
		char drain[256];
		char *dst = out && used + 1 < cap ? out + used : drain;
		size_t room = out && used + 1 < cap ? cap - 1 - used : sizeof(drain);
		ssize_t n = read(pipefd[0], dst, room);
		if (n > 0 && dst != drain)
			used += (size_t)n;
		if (n == 0 || (n < 0 && errno != EINTR))
			break;
	}
	close(pipefd[0]);
	if (out && cap)
		out[used] = '\0';
	while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
		;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

static int zkh__spawn(zkh_cluster *zk, int member)
{
	char n[16], log_path[PATH_MAX + 32];
	pid_t parent = getpid(), pid;
	int log_fd;

	snprintf(n, sizeof(n), "%d", member + 1);
	snprintf(log_path, sizeof(log_path), "%s/%d/zk.log", zk->dir, member + 1);
	log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (log_fd == -1)
		return -errno;
	dprintf(log_fd, "==== zkh: start member %d\n", member);

	pid = fork();
	if (pid == -1) {
		int err = errno;
		close(log_fd);
		return -err;
	}
	if (pid == 0) {
		sigset_t all;

		/* Die with the test, even when it is SIGKILLed. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		/* A clean slate for the JVM: default signals, nothing blocked,
		 * none of the test's sockets (a client connection kept open
		 * by the server's inherited fd would hide a close). */
		signal(SIGTERM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		signal(SIGPIPE, SIG_DFL);
		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		int devnull = open("/dev/null", O_RDONLY);
		dup2(devnull, STDIN_FILENO);
		dup2(log_fd, STDOUT_FILENO);
		dup2(log_fd, STDERR_FILENO);
		closefrom(3);
		execlp("bash", "bash", zk->zk_sh, "exec", zk->dir, n, (char *)NULL);
		_exit(127);
	}
	close(log_fd);
	zk->member[member].pid = pid;
	zkh__register(pid);
	zkh__write_pid(zk, member, pid);
	return 0;
}

/* Signal a member and reap it; escalate TERM to KILL after the bound. */
static int zkh__halt(zkh_cluster *zk, int member, int sig)
{
	pid_t pid = zk->member[member].pid;
	int64_t deadline;

	if (pid <= 0)
		return 0;
	kill(pid, sig);
	kill(pid, SIGCONT); /* a paused JVM cannot act on SIGTERM */
	deadline = zkh__now_ms() + ZKH_STOP_TIMEOUT_MS;
	for (;;) {
		pid_t got = waitpid(pid, NULL, WNOHANG);
		if (got == pid || (got == -1 && errno == ECHILD))
			break;
		if (zkh__now_ms() >= deadline) {
			fprintf(stderr,
			        "zkh: member %d (pid %d) still alive %d ms after signal %d, killing\n",
			        member, (int)pid, ZKH_STOP_TIMEOUT_MS, sig);
			kill(pid, SIGKILL);
			while (waitpid(pid, NULL, 0) == -1 && errno == EINTR)
				;
			break;
		}
		zkh__sleep_ms(5);
	}
	zkh__unregister(pid);
	zk->member[member].pid = 0;
	zkh__write_pid(zk, member, 0);
	return 0;
}

/* Has this member's process exited on its own?  Reaps it if so. */
static bool zkh__died(zkh_cluster *zk, int member)
{
	pid_t pid = zk->member[member].pid;
	int status;

	if (pid <= 0)
		return true;
	if (waitpid(pid, &status, WNOHANG) != pid)
		return false;
	zkh__unregister(pid);
	zk->member[member].pid = 0;
	zkh__write_pid(zk, member, 0);
	return true;
}

/* ---- four-letter words ---------------------------------------------------- */

static int zkh__4lw_port(int port, const char *word, char *buf, int cap, int timeout_ms)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int64_t deadline = zkh__now_ms() + timeout_ms;
	int fd, used = 0, err = 0;
	struct pollfd pfd;

	if (cap <= 0)
		return -EINVAL;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
		if (errno != EINPROGRESS) {
			err = -errno;
			goto out;
		}
		pfd = (struct pollfd){.fd = fd, .events = POLLOUT};
		if (poll(&pfd, 1, timeout_ms) != 1) {
			err = -ETIMEDOUT;
			goto out;
		}
		socklen_t len = sizeof(err);
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err) {
			err = -err;
			goto out;
		}
	}
	if (send(fd, word, strlen(word), MSG_NOSIGNAL) != (ssize_t)strlen(word)) {
		err = -EIO;
		goto out;
	}
	for (;;) {
		int left = (int)(deadline - zkh__now_ms());
		char drain[512];
		if (left <= 0) {
			err = -ETIMEDOUT;
			break;
		}
		pfd = (struct pollfd){.fd = fd, .events = POLLIN};
		if (poll(&pfd, 1, left) != 1)
			continue;
		bool room = used < cap - 1;
		ssize_t n = recv(fd, room ? buf + used : drain,
		                 room ? (size_t)(cap - 1 - used) : sizeof(drain), 0);
		if (n == 0)
			break;
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			err = -errno;
			break;
		}
		if (room)
			used += (int)n;
	}
out:
	close(fd);
	buf[used] = '\0';
	return err ? err : used;
}

int zkh_4lw(const zkh_cluster *zk, int member, const char *word, char *buf, int cap)
{
	if (!zk || member < 0 || member >= zk->nodes)
		return -EINVAL;
	return zkh__4lw_port(zk->member[member].port, word, buf, cap, 2000);
}

/* The `Mode:` value of a member's srvr, or "" when it does not serve. */
static void zkh__mode(const zkh_cluster *zk, int member, char *mode, size_t cap)
{
	char reply[2048];
	const char *m;

	mode[0] = '\0';
	if (zk->member[member].pid <= 0)
		return;
	/* Generous: a JVM just resumed or starting on a loaded machine answers late. */
	if (zkh__4lw_port(zk->member[member].port, "srvr", reply, sizeof(reply), 3000) < 0)
		return;
	m = strstr(reply, "Mode: ");
	if (!m)
		return;
	m += strlen("Mode: ");
	snprintf(mode, cap, "%.*s", (int)strcspn(m, "\r\n"), m);
}

bool zkh_member_serving(const zkh_cluster *zk, int member)
{
	char mode[32];

	if (!zk || member < 0 || member >= zk->nodes)
		return false;
	zkh__mode(zk, member, mode, sizeof(mode));
	return mode[0] != '\0';
}

static int zkh__leader_now(const zkh_cluster *zk)
{
	char mode[32];

	for (int i = 0; i < zk->nodes; i++) {
		zkh__mode(zk, i, mode, sizeof(mode));
		if (!strcmp(mode, "leader") || !strcmp(mode, "standalone"))
			return i;
	}
	return -1;
}

int zkh_leader(zkh_cluster *zk, int timeout_ms)
{
	int64_t deadline = zkh__now_ms() + timeout_ms;
	int leader;

	if (!zk)
		return -1;
	while ((leader = zkh__leader_now(zk)) < 0 && zkh__now_ms() < deadline)
		zkh__sleep_ms(20);
	return leader;
}

/* Wait until one member serves; on failure say why, with its log. */
static int zkh__wait_member(zkh_cluster *zk, int member, int timeout_ms)
{
	int64_t deadline = zkh__now_ms() + timeout_ms;

	while (!zkh_member_serving(zk, member)) {
		if (zkh__died(zk, member)) {
			fprintf(stderr, "zkh: member %d (port %d) exited during start-up\n", member,
			        zk->member[member].port);
			zkh_dump_log(zk, member, 40);
			return -ECHILD;
		}
		if (zkh__now_ms() >= deadline) {
			fprintf(stderr, "zkh: member %d (port %d) not serving after %d ms\n", member,
			        zk->member[member].port, timeout_ms);
			zkh_dump_log(zk, member, 40);
			return -ETIMEDOUT;
		}
		zkh__sleep_ms(20);
	}
	return 0;
}

int zkh_wait_serving(zkh_cluster *zk, int timeout_ms)
{
	int64_t deadline = zkh__now_ms() + timeout_ms;

	if (!zk)
		return -EINVAL;
	for (;;) {
		int serving = 0;
		for (int i = 0; i < zk->nodes; i++)
			serving += zkh_member_serving(zk, i);
		if (serving > zk->nodes / 2 && zkh__leader_now(zk) >= 0)
			return 0;
		if (zkh__now_ms() >= deadline)
			return -ETIMEDOUT;
		zkh__sleep_ms(20);
	}
}

/* ---- cluster lifecycle ------------------------------------------------------ */

static int zkh__make_dir(zkh_cluster *zk)
{
	const char *rundir = getenv("ZKW_TEST_RUNDIR");

	if (rundir && *rundir) {
		if (mkdir(rundir, 0755) == -1 && errno != EEXIST)
			return -errno;
		snprintf(zk->dir, sizeof(zk->dir), "%s/zk-XXXXXX", rundir);
	} else {
		snprintf(zk->dir, sizeof(zk->dir), "/tmp/zkw-zk-XXXXXX");
		zk->own_tmpdir = true;
	}
	return mkdtemp(zk->dir) ? 0 : -errno;
}

static int zkh__parse_hosts(zkh_cluster *zk)
{
	const char *p = zk->hosts;

	for (int i = 0; i < zk->nodes; i++) {
		const char *colon = strchr(p, ':');
		if (!colon)
			return -EINVAL;
		zk->member[i].port = atoi(colon + 1);
		if (zk->member[i].port <= 0)
			return -EINVAL;
		p = strchr(colon, ',');
		if (!p && i + 1 < zk->nodes)
			return -EINVAL;
		if (p)
			p++;
	}
	return 0;
}

static bool zkh__log_says(const zkh_cluster *zk, const char *needle)
{
	char path[PATH_MAX + 32], line[1024];
	bool found = false;

	for (int i = 0; i < zk->nodes && !found; i++) {
		snprintf(path, sizeof(path), "%s/%d/zk.log", zk->dir, i + 1);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		while (!found && fgets(line, sizeof(line), f))
			found = strstr(line, needle) != NULL;
		fclose(f);
	}
	return found;
}

/* One attempt: fresh ports and configs, spawn all, wait for a leader. */
static int zkh__try_start(zkh_cluster *zk)
{
	char nodes[8], tick[16];
	int timeout_ms = zkh__start_timeout_ms(), err;

	snprintf(nodes, sizeof(nodes), "%d", zk->nodes);
	snprintf(tick, sizeof(tick), "%d", zk->tick_ms);
	err = zkh__run_zk_sh(zk, zk->hosts, sizeof(zk->hosts), "prepare", zk->dir, "--nodes", nodes, "--tick",
	                     tick, (char *)NULL);
	zk->hosts[strcspn(zk->hosts, "\n")] = '\0';
	if (err || zkh__parse_hosts(zk)) {
		fprintf(stderr, "zkh: `%s prepare %s` failed\n", zk->zk_sh, zk->dir);
		return err ? err : -EINVAL;
	}
	for (int i = 0; i < zk->nodes; i++)
		if ((err = zkh__spawn(zk, i)) < 0)
			return err;
	for (int i = 0; i < zk->nodes; i++)
		if ((err = zkh__wait_member(zk, i, timeout_ms)) < 0)
			return err;
	if (zkh_leader(zk, timeout_ms) < 0) {
		fprintf(stderr, "zkh: no leader elected after %d ms\n", timeout_ms);
		for (int i = 0; i < zk->nodes; i++)
			zkh_dump_log(zk, i, 20);
		return -ETIMEDOUT;
	}
	return 0;
}

zkh_cluster *zkh_start_tick(int nodes, int tick_ms)
{
	zkh_cluster *zk;
	int err = -EINVAL;

	if (nodes < 1 || nodes > ZKH_MAX_NODES || nodes % 2 == 0 || tick_ms < 10) {
		fprintf(stderr, "zkh: bad cluster shape: %d nodes, tick %d ms\n", nodes, tick_ms);
		return NULL;
	}
	pthread_once(&zkh__once, zkh__install_sweep);
	zk = calloc(1, sizeof(*zk));
	if (!zk)
		return NULL;
	zk->nodes = nodes;
	zk->tick_ms = tick_ms;
	if (zkh__find_zk_sh(zk->zk_sh, sizeof(zk->zk_sh)) < 0) {
		fprintf(stderr, "zkh: tools/zk.sh not found (set ZKW_ZK_SH)\n");
		free(zk);
		return NULL;
	}
	if ((err = zkh__make_dir(zk)) < 0) {
		fprintf(stderr, "zkh: cannot make a server dir: %s\n", strerror(-err));
		free(zk);
		return NULL;
	}
	for (int attempt = 1; attempt <= 3; attempt++) {
		if ((err = zkh__try_start(zk)) == 0)
			return zk;
		for (int i = 0; i < zk->nodes; i++)
			zkh__halt(zk, i, SIGKILL);
		/* A port taken between picking and binding: pick again. */
		if (!zkh__log_says(zk, "Address already in use"))
			break;
		fprintf(stderr, "zkh: port clash, retrying (%d)\n", attempt);
	}
	fprintf(stderr, "zkh: could not start %d ZooKeeper server(s) in %s: %s\n", nodes, zk->dir,
	        strerror(-err));
	free(zk);
	return NULL;
}

zkh_cluster *zkh_start(int nodes)
{
	return zkh_start_tick(nodes, zkh__env_int("ZKW_TEST_TICK_MS", ZKH_DEFAULT_TICK_MS));
}

void zkh_stop(zkh_cluster *zk)
{
	if (!zk)
		return;
	/* TERM everyone first so the members shut down in parallel. */
	for (int i = 0; i < zk->nodes; i++)
		if (zk->member[i].pid > 0) {
			kill(zk->member[i].pid, SIGTERM);
			kill(zk->member[i].pid, SIGCONT);
		}
	for (int i = 0; i < zk->nodes; i++)
		zkh__halt(zk, i, SIGTERM);
	if (!getenv("ZKW_TEST_KEEP"))
		zkh__rm_rf(zk->dir);
	free(zk);
}

/* ---- accessors and member control ----------------------------------------- */

const char *zkh_hosts(const zkh_cluster *zk)
{
	return zk ? zk->hosts : "";
}
const char *zkh_dir(const zkh_cluster *zk)
{
	return zk ? zk->dir : "";
}
int zkh_nodes(const zkh_cluster *zk)
{
	return zk ? zk->nodes : 0;
}
int zkh_tick_ms(const zkh_cluster *zk)
{
	return zk ? zk->tick_ms : 0;
}

int zkh_port(const zkh_cluster *zk, int member)
{
	return zk && member >= 0 && member < zk->nodes ? zk->member[member].port : -1;
}

int zkh_pid(const zkh_cluster *zk, int member)
{
	return zk && member >= 0 && member < zk->nodes ? (int)zk->member[member].pid : 0;
}

int zkh_member_stop(zkh_cluster *zk, int member)
{
	if (!zk || member < 0 || member >= zk->nodes)
		return -EINVAL;
	return zkh__halt(zk, member, SIGTERM);
}

int zkh_member_kill(zkh_cluster *zk, int member)
{
	if (!zk || member < 0 || member >= zk->nodes)
		return -EINVAL;
	return zkh__halt(zk, member, SIGKILL);
}

int zkh_member_start(zkh_cluster *zk, int member)
{
	int err;

	if (!zk || member < 0 || member >= zk->nodes)
		return -EINVAL;
	if (zk->member[member].pid > 0 && !zkh__died(zk, member))
		return -EALREADY;
	if ((err = zkh__spawn(zk, member)) < 0)
		return err;
	return zkh__wait_member(zk, member, zkh__start_timeout_ms());
}

/* Are all of pid's threads stopped (state 'T')? kill(SIGSTOP) returns before
 * the JVM's threads have stopped: on a loaded machine a "paused" server
 * could still answer for a while. */
static bool zkh__all_threads_stopped(pid_t pid)
{
	char path[64], buf[512];
	struct dirent *e;
	bool stopped = true;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	if (!d)
		return true; /* gone: nothing runs */
	while (stopped && (e = readdir(d))) {
		const char *state;
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(buf, sizeof(buf), "/proc/%d/task/%s/stat", (int)pid, e->d_name);
		f = fopen(buf, "r");
		if (!f)
			continue;
		if (fgets(buf, sizeof(buf), f) && (state = strrchr(buf, ')')) && state[1] && state[2])
			stopped = state[2] == 'T' || state[2] == 't' || state[2] == 'Z' || state[2] == 'X';
		fclose(f);
	}
	closedir(d);
	return stopped;
}

static int zkh__signal_all(zkh_cluster *zk, int sig)
{
	if (!zk)
		return -EINVAL;
	for (int i = 0; i < zk->nodes; i++)
		if (zk->member[i].pid > 0 && kill(zk->member[i].pid, sig) == -1)
			return -errno;
	return 0;
}

int zkh_pause(zkh_cluster *zk)
{
	int64_t deadline = zkh__now_ms() + 5000;
	int rc = zkh__signal_all(zk, SIGSTOP);

	for (int i = 0; rc == 0 && i < zk->nodes; i++)
		while (zk->member[i].pid > 0 && !zkh__all_threads_stopped(zk->member[i].pid)) {
			if (zkh__now_ms() >= deadline)
				return -ETIMEDOUT;
			zkh__sleep_ms(1);
		}
	return rc;
}

int zkh_resume(zkh_cluster *zk)
{
	return zkh__signal_all(zk, SIGCONT);
}

void zkh_dump_log(const zkh_cluster *zk, int member, int lines)
{
	char path[PATH_MAX + 32], *ring[256] = {0}, line[2048];
	int n = 0;
	FILE *f;

	if (!zk || member < 0 || member >= zk->nodes)
		return;
	if (lines <= 0 || lines > 256)
		lines = 256;
	snprintf(path, sizeof(path), "%s/%d/zk.log", zk->dir, member + 1);
	f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "zkh: no log at %s\n", path);
		return;
	}
	while (fgets(line, sizeof(line), f)) {
		free(ring[n % lines]);
		ring[n % lines] = strdup(line);
		n++;
	}
	fclose(f);
	fprintf(stderr, "---- last %d lines of %s ----\n", n < lines ? n : lines, path);
	for (int i = n < lines ? 0 : n - lines; i < n; i++) {
		if (ring[i % lines])
			fputs(ring[i % lines], stderr);
		free(ring[i % lines]);
		ring[i % lines] = NULL;
	}
	fprintf(stderr, "----\n");
}

/* ---- synchronous client helpers ------------------------------------------- */

struct zkh_session {
	pthread_mutex_t lock;
	pthread_cond_t changed;
	int state;
};

static void zkh__quiet_log(const char *message)
{
	(void)message;
}

static void zkh__session_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
	struct zkh_session *s = ctx;
	(void)zh, (void)path;

	if (type != ZOO_SESSION_EVENT)
		return;
	pthread_mutex_lock(&s->lock);
	s->state = state;
	pthread_cond_broadcast(&s->changed);
	pthread_mutex_unlock(&s->lock);
}

/* A connected handle, or NULL after ZKH_CONNECT_TIMEOUT_MS.  The session's
 * log goes to a no-op callback: the global log level is left alone. */
static zhandle_t *zkh__connect(const char *hosts, struct zkh_session *s)
{
	struct timespec deadline;
	zhandle_t *zh;

	pthread_mutex_init(&s->lock, NULL);
	{
		pthread_condattr_t attr;
		pthread_condattr_init(&attr);
		pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
		pthread_cond_init(&s->changed, &attr);
		pthread_condattr_destroy(&attr);
	}
	s->state = 0;
	zh = zookeeper_init2(hosts, zkh__session_watcher, ZKH_SESSION_MS, NULL, s, 0, zkh__quiet_log);
	if (!zh)
		goto fail;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += ZKH_CONNECT_TIMEOUT_MS / 1000;
	pthread_mutex_lock(&s->lock);
	while (s->state != ZOO_CONNECTED_STATE && s->state != ZOO_EXPIRED_SESSION_STATE &&
	       s->state != ZOO_AUTH_FAILED_STATE)
		if (pthread_cond_timedwait(&s->changed, &s->lock, &deadline) == ETIMEDOUT)
			break;
	bool connected = s->state == ZOO_CONNECTED_STATE;
	pthread_mutex_unlock(&s->lock);
	if (connected)
		return zh;
	fprintf(stderr, "zkh: no ZooKeeper session with %s within %d ms\n", hosts, ZKH_CONNECT_TIMEOUT_MS);
	zookeeper_close(zh);
fail:
	pthread_cond_destroy(&s->changed);
	pthread_mutex_destroy(&s->lock);
	return NULL;
}

static void zkh__disconnect(zhandle_t *zh, struct zkh_session *s)
{
	zookeeper_close(zh);
	pthread_cond_destroy(&s->changed);
	pthread_mutex_destroy(&s->lock);
}

/* Create every missing ancestor of path with empty data. */
static int zkh__create_parents(zhandle_t *zh, const char *path)
{
	char prefix[1024];
	size_t len = strlen(path);

	if (len >= sizeof(prefix))
		return ZBADARGUMENTS;
	for (const char *slash = strchr(path + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
		memcpy(prefix, path, (size_t)(slash - path));
		prefix[slash - path] = '\0';
		int rc = zoo_create(zh, prefix, "", 0, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
		if (rc != ZOK && rc != ZNODEEXISTS)
			return rc;
	}
	return ZOK;
}

int zkh_set(const char *hosts, const char *path, const void *data, int len)
{
	struct zkh_session s;
	zhandle_t *zh;
	int rc;

	if (!path || path[0] != '/')
		return ZBADARGUMENTS;
	if (!(zh = zkh__connect(hosts, &s)))
		return ZCONNECTIONLOSS;
	rc = zoo_set(zh, path, data, data ? len : -1, -1);
	if (rc == ZNONODE) {
		rc = zkh__create_parents(zh, path);
		if (rc == ZOK)
			rc = zoo_create(zh, path, data, data ? len : -1, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
		if (rc == ZNODEEXISTS) /* someone else created it meanwhile */
			rc = zoo_set(zh, path, data, data ? len : -1, -1);
	}
	zkh__disconnect(zh, &s);
	return rc;
}

static int zkh__delete_tree(zhandle_t *zh, const char *path, int depth)
{
	struct String_vector children = {0};
	int rc;

	if (depth > 64)
		return ZBADARGUMENTS;
	rc = zoo_get_children(zh, path, 0, &children);
	if (rc != ZOK)
		return rc;
	for (int i = 0; i < children.count && rc == ZOK; i++) {
		char child[1024];
		int n = snprintf(child, sizeof(child), "%s/%s", strcmp(path, "/") ? path : "",
		                 children.data[i]);
		if (n < 0 || (size_t)n >= sizeof(child))
			rc = ZBADARGUMENTS;
		else if (strcmp(child, "/zookeeper") != 0)
			rc = zkh__delete_tree(zh, child, depth + 1);
		if (rc == ZNONODE)
			rc = ZOK;
	}
	deallocate_String_vector(&children);
	if (rc == ZOK && strcmp(path, "/") != 0)
		rc = zoo_delete(zh, path, -1);
	return rc;
}

/* ZNONODE when path did not exist; deleting "/" empties the tree. */
int zkh_delete(const char *hosts, const char *path)
{
	struct zkh_session s;
	zhandle_t *zh;
	int rc;

	if (!path || path[0] != '/')
		return ZBADARGUMENTS;
	if (!(zh = zkh__connect(hosts, &s)))
		return ZCONNECTIONLOSS;
	rc = zkh__delete_tree(zh, path, 0);
	zkh__disconnect(zh, &s);
	return rc;
}

/* *len: capacity in, content length out (-1 for a node with null data).
 * Content larger than the buffer: ZBADARGUMENTS, *len = the size needed. */
int zkh_get(const char *hosts, const char *path, char *buf, int *len)
{
	struct zkh_session s;
	struct Stat stat;
	zhandle_t *zh;
	int rc, cap;

	if (!path || path[0] != '/' || !len || *len < 0 || (*len > 0 && !buf))
		return ZBADARGUMENTS;
	if (!(zh = zkh__connect(hosts, &s)))
		return ZCONNECTIONLOSS;
	cap = *len;
	rc = zoo_get(zh, path, 0, buf, len, &stat);
	if (rc == ZOK && stat.dataLength > cap) {
		*len = stat.dataLength;
		rc = ZBADARGUMENTS;
	}
	zkh__disconnect(zh, &s);
	return rc;
}

bool zkh_eventually(bool (*pred)(void *), void *arg, int timeout_ms)
{
	int64_t deadline = zkh__now_ms() + timeout_ms;
	int pause_ms = 1;

	for (;;) {
		if (pred(arg))
			return true;
		if (zkh__now_ms() >= deadline)
			return false;
		zkh__sleep_ms(pause_ms);
		if (pause_ms < 20)
			pause_ms *= 2;
	}
}
