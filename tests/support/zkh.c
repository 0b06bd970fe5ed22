/* SPDX-License-Identifier: Apache-2.0 */
/* zkh.c - real ZooKeeper servers on loopback for tests (see zkh.h).
 *
 * tools/zk.sh stays the one place that knows how a server is configured and
 * launched: `zk.sh prepare` picks ports and writes DIR/N/zoo.cfg, and each
 * member is a child of the test process that sets PR_SET_PDEATHSIG and then
 * becomes the JVM through `zk.sh exec` (bash execs java, so the pid we hold
 * is the JVM's).  The test process therefore reaps its servers itself, and a
 * test killed by anything - even SIGKILL - takes its servers with it.  On
 * top of that, every member is a child of proc_fork (proc.c's registry): exit
 * and SIGINT/SIGTERM/SIGABRT/SIGHUP kill every one still running.
 *
 * The parent-death signal fires when the *thread* that forked exits: start
 * and restart members from the main thread (cmocka runs tests there).
 *
 * The synchronous client helpers (zkh_set & co.) are lib/zkw_zk.c's, each on
 * a session of its own; the four-letter-word client is here.
 */
#include "zkh.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zookeeper/zookeeper.h>

#include "proc.h"
#include "zkw_clock.h"
#include "zkw_opt.h"
#include "zkw_zk.h"

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

int zkh_env_int(const char *name, int fallback, int max)
{
	long n;

	return zkw_parse_long(getenv(name), 1, max, &n) == 0 ? (int)n : fallback;
}

static int start_timeout_ms(void)
{
	return zkh_env_int("ZKW_ZK_START_TIMEOUT", 30, INT_MAX / 1000) * 1000;
}

/* ---- files and paths ---------------------------------------------------- */

static bool is_file(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* tools/zk.sh: $ZKW_ZK_SH, else search upwards from the working directory
 * and from the test binary (build/tests/test_x or build/asan/tests/test_x). */
static int find_zk_sh(char *out, size_t cap)
{
	const char *env = getenv("ZKW_ZK_SH");
	char base[2][PATH_MAX];

	if (env && *env)
		return snprintf(out, cap, "%s", env) < (int)cap && is_file(out) ? 0 : -ENOENT;
	if (!getcwd(base[0], sizeof(base[0])))
		base[0][0] = '\0';
	ssize_t n = readlink("/proc/self/exe", base[1], sizeof(base[1]) - 1);
	base[1][n > 0 ? n : 0] = '\0';
	for (int b = 0; b < 2; b++) {
		char dir[PATH_MAX];
		if (snprintf(dir, sizeof(dir), "%s", base[b]) >= (int)sizeof(dir))
			continue;
		for (int depth = 0; depth < 8 && dir[0]; depth++) {
			if (snprintf(out, cap, "%s/tools/zk.sh", dir) < (int)cap && is_file(out))
				return 0;
			char *slash = strrchr(dir, '/');
			if (!slash)
				break;
			*slash = '\0';
		}
	}
	return -ENOENT;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	remove(path);
	return 0;
}

static void rm_rf(const char *dir)
{
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void write_pid(const zkh_cluster *zk, int member, pid_t pid)
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
static int run_zk_sh(const zkh_cluster *zk, char *out, size_t cap, ...)
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

static int spawn(zkh_cluster *zk, int member)
{
	char n[16], log_path[PATH_MAX + 32];
	pid_t pid;
	int log_fd;

	snprintf(n, sizeof(n), "%d", member + 1);
	snprintf(log_path, sizeof(log_path), "%s/%d/zk.log", zk->dir, member + 1);
	log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (log_fd == -1)
		return -errno;
	dprintf(log_fd, "==== zkh: start member %d\n", member);

	pid = proc_fork(); /* dies with the test, even when it is SIGKILLed */
	if (pid < 0) {
		close(log_fd);
		return pid;
	}
	if (pid == 0) {
		sigset_t all;

		/* A clean slate for the JVM: default signals, nothing blocked,
		 * none of the test's sockets (a client connection kept open
		 * by the server's inherited fd would hide a close). */
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
	write_pid(zk, member, pid);
	return 0;
}

/* Signal a member and reap it; escalate to SIGKILL after the bound. */
static int halt(zkh_cluster *zk, int member, int sig)
{
	pid_t pid = zk->member[member].pid;

	if (pid <= 0)
		return 0;
	if (proc_stop_pid(pid, sig, ZKH_STOP_TIMEOUT_MS) == -1)
		fprintf(stderr, "zkh: member %d (pid %d) still alive %d ms after signal %d: killed\n", member,
		        (int)pid, ZKH_STOP_TIMEOUT_MS, sig);
	zk->member[member].pid = 0;
	write_pid(zk, member, 0);
	return 0;
}

/* Has this member's process exited on its own?  Reaps it if so. */
static bool died(zkh_cluster *zk, int member)
{
	pid_t pid = zk->member[member].pid;

	if (pid <= 0)
		return true;
	if (!proc_pid_exited(pid, NULL))
		return false;
	zk->member[member].pid = 0;
	write_pid(zk, member, 0);
	return true;
}

/* ---- four-letter words ---------------------------------------------------- */

/* Send word to sa, the reply (NUL-terminated) into buf: bytes or -errno. */
static int four_letter_word(const struct sockaddr_in *sa, const char *word, char *buf, int cap,
                            int timeout_ms)
{
	int64_t deadline = zkw_clock_mono_ms() + timeout_ms;
	int fd, used = 0, err = 0;
	struct pollfd pfd;

	if (cap <= 0)
		return -EINVAL;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == -1) {
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
		int left = (int)(deadline - zkw_clock_mono_ms());
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

static int four_letter_word_port(int port, const char *word, char *buf, int cap, int timeout_ms)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return four_letter_word(&sa, word, buf, cap, timeout_ms);
}

int zkh_4lw(const zkh_cluster *zk, int member, const char *word, char *buf, int cap)
{
	if (!zk || member < 0 || member >= zk->nodes)
		return -EINVAL;
	return four_letter_word_port(zk->member[member].port, word, buf, cap, 2000);
}

int zkh_4lw_at(const char *hosts, const char *word, char *buf, int cap, int timeout_ms)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	const char *colon = hosts ? strchr(hosts, ':') : NULL;
	char host[64];
	long port;

	if (!colon || (size_t)(colon - hosts) >= sizeof(host))
		return -EINVAL;
	memcpy(host, hosts, (size_t)(colon - hosts));
	host[colon - hosts] = '\0';
	port = strtol(colon + 1, NULL, 10);
	if (port <= 0 || port > 65535 || inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return -EINVAL;
	sa.sin_port = htons((uint16_t)port);
	return four_letter_word(&sa, word, buf, cap, timeout_ms);
}

/* Sessions in a `cons` reply: a client connection lists its sid (the
 * four-letter-word connection itself has none). */
static int count_sessions(const char *cons)
{
	int n = 0;

	for (const char *at = cons; (at = strstr(at, "sid=0x")); at++)
		n++;
	return n;
}

int zkh_session_count(const char *hosts)
{
	size_t cap = 1 << 20; /* a line per connection: hundreds in the benchmarks */
	char *reply = malloc(cap);
	int n = -1;

	if (reply && zkh_4lw_at(hosts, "cons", reply, (int)cap, 3000) > 0)
		n = count_sessions(reply);
	free(reply);
	return n;
}

bool zkh_session_listed(const zkh_cluster *zk, uint64_t session_id)
{
	char needle[40], reply[16384];

	snprintf(needle, sizeof(needle), "sid=0x%" PRIx64, session_id);
	for (int i = 0; zk && i < zk->nodes; i++) {
		if (zk->member[i].pid <= 0)
			continue;
		if (zkh_4lw(zk, i, "cons", reply, sizeof(reply)) < 0 || strstr(reply, needle))
			return true;
	}
	return false;
}

void zkh_member_mode(const zkh_cluster *zk, int member, char *mode, size_t cap)
{
	char reply[2048];
	const char *m;

	mode[0] = '\0';
	if (!zk || member < 0 || member >= zk->nodes || zk->member[member].pid <= 0)
		return;
	/* Generous: a JVM just resumed or starting on a loaded machine answers late. */
	if (four_letter_word_port(zk->member[member].port, "srvr", reply, sizeof(reply), 3000) < 0)
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
	zkh_member_mode(zk, member, mode, sizeof(mode));
	return mode[0] != '\0';
}

static int leader_now(const zkh_cluster *zk)
{
	char mode[32];

	for (int i = 0; i < zk->nodes; i++) {
		zkh_member_mode(zk, i, mode, sizeof(mode));
		if (!strcmp(mode, "leader") || !strcmp(mode, "standalone"))
			return i;
	}
	return -1;
}

int zkh_leader(zkh_cluster *zk, int timeout_ms)
{
	int64_t deadline = zkw_clock_mono_ms() + timeout_ms;
	int leader;

	if (!zk)
		return -1;
	while ((leader = leader_now(zk)) < 0 && zkw_clock_mono_ms() < deadline)
		zkw_clock_sleep_ms(20);
	return leader;
}

/* Wait until one member serves; on failure say why, with its log. */
static int wait_member(zkh_cluster *zk, int member, int timeout_ms)
{
	int64_t deadline = zkw_clock_mono_ms() + timeout_ms;

	while (!zkh_member_serving(zk, member)) {
		if (died(zk, member)) {
			fprintf(stderr, "zkh: member %d (port %d) exited during start-up\n", member,
			        zk->member[member].port);
			zkh_dump_log(zk, member, 40);
			return -ECHILD;
		}
		if (zkw_clock_mono_ms() >= deadline) {
			fprintf(stderr, "zkh: member %d (port %d) not serving after %d ms\n", member,
			        zk->member[member].port, timeout_ms);
			zkh_dump_log(zk, member, 40);
			return -ETIMEDOUT;
		}
		zkw_clock_sleep_ms(20);
	}
	return 0;
}

int zkh_wait_serving(zkh_cluster *zk, int timeout_ms)
{
	int64_t deadline = zkw_clock_mono_ms() + timeout_ms;

	if (!zk)
		return -EINVAL;
	for (;;) {
		int serving = 0;
		for (int i = 0; i < zk->nodes; i++)
			serving += zkh_member_serving(zk, i);
		if (serving > zk->nodes / 2 && leader_now(zk) >= 0)
			return 0;
		if (zkw_clock_mono_ms() >= deadline)
			return -ETIMEDOUT;
		zkw_clock_sleep_ms(20);
	}
}

/* ---- cluster lifecycle ------------------------------------------------------ */

static int make_dir(zkh_cluster *zk)
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

static int parse_hosts(zkh_cluster *zk)
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

static bool log_says(const zkh_cluster *zk, const char *needle)
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
static int try_start(zkh_cluster *zk)
{
	char nodes[8], tick[16];
	int timeout_ms = start_timeout_ms(), err;

	snprintf(nodes, sizeof(nodes), "%d", zk->nodes);
	snprintf(tick, sizeof(tick), "%d", zk->tick_ms);
	err = run_zk_sh(zk, zk->hosts, sizeof(zk->hosts), "prepare", zk->dir, "--nodes", nodes, "--tick",
	                tick, (char *)NULL);
	zk->hosts[strcspn(zk->hosts, "\n")] = '\0';
	if (err || parse_hosts(zk)) {
		fprintf(stderr, "zkh: `%s prepare %s` failed\n", zk->zk_sh, zk->dir);
		return err ? err : -EINVAL;
	}
	for (int i = 0; i < zk->nodes; i++)
		if ((err = spawn(zk, i)) < 0)
			return err;
	for (int i = 0; i < zk->nodes; i++)
		if ((err = wait_member(zk, i, timeout_ms)) < 0)
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
	zk = calloc(1, sizeof(*zk));
	if (!zk)
		return NULL;
	zk->nodes = nodes;
	zk->tick_ms = tick_ms;
	if (find_zk_sh(zk->zk_sh, sizeof(zk->zk_sh)) < 0) {
		fprintf(stderr, "zkh: tools/zk.sh not found (set ZKW_ZK_SH)\n");
		free(zk);
		return NULL;
	}
	if ((err = make_dir(zk)) < 0) {
		fprintf(stderr, "zkh: cannot make a server dir: %s\n", strerror(-err));
		free(zk);
		return NULL;
	}
	for (int attempt = 1; attempt <= 3; attempt++) {
		if ((err = try_start(zk)) == 0)
			return zk;
		for (int i = 0; i < zk->nodes; i++)
			halt(zk, i, SIGKILL);
		/* A port taken between picking and binding: pick again. */
		if (!log_says(zk, "Address already in use"))
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
	return zkh_start_tick(nodes, zkh_env_int("ZKW_TEST_TICK_MS", ZKH_DEFAULT_TICK_MS, INT_MAX));
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
		halt(zk, i, SIGTERM);
	if (!getenv("ZKW_TEST_KEEP"))
		rm_rf(zk->dir);
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
	return halt(zk, member, SIGTERM);
}

int zkh_member_kill(zkh_cluster *zk, int member)
{
	if (!zk || member < 0 || member >= zk->nodes)
		return -EINVAL;
	return halt(zk, member, SIGKILL);
}

int zkh_member_start(zkh_cluster *zk, int member)
{
	int err;

	if (!zk || member < 0 || member >= zk->nodes)
		return -EINVAL;
	if (zk->member[member].pid > 0 && !died(zk, member))
		return -EALREADY;
	if ((err = spawn(zk, member)) < 0)
		return err;
	return wait_member(zk, member, start_timeout_ms());
}

int zkh_member_wipe(zkh_cluster *zk, int member)
{
	char n[16];

	if (!zk || member < 0 || member >= zk->nodes)
		return -EINVAL;
	if (zk->member[member].pid > 0 && !died(zk, member))
		return -EBUSY;
	snprintf(n, sizeof(n), "%d", member + 1);
	return run_zk_sh(zk, NULL, 0, "member-wipe", zk->dir, n, (char *)NULL);
}

/* Are all of pid's threads stopped (state 'T')? kill(SIGSTOP) returns before
 * the JVM's threads have stopped: on a loaded machine a "paused" server
 * could still answer for a while. */
static bool all_threads_stopped(pid_t pid)
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

static int signal_all(zkh_cluster *zk, int sig)
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
	int64_t deadline = zkw_clock_mono_ms() + 5000;
	int rc = signal_all(zk, SIGSTOP);

	for (int i = 0; rc == 0 && i < zk->nodes; i++)
		while (zk->member[i].pid > 0 && !all_threads_stopped(zk->member[i].pid)) {
			if (zkw_clock_mono_ms() >= deadline)
				return -ETIMEDOUT;
			zkw_clock_sleep_ms(1);
		}
	return rc;
}

int zkh_resume(zkh_cluster *zk)
{
	return signal_all(zk, SIGCONT);
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

/* A session of its own for one call, or NULL (reported). */
static zhandle_t *session_open(const char *hosts)
{
	char why[256];
	zhandle_t *zh;

	if (zkw_zk_connect(&zh, hosts, ZKH_CONNECT_TIMEOUT_MS, ZKH_SESSION_MS, why, sizeof(why))) {
		fprintf(stderr, "zkh: %s\n", why);
		return NULL;
	}
	return zh;
}

int zkh_set(const char *hosts, const char *path, const void *data, int len)
{
	zhandle_t *zh = session_open(hosts);
	int err;

	if (!zh)
		return ZCONNECTIONLOSS;
	err = zkw_zk_put(zh, path, data, len, NULL, NULL, 0);
	zkw_zk_close(zh);
	return zkw_zk_result(err);
}

int zkh_delete(const char *hosts, const char *path)
{
	zhandle_t *zh = session_open(hosts);
	int err;

	if (!zh)
		return ZCONNECTIONLOSS;
	err = zkw_zk_delete_tree(zh, path, NULL, 0);
	zkw_zk_close(zh);
	return zkw_zk_result(err);
}

int zkh_get(const char *hosts, const char *path, char *buf, int *len)
{
	zhandle_t *zh = session_open(hosts);
	int err;

	if (!zh)
		return ZCONNECTIONLOSS;
	err = zkw_zk_get(zh, path, buf, len, NULL, 0);
	zkw_zk_close(zh);
	return err == -EMSGSIZE ? ZBADARGUMENTS : zkw_zk_result(err);
}

bool zkh_eventually(bool (*pred)(void *), void *arg, int timeout_ms)
{
	int64_t deadline = zkw_clock_mono_ms() + timeout_ms;
	int pause_ms = 1;

	for (;;) {
		if (pred(arg))
			return true;
		if (zkw_clock_mono_ms() >= deadline)
			return false;
		zkw_clock_sleep_ms(pause_ms);
		if (pause_ms < 20)
			pause_ms *= 2;
	}
}
