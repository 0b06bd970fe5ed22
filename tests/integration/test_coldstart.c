/* SPDX-License-Identifier: Apache-2.0 */
/* test_coldstart.c - the state directory and the cold start (issue 14,
 * item 4; docs/design.md, "The state directory") against a real ZooKeeper
 * (zkh) and the real zkw-broker (proc), read through zkw/client.h:
 *
 *   - a reboot (segment unlinked, ZooKeeper down, broker started): readers
 *     have the cached content, marked, within 100 ms of the broker's spawn,
 *     at a generation above every one seen before the reboot; the broker
 *     outlives its init timeout; ZooKeeper back, the live state replaces
 *     the cached one without a change - or with one, when the node changed
 *     while the broker was down;
 *   - the broker SIGKILLed around its saves, hundreds of times: the state
 *     file always loads and holds the newest content the segment published
 *     or the one before; a cold start from it publishes exactly it;
 *   - a corrupt and a foreign cache file: never published, one warning
 *     each, the broker serves on;
 *   - a full disk (a small tmpfs in the broker's own mount namespace): the
 *     broker serves on, logs the cause once, counts it, and saves again
 *     once there is room.
 *
 * Waits are on events (a broker's stderr line, the segment's futex, a
 * segment's name appearing in /dev/shm through inotify, a child's exit),
 * except for the state file and the broker's counters, which no event
 * announces: those are polled with a bound (zkh_eventually). State
 * directories live under $ZKW_TEST_RUNDIR (else a directory in /tmp), and
 * are removed by the group teardown; segment names hold the test's pid.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cmocka.h>
#include <zookeeper/zookeeper.h>

#include <zkw/client.h>

#include "chaos.h"
#include "itest.h"
#include "proc.h"
#include "zkh.h"
#include "zkw_clock.h"
#include "zkw_zk.h"

#include "publish/state.h"
#include "publish/writer.h"

/* Sanitizers slow a process start by tens of milliseconds and every
 * iteration of the kill loop several times over. */
#define SANITIZED ITEST_SANITIZED

#define WAIT_MS    20000         /* any single expected change */
#define SEG_CAP    (256u * 1024) /* the largest content these tests push, and more */
#define UNSHARE    "/usr/bin/unshare"
#define TMP_PREFIX ".zkws-tmp."

/* From the broker's spawn to a reader holding the cached content. A
 * functional bound (readers must not wait for ZooKeeper or its timeouts),
 * not a benchmark: a normal build takes a few ms, ASan about 35 ms, whose
 * start-up alone may pass 100 ms on a loaded machine: there the bound is
 * generous, yet below the broker's init timeout (500 ms). */
#define COLD_START_BOUND_MS (SANITIZED ? 400 : 100)

static zkh_cluster *zk;
static const char *hosts;
static char base[2048];       /* this run's state directories (itest_dir_make) */
static char closed_hosts[64]; /* a loopback port nobody listens on */
static int closed_fd = -1;    /* bound, never listening: connections are refused */
static zhandle_t *writer_zh;  /* the save loop's own session */

/* Nodes live below "/zkwtc<pid>", segments are "zkwtc.<pid>.<tag>" (itest.h). */
enum { ANY = ITEST_ANY, YES = ITEST_YES, NO = ITEST_NO };
#define WAIT_FOR ITEST_WAIT_FOR

/* ---- names -------------------------------------------------------------- */

/* A reboot wipes /dev/shm: the segment and its broker lock go. */
static void wipe_segment(const char *name)
{
	int rc = zkw_writer_remove(name);

	if (rc < 0 && rc != -ENOENT)
		fail_msg("zkw_writer_remove(%s): %s", name, strerror(-rc));
	assert_false(itest_seg_exists(name));
}

/* A state directory of this run (the broker creates it: one level). */
static const char *state_dir(char *buf, size_t cap, const char *tag)
{
	snprintf(buf, cap, "%s/%s", base, tag);
	return buf;
}

/* ---- the broker --------------------------------------------------------- */

/* Lines of the broker's stderr holding n1 and, unless NULL, n2. */
static int count_lines(proc *b, const char *n1, const char *n2)
{
	char *out = proc_output(b, PROC_STDERR, NULL), *line, *save = NULL;
	int count = 0;

	assert_non_null(out);
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		count += strstr(line, n1) && (!n2 || strstr(line, n2));
	free(out);
	return count;
}

static void expect_lines(proc *b, int want, const char *n1, const char *n2)
{
	int got = count_lines(b, n1, n2);

	if (got != want) {
		proc_dump(b, "unexpected log lines");
		fail_msg("%s: %d log lines with \"%s\"%s%s%s, want %d", proc_name(b), got, n1,
		         n2 ? " and \"" : "", n2 ? n2 : "", n2 ? "\"" : "", want);
	}
}

/* ---- readers ------------------------------------------------------------ */

/* Watch /dev/shm for new names: set up before the broker starts, so that
 * the segment's link is an event, never missed. */
static int shm_watch_begin(void)
{
	int fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);

	assert_true(fd >= 0);
	assert_true(inotify_add_watch(fd, "/dev/shm", IN_CREATE | IN_MOVED_TO) >= 0);
	return fd;
}

/* Open shm as soon as its name exists (by deadline_ns, CLOCK_MONOTONIC). */
static struct itest_seg *seg_open_when_created(const char *shm, proc *b, int ifd, uint64_t deadline_ns)
{
	char events[4096] __attribute__((aligned(__alignof__(struct inotify_event))));

	for (;;) {
		int err;
		struct itest_seg *s = itest_seg_try_open(shm, b, &err);
		struct pollfd p = {.fd = ifd, .events = POLLIN};
		uint64_t now = zkw_clock_mono_ns();

		if (s)
			return s;
		if (err != -ENOENT)
			fail_msg("zkw_reader_open(%s): %s", shm, strerror(-err));
		if (now >= deadline_ns) {
			proc_dump(b, "segment never created");
			fail_msg("segment %s was not created in time", shm);
		}
		poll(&p, 1, (int)((deadline_ns - now) / 1000000u) + 1);
		while (read(ifd, events, sizeof(events)) > 0)
			;
	}
}

/* ---- state files, read the broker's way ---------------------------------- */

static zkw_state *stores[4];

/* A store of our own on a broker's state directory, to load its files with
 * every check zkw_state_load() makes. Its saver thread stays idle. */
static zkw_state *store_open(const char *dir)
{
	char why[1024];
	size_t i;

	for (i = 0; i < sizeof(stores) / sizeof(stores[0]) && stores[i]; i++)
		;
	assert_true(i < sizeof(stores) / sizeof(stores[0]));
	if (zkw_state_open(&stores[i], dir, &(zkw_state_options){0}, why, sizeof(why)) != 0)
		fail_msg("zkw_state_open(%s): %s", dir, why);
	return stores[i];
}

static void stores_close(void)
{
	for (size_t i = 0; i < sizeof(stores) / sizeof(stores[0]); i++) {
		zkw_state_close(stores[i]);
		stores[i] = NULL;
	}
}

static zkw_state_key state_key(const char *path, const char *shm, char *name, size_t cap)
{
	snprintf(name, cap, "/%s", shm);
	return (zkw_state_key){.path = path, .pointer = false, .shm_name = name};
}

static int load_file(zkw_state *st, const char *path, const char *shm, zkw_state_snapshot *out, void *buf,
                     size_t cap, char *why, size_t whylen)
{
	char name[80];
	zkw_state_key key = state_key(path, shm, name, sizeof(name));

	return zkw_state_load(st, &key, out, buf, cap, why, whylen);
}

/* The file of (path, shm) in dir; asserts that it exists. */
static const char *file_of(char *buf, size_t cap, const char *dir, const char *path, const char *shm)
{
	char name[80], file[ZKW_STATE_FILE_NAME_MAX];
	zkw_state_key key = state_key(path, shm, name, sizeof(name));
	struct stat sb;

	assert_int_equal(zkw_state_file_name(&key, file, sizeof(file)), 0);
	snprintf(buf, cap, "%s/%s", dir, file);
	if (stat(buf, &sb) != 0)
		fail_msg("no state file %s: %s", buf, strerror(errno));
	return buf;
}

/* Entries of dir, and how many are temporary files. */
static int count_entries(const char *dir, int *temps)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	*temps = 0;
	while ((e = readdir(d))) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		n++;
		*temps += strncmp(e->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) == 0;
	}
	closedir(d);
	return n;
}

/* ---- 1. a reboot ----------------------------------------------------------- */

/* A broker of one watch with a state directory. */
static proc *cache_broker(const char *zk_hosts, const char *path, const char *shm, const char *dir)
{
	return itest_broker_start("-z", zk_hosts, "-f", path, "--shm", shm, "--state-dir", dir,
	                          "--init-timeout", "500", NULL);
}

/* For ms: every snapshot keeps the cached content, flagged, invalid, with
 * the cached copy's error, and the broker runs (one that exits publishes
 * its stop, "zkw-broker stopped", which wakes us). */
static void expect_still_cached(struct itest_seg *s, proc *b, const char *text, int ms)
{
	int64_t deadline = zkw_clock_mono_ms() + ms, left;

	do {
		left = deadline - zkw_clock_mono_ms();
		if (left > 0)
			zkw_reader_wait(&s->r, s->snap.generation, (int)left);
		itest_seg_read(s);
		if (!itest_seg_matches(s,
		                       &(struct itest_want){.valid = NO, .cached = YES, .content = text}) ||
		    !strstr(s->snap.error, "cached copy from ") || proc_exited(b, NULL) ||
		    !zkw_reader_broker_alive(&s->r)) {
			itest_seg_describe(s);
			proc_dump(b, "no longer serving the cached copy");
			fail_msg("the broker did not keep serving its cached copy for %d ms", ms);
		}
	} while (left > 0);
}

/* The broker ran, saved, stopped; /dev/shm is wiped and ZooKeeper is down
 * when it starts again: readers get the last content at once, marked
 * cached, at a generation above every one they saw; the broker outlives
 * its init timeout; ZooKeeper back, the live state takes over, and the
 * same content is no change. */
static void test_reboot_serves_the_cached_copy_at_once(void **state)
{
	char path[128], dir[PATH_MAX];
	const char *shm = itest_seg_name("reboot");
	zkw_snapshot before;
	uint64_t last_gen, cached_gen, t0, elapsed_ns;
	struct itest_seg *s;
	bool seen;
	int ifd;
	proc *b;

	(void)state;
	itest_node(path, sizeof(path), "reboot");
	state_dir(dir, sizeof(dir), "reboot");
	itest_put(path, "config v1");
	b = cache_broker(hosts, path, shm, dir);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "v1 valid", .valid = YES, .content = "config v1");
	itest_put(path, "config v2");
	WAIT_FOR(s, "v2 valid", .valid = YES, .content = "config v2");
	before = s->snap;
	assert_false(before.cached);
	itest_broker_stop(b);
	itest_seg_read(s); /* the stop's publication: the last generation readers saw */
	last_gen = s->snap.generation;
	assert_true(last_gen > before.generation);
	itest_seg_close(s);

	/* The reboot. */
	wipe_segment(shm);
	assert_int_equal(zkh_member_stop(zk, 0), 0);

	ifd = shm_watch_begin();
	t0 = zkw_clock_mono_ns();
	b = cache_broker(hosts, path, shm, dir);
	s = seg_open_when_created(shm, b, ifd, t0 + (uint64_t)WAIT_MS * 1000000u);
	seen = itest_seg_wait(s, &(struct itest_want){.cached = YES, .content = "config v2"}, WAIT_MS,
	                      "the cached v2");
	elapsed_ns = zkw_clock_mono_ns() - t0;
	close(ifd);
	assert_true(seen);
	print_message(
	        "cold start: broker spawned -> reader has the cached content in %.2f ms (bound %d ms)\n",
	        (double)elapsed_ns / 1e6, COLD_START_BOUND_MS);
	if (elapsed_ns >= (uint64_t)COLD_START_BOUND_MS * 1000000u) {
		proc_dump(b, "slow cold start");
		fail_msg("the cached content took %.2f ms from the broker's spawn, want under %d ms",
		         (double)elapsed_ns / 1e6, COLD_START_BOUND_MS);
	}
	if (s->snap.valid || s->snap.connected || !strstr(s->snap.error, "cached copy from ") ||
	    !strstr(s->snap.error, "ZooKeeper not reached yet")) {
		itest_seg_describe(s);
		fail_msg("the cached copy is not marked as such");
	}
	if (s->snap.generation <= last_gen) {
		itest_seg_describe(s);
		fail_msg("generation %llu after the reboot, not above %llu seen before it",
		         (unsigned long long)s->snap.generation, (unsigned long long)last_gen);
	}
	assert_int_equal(s->snap.content_gen, before.content_gen);
	assert_int_equal(s->snap.changed_ns, before.changed_ns);
	assert_int_equal(s->snap.version, before.version);
	assert_int_equal(s->snap.mzxid, before.mzxid);
	cached_gen = s->snap.generation;
	expect_lines(b, 1, "published the cached copy from", NULL);

	/* Past its init timeout (500 ms) the broker still serves the copy. */
	expect_still_cached(s, b, "config v2", 1500);
	expect_lines(b, 1, "keeps running if ZooKeeper does not answer", NULL);

	/* ZooKeeper is back, with its data: the same content, no change. */
	assert_int_equal(zkh_member_start(zk, 0), 0);
	WAIT_FOR(s, "live v2", .valid = YES, .connected = YES, .cached = NO, .content = "config v2",
	         .after_gen = cached_gen);
	assert_string_equal(s->snap.error, "");
	assert_int_equal(s->snap.content_gen, before.content_gen);
	assert_int_equal(s->snap.changed_ns, before.changed_ns);
	assert_int_equal(s->snap.version, before.version);
	itest_seg_close(s);
	itest_broker_stop(b);
}

/* The node changed while the broker was down: after the reboot readers may
 * see the cached copy first, then the new content, valid, as a change. */
static void test_reboot_after_a_change_delivers_it(void **state)
{
	char path[128], dir[PATH_MAX];
	const char *shm = itest_seg_name("change");
	zkw_snapshot before;
	uint64_t last_gen, cached_gen = 0, seen_gen = 0;
	int64_t deadline;
	struct itest_seg *s;
	int ifd;
	proc *b;

	(void)state;
	itest_node(path, sizeof(path), "change");
	state_dir(dir, sizeof(dir), "change");
	itest_put(path, "config v2");
	b = cache_broker(hosts, path, shm, dir);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "v2 valid", .valid = YES, .content = "config v2");
	before = s->snap;
	itest_broker_stop(b);
	itest_seg_read(s);
	last_gen = s->snap.generation;
	itest_seg_close(s);

	itest_put(path, "config v3"); /* ZooKeeper up, the broker down */
	wipe_segment(shm);
	ifd = shm_watch_begin();
	b = cache_broker(hosts, path, shm, dir);
	s = seg_open_when_created(shm, b, ifd, zkw_clock_mono_ns() + (uint64_t)WAIT_MS * 1000000u);
	close(ifd);
	/* Every snapshot seen on the way is the cached v2 or v3, never another. */
	deadline = zkw_clock_mono_ms() + WAIT_MS;
	for (;;) {
		int64_t left = deadline - zkw_clock_mono_ms();

		itest_seg_read(s);
		if (s->len >= 0 && s->snap.generation && s->snap.generation != seen_gen) {
			seen_gen = s->snap.generation;
			if (s->snap.generation <= last_gen) {
				itest_seg_describe(s);
				fail_msg("generation not above %llu seen before the reboot",
				         (unsigned long long)last_gen);
			}
			if (s->len == 9 && memcmp(s->buf, "config v2", 9) == 0) {
				if (!s->snap.cached || s->snap.valid ||
				    s->snap.content_gen != before.content_gen) {
					itest_seg_describe(s);
					fail_msg("v2 after the reboot, but not as the cached copy");
				}
				cached_gen = s->snap.generation;
			} else if (s->len == 9 && memcmp(s->buf, "config v3", 9) == 0) {
				if (s->snap.cached) {
					itest_seg_describe(s);
					fail_msg("ZooKeeper's v3 is flagged cached");
				}
				if (s->snap.valid && s->snap.connected)
					break;
			} else {
				itest_seg_describe(s);
				fail_msg("neither the cached v2 nor v3 after the reboot");
			}
		}
		if (left <= 0) {
			itest_seg_describe(s);
			proc_dump(b, "never valid v3");
			fail_msg("v3 never published valid after the reboot");
		}
		zkw_reader_wait(&s->r, s->snap.generation, (int)left);
	}
	print_message("after the reboot: %s, then v3 at generation %llu\n",
	              cached_gen ? "the cached v2 seen" : "the cached v2 not seen",
	              (unsigned long long)s->snap.generation);
	/* A change: a content generation of its own, above the cached one. */
	assert_true(s->snap.content_gen <= s->snap.generation);
	assert_true(s->snap.content_gen > last_gen);
	assert_true(s->snap.content_gen > cached_gen);
	assert_true(s->snap.changed_ns > before.changed_ns);
	assert_true(s->snap.version > before.version);
	itest_seg_close(s);
	itest_broker_stop(b);
}

/* ---- 2. SIGKILL around saves ------------------------------------------------ */

#define LOOP_PUSHES_MAX 4096

struct loop {
	char path[128], dir[PATH_MAX];
	const char *shm;
	zkw_state *store;
	uint64_t rng;
	uint64_t pushed;                  /* chaos seq of the last content pushed */
	int32_t version[LOOP_PUSHES_MAX]; /* ZooKeeper's version of each seq */
	uint64_t file_gen, file_seq;      /* what the file held last */
	unsigned older, newer;            /* kills mid-save: the file kept the old one / had the new */
	char content[CHAOS_CONTENT_MAX];
	uint8_t buf[CHAOS_CONTENT_MAX + 4096]; /* for loads */
};
static struct loop loop; /* large: not on the stack */

static void loop_push(struct loop *l)
{
	struct Stat st;
	size_t len;
	int rc;

	assert_true(l->pushed + 1 < LOOP_PUSHES_MAX);
	len = chaos_content(l->content, sizeof(l->content), ++l->pushed);
	rc = zoo_set2(writer_zh, l->path, l->content, (int)len, -1, &st);
	if (rc != ZOK)
		fail_msg("set %s: %s", l->path, zerror(rc));
	l->version[l->pushed] = st.version;
}

static int loop_load(struct loop *l, zkw_state_snapshot *out, char *why, size_t whylen)
{
	return load_file(l->store, l->path, l->shm, out, l->buf, sizeof(l->buf), why, whylen);
}

struct file_wait {
	struct loop *l;
	uint64_t gen;
	int rc;
	uint64_t got;
	char why[1024];
};

static bool file_reached(void *arg)
{
	struct file_wait *f = arg;
	zkw_state_snapshot snap;

	f->rc = loop_load(f->l, &snap, f->why, sizeof(f->why));
	f->got = f->rc == 0 ? snap.generation : 0;
	return f->rc == 0 && snap.generation >= f->gen;
}

/* The saver has written what the segment publishes at generation gen. */
static void loop_wait_saved(struct loop *l, uint64_t gen)
{
	struct file_wait f = {.l = l, .gen = gen};

	if (!zkh_eventually(file_reached, &f, WAIT_MS))
		fail_msg("the state file never reached generation %llu (load %d, generation %llu: %s)",
		         (unsigned long long)gen, f.rc, (unsigned long long)f.got, f.rc ? f.why : "");
}

/* stall_us < 0: no fault injection. */
static proc *loop_broker(struct loop *l, int stall_us)
{
	char stall[64];
	const char *env[] = {stall, NULL};

	snprintf(stall, sizeof(stall), "ZKW_TEST_FAULT_STALL_BEFORE_SAVE_US=%d", stall_us);
	return itest_broker_start_env(stall_us >= 0 ? env : NULL, "-z", hosts, "-f", l->path, "--shm", l->shm,
	                              "--state-dir", l->dir, NULL);
}

/* Every line the broker wrote to stderr before now has reached us: it
 * logs a SIGUSR1 (and ignores it) after them, in the same pipe. */
static void drain_stderr(proc *b)
{
	assert_int_equal(proc_signal(b, SIGUSR1), 0);
	assert_true(proc_wait_output(b, PROC_STDERR, "received SIGUSR1", WAIT_MS));
}

/* The content of seq, valid and connected, in the broker's segment. */
static struct itest_seg *loop_wait_live(struct loop *l, proc *b)
{
	char want[CHAOS_CONTENT_MAX];
	size_t len = chaos_content(want, sizeof(want), l->pushed);
	struct itest_seg *s;

	itest_broker_wait_segment(b, l->shm);
	s = itest_seg_open(l->shm, b);
	WAIT_FOR(s, "the last content pushed, live", .valid = YES, .connected = YES, .cached = NO,
	         .bytes = want, .len = len);
	return s;
}

/* A clean broker run: live, saved, stopped. */
static void loop_clean_run(struct loop *l)
{
	proc *b = loop_broker(l, -1);
	struct itest_seg *s = loop_wait_live(l, b);

	loop_wait_saved(l, s->snap.generation);
	itest_seg_close(s);
	itest_broker_stop(b);
}

/* After a kill: the file loads, intact, and holds the content the segment
 * publishes (its generation) or the one published before it; it never goes
 * backwards. saved_gen: the generation the file held before the last push
 * (0 when the kill came at a start). */
static void loop_check_file(struct loop *l, int iteration, uint64_t saved_gen)
{
	zkw_state_snapshot f;
	uint64_t seg_seq = 0, file_seq = 0;
	char why[1024];
	struct itest_seg *s = itest_seg_open(l->shm, NULL);
	int rc, temps;

	itest_seg_read(s);
	if (s->len < 0 || !s->snap.generation || chaos_check(s->buf, (size_t)s->len, &seg_seq) != 1) {
		itest_seg_describe(s);
		fail_msg("iteration %d: the segment does not hold a pushed content", iteration);
	}
	rc = loop_load(l, &f, why, sizeof(why));
	if (rc != 0)
		fail_msg("iteration %d: the state file after a SIGKILL: %s (%s)", iteration, strerror(-rc),
		         why);
	if (chaos_check(f.content, f.len, &file_seq) != 1)
		fail_msg("iteration %d: the state file holds %zu bytes that are no content pushed", iteration,
		         f.len);
	if ((file_seq != seg_seq && file_seq + 1 != seg_seq) || f.generation > s->snap.generation) {
		itest_seg_describe(s);
		fail_msg(
		        "iteration %d: the state file holds content %llu (generation %llu), the segment %llu "
		        "(generation %llu): want the segment's or the one before",
		        iteration, (unsigned long long)file_seq, (unsigned long long)f.generation,
		        (unsigned long long)seg_seq, (unsigned long long)s->snap.generation);
	}
	if (f.version != l->version[file_seq] || s->snap.version != l->version[seg_seq])
		fail_msg("iteration %d: versions %lld (file) and %lld (segment), pushed as %d and %d",
		         iteration, (long long)f.version, (long long)s->snap.version,
		         (int)l->version[file_seq], (int)l->version[seg_seq]);
	if (f.generation < l->file_gen || file_seq < l->file_seq)
		fail_msg("iteration %d: the state file went back from content %llu (generation %llu) to %llu "
		         "(generation %llu)",
		         iteration, (unsigned long long)l->file_seq, (unsigned long long)l->file_gen,
		         (unsigned long long)file_seq, (unsigned long long)f.generation);
	if (saved_gen) {
		/* Killed around the save of the content just pushed: the file
		 * holds the one before (exactly as it was) or the new one at the
		 * segment's generation. */
		if (seg_seq != l->pushed)
			fail_msg("iteration %d: the segment holds content %llu, pushed %llu", iteration,
			         (unsigned long long)seg_seq, (unsigned long long)l->pushed);
		if (file_seq == seg_seq && f.generation == s->snap.generation)
			l->newer++;
		else if (file_seq + 1 == seg_seq && f.generation == saved_gen)
			l->older++;
		else
			fail_msg("iteration %d: the file holds content %llu at generation %llu: "
			         "want %llu at %llu or %llu at %llu",
			         iteration, (unsigned long long)file_seq, (unsigned long long)f.generation,
			         (unsigned long long)seg_seq, (unsigned long long)s->snap.generation,
			         (unsigned long long)seg_seq - 1, (unsigned long long)saved_gen);
	}
	/* A killed saver leaves at most one temporary file (the next open
	 * removes it). */
	if (count_entries(l->dir, &temps) > 2 || temps > 1)
		fail_msg("iteration %d: %d temporary files left in %s", iteration, temps, l->dir);
	l->file_gen = f.generation;
	l->file_seq = file_seq;
	itest_seg_close(s);
}

/* A cold start from the file as the kill left it, ZooKeeper unreachable:
 * readers get exactly the file's content, cached. */
static void loop_cold_start(struct loop *l)
{
	static uint8_t content[CHAOS_CONTENT_MAX];
	zkw_state_snapshot f;
	char why[1024];
	struct itest_seg *s;
	proc *b;

	if (loop_load(l, &f, why, sizeof(why)) != 0)
		fail_msg("the state file: %s", why);
	assert_true(f.len <= sizeof(content));
	memcpy(content, f.content, f.len);
	wipe_segment(l->shm);
	b = itest_broker_start("-z", closed_hosts, "-f", l->path, "--shm", l->shm, "--state-dir", l->dir,
	                       "--init-timeout", "200", NULL);
	itest_broker_wait_segment(b, l->shm);
	s = itest_seg_open(l->shm, b);
	WAIT_FOR(s, "the file's content, cached", .cached = YES, .bytes = content, .len = f.len);
	if (s->snap.valid || s->snap.connected || s->snap.version != f.version ||
	    s->snap.content_gen != f.content_gen || s->snap.changed_ns != f.changed_ns ||
	    s->snap.generation <= f.generation) {
		itest_seg_describe(s);
		fail_msg("the cold start does not publish the file's snapshot "
		         "(version %lld, content_gen %llu, generation %llu)",
		         (long long)f.version, (unsigned long long)f.content_gen,
		         (unsigned long long)f.generation);
	}
	itest_seg_close(s);
	itest_broker_stop(b);
	if (loop_load(l, &f, why, sizeof(why)) != 0)
		fail_msg("the state file after a clean stop: %s", why);
	assert_true(f.generation >= l->file_gen);
	l->file_gen = f.generation;
}

/* The broker SIGKILLed at random moments around its saves, hundreds of
 * times: before each kill it publishes a content just pushed (or starts
 * and saves what its segment or its file holds), and its saver announces
 * each write ("zkw-fault: saving") and stalls a random time before it;
 * the kill comes a random 0..2 ms after that line. The file must always
 * load and hold the newest content published or the one before; every
 * 20th kill, a cold start from it with ZooKeeper unreachable publishes
 * exactly it; every third start has no segment (a cold start from the
 * file, then ZooKeeper's). */
static void test_sigkill_while_saving(void **state)
{
	struct loop *l = &loop;
	int iterations = zkh_env_int("ZKW_TEST_COLDSTART_KILLS", SANITIZED ? 60 : 200, LOOP_PUSHES_MAX - 100);
	uint64_t seed = zkw_clock_ns(CLOCK_REALTIME) ^ (uint64_t)getpid();
	int64_t started = zkw_clock_mono_ms();
	unsigned cold = 0, at_start = 0;
	char why[256];
	int temps;

	(void)state;
	memset(l, 0, sizeof(*l));
	l->rng = (uint64_t)zkh_env_int("ZKW_TEST_SEED", (int)(seed & 0x7fffffff), INT_MAX);
	print_message("seed %llu (ZKW_TEST_SEED), %d kills (ZKW_TEST_COLDSTART_KILLS)\n",
	              (unsigned long long)l->rng, iterations);
	itest_node(l->path, sizeof(l->path), "loop");
	state_dir(l->dir, sizeof(l->dir), "loop");
	l->shm = itest_seg_name("loop");
	if (zkw_zk_connect(&writer_zh, hosts, WAIT_MS, 10000, why, sizeof(why)) != 0)
		fail_msg("connect: %s", why);
	assert_int_equal(zkw_zk_create_parents(writer_zh, l->path, why, sizeof(why)), 0);
	zoo_create(writer_zh, l->path, "", 0, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
	loop_push(l);
	l->store = store_open(l->dir);
	loop_clean_run(l); /* the file exists from now on */

	for (int i = 0; i < iterations; i++) {
		int stall_us = (int)(chaos_rand(&l->rng) % 1500);
		bool kill_at_start = chaos_rand(&l->rng) % 5 == 0;
		uint64_t saved_gen = 0;
		proc *b;

		if (i % 3 == 1)
			wipe_segment(l->shm); /* a cold start from the file, then ZooKeeper's content */
		b = loop_broker(l, stall_us);
		if (kill_at_start) {
			/* Its first save: what it adopted or loaded, or ZooKeeper's. */
			itest_broker_wait_segment(b, l->shm);
			assert_true(proc_wait_output(b, PROC_STDERR, "zkw-fault: saving", WAIT_MS));
			at_start++;
		} else {
			struct itest_seg *s = loop_wait_live(l, b);
			int saves;

			saved_gen = s->snap.generation;
			loop_wait_saved(l, saved_gen);
			itest_seg_close(s);
			/* The line of that save is in (it came before the file). */
			drain_stderr(b);
			saves = proc_count(b, PROC_STDERR, "zkw-fault: saving");
			loop_push(l);
			assert_true(proc_wait_output_count(b, PROC_STDERR, "zkw-fault: saving", saves + 1,
			                                   WAIT_MS));
		}
		/* a random moment, not a synchronisation */
		zkw_clock_sleep_ns(chaos_rand(&l->rng) % 2000001);
		itest_broker_kill(b);
		loop_check_file(l, i, saved_gen);
		if (i % 20 == 19) {
			loop_cold_start(l);
			cold++;
		}
	}
	print_message("%d kills in %lld ms: %u at a start, %u around the save of a new content (%u kept the "
	              "one before, %u had the new one); %u cold starts without ZooKeeper\n",
	              iterations, (long long)(zkw_clock_mono_ms() - started), at_start, l->older + l->newer,
	              l->older, l->newer, cold);
	/* Both sides of the rename were hit (else the kills were not around
	 * the saves). */
	if (l->older + l->newer >= 40 && (!l->older || !l->newer))
		fail_msg("%u kills around a save, all on one side of it (%u before, %u after)",
		         l->older + l->newer, l->older, l->newer);

	/* A last clean run: the newest content saved, the temporary file of
	 * the last kill removed. */
	loop_clean_run(l);
	{
		zkw_state_snapshot f;
		uint64_t seq = 0;

		assert_int_equal(loop_load(l, &f, why, sizeof(why)), 0);
		assert_int_equal(chaos_check(f.content, f.len, &seq), 1);
		assert_int_equal(seq, l->pushed);
	}
	assert_int_equal(count_entries(l->dir, &temps), 1);
	assert_int_equal(temps, 0);
	zkw_zk_close(writer_zh);
	writer_zh = NULL;
}

/* ---- 3. corrupt and foreign files --------------------------------------------- */

static void copy_file(const char *from, const char *to)
{
	char tmp[PATH_MAX + 200], buf[65536];
	int in = open(from, O_RDONLY | O_CLOEXEC), out;
	ssize_t n;

	assert_true(in >= 0);
	snprintf(tmp, sizeof(tmp), "%s.copy", to);
	out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(out >= 0);
	while ((n = read(in, buf, sizeof(buf))) > 0)
		assert_int_equal(write(out, buf, (size_t)n), n);
	assert_int_equal(n, 0);
	close(in);
	assert_int_equal(close(out), 0);
	assert_int_equal(rename(tmp, to), 0);
}

static void flip_middle_byte(const char *file)
{
	int fd = open(file, O_RDWR | O_CLOEXEC);
	struct stat sb;
	unsigned char c;

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &sb), 0);
	assert_int_equal(pread(fd, &c, 1, sb.st_size / 2), 1);
	c ^= 0x5a;
	assert_int_equal(pwrite(fd, &c, 1, sb.st_size / 2), 1);
	close(fd);
}

/* A segment must never show the cached content: nothing published, or
 * not flagged cached and not that content. */
static void expect_not_cached(struct itest_seg *s, const char *cached_text)
{
	itest_seg_read(s);
	if (s->len < 0 || !s->snap.generation)
		return;
	if (s->snap.cached ||
	    ((size_t)s->len == strlen(cached_text) && memcmp(s->buf, cached_text, (size_t)s->len) == 0)) {
		itest_seg_describe(s);
		fail_msg("a refused cache file was published");
	}
}

/* For ms, whatever the broker publishes into s (if anything). */
static void expect_never_cached(struct itest_seg *s, const char *cached_text, int ms)
{
	int64_t deadline = zkw_clock_mono_ms() + ms, left;

	expect_not_cached(s, cached_text);
	while ((left = deadline - zkw_clock_mono_ms()) > 0) {
		zkw_reader_wait(&s->r, zkw_reader_generation(&s->r), (int)left);
		expect_not_cached(s, cached_text);
	}
}

/* A file with one byte flipped, and a sound file of another watch put in a
 * watch's place: ZooKeeper unreachable, the broker publishes neither, says
 * so once per file with the cause, and serves on. */
static void test_corrupt_and_foreign_files_are_never_published(void **state)
{
	char pa[128], pb[128], dir[PATH_MAX], fa[PATH_MAX + 160], fb[PATH_MAX + 160], line[256];
	const char *sa = itest_seg_name("corrupt"), *sb = itest_seg_name("foreign");
	struct itest_seg *ra, *rb;
	proc *b;

	(void)state;
	itest_node(pa, sizeof(pa), "corrupt");
	itest_node(pb, sizeof(pb), "foreign");
	state_dir(dir, sizeof(dir), "refused");
	itest_put(pa, "content of A");
	itest_put(pb, "content of B");
	b = itest_broker_start("-z", hosts, "-f", pa, "--shm", sa, "-f", pb, "--shm", sb, "--state-dir", dir,
	                       NULL);
	itest_broker_wait_segment(b, sa);
	itest_broker_wait_segment(b, sb);
	ra = itest_seg_open(sa, b);
	rb = itest_seg_open(sb, b);
	WAIT_FOR(ra, "A valid", .valid = YES, .content = "content of A");
	WAIT_FOR(rb, "B valid", .valid = YES, .content = "content of B");
	itest_seg_close(ra);
	itest_seg_close(rb);
	itest_broker_stop(b);
	file_of(fa, sizeof(fa), dir, pa, sa);
	file_of(fb, sizeof(fb), dir, pb, sb);
	copy_file(fa, fb); /* B's name, A's sound file */
	flip_middle_byte(fa);
	wipe_segment(sa);
	wipe_segment(sb);

	b = itest_broker_start("-z", closed_hosts, "--no-valid-init", "--init-timeout", "300", "-f", pa,
	                       "--shm", sa, "-f", pb, "--shm", sb, "--state-dir", dir, NULL);
	/* Its ZooKeeper client talks once every watch is added, and so after
	 * every cold start. */
	assert_true(proc_wait_output(b, PROC_STDERR, "zookeeper client:", WAIT_MS));
	ra = itest_seg_open(sa, b);
	rb = itest_seg_open(sb, b);
	/* Nor later (past its init timeout): whatever it publishes, and it
	 * stays running. */
	expect_never_cached(ra, "content of A", 800);
	expect_never_cached(rb, "content of B", 0);
	if (proc_exited(b, NULL)) {
		proc_dump(b, "exited");
		fail_msg("the broker did not serve on after refusing its cache files");
	}
	snprintf(line, sizeof(line), "%s: cached copy ignored: ", pa);
	expect_lines(b, 1, line, "checksum mismatch");
	expect_lines(b, 1, line, NULL);
	snprintf(line, sizeof(line), "%s: cached copy ignored: ", pb);
	expect_lines(b, 1, line, "saved for another watch");
	expect_lines(b, 1, line, NULL);
	expect_lines(b, 0, "published the cached copy", NULL);
	assert_int_equal(itest_stat(proc_pid(b), ZKW_STAT_COLD_STARTS), 0);
	assert_true(itest_stat(proc_pid(b), ZKW_STAT_ERRORS) >= 2);
	itest_seg_close(ra);
	itest_seg_close(rb);
	itest_broker_stop(b);
}

/* ---- 4. a full disk ----------------------------------------------------------- */

/* "big <tag>" then filler, n bytes in all (< cap): more than the room left. */
static char *big_content(char *c, size_t cap, const char *tag, size_t n)
{
	int head;

	assert_true(n < cap);
	head = snprintf(c, cap, "big %s\n", tag);
	for (size_t i = (size_t)head; i < n; i++)
		c[i] = (char)('a' + (i * 7 + (size_t)tag[1]) % 26);
	c[n] = '\0';
	return c;
}

struct load_wait {
	zkw_state *store;
	const char *path, *shm, *want;
	int rc;
	void *buf;
	size_t cap;
};

static bool file_holds(void *arg)
{
	struct load_wait *w = arg;
	zkw_state_snapshot f;
	char why[1024];

	w->rc = load_file(w->store, w->path, w->shm, &f, w->buf, w->cap, why, sizeof(why));
	return w->rc == 0 && f.len == strlen(w->want) && memcmp(f.content, w->want, f.len) == 0;
}

static void wait_file_holds(zkw_state *st, const char *path, const char *shm, const char *want)
{
	struct load_wait w = {st, path, shm, want, 0, NULL, SEG_CAP + 4096};

	w.buf = malloc(w.cap);
	assert_non_null(w.buf);
	if (!zkh_eventually(file_holds, &w, WAIT_MS)) {
		free(w.buf);
		fail_msg("the state file never held \"%.20s...\" (load: %d)", want, w.rc);
	}
	free(w.buf);
}

/* Run by sh in a mount namespace of its own (unshare -m): a 256 KiB tmpfs
 * on $0, then exec "$@". Exit 77 when the mount is refused. */
#define NS_SCRIPT "mount -t tmpfs -o size=256k,mode=0700 zkw-coldtest \"$0\" || exit 77; exec \"$@\""

/* zkw-broker with the arguments given, in a mount namespace of its own
 * with the tmpfs on mnt. unshare and sh exec it: its pid is the broker's. */
static proc *broker_in_namespace(const char *mnt, const char *first, ...) __attribute__((sentinel));

static proc *broker_in_namespace(const char *mnt, const char *first, ...)
{
	const char *argv[64] = {"-m", "--propagation", "private", "sh", "-c", NS_SCRIPT, mnt};
	proc_options o = {.literal_path = true};
	char tool[PATH_MAX];
	va_list ap;
	proc *b;

	argv[7] = proc_tool_path("zkw-broker", tool, sizeof(tool));
	va_start(ap, first);
	proc_collect_args(argv + 8, sizeof(argv) / sizeof(argv[0]) - 8, first, ap);
	va_end(ap);
	b = proc_spawn_opts(UNSHARE, argv, &o);
	assert_non_null(b);
	return b;
}

/* The state directory on a 256 KiB tmpfs mounted in the broker's own mount
 * namespace (unshare -m: /dev/shm stays the host's, so readers and the
 * counters are where they always are). Filled up to 8 KiB, then content
 * larger than that: the broker serves it, logs ENOSPC once over several
 * failed writes, counts them, and writes the newest snapshot once there is
 * room again, saying so once. */
static void test_full_disk(void **state)
{
	char path[128], mnt[PATH_MAX], dir[PATH_MAX + 8], nsmnt[PATH_MAX + 64], nsdir[PATH_MAX + 80];
	char filler[PATH_MAX + 80];
	const char *shm = itest_seg_name("full");
	const char *probe[] = {"-m", "--propagation", "private", "sh", "-c", NS_SCRIPT, NULL, "true", NULL};
	proc_options lit = {.literal_path = true};
	static char big[3][64 * 1024 + 1];
	const char *v2 = big_content(big[0], sizeof(big[0]), "v2", 64 * 1024),
	           *v3 = big_content(big[1], sizeof(big[1]), "v3", 48 * 1024),
	           *v4 = big_content(big[2], sizeof(big[2]), "v4", 40 * 1024);
	struct statvfs vfs;
	struct itest_seg *s;
	zkw_state *st;
	uint64_t room;
	char *err = NULL;
	pid_t pid;
	proc *b;
	int fd, status;

	(void)state;
	itest_node(path, sizeof(path), "full");
	state_dir(mnt, sizeof(mnt), "full-mnt");
	snprintf(dir, sizeof(dir), "%s/state", mnt);
	assert_int_equal(mkdir(mnt, 0700), 0);
	probe[6] = mnt;
	status = access(UNSHARE, X_OK) == 0 ? proc_run(UNSHARE, probe, &lit, WAIT_MS, NULL, &err) : -1;
	if (status != 0) {
		if (err && *err && err[strlen(err) - 1] == '\n')
			err[strlen(err) - 1] = '\0';
		print_message("no private mount namespace with a tmpfs here (%s: status %d: %s): skipped\n",
		              UNSHARE, status, err ? err : "not installed");
		free(err);
		skip();
	}
	free(err);

	itest_put(path, "small v1");
	b = broker_in_namespace(mnt, "-z", hosts, "-f", path, "--shm", shm, "--state-dir", dir, NULL);
	pid = proc_pid(b);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b); /* fails if the broker's /dev/shm were another */
	WAIT_FOR(s, "v1 valid", .valid = YES, .content = "small v1");
	itest_stat_wait(pid, ZKW_STAT_STATE_WRITES, 1, "state_writes");

	/* Its tmpfs, seen from here through its root. */
	snprintf(nsmnt, sizeof(nsmnt), "/proc/%d/root%s", (int)pid, mnt);
	snprintf(nsdir, sizeof(nsdir), "%s/state", nsmnt);
	assert_int_equal(statvfs(nsmnt, &vfs), 0);
	if ((uint64_t)vfs.f_blocks * vfs.f_frsize > 1024 * 1024)
		fail_msg("%s is %llu bytes: not the broker's small tmpfs", nsmnt,
		         (unsigned long long)vfs.f_blocks * vfs.f_frsize);
	st = store_open(nsdir);
	wait_file_holds(st, path, shm, "small v1");

	/* Fill it up to 8 KiB. */
	snprintf(filler, sizeof(filler), "%s/filler", nsmnt);
	fd = open(filler, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	room = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	assert_true(room > 16 * 1024);
	{
		static char chunk[4096];

		for (uint64_t left = room - 8 * 1024; left >= sizeof(chunk); left -= sizeof(chunk))
			assert_int_equal(write(fd, chunk, sizeof(chunk)), (ssize_t)sizeof(chunk));
	}
	assert_int_equal(close(fd), 0);
	assert_int_equal(statvfs(nsmnt, &vfs), 0);
	print_message("the broker's tmpfs: %llu bytes free after the filler\n",
	              (unsigned long long)vfs.f_bavail * vfs.f_frsize);

	/* Larger than the room left: served, not saved, said once. */
	itest_put(path, v2);
	WAIT_FOR(s, "v2 valid on a full disk", .valid = YES, .content = v2);
	itest_stat_wait(pid, ZKW_STAT_STATE_FAILURES, 1, "state_failures");
	/* Logged right after the failure is counted (the saver counts, then
	 * reports). */
	assert_true(proc_wait_output(b, PROC_STDERR, "No space left on device", 5000));
	itest_put(path, v3);
	WAIT_FOR(s, "v3 valid on a full disk", .valid = YES, .content = v3);
	itest_put(path, v4);
	WAIT_FOR(s, "v4 valid on a full disk", .valid = YES, .content = v4);
	itest_stat_wait(pid, ZKW_STAT_STATE_FAILURES, 2, "state_failures"); /* retried, and failed again */
	expect_lines(b, 1, "No space left on device", NULL);
	expect_lines(b, 1, "cannot save state file", NULL);
	expect_lines(b, 0, "state files are saved in", NULL);
	assert_false(proc_exited(b, NULL));
	wait_file_holds(st, path, shm, "small v1"); /* the old file, whole */

	/* Room again: the newest snapshot is written, and that is said once. */
	assert_int_equal(unlink(filler), 0);
	assert_true(proc_wait_output(b, PROC_STDERR, "state files are saved in", WAIT_MS));
	expect_lines(b, 1, "state files are saved in", "again");
	wait_file_holds(st, path, shm, v4);
	itest_put(path, "small v5");
	WAIT_FOR(s, "v5 valid", .valid = YES, .content = "small v5");
	wait_file_holds(st, path, shm, "small v5");
	expect_lines(b, 1, "No space left on device", NULL);
	expect_lines(b, 1, "state files are saved in", "again");
	/* The saver counts a write after the file is in place: wait for it. */
	itest_stat_wait(pid, ZKW_STAT_STATE_WRITES, 3, "state_writes");
	print_message("full disk: %llu state writes, %llu failures\n",
	              (unsigned long long)itest_stat(pid, ZKW_STAT_STATE_WRITES),
	              (unsigned long long)itest_stat(pid, ZKW_STAT_STATE_FAILURES));
	stores_close(); /* before its namespace goes */
	itest_seg_close(s);
	itest_broker_stop(b);
}

/* ---- fixtures ----------------------------------------------------------------- */

static int group_setup(void **state)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);

	(void)state;
	zk = itest_zk_start(&(struct itest_config){
	        .prefix = "zkwtc", .wait_ms = WAIT_MS, .read_cap = SEG_CAP, .follow = true});
	if (!zk || !itest_dir_make(base, sizeof(base)))
		return -1;
	/* Bound and never listening: a connection there is refused at once. */
	closed_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (closed_fd < 0 || bind(closed_fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    getsockname(closed_fd, (struct sockaddr *)&a, &alen) < 0)
		return -1;
	snprintf(closed_hosts, sizeof(closed_hosts), "127.0.0.1:%d", ntohs(a.sin_port));
	hosts = zkh_hosts(zk);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	itest_test_cleanup(); /* before the stores: a broker in its own namespace */
	stores_close();
	itest_zk_stop();
	if (closed_fd >= 0)
		close(closed_fd);
	if (base[0] && !getenv("ZKW_TEST_KEEP"))
		itest_tree_remove(base, false);
	return 0;
}

static int test_teardown(void **state)
{
	(void)state;
	itest_test_cleanup(); /* before the stores: a broker in its own namespace */
	stores_close();
	zkw_zk_close(writer_zh);
	writer_zh = NULL;
	itest_zk_up(); /* ZooKeeper stopped by a test comes back */
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_teardown(test_reboot_serves_the_cached_copy_at_once, test_teardown),
	        cmocka_unit_test_teardown(test_reboot_after_a_change_delivers_it, test_teardown),
	        cmocka_unit_test_teardown(test_sigkill_while_saving, test_teardown),
	        cmocka_unit_test_teardown(test_corrupt_and_foreign_files_are_never_published, test_teardown),
	        cmocka_unit_test_teardown(test_full_disk, test_teardown),
	};

	if (getenv("ZKW_TEST_ONLY")) /* e.g. ZKW_TEST_ONLY='test_reboot_*' */
		cmocka_set_test_filter(getenv("ZKW_TEST_ONLY"));
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
