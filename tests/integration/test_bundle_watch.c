/* SPDX-License-Identifier: Apache-2.0 */
/* test_bundle_watch.c - bundle watches end to end (issue 15; docs/design.md,
 * "Bundle watches"): a real ZooKeeper (zkh), the real zkw-broker (proc),
 * readers through zkw/client.h and zkw/bundle.h.
 *
 *   - atomicity: a writer sets all 8 children of a parent in one multi-op,
 *     10,000 times, while reader processes check every snapshot they read:
 *     the 8 entries always carry one state (never a mix), the names are
 *     exactly the 8, the state never goes back, and every reader ends on
 *     the last state;
 *   - children added and removed in one multi-op, one child changed alone,
 *     the parent deleted (invalid) and recreated, an empty parent;
 *   - a bundle through the control socket (SUBSCRIBE ... bundle);
 *   - a bundle's cold start from the state directory;
 *   - a reconcile that finds nothing changed confirms without a generation.
 *
 * (tests/unit/test_bundle.c tests the layout's reader and encoder: hence
 * this file's name.) Waits are on events - a broker's stderr line, the
 * segment's futex, a child's exit - except the confirmed-at time, which no
 * event announces (polled with a bound, zkh_eventually). Segment names hold
 * the test's pid and are unlinked by the teardowns.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <zookeeper/zookeeper.h>

#include <zkw/bundle.h>
#include <zkw/client.h>

#include "itest.h"
#include "proc.h"
#include "zkh.h"
#include "zkw_clock.h"
#include "zkw_zk.h"
#include "publish/writer.h"

/* ThreadSanitizer slows the broker and the client's threads many times
 * over: the atomicity run is shorter there (ASan+UBSan keeps the 10,000,
 * in about 5 s; ZKW_TEST_BUNDLE_UPDATES overrides either way). */
#define TSAN ITEST_TSAN

#define WAIT_MS     20000 /* any single expected change */
#define IDLE_MS     30000 /* a reader process with no new generation this long gives up */
#define CONTENT_CAP (64u * 1024)

#define CHILDREN    8
#define UPDATES     (TSAN ? 2000 : 10000)
#define UPDATES_MAX 1000000
#define READERS     4
#define BURST_MAX   16 /* multi-ops in flight at once */
#define PAD_MAX     97

static zkh_cluster *zk;
static const char *hosts;
static char rundir[64]; /* sockets and state directories of this run (itest_dir_make) */
static zhandle_t *zh;   /* the writer's session */

/* Nodes live below "/zkwtbw<pid>", segments are "zkwtbw.<pid>.<tag>" (itest.h). */
enum { ANY = ITEST_ANY, YES = ITEST_YES, NO = ITEST_NO };
#define WAIT_FOR ITEST_WAIT_FOR

/* ---- ZooKeeper, from the writer's session ---------------------------------- */

static void put(const char *path, const char *text)
{
	itest_zk_put(zh, path, text, text ? (int)strlen(text) : -1);
}

static void delete_tree(const char *path)
{
	itest_zk_delete_tree(zh, path);
}

static struct Stat stat_of(const char *path)
{
	struct Stat st;
	int rc = zoo_exists(zh, path, 0, &st);

	if (rc != ZOK)
		fail_msg("exists %s: %s", path, zerror(rc));
	return st;
}

/* One transaction; fails the test unless all of it went through. */
static void multi(int n, const zoo_op_t *ops)
{
	zoo_op_result_t results[16];
	int rc;

	assert_true(n <= 16);
	rc = zoo_multi(zh, n, ops, results);
	if (rc != ZOK) {
		for (int i = 0; i < n; i++)
			if (results[i].err != ZOK)
				fail_msg("multi: op %d: %s", i, zerror(results[i].err));
		fail_msg("multi: %s", zerror(rc));
	}
}

/* A new session for the writer (after ZooKeeper was stopped: the old one
 * may have expired). */
static int writer_reconnect_quiet(void)
{
	char why[256];

	zkw_zk_close(zh);
	zh = NULL;
	if (zkw_zk_connect(&zh, hosts, WAIT_MS, 10000, why, sizeof(why)) != 0) {
		fprintf(stderr, "connect %s: %s\n", hosts, why);
		return -1;
	}
	return 0;
}

static void writer_reconnect(void)
{
	if (writer_reconnect_quiet() != 0)
		fail_msg("cannot reconnect the writer's session");
}

/* The entry called name in the segment's last read (which must be a bundle). */
static zkw_bundle_entry entry_of(const struct itest_seg *s, const char *name)
{
	zkw_bundle b;
	zkw_bundle_entry e;

	assert_true(s->len >= 0 && s->snap.bundle);
	assert_int_equal(zkw_bundle_open(&b, s->buf, (size_t)s->len), 0);
	if (zkw_bundle_find(&b, name, &e) != 0) {
		itest_seg_describe(s);
		fail_msg("no entry %s in the bundle", name);
	}
	return e;
}

/* ---- 1. atomicity ----------------------------------------------------------- */

/* Child i's content at state k: "k=<k> child=<i> " and a padding whose
 * length and letter vary with both, so a torn or shifted entry shows. */
static int state_text(char *out, size_t cap, uint32_t k, int i)
{
	int n = snprintf(out, cap, "k=%u child=%d ", k, i);
	int pad = (int)((k * 31u + (uint32_t)i * 17u) % PAD_MAX);

	assert_true(n > 0 && (size_t)(n + pad) < cap);
	memset(out + n, 'a' + (int)((k + (uint32_t)i) % 26u), (size_t)pad);
	out[n + pad] = '\0';
	return n + pad;
}

enum verdict { STATE_OK, STATE_MALFORMED, STATE_MIXED };

/* The state of a snapshot of the 8 children: every entry must be exactly
 * the content the writer wrote for (k, its index), the names exactly
 * c0..c7, and all entries of one state: one k, one mzxid (one
 * transaction), a data version of k (each update bumps every child). */
static enum verdict check_state(const void *content, size_t len, uint32_t *k_out, char *why, size_t cap)
{
	char want[256], name[16];
	zkw_bundle b;
	zkw_bundle_entry e;
	uint32_t k0 = 0;
	int64_t mzxid0 = 0;
	int err = zkw_bundle_open(&b, content, len);

	if (err) {
		snprintf(why, cap, "zkw_bundle_open: %s", strerror(-err));
		return STATE_MALFORMED;
	}
	if (b.count != CHILDREN) {
		snprintf(why, cap, "%u entries, want %d", b.count, CHILDREN);
		return STATE_MALFORMED;
	}
	for (uint32_t i = 0; i < b.count; i++) {
		unsigned long k;
		char *end;
		int n;

		if (zkw_bundle_entry_at(&b, i, &e) != 0) {
			snprintf(why, cap, "entry %u unreadable", i);
			return STATE_MALFORMED;
		}
		snprintf(name, sizeof(name), "c%u", i);
		if (strcmp(e.name, name) != 0) {
			snprintf(why, cap, "entry %u is named %s, want %s", i, e.name, name);
			return STATE_MALFORMED;
		}
		if (e.len < 3 || memcmp(e.data, "k=", 2) != 0) {
			snprintf(why, cap, "%s holds %.*s", e.name, (int)(e.len < 40 ? e.len : 40),
			         (const char *)e.data);
			return STATE_MALFORMED;
		}
		k = strtoul((const char *)e.data + 2, &end, 10);
		n = state_text(want, sizeof(want), (uint32_t)k, (int)i);
		if (k > UINT32_MAX || e.len != (size_t)n || memcmp(e.data, want, (size_t)n) != 0) {
			snprintf(why, cap, "%s holds %zu bytes \"%.*s\", not the content of a state", e.name,
			         e.len, (int)(e.len < 60 ? e.len : 60), (const char *)e.data);
			return STATE_MALFORMED;
		}
		if (i == 0) {
			k0 = (uint32_t)k;
			mzxid0 = e.mzxid;
		}
		if (k != k0 || e.mzxid != mzxid0 || e.version != (int32_t)k) {
			snprintf(why, cap,
			         "mixed: c0 at k=%u (mzxid %lld), %s at k=%lu (mzxid %lld, version %d)", k0,
			         (long long)mzxid0, e.name, k, (long long)e.mzxid, e.version);
			return STATE_MIXED;
		}
	}
	if (zkw_bundle_find(&b, "c5", &e) != 0 || memcmp(e.data, "k=", 2) != 0) {
		snprintf(why, cap, "zkw_bundle_find(c5) fails");
		return STATE_MALFORMED;
	}
	*k_out = k0;
	return STATE_OK;
}

/* What a reader process saw, sent back through a pipe (< PIPE_BUF). */
struct atom_report {
	uint64_t snapshots, distinct, mixed, regressions, malformed, invalid, not_bundle, reopened;
	uint32_t first_k, last_k;
	bool finished; /* saw the final state */
	char why[256]; /* the first problem seen */
};

/* Tracks one reader's view; shared by the reader processes and the
 * writer's own reader. */
struct atom_view {
	struct atom_report rep;
	uint64_t seen_gen;
	bool any;
};

static void atom_note(struct atom_view *v, const char *why)
{
	if (!v->rep.why[0])
		snprintf(v->rep.why, sizeof(v->rep.why), "%s", why);
}

/* One snapshot (generation not seen before) read. */
static void atom_take(struct atom_view *v, const void *content, size_t len, const zkw_snapshot *m,
                      uint32_t final_k)
{
	char why[200], line[256];
	uint32_t k;

	v->rep.snapshots++;
	v->seen_gen = m->generation;
	if (!m->valid)
		v->rep.invalid++;
	if (!m->bundle) {
		v->rep.not_bundle++;
		snprintf(line, sizeof(line), "generation %llu: not flagged a bundle",
		         (unsigned long long)m->generation);
		atom_note(v, line);
		return;
	}
	switch (check_state(content, len, &k, why, sizeof(why))) {
	case STATE_MALFORMED:
		v->rep.malformed++;
		snprintf(line, sizeof(line), "generation %llu: %s", (unsigned long long)m->generation, why);
		atom_note(v, line);
		return;
	case STATE_MIXED:
		v->rep.mixed++;
		snprintf(line, sizeof(line), "generation %llu: %s", (unsigned long long)m->generation, why);
		atom_note(v, line);
		return;
	case STATE_OK: break;
	}
	if (!v->any) {
		v->any = true;
		v->rep.first_k = v->rep.last_k = k;
		v->rep.distinct = 1;
	} else if (k < v->rep.last_k) {
		v->rep.regressions++;
		snprintf(line, sizeof(line), "generation %llu: k=%u after k=%u",
		         (unsigned long long)m->generation, k, v->rep.last_k);
		atom_note(v, line);
	} else if (k > v->rep.last_k) {
		v->rep.distinct++;
		v->rep.last_k = k;
	}
	if (k == final_k)
		v->rep.finished = true;
}

struct atom_reader_args {
	const char *shm;
	uint32_t final_k;
};

/* A reader process: read every generation it can until the final state,
 * then report. Never returns. */
static void atom_reader(void *arg, int ready_fd, int report_fd)
{
	static unsigned char buf[CONTENT_CAP];
	const char *shm = ((struct atom_reader_args *)arg)->shm;
	uint32_t final_k = ((struct atom_reader_args *)arg)->final_k;
	struct atom_view v;
	zkw_reader r;
	zkw_snapshot m;

	memset(&v, 0, sizeof(v));
	if (zkw_reader_open(&r, shm) != 0)
		_exit(10);
	if (write(ready_fd, "r", 1) != 1)
		_exit(11);
	close(ready_fd);
	while (!v.rep.finished) {
		ssize_t n = zkw_reader_read(&r, &m, buf, sizeof(buf));
		int rc;

		if (n == -EAGAIN)
			continue;
		if (n < 0) {
			snprintf(v.rep.why, sizeof(v.rep.why), "zkw_reader_read: %s", strerror((int)-n));
			break;
		}
		if (m.generation != v.seen_gen)
			atom_take(&v, buf, (size_t)n, &m, final_k);
		if (v.rep.finished)
			break;
		rc = zkw_reader_wait(&r, v.seen_gen, IDLE_MS);
		if (rc == 0) {
			snprintf(v.rep.why, sizeof(v.rep.why), "no new generation in %d ms (at k=%u)",
			         IDLE_MS, v.rep.last_k);
			break;
		}
		if (rc == -ESTALE) { /* replaced (grown): the name holds the new one */
			zkw_reader_close(&r);
			if (zkw_reader_open(&r, shm) != 0) {
				snprintf(v.rep.why, sizeof(v.rep.why), "cannot reopen a retired segment");
				break;
			}
			v.rep.reopened++;
		} else if (rc < 0 && rc != -EINTR) {
			snprintf(v.rep.why, sizeof(v.rep.why), "zkw_reader_wait: %s", strerror(-rc));
			break;
		}
	}
	zkw_reader_close(&r);
	_exit(write(report_fd, &v.rep, sizeof(v.rep)) == (ssize_t)sizeof(v.rep) ? 0 : 12);
}

/* The writer: bursts of multi-ops in flight together (zoo_amulti), each
 * setting all 8 children to the next state. */
struct multi_slot {
	zoo_op_t ops[CHILDREN];
	zoo_op_result_t results[CHILDREN];
	struct Stat stats[CHILDREN];
	char data[CHILDREN][160];
	char path[CHILDREN][128];
	uint32_t k;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t done;
	int in_flight;
	int failed_rc;
	uint32_t failed_k;
	struct multi_slot slots[BURST_MAX];
} writer = {.lock = PTHREAD_MUTEX_INITIALIZER, .done = PTHREAD_COND_INITIALIZER};

static void multi_done(int rc, const void *data)
{
	const struct multi_slot *slot = data;

	pthread_mutex_lock(&writer.lock);
	if (rc != ZOK && writer.failed_rc == ZOK) {
		writer.failed_rc = rc;
		writer.failed_k = slot->k;
	}
	writer.in_flight--;
	pthread_cond_broadcast(&writer.done);
	pthread_mutex_unlock(&writer.lock);
}

static void multi_send(struct multi_slot *slot, const char *parent, uint32_t k)
{
	int rc;

	slot->k = k;
	for (int i = 0; i < CHILDREN; i++) {
		int len = state_text(slot->data[i], sizeof(slot->data[i]), k, i);

		if (snprintf(slot->path[i], sizeof(slot->path[i]), "%s/c%d", parent, i) >=
		    (int)sizeof(slot->path[i]))
			fail_msg("path too long: %s", parent);
		zoo_set_op_init(&slot->ops[i], slot->path[i], slot->data[i], len, -1, &slot->stats[i]);
	}
	pthread_mutex_lock(&writer.lock);
	writer.in_flight++;
	pthread_mutex_unlock(&writer.lock);
	rc = zoo_amulti(zh, CHILDREN, slot->ops, slot->results, multi_done, slot);
	if (rc != ZOK) {
		pthread_mutex_lock(&writer.lock);
		writer.in_flight--;
		pthread_mutex_unlock(&writer.lock);
		fail_msg("zoo_amulti (k=%u): %s", k, zerror(rc));
	}
}

/* Wait until every multi-op sent has been answered; all must have
 * succeeded. */
static void multi_drain(void)
{
	struct timespec deadline;
	int rc = 0;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += WAIT_MS / 1000;
	pthread_mutex_lock(&writer.lock);
	while (writer.in_flight > 0 && rc == 0)
		rc = pthread_cond_timedwait(&writer.done, &writer.lock, &deadline);
	rc = writer.in_flight > 0 ? -1 : writer.failed_rc;
	pthread_mutex_unlock(&writer.lock);
	if (rc == -1)
		fail_msg("multi-ops unanswered after %d ms", WAIT_MS);
	if (rc != ZOK)
		fail_msg("multi-op k=%u: %s", writer.failed_k, zerror(rc));
}

/* Read what the segment publishes, into v, until it holds state k. */
static bool await_state(struct itest_seg *s, struct atom_view *v, uint32_t k, uint32_t final_k)
{
	int64_t deadline = zkw_clock_mono_ms() + WAIT_MS;

	for (;;) {
		int64_t left;

		itest_seg_read(s);
		if (s->len >= 0 && s->snap.generation != v->seen_gen)
			atom_take(v, s->buf, (size_t)s->len, &s->snap, final_k);
		if (v->rep.why[0]) {
			fprintf(stderr, "the writer's reader: %s\n", v->rep.why);
			itest_seg_describe(s);
			return false;
		}
		if (v->any && v->rep.last_k >= k)
			return true;
		left = deadline - zkw_clock_mono_ms();
		if (left <= 0 || zkw_reader_wait(&s->r, v->seen_gen, (int)left) < 0)
			break;
	}
	fprintf(stderr, "state k=%u never published (last seen k=%u)\n", k, v->rep.last_k);
	itest_seg_describe(s);
	proc_dump(s->broker, "broker output");
	return false;
}

static void print_report(const char *who, const struct atom_report *r)
{
	print_message("  %s: %llu snapshots, %llu distinct states (k %u..%u), %llu mixed, %llu regressions, "
	              "%llu malformed, %llu invalid, %llu reopened%s%s\n",
	              who, (unsigned long long)r->snapshots, (unsigned long long)r->distinct, r->first_k,
	              r->last_k, (unsigned long long)r->mixed, (unsigned long long)r->regressions,
	              (unsigned long long)r->malformed, (unsigned long long)r->invalid,
	              (unsigned long long)r->reopened, r->why[0] ? "; first problem: " : "", r->why);
}

static void test_multi_op_is_never_seen_half_applied(void **state)
{
	char parent[128], data[CHILDREN][160];
	const char *shm = itest_seg_name("atomic");
	int updates = zkh_env_int("ZKW_TEST_BUNDLE_UPDATES", UPDATES, UPDATES_MAX);
	uint32_t final_k = (uint32_t)updates, k = 0;
	unsigned seed = (unsigned)zkh_env_int("ZKW_TEST_BUNDLE_SEED", (int)(getpid() % 100000) + 1, INT_MAX);
	pid_t pids[READERS] = {0};
	int reports[READERS];
	struct atom_reader_args ra;
	struct atom_report rep[READERS];
	struct atom_view own;
	uint64_t t0, t_write, total_snapshots = 0, min_distinct = UINT64_MAX, max_distinct = 0;
	uint64_t total_mixed = 0, total_regressions = 0;
	unsigned bursts = 0, waited = 0;
	zoo_op_t ops[CHILDREN + 1];
	struct itest_seg *s;
	proc *b;

	(void)state;
	memset(&own, 0, sizeof(own));
	itest_node(parent, sizeof(parent), "atomic");
	delete_tree(parent);
	/* The parent and its 8 children at state 0, in one transaction. */
	zoo_create_op_init(&ops[0], parent, "bundle parent", 13, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
	for (int i = 0; i < CHILDREN; i++) {
		static char paths[CHILDREN][160];
		int len = state_text(data[i], sizeof(data[i]), 0, i);

		snprintf(paths[i], sizeof(paths[i]), "%s/c%d", parent, i);
		zoo_create_op_init(&ops[i + 1], paths[i], data[i], len, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
	}
	{
		char why[256];

		if (zkw_zk_create_parents(zh, parent, why, sizeof(why)) != 0)
			fail_msg("create parents of %s: %s", parent, why);
	}
	multi(CHILDREN + 1, ops);

	b = itest_broker_start("-z", hosts, "-f", parent, "--bundle", "--shm", shm, NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	assert_true(await_state(s, &own, 0, final_k));
	/* Count from the first cut on (what came before it is not the
	 * writer's). */
	memset(&own.rep, 0, sizeof(own.rep));
	own.any = false;

	/* The reader processes, each reading before the writer starts. */
	ra = (struct atom_reader_args){shm, final_k};
	itest_children_start(READERS, pids, reports, atom_reader, &ra);

	/* Bursts of 1 to 16 multi-ops in flight together: rounds of the broker
	 * see changes land while they read; after half of the bursts the
	 * writer waits until the burst's last state is published, so cuts
	 * complete at every point of the run (a writer that never pauses
	 * keeps a bundle from any cut: docs/design.md). */
	t0 = zkw_clock_mono_ns();
	while (k < final_k) {
		unsigned n = 1 + (unsigned)rand_r(&seed) % BURST_MAX;

		if (n > final_k - k)
			n = final_k - k;
		for (unsigned i = 0; i < n; i++)
			multi_send(&writer.slots[i], parent, ++k);
		multi_drain();
		bursts++;
		if ((rand_r(&seed) & 1) || k == final_k) {
			waited++;
			if (!await_state(s, &own, k, final_k)) {
				proc_kill_pids(pids, READERS);
				fail_msg("state %u: not published, or not as written", k);
			}
		}
	}
	t_write = zkw_clock_mono_ns() - t0;

	itest_children_reports(READERS, pids, reports, rep, sizeof(rep[0]), WAIT_MS + IDLE_MS);

	print_message("atomicity: %d updates (8 children per multi-op, %u bursts of 1 to %d, %u of them "
	              "awaited, seed %u) in %.1f s; readers:\n",
	              updates, bursts, BURST_MAX, waited, seed, (double)t_write / 1e9);
	for (int i = 0; i < READERS; i++) {
		char who[32];

		snprintf(who, sizeof(who), "reader process %d", i);
		print_report(who, &rep[i]);
		total_snapshots += rep[i].snapshots;
		total_mixed += rep[i].mixed;
		total_regressions += rep[i].regressions;
		if (rep[i].distinct < min_distinct)
			min_distinct = rep[i].distinct;
		if (rep[i].distinct > max_distinct)
			max_distinct = rep[i].distinct;
	}
	print_report("the writer's reader", &own.rep);
	print_message("atomicity: %d updates, %d reader processes saw %llu snapshots, %llu..%llu distinct "
	              "states each, %llu mixed, %llu regressions\n",
	              updates, READERS, (unsigned long long)total_snapshots, (unsigned long long)min_distinct,
	              (unsigned long long)max_distinct, (unsigned long long)total_mixed,
	              (unsigned long long)total_regressions);

	for (int i = 0; i <= READERS; i++) {
		const struct atom_report *r = i < READERS ? &rep[i] : &own.rep;

		if (r->mixed || r->regressions || r->malformed || r->not_bundle || r->invalid ||
		    !r->finished || r->last_k != final_k) {
			proc_dump(b, "broker output");
			fail_msg("%s %d: %llu mixed, %llu regressions, %llu malformed, %llu not a bundle, "
			         "%llu invalid, "
			         "last k=%u of %u: %s",
			         i < READERS ? "reader process" : "the writer's reader", i,
			         (unsigned long long)r->mixed, (unsigned long long)r->regressions,
			         (unsigned long long)r->malformed, (unsigned long long)r->not_bundle,
			         (unsigned long long)r->invalid, r->last_k, final_k, r->why);
		}
		assert_true(r->distinct >= 2);
	}
	itest_seg_close(s);
	itest_broker_stop(b);
	delete_tree(parent);
}

/* ---- 2. children come and go; the parent too ------------------------------- */

static void test_children_added_removed_and_parent_lifecycle(void **state)
{
	char parent[128], pa[160], pb[160], pc[160], pd[160], pe[160], px[160], text[1024];
	const char *shm = itest_seg_name("members");
	zkw_bundle_entry a0, c0, a1, c1, d1;
	zkw_bundle bh;
	uint64_t gen;
	zoo_op_t ops[3];
	struct Stat st;
	struct itest_seg *s;
	proc *b;

	(void)state;
	itest_node(parent, sizeof(parent), "members");
	delete_tree(parent);
	snprintf(pa, sizeof(pa), "%s/a", parent);
	snprintf(pb, sizeof(pb), "%s/b", parent);
	snprintf(pc, sizeof(pc), "%s/c", parent);
	snprintf(pd, sizeof(pd), "%s/d", parent);
	snprintf(pe, sizeof(pe), "%s/e", parent);
	snprintf(px, sizeof(px), "%s/x", parent);
	put(parent, "the parent's own data is not published");
	put(pa, "A");
	put(pb, "B");
	put(pc, "C");
	b = itest_broker_start("-z", hosts, "-f", parent, "--bundle", "--shm", shm, NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "a, b, c", .valid = YES, .bundle = "a=A,b=B,c=C");
	gen = s->snap.generation;
	a0 = entry_of(s, "a");
	c0 = entry_of(s, "c");
	st = stat_of(parent);
	assert_int_equal(zkw_bundle_open(&bh, s->buf, (size_t)s->len), 0);
	assert_int_equal(bh.cversion, st.cversion);
	assert_int_equal(bh.pzxid, st.pzxid);
	assert_int_equal(s->snap.version, st.cversion);

	/* Two added and one removed in one transaction: every snapshot after
	 * it is the old set or the new one, never a part of the change. */
	zoo_create_op_init(&ops[0], pd, "D", 1, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
	zoo_create_op_init(&ops[1], pe, "E", 1, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
	zoo_delete_op_init(&ops[2], pb, -1);
	multi(3, ops);
	for (;;) {
		assert_int_equal(zkw_reader_wait(&s->r, gen, WAIT_MS), 1);
		itest_seg_read(s);
		gen = s->snap.generation;
		assert_true(s->snap.bundle);
		assert_int_equal(itest_bundle_text(s->buf, (size_t)s->len, text, sizeof(text)), 0);
		if (strcmp(text, "a=A,c=C,d=D,e=E") == 0)
			break;
		if (strcmp(text, "a=A,b=B,c=C") != 0) {
			itest_seg_describe(s);
			fail_msg("a snapshot between the old set and the new one: %s", text);
		}
	}
	assert_true(s->snap.valid);
	st = stat_of(parent);
	assert_int_equal(zkw_bundle_open(&bh, s->buf, (size_t)s->len), 0);
	assert_int_equal(bh.count, 4);
	assert_int_equal(bh.cversion, st.cversion);
	assert_int_equal(bh.pzxid, st.pzxid);
	assert_int_equal(s->snap.version, st.cversion);
	assert_int_equal(s->snap.mzxid, st.pzxid); /* the newest change in the cut: the multi-op */
	a1 = entry_of(s, "a");
	c1 = entry_of(s, "c");
	d1 = entry_of(s, "d");
	assert_int_equal(a1.mzxid, a0.mzxid);
	assert_int_equal(c1.mzxid, c0.mzxid);
	assert_int_equal(d1.mzxid, st.pzxid);
	assert_int_equal(d1.version, 0);

	/* One child changed alone: only its entry moves. */
	put(pc, "C, changed");
	WAIT_FOR(s, "c changed", .valid = YES, .bundle = "a=A,c=C, changed,d=D,e=E", .after_gen = gen);
	assert_int_equal(entry_of(s, "a").mzxid, a0.mzxid);
	assert_int_equal(entry_of(s, "d").mzxid, d1.mzxid);
	assert_int_equal(entry_of(s, "c").version, c0.version + 1);
	assert_true(entry_of(s, "c").mzxid > d1.mzxid);
	assert_int_equal(s->snap.mzxid, entry_of(s, "c").mzxid);
	assert_int_equal(s->snap.version, st.cversion); /* no child came or went */
	gen = s->snap.generation;

	/* The parent deleted (with its children, in one transaction): invalid
	 * as a missing node, the last bundle kept. */
	{
		zoo_op_t del[5];

		zoo_delete_op_init(&del[0], pa, -1);
		zoo_delete_op_init(&del[1], pc, -1);
		zoo_delete_op_init(&del[2], pd, -1);
		zoo_delete_op_init(&del[3], pe, -1);
		zoo_delete_op_init(&del[4], parent, -1);
		multi(5, del);
	}
	WAIT_FOR(s, "parent deleted: invalid", .valid = NO, .error = ZKW_ERR_NO_NODE,
	         .bundle = "a=A,c=C, changed,d=D,e=E", .after_gen = gen);
	gen = s->snap.generation;

	/* Recreated empty: a valid, empty bundle (a header alone). */
	put(parent, "back");
	WAIT_FOR(s, "parent recreated, no children", .valid = YES, .bundle = "", .after_gen = gen);
	assert_int_equal(s->len, ZKW_BUNDLE_HEADER_SIZE);
	assert_int_equal(zkw_bundle_open(&bh, s->buf, (size_t)s->len), 0);
	assert_int_equal(bh.count, 0);
	assert_string_equal(s->snap.error, "");
	gen = s->snap.generation;

	/* A child created: noticed. */
	put(px, "X");
	WAIT_FOR(s, "x", .valid = YES, .bundle = "x=X", .after_gen = gen);
	assert_int_equal(entry_of(s, "x").version, 0);

	/* And removed: the empty bundle again. */
	gen = s->snap.generation;
	delete_tree(px);
	WAIT_FOR(s, "x removed", .valid = YES, .bundle = "", .after_gen = gen);
	assert_int_equal(s->len, ZKW_BUNDLE_HEADER_SIZE);

	itest_seg_close(s);
	itest_broker_stop(b);
	delete_tree(parent);
}

/* A broker started on a parent that has no children, and one on a
 * missing parent. */
static void test_empty_and_missing_parent_at_start(void **state)
{
	char empty[128], missing[128];
	const char *s1 = itest_seg_name("empty"), *s2 = itest_seg_name("missing");
	struct itest_seg *a, *m;
	proc *b;

	(void)state;
	itest_node(empty, sizeof(empty), "empty");
	itest_node(missing, sizeof(missing), "missing");
	delete_tree(empty);
	delete_tree(missing);
	put(empty, "");
	b = itest_broker_start("-z", hosts, "-f", empty, "--bundle", "--shm", s1, "-f", missing, "--bundle",
	                       "--shm", s2, NULL);
	itest_broker_wait_segment(b, s1);
	itest_broker_wait_segment(b, s2);
	a = itest_seg_open(s1, b);
	m = itest_seg_open(s2, b);
	WAIT_FOR(a, "an empty bundle", .valid = YES, .bundle = "");
	assert_int_equal(a->len, ZKW_BUNDLE_HEADER_SIZE);
	WAIT_FOR(m, "a missing parent: invalid", .valid = NO, .error = ZKW_ERR_NO_NODE);
	{
		char child[160];

		snprintf(child, sizeof(child), "%s/one", missing);
		put(child, "1"); /* the parent comes with it */
		WAIT_FOR(m, "created with a child", .valid = YES, .bundle = "one=1");
	}
	itest_seg_close(a);
	itest_seg_close(m);
	itest_broker_stop(b);
	delete_tree(empty);
	delete_tree(missing);
}

/* ---- 3. through the control socket ----------------------------------------------- */

static char sock[PATH_MAX];

static void test_bundle_through_the_socket(void **state)
{
	char parent[128], k1[160], k2[160], line[512], req[300], *a, *at;
	zkw_reader refused;
	struct itest_seg *bs, *ps;
	proc *b;

	(void)state;
	snprintf(sock, sizeof(sock), "%s/bw%d.sock", rundir, (int)getpid());
	assert_true(strlen(sock) < sizeof(((struct sockaddr_un *)0)->sun_path));
	unlink(sock);
	itest_node(parent, sizeof(parent), "sock");
	delete_tree(parent);
	snprintf(k1, sizeof(k1), "%s/k1", parent);
	snprintf(k2, sizeof(k2), "%s/k2", parent);
	put(parent, "parent data");
	put(k1, "v1");
	put(k2, "v2");
	b = itest_broker_start("-z", hosts, "--socket", sock, "--socket-mode", "0600", "--linger", "600",
	                       NULL);
	if (!proc_wait_output(b, PROC_STDERR, "listening", WAIT_MS))
		fail_msg("the broker did not listen on %s", sock);

	bs = itest_seg_subscribe(sock, parent, ZKW_SUBSCRIBE_BUNDLE, b);
	WAIT_FOR(bs, "the bundle k1, k2", .valid = YES, .bundle = "k1=v1,k2=v2");
	/* The same path without bundle: another watch, the node's own data. */
	ps = itest_seg_subscribe(sock, parent, 0, b);
	itest_seg_read(ps);
	assert_true(ps->len >= 0);
	assert_false(ps->snap.bundle);
	assert_true(ps->snap.valid);
	assert_int_equal(ps->len, strlen("parent data"));
	assert_memory_equal(ps->buf, "parent data", strlen("parent data"));

	put(k2, "v2, changed");
	WAIT_FOR(bs, "k2 changed", .valid = YES, .bundle = "k1=v1,k2=v2, changed");

	a = itest_ask_at(sock, "LIST\n", 3);
	itest_assert_contains(a, "OK count=2");
	/* Each line: the segment name, then key=value words; remember the
	 * names for the teardown. */
	for (at = strchr(a, '\n'); at && at[1]; at = strchr(at + 1, '\n')) {
		char name[ZKW_SHM_NAME_MAX + 1];

		snprintf(name, sizeof(name), "%.*s", (int)strcspn(at + 1, " \n"), at + 1);
		itest_seg_remember(name);
	}
	snprintf(line, sizeof(line), "path=%s pointer=0 origin=demand subscribers=1 valid=1", parent);
	itest_assert_contains(a, line);
	itest_assert_contains(a, "@bundle path=");
	at = strstr(a, "@bundle path=");
	at = at ? strchr(at, '\n') : NULL;
	if (!at || at - a < 9 || memcmp(at - 9, " bundle=1", 9) != 0)
		fail_msg("the bundle watch's LIST line does not end in bundle=1:\n%s", a);
	itest_assert_contains(a, " bundle=0\n");
	free(a);

	/* Pointer and bundle do not go together: the broker says so, and the
	 * client does not even ask. */
	snprintf(req, sizeof(req), "SUBSCRIBE %s pointer bundle\n", parent);
	a = itest_ask_at(sock, req, 1);
	itest_assert_contains(a, "ERR usage pointer and bundle do not go together");
	free(a);
	assert_int_equal(
	        zkw_reader_subscribe(&refused, sock, parent, ZKW_SUBSCRIBE_POINTER | ZKW_SUBSCRIBE_BUNDLE),
	        -EINVAL);
	zkw_reader_close(&refused);

	itest_seg_close(bs);
	itest_seg_close(ps);
	itest_broker_stop(b);
	unlink(sock);
	delete_tree(parent);
}

/* ---- 4. a cold start ------------------------------------------------------------------- */

static void test_cold_start_of_a_bundle(void **state)
{
	char parent[128], dir[PATH_MAX], p1[160], p2[160];
	const char *shm = itest_seg_name("cold");
	zkw_snapshot before;
	uint64_t last_gen;
	int64_t beta_mzxid;
	struct itest_seg *s;
	proc *b;

	(void)state;
	itest_node(parent, sizeof(parent), "cold");
	delete_tree(parent);
	snprintf(p1, sizeof(p1), "%s/alpha", parent);
	snprintf(p2, sizeof(p2), "%s/beta", parent);
	snprintf(dir, sizeof(dir), "%s/state.%d", rundir, (int)getpid());
	put(p1, "one");
	put(p2, "two");
	b = itest_broker_start("-z", hosts, "-f", parent, "--bundle", "--shm", shm, "--state-dir", dir,
	                       "--init-timeout", "500", NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "alpha, beta", .valid = YES, .bundle = "alpha=one,beta=two");
	put(p2, "two, v2");
	WAIT_FOR(s, "beta v2", .valid = YES, .bundle = "alpha=one,beta=two, v2");
	before = s->snap;
	beta_mzxid = entry_of(s, "beta").mzxid;
	itest_broker_stop(b);
	itest_seg_read(s);
	last_gen = s->snap.generation;
	itest_seg_close(s);

	/* The reboot: /dev/shm wiped, ZooKeeper down. */
	assert_int_equal(zkw_writer_remove(shm), 0);
	assert_int_equal(zkh_member_stop(zk, 0), 0);
	b = itest_broker_start("-z", hosts, "-f", parent, "--bundle", "--shm", shm, "--state-dir", dir,
	                       "--init-timeout", "500", NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "the cached bundle", .cached = YES, .valid = NO, .bundle = "alpha=one,beta=two, v2");
	assert_true(s->snap.bundle);
	assert_false(s->snap.connected);
	if (!strstr(s->snap.error, "cached copy from ")) {
		itest_seg_describe(s);
		fail_msg("the cached bundle is not marked as such");
	}
	assert_true(s->snap.generation > last_gen);
	assert_int_equal(s->snap.content_gen, before.content_gen);
	assert_int_equal(s->snap.version, before.version);
	assert_int_equal(s->snap.mzxid, before.mzxid);
	assert_int_equal(s->len, before.len);
	assert_int_equal(entry_of(s, "beta").mzxid, beta_mzxid);

	/* ZooKeeper back: the live bundle, the same content. */
	assert_int_equal(zkh_member_start(zk, 0), 0);
	writer_reconnect();
	WAIT_FOR(s, "live again", .valid = YES, .cached = NO, .bundle = "alpha=one,beta=two, v2");
	assert_true(s->snap.bundle);
	assert_int_equal(s->snap.content_gen, before.content_gen);
	itest_seg_close(s);
	itest_broker_stop(b);
	delete_tree(parent);
}

/* ---- 5. a reconcile with nothing changed ------------------------------------------------ */

struct confirm_wait {
	const zkw_reader *r;
	uint64_t after;
};

static bool confirmed_after(void *arg)
{
	const struct confirm_wait *c = arg;

	return zkw_reader_confirmed_ns(c->r) > c->after;
}

static void test_reconcile_confirms_without_a_generation(void **state)
{
	char parent[128], child[160];
	const char *shm = itest_seg_name("quiet");
	struct confirm_wait cw;
	uint64_t gen, content_gen;
	struct itest_seg *s;
	proc *b;

	(void)state;
	itest_node(parent, sizeof(parent), "quiet");
	delete_tree(parent);
	snprintf(child, sizeof(child), "%s/only", parent);
	put(child, "still");
	b = itest_broker_start("-z", hosts, "-f", parent, "--bundle", "--shm", shm, "--reconcile", "1", NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "only=still", .valid = YES, .bundle = "only=still");
	gen = s->snap.generation;
	content_gen = s->snap.content_gen;
	cw = (struct confirm_wait){&s->r, zkw_reader_confirmed_ns(&s->r)};
	assert_true(cw.after > 0);
	/* Two reconciles (each about 1 s, jittered), so that the first is not
	 * one that was already under way when the bundle was published. */
	for (int i = 0; i < 2; i++) {
		if (!zkh_eventually(confirmed_after, &cw, 10000)) {
			proc_dump(b, "broker output");
			fail_msg("confirmed-at never moved in 10 s with --reconcile 1");
		}
		cw.after = zkw_reader_confirmed_ns(&s->r);
	}
	assert_int_equal(zkw_reader_generation(&s->r), gen);
	itest_seg_read(s);
	assert_int_equal(s->snap.generation, gen);
	assert_int_equal(s->snap.content_gen, content_gen);
	assert_true(s->snap.confirmed_ns >= cw.after);

	/* A change still makes a generation. */
	put(child, "moved");
	WAIT_FOR(s, "only=moved", .valid = YES, .bundle = "only=moved", .after_gen = gen);
	itest_seg_close(s);
	itest_broker_stop(b);
	delete_tree(parent);
}

/* ---- fixtures ---------------------------------------------------------------------------- */

static int group_setup(void **state)
{
	(void)state;
	zk = itest_zk_start(
	        &(struct itest_config){.prefix = "zkwtbw", .wait_ms = WAIT_MS, .read_cap = CONTENT_CAP});
	if (!zk || !itest_dir_make(rundir, sizeof(rundir)))
		return -1;
	hosts = zkh_hosts(zk);
	return writer_reconnect_quiet();
}

static int group_teardown(void **state)
{
	(void)state;
	itest_test_cleanup();
	zkw_zk_close(zh);
	itest_zk_stop();
	if (rundir[0] && !getenv("ZKW_TEST_KEEP"))
		itest_tree_remove(rundir, false);
	return 0;
}

static int test_teardown(void **state)
{
	(void)state;
	itest_test_cleanup();
	if (sock[0])
		unlink(sock);
	/* ZooKeeper stopped by a test comes back; the writer's session
	 * reconnects by itself. */
	if (itest_zk_up() > 0)
		writer_reconnect_quiet();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_teardown(test_multi_op_is_never_seen_half_applied, test_teardown),
	        cmocka_unit_test_teardown(test_children_added_removed_and_parent_lifecycle, test_teardown),
	        cmocka_unit_test_teardown(test_empty_and_missing_parent_at_start, test_teardown),
	        cmocka_unit_test_teardown(test_bundle_through_the_socket, test_teardown),
	        cmocka_unit_test_teardown(test_cold_start_of_a_bundle, test_teardown),
	        cmocka_unit_test_teardown(test_reconcile_confirms_without_a_generation, test_teardown),
	};

	if (getenv("ZKW_TEST_ONLY")) /* e.g. ZKW_TEST_ONLY='test_cold_*' */
		cmocka_set_test_filter(getenv("ZKW_TEST_ONLY"));
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
