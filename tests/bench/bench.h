/* bench_common.h - shared helpers of the zkw benchmarks (tools/bench/).
 *
 * Not a bench_*.c, so the Makefile does not build it on its own: every
 * benchmark includes it (static functions only). It holds what the
 * benchmarks share: a monotonic clock, statistics (min/median/p99), shared
 * anonymous mappings, a registry of child processes that are killed on any
 * exit path (atexit, SIGINT/SIGTERM, parent death), starting and stopping a
 * zkw-broker, ZooKeeper four-letter words, /proc readings (RSS, PSS, CPU),
 * and the numbered 100-byte config the latency benchmarks publish.
 *
 *     bench_children_init();                      // before the first fork
 *     pid_t b = bench_broker_start(bin, hosts, path, shm);
 *     ...
 *     bench_stats s; bench_stats_of(v, n, &s);    // s.min, s.median, s.p99
 */
#ifndef ZKW_BENCH_COMMON_H
#define ZKW_BENCH_COMMON_H

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zkw/client.h>

#include "zkw_zk.h"

#define BENCH_MAX_CHILDREN 1024
#define BENCH_CONFIG_LEN   100 /* bytes of the numbered config */

/* ---- time ------------------------------------------------------------- */

static inline uint64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void bench_sleep_ns(uint64_t ns)
{
	struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u), .tv_nsec = (long)(ns % 1000000000u)};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static inline void bench_sleep_until(uint64_t at_ns)
{
	struct timespec ts = {.tv_sec = (time_t)(at_ns / 1000000000u),
	                      .tv_nsec = (long)(at_ns % 1000000000u)};

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

/* ---- messages --------------------------------------------------------- */

static const char *bench_name = "bench";

static inline void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static inline void bench_die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: error: ", bench_name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1); /* atexit kills the children */
}

static inline void bench_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void bench_note(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", bench_name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- statistics ------------------------------------------------------- */

typedef struct bench_stats {
	size_t n;
	double min, median, p99, max, mean;
} bench_stats;

static inline int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Sorts v in place. Percentiles by nearest rank. */
static inline void bench_stats_of(double *v, size_t n, bench_stats *s)
{
	double sum = 0;
	size_t i, r;

	memset(s, 0, sizeof(*s));
	s->n = n;
	if (!n)
		return;
	qsort(v, n, sizeof(*v), bench_cmp_double);
	for (i = 0; i < n; i++)
		sum += v[i];
	s->min = v[0];
	s->max = v[n - 1];
	s->median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
	r = (size_t)((99 * n + 99) / 100); /* ceil(0.99 n) */
	s->p99 = v[(r ? r : 1) - 1];
	s->mean = sum / (double)n;
}

static inline const char *bench_verdict(bool met)
{
	return met ? "met" : "**missed**";
}

/* ---- shared memory between the bench and its forked children ---------- */

static inline void *bench_shared_alloc(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		bench_die("mmap %zu shared bytes: %s", size, strerror(errno));
	return p;
}

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

static inline void bench_rendezvous_reset(bench_rendezvous *rv, uint32_t target, uint64_t expect)
{
	__atomic_store_n(&rv->count, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&rv->target, target, __ATOMIC_RELAXED);
	__atomic_store_n(&rv->expect, expect, __ATOMIC_RELEASE);
}

/* Wait until every child arrived; false after timeout_ms. */
static inline bool bench_rendezvous_wait(bench_rendezvous *rv, int timeout_ms)
{
	uint64_t end = bench_now_ns() + (uint64_t)timeout_ms * 1000000u;

	for (;;) {
		uint32_t c = __atomic_load_n(&rv->count, __ATOMIC_ACQUIRE);
		uint64_t now;
		struct timespec rel;

		if (c >= rv->target)
			return true;
		now = bench_now_ns();
		if (now >= end)
			return false;
		rel.tv_sec = 0;
		rel.tv_nsec = (long)((end - now) > 100000000u ? 100000000u : end - now);
		bench_futex(&rv->count, FUTEX_WAIT, c, &rel);
	}
}

/* ---- children: every one is killed on any exit path --------------------- */

static pid_t bench_children[BENCH_MAX_CHILDREN];
static int bench_nchildren;
static pid_t bench_parent_pid;
static char bench_shm_to_unlink[256]; /* the broker's segment, removed at exit */

static inline void bench_kill_children(void)
{
	int i;

	if (getpid() != bench_parent_pid)
		return;
	for (i = 0; i < bench_nchildren; i++)
		if (bench_children[i] > 0)
			kill(bench_children[i], SIGKILL);
	for (i = 0; i < bench_nchildren; i++)
		if (bench_children[i] > 0)
			waitpid(bench_children[i], NULL, 0);
	bench_nchildren = 0;
	/* A broker killed here could not unlink its segment. */
	if (bench_shm_to_unlink[0])
		shm_unlink(bench_shm_to_unlink);
}

static inline void bench_on_signal(int sig)
{
	bench_kill_children();
	signal(sig, SIG_DFL);
	raise(sig);
}

static inline void bench_children_init(void)
{
	bench_parent_pid = getpid();
	atexit(bench_kill_children);
	signal(SIGINT, bench_on_signal);
	signal(SIGTERM, bench_on_signal);
	signal(SIGHUP, bench_on_signal);
	signal(SIGPIPE, SIG_IGN);
}

static inline void bench_child_register(pid_t pid)
{
	if (bench_nchildren == BENCH_MAX_CHILDREN) {
		kill(pid, SIGKILL);
		bench_die("more than %d child processes", BENCH_MAX_CHILDREN);
	}
	bench_children[bench_nchildren++] = pid;
}

/* Stop one child: SIGTERM, SIGKILL after grace_ms, reaped either way. */
static inline void bench_child_stop(pid_t pid, int grace_ms)
{
	uint64_t end = bench_now_ns() + (uint64_t)grace_ms * 1000000u;
	int i;

	if (pid <= 0)
		return;
	kill(pid, SIGTERM);
	while (waitpid(pid, NULL, WNOHANG) == 0) {
		if (bench_now_ns() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			break;
		}
		bench_sleep_ns(2000000);
	}
	for (i = 0; i < bench_nchildren; i++)
		if (bench_children[i] == pid)
			bench_children[i] = 0;
}

/* Kill a batch of children (they were told to stop already, or not). */
static inline void bench_children_kill(const pid_t *pids, int n)
{
	int i, j;

	for (i = 0; i < n; i++)
		if (pids[i] > 0)
			kill(pids[i], SIGKILL);
	for (i = 0; i < n; i++) {
		if (pids[i] <= 0)
			continue;
		waitpid(pids[i], NULL, 0);
		for (j = 0; j < bench_nchildren; j++)
			if (bench_children[j] == pids[i])
				bench_children[j] = 0;
	}
}

/* fork; the child dies with the bench (PR_SET_PDEATHSIG). Returns 0 in the
 * child, the pid in the parent. */
static inline pid_t bench_fork(void)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		bench_die("fork: %s", strerror(errno));
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != bench_parent_pid)
			_exit(1); /* the bench died before the prctl */
		bench_nchildren = 0;
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		return 0;
	}
	bench_child_register(pid);
	return pid;
}

static inline bool bench_parent_gone(void)
{
	return getppid() != bench_parent_pid;
}

/* In a forked reader: open the broker's segment, waiting (up to 20 s) for
 * the broker to create it; exit the child when it never comes. */
static inline void bench_reader_open(zkw_reader *r, const char *shm)
{
	uint64_t end = bench_now_ns() + 20000000000ull;

	while (zkw_reader_open(r, shm) != 0) {
		if (bench_now_ns() > end || bench_parent_gone())
			_exit(1);
		bench_sleep_ns(5000000);
	}
}

/* ---- zkw-broker ------------------------------------------------------- */

/* Start `broker` on `path`, publishing into segment `shm`; wait (bounded)
 * until the segment holds a valid snapshot. The broker gets SIGTERM when
 * the bench dies. */
static inline pid_t bench_broker_start(const char *broker, const char *hosts, const char *path,
                                       const char *shm, const char *log_path)
{
	uint64_t end;
	zkw_reader r;
	pid_t pid = bench_fork();

	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (log_path) {
			FILE *f = freopen(log_path, "a", stderr);
			(void)f;
		}
		execl(broker, broker, "-z", hosts, "-f", path, "--ensure", "--shm", shm, "--unlink-on-exit",
		      (char *)NULL);
		fprintf(stderr, "exec %s: %s\n", broker, strerror(errno));
		_exit(127);
	}
	zkw_shm_name(bench_shm_to_unlink, sizeof(bench_shm_to_unlink), shm);
	end = bench_now_ns() + 20000000000ull;
	for (;;) {
		int st;

		if (waitpid(pid, &st, WNOHANG) == pid)
			bench_die("zkw-broker %s exited during start-up (status %d); see %s", broker, st,
			          log_path ? log_path : "stderr");
		if (zkw_reader_open(&r, shm) == 0) {
			bool ok = zkw_reader_generation(&r) > 0 && zkw_reader_is_valid(&r);

			zkw_reader_close(&r);
			if (ok)
				return pid;
		}
		if (bench_now_ns() > end)
			bench_die("zkw-broker did not publish a valid %s into %s within 20 s", path, shm);
		bench_sleep_ns(5000000);
	}
}

/* ---- ZooKeeper -------------------------------------------------------- */

/* The C client re-resolves its host list (getaddrinfo: a netlink socket
 * and a route dump) every time its I/O thread checks for socket readiness,
 * i.e. around every packet, by default. The bench's own clients (and the
 * ZooKeeper floor) turn that off, so the floor is the best a bare client
 * can do; see BENCHMARKS.md for what it costs the broker. */
static inline void bench_zk_tune(zhandle_t *zh)
{
	zoo_set_servers_resolution_delay(zh, -1);
}

static inline zhandle_t *bench_zk_connect(const char *hosts)
{
	char why[256];
	zhandle_t *zh = zkw_zk_connect(hosts, 15000, 10000, why, sizeof(why));

	if (!zh)
		bench_die("%s", why);
	bench_zk_tune(zh);
	return zh;
}

static inline void bench_zk_put(zhandle_t *zh, const char *path, const void *data, int len)
{
	int created, rc = zkw_zk_put(zh, path, data, len, &created);

	if (rc != ZOK)
		bench_die("set %s: %s", path, zerror(rc));
}

/* Send a four-letter word to the first host of `hosts`; reply in buf. */
static inline int bench_4lw(const char *hosts, const char *word, char *buf, size_t cap)
{
	char host[64];
	const char *colon = strchr(hosts, ':');
	struct sockaddr_in sa;
	struct timeval tv = {.tv_sec = 3};
	size_t got = 0, hl;
	ssize_t n;
	int fd;

	if (!colon || (hl = (size_t)(colon - hosts)) >= sizeof(host))
		return -EINVAL;
	memcpy(host, hosts, hl);
	host[hl] = '\0';
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)atoi(colon + 1));
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return -EINVAL;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || write(fd, word, strlen(word)) < 0) {
		close(fd);
		return -errno;
	}
	while (got + 1 < cap && (n = read(fd, buf + got, cap - 1 - got)) > 0)
		got += (size_t)n;
	buf[got] = '\0';
	close(fd);
	return (int)got;
}

/* zk_num_alive_connections from `mntr`, -1 if unknown. */
static inline long bench_zk_connections(const char *hosts)
{
	static char buf[65536];
	const char *p;

	if (bench_4lw(hosts, "mntr", buf, sizeof(buf)) <= 0)
		return -1;
	p = strstr(buf, "zk_num_alive_connections");
	return p ? strtol(p + strlen("zk_num_alive_connections"), NULL, 10) : -1;
}

/* Sessions the server lists in `cons` (one line per connection with a
 * sid= field). -1 if unknown. */
static inline long bench_zk_sessions(const char *hosts)
{
	static char buf[1 << 20];
	const char *p;
	long n = 0;

	if (bench_4lw(hosts, "cons", buf, sizeof(buf)) <= 0)
		return -1;
	for (p = buf; (p = strstr(p, "sid=0x")) != NULL; p++)
		n++;
	return n;
}

/* ---- the numbered config --------------------------------------------- */

/* A BENCH_CONFIG_LEN-byte config that carries its sequence number. */
static inline int bench_config(char *buf, size_t cap, uint64_t seq, size_t len)
{
	int n = snprintf(buf, cap, "seq=%020" PRIu64 "\n", seq);

	if (len > cap)
		len = cap;
	if ((size_t)n < len)
		memset(buf + n, 'x', len - (size_t)n - 1), buf[len - 1] = '\n';
	return (int)((size_t)n > len ? (size_t)n : len);
}

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

/* ---- /proc ------------------------------------------------------------ */

/* A "Key:   1234 kB" field of a /proc file, in kB; -1 if absent. */
static inline long bench_proc_kb(pid_t pid, const char *file, const char *key)
{
	char path[64], line[256];
	size_t kl = strlen(key);
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
			v = strtol(line + kl + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

static inline long bench_rss_kb(pid_t pid)
{
	return bench_proc_kb(pid, "status", "VmRSS");
}

static inline long bench_pss_kb(pid_t pid)
{
	return bench_proc_kb(pid, "smaps_rollup", "Pss");
}

/* utime + stime of a process, in seconds. */
static inline double bench_cpu_s(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long ut = 0, st = 0;
	FILE *f;
	size_t n;
	int field;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	p = strrchr(buf, ')');
	if (!p)
		return -1;
	/* after ") ": field 3 is state; utime is field 14, stime 15 */
	p += 2;
	for (field = 3; field < 14 && p; field++) {
		p = strchr(p, ' ');
		if (p)
			p++;
	}
	if (!p || sscanf(p, "%llu %llu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* ---- options ----------------------------------------------------------- */

static inline long bench_parse_long(const char *opt, const char *s, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max) {
		fprintf(stderr, "%s: %s %s: want a number from %ld to %ld\n", bench_name, opt, s, min, max);
		exit(2);
	}
	return v;
}

#endif /* ZKW_BENCH_COMMON_H */
