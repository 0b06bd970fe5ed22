/* SPDX-License-Identifier: Apache-2.0 */
/* bench.c - what zkw's benchmarks share (see bench.h). */
#include "bench.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>

/* ---- messages ------------------------------------------------------------ */

static const char *bench_name = "bench";

static void vmessage(const char *kind, const char *fmt, va_list ap)
{
	fprintf(stderr, "%s: %s", bench_name, kind);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void bench_die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmessage("error: ", fmt, ap);
	va_end(ap);
	exit(1); /* atexit kills the children */
}

void bench_note(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmessage("", fmt, ap);
	va_end(ap);
}

/* ---- the segment to remove at exit ---------------------------------------- */

static char unlink_name[256], sweep_mark[128], unlink_files[4][256];
static pid_t unlink_owner;

static void sweep_shm(void)
{
	char path[512];
	struct dirent *e;
	DIR *d;

	if (!sweep_mark[0] || !(d = opendir("/dev/shm")))
		return;
	while ((e = readdir(d)))
		if (strstr(e->d_name, sweep_mark)) {
			snprintf(path, sizeof(path), "/dev/shm/%s", e->d_name);
			unlink(path);
		}
	closedir(d);
}

static void unlink_at_exit(void)
{
	if (getpid() != unlink_owner)
		return;
	if (unlink_name[0])
		shm_unlink(unlink_name);
	sweep_shm();
	for (int i = 0; i < 4; i++)
		if (unlink_files[i][0])
			unlink(unlink_files[i]);
}

/* Runs after the registry's handler (installed later, it hands the signal
 * on to this one). */
static void unlink_on_signal(int sig)
{
	unlink_at_exit();
	signal(sig, SIG_DFL);
	raise(sig);
}

void bench_init(const char *name)
{
	bench_name = name;
	unlink_owner = getpid();
	atexit(unlink_at_exit); /* before the registry's: runs after it */
	signal(SIGINT, unlink_on_signal);
	signal(SIGTERM, unlink_on_signal);
	signal(SIGHUP, unlink_on_signal);
	signal(SIGPIPE, SIG_IGN);
	zoo_set_debug_level(0);
}

void bench_unlink_on_exit(const char *name)
{
	snprintf(unlink_name, sizeof(unlink_name), "%s", name);
}

void bench_sweep_on_exit(const char *mark)
{
	snprintf(sweep_mark, sizeof(sweep_mark), "%s", mark);
}

void bench_unlink_file_on_exit(const char *path)
{
	for (int i = 0; i < 4; i++)
		if (!unlink_files[i][0]) {
			snprintf(unlink_files[i], sizeof(unlink_files[i]), "%s", path);
			return;
		}
}

int bench_quick_markdown(int argc, char **argv, const char *name, void (*usage)(FILE *out), bool *quick,
                         bool *markdown)
{
	struct zkw_opt o;
	int c;

	zkw_opt_init(&o, argc, argv, name, "q|quick m|markdown h|help", usage);
	while ((c = zkw_opt_next(&o)) != -1) {
		if (c == 'q')
			*quick = true;
		else if (c == 'm')
			*markdown = true;
		else
			return 2;
	}
	if (o.index != argc) {
		usage(stderr);
		return 2;
	}
	return 0;
}

/* ---- statistics ---------------------------------------------------------- */

int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

void bench_stats_of(double *v, size_t n, bench_stats *s)
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

const char *bench_verdict(bool met)
{
	return met ? "met" : "**missed**";
}

/* ---- shared memory ------------------------------------------------------- */

void *bench_shared_alloc(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		bench_die("mmap %zu shared bytes: %s", size, strerror(errno));
	return p;
}

void bench_rendezvous_reset(bench_rendezvous *rv, uint32_t target, uint64_t expect)
{
	__atomic_store_n(&rv->count, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&rv->target, target, __ATOMIC_RELAXED);
	__atomic_store_n(&rv->expect, expect, __ATOMIC_RELEASE);
}

bool bench_rendezvous_wait(bench_rendezvous *rv, int timeout_ms)
{
	uint64_t end = zkw_clock_mono_ns() + (uint64_t)timeout_ms * 1000000u;

	for (;;) {
		uint32_t c = __atomic_load_n(&rv->count, __ATOMIC_ACQUIRE);
		uint64_t now;
		struct timespec rel;

		if (c >= rv->target)
			return true;
		now = zkw_clock_mono_ns();
		if (now >= end)
			return false;
		rel = zkw_clock_timespec(end - now > 100000000u ? 100000000u : end - now);
		bench_futex(&rv->count, FUTEX_WAIT, c, &rel);
	}
}

/* ---- children ------------------------------------------------------------ */

pid_t bench_fork(void)
{
	pid_t pid = proc_fork();

	if (pid < 0)
		bench_die("fork: %s", strerror(-pid));
	return pid;
}

void bench_reader_open(zkw_reader *r, const char *shm)
{
	uint64_t end = zkw_clock_mono_ns() + 20000000000ull;

	while (zkw_reader_open(r, shm) != 0) {
		if (zkw_clock_mono_ns() > end || proc_parent_gone())
			_exit(1);
		zkw_clock_sleep_ns(5000000);
	}
}

pid_t bench_spawn(const char *const *argv, const char *log_path)
{
	pid_t pid = bench_fork();

	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		/* No disk cache (the host's /var/lib/zkw) unless a bench gives
		 * --state-dir: its fsyncs would be part of other measurements. */
		setenv("ZKW_STATE_DIR", "none", 1);
		if (log_path) {
			FILE *f = freopen(log_path, "a", stderr);
			(void)f;
		}
		execv(argv[0], (char *const *)argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	return pid;
}

pid_t bench_broker_start(const char *broker, const char *hosts, const char *path, const char *shm,
                         const char *socket_path, const char *log_path)
{
	const char *argv[] = {broker,
	                      "-z",
	                      hosts,
	                      "-f",
	                      path,
	                      "--ensure",
	                      "--shm",
	                      shm,
	                      "--unlink-on-exit",
	                      "--socket",
	                      socket_path ? socket_path : "none",
	                      NULL};
	char name[256];
	uint64_t end;
	zkw_reader r;
	pid_t pid = bench_spawn(argv, log_path);

	/* A broker killed by the sweep could not unlink its segment. */
	zkw_shm_name(name, sizeof(name), shm);
	bench_unlink_on_exit(name);
	end = zkw_clock_mono_ns() + 20000000000ull;
	for (;;) {
		int st;

		if (proc_pid_exited(pid, &st))
			bench_die("zkw-broker %s exited during start-up (status %d); see %s", broker, st,
			          log_path ? log_path : "stderr");
		if (zkw_reader_open(&r, shm) == 0) {
			bool ok = zkw_reader_generation(&r) > 0 && zkw_reader_is_valid(&r);

			zkw_reader_close(&r);
			if (ok)
				return pid;
		}
		if (zkw_clock_mono_ns() > end)
			bench_die("zkw-broker did not publish a valid %s into %s within 20 s", path, shm);
		zkw_clock_sleep_ns(5000000);
	}
}

/* ---- a broker's control socket ------------------------------------------ */

int bench_ctl_connect(const char *path)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	int fd;

	if (strlen(path) >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	memcpy(addr.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)&addr, sizeof(addr)) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	return fd;
}

int bench_ctl_request(const char *path, const char *line, char *out, size_t cap, bool all, int timeout_ms)
{
	uint64_t end = zkw_clock_mono_ns() + (uint64_t)timeout_ms * 1000000u;
	size_t have = 0;
	long want = -1; /* lines after the first: LIST and READERS say count= */
	int fd = bench_ctl_connect(path), rc = 0;

	if (fd < 0)
		return fd;
	if (dprintf(fd, "%s\n", line) < 0) {
		close(fd);
		return -EIO;
	}
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		uint64_t now = zkw_clock_mono_ns();
		ssize_t n;
		char *nl;

		out[have] = '\0';
		nl = strchr(out, '\n');
		if (nl && want < 0) {
			const char *c = strstr(out, " count=");

			want = all && c && c < nl ? strtol(c + 7, NULL, 10) : 0;
		}
		if (nl && want >= 0) {
			long lines = 0;

			for (const char *q = out; (q = strchr(q, '\n')); q++)
				lines++;
			if (lines >= want + 1)
				break;
		}
		if (have + 1 >= cap) {
			rc = -EMSGSIZE;
			break;
		}
		if (now >= end) {
			rc = -ETIMEDOUT;
			break;
		}
		if (poll(&p, 1, (int)((end - now) / 1000000u) + 1) <= 0)
			continue;
		n = recv(fd, out + have, cap - 1 - have, 0);
		if (n <= 0) {
			rc = n < 0 ? -errno : -ECONNRESET;
			break;
		}
		have += (size_t)n;
	}
	close(fd);
	return rc;
}

void bench_ctl_wait_ready(const char *path, pid_t pid, int timeout_ms, const char *log_path)
{
	uint64_t end = zkw_clock_mono_ns() + (uint64_t)timeout_ms * 1000000u;
	char answer[4096];

	for (;;) {
		int st;

		if (proc_pid_exited(pid, &st))
			bench_die("zkw-broker (pid %d) exited during start-up (status %d); see %s", (int)pid,
			          st, log_path ? log_path : "stderr");
		if (bench_ctl_request(path, "STATUS", answer, sizeof(answer), false, 2000) == 0 &&
		    strncmp(answer, "OK ", 3) == 0 && strstr(answer, " connected=1"))
			return;
		if (zkw_clock_mono_ns() > end)
			bench_die("zkw-broker (pid %d) did not answer STATUS connected=1 on %s within %d ms; "
			          "see %s",
			          (int)pid, path, timeout_ms, log_path ? log_path : "stderr");
		zkw_clock_sleep_ns(5000000);
	}
}

/* ---- ZooKeeper ----------------------------------------------------------- */

zhandle_t *bench_zk_connect(const char *hosts)
{
	char why[256];
	zhandle_t *zh;

	if (zkw_zk_connect(&zh, hosts, 15000, 10000, why, sizeof(why)))
		bench_die("%s", why);
	return zh;
}

void bench_zk_put(zhandle_t *zh, const char *path, const void *data, int len)
{
	char why[256];

	if (zkw_zk_put(zh, path, data, len, NULL, why, sizeof(why)))
		bench_die("set %s: %s", path, why);
}

long bench_zk_connections(const char *hosts)
{
	static char buf[65536];
	const char *p;

	if (zkh_4lw_at(hosts, "mntr", buf, sizeof(buf), 3000) <= 0)
		return -1;
	p = strstr(buf, "zk_num_alive_connections");
	return p ? strtol(p + strlen("zk_num_alive_connections"), NULL, 10) : -1;
}

long long bench_zk_mntr(const char *hosts, const char *key)
{
	static char buf[65536];
	size_t kl = strlen(key);
	const char *p;

	if (zkh_4lw_at(hosts, "mntr", buf, sizeof(buf), 3000) <= 0)
		return -1;
	for (p = buf; (p = strstr(p, key)); p += kl)
		if ((p == buf || p[-1] == '\n') && (p[kl] == '\t' || p[kl] == ' '))
			return strtoll(p + kl, NULL, 10);
	return -1;
}

/* ---- workers' lines -------------------------------------------------------- */

uint64_t bench_lines_collect(bench_lines *l, int n, uint64_t seq, int timeout_ms)
{
	uint8_t *seen = calloc((size_t)n + 1, 1);
	uint64_t end = zkw_clock_mono_ns() + (uint64_t)timeout_ms * 1000000u, mx = 0;
	int got = 0;

	if (!seen)
		bench_die("out of memory");
	while (got < n) {
		struct pollfd p = {.fd = l->fd, .events = POLLIN};
		char *nl;
		ssize_t r;
		int64_t left = (int64_t)(end - zkw_clock_mono_ns()) / 1000000;

		/* Parse the complete lines we have. */
		while ((nl = memchr(l->buf, '\n', l->have)) != NULL) {
			unsigned idx;
			unsigned long long s, ns;

			*nl = '\0';
			if (sscanf(l->buf, "%u %llu %llu", &idx, &s, &ns) == 3 && idx < (unsigned)n &&
			    s == seq && !seen[idx]) {
				seen[idx] = 1;
				got++;
				if (ns > mx)
					mx = ns;
			}
			l->have -= (size_t)(nl + 1 - l->buf);
			memmove(l->buf, nl + 1, l->have);
		}
		if (got >= n)
			break;
		if (l->have == sizeof(l->buf))
			l->have = 0; /* a line longer than the buffer: garbage */
		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			break;
		r = read(l->fd, l->buf + l->have, sizeof(l->buf) - l->have);
		if (r <= 0)
			break;
		l->have += (size_t)r;
	}
	free(seen);
	return got >= n ? mx : 0;
}

/* ---- data for the plots ---------------------------------------------------- */

static FILE *data_file;

void bench_data_open(const char *path)
{
	data_file = fopen(path, "a");
	if (!data_file)
		bench_die("--data %s: %s", path, strerror(errno));
}

void bench_data(const char *fmt, ...)
{
	va_list ap;

	if (!data_file)
		return;
	va_start(ap, fmt);
	vfprintf(data_file, fmt, ap);
	va_end(ap);
	fputc('\n', data_file);
	fflush(data_file);
}

/* ---- the numbered config ------------------------------------------------- */

int bench_config(char *buf, size_t cap, uint64_t seq, size_t len)
{
	int n = snprintf(buf, cap, "seq=%020" PRIu64 "\n", seq);

	if (len > cap)
		len = cap;
	if ((size_t)n < len)
		memset(buf + n, 'x', len - (size_t)n - 1), buf[len - 1] = '\n';
	return (int)((size_t)n > len ? (size_t)n : len);
}

/* ---- /proc --------------------------------------------------------------- */

/* A "Key:   1234 kB" field of a /proc file, in kB; -1 if absent. */
static long kb_field(pid_t pid, const char *file, const char *key)
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

long bench_rss_kb(pid_t pid)
{
	return kb_field(pid, "status", "VmRSS");
}

long bench_status_kb(pid_t pid, const char *key)
{
	return kb_field(pid, "status", key);
}

long bench_pss_kb(pid_t pid)
{
	return kb_field(pid, "smaps_rollup", "Pss");
}

double bench_cpu_s(pid_t pid)
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

/* ---- pipelined writes ------------------------------------------------------- */

struct bench_writer bench_wr = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0};

static void bench_set_done(int rc, const struct Stat *stat, const void *data)
{
	uint64_t seq = (uint64_t)(uintptr_t)data, now = zkw_clock_mono_ns();

	(void)stat;
	pthread_mutex_lock(&bench_wr.lock);
	bench_wr.inflight--;
	if (rc == ZOK) {
		bench_wr.completed++;
		if (seq > bench_wr.last_done_seq) {
			bench_wr.last_done_seq = seq;
			bench_wr.last_done_ns = now;
		}
	} else {
		bench_wr.failed++;
	}
	pthread_cond_broadcast(&bench_wr.cond);
	pthread_mutex_unlock(&bench_wr.lock);
}

void bench_set_issue(zhandle_t *zh, const char *path, const char *buf, int n, uint64_t seq)
{
	int rc;

	pthread_mutex_lock(&bench_wr.lock);
	bench_wr.inflight++;
	pthread_mutex_unlock(&bench_wr.lock);
	rc = zoo_aset(zh, path, buf, n, -1, bench_set_done, (const void *)(uintptr_t)seq);
	if (rc != ZOK)
		bench_die("zoo_aset: %s", zerror(rc));
}

void bench_set_wait_below(unsigned limit, int timeout_ms)
{
	/* The cond waits on CLOCK_REALTIME; a second of slack past timeout_ms. */
	struct timespec ts = zkw_clock_deadline_ms(CLOCK_REALTIME, (int64_t)(timeout_ms / 1000 + 1) * 1000);

	pthread_mutex_lock(&bench_wr.lock);
	while (bench_wr.inflight >= limit)
		if (pthread_cond_timedwait(&bench_wr.cond, &bench_wr.lock, &ts) == ETIMEDOUT)
			bench_die("ZooKeeper did not answer %u writes within %d ms", bench_wr.inflight, timeout_ms);
	pthread_mutex_unlock(&bench_wr.lock);
}
