/* SPDX-License-Identifier: Apache-2.0 */
/* bench_coldstart.c - the state directory (docs/design.md, "The state
 * directory"): a start from it without ZooKeeper, what one save costs, and
 * how saving keeps up with an update storm.
 *
 *  1. Cold start: --watches nodes (1,000) of 1 KiB on a real ZooKeeper; a
 *     broker with --state-dir publishes and saves them all, then stops
 *     (SIGTERM: a clean stop, timed, saves every watch once more). Each
 *     run is a reboot: every segment and lock file unlinked, ZooKeeper
 *     unreachable (-z names a loopback port bound and never listened on:
 *     refused at once, as a stopped server's port), a broker spawned on
 *     the same state directory; timed from the spawn until every segment
 *     is open, published (generation > 0), flagged cached and holding its
 *     node's bytes; then killed. --runs runs (5; --quick 3), alternated
 *     with the same start without a state directory (segments created,
 *     nothing to publish).
 *  2. Save cost, in process, on the store API: zkw_state_save() +
 *     zkw_state_flush() of a 4 KiB and a 1 MiB snapshot (a complete
 *     durable save: temporary file, fsync, rename, directory fsync), and
 *     zkw_state_save() alone (the publishing thread's share), against a
 *     plain pwrite() + fsync() of the same bytes in the same directory
 *     (the floor of any durable save) and the textbook atomic replace
 *     written by hand. 200 samples of each (--quick 40), rotated.
 *  3. Update storm: one watch, a writer setting its node as fast as it
 *     can (async zoo_aset, <= 64 in flight) for 5 s (--quick 1.5 s), on a
 *     broker without a state directory, then on one with; its publishes
 *     and state writes over the window (its counters in
 *     /dev/shm/zkw-stats.PID); then the state file must come to hold the
 *     node's last content, byte for byte (PASS/FAIL, exit status 1).
 *
 * The state directories live under --dir (default $TMPDIR or /tmp), which
 * must be the disk the figures are about: the report names its file
 * system. Without -z a loopback ZooKeeper is started here (tests/support/
 * zkh.h).
 *
 *     bench_coldstart --broker build/zkw-broker [-z 127.0.0.1:2181] [--quick]
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>

#include "bench.h"
#include "publish/state.h"
#include "zkw_stats.h"

#define MAX_RUNS       16
#define MAX_WATCHES    5000
#define NODE_LEN       1024 /* bytes of each node of the cold start */
#define STORM_LEN      1024
#define STORM_INFLIGHT 64
#define SETTLE_MS      10000 /* after a storm: the segment, then the state file */
#define SAVE_SMALL     (4u * 1024u)
#define SAVE_LARGE     (1024u * 1024u)
#define SAVE_WARMUP    5 /* saves of each kind before the samples */

static const char *opt_hosts, *opt_broker, *opt_dir;
static bool opt_quick;
static int opt_watches = 1000, opt_runs = 5;
static char base_path[128], shm_mark[64], log_path[256], work[PATH_MAX], conf_path[PATH_MAX + 32],
        cold_dir[PATH_MAX + 32], closed_hosts[64];
static pid_t work_owner, live_broker; /* live_broker: the one running, 0 if none */

/* ---- the work directory ------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb, (void)type, (void)ftw;
	remove(path);
	return 0;
}

static void stats_path(char *out, size_t cap, pid_t broker)
{
	snprintf(out, cap, "/dev/shm/" ZKW_STATS_PREFIX "%d", (int)broker);
}

/* At exit, after the registry's sweep killed a broker still running: its
 * counters and the state directories go. */
static void work_remove(void)
{
	char path[64];

	if (getpid() != work_owner)
		return;
	if (live_broker) {
		stats_path(path, sizeof(path), live_broker);
		unlink(path);
	}
	if (work[0])
		nftw(work, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* "ext4 (/dev/vda on /)": the file system dir is on, from statfs(2) and
 * the longest mount point of /proc/self/mounts that holds it. */
static void fs_describe(const char *dir, char *out, size_t cap, bool *tmpfs)
{
	static const struct {
		unsigned long magic;
		const char *name;
	} known[] = {
	        {0xEF53, "ext4"},          {0x01021994, "tmpfs"}, {0x58465342, "xfs"},  {0x9123683E, "btrfs"},
	        {0x794c7630, "overlayfs"}, {0x2FC12FC1, "zfs"},   {0xF2F52010, "f2fs"}, {0x6969, "nfs"}};
	char real[PATH_MAX], dev[256], mnt[256], type[64], best_dev[256] = "?", best_mnt[256] = "?",
	                                                   best_type[64] = "?";
	const char *name = NULL;
	size_t best = 0;
	struct statfs sf;
	FILE *f;

	*tmpfs = false;
	if (statfs(dir, &sf) == 0)
		for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
			if ((unsigned long)sf.f_type == known[i].magic)
				name = known[i].name;
	if (!realpath(dir, real))
		snprintf(real, sizeof(real), "%s", dir);
	f = fopen("/proc/self/mounts", "r");
	while (f && fscanf(f, "%255s %255s %63s %*[^\n]", dev, mnt, type) == 3) {
		size_t n = strlen(mnt);

		if (strncmp(real, mnt, n) == 0 && (real[n] == '/' || real[n] == '\0' || n == 1) &&
		    n >= best) {
			best = n;
			snprintf(best_dev, sizeof(best_dev), "%s", dev);
			snprintf(best_mnt, sizeof(best_mnt), "%s", mnt);
			snprintf(best_type, sizeof(best_type), "%s", type);
		}
	}
	if (f)
		fclose(f);
	*tmpfs = (name && strcmp(name, "tmpfs") == 0) || strcmp(best_type, "tmpfs") == 0;
	snprintf(out, cap, "%.60s (%.120s on %.200s)", name ? name : best_type, best_dev, best_mnt);
}

/* ---- /dev/shm ----------------------------------------------------------- */

static void segment_name(char *out, size_t cap, int i)
{
	snprintf(out, cap, "%s%d", shm_mark, i);
}

/* Every segment and lock file of ours (a reboot empties /dev/shm). */
static int shm_wipe(void)
{
	DIR *d = opendir("/dev/shm");
	struct dirent *e;
	char p[512];
	int n = 0;

	if (!d)
		bench_die("opendir /dev/shm: %s", strerror(errno));
	while ((e = readdir(d)))
		if (strstr(e->d_name, shm_mark)) {
			snprintf(p, sizeof(p), "/dev/shm/%s", e->d_name);
			n += unlink(p) == 0;
		}
	closedir(d);
	return n;
}

/* ---- the broker's counters (lib/zkw_stats.h) ------------------------------ */

struct broker_stats {
	const void *map;
};

static void stats_attach(struct broker_stats *s, pid_t broker, int timeout_ms)
{
	uint64_t end = zkw_clock_mono_ns() + (uint64_t)timeout_ms * 1000000u;
	char path[64];

	stats_path(path, sizeof(path), broker);
	for (;;) {
		int fd = open(path, O_RDONLY | O_CLOEXEC), st;

		if (fd >= 0) {
			void *m = mmap(NULL, ZKW_STATS_SIZE, PROT_READ, MAP_SHARED, fd, 0);
			struct zkw_stats_view v;

			close(fd);
			if (m != MAP_FAILED && zkw_stats_load(m, ZKW_STATS_SIZE, &v) == 0) {
				if (v.counter_count <= ZKW_STAT_COLD_STARTS)
					bench_die(
					        "%s has %u counters: a broker without the state directory's",
					        path, v.counter_count);
				s->map = m;
				return;
			}
			if (m != MAP_FAILED)
				munmap(m, ZKW_STATS_SIZE);
		}
		if (proc_pid_exited(broker, &st))
			bench_die("zkw-broker (pid %d) exited during start-up (status %d); see %s",
			          (int)broker, st, log_path);
		if (zkw_clock_mono_ns() > end)
			bench_die("no counters of zkw-broker (pid %d) in %s within %d ms", (int)broker, path,
			          timeout_ms);
		zkw_clock_sleep_ns(1000000);
	}
}

static uint64_t stats_get(const struct broker_stats *s, enum zkw_stat which)
{
	struct zkw_stats_view v;

	if (zkw_stats_load(s->map, ZKW_STATS_SIZE, &v) != 0)
		bench_die("the broker's counters became unreadable");
	return v.counter[which];
}

static void stats_detach(struct broker_stats *s)
{
	if (s->map)
		munmap((void *)s->map, ZKW_STATS_SIZE);
	s->map = NULL;
}

/* ---- brokers ----------------------------------------------------------------- */

/* SIGTERM and wait: a clean stop (exit 0) saves every watch once more. Seconds. */
static double broker_stop(pid_t pid)
{
	uint64_t t0 = zkw_clock_mono_ns();
	int st = proc_stop_pid(pid, SIGTERM, 120000);

	if (st < 0)
		bench_die("zkw-broker (pid %d) did not stop within 120 s of SIGTERM; see %s", (int)pid,
		          log_path);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		bench_die("zkw-broker (pid %d) stopped with status %d; see %s", (int)pid, st, log_path);
	live_broker = 0;
	return (double)(zkw_clock_mono_ns() - t0) / 1e9;
}

/* SIGKILL, as a crash or a power cut stops it: nothing is saved at the
 * stop, and the counters it leaves in /dev/shm are removed here. */
static void broker_kill(pid_t pid)
{
	char path[64];

	if (proc_stop_pid(pid, SIGKILL, 10000) < 0)
		bench_die("zkw-broker (pid %d) survived SIGKILL for 10 s", (int)pid);
	stats_path(path, sizeof(path), pid);
	unlink(path);
	live_broker = 0;
}

/* A loopback address nobody listens on, held for the bench's life: a
 * bound TCP socket without listen(2) refuses every connection, as the
 * port of a stopped server does, and no other process can take it. */
static void closed_port(char *out, size_t cap)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) < 0)
		bench_die("a closed loopback port: %s", strerror(errno));
	snprintf(out, cap, "127.0.0.1:%d", ntohs(a.sin_port));
}

/* ---- ZooKeeper nodes, pipelined ------------------------------------------------ */

struct batch {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int pending, failed;
};

static struct batch batch = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};

static void create_done(int rc, const char *value, const void *data)
{
	(void)value, (void)data;
	pthread_mutex_lock(&batch.lock);
	batch.pending--;
	batch.failed += rc != ZOK && rc != ZNODEEXISTS;
	pthread_cond_broadcast(&batch.cond);
	pthread_mutex_unlock(&batch.lock);
}

static void batch_wait(int limit)
{
	struct timespec ts = zkw_clock_deadline_ms(CLOCK_REALTIME, 120000);

	pthread_mutex_lock(&batch.lock);
	while (batch.pending > limit)
		if (pthread_cond_timedwait(&batch.cond, &batch.lock, &ts) == ETIMEDOUT)
			bench_die("create: %d requests unanswered after 120 s", batch.pending);
	pthread_mutex_unlock(&batch.lock);
	if (batch.failed)
		bench_die("create: %d requests failed", batch.failed);
}

static void node_path(char *out, size_t cap, int i)
{
	snprintf(out, cap, "%s/n%d", base_path, i);
}

/* Node i's content: NODE_LEN bytes carrying i + 1. */
static int node_content(char *buf, size_t cap, int i)
{
	return bench_config(buf, cap, (uint64_t)i + 1, NODE_LEN);
}

/* Seconds to create the nodes, at most 1,000 requests in flight. */
static double nodes_create(zhandle_t *zh, int n)
{
	char path[256], buf[NODE_LEN + 64], why[256];
	uint64_t t0 = zkw_clock_mono_ns();

	node_path(path, sizeof(path), 0);
	if (zkw_zk_create_parents(zh, path, why, sizeof(why)) < 0)
		bench_die("%s", why);
	for (int i = 0; i < n; i++) {
		int len = node_content(buf, sizeof(buf), i), rc;

		node_path(path, sizeof(path), i);
		batch_wait(1000);
		pthread_mutex_lock(&batch.lock);
		batch.pending++;
		pthread_mutex_unlock(&batch.lock);
		rc = zoo_acreate(zh, path, buf, len, &ZOO_OPEN_ACL_UNSAFE, 0, create_done, NULL);
		if (rc != ZOK)
			bench_die("zoo_acreate %s: %s", path, zerror(rc));
	}
	batch_wait(0);
	return (double)(zkw_clock_mono_ns() - t0) / 1e9;
}

/* ---- 1. cold start ------------------------------------------------------------- */

enum await_mode {
	AWAIT_VALID,  /* published from ZooKeeper: valid, the node's bytes */
	AWAIT_CACHED, /* published from the state directory: cached, the node's bytes */
	AWAIT_EXISTS, /* the segment exists (nothing to publish) */
};

/* Open every segment by name, over and over, until each is as `mode`
 * wants; the broker's bytes are checked against its node's. Seconds from
 * t0 until the last one was. Dies when the broker exits or timeout_ms
 * passes. */
static double await_segments(pid_t broker, enum await_mode mode, uint64_t t0, int timeout_ms)
{
	static zkw_reader r[MAX_WATCHES];
	static uint8_t state[MAX_WATCHES]; /* 0 closed, 1 open, 2 done */
	static char buf[8192], want[NODE_LEN + 64];
	uint64_t end = t0 + (uint64_t)timeout_ms * 1000000u;
	int left = opt_watches;
	zkw_snapshot meta;
	char name[128];

	memset(state, 0, sizeof(state));
	while (left) {
		int progress = 0, st;

		for (int i = 0; i < opt_watches; i++) {
			ssize_t n;
			int wn;

			if (state[i] == 2)
				continue;
			if (state[i] == 0) {
				segment_name(name, sizeof(name), i);
				if (zkw_reader_open(&r[i], name) != 0)
					continue;
				state[i] = 1;
			}
			if (mode != AWAIT_EXISTS) {
				if (zkw_reader_generation(&r[i]) == 0)
					continue;
				n = zkw_reader_read(&r[i], &meta, buf, sizeof(buf));
				if (n == -EAGAIN)
					continue;
				if (n < 0)
					bench_die("read segment %d: %s", i, strerror((int)-n));
				if (mode == AWAIT_VALID && !meta.valid)
					continue;
				if (mode == AWAIT_CACHED && !meta.cached)
					bench_die("segment %d: generation %" PRIu64 " published without "
					          "the cached flag (valid %d, error \"%s\") while "
					          "ZooKeeper is unreachable",
					          i, meta.generation, meta.valid, meta.error);
				wn = node_content(want, sizeof(want), i);
				if (n != wn || memcmp(buf, want, (size_t)wn) != 0)
					bench_die("segment %d holds %zd bytes (seq %" PRIu64
					          "), not its node's %d "
					          "(seq %" PRIu64 ")",
					          i, n, bench_config_seq(buf, n), wn,
					          bench_config_seq(want, wn));
			}
			zkw_reader_close(&r[i]);
			state[i] = 2;
			left--;
			progress++;
		}
		if (!left)
			break;
		if (proc_pid_exited(broker, &st))
			bench_die("zkw-broker (pid %d) exited (status %d) with %d segments still to "
			          "come; see %s",
			          (int)broker, st, left, log_path);
		if (zkw_clock_mono_ns() > end) {
			for (int i = 0; i < opt_watches; i++)
				if (state[i] == 1)
					zkw_reader_close(&r[i]);
			bench_die("%d of %d segments not %s within %d ms of the broker's spawn", left,
			          opt_watches,
			          mode == AWAIT_VALID    ? "valid"
			          : mode == AWAIT_CACHED ? "published from the state directory"
			                                 : "created",
			          timeout_ms);
		}
		if (!progress)
			zkw_clock_sleep_ns(200000);
	}
	return (double)(zkw_clock_mono_ns() - t0) / 1e9;
}

static void write_config(void)
{
	char path[256];
	FILE *f = fopen(conf_path, "w");

	if (!f)
		bench_die("%s: %s", conf_path, strerror(errno));
	/* 8 KiB, the smallest capacity: 1,000 segments of 23 KiB in /dev/shm
	 * instead of 2 MiB each (allocated up front). */
	fprintf(f, "[broker]\ncapacity = 8k\n");
	for (int i = 0; i < opt_watches; i++) {
		char name[128];

		node_path(path, sizeof(path), i);
		segment_name(name, sizeof(name), i);
		fprintf(f, "\n[watch %s]\nshm = %s\n", path, name);
	}
	if (fclose(f) != 0)
		bench_die("%s: %s", conf_path, strerror(errno));
}

static pid_t cold_broker(const char *hosts, const char *state_dir, bool valid_init)
{
	const char *argv[16];
	int n = 0;

	argv[n++] = opt_broker;
	argv[n++] = "-z";
	argv[n++] = hosts;
	argv[n++] = "-c";
	argv[n++] = conf_path;
	argv[n++] = "--state-dir";
	argv[n++] = state_dir;
	argv[n++] = "--socket";
	argv[n++] = "none";
	if (!valid_init)
		argv[n++] = "--no-valid-init";
	argv[n] = NULL;
	return live_broker = bench_spawn(argv, log_path);
}

static int count_state_files(const char *dir, long *bytes)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	struct stat sb;
	int n = 0;

	*bytes = 0;
	if (!d)
		bench_die("opendir %s: %s", dir, strerror(errno));
	while ((e = readdir(d))) {
		size_t l = strlen(e->d_name);

		if (l > 5 && strcmp(e->d_name + l - 5, ".zkws") == 0 &&
		    fstatat(dirfd(d), e->d_name, &sb, 0) == 0) {
			n++;
			*bytes = sb.st_size;
		}
	}
	closedir(d);
	return n;
}

struct cold_result {
	double create_s, published_s, saved_s, prep_stop_s;
	int files;
	long file_bytes;
	double cached_ms[MAX_RUNS], bare_ms[MAX_RUNS];
	bench_stats cached, bare;
	uint64_t cold_starts, later_writes;
};

static void run_cold(zhandle_t *zh, struct cold_result *res)
{
	struct broker_stats bs = {0};
	uint64_t t0, end;
	pid_t b;

	bench_note("creating %d nodes of %d bytes", opt_watches, NODE_LEN);
	res->create_s = nodes_create(zh, opt_watches);
	write_config();

	/* A broker connected to ZooKeeper publishes and saves every watch. */
	bench_note("a broker with --state-dir: %d watches published and saved", opt_watches);
	shm_wipe();
	t0 = zkw_clock_mono_ns();
	b = cold_broker(opt_hosts, cold_dir, true);
	res->published_s = await_segments(b, AWAIT_VALID, t0, 60000);
	stats_attach(&bs, b, 10000);
	end = zkw_clock_mono_ns() + 120000000000ull;
	while (stats_get(&bs, ZKW_STAT_STATE_WRITES) < (uint64_t)opt_watches) {
		if (zkw_clock_mono_ns() > end)
			bench_die("%" PRIu64 " of %d snapshots saved within 120 s (%" PRIu64
			          " failures); see %s",
			          stats_get(&bs, ZKW_STAT_STATE_WRITES), opt_watches,
			          stats_get(&bs, ZKW_STAT_STATE_FAILURES), log_path);
		zkw_clock_sleep_ns(1000000);
	}
	res->saved_s = (double)(zkw_clock_mono_ns() - t0) / 1e9;
	if (stats_get(&bs, ZKW_STAT_STATE_FAILURES))
		bench_die("%" PRIu64 " state writes failed; see %s", stats_get(&bs, ZKW_STAT_STATE_FAILURES),
		          log_path);
	stats_detach(&bs);
	res->prep_stop_s = broker_stop(b);
	res->files = count_state_files(cold_dir, &res->file_bytes);
	if (res->files != opt_watches)
		bench_die("%d state files in %s after a clean stop, not %d", res->files, cold_dir,
		          opt_watches);

	/* The reboots, alternated: with the state directory, then without. */
	for (int run = 0; run < opt_runs; run++) {
		for (int side = 0; side < 2; side++) {
			bool cached = side == 0;
			double s;

			if (shm_wipe() < opt_watches)
				bench_die("run %d: fewer than %d segments to unlink: the broker did "
				          "not leave them",
				          run + 1, opt_watches);
			t0 = zkw_clock_mono_ns();
			b = cold_broker(closed_hosts, cached ? cold_dir : "none", cached);
			s = await_segments(b, cached ? AWAIT_CACHED : AWAIT_EXISTS, t0, 30000);
			if (cached) {
				res->cached_ms[run] = s * 1e3;
				stats_attach(&bs, b, 10000);
				res->cold_starts = stats_get(&bs, ZKW_STAT_COLD_STARTS);
				res->later_writes += stats_get(&bs, ZKW_STAT_STATE_WRITES);
				stats_detach(&bs);
				if (res->cold_starts != (uint64_t)opt_watches)
					bench_die("run %d: the broker counts %" PRIu64 " cold starts, not %d",
					          run + 1, res->cold_starts, opt_watches);
				/* Killed: its clean stop, which saves every watch
				 * again, was timed at the preparation. */
				broker_kill(b);
			} else {
				res->bare_ms[run] = s * 1e3;
				broker_stop(b);
			}
			bench_note("run %d %s: %.1f ms", run + 1,
			           cached ? "from the state directory" : "without one", s * 1e3);
		}
	}
	shm_wipe();
	bench_stats_of(res->cached_ms, (size_t)opt_runs, &res->cached);
	bench_stats_of(res->bare_ms, (size_t)opt_runs, &res->bare);
}

/* ---- 2. save cost -------------------------------------------------------------- */

struct save_result {
	size_t size;
	int n;
	double *save_flush, *save_only, *floor, *by_hand; /* us */
	bench_stats s_save_flush, s_save_only, s_floor, s_by_hand;
	zkw_state_stats st;
};

static void write_all(int fd, const void *p, size_t len, const char *what)
{
	const char *c = p;

	while (len) {
		ssize_t n = write(fd, c, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			bench_die("write %s: %s", what, n < 0 ? strerror(errno) : "wrote nothing");
		c += n;
		len -= (size_t)n;
	}
}

static double now_us_since(uint64_t t0)
{
	return (double)(zkw_clock_mono_ns() - t0) / 1e3;
}

static void run_save(size_t size, int n, struct save_result *res)
{
	char dir[PATH_MAX + 32], floor_path[PATH_MAX + 64], tmp_path[PATH_MAX + 64],
	        final_path[PATH_MAX + 64], why[512], path[64], shm[96];
	zkw_state_options o = {.max_content = SAVE_LARGE};
	uint8_t *content = malloc(size);
	zkw_state *st;
	int dfd, ffd, warm = SAVE_WARMUP;
	uint64_t gen = 0;

	snprintf(dir, sizeof(dir), "%s/save-%zu", work, size);
	snprintf(floor_path, sizeof(floor_path), "%s/floor", dir);
	snprintf(tmp_path, sizeof(tmp_path), "%s/by-hand.tmp", dir);
	snprintf(final_path, sizeof(final_path), "%s/by-hand", dir);
	snprintf(path, sizeof(path), "/zkwbench/cs%d/save", (int)getpid());
	snprintf(shm, sizeof(shm), "/%ssave", shm_mark);
	res->size = size;
	res->n = n;
	res->save_flush = calloc((size_t)n, sizeof(double));
	res->save_only = calloc((size_t)n, sizeof(double));
	res->floor = calloc((size_t)n, sizeof(double));
	res->by_hand = calloc((size_t)n, sizeof(double));
	if (!content || !res->save_flush || !res->save_only || !res->floor || !res->by_hand)
		bench_die("out of memory");
	for (size_t i = 0; i < size; i++)
		content[i] = (uint8_t)('a' + i % 26);
	if (mkdir(dir, 0700) < 0)
		bench_die("mkdir %s: %s", dir, strerror(errno));
	if (zkw_state_open(&st, dir, &o, why, sizeof(why)) < 0)
		bench_die("%s", why);
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ffd = open(floor_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (dfd < 0 || ffd < 0)
		bench_die("open %s: %s", dir, strerror(errno));

	for (int i = -warm; i < n; i++) {
		for (int k = 0; k < 3; k++) {
			int which = (i + warm + k) % 3;
			uint64_t t0, t1;

			/* Bytes no sample wrote before. */
			gen++;
			snprintf((char *)content, size, "%020" PRIu64, gen);
			if (which == 0) {
				zkw_state_key key = {.path = path, .pointer = false, .shm_name = shm};
				zkw_state_snapshot s = {.content = content,
				                        .len = size,
				                        .version = (int64_t)gen,
				                        .mzxid = (int64_t)gen,
				                        .generation = gen,
				                        .content_gen = gen};
				int rc;

				t0 = zkw_clock_mono_ns();
				rc = zkw_state_save(st, &key, &s);
				t1 = zkw_clock_mono_ns();
				if (rc < 0)
					bench_die("zkw_state_save: %s", strerror(-rc));
				rc = zkw_state_flush(st);
				if (rc < 0)
					bench_die("zkw_state_flush: %s", strerror(-rc));
				if (i >= 0) {
					res->save_only[i] = (double)(t1 - t0) / 1e3;
					res->save_flush[i] = now_us_since(t0);
				}
			} else if (which == 1) {
				t0 = zkw_clock_mono_ns();
				if (pwrite(ffd, content, size, 0) != (ssize_t)size || fsync(ffd) < 0)
					bench_die("floor %s: %s", floor_path, strerror(errno));
				if (i >= 0)
					res->floor[i] = now_us_since(t0);
			} else {
				int fd;

				t0 = zkw_clock_mono_ns();
				fd = open(tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
				if (fd < 0)
					bench_die("open %s: %s", tmp_path, strerror(errno));
				write_all(fd, content, size, tmp_path);
				if (fsync(fd) < 0 || close(fd) < 0 || rename(tmp_path, final_path) < 0 ||
				    fsync(dfd) < 0)
					bench_die("atomic replace %s: %s", final_path, strerror(errno));
				if (i >= 0)
					res->by_hand[i] = now_us_since(t0);
			}
		}
	}
	zkw_state_get_stats(st, &res->st);
	if (zkw_state_close(st) < 0)
		bench_die("zkw_state_close %s failed", dir);
	if (res->st.writes != (uint64_t)(n + warm) || res->st.failures || res->st.coalesced)
		bench_die("store stats: %" PRIu64 " writes, %" PRIu64 " failures, %" PRIu64
		          " coalesced for %d flushed saves",
		          res->st.writes, res->st.failures, res->st.coalesced, n + warm);
	close(ffd);
	close(dfd);
	free(content);
	bench_stats_of(res->save_flush, (size_t)n, &res->s_save_flush);
	bench_stats_of(res->save_only, (size_t)n, &res->s_save_only);
	bench_stats_of(res->floor, (size_t)n, &res->s_floor);
	bench_stats_of(res->by_hand, (size_t)n, &res->s_by_hand);
}

/* ---- 3. update storm ------------------------------------------------------------ */

struct storm_result {
	bool state;
	double secs, sets_per_s, publishes_per_s, writes_per_s, segment_ms, saved_ms;
	uint64_t sets, publishes, writes, writes_settled, final_seq;
	bool pass;
	char why[256];
};

/* The seq of the content the broker's state file holds now, 0 if none;
 * its bytes into buf, *len. */
static uint64_t state_file_seq(zkw_state *st, const zkw_state_key *key, void *buf, size_t cap, size_t *len)
{
	zkw_state_snapshot s;
	char why[512];
	int rc = zkw_state_load(st, key, &s, buf, cap, why, sizeof(why));

	if (rc == -ENOENT)
		return 0;
	if (rc < 0)
		bench_die("load the broker's state file: %s", why);
	*len = s.len;
	memmove(buf, s.content, s.len); /* content points into buf */
	return bench_config_seq(buf, (ssize_t)s.len);
}

/* One watch, its node set as fast as ZooKeeper takes it for secs; with
 * state: its state directory checked after. */
static void run_storm(zhandle_t *zh, double secs, bool state, struct storm_result *res)
{
	char node[256], shm[128], shm_slash[130], dir[PATH_MAX + 32], why[512], zbuf[STORM_LEN + 64];
	static char buf[STORM_LEN + 64];
	zkw_state_options o = {.max_content = SAVE_LARGE};
	struct broker_stats bs = {0};
	uint64_t seq = 1, t0, t_end, p0, w0, end;
	zkw_state_key key;
	zkw_state *st;
	zkw_reader r;
	size_t cap, len = 0;
	void *sbuf;
	pid_t b;
	int n, zlen, rc;

	memset(res, 0, sizeof(*res));
	res->state = state;
	snprintf(node, sizeof(node), "%s/storm", base_path);
	snprintf(shm, sizeof(shm), "%sstorm", shm_mark);
	snprintf(shm_slash, sizeof(shm_slash), "/%s", shm);
	if (state)
		snprintf(dir, sizeof(dir), "%s/storm-state", work);
	else
		snprintf(dir, sizeof(dir), "none");
	n = bench_config(buf, sizeof(buf), seq, STORM_LEN);
	bench_zk_put(zh, node, buf, n);
	{
		const char *argv[] = {opt_broker, "-z",          opt_hosts, "-f",       node,   "--shm",
		                      shm,        "--state-dir", dir,       "--socket", "none", NULL};

		b = live_broker = bench_spawn(argv, log_path);
	}
	t0 = zkw_clock_mono_ns() + 20000000000ull;
	while (zkw_reader_open(&r, shm) != 0 || zkw_reader_generation(&r) == 0) {
		int s;

		if (r.base)
			zkw_reader_close(&r);
		if (proc_pid_exited(b, &s))
			bench_die("zkw-broker exited during start-up (status %d); see %s", s, log_path);
		if (zkw_clock_mono_ns() > t0)
			bench_die("zkw-broker did not publish %s within 20 s; see %s", node, log_path);
		zkw_clock_sleep_ns(2000000);
	}
	stats_attach(&bs, b, 10000);
	/* The first publication's save is out of the way. */
	end = zkw_clock_mono_ns() + 10000000000ull;
	while (state && stats_get(&bs, ZKW_STAT_STATE_WRITES) == 0) {
		if (zkw_clock_mono_ns() > end)
			bench_die("storm: the first publication was not saved within 10 s; see %s", log_path);
		zkw_clock_sleep_ns(1000000);
	}

	p0 = stats_get(&bs, ZKW_STAT_PUBLISHES);
	w0 = stats_get(&bs, ZKW_STAT_STATE_WRITES);
	pthread_mutex_lock(&bench_wr.lock);
	bench_wr.completed = bench_wr.failed = bench_wr.last_done_seq = bench_wr.last_done_ns = 0;
	pthread_mutex_unlock(&bench_wr.lock);
	t0 = zkw_clock_mono_ns();
	end = t0 + (uint64_t)(secs * 1e9);
	while (zkw_clock_mono_ns() < end) {
		bench_set_wait_below(STORM_INFLIGHT, 20000);
		n = bench_config(buf, sizeof(buf), ++seq, STORM_LEN);
		bench_set_issue(zh, node, buf, n, seq);
	}
	bench_set_wait_below(1, 20000);
	pthread_mutex_lock(&bench_wr.lock);
	t_end = bench_wr.last_done_ns;
	res->sets = bench_wr.completed;
	if (bench_wr.failed)
		bench_die("storm: %" PRIu64 " writes failed", bench_wr.failed);
	if (bench_wr.last_done_seq != seq)
		bench_die("storm: the last write completed is seq %" PRIu64 ", not %" PRIu64,
		          bench_wr.last_done_seq, seq);
	pthread_mutex_unlock(&bench_wr.lock);
	res->publishes = stats_get(&bs, ZKW_STAT_PUBLISHES) - p0;
	res->writes = stats_get(&bs, ZKW_STAT_STATE_WRITES) - w0;
	res->secs = (double)(t_end - t0) / 1e9;
	res->final_seq = seq;
	res->sets_per_s = (double)res->sets / res->secs;
	res->publishes_per_s = (double)res->publishes / res->secs;
	res->writes_per_s = (double)res->writes / res->secs;

	/* Settling: the segment, then the state file, hold the last write. */
	end = t_end + (uint64_t)SETTLE_MS * 1000000u;
	for (;;) {
		zkw_snapshot meta;
		ssize_t got = zkw_reader_read(&r, &meta, zbuf, sizeof(zbuf));

		if (got >= 0 && bench_config_seq(zbuf, got) == seq)
			break;
		if (zkw_clock_mono_ns() > end)
			bench_die("storm: the segment does not hold the last write (seq %" PRIu64
			          ") %d ms after it",
			          seq, SETTLE_MS);
		zkw_clock_sleep_ns(200000);
	}
	res->segment_ms = ((double)zkw_clock_mono_ns() - (double)t_end) / 1e6;
	zkw_reader_close(&r);
	if (!state) {
		stats_detach(&bs);
		broker_stop(b);
		shm_wipe();
		return;
	}

	zlen = sizeof(zbuf);
	rc = zoo_get(zh, node, 0, zbuf, &zlen, NULL);
	if (rc != ZOK || bench_config_seq(zbuf, zlen) != seq)
		bench_die("storm: ZooKeeper holds seq %" PRIu64 " (%s), not %" PRIu64,
		          bench_config_seq(zbuf, zlen), zerror(rc), seq);
	if (zkw_state_open(&st, dir, &o, why, sizeof(why)) < 0)
		bench_die("%s", why);
	key = (zkw_state_key){.path = node, .pointer = false, .shm_name = shm_slash};
	cap = zkw_state_load_size(st);
	sbuf = malloc(cap);
	if (!sbuf)
		bench_die("out of memory");
	res->pass = false;
	for (;;) {
		uint64_t got = state_file_seq(st, &key, sbuf, cap, &len);

		if (got == seq) {
			res->saved_ms = ((double)zkw_clock_mono_ns() - (double)t_end) / 1e6;
			res->pass = len == (size_t)zlen && memcmp(sbuf, zbuf, len) == 0;
			snprintf(res->why, sizeof(res->why), "%s",
			         res->pass ? "the node's last content, byte for byte"
			                   : "the last seq, but not the node's bytes");
			break;
		}
		if (zkw_clock_mono_ns() > end) {
			snprintf(res->why, sizeof(res->why),
			         "holds seq %" PRIu64 ", not the last write's %" PRIu64 ", %d ms after it",
			         got, seq, SETTLE_MS);
			break;
		}
		zkw_clock_sleep_ns(1000000);
	}
	free(sbuf);
	zkw_state_close(st);
	res->writes_settled = stats_get(&bs, ZKW_STAT_STATE_WRITES) - w0;
	if (stats_get(&bs, ZKW_STAT_STATE_FAILURES))
		bench_die("storm: %" PRIu64 " state writes failed; see %s",
		          stats_get(&bs, ZKW_STAT_STATE_FAILURES), log_path);
	stats_detach(&bs);
	broker_stop(b);
	shm_wipe();
}

/* ---- main ------------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f, "usage: bench_coldstart --broker PATH [-z HOSTS] [--dir DIR] [--watches N] [--runs N]\n"
	           "                       [--quick] [--markdown]\n");
}

int main(int argc, char **argv)
{
	static struct cold_result cold;
	static struct save_result save[2];
	static struct storm_result storm[2];
	char fs[512];
	uint64_t t_start = zkw_clock_mono_ns();
	zkh_cluster *own_zk = NULL;
	double storm_s;
	bool tmpfs;
	int c, nsave;
	struct zkw_opt o;
	zhandle_t *zh;

	bench_init("bench_coldstart");
	zkw_opt_init(&o, argc, argv, "bench_coldstart",
	             "z|zookeeper: b|broker: d=dir: w=watches: r=runs: q|quick m=markdown p=plain h|help",
	             usage);
	while ((c = zkw_opt_next(&o)) != -1) {
		switch (c) {
		case 'z': opt_hosts = o.arg; break;
		case 'b': opt_broker = o.arg; break;
		case 'd': opt_dir = o.arg; break;
		case 'w':
			if (zkw_opt_int(&o, "a number of watches from 1 to 5000", 1, MAX_WATCHES,
			                &opt_watches))
				return 2;
			break;
		case 'r':
			if (zkw_opt_int(&o, "a number of runs from 1 to 16", 1, MAX_RUNS, &opt_runs))
				return 2;
			break;
		case 'q': opt_quick = true; break;
		case 'm':
		case 'p': break; /* the report is markdown either way */
		default: return 2;
		}
	}
	if (!opt_broker || zkw_opt_no_operands(&o)) {
		usage(stderr);
		return 2;
	}
	if (opt_quick && opt_runs == 5)
		opt_runs = 3;
	nsave = opt_quick ? 40 : 200;
	storm_s = opt_quick ? 1.5 : 5;
	if (!opt_dir)
		opt_dir = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";

	snprintf(work, sizeof(work), "%s/zkwbench-coldstart.XXXXXX", opt_dir);
	if (!mkdtemp(work))
		bench_die("mkdtemp %s: %s", work, strerror(errno));
	work_owner = getpid();
	atexit(work_remove); /* after the registry's sweep: no broker writes here any more */
	snprintf(base_path, sizeof(base_path), "/zkwbench/cs%d", (int)getpid());
	snprintf(shm_mark, sizeof(shm_mark), "zkwbench.cs%d.", (int)getpid());
	snprintf(log_path, sizeof(log_path), "/tmp/zkwbench-coldstart-%d.log", (int)getpid());
	snprintf(conf_path, sizeof(conf_path), "%s/broker.conf", work);
	snprintf(cold_dir, sizeof(cold_dir), "%s/cold-state", work);
	bench_sweep_on_exit(shm_mark);
	fs_describe(work, fs, sizeof(fs), &tmpfs);
	closed_port(closed_hosts, sizeof(closed_hosts));

	if (!opt_hosts) {
		bench_note("no -z: starting a loopback ZooKeeper");
		own_zk = zkh_start(1);
		if (!own_zk)
			bench_die("could not start a loopback ZooKeeper");
		opt_hosts = zkh_hosts(own_zk);
	}
	zh = bench_zk_connect(opt_hosts);

	run_cold(zh, &cold);
	bench_note("save cost: %d samples of each, 4 KiB and 1 MiB", nsave);
	run_save(SAVE_SMALL, nsave, &save[0]);
	run_save(SAVE_LARGE, nsave, &save[1]);
	bench_note("update storms: %.1f s without a state directory, then %.1f s with one", storm_s, storm_s);
	run_storm(zh, storm_s, false, &storm[0]);
	run_storm(zh, storm_s, true, &storm[1]);

	zkw_zk_delete_tree(zh, base_path, NULL, 0);
	zkw_zk_close(zh);
	if (own_zk)
		zkh_stop(own_zk);
	unlink(log_path); /* kept only when the bench fails */

	/* ---- report ---- */
	printf("## Cold start from the state directory (bench_coldstart)\n\n");
	printf("%d watches of %d-byte nodes, given in a configuration file (capacity 8k). Prepared "
	       "once: the nodes created (%.2f s, pipelined); a broker with --state-dir, connected to "
	       "ZooKeeper, had every watch valid %.2f s after its spawn and its %d snapshots saved %.2f s "
	       "after it; stopped with SIGTERM in %.2f s, it "
	       "left %d state files of %ld bytes. Each run is a reboot: every segment and lock file "
	       "unlinked, ZooKeeper unreachable (-z names a loopback port bound and never listened on: "
	       "refused at once, as a stopped server's port), a broker spawned on the same state "
	       "directory; timed from the spawn until every one of the %d segments, opened by name in a "
	       "loop, is published (generation > 0), flagged cached and holds its node's bytes (checked), "
	       "then the broker killed (SIGKILL: its clean stop is the one timed above). Without a state "
	       "directory the same start has nothing to publish (--no-valid-init): timed until every "
	       "segment exists, then SIGTERM. %d runs of each, alternated. State directory on %s.\n\n",
	       opt_watches, NODE_LEN, cold.create_s, cold.published_s, opt_watches, cold.saved_s,
	       cold.prep_stop_s, cold.files, cold.file_bytes, opt_watches, opt_runs, fs);
	printf("| start, ZooKeeper unreachable | watches | runs | min ms | median ms | max ms | target "
	       "| verdict |\n|---|---:|---:|---:|---:|---:|---|---|\n");
	printf("| from the state directory: every segment published, cached | %d | %d | %.1f | %.1f "
	       "| %.1f | < 1000 ms | %s |\n",
	       opt_watches, opt_runs, cold.cached.min, cold.cached.median, cold.cached.max,
	       bench_verdict(cold.cached.median < 1000));
	printf("| no state directory: every segment created, nothing published | %d | %d | %.1f | %.1f "
	       "| %.1f | - | - |\n",
	       opt_watches, opt_runs, cold.bare.min, cold.bare.median, cold.bare.max);
	printf("\nEach cold-started broker counted %" PRIu64 " cold starts (ZKW_STAT_COLD_STARTS); "
	       "%" PRIu64 " state writes in all the runs by the time each was killed (nothing new to "
	       "save without ZooKeeper).\n",
	       cold.cold_starts, cold.later_writes);

	printf("\n## Save cost per change, fsync included (bench_coldstart)\n\n");
	printf("In process, on the store API (broker/publish/state.h) in a directory on %s: "
	       "zkw_state_save() then zkw_state_flush() of one watch's snapshot is a complete durable "
	       "save (the saver thread: an O_TMPFILE file written, fsync, linked, renamed over the old "
	       "one, the directory fsynced, XXH3 over every byte); zkw_state_save() alone is what the "
	       "publishing thread pays (copy and queue). Floor: pwrite() + fsync() of the same bytes over "
	       "a file in the same directory, the least any durable save costs (but not crash-safe: a "
	       "torn write is possible). By hand: the textbook atomic replace (open a temporary file, "
	       "write, fsync, close, rename, fsync the directory), which syncs the directory too. %d "
	       "samples of each, the three rotated, after %d of warm-up; every sample writes bytes not "
	       "written before. Target set here: a save within 1.25x of the atomic replace by hand, the "
	       "floor of a save that survives a crash at any moment (the write + fsync in place needs one "
	       "journal commit fewer, and is shown for scale).%s\n\n",
	       fs, nsave, SAVE_WARMUP,
	       tmpfs ? " **tmpfs: fsync costs nothing here, these are not a disk's figures.**" : "");
	printf("| snapshot | samples | save + flush median us | p99 us | zkw_state_save() alone median "
	       "us | p99 us | floor: atomic replace by hand median us | p99 us | ratio | target | verdict "
	       "|\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n");
	for (int i = 0; i < 2; i++) {
		struct save_result *s = &save[i];
		double ratio = s->s_save_flush.median / s->s_by_hand.median;

		printf("| durable save, %s | %d | %.1f | %.1f | %.2f | %.2f | %.1f | %.1f | %.2fx "
		       "| <= 1.25x | %s |\n",
		       s->size == SAVE_SMALL ? "4 KiB" : "1 MiB", s->n, s->s_save_flush.median,
		       s->s_save_flush.p99, s->s_save_only.median, s->s_save_only.p99, s->s_by_hand.median,
		       s->s_by_hand.p99, ratio, bench_verdict(ratio <= 1.25));
	}
	printf("\n| snapshot | write + fsync in place median us | p99 us | save + flush / in place "
	       "| by hand / in place |\n|---|---:|---:|---:|---:|\n");
	for (int i = 0; i < 2; i++) {
		struct save_result *s = &save[i];

		printf("| %s | %.1f | %.1f | %.2fx | %.2fx |\n", s->size == SAVE_SMALL ? "4 KiB" : "1 MiB",
		       s->s_floor.median, s->s_floor.p99, s->s_save_flush.median / s->s_floor.median,
		       s->s_by_hand.median / s->s_floor.median);
	}

	printf("\n## Saving during an update storm (bench_coldstart)\n\n");
	printf("One watch; a writer sets its node as fast as it can (async zoo_aset, <= %d in flight, "
	       "%d-byte content carrying a sequence number) for %.1f s, on a broker with --state-dir (on "
	       "%s) and, before, on one without. ZooKeeper's rate is the writes completed; the broker's "
	       "publishes and state writes are its counters (ZKW_STAT_PUBLISHES, ZKW_STAT_STATE_WRITES) "
	       "over the same window, one storm each. The saver writes each watch's newest snapshot and "
	       "drops those a newer one replaced before their turn. Then the check: after the storm, the "
	       "state file (read with zkw_state_load()) must come to hold the node's last content, byte "
	       "for byte, within %d ms of the last write's completion.\n\n",
	       STORM_INFLIGHT, STORM_LEN, storm[1].secs, fs, SETTLE_MS);
	printf("| broker | seconds | writes/s (ZooKeeper) | publishes/s (broker) | state writes/s "
	       "| publishes per state write | publishes never written |\n"
	       "|---|---:|---:|---:|---:|---:|---:|\n");
	for (int i = 0; i < 2; i++) {
		struct storm_result *t = &storm[i];

		if (t->state)
			printf("| --state-dir | %.1f | %.0f | %.0f | %.0f | %.1f | %.1f%% |\n", t->secs,
			       t->sets_per_s, t->publishes_per_s, t->writes_per_s,
			       t->writes ? (double)t->publishes / (double)t->writes : 0,
			       t->publishes ? 100.0 * (1.0 - (double)t->writes / (double)t->publishes) : 0);
		else
			printf("| --state-dir none | %.1f | %.0f | %.0f | - | - | - |\n", t->secs,
			       t->sets_per_s, t->publishes_per_s);
	}
	printf("\n| check | last write (seq) | segment holds it after ms | state file holds it after ms "
	       "| state writes until then | verdict |\n|---|---:|---:|---:|---:|---|\n");
	{
		struct storm_result *t = &storm[1];
		char saved[32] = "-";

		if (t->pass)
			snprintf(saved, sizeof(saved), "%.1f", t->saved_ms);
		printf("| last state saved = last content written (%s) | %" PRIu64 " | %.1f | %s | %" PRIu64
		       " | %s |\n",
		       t->why, t->final_seq, t->segment_ms, saved, t->writes_settled,
		       t->pass ? "PASS" : "FAIL");
	}
	printf("\n_bench_coldstart finished in %.1f s._\n\n", (double)(zkw_clock_mono_ns() - t_start) / 1e9);
	return storm[1].pass ? 0 : 1;
}
