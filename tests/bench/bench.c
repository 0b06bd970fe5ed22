/* SPDX-License-Identifier: Apache-2.0 */
/* bench.c - what zkw's benchmarks share (see bench.h). */
#include "bench.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>

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

static char unlink_name[256];
static pid_t unlink_owner;

static void unlink_at_exit(void)
{
	if (getpid() == unlink_owner && unlink_name[0])
		shm_unlink(unlink_name);
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

pid_t bench_broker_start(const char *broker, const char *hosts, const char *path, const char *shm,
                         const char *log_path)
{
	char name[256];
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
