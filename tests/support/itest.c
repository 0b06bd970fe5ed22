/* SPDX-License-Identifier: Apache-2.0 */
/* itest.c - the fixtures the integration tests share (see itest.h). */
#include "itest.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <xxhash.h>

#include <cmocka.h>

#include <zkw/bundle.h>

#include "zkw_clock.h"
#include "zkw_zk.h"
#include "publish/writer.h"

#define WAIT_MS_DEFAULT  20000
#define READ_CAP_DEFAULT (64u * 1024)
#define MAX_SEGMENTS     32 /* names remembered for the teardown */
#define MAX_READERS      8  /* readers open at once */

static struct {
	char prefix[32];
	int wait_ms;
	size_t read_cap;
	bool follow;
	zkh_cluster *zk;
	const char *hosts;
	char root[64];
	char segments[MAX_SEGMENTS][ZKW_SHM_NAME_MAX + 1];
	int nsegments;
} run = {.prefix = "zkwt", .wait_ms = WAIT_MS_DEFAULT, .read_cap = READ_CAP_DEFAULT};

static struct itest_seg segs[MAX_READERS];

/* ---- the run ----------------------------------------------------------- */

void itest_configure(const struct itest_config *c)
{
	snprintf(run.prefix, sizeof(run.prefix), "%s", c->prefix ? c->prefix : "zkwt");
	run.wait_ms = c->wait_ms > 0 ? c->wait_ms : WAIT_MS_DEFAULT;
	run.read_cap = c->read_cap ? c->read_cap : READ_CAP_DEFAULT;
	run.follow = c->follow;
	snprintf(run.root, sizeof(run.root), "/%s%d", run.prefix, (int)getpid());
}

zkh_cluster *itest_zk_start(const struct itest_config *c)
{
	itest_configure(c);
	run.zk = zkh_start(1);
	run.hosts = run.zk ? zkh_hosts(run.zk) : NULL;
	return run.zk;
}

int itest_zk_up(void)
{
	if (!run.zk || zkh_pid(run.zk, 0) != 0)
		return 0;
	if (zkh_member_start(run.zk, 0) != 0) {
		fprintf(stderr, "cannot restart ZooKeeper\n");
		return -1;
	}
	return 1;
}

void itest_zk_stop(void)
{
	if (!run.zk)
		return;
	itest_zk_up();
	zkh_delete(run.hosts, run.root);
	zkh_stop(run.zk);
	run.zk = NULL;
	run.hosts = NULL;
}

void itest_test_cleanup(void)
{
	itest_seg_close_all();
	proc_kill_all();
	itest_seg_unlink_all();
}

void itest_group_cleanup(void)
{
	itest_test_cleanup();
	itest_zk_stop();
}

zkh_cluster *itest_zk(void)
{
	return run.zk;
}

const char *itest_hosts(void)
{
	return run.hosts;
}

const char *itest_root(void)
{
	return run.root;
}

int itest_wait_ms(void)
{
	return run.wait_ms;
}

/* ---- names ------------------------------------------------------------- */

const char *itest_node(char *buf, size_t cap, const char *tag)
{
	snprintf(buf, cap, "%s/%s", run.root, tag);
	return buf;
}

void itest_seg_remember(const char *name)
{
	if (run.nsegments >= MAX_SEGMENTS)
		fail_msg("more than %d segment names in one test", MAX_SEGMENTS);
	snprintf(run.segments[run.nsegments++], sizeof(run.segments[0]), "%s", name);
}

const char *itest_seg_name(const char *tag)
{
	char name[ZKW_SHM_NAME_MAX + 1];

	snprintf(name, sizeof(name), "%s.%d.%s", run.prefix, (int)getpid(), tag);
	zkw_writer_remove(name); /* a leftover of a crashed run with a recycled pid */
	itest_seg_remember(name);
	return run.segments[run.nsegments - 1];
}

void itest_seg_unlink_all(void)
{
	for (int i = 0; i < run.nsegments; i++)
		zkw_writer_remove(run.segments[i]);
	run.nsegments = 0;
}

bool itest_seg_exists(const char *name)
{
	char path[ZKW_SHM_NAME_MAX + 16];

	snprintf(path, sizeof(path), "/dev/shm/%s", name);
	return access(path, F_OK) == 0;
}

const char *itest_dir_make(char *buf, size_t cap)
{
	const char *rundir = getenv("ZKW_TEST_RUNDIR"), *tmp = getenv("TMPDIR");
	int n;

	if (rundir && *rundir) {
		n = snprintf(buf, cap, "%s/%s.%d", rundir, run.prefix, (int)getpid());
		if (n > 0 && (size_t)n < cap) {
			if (mkdir(buf, 0700) == 0)
				return buf;
			fprintf(stderr, "mkdir %s: %s\n", buf, strerror(errno));
			return NULL;
		}
	}
	n = snprintf(buf, cap, "%s/%s.XXXXXX", tmp && *tmp ? tmp : "/tmp", run.prefix);
	if (n < 0 || (size_t)n >= cap)
		n = snprintf(buf, cap, "/tmp/%s.XXXXXX", run.prefix);
	if (n < 0 || (size_t)n >= cap) {
		fprintf(stderr, "no directory name of %s fits in %zu bytes\n", run.prefix, cap);
		return NULL;
	}
	if (!mkdtemp(buf)) {
		fprintf(stderr, "mkdtemp %s: %s\n", buf, strerror(errno));
		return NULL;
	}
	return buf;
}

static const char *tree_top;
static bool tree_keep_top;

static int tree_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb, (void)type, (void)ftw;
	if (!(tree_keep_top && strcmp(path, tree_top) == 0))
		remove(path);
	return 0;
}

void itest_tree_remove(const char *path, bool keep_top)
{
	tree_top = path;
	tree_keep_top = keep_top;
	nftw(path, tree_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- ZooKeeper ----------------------------------------------------------- */

void itest_put_bytes(const char *path, const void *data, size_t len)
{
	int rc = zkh_set(run.hosts, path, data, data ? (int)len : -1);

	if (rc != ZOK)
		fail_msg("zkh_set %s: %s", path, zerror(rc));
}

void itest_put(const char *path, const char *text)
{
	itest_put_bytes(path, text, text ? strlen(text) : 0);
}

void itest_delete(const char *path)
{
	int rc = zkh_delete(run.hosts, path);

	if (rc != ZOK && rc != ZNONODE)
		fail_msg("zkh_delete %s: %s", path, zerror(rc));
}

void itest_zk_put(zhandle_t *zh, const char *path, const void *data, int len)
{
	char why[256];

	if (zkw_zk_put(zh, path, data, len, NULL, why, sizeof(why)) != 0)
		fail_msg("put %s: %s", path, why);
}

void itest_zk_delete_tree(zhandle_t *zh, const char *path)
{
	char why[256];
	int rc = zkw_zk_delete_tree(zh, path, why, sizeof(why));

	if (rc != 0 && rc != -ENOENT)
		fail_msg("delete %s: %s", path, why);
}

struct attach {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool connected;
};

static void attach_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
	struct attach *a = ctx;

	(void)zh, (void)path;
	if (type != ZOO_SESSION_EVENT)
		return;
	pthread_mutex_lock(&a->lock);
	a->connected = state == ZOO_CONNECTED_STATE;
	pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->lock);
}

static void quiet_log(const char *message)
{
	(void)message;
}

/* The watcher's context lives as long as the handle (its threads may call
 * the watcher until zookeeper_close has joined them): on the heap, freed by
 * itest_zk_close. */
zhandle_t *itest_zk_attach(const clientid_t *cid, int session_timeout_ms)
{
	struct attach *a = malloc(sizeof(*a));
	struct timespec ts = zkw_clock_deadline_ms(CLOCK_REALTIME, run.wait_ms);
	zhandle_t *zh;

	assert_non_null(a);
	*a = (struct attach){PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
	zh = zookeeper_init2(run.hosts, attach_watcher, session_timeout_ms, cid, a, 0, quiet_log);
	if (!zh)
		free(a);
	assert_non_null(zh);
	pthread_mutex_lock(&a->lock);
	while (!a->connected && pthread_cond_timedwait(&a->cond, &a->lock, &ts) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&a->lock);
	return zh;
}

void itest_zk_close(zhandle_t *zh)
{
	void *a = (void *)zoo_get_context(zh);

	zookeeper_close(zh); /* its threads are joined: nothing calls the watcher now */
	free(a);
}

void itest_zk_session_end(const clientid_t *cid, int session_timeout_ms)
{
	itest_zk_close(itest_zk_attach(cid, session_timeout_ms)); /* closes the shared session, if still ours */
}

/* ---- local files ------------------------------------------------------- */

void itest_write_file(const char *path, const char *fmt, ...)
{
	char tmp[PATH_MAX];
	va_list ap;
	FILE *f;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		fail_msg("path too long: %s", path);
	f = fopen(tmp, "w");
	if (!f)
		fail_msg("%s: %s", tmp, strerror(errno));
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(rename(tmp, path), 0);
}

const char *itest_local_file(char *buf, size_t cap, const char *dir, const char *name, const void *data,
                             size_t len)
{
	FILE *f;

	if (snprintf(buf, cap, "%s/%s", dir, name) >= (int)cap)
		fail_msg("path too long: %s/%s", dir, name);
	f = fopen(buf, "wb");
	if (!f)
		fail_msg("%s: %s", buf, strerror(errno));
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	return buf;
}

void itest_fail_free(char *a, char *b, const char *fmt, ...)
{
	char msg[16384];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	free(a);
	free(b);
	fail_msg("%s", msg);
}

/* ---- tools ------------------------------------------------------------- */

struct itest_run itest_run_tool(const char *tool, const proc_options *o, const char *first, ...)
{
	const char *argv[64];
	struct itest_run r;
	va_list ap;

	va_start(ap, first);
	proc_collect_args(argv, sizeof(argv) / sizeof(argv[0]), first, ap);
	va_end(ap);
	r.status = proc_run(tool, argv, o, run.wait_ms, &r.out, &r.err);
	if (!r.out || !r.err)
		itest_fail_free(r.out, r.err, "%s %s: status %d, no output captured", tool,
		                first ? first : "", r.status);
	return r;
}

void itest_run_free(struct itest_run *r)
{
	free(r->out);
	free(r->err);
	r->out = r->err = NULL;
}

int itest_inspect(char **out, const char *first, ...)
{
	const char *argv[32];
	char *err = NULL;
	va_list ap;
	int status;

	va_start(ap, first);
	proc_collect_args(argv, sizeof(argv) / sizeof(argv[0]), first, ap);
	va_end(ap);
	*out = NULL;
	status = proc_run("zkw-inspect", argv, NULL, run.wait_ms, out, &err);
	if (status < 0 || status > 3 || !*out) {
		free(*out);
		*out = NULL;
		itest_fail_free(err, NULL, "zkw-inspect %s: status %d\n%s", first ? first : "", status,
		                err ? err : "");
	}
	free(err);
	return status;
}

/* ---- the broker -------------------------------------------------------- */

proc *itest_broker_start_env(const char *const *env, const char *first, ...)
{
	const char *argv[64];
	proc_options o = {.env = env};
	va_list ap;
	proc *b;

	va_start(ap, first);
	proc_collect_args(argv, sizeof(argv) / sizeof(argv[0]), first, ap);
	va_end(ap);
	b = proc_spawn_opts("zkw-broker", argv, &o);
	if (!b)
		fail_msg("zkw-broker %s ...: not started", first ? first : "");
	return b;
}

proc *itest_broker_listening(const char *sock, const char *const *fixed, const char *first, va_list ap)
{
	const char *argv[64];
	size_t n = 0;
	proc *b;

	for (; fixed && fixed[n]; n++) {
		if (n >= sizeof(argv) / sizeof(argv[0]) / 2)
			fail_msg("zkw-broker: more than %zu fixed arguments", n);
		argv[n] = fixed[n];
	}
	proc_collect_args(argv + n, sizeof(argv) / sizeof(argv[0]) - n, first, ap);
	b = proc_spawn("zkw-broker", argv);
	if (!b)
		fail_msg("zkw-broker: not started");
	if (!proc_wait_output(b, PROC_STDERR, "listening", run.wait_ms)) {
		proc_dump(b, "no 'listening' line");
		proc_free(b);
		fail_msg("broker did not listen on %s within %d ms", sock, run.wait_ms);
	}
	return b;
}

void itest_broker_wait_segment(proc *b, const char *shm)
{
	char line[ZKW_SHM_NAME_MAX + 32];

	snprintf(line, sizeof(line), "into segment /%s ", shm);
	if (!proc_wait_output(b, PROC_STDERR, line, run.wait_ms))
		fail_msg("%s: no \"%s\" within %d ms", proc_name(b), line, run.wait_ms);
}

void itest_broker_stop(proc *b)
{
	int status;

	assert_int_equal(proc_signal(b, SIGTERM), 0);
	status = proc_wait(b, run.wait_ms);
	if (status != 0) {
		proc_dump(b, "did not stop cleanly");
		fail_msg("%s: exit status %d after SIGTERM, want 0", proc_name(b), status);
	}
	proc_free(b);
}

void itest_broker_kill(proc *b)
{
	int status;

	proc_signal(b, SIGKILL);
	status = proc_wait(b, run.wait_ms);
	if (status != PROC_SIGNALED(SIGKILL)) {
		proc_dump(b, "was not killed by our SIGKILL");
		fail_msg("%s: status %d, want death by SIGKILL", proc_name(b), status);
	}
	proc_free(b);
}

/* ---- the broker's counters ---------------------------------------------- */

const char *itest_stats_path(char *buf, size_t cap, pid_t pid)
{
	snprintf(buf, cap, "/dev/shm/" ZKW_STATS_PREFIX "%d", (int)pid);
	return buf;
}

/* 0, or -errno and why. */
static int stats_load(pid_t pid, struct zkw_stats_view *v, char *why, size_t cap)
{
	char path[64];
	void *map;
	int fd, err;

	itest_stats_path(path, sizeof(path), pid);
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		err = -errno;
		snprintf(why, cap, "no stats object %s: %s", path, strerror(-err));
		return err;
	}
	map = mmap(NULL, ZKW_STATS_SIZE, PROT_READ, MAP_SHARED, fd, 0);
	err = map == MAP_FAILED ? -errno : 0;
	close(fd);
	if (err) {
		snprintf(why, cap, "mmap %s: %s", path, strerror(-err));
		return err;
	}
	err = zkw_stats_load(map, ZKW_STATS_SIZE, v);
	munmap(map, ZKW_STATS_SIZE);
	if (err)
		snprintf(why, cap, "%s does not load: %s", path, strerror(-err));
	return err;
}

bool itest_stats_load(pid_t pid, struct zkw_stats_view *v)
{
	char why[160];

	return stats_load(pid, v, why, sizeof(why)) == 0;
}

uint64_t itest_stat(pid_t pid, enum zkw_stat which)
{
	struct zkw_stats_view v;
	char why[160];

	if (stats_load(pid, &v, why, sizeof(why)) != 0)
		fail_msg("broker %d: %s", (int)pid, why);
	if (v.counter_count <= (uint32_t)which)
		fail_msg("broker %d: %u counters, none at index %d", (int)pid, v.counter_count, (int)which);
	return v.counter[which];
}

struct counter_wait {
	pid_t pid;
	enum zkw_stat which;
	uint64_t min, last;
};

static bool counter_reached(void *arg)
{
	struct counter_wait *c = arg;
	struct zkw_stats_view v;

	if (!itest_stats_load(c->pid, &v))
		return false;
	c->last = v.counter[c->which];
	return c->last >= c->min;
}

void itest_stat_wait(pid_t pid, enum zkw_stat which, uint64_t min, const char *name)
{
	struct counter_wait c = {pid, which, min, 0};

	if (!zkh_eventually(counter_reached, &c, run.wait_ms))
		fail_msg("broker %d: counter %s is %llu after %d ms, want at least %llu", (int)pid, name,
		         (unsigned long long)c.last, run.wait_ms, (unsigned long long)min);
}

/* ---- the control socket ------------------------------------------------ */

int itest_connect(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int fd, e;

	if (snprintf(a.sun_path, sizeof(a.sun_path), "%s", path) >= (int)sizeof(a.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		e = errno;
		if (fd >= 0)
			close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

char *itest_ask(int fd, const char *req, int lines)
{
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	int seen = 0;

	assert_non_null(buf);
	if (req && send(fd, req, strlen(req), MSG_NOSIGNAL) != (ssize_t)strlen(req))
		itest_fail_free(buf, NULL, "send %s: %s", req, strerror(errno));
	while (seen < lines) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t n;

		if (poll(&p, 1, run.wait_ms) != 1) {
			buf[len] = '\0';
			itest_fail_free(buf, NULL, "no answer to %s within %d ms (have: %s)",
			                req ? req : "(none)", run.wait_ms, buf);
		}
		if (len + 1 >= cap) {
			char *more = realloc(buf, cap * 2);

			if (!more)
				itest_fail_free(buf, NULL, "out of memory");
			buf = more;
			cap *= 2;
		}
		n = recv(fd, buf + len, cap - len - 1, 0);
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++)
			seen += buf[len + i] == '\n';
		len += (size_t)n;
	}
	buf[len] = '\0';
	return buf;
}

char *itest_ask_at(const char *sock, const char *req, int lines)
{
	int fd = itest_connect(sock);
	char *a;

	if (fd < 0)
		fail_msg("connect %s: %s", sock, strerror(errno));
	a = itest_ask(fd, req, lines);
	close(fd);
	return a;
}

/* ---- reader processes ---------------------------------------------------- */

void itest_children_start(int n, pid_t *pids, int *reports, itest_child_fn *fn, void *arg)
{
	int64_t deadline = zkw_clock_mono_ms() + run.wait_ms;
	int ready[2], started = 0;

	for (int i = 0; i < n; i++)
		pids[i] = 0;
	assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
	for (int i = 0; i < n; i++) {
		int fds[2];

		assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
		pids[i] = proc_fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			close(ready[0]);
			close(fds[0]);
			fn(arg, ready[1], fds[1]);
			_exit(127); /* fn never returns */
		}
		close(fds[1]);
		reports[i] = fds[0];
	}
	close(ready[1]);
	while (started < n) {
		struct pollfd p = {.fd = ready[0], .events = POLLIN};
		int64_t left = deadline - zkw_clock_mono_ms();
		char c;

		if (left <= 0 || poll(&p, 1, (int)left) != 1 || read(ready[0], &c, 1) != 1)
			break;
		started++;
	}
	close(ready[0]);
	if (started < n) {
		proc_kill_pids(pids, n);
		fail_msg("%d of %d reader processes did not start within %d ms", n - started, n, run.wait_ms);
	}
}

void itest_children_reports(int n, pid_t *pids, int *reports, void *out, size_t size, int timeout_ms)
{
	for (int i = 0; i < n; i++) {
		int status = proc_reap_pid(pids[i], timeout_ms);
		ssize_t got = read(reports[i], (char *)out + (size_t)i * size, size);

		close(reports[i]);
		pids[i] = 0;
		if (status != 0 || got != (ssize_t)size) {
			proc_kill_pids(pids, n);
			fail_msg("reader process %d: wait status %#x, report %zd bytes of %zu", i, status,
			         got, size);
		}
	}
}

/* ---- readers ------------------------------------------------------------- */

static struct itest_seg *seg_slot(const char *name, proc *broker)
{
	struct itest_seg *s;
	size_t i;

	for (i = 0; i < MAX_READERS && segs[i].used; i++)
		;
	if (i == MAX_READERS)
		fail_msg("more than %d readers open at once", MAX_READERS);
	s = &segs[i];
	memset(&s->snap, 0, sizeof(s->snap));
	s->len = -1;
	s->broker = broker;
	s->follow = run.follow && name[0];
	snprintf(s->name, sizeof(s->name), "%s", name);
	if (!s->buf)
		s->buf = malloc(run.read_cap + 1);
	assert_non_null(s->buf);
	s->buf[0] = '\0';
	return s;
}

struct itest_seg *itest_seg_try_open(const char *shm, proc *broker, int *err)
{
	struct itest_seg *s = seg_slot(shm, broker);

	*err = zkw_reader_open(&s->r, shm);
	if (*err)
		return NULL;
	s->used = true;
	return s;
}

struct itest_seg *itest_seg_open(const char *shm, proc *broker)
{
	struct itest_seg *s = seg_slot(shm, broker);
	int err = zkw_reader_open(&s->r, shm);

	if (err) {
		if (broker)
			proc_dump(broker, "segment cannot be opened");
		fail_msg("zkw_reader_open(%s): %s: %s", shm, strerror(-err), s->r.why ? s->r.why : "");
	}
	s->used = true;
	return s;
}

struct itest_seg *itest_seg_subscribe(const char *sock, const char *path, unsigned flags, proc *broker)
{
	struct itest_seg *s = seg_slot("", broker);
	int err = zkw_reader_subscribe(&s->r, sock, path, flags);

	if (err) {
		if (broker)
			proc_dump(broker, "subscription refused");
		fail_msg("zkw_reader_subscribe(%s, %#x): %s (%s)", path, flags, strerror(-err),
		         s->r.why ? s->r.why : "");
	}
	s->used = true;
	return s;
}

void itest_seg_close(struct itest_seg *s)
{
	if (s && s->used) {
		zkw_reader_close(&s->r);
		s->used = false;
	}
}

void itest_seg_close_all(void)
{
	for (size_t i = 0; i < MAX_READERS; i++) {
		itest_seg_close(&segs[i]);
		free(segs[i].buf);
		segs[i].buf = NULL;
	}
}

ssize_t itest_seg_read(struct itest_seg *s)
{
	do
		s->len = zkw_reader_read(&s->r, &s->snap, s->buf, run.read_cap);
	while (s->len == -EAGAIN);
	if (s->len >= 0)
		s->buf[s->len] = '\0';
	return s->len;
}

static bool tri_ok(int want, bool have)
{
	return want == ITEST_ANY || have == (want == ITEST_YES);
}

bool itest_seg_matches(const struct itest_seg *s, const struct itest_want *w)
{
	char text[4096];

	if (s->len < 0 || s->snap.generation == 0 || s->snap.generation <= w->after_gen)
		return false;
	if (!tri_ok(w->valid, s->snap.valid) || !tri_ok(w->connected, s->snap.connected) ||
	    !tri_ok(w->rejected, s->snap.rejected) || !tri_ok(w->cached, s->snap.cached))
		return false;
	if (w->content &&
	    ((size_t)s->len != strlen(w->content) || memcmp(s->buf, w->content, (size_t)s->len) != 0))
		return false;
	if (w->bytes && ((size_t)s->len != w->len || memcmp(s->buf, w->bytes, w->len) != 0))
		return false;
	if (w->bundle &&
	    (!s->snap.bundle || itest_bundle_text(s->buf, (size_t)s->len, text, sizeof(text)) < 0 ||
	     strcmp(text, w->bundle) != 0))
		return false;
	if (w->error && strncmp(s->snap.error, w->error, strlen(w->error)) != 0)
		return false;
	if (w->error_has && !strstr(s->snap.error, w->error_has))
		return false;
	if (w->pointer && strcmp(s->snap.pointer, w->pointer) != 0)
		return false;
	return !w->pred || w->pred(s, w->arg);
}

int itest_bundle_text(const void *content, size_t len, char *out, size_t cap)
{
	zkw_bundle b;
	zkw_bundle_entry e;
	size_t at = 0;
	int err = zkw_bundle_open(&b, content, len);

	out[0] = '\0';
	if (err) {
		snprintf(out, cap, "(not a bundle: %s)", strerror(-err));
		return -1;
	}
	for (uint32_t i = 0; i < b.count && at < cap; i++) {
		if (zkw_bundle_entry_at(&b, i, &e) != 0) {
			snprintf(out + at, cap - at, "(entry %u unreadable)", i);
			return -1;
		}
		at += (size_t)snprintf(out + at, cap - at, "%s%s=%.*s", i ? "," : "", e.name,
		                       (int)(e.len < 40 ? e.len : 40), (const char *)e.data);
	}
	return 0;
}

/* Content shown in a message: text as it is (up to 200 bytes), a bundle as
 * its entries, anything else as its size, hash and first bytes. */
static void content_text(const struct itest_seg *s, char *out, size_t cap)
{
	size_t len = s->len > 0 ? (size_t)s->len : 0, shown = len < 200 ? len : 200, at;
	bool text = true;

	if (s->len < 0) {
		snprintf(out, cap, "(no read: %s)", strerror((int)-s->len));
		return;
	}
	if (s->snap.bundle) {
		itest_bundle_text(s->buf, len, out, cap);
		return;
	}
	for (size_t i = 0; i < shown && text; i++) {
		unsigned char c = (unsigned char)s->buf[i];

		text = (c >= 0x20 && c != 0x7f) || c == '\n' || c == '\t';
	}
	if (text) {
		at = (size_t)snprintf(out, cap, "\"%.*s\"", (int)shown, s->buf);
		if (len > shown && at < cap)
			snprintf(out + at, cap - at, "... (%zu bytes, xxh3 %016llx)", len,
			         (unsigned long long)XXH3_64bits(s->buf, len));
		return;
	}
	at = (size_t)snprintf(out, cap, "%zu bytes, xxh3 %016llx, starting", len,
	                      (unsigned long long)XXH3_64bits(s->buf, len));
	for (size_t i = 0; i < len && i < 16 && at < cap; i++)
		at += (size_t)snprintf(out + at, cap - at, " %02x", (unsigned char)s->buf[i]);
}

void itest_seg_describe(const struct itest_seg *s)
{
	char content[1024];

	content_text(s, content, sizeof(content));
	fprintf(stderr,
	        "  segment %s: read=%zd generation=%llu valid=%d connected=%d rejected=%d cached=%d "
	        "bundle=%d "
	        "len=%zu version=%lld mzxid=%lld content_gen=%llu changed_ns=%llu state=0x%x capacity=%llu\n"
	        "  error=\"%s\" pointer=\"%s\"\n  content: %s\n",
	        s->name[0] ? s->name : "(subscribed)", s->len, (unsigned long long)s->snap.generation,
	        s->snap.valid, s->snap.connected, s->snap.rejected, s->snap.cached, s->snap.bundle,
	        s->snap.len, (long long)s->snap.version, (long long)s->snap.mzxid,
	        (unsigned long long)s->snap.content_gen, (unsigned long long)s->snap.changed_ns,
	        zkw_reader_state(&s->r), (unsigned long long)zkw_reader_capacity(&s->r), s->snap.error,
	        s->snap.pointer, content);
}

static void want_describe(const struct itest_want *w)
{
	static const char *const tri[] = {"any", "yes", "no"};

	fprintf(stderr, "  wanted: valid=%s connected=%s rejected=%s cached=%s generation>%llu",
	        tri[w->valid % 3], tri[w->connected % 3], tri[w->rejected % 3], tri[w->cached % 3],
	        (unsigned long long)w->after_gen);
	if (w->content)
		fprintf(stderr, " content=\"%.200s\"", w->content);
	if (w->bytes)
		fprintf(stderr, " %zu bytes (xxh3 %016llx)", w->len,
		        (unsigned long long)XXH3_64bits(w->bytes, w->len));
	if (w->bundle)
		fprintf(stderr, " bundle=\"%.200s\"", w->bundle);
	if (w->error)
		fprintf(stderr, " error starting \"%s\"", w->error);
	if (w->error_has)
		fprintf(stderr, " error holding \"%s\"", w->error_has);
	if (w->pointer)
		fprintf(stderr, " pointer=\"%s\"", w->pointer);
	if (w->pred)
		fprintf(stderr, " and the test's predicate");
	fputc('\n', stderr);
}

/* A segment replaced under its name (grown, re-created): read the new one. */
static void seg_reopen(struct itest_seg *s)
{
	int err;

	zkw_reader_close(&s->r);
	err = zkw_reader_open(&s->r, s->name);
	if (err) {
		s->used = false;
		fail_msg("reopening %s: %s", s->name, strerror(-err));
	}
}

bool itest_seg_wait(struct itest_seg *s, const struct itest_want *w, int timeout_ms, const char *what)
{
	int64_t deadline = zkw_clock_mono_ms() + timeout_ms;

	for (;;) {
		int64_t left;
		int rc;

		itest_seg_read(s);
		if (itest_seg_matches(s, w))
			return true;
		if (s->follow && zkw_reader_retired(&s->r)) {
			seg_reopen(s);
			continue;
		}
		left = deadline - zkw_clock_mono_ms();
		if (left <= 0)
			break;
		rc = zkw_reader_wait(&s->r, s->len >= 0 ? s->snap.generation : 0, (int)left);
		if (rc == -ESTALE && s->follow) {
			seg_reopen(s);
		} else if (rc < 0 && rc != -EINTR) {
			fprintf(stderr, "zkw_reader_wait: %s\n", strerror(-rc));
			break;
		}
	}
	fprintf(stderr, "segment never reached: %s (within %d ms)\n", what, timeout_ms);
	want_describe(w);
	itest_seg_describe(s);
	if (s->broker)
		proc_dump(s->broker, "broker output");
	return false;
}

void itest_dispatch_all(zkw_dispatcher *d)
{
	while (d->seen != zkw_reader_generation(d->reader)) {
		int rc = zkw_dispatch(d, 0);

		if (rc < 0 && rc != -EAGAIN)
			fail_msg("zkw_dispatch: %s", strerror(-rc));
	}
}

/* ---- a child that may be refused what it needs ----------------------------- */

void itest_child_or_skip(int (*child)(void), const char *what, int timeout_ms)
{
	pid_t pid = proc_fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0)
		_exit(child());
	status = proc_reap_pid(pid, timeout_ms);
	if (status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 77) {
		print_message("the kernel refuses a private mount namespace or a tmpfs mount here: skipped\n");
		skip();
	}
	if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("%s: status 0x%x", what, status);
}
