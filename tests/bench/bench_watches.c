/* SPDX-License-Identifier: Apache-2.0 */
/* bench_watches.c - a broker serving many paths on demand, next to a bare
 * ZooKeeper client doing the same reads.
 *
 *  1. Subscribe -> first content: zkw_reader_subscribe() to a path no watch
 *     has yet, until zkw_reader_read() gives its content, against a bare
 *     zoo_get of the same node on a connected client, and against a new
 *     session + zoo_get (what the seed pays per worker). Samples
 *     interleaved, the order rotated.
 *  2. For 100, 1,000 and 10,000 watches (--sizes; --quick: 100 and 1,000;
 *     fewer when the open file limit cannot hold them), added on demand through the
 *     control socket (SUBSCRIBE lines pipelined over --conns connections,
 *     each answered once the watch's first evaluation is in): the time to
 *     have every one valid, against the same reads pipelined on one bare C
 *     client (zoo_awget on all, wait for all), samples alternated; the
 *     broker's RSS/PSS and its /dev/shm bytes per watch; the reconcile's
 *     request rate (ZooKeeper's mntr zk_packets_received over a window,
 *     --reconcile 1 so that the --reconcile-rate cap of 50/s binds).
 *  3. Change latency of one more watch of that broker (a reader subscribed
 *     to it) against the same on a broker without other watches, samples
 *     interleaved: what 10,000 idle watches cost a change.
 *
 *     bench_watches -z 127.0.0.1:2181 --broker build/zkw-broker [--quick]
 */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "bench.h"

#define MAX_SIZES         4
#define MAX_CONNS         256
#define SAMPLE_TIMEOUT_MS 5000
#define GAP_NS            2000000u /* quiet time between samples */
#define CONFIG_LEN        BENCH_CONFIG_LEN
#define BROKER_CONNS      128 /* --max-connections of the brokers: ours and the readers' */
/* The broker's descriptors (broker/daemon/main.c): 2 a watch, one a
 * connection, 64 spare. */
#define FDS_PER_WATCH 2
#define FDS_FIXED     (BROKER_CONNS + 64)

/* A reader process that subscribes where the bench tells it and stamps
 * every new config it reads (cache line each). */
struct stamp {
	uint64_t seq;
	uint64_t ns;
	uint8_t pad_[48];
};

enum { SUB_NONE, SUB_OK, SUB_FAILED, SUB_PENDING };

struct lat_reader {
	uint32_t cmd;   /* bumped by the bench: (re)subscribe to sock/path */
	uint32_t state; /* SUB_* */
	char sock[108];
	char path[256];
	char why[256];
	uint8_t pad_[64];
	struct stamp stamp;
};

struct shared {
	bench_rendezvous rv;
	uint8_t pad0_[64 - sizeof(bench_rendezvous)];
	struct lat_reader rd[2]; /* 0: the broker with many watches, 1: the one without */
};

static struct shared *sh;
static const char *opt_hosts, *opt_broker;
static bool opt_quick;
static int opt_conns = 64;
static char base_path[128], sock_a[108], sock_b[108], log_path[256], shm_mark[64];
static uint64_t seq_counter = 1000;
static rlim_t fd_hard; /* the hard limit that cut a size down, 0 if none did */

#define STRINGIFY_(x) #x
#define STRINGIFY(x)  STRINGIFY_(x)

/* ---- the reader process ----------------------------------------------------- */

static void reader_main(int idx)
{
	struct lat_reader *me = &sh->rd[idx];
	char buf[4096];
	zkw_snapshot meta;
	zkw_reader r;
	uint32_t cmd = 0;
	uint64_t seen = 0, last = 0;
	bool open = false;

	for (;;) {
		uint32_t c = __atomic_load_n(&me->cmd, __ATOMIC_ACQUIRE);
		ssize_t n;
		uint64_t seq, t;
		int rc;

		if (proc_parent_gone())
			_exit(0);
		if (c != cmd) {
			if (open)
				zkw_reader_close(&r);
			open = false;
			cmd = c;
			if (!me->path[0]) {
				__atomic_store_n(&me->state, SUB_NONE, __ATOMIC_RELEASE);
				continue;
			}
			rc = zkw_reader_subscribe(&r, me->sock, me->path, 0);
			if (rc) {
				snprintf(me->why, sizeof(me->why), "%s", r.why ? r.why : strerror(-rc));
				__atomic_store_n(&me->state, SUB_FAILED, __ATOMIC_RELEASE);
				continue;
			}
			open = true;
			seen = zkw_reader_generation(&r);
			last = 0;
			__atomic_store_n(&me->state, SUB_OK, __ATOMIC_RELEASE);
			continue;
		}
		if (!open) {
			struct timespec rel = {0, 100000000};

			bench_futex(&me->cmd, FUTEX_WAIT, c, &rel);
			continue;
		}
		rc = zkw_reader_wait(&r, seen, 100);
		if (rc == -ESTALE) { /* the broker went away: wait for the next command */
			zkw_reader_close(&r);
			open = false;
			continue;
		}
		if (rc <= 0)
			continue;
		n = zkw_reader_read(&r, &meta, buf, sizeof(buf));
		if (n < 0)
			continue; /* -EAGAIN: read again; -ESTALE: the wait says so */
		seen = meta.generation;
		seq = bench_config_seq(buf, n);
		if (seq == last)
			continue;
		t = zkw_clock_mono_ns();
		last = seq;
		me->stamp.ns = t;
		__atomic_store_n(&me->stamp.seq, seq, __ATOMIC_RELEASE);
		if (seq == __atomic_load_n(&sh->rv.expect, __ATOMIC_ACQUIRE))
			bench_rendezvous_arrive(&sh->rv);
	}
}

/* Tell reader idx to subscribe to path at sock ("" path: to nothing); wait
 * until it did. */
static void reader_subscribe(int idx, const char *sock, const char *path)
{
	struct lat_reader *me = &sh->rd[idx];
	uint64_t end = zkw_clock_mono_ns() + 30000000000ull;
	uint32_t st;

	snprintf(me->sock, sizeof(me->sock), "%s", sock);
	snprintf(me->path, sizeof(me->path), "%s", path);
	__atomic_store_n(&me->state, SUB_PENDING, __ATOMIC_RELEASE);
	__atomic_add_fetch(&me->cmd, 1, __ATOMIC_RELEASE);
	bench_futex(&me->cmd, FUTEX_WAKE, 1, NULL);
	while ((st = __atomic_load_n(&me->state, __ATOMIC_ACQUIRE)) == SUB_PENDING) {
		if (zkw_clock_mono_ns() > end)
			bench_die("reader %d did not subscribe to %s within 30 s", idx, path);
		zkw_clock_sleep_ns(1000000);
	}
	if (st == SUB_FAILED)
		bench_die("reader %d: subscription to %s at %s: %s", idx, path, sock, me->why);
}

/* zoo_set start -> reader idx holds it, in us. */
static double sample_change(zhandle_t *zh, int idx, const char *path)
{
	char buf[CONFIG_LEN + 32];
	uint64_t seq = ++seq_counter, t0;
	int len = bench_config(buf, sizeof(buf), seq, CONFIG_LEN), rc;

	bench_rendezvous_reset(&sh->rv, 1, seq);
	t0 = zkw_clock_mono_ns();
	rc = zoo_set(zh, path, buf, len, -1);
	if (rc != ZOK)
		bench_die("zoo_set %s: %s", path, zerror(rc));
	if (!bench_rendezvous_wait(&sh->rv, SAMPLE_TIMEOUT_MS))
		bench_die("reader %d did not see seq %" PRIu64 " of %s within %d ms", idx, seq, path,
		          SAMPLE_TIMEOUT_MS);
	if (__atomic_load_n(&sh->rd[idx].stamp.seq, __ATOMIC_ACQUIRE) != seq)
		bench_die("reader %d holds seq %" PRIu64 ", not %" PRIu64, idx, sh->rd[idx].stamp.seq, seq);
	return (double)(sh->rd[idx].stamp.ns - t0) / 1000.0;
}

/* ---- brokers ----------------------------------------------------------------- */

static pid_t broker_start(const char *sock, int watches, bool many, double *ready_s)
{
	char max_w[32], max_p[32];
	const char *argv[24];
	uint64_t t0 = zkw_clock_mono_ns();
	pid_t pid;
	int n = 0;

	snprintf(max_w, sizeof(max_w), "%d", watches + 1);
	snprintf(max_p, sizeof(max_p), "%d", watches + 64);
	argv[n++] = opt_broker;
	argv[n++] = "-z";
	argv[n++] = opt_hosts;
	argv[n++] = "--socket";
	argv[n++] = sock;
	argv[n++] = "--max-connections";
	argv[n++] = STRINGIFY(BROKER_CONNS);
	argv[n++] = "--max-watches";
	argv[n++] = max_w;
	argv[n++] = "--max-peer-subscriptions";
	argv[n++] = max_p;
	if (many) {
		/* Rounds of 1 s want N requests a second: the rate cap decides. */
		argv[n++] = "--reconcile";
		argv[n++] = "1";
	} else {
		argv[n++] = "--linger"; /* subscribe -> first content: every path anew */
		argv[n++] = "0";
	}
	argv[n] = NULL;
	unlink(sock);
	pid = bench_spawn(argv, log_path);
	bench_ctl_wait_ready(sock, pid, 30000, log_path);
	if (ready_s)
		*ready_s = (double)(zkw_clock_mono_ns() - t0) / 1e9;
	return pid;
}

static void broker_stop(pid_t pid, const char *sock)
{
	if (proc_stop_pid(pid, SIGTERM, 60000) < 0)
		bench_note("zkw-broker %d did not stop within 60 s of SIGTERM: killed", (int)pid);
	unlink(sock);
}

/* ---- many subscriptions over a few connections --------------------------------- */

struct sub_conn {
	int fd;
	int expect, answered;
	size_t have;
	char in[16384];
};

static struct sub_conn conns[MAX_CONNS];
static int nconns;

static void node_path(char *out, size_t cap, int i)
{
	snprintf(out, cap, "%s/n%d", base_path, i);
}

/* Read what conn c has: answers, and the descriptors attached to them
 * (closed at once: the subscription lives with the connection). */
static void conn_read(struct sub_conn *c, int *invalid)
{
	for (;;) {
		union {
			struct cmsghdr align;
			char buf[CMSG_SPACE(16 * sizeof(int))];
		} control;
		struct iovec iov = {c->in + c->have, sizeof(c->in) - 1 - c->have};
		struct msghdr msg = {.msg_iov = &iov,
		                     .msg_iovlen = 1,
		                     .msg_control = control.buf,
		                     .msg_controllen = sizeof(control.buf)};
		ssize_t n = recvmsg(c->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		char *nl;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0)
			bench_die("the broker closed a subscribing connection after %d of %d answers",
			          c->answered, c->expect);
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
			if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
				int *fds = (int *)CMSG_DATA(cm);
				size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);

				for (size_t i = 0; i < k; i++)
					close(fds[i]);
			}
		c->have += (size_t)n;
		c->in[c->have] = '\0';
		while ((nl = strchr(c->in, '\n'))) {
			*nl = '\0';
			if (strncmp(c->in, "OK ", 3) != 0)
				bench_die("subscription refused: %s", c->in);
			if (!strstr(c->in, " valid=1"))
				(*invalid)++;
			c->answered++;
			c->have -= (size_t)(nl + 1 - c->in);
			memmove(c->in, nl + 1, c->have + 1);
		}
	}
}

/* Subscribe to nodes 0..n-1 through sock over k connections, every request
 * sent at once; returns once every one is answered (the connections stay
 * open: they hold the subscriptions). Seconds taken; *invalid counts
 * answers with valid=0. */
static double subscribe_all(const char *sock, int n, int k, int *invalid)
{
	uint64_t t0 = zkw_clock_mono_ns(), end = t0 + 300000000000ull;
	int ep = epoll_create1(EPOLL_CLOEXEC), done = 0, i;
	char path[256], *req;
	size_t cap = 512 * (size_t)(n / k + 1);

	req = malloc(cap);
	if (ep < 0 || !req)
		bench_die("epoll/malloc: %s", strerror(errno));
	*invalid = 0;
	nconns = k;
	for (i = 0; i < k; i++) {
		struct sub_conn *c = &conns[i];
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
		size_t len = 0;

		c->fd = bench_ctl_connect(sock);
		if (c->fd < 0)
			bench_die("connect %s: %s", sock, strerror(-c->fd));
		c->expect = c->answered = 0;
		c->have = 0;
		for (int j = i; j < n; j += k) {
			node_path(path, sizeof(path), j);
			len += (size_t)snprintf(req + len, cap - len, "SUBSCRIBE %s\n", path);
			c->expect++;
		}
		for (size_t off = 0; off < len;) {
			ssize_t w = send(c->fd, req + off, len - off, MSG_NOSIGNAL);

			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				bench_die("send to %s: %s", sock, strerror(errno));
			off += (size_t)w;
		}
		fcntl(c->fd, F_SETFL, O_NONBLOCK);
		epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
	}
	while (done < n) {
		struct epoll_event evs[64];
		uint64_t now = zkw_clock_mono_ns();
		int m;

		if (now > end)
			bench_die("%d of %d subscriptions answered within 300 s", done, n);
		m = epoll_wait(ep, evs, 64, 1000);
		for (int e = 0; e < m; e++) {
			struct sub_conn *c = evs[e].data.ptr;
			int before = c->answered;

			conn_read(c, invalid);
			done += c->answered - before;
		}
	}
	close(ep);
	free(req);
	return (double)(zkw_clock_mono_ns() - t0) / 1e9;
}

static void conns_close(void)
{
	for (int i = 0; i < nconns; i++)
		close(conns[i].fd);
	nconns = 0;
}

/* ---- the same reads on one bare client -------------------------------------- */

struct bare {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int done, failed;
};

static struct bare bare = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};

static void bare_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
	(void)zh, (void)type, (void)state, (void)path, (void)ctx;
}

static void bare_done(int rc, const char *value, int len, const struct Stat *stat, const void *data)
{
	(void)value, (void)len, (void)stat, (void)data;
	pthread_mutex_lock(&bare.lock);
	bare.done++;
	bare.failed += rc != ZOK;
	pthread_cond_broadcast(&bare.cond);
	pthread_mutex_unlock(&bare.lock);
}

/* A connected session (not timed), then zoo_awget on nodes 0..n-1 (a data
 * watch each, as the broker sets) and wait for every answer: seconds. */
static double bare_pipelined(int n)
{
	zhandle_t *zb = bench_zk_connect(opt_hosts);
	struct timespec ts = zkw_clock_deadline_ms(CLOCK_REALTIME, 120000);
	char path[256];
	uint64_t t0;
	double s;

	pthread_mutex_lock(&bare.lock);
	bare.done = bare.failed = 0;
	pthread_mutex_unlock(&bare.lock);
	t0 = zkw_clock_mono_ns();
	for (int i = 0; i < n; i++) {
		int rc;

		node_path(path, sizeof(path), i);
		rc = zoo_awget(zb, path, bare_watcher, NULL, bare_done, NULL);
		if (rc != ZOK)
			bench_die("zoo_awget %s: %s", path, zerror(rc));
	}
	pthread_mutex_lock(&bare.lock);
	while (bare.done < n)
		if (pthread_cond_timedwait(&bare.cond, &bare.lock, &ts) == ETIMEDOUT)
			bench_die("bare client: %d of %d gets answered within 120 s", bare.done, n);
	pthread_mutex_unlock(&bare.lock);
	s = (double)(zkw_clock_mono_ns() - t0) / 1e9;
	if (bare.failed)
		bench_die("bare client: %d of %d gets failed", bare.failed, n);
	zkw_zk_close(zb);
	return s;
}

/* ---- nodes -------------------------------------------------------------------- */

struct batch {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int pending, failed;
};

static struct batch batch = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};

static void batch_one_done(int rc)
{
	pthread_mutex_lock(&batch.lock);
	batch.pending--;
	batch.failed += rc != ZOK && rc != ZNODEEXISTS && rc != ZNONODE;
	pthread_cond_broadcast(&batch.cond);
	pthread_mutex_unlock(&batch.lock);
}

static void create_done(int rc, const char *value, const void *data)
{
	(void)value, (void)data;
	batch_one_done(rc);
}

static void delete_done(int rc, const void *data)
{
	(void)data;
	batch_one_done(rc);
}

static void batch_wait(const char *what, int limit)
{
	struct timespec ts = zkw_clock_deadline_ms(CLOCK_REALTIME, 120000);

	pthread_mutex_lock(&batch.lock);
	while (batch.pending > limit)
		if (pthread_cond_timedwait(&batch.cond, &batch.lock, &ts) == ETIMEDOUT)
			bench_die("%s: %d requests unanswered after 120 s", what, batch.pending);
	pthread_mutex_unlock(&batch.lock);
	if (batch.failed)
		bench_die("%s: %d requests failed", what, batch.failed);
}

/* Nodes "<base>/<prefix><i>", i < n, each with a numbered config; at most
 * 1,000 requests in flight. */
static void nodes_create(zhandle_t *zh, const char *prefix, int n)
{
	char path[256], buf[CONFIG_LEN + 32];

	for (int i = 0; i < n; i++) {
		int len = bench_config(buf, sizeof(buf), (uint64_t)i + 1, CONFIG_LEN), rc;

		snprintf(path, sizeof(path), "%s/%s%d", base_path, prefix, i);
		batch_wait("create", 1000);
		pthread_mutex_lock(&batch.lock);
		batch.pending++;
		pthread_mutex_unlock(&batch.lock);
		rc = zoo_acreate(zh, path, buf, len, &ZOO_OPEN_ACL_UNSAFE, 0, create_done, NULL);
		if (rc != ZOK)
			bench_die("zoo_acreate %s: %s", path, zerror(rc));
	}
	batch_wait("create", 0);
}

static void nodes_delete(zhandle_t *zh, const char *prefix, int n)
{
	char path[256];

	for (int i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/%s%d", base_path, prefix, i);
		batch_wait("delete", 1000);
		pthread_mutex_lock(&batch.lock);
		batch.pending++;
		pthread_mutex_unlock(&batch.lock);
		if (zoo_adelete(zh, path, -1, delete_done, NULL) != ZOK)
			batch_one_done(ZOK);
	}
	batch_wait("delete", 0);
}

/* ---- measurements -------------------------------------------------------------- */

/* Bytes of /dev/shm the watches' segments and lock files take (allocated
 * blocks) and their apparent size; how many files. */
static void shm_usage(double *alloc, double *apparent, int *files)
{
	DIR *d = opendir("/dev/shm");
	struct dirent *e;
	struct stat st;
	char p[512];

	*alloc = *apparent = 0;
	*files = 0;
	if (!d)
		return;
	while ((e = readdir(d)))
		if (strstr(e->d_name, shm_mark)) {
			snprintf(p, sizeof(p), "/dev/shm/%s", e->d_name);
			if (stat(p, &st) == 0) {
				*alloc += (double)st.st_blocks * 512;
				*apparent += (double)st.st_size;
				(*files)++;
			}
		}
	closedir(d);
}

static double packets_rate(double seconds)
{
	long long p0 = bench_zk_mntr(opt_hosts, "zk_packets_received"), p1;
	uint64_t t0 = zkw_clock_mono_ns(), t1;

	zkw_clock_sleep_ns((uint64_t)(seconds * 1e9));
	p1 = bench_zk_mntr(opt_hosts, "zk_packets_received");
	t1 = zkw_clock_mono_ns();
	if (p0 < 0 || p1 < 0)
		bench_die("mntr zk_packets_received unavailable");
	return (double)(p1 - p0) / ((double)(t1 - t0) / 1e9);
}

struct size_result {
	int asked, n, samples, invalid;
	long anon0_kb, anon_kb, shmem0_kb, shmem_kb;
	double zkw_s[8], bare_s[8], ready_s;
	bench_stats zkw, bare;
	long rss0_kb, pss0_kb, rss_kb, pss_kb;
	double shm_alloc, shm_apparent;
	int shm_files;
	double packets, lat_many[2000], lat_none[2000];
	bench_stats many, none;
	int nlat;
};

/* The most watches a broker started by us can hold besides one more (the
 * latency reader's), in hundreds: the open file limit's hard limit, unless
 * it can be raised (CAP_SYS_RESOURCE; then the broker raises it too). */
static int fit_watches(int n, rlim_t *hard)
{
	rlim_t want = (rlim_t)(n + 1) * FDS_PER_WATCH + FDS_FIXED;
	struct rlimit rl;
	long cap;

	*hard = 0;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want)
		return n;
	*hard = rl.rlim_max;
	{
		struct rlimit up = {want, want};

		if (setrlimit(RLIMIT_NOFILE, &up) == 0)
			return n; /* privileged: so is the broker, which raises it too */
	}
	cap = ((long)rl.rlim_max - FDS_FIXED) / FDS_PER_WATCH - 1;
	cap -= cap % 100;
	return cap < n ? (int)(cap > 0 ? cap : 1) : n;
}

static void run_size(zhandle_t *zh, struct size_result *res, int n, int samples, int nlat, double window_s,
                     const char *cfg_a, const char *cfg_b, double idle_rate)
{
	pid_t broker = 0;
	int k = opt_conns < n ? opt_conns : n;

	res->n = n;
	res->samples = samples;
	for (int s = 0; s < samples; s++) {
		for (int side = 0; side < 2; side++) {
			if ((side == 0) == (s % 2 == 0)) {
				bench_note("%d watches, sample %d: one bare client, %d gets pipelined", n,
				           s + 1, n);
				res->bare_s[s] = bare_pipelined(n);
			} else {
				int invalid;

				bench_note("%d watches, sample %d: a fresh broker, %d subscriptions over %d "
				           "sockets",
				           n, s + 1, n, k);
				broker = broker_start(sock_a, n, true, &res->ready_s);
				res->rss0_kb = bench_rss_kb(broker);
				res->pss0_kb = bench_pss_kb(broker);
				res->anon0_kb = bench_status_kb(broker, "RssAnon");
				res->shmem0_kb = bench_status_kb(broker, "RssShmem");
				res->zkw_s[s] = subscribe_all(sock_a, n, k, &invalid);
				res->invalid += invalid;
				if (s + 1 < samples) {
					conns_close();
					broker_stop(broker, sock_a);
				}
			}
		}
	}
	bench_stats_of(res->zkw_s, (size_t)samples, &res->zkw);
	bench_stats_of(res->bare_s, (size_t)samples, &res->bare);
	zkw_clock_sleep_ns(300000000); /* allocations of the last answers settle */
	res->rss_kb = bench_rss_kb(broker);
	res->pss_kb = bench_pss_kb(broker);
	res->anon_kb = bench_status_kb(broker, "RssAnon");
	res->shmem_kb = bench_status_kb(broker, "RssShmem");
	shm_usage(&res->shm_alloc, &res->shm_apparent, &res->shm_files);

	/* A reconcile round of N requests starts within a period (1 s +-20%)
	 * of the previous one; then the cap paces it. */
	zkw_clock_sleep_ns(1500000000);
	res->packets = packets_rate(window_s) - idle_rate;

	bench_note("%d watches: change latency, %d samples against a broker without them", n, nlat);
	reader_subscribe(0, sock_a, cfg_a);
	sample_change(zh, 0, cfg_a); /* start-up */
	sample_change(zh, 1, cfg_b);
	res->nlat = nlat;
	for (int i = 0; i < nlat; i++) {
		if (i % 2 == 0) {
			res->lat_many[i] = sample_change(zh, 0, cfg_a);
			zkw_clock_sleep_ns(GAP_NS);
			res->lat_none[i] = sample_change(zh, 1, cfg_b);
		} else {
			res->lat_none[i] = sample_change(zh, 1, cfg_b);
			zkw_clock_sleep_ns(GAP_NS);
			res->lat_many[i] = sample_change(zh, 0, cfg_a);
		}
		zkw_clock_sleep_ns(GAP_NS);
	}
	bench_stats_of(res->lat_many, (size_t)nlat, &res->many);
	bench_stats_of(res->lat_none, (size_t)nlat, &res->none);
	reader_subscribe(0, "", "");
	conns_close();
	broker_stop(broker, sock_a);
}

/* ---- 1. subscribe -> first content ----------------------------------------------- */

struct first_result {
	double *zkw, *get, *session;
	int n;
	bench_stats s_zkw, s_get, s_session;
};

static void run_first(zhandle_t *zh, struct first_result *res, int samples)
{
	char path[256], buf[4096], why[256];
	zkw_snapshot meta;
	zkw_reader r;

	res->n = samples;
	res->zkw = calloc((size_t)samples, sizeof(double));
	res->get = calloc((size_t)samples, sizeof(double));
	res->session = calloc((size_t)samples, sizeof(double));
	if (!res->zkw || !res->get || !res->session)
		bench_die("out of memory");
	for (int i = 0; i < samples; i++) {
		snprintf(path, sizeof(path), "%s/s%d", base_path, i);
		for (int j = 0; j < 3; j++) {
			int which = (i + j) % 3, len = sizeof(buf), rc;
			uint64_t t0 = zkw_clock_mono_ns();
			zhandle_t *zs = NULL;
			double us;

			if (which == 0) {
				rc = zkw_reader_subscribe(&r, sock_b, path, 0);
				if (rc)
					bench_die("subscribe %s: %s", path, r.why);
				rc = (int)zkw_reader_read(&r, &meta, buf, sizeof(buf));
				us = (double)(zkw_clock_mono_ns() - t0) / 1000.0;
				if (rc < 0 || !meta.valid || bench_config_seq(buf, rc) != (uint64_t)i + 1)
					bench_die("subscribe %s: read %d, valid %d, seq %" PRIu64, path, rc,
					          meta.valid, rc > 0 ? bench_config_seq(buf, rc) : 0);
				zkw_reader_close(&r); /* --linger 0: the watch goes */
				res->zkw[i] = us;
			} else if (which == 1) {
				rc = zoo_get(zh, path, 0, buf, &len, NULL);
				us = (double)(zkw_clock_mono_ns() - t0) / 1000.0;
				if (rc != ZOK)
					bench_die("zoo_get %s: %s", path, zerror(rc));
				res->get[i] = us;
			} else {
				if (zkw_zk_connect(&zs, opt_hosts, 15000, 10000, why, sizeof(why)))
					bench_die("%s", why);
				rc = zoo_get(zs, path, 0, buf, &len, NULL);
				us = (double)(zkw_clock_mono_ns() - t0) / 1000.0;
				if (rc != ZOK)
					bench_die("zoo_get %s: %s", path, zerror(rc));
				zkw_zk_close(zs);
				res->session[i] = us;
			}
			zkw_clock_sleep_ns(GAP_NS);
		}
	}
	bench_stats_of(res->zkw, (size_t)samples, &res->s_zkw);
	bench_stats_of(res->get, (size_t)samples, &res->s_get);
	bench_stats_of(res->session, (size_t)samples, &res->s_session);
}

/* ---- main ------------------------------------------------------------------------ */

static int parse_sizes(const char *s, int *out)
{
	char *copy = strdup(s), *tok, *save = NULL;
	int n = 0;
	long v;

	for (tok = strtok_r(copy, ",", &save); tok && n < MAX_SIZES; tok = strtok_r(NULL, ",", &save)) {
		if (zkw_parse_long(tok, 1, 100000, &v)) {
			fprintf(stderr, "bench_watches: --sizes %s: want numbers from 1 to 100000\n", tok);
			exit(2);
		}
		out[n++] = (int)v;
	}
	free(copy);
	return n;
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: bench_watches -z HOSTS --broker PATH [--quick] [--sizes 100,1000,10000] [--conns N]\n"
	        "                     [--data FILE] [--markdown]\n");
}

int main(int argc, char **argv)
{
	int sizes[MAX_SIZES] = {100, 1000, 10000}, nsizes = 3, c, maxn = 0, nfirst, nsamples, nlat;
	static struct size_result res[MAX_SIZES];
	struct first_result first;
	char cfg_a[256], cfg_b[256], buf[CONFIG_LEN + 32];
	double window_s, idle_rate, ready_b;
	uint64_t t_start = zkw_clock_mono_ns();
	pid_t readers[2], broker_b;
	struct zkw_opt o;
	zhandle_t *zh;
	bool sizes_given = false;

	bench_init("bench_watches");
	zkw_opt_init(&o, argc, argv, "bench_watches",
	             "z|zookeeper: b|broker: q|quick s=sizes: c=conns: D=data: m=markdown h|help", usage);
	while ((c = zkw_opt_next(&o)) != -1) {
		switch (c) {
		case 'z': opt_hosts = o.arg; break;
		case 'b': opt_broker = o.arg; break;
		case 'q': opt_quick = true; break;
		case 's':
			nsizes = parse_sizes(o.arg, sizes);
			sizes_given = true;
			break;
		case 'c':
			if (zkw_opt_int(&o, "a number of connections from 1 to 256", 1, MAX_CONNS,
			                &opt_conns))
				return 2;
			break;
		case 'D': bench_data_open(o.arg); break;
		case 'm': break; /* the report is markdown either way */
		default: return 2;
		}
	}
	if (!opt_hosts || !opt_broker || zkw_opt_no_operands(&o)) {
		usage(stderr);
		return 2;
	}
	if (opt_quick && !sizes_given)
		nsizes = 2; /* 100 and 1,000 */
	nfirst = opt_quick ? 30 : 300;
	nsamples = opt_quick ? 1 : 3;
	nlat = opt_quick ? 40 : 400;
	window_s = opt_quick ? 2 : 5;
	for (int i = 0; i < nsizes; i++)
		maxn = sizes[i] > maxn ? sizes[i] : maxn;

	sh = bench_shared_alloc(sizeof(*sh));
	snprintf(base_path, sizeof(base_path), "/zkwbench/w%d", (int)getpid());
	snprintf(shm_mark, sizeof(shm_mark), "zkwbench.w%d.n", (int)getpid());
	snprintf(cfg_a, sizeof(cfg_a), "%s/cfgA", base_path);
	snprintf(cfg_b, sizeof(cfg_b), "%s/cfgB", base_path);
	snprintf(sock_a, sizeof(sock_a), "/tmp/zkwbench-%d.a.sock", (int)getpid());
	snprintf(sock_b, sizeof(sock_b), "/tmp/zkwbench-%d.b.sock", (int)getpid());
	snprintf(log_path, sizeof(log_path), "/tmp/zkwbench-broker-%d.log", (int)getpid());
	/* What brokers killed by the sweep could not remove. */
	{
		char mark[64];

		snprintf(mark, sizeof(mark), "zkwbench.w%d.", (int)getpid());
		bench_sweep_on_exit(mark);
		bench_unlink_file_on_exit(sock_a);
		bench_unlink_file_on_exit(sock_b);
	}

	/* The readers first: we fork single-threaded. */
	for (int i = 0; i < 2; i++) {
		readers[i] = bench_fork();
		if (readers[i] == 0)
			reader_main(i);
	}
	zh = bench_zk_connect(opt_hosts);
	bench_config(buf, sizeof(buf), ++seq_counter, CONFIG_LEN);
	bench_zk_put(zh, cfg_a, buf, CONFIG_LEN);
	bench_zk_put(zh, cfg_b, buf, CONFIG_LEN);
	bench_note("creating %d + %d nodes", maxn, nfirst);
	nodes_create(zh, "n", maxn);
	nodes_create(zh, "s", nfirst);

	broker_b = broker_start(sock_b, 16, false, &ready_b);
	reader_subscribe(1, sock_b, cfg_b);

	bench_note("subscribe -> first content: %d samples", nfirst);
	run_first(zh, &first, nfirst);

	bench_note("ZooKeeper's idle packet rate over %.0f s", window_s);
	idle_rate = packets_rate(window_s);
	for (int i = 0; i < nsizes; i++) {
		rlim_t hard;
		int n = fit_watches(sizes[i], &hard);

		if (n != sizes[i])
			bench_note("%d watches asked: the open file hard limit %llu (not raisable here) "
			           "leaves room for %d",
			           sizes[i], (unsigned long long)hard, n);
		res[i].asked = sizes[i];
		fd_hard = hard;
		run_size(zh, &res[i], n, nsamples, nlat, window_s, cfg_a, cfg_b, idle_rate);
	}

	reader_subscribe(1, "", "");
	proc_kill_pids(readers, 2);
	broker_stop(broker_b, sock_b);
	bench_note("deleting the nodes");
	nodes_delete(zh, "n", maxn);
	nodes_delete(zh, "s", nfirst);
	zkw_zk_delete_tree(zh, base_path, NULL, 0);
	zkw_zk_close(zh);
	unlink(log_path); /* kept only when the bench fails */

	/* ---- report ---- */
	printf("## Subscribe -> first content (bench_watches)\n\n");
	printf("A worker asks the broker for a path no watch has yet: zkw_reader_subscribe() (connect, "
	       "SUBSCRIBE, the broker adds the watch, reads the node, publishes, answers with the segment's "
	       "descriptor) until zkw_reader_read() returns the %d-byte content; the broker runs with "
	       "--linger 0, so every sample starts from nothing. Against a zoo_get of the same node on a "
	       "bare C client already connected, and a new session + zoo_get (what each of the seed's "
	       "workers pays, kazoo aside). %d samples, the three rotated.\n\n",
	       CONFIG_LEN, first.n);
	printf("| path | samples | min us | median us | p99 us | zkw / this (median) |\n"
	       "|---|---:|---:|---:|---:|---:|\n");
	printf("| zkw: subscribe + read | %d | %.1f | %.1f | %.1f | 1.00 |\n", first.n, first.s_zkw.min,
	       first.s_zkw.median, first.s_zkw.p99);
	printf("| bare zoo_get, connected client | %d | %.1f | %.1f | %.1f | %.2f |\n", first.n,
	       first.s_get.min, first.s_get.median, first.s_get.p99, first.s_zkw.median / first.s_get.median);
	printf("| new session + zoo_get | %d | %.1f | %.1f | %.1f | %.2f |\n", first.n, first.s_session.min,
	       first.s_session.median, first.s_session.p99, first.s_zkw.median / first.s_session.median);
	free(first.zkw);
	free(first.get);
	free(first.session);

	printf("\n## Many watches on one broker (bench_watches)\n\n");
	printf("N watches added on demand through the control socket: N SUBSCRIBE requests sent at once over "
	       "%d connections (the broker answers each once the watch's first evaluation is in; a "
	       "connection's requests are answered in turn), timed from the first connect to the last "
	       "answer, every one valid; each sample on a fresh broker (already connected to ZooKeeper: its "
	       "own start-up is shown apart). Against the same %d-byte reads on one bare C client (connected "
	       "first): zoo_awget with a data watch on all N, then wait for all. %d sample%s of each, "
	       "alternated; medians. Memory: the broker holding the N watches and their subscriptions, minus "
	       "the same broker before the first subscription; /dev/shm: the segments and lock files of "
	       "those watches (allocated blocks). Reconcile: ZooKeeper's zk_packets_received (mntr) over "
	       "%.0f s, the idle rate (%.1f/s, measured before with no such broker) subtracted, with "
	       "--reconcile 1 (N requests a second wanted) and the default --reconcile-rate 50.\n\n",
	       opt_conns, CONFIG_LEN, nsamples, nsamples == 1 ? "" : "s", window_s, idle_rate);
	printf("| watches | zkw: all valid, s | bare client: all read, s | ratio | broker start -> "
	       "connected, s | invalid |\n|---:|---:|---:|---:|---:|---:|\n");
	for (int i = 0; i < nsizes; i++) {
		struct size_result *r = &res[i];

		printf("| %d | %.3f | %.3f | %.2f | %.3f | %d |\n", r->n, r->zkw.median, r->bare.median,
		       r->zkw.median / r->bare.median, r->ready_s, r->invalid);
	}
	printf("\n| watches | broker RSS MiB (before) | RSS per watch KiB | of it heap (RssAnon) | of it "
	       "segment pages (RssShmem) | PSS per watch KiB | /dev/shm per watch KiB (apparent) | files | "
	       "reconcile requests/s | wanted/s | cap/s |\n"
	       "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	for (int i = 0; i < nsizes; i++) {
		struct size_result *r = &res[i];

		printf("| %d | %.1f (%.1f) | %.1f | %.1f | %.1f | %.1f | %.1f (%.1f) | %d | %.1f | %d "
		       "| 50 |\n",
		       r->n, r->rss_kb / 1024.0, r->rss0_kb / 1024.0, (double)(r->rss_kb - r->rss0_kb) / r->n,
		       (double)(r->anon_kb - r->anon0_kb) / r->n, (double)(r->shmem_kb - r->shmem0_kb) / r->n,
		       (double)(r->pss_kb - r->pss0_kb) / r->n, r->shm_alloc / 1024.0 / r->n,
		       r->shm_apparent / 1024.0 / r->n, r->shm_files, r->packets, r->n);
	}
	for (int i = 0; i < nsizes; i++)
		if (res[i].n != res[i].asked)
			printf("\n**%d watches were asked, %d measured**: this machine's open file hard "
			       "limit (%llu, RLIMIT_NOFILE) cannot be raised here (no CAP_SYS_RESOURCE, as "
			       "in a container), and a watch holds %d descriptors (its segment and its lock "
			       "file), so a broker with --max-connections %d has room for %d watches "
			       "(docs/design.md, \"Who may subscribe to what\"). Raise LimitNOFILE= to run "
			       "the full size.\n",
			       res[i].asked, res[i].n, (unsigned long long)fd_hard, FDS_PER_WATCH,
			       BROKER_CONNS, (int)(((long)fd_hard - FDS_FIXED) / FDS_PER_WATCH));

	printf("\n## Change latency with many idle watches (bench_watches)\n\n");
	printf("zoo_set start -> a reader process holds the new %d-byte config, for one more watch of the "
	       "broker above (its N watches idle, reconciled at the cap) and for one watch of a broker "
	       "without other watches; both readers subscribed through the socket and blocked in "
	       "zkw_reader_wait; %d samples each, interleaved.\n\n",
	       CONFIG_LEN, nlat);
	printf("| idle watches | median us | min us | p99 us | without: median us | ratio | target "
	       "| verdict |\n|---:|---:|---:|---:|---:|---:|---|---|\n");
	for (int i = 0; i < nsizes; i++) {
		struct size_result *r = &res[i];
		double ratio = r->many.median / r->none.median;

		printf("| %d | %.1f | %.1f | %.1f | %.1f | %.3f | <= 1.10x | %s |\n", r->n, r->many.median,
		       r->many.min, r->many.p99, r->none.median, ratio, bench_verdict(ratio <= 1.10));
		bench_data("watches\t%d\t%.4f\t%.4f\t%.2f\t%.2f\t%.2f\t%.1f\t%.1f\t%.1f", r->n, r->zkw.median,
		           r->bare.median, (double)(r->rss_kb - r->rss0_kb) / r->n,
		           (double)(r->pss_kb - r->pss0_kb) / r->n, r->shm_alloc / 1024.0 / r->n, r->packets,
		           r->many.median, r->none.median);
	}
	printf("\n_bench_watches finished in %.1f s._\n\n", (double)(zkw_clock_mono_ns() - t_start) / 1e9);
	return 0;
}
