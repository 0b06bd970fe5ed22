/* SPDX-License-Identifier: Apache-2.0 */
/* bench_bundle.c - issue 15's rows: a bundle of 100 children and a 20 MiB
 * chunked configuration, ZooKeeper write -> every reader holds it, each
 * next to a bare ZooKeeper client doing the same reads.
 *
 *  1. Bundle: a zkw-broker --bundle on a node of 100 children of 200 bytes.
 *     A change is one zoo_multi setting every child to a new state number k
 *     (bench_config's "seq=k" header); timed, as bench_latency times "a
 *     ZooKeeper write", from the zoo_multi call until the last of N reader
 *     processes (N = 1, 16) blocked in zkw_reader_wait has read the segment,
 *     opened the bundle (zkw_bundle_open) and checked that all 100 entries,
 *     in name order, carry k. Floor: a bare C client (its own process, no
 *     broker) with a data watch on the first child of a twin node that, on
 *     the event, gets all 100 children pipelined (zoo_aget; the first child
 *     with zoo_awget, which re-arms the watch) and checks each one's k: the
 *     same multi on the twin -> that client holding all 100. The broker's
 *     round is that plus a listing before the gets, a confirmation after
 *     them, the encoding, the publish and the wake. Samples interleaved,
 *     the order alternated; the broker's ZooKeeper reads per change come
 *     from its counters (/dev/shm/zkw-stats.PID).
 *  2. Chunked: a zkw-broker --capacity 64m on a node holding a manifest
 *     (docs/design.md, "Chunked content"): 20 MiB in 21 chunks of 1040384
 *     bytes, written as zkw-push does (a new directory <node>/zkw-chunks/<id>
 *     and its chunks, 8 creates in flight), untimed; then the manifest
 *     switch (zoo_set), timed from that call until the last of N readers
 *     (N = 1, 4) holds the new content (its length, and the state number at
 *     its start and at its end, checked before the stamp; its XXH3 checked
 *     against the writer's after the stamp, on every read). Floor: a bare
 *     client with a data watch on a twin manifest that, on the event, gets
 *     the manifest, then every chunk pipelined into one buffer, then hashes
 *     it (as the broker does before it publishes): the same switch -> the
 *     content whole and hash-checked in that client's memory. Between
 *     samples the old chunk directory is deleted and the chunks are pushed
 *     out of the server's two caches (chunked_retire), so the test server
 *     (-Xmx512m) holds a few versions only.
 *
 * Without -z a loopback ZooKeeper is started here (tests/support/zkh.h).
 *
 *     bench_bundle --broker build/zkw-broker [-z 127.0.0.1:2181] [--quick]
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <xxhash.h>

#include "bench.h"
#include "zkw_stats.h"

#define MAX_READERS        64
#define BUNDLE_CHILDREN    100
#define CHILD_LEN          200
#define BUNDLE_BUF         (256u * 1024u)
#define CHUNKED_SIZE       (20u * 1024u * 1024u)
#define CHUNK_SIZE         1040384u /* zkw-push's default: 1 MiB - 8 KiB */
#define CHUNK_COUNT        ((CHUNKED_SIZE + CHUNK_SIZE - 1) / CHUNK_SIZE)
#define CHUNK_WINDOW       8  /* creates in flight, as zkw-push */
#define TAG_LEN            25 /* "seq=" + 20 digits + "\n" (bench_config) */
#define PAD_WRITES         200
#define FLUSH_READS        400 /* ZooKeeper's response cache: zookeeper.maxResponseCacheSize */
#define BUNDLE_TIMEOUT_MS  5000
#define CHUNKED_TIMEOUT_MS 30000
#define GAP_NS             2000000u /* quiet time between samples */
#define BUNDLE_WARM        20       /* unrecorded changes of each kind before the first run */
#define CHUNKED_WARM       2

struct shared {
	bench_rendezvous rv;
	uint8_t pad0_[64 - sizeof(bench_rendezvous)];
	uint64_t expect_hash;   /* XXH3 of the chunked content with seq rv.expect */
	uint64_t bundles_read;  /* bundles the readers checked */
	uint64_t bundles_mixed; /* ... whose entries carried different states */
	uint64_t bundles_shape; /* ... that were no bundle of our 100 children */
	uint64_t chunked_read;  /* chunked contents the readers took */
	uint64_t chunked_bad;   /* ... of the wrong length or with torn tags */
	uint64_t hash_checked;  /* XXH3 checks by the readers */
	uint64_t hash_bad;      /* ... that failed */
	uint64_t read_errors;   /* zkw_reader_read failures (retried) */
	uint64_t reopens;       /* retired segments reopened */
	uint64_t bfloor_bad;    /* bundle floor rounds that did not hold one state */
	uint64_t cfloor_bad;    /* chunked floor rounds that failed (a chunk, the hash) */
	struct bench_stamp reader[MAX_READERS];
	struct bench_stamp floor;
};

struct series {
	double *v;
	size_t count;
	bench_stats st;
};

/* One reader count's results. */
struct config_result {
	int n;
	struct series zkw, floor, reads, events;
	struct series zkw_write, floor_write; /* the write's own round trip */
};

static struct shared *sh;
static const char *opt_hosts, *opt_broker;
static int opt_samples = 200, opt_chunked_samples = 20;
static bool run_bundle_rows = true, run_chunked_rows = true; /* --only */
static char base_path[128], bundle_path[160], bundle_floor_path[160], big_path[160], big_floor_path[160],
        pad_path[160], flush_path[160], shm_mark[64], bundle_shm[96], big_shm[96], log_path[256];
static char child_name[BUNDLE_CHILDREN][8];
static uint64_t seq_counter = 1000;

/* ---- readers ---------------------------------------------------------------- */

/* The next generation of the segment shm, into buf: its length, or -errno
 * (a failed read is counted and tried again at once by the next call). A
 * retired segment (the broker grew it by replacement) is reopened. */
static ssize_t reader_next(zkw_reader *r, const char *shm, uint64_t *seen, zkw_snapshot *meta, void *buf,
                           size_t cap)
{
	for (;;) {
		int rc = zkw_reader_wait(r, *seen, 1000);
		ssize_t n;

		if (proc_parent_gone())
			_exit(0);
		if (rc == -ESTALE) {
			zkw_reader_close(r);
			bench_reader_open(r, shm);
			__atomic_add_fetch(&sh->reopens, 1, __ATOMIC_RELAXED);
			*seen = 0;
			continue;
		}
		if (rc <= 0)
			continue;
		n = zkw_reader_read(r, meta, buf, cap);
		if (n == -ENOBUFS) {
			fprintf(stderr, "bench_bundle: reader: %zu bytes of content, more than %zu\n",
			        meta->len, cap);
			_exit(1);
		}
		if (n >= 0)
			*seen = meta->generation;
		else
			__atomic_add_fetch(&sh->read_errors, 1, __ATOMIC_RELAXED);
		return n;
	}
}

static void stamp_and_arrive(struct bench_stamp *s, uint64_t seq, uint64_t t)
{
	s->ns = t;
	__atomic_store_n(&s->seq, seq, __ATOMIC_RELEASE);
	if (seq == __atomic_load_n(&sh->rv.expect, __ATOMIC_ACQUIRE))
		bench_rendezvous_arrive(&sh->rv);
}

#define BUNDLE_MIXED UINT64_MAX

/* The state every entry of a bundle carries; 0 when the content is no
 * bundle of our 100 children (count, names in order, a state in each);
 * BUNDLE_MIXED when the entries carry different states. */
static uint64_t bundle_state(const void *content, size_t len)
{
	zkw_bundle b;
	zkw_bundle_entry e;
	uint64_t k = 0;

	if (zkw_bundle_open(&b, content, len) != 0 || b.count != BUNDLE_CHILDREN)
		return 0;
	for (uint32_t i = 0; i < b.count; i++) {
		uint64_t s;

		if (zkw_bundle_entry_at(&b, i, &e) != 0 || e.name_len != strlen(child_name[i]) ||
		    memcmp(e.name, child_name[i], e.name_len) != 0)
			return 0;
		s = bench_config_seq(e.data, (ssize_t)e.len);
		if (!s)
			return 0;
		if (i == 0)
			k = s;
		else if (s != k)
			return BUNDLE_MIXED;
	}
	return k;
}

/* A bundle reader: wait, read, open the bundle, check every entry, stamp. */
static void bundle_reader_main(int idx)
{
	static unsigned char buf[BUNDLE_BUF];
	zkw_reader r;
	zkw_snapshot meta;
	uint64_t seen, last = 0;

	bench_reader_open(&r, bundle_shm);
	seen = 0; /* read what is there at once */
	for (;;) {
		ssize_t n = reader_next(&r, bundle_shm, &seen, &meta, buf, sizeof(buf));
		uint64_t seq, t;

		if (n < 0)
			continue;
		seq = bundle_state(buf, (size_t)n);
		t = zkw_clock_mono_ns();
		__atomic_add_fetch(&sh->bundles_read, 1, __ATOMIC_RELAXED);
		if (seq == BUNDLE_MIXED)
			__atomic_add_fetch(&sh->bundles_mixed, 1, __ATOMIC_RELAXED);
		else if (!seq)
			__atomic_add_fetch(&sh->bundles_shape, 1, __ATOMIC_RELAXED);
		if (seq == BUNDLE_MIXED || !seq || seq == last)
			continue;
		last = seq;
		stamp_and_arrive(&sh->reader[idx], seq, t);
	}
}

/* A chunked reader: wait, read the 20 MiB, check its length and the state
 * at both ends, stamp and arrive; then its XXH3 against the writer's,
 * which the bench waits for before its next change (on 2 cores, a reader
 * hashing would delay the stamps of those still copying). */
static void chunked_reader_main(int idx)
{
	uint8_t *buf = malloc(CHUNKED_SIZE + 4096);
	zkw_reader r;
	zkw_snapshot meta;
	uint64_t seen = 0, last = 0, want;
	bool expected;

	if (!buf)
		_exit(1);
	memset(buf, 0, CHUNKED_SIZE + 4096); /* faulted in before the first sample */
	bench_reader_open(&r, big_shm);
	for (;;) {
		ssize_t n = reader_next(&r, big_shm, &seen, &meta, buf, CHUNKED_SIZE + 4096);
		uint64_t seq, t;

		if (n < 0)
			continue;
		seq = n == (ssize_t)CHUNKED_SIZE ? bench_config_seq(buf, n) : 0;
		if (seq && bench_config_seq(buf + n - TAG_LEN, TAG_LEN) != seq)
			seq = 0;
		t = zkw_clock_mono_ns();
		__atomic_add_fetch(&sh->chunked_read, 1, __ATOMIC_RELAXED);
		if (!seq)
			__atomic_add_fetch(&sh->chunked_bad, 1, __ATOMIC_RELAXED);
		if (!seq || seq == last)
			continue;
		last = seq;
		/* The acquire load of expect pairs with the release store of
		 * bench_rendezvous_reset, made after expect_hash. */
		expected = seq == __atomic_load_n(&sh->rv.expect, __ATOMIC_ACQUIRE);
		want = __atomic_load_n(&sh->expect_hash, __ATOMIC_RELAXED);
		stamp_and_arrive(&sh->reader[idx], seq, t);
		if (!expected)
			continue; /* an older content, met at start-up */
		if (XXH3_64bits(buf, (size_t)n) != want)
			__atomic_add_fetch(&sh->hash_bad, 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&sh->hash_checked, 1, __ATOMIC_RELEASE);
	}
}

/* ---- the floors: bare ZooKeeper C clients ----------------------------------- */

/* Everything below runs on the client's completion thread (watchers and
 * completions alike), but for the first round, issued before any answer. */
static zhandle_t *floor_zh;

static zhandle_t *floor_connect(void)
{
	char why[256];
	zhandle_t *zh;

	if (zkw_zk_connect(&zh, opt_hosts, 20000, 10000, why, sizeof(why))) {
		fprintf(stderr, "bench_bundle: floor client: %s\n", why);
		_exit(1);
	}
	return zh;
}

static void floor_idle(void)
{
	while (!proc_parent_gone())
		zkw_clock_sleep_ns(200000000);
	_exit(0);
}

/* Bundle floor: a data watch on the first child; on its event, a get of
 * every child, pipelined. */
static struct {
	char path[BUNDLE_CHILDREN][192];
	int pending, answers;
	bool again, mixed;
	uint64_t k, last;
} bfl;

static void bfloor_round(void);

static void bfloor_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
	(void)zh, (void)state, (void)path, (void)ctx;
	if (type != ZOO_CHANGED_EVENT)
		return;
	if (bfl.pending)
		bfl.again = true;
	else
		bfloor_round();
}

static void bfloor_done(int rc, const char *value, int len, const struct Stat *stat, const void *ctx)
{
	uint64_t s = rc == ZOK ? bench_config_seq(value, len) : 0;
	uint64_t t;

	(void)stat, (void)ctx;
	if (bfl.answers++ == 0)
		bfl.k = s;
	else if (s != bfl.k)
		bfl.mixed = true;
	if (--bfl.pending)
		return;
	t = zkw_clock_mono_ns();
	if (bfl.mixed || !bfl.k)
		__atomic_add_fetch(&sh->bfloor_bad, 1, __ATOMIC_RELAXED);
	else if (bfl.k != bfl.last)
		bfl.last = bfl.k, stamp_and_arrive(&sh->floor, bfl.k, t);
	if (bfl.again) {
		bfl.again = false;
		bfloor_round();
	}
}

static void bfloor_round(void)
{
	bfl.pending = BUNDLE_CHILDREN;
	bfl.answers = 0;
	bfl.mixed = false;
	for (int i = 0; i < BUNDLE_CHILDREN; i++) {
		int rc = i == 0 ? zoo_awget(floor_zh, bfl.path[i], bfloor_watcher, NULL, bfloor_done, NULL)
		                : zoo_aget(floor_zh, bfl.path[i], 0, bfloor_done, NULL);

		if (rc != ZOK) {
			fprintf(stderr, "bench_bundle: bundle floor: get %s: %s\n", bfl.path[i], zerror(rc));
			_exit(1);
		}
	}
}

static void bundle_floor_main(void)
{
	for (int i = 0; i < BUNDLE_CHILDREN; i++)
		snprintf(bfl.path[i], sizeof(bfl.path[i]), "%s/c%03d", bundle_floor_path, i);
	floor_zh = floor_connect();
	bfloor_round();
	floor_idle();
}

/* Chunked floor: a data watch on the manifest; on its event, the manifest,
 * then every chunk pipelined into one buffer, then the hash. */
static struct {
	uint8_t *buf;
	uint64_t size, hash, last;
	uint32_t count, chunk_size, pending;
	bool busy, again, bad;
	char dir[192];
} cfl;

static void cfloor_start(void);

static void cfloor_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
	(void)zh, (void)state, (void)path, (void)ctx;
	if (type != ZOO_CHANGED_EVENT)
		return;
	if (cfl.busy)
		cfl.again = true;
	else
		cfloor_start();
}

static void cfloor_finish(void)
{
	uint64_t t, seq;

	cfl.busy = false;
	if (!cfl.bad && XXH3_64bits(cfl.buf, (size_t)cfl.size) == cfl.hash && cfl.size == CHUNKED_SIZE &&
	    (seq = bench_config_seq(cfl.buf, (ssize_t)cfl.size)) != 0) {
		t = zkw_clock_mono_ns();
		if (seq != cfl.last)
			cfl.last = seq, stamp_and_arrive(&sh->floor, seq, t);
	} else {
		__atomic_add_fetch(&sh->cfloor_bad, 1, __ATOMIC_RELAXED);
	}
	if (cfl.again) {
		cfl.again = false;
		cfloor_start();
	}
}

static void cfloor_chunk_done(int rc, const char *value, int len, const struct Stat *stat, const void *ctx)
{
	uint32_t i = (uint32_t)(uintptr_t)ctx;
	uint64_t want =
	        i + 1 < cfl.count ? cfl.chunk_size : cfl.size - (uint64_t)cfl.chunk_size * (cfl.count - 1);

	(void)stat;
	if (rc != ZOK || len < 0 || (uint64_t)len != want)
		cfl.bad = true;
	else
		memcpy(cfl.buf + (uint64_t)i * cfl.chunk_size, value, (size_t)len);
	if (--cfl.pending == 0)
		cfloor_finish();
}

static void cfloor_manifest_done(int rc, const char *value, int len, const struct Stat *stat, const void *ctx)
{
	char text[1024], path[256];

	(void)stat, (void)ctx;
	cfl.bad = rc != ZOK || len <= 0 || len >= (int)sizeof(text);
	if (!cfl.bad) {
		memcpy(text, value, (size_t)len);
		text[len] = '\0';
		cfl.bad = sscanf(text,
		                 "zkw-chunked 1\nsize %" SCNu64 "\nchunks %" SCNu32 "\nchunk-size %" SCNu32
		                 "\nxxh3 %16" SCNx64 "\ndir %191s",
		                 &cfl.size, &cfl.count, &cfl.chunk_size, &cfl.hash, cfl.dir) != 5 ||
		          cfl.size > CHUNKED_SIZE || !cfl.count || !cfl.chunk_size ||
		          cfl.count != (cfl.size + cfl.chunk_size - 1) / cfl.chunk_size;
	}
	if (cfl.bad) {
		cfl.pending = 0;
		cfloor_finish();
		return;
	}
	cfl.pending = cfl.count;
	for (uint32_t i = 0; i < cfl.count; i++) {
		snprintf(path, sizeof(path), "%s/%08" PRIu32, cfl.dir, i);
		rc = zoo_aget(floor_zh, path, 0, cfloor_chunk_done, (const void *)(uintptr_t)i);
		if (rc != ZOK) {
			fprintf(stderr, "bench_bundle: chunked floor: get %s: %s\n", path, zerror(rc));
			_exit(1);
		}
	}
}

static void cfloor_start(void)
{
	int rc;

	cfl.busy = true;
	rc = zoo_awget(floor_zh, big_floor_path, cfloor_watcher, NULL, cfloor_manifest_done, NULL);
	if (rc != ZOK) {
		fprintf(stderr, "bench_bundle: chunked floor: get %s: %s\n", big_floor_path, zerror(rc));
		_exit(1);
	}
}

static void chunked_floor_main(void)
{
	cfl.buf = malloc(CHUNKED_SIZE);
	if (!cfl.buf)
		_exit(1);
	memset(cfl.buf, 0, CHUNKED_SIZE); /* faulted in: a floor reuses its buffer */
	floor_zh = floor_connect();
	cfloor_start();
	floor_idle();
}

/* ---- the writer: changes of a bundle and of a chunked configuration ---------- */

static char child_data[BUNDLE_CHILDREN][CHILD_LEN + 32];
static char child_path[BUNDLE_CHILDREN][192];
static zoo_op_t bundle_ops[BUNDLE_CHILDREN];
static zoo_op_result_t bundle_results[BUNDLE_CHILDREN];
static struct Stat bundle_stats[BUNDLE_CHILDREN];

/* The multi-op that sets every child of parent to state seq. */
static void bundle_prepare(const char *parent, uint64_t seq)
{
	for (int i = 0; i < BUNDLE_CHILDREN; i++) {
		int len = bench_config(child_data[i], sizeof(child_data[i]), seq, CHILD_LEN);

		snprintf(child_path[i], sizeof(child_path[i]), "%s/c%03d", parent, i);
		zoo_set_op_init(&bundle_ops[i], child_path[i], child_data[i], len, -1, &bundle_stats[i]);
	}
}

static void bundle_multi(zhandle_t *zh)
{
	int rc = zoo_multi(zh, BUNDLE_CHILDREN, bundle_ops, bundle_results);

	if (rc != ZOK)
		bench_die("zoo_multi of %d sets: %s", BUNDLE_CHILDREN, zerror(rc));
}

/* A chunked node: the chunk directory its manifest names (cur), and the
 * one being written (next). */
struct chunked_node {
	const char *path;
	char cur[256], next[256];
	char manifest[512];
	int manifest_len;
};

static uint8_t *content; /* CHUNKED_SIZE bytes, the same but for the tags */

struct chunk_writer {
	const char *dir;
};

/* zkw_zk_node_fn: chunk i of content. */
static int chunk_node(void *ctx, size_t i, char *path, size_t cap, const char **data, int *len, char *why,
                      size_t whylen)
{
	const struct chunk_writer *c = ctx;
	size_t off = i * CHUNK_SIZE;

	(void)why, (void)whylen;
	if ((size_t)snprintf(path, cap, "%s/%08zu", c->dir, i) >= cap)
		return -ENAMETOOLONG;
	*data = (const char *)content + off;
	*len = (int)(CHUNKED_SIZE - off < CHUNK_SIZE ? CHUNKED_SIZE - off : CHUNK_SIZE);
	return 0;
}

/* Content seq, its chunks in a new directory, the manifest ready (not
 * written): the untimed part of a change. Returns the content's XXH3. */
static uint64_t chunked_prepare(zhandle_t *zh, struct chunked_node *cn, uint64_t seq)
{
	struct chunk_writer cw = {cn->next};
	struct timespec now;
	char why[512];
	uint64_t hash;
	int rc;

	bench_config((char *)content, TAG_LEN + 1, seq, TAG_LEN);
	bench_config((char *)content + CHUNKED_SIZE - TAG_LEN, TAG_LEN + 1, seq, TAG_LEN);
	hash = XXH3_64bits(content, CHUNKED_SIZE);
	/* The id: time in ms << 16, as zkw-push; the low 16 bits from seq
	 * rather than random, so that two changes within a millisecond
	 * differ. */
	clock_gettime(CLOCK_REALTIME, &now);
	snprintf(cn->next, sizeof(cn->next), "%s/zkw-chunks/%016" PRIx64, cn->path,
	         ((uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000) << 16 | (seq & 0xffff));
	rc = zoo_create(zh, cn->next, "", 0, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
	if (rc != ZOK)
		bench_die("create %s: %s", cn->next, zerror(rc));
	if (zkw_zk_create_pipelined(zh, CHUNK_COUNT, chunk_node, &cw, &ZOO_OPEN_ACL_UNSAFE, CHUNK_WINDOW, why,
	                            sizeof(why)))
		bench_die("writing the chunks of %s: %s", cn->path, why);
	cn->manifest_len =
	        snprintf(cn->manifest, sizeof(cn->manifest),
	                 "zkw-chunked 1\nsize %u\nchunks %u\nchunk-size %u\nxxh3 %016" PRIx64 "\ndir %s\n",
	                 CHUNKED_SIZE, CHUNK_COUNT, CHUNK_SIZE, hash, cn->next);
	return hash;
}

static void pad_done(int rc, const struct Stat *stat, const void *data)
{
	(void)rc, (void)stat, (void)data;
}

static void flush_done(int rc, const char *value, int len, const struct Stat *stat, const void *data)
{
	(void)rc, (void)value, (void)len, (void)stat, (void)data;
}

/* zkw_zk_node_fn: the small nodes whose reads flush the response cache. */
static int flush_node(void *ctx, size_t i, char *path, size_t cap, const char **data, int *len, char *why,
                      size_t whylen)
{
	(void)ctx, (void)why, (void)whylen;
	if ((size_t)snprintf(path, cap, "%s/f%03zu", flush_path, i) >= cap)
		return -ENAMETOOLONG;
	*data = "f";
	*len = 1;
	return 0;
}

/* After the switch, once every reader has the new content: the old
 * directory goes, and the chunks leave the server's two caches, which
 * would otherwise hold hundreds of them (a 512 MiB heap fills up within
 * 20 versions of 20 MiB): PAD_WRITES small writes push them out of the log
 * cache (the last 500 transactions, ZKDatabase's committedLog), and reads
 * of FLUSH_READS small nodes out of the response cache (the serialized
 * answers to the last 400 paths read, chunks included: ResponseCache).
 * Pipelined, and answered before the last write, which is synchronous. */
static void chunked_retire(zhandle_t *zh, struct chunked_node *cn)
{
	char why[256], path[256];
	int err;

	if (cn->cur[0]) {
		err = zkw_zk_delete_tree(zh, cn->cur, why, sizeof(why));
		if (err && err != -ENOENT)
			bench_die("delete %s: %s", cn->cur, why);
	}
	memcpy(cn->cur, cn->next, sizeof(cn->cur));
	for (int i = 0; i < PAD_WRITES - 1; i++)
		if (zoo_aset(zh, pad_path, "p", 1, -1, pad_done, NULL) != ZOK)
			bench_die("zoo_aset %s failed", pad_path);
	for (int i = 0; i < FLUSH_READS; i++) {
		snprintf(path, sizeof(path), "%s/f%03d", flush_path, i);
		if (zoo_aget(zh, path, 0, flush_done, NULL) != ZOK)
			bench_die("zoo_aget %s failed", path);
	}
	bench_zk_put(zh, pad_path, "p", 1); /* answered after the ones before it */
}

/* ---- samples ------------------------------------------------------------------ */

static double max_since(const struct bench_stamp *s, int n, uint64_t seq, uint64_t t0)
{
	uint64_t mx = 0;

	for (int i = 0; i < n; i++) {
		if (__atomic_load_n(&s[i].seq, __ATOMIC_ACQUIRE) != seq)
			bench_die("process %d holds seq %" PRIu64 ", not %" PRIu64, i, s[i].seq, seq);
		if (s[i].ns > mx)
			mx = s[i].ns;
	}
	return mx > t0 ? (double)(mx - t0) / 1000.0 : 0.0;
}

/* Who is stale: the segment (the broker), the readers, the floor? */
static void diagnose(const char *shm)
{
	zkw_reader r;

	if (zkw_reader_open(&r, shm) == 0) {
		bench_note("diagnosis: segment %s generation %" PRIu64 ", valid %d, broker alive %d", shm,
		           zkw_reader_generation(&r), zkw_reader_is_valid(&r), zkw_reader_broker_alive(&r));
		zkw_reader_close(&r);
	}
	for (int i = 0; i < 4; i++)
		bench_note("diagnosis: reader %d last seq %" PRIu64, i, sh->reader[i].seq);
	bench_note("diagnosis: floor last seq %" PRIu64 "; bundles read %" PRIu64 " (mixed %" PRIu64
	           ", misshapen %" PRIu64 "), chunked read %" PRIu64 " (bad %" PRIu64
	           "), read errors %" PRIu64 ", floor bad rounds %" PRIu64 " + %" PRIu64 "; broker log %s",
	           sh->floor.seq, sh->bundles_read, sh->bundles_mixed, sh->bundles_shape, sh->chunked_read,
	           sh->chunked_bad, sh->read_errors, sh->bfloor_bad, sh->cfloor_bad, log_path);
}

static void wait_all(const char *what, int n, int timeout_ms, const char *shm)
{
	if (!bench_rendezvous_wait(&sh->rv, timeout_ms) && (diagnose(shm), 1))
		bench_die("%s: only %u of %d processes saw seq %" PRIu64 " within %d ms", what,
		          __atomic_load_n(&sh->rv.count, __ATOMIC_ACQUIRE), n, sh->rv.expect, timeout_ms);
}

/* The broker's counters (lib/zkw_stats.h): reads and events per change. */
static const void *stats_map;

static void stats_attach(pid_t broker)
{
	uint64_t end = zkw_clock_mono_ns() + 10000000000ull;
	char path[64];

	snprintf(path, sizeof(path), "/dev/shm/" ZKW_STATS_PREFIX "%d", (int)broker);
	bench_unlink_file_on_exit(path); /* left behind by a broker the sweep killed */
	for (;;) {
		int fd = open(path, O_RDONLY | O_CLOEXEC);

		if (fd >= 0) {
			void *m = mmap(NULL, ZKW_STATS_SIZE, PROT_READ, MAP_SHARED, fd, 0);
			struct zkw_stats_view v;

			close(fd);
			if (m != MAP_FAILED && zkw_stats_load(m, ZKW_STATS_SIZE, &v) == 0) {
				stats_map = m;
				return;
			}
			if (m != MAP_FAILED)
				munmap(m, ZKW_STATS_SIZE);
		}
		if (zkw_clock_mono_ns() > end)
			bench_die("no counters of zkw-broker (pid %d) in %s within 10 s", (int)broker, path);
		zkw_clock_sleep_ns(1000000);
	}
}

static uint64_t stats_get(enum zkw_stat which)
{
	struct zkw_stats_view v;

	if (zkw_stats_load(stats_map, ZKW_STATS_SIZE, &v) != 0)
		bench_die("the broker's counters became unreadable");
	return v.counter[which];
}

static void stats_detach(void)
{
	if (stats_map)
		munmap((void *)stats_map, ZKW_STATS_SIZE);
	stats_map = NULL;
}

/* The round trip of the last sample's write (zoo_multi, zoo_set), in us. */
static double last_write_us;

/* One bundle change of parent -> n stamps hold it, in us. With counters,
 * the broker's reads and events for it into reads/events. */
static double sample_bundle(zhandle_t *zh, const char *parent, struct bench_stamp *stamps, int n, const char *what,
                            double *reads, double *events)
{
	uint64_t seq = ++seq_counter, t0, r0 = 0, e0 = 0;
	double us;

	bundle_prepare(parent, seq);
	bench_rendezvous_reset(&sh->rv, (uint32_t)n, seq);
	if (reads) {
		r0 = stats_get(ZKW_STAT_ZK_READS);
		e0 = stats_get(ZKW_STAT_ZK_EVENTS);
	}
	t0 = zkw_clock_mono_ns();
	bundle_multi(zh);
	last_write_us = (double)(zkw_clock_mono_ns() - t0) / 1000.0;
	wait_all(what, n, BUNDLE_TIMEOUT_MS, bundle_shm);
	us = max_since(stamps, n, seq, t0);
	if (reads) {
		*reads = (double)(stats_get(ZKW_STAT_ZK_READS) - r0);
		*events = (double)(stats_get(ZKW_STAT_ZK_EVENTS) - e0);
	}
	return us;
}

/* Until the readers have hashed what they stamped (bounded): their CPU is
 * quiet again before the next change. */
static void wait_hashes(uint64_t want)
{
	uint64_t end = zkw_clock_mono_ns() + 10000000000ull;

	while (__atomic_load_n(&sh->hash_checked, __ATOMIC_ACQUIRE) < want) {
		if (zkw_clock_mono_ns() > end)
			bench_die("the readers did not hash the content within 10 s (%" PRIu64 " of %" PRIu64
			          " checks)",
			          sh->hash_checked, want);
		zkw_clock_sleep_ns(200000);
	}
}

static double sample_chunked(zhandle_t *zh, struct chunked_node *cn, struct bench_stamp *stamps, int n,
                             const char *what, double *reads, double *events)
{
	uint64_t seq = ++seq_counter, t0, r0 = 0, e0 = 0, hash, h0;
	double us;
	int rc;

	hash = chunked_prepare(zh, cn, seq);
	h0 = __atomic_load_n(&sh->hash_checked, __ATOMIC_ACQUIRE);
	__atomic_store_n(&sh->expect_hash, hash, __ATOMIC_RELAXED);
	bench_rendezvous_reset(&sh->rv, (uint32_t)n, seq); /* release: expect_hash before expect */
	if (reads) {
		r0 = stats_get(ZKW_STAT_ZK_READS);
		e0 = stats_get(ZKW_STAT_ZK_EVENTS);
	}
	t0 = zkw_clock_mono_ns();
	rc = zoo_set(zh, cn->path, cn->manifest, cn->manifest_len, -1);
	if (rc != ZOK)
		bench_die("zoo_set %s (the manifest): %s", cn->path, zerror(rc));
	last_write_us = (double)(zkw_clock_mono_ns() - t0) / 1000.0;
	wait_all(what, n, CHUNKED_TIMEOUT_MS, big_shm);
	us = max_since(stamps, n, seq, t0);
	if (stamps == sh->reader)
		wait_hashes(h0 + (uint64_t)n);
	if (reads) {
		*reads = (double)(stats_get(ZKW_STAT_ZK_READS) - r0);
		*events = (double)(stats_get(ZKW_STAT_ZK_EVENTS) - e0);
	}
	chunked_retire(zh, cn);
	return us;
}

/* ---- brokers ---------------------------------------------------------------------- */

/* Spawn a broker (argv) and wait until its segment shm holds a valid
 * snapshot that ok() accepts. */
static pid_t broker_start(const char *const *argv, const char *shm, bool (*ok)(const void *, size_t),
                          void *scratch, size_t cap)
{
	uint64_t end = zkw_clock_mono_ns() + 30000000000ull;
	pid_t pid = bench_spawn(argv, log_path);

	for (;;) {
		zkw_reader r;
		int st;

		if (proc_pid_exited(pid, &st))
			bench_die("zkw-broker exited during start-up (status %d); see %s", st, log_path);
		if (zkw_reader_open(&r, shm) == 0) {
			zkw_snapshot meta;
			ssize_t n = zkw_reader_read(&r, &meta, scratch, cap);
			bool good = n >= 0 && meta.valid && ok(scratch, (size_t)n);

			zkw_reader_close(&r);
			if (good)
				break;
		}
		if (zkw_clock_mono_ns() > end)
			bench_die("zkw-broker did not publish a valid %s within 30 s; see %s", shm, log_path);
		zkw_clock_sleep_ns(5000000);
	}
	stats_attach(pid);
	return pid;
}

static bool bundle_ok(const void *buf, size_t len)
{
	uint64_t k = bundle_state(buf, len);

	return k && k != BUNDLE_MIXED;
}

static bool chunked_ok(const void *buf, size_t len)
{
	return len == CHUNKED_SIZE && bench_config_seq(buf, (ssize_t)len);
}

static void broker_stop(pid_t pid)
{
	stats_detach();
	proc_stop_pid(pid, SIGTERM, 5000);
}

/* ---- runs ------------------------------------------------------------------------- */

static void series_init(struct series *s, size_t cap)
{
	s->v = calloc(cap, sizeof(double));
	s->count = 0;
	if (!s->v)
		bench_die("out of memory");
}

static void series_done(struct series *s)
{
	bench_stats_of(s->v, s->count, &s->st);
}

static void result_init(struct config_result *res, int n, int samples)
{
	res->n = n;
	series_init(&res->zkw, (size_t)samples);
	series_init(&res->floor, (size_t)samples);
	series_init(&res->reads, (size_t)samples);
	series_init(&res->events, (size_t)samples);
	series_init(&res->zkw_write, (size_t)samples);
	series_init(&res->floor_write, (size_t)samples);
}

static void result_done(struct config_result *res)
{
	series_done(&res->zkw);
	series_done(&res->floor);
	series_done(&res->reads);
	series_done(&res->events);
	series_done(&res->zkw_write);
	series_done(&res->floor_write);
}

static void fork_readers(pid_t *pids, int n, void (*main_fn)(int))
{
	for (int i = 0; i < n; i++) {
		pids[i] = bench_fork();
		if (pids[i] == 0)
			main_fn(i);
	}
}

/* n readers, `warm` unrecorded changes of each kind (the first ones also
 * see every reader open the segment and wait), then `samples` of each. */
static void run_bundle(zhandle_t *zh, struct config_result *res, int n, int samples, int warm)
{
	pid_t pids[MAX_READERS];
	double reads, events;

	fork_readers(pids, n, bundle_reader_main);
	for (int i = 0; i < warm; i++) {
		sample_bundle(zh, bundle_path, sh->reader, n, "bundle readers (start-up)", NULL, NULL);
		sample_bundle(zh, bundle_floor_path, &sh->floor, 1, "bundle floor (start-up)", NULL, NULL);
	}
	result_init(res, n, samples);
	for (int k = 0; k < samples; k++) {
		for (int j = 0; j < 2; j++) {
			/* Alternate the order so drift and after-effects hit both. */
			if ((k + j) % 2 == 0) {
				res->zkw.v[res->zkw.count++] = sample_bundle(
				        zh, bundle_path, sh->reader, n, "bundle readers", &reads, &events);
				res->zkw_write.v[res->zkw_write.count++] = last_write_us;
				res->reads.v[res->reads.count++] = reads;
				res->events.v[res->events.count++] = events;
			} else {
				res->floor.v[res->floor.count++] = sample_bundle(
				        zh, bundle_floor_path, &sh->floor, 1, "bundle floor", NULL, NULL);
				res->floor_write.v[res->floor_write.count++] = last_write_us;
			}
			zkw_clock_sleep_ns(GAP_NS);
		}
	}
	proc_kill_pids(pids, n);
	result_done(res);
}

static void run_chunked(zhandle_t *zh, struct chunked_node *zkw_node, struct chunked_node *floor_node,
                        struct config_result *res, int n, int samples, int warm)
{
	pid_t pids[MAX_READERS];
	double reads, events;

	fork_readers(pids, n, chunked_reader_main);
	for (int i = 0; i < warm; i++) {
		sample_chunked(zh, zkw_node, sh->reader, n, "chunked readers (start-up)", NULL, NULL);
		sample_chunked(zh, floor_node, &sh->floor, 1, "chunked floor (start-up)", NULL, NULL);
	}
	result_init(res, n, samples);
	for (int k = 0; k < samples; k++) {
		for (int j = 0; j < 2; j++) {
			if ((k + j) % 2 == 0) {
				res->zkw.v[res->zkw.count++] = sample_chunked(
				        zh, zkw_node, sh->reader, n, "chunked readers", &reads, &events);
				res->zkw_write.v[res->zkw_write.count++] = last_write_us;
				res->reads.v[res->reads.count++] = reads;
				res->events.v[res->events.count++] = events;
			} else {
				res->floor.v[res->floor.count++] = sample_chunked(
				        zh, floor_node, &sh->floor, 1, "chunked floor", NULL, NULL);
				res->floor_write.v[res->floor_write.count++] = last_write_us;
			}
			zkw_clock_sleep_ns(GAP_NS);
		}
	}
	proc_kill_pids(pids, n);
	result_done(res);
}

/* ---- set-up ------------------------------------------------------------------------ */

static void setup_nodes(zhandle_t *zh, struct chunked_node *big, struct chunked_node *big_floor)
{
	char buf[CHILD_LEN + 32], path[256], why[256];
	uint64_t seq = ++seq_counter, t0 = zkw_clock_mono_ns();
	int len = bench_config(buf, sizeof(buf), seq, CHILD_LEN);

	for (int i = 0; i < BUNDLE_CHILDREN; i++) {
		snprintf(path, sizeof(path), "%s/c%03d", bundle_path, i);
		bench_zk_put(zh, path, buf, len);
		snprintf(path, sizeof(path), "%s/c%03d", bundle_floor_path, i);
		bench_zk_put(zh, path, buf, len);
	}
	bench_zk_put(zh, pad_path, "p", 1);
	bench_zk_put(zh, flush_path, "", 0);
	if (zkw_zk_create_pipelined(zh, FLUSH_READS, flush_node, NULL, &ZOO_OPEN_ACL_UNSAFE, 64, why,
	                            sizeof(why)))
		bench_die("creating the nodes under %s: %s", flush_path, why);
	for (struct chunked_node *cn = big; cn; cn = cn == big ? big_floor : NULL) {
		int rc;

		snprintf(path, sizeof(path), "%s/zkw-chunks", cn->path);
		bench_zk_put(zh, path, "", 0); /* and cn->path, empty until its manifest */
		chunked_prepare(zh, cn, ++seq_counter);
		rc = zoo_set(zh, cn->path, cn->manifest, cn->manifest_len, -1);
		if (rc != ZOK)
			bench_die("zoo_set %s: %s", cn->path, zerror(rc));
		chunked_retire(zh, cn);
	}
	bench_note("set-up: 2 x %d children and 2 x %u MiB chunked in %.2f s", BUNDLE_CHILDREN,
	           CHUNKED_SIZE >> 20, (double)(zkw_clock_mono_ns() - t0) / 1e9);
}

static void fill_content(void)
{
	uint64_t x = 0x9e3779b97f4a7c15ull;

	content = malloc(CHUNKED_SIZE + 1); /* + the NUL bench_config writes after the last tag */
	if (!content)
		bench_die("out of memory");
	/* xorshift64: incompressible, so no layer may shortcut it */
	for (size_t i = 0; i + 8 <= CHUNKED_SIZE; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(content + i, &x, 8);
	}
}

/* ---- report ---------------------------------------------------------------------- */

#define BUNDLE_TARGET  1.30
#define CHUNKED_TARGET 1.25

static void print_rows(const struct config_result *res, int nconf, const char *zkw_name,
                       const char *floor_name)
{
	printf("| series | readers | samples | min us | median us | p99 us | the write answered, median us "
	       "| broker reads per change (median) | broker events per change (median) |\n"
	       "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
	for (int i = 0; i < nconf; i++) {
		const struct config_result *r = &res[i];

		printf("| %s | %d | %zu | %.1f | %.1f | %.1f | %.1f | %.0f | %.0f |\n", zkw_name, r->n,
		       r->zkw.st.n, r->zkw.st.min, r->zkw.st.median, r->zkw.st.p99, r->zkw_write.st.median,
		       r->reads.st.median, r->events.st.median);
		printf("| %s | - | %zu | %.1f | %.1f | %.1f | %.1f | - | - |\n", floor_name, r->floor.st.n,
		       r->floor.st.min, r->floor.st.median, r->floor.st.p99, r->floor_write.st.median);
	}
}

/* The verdict rows; `what` names the change (the rows stand alone in the
 * report's "Targets at a glance"). */
static void print_ratios(const struct config_result *res, int nconf, const char *what, double target)
{
	printf("\n| change, readers | zkw median us | floor median us | ratio | target | verdict | zkw p99 / "
	       "floor p99 | added us (median) |\n|---|---:|---:|---:|---|---|---:|---:|\n");
	for (int i = 0; i < nconf; i++) {
		const struct config_result *r = &res[i];
		double ratio = r->zkw.st.median / r->floor.st.median;

		printf("| %s, %d reader%s | %.1f | %.1f | %.2fx | <= %.2fx | %s | %.2fx | %+.1f |\n", what,
		       r->n, r->n == 1 ? "" : "s", r->zkw.st.median, r->floor.st.median, ratio, target,
		       bench_verdict(ratio <= target), r->zkw.st.p99 / r->floor.st.p99,
		       r->zkw.st.median - r->floor.st.median);
	}
}

static void print_bundle_report(const struct config_result *bres, int nb, bool pass_bundle)
{
	printf("## Bundle of %d children: one multi-op -> every reader holds the new bundle "
	       "(bench_bundle)\n\n",
	       BUNDLE_CHILDREN);
	printf("A zkw-broker --bundle on a node of %d children of %d bytes; a change is one zoo_multi "
	       "setting every child to a new state number. zkw: from the zoo_multi call (as bench_latency "
	       "times a ZooKeeper write) until the last of N reader processes blocked in zkw_reader_wait "
	       "has read the segment, opened the bundle (zkw_bundle_open) and checked that all %d entries, "
	       "in name order, carry the new state; then it stamps CLOCK_MONOTONIC. Floor: a bare C client "
	       "in its own process, no broker, with a data watch on the first child of a twin node: on the "
	       "event it gets the %d children pipelined (zoo_aget; zoo_awget for the watched one) and "
	       "checks each; the same multi on the twin -> the last answer in. The broker's round is those "
	       "gets with a listing before them (get_children2) and a confirmation after them (exists), "
	       "then the encoding, the publish and the wake (docs/design.md, \"Bundle watches\"). "
	       "Samples interleaved, the order alternated, after %d of warm-up of each. The broker's "
	       "ZooKeeper reads and events per change come from its counters (ZKW_STAT_ZK_READS, "
	       "ZKW_STAT_ZK_EVENTS): one round is %d reads (the listing and the gets; the confirmation "
	       "is not counted). Target set here: %.2fx of the floor, which the listing's round trip, the "
	       "confirmation answered right after the last get, a %d KiB encoding, the publish and a "
	       "wake fit into.\n\n",
	       BUNDLE_CHILDREN, CHILD_LEN, BUNDLE_CHILDREN, BUNDLE_CHILDREN, BUNDLE_WARM, BUNDLE_CHILDREN + 1,
	       BUNDLE_TARGET, (int)((32 + BUNDLE_CHILDREN * (32 + 5 + CHILD_LEN) + 1023) / 1024));
	print_rows(bres, nb, "zkw bundle (broker + readers)", "floor: bare C client, 100 pipelined gets");
	print_ratios(bres, nb, "bundle of 100 children", BUNDLE_TARGET);
	for (int i = 0; i < nb; i++)
		if (bres[i].reads.st.median > BUNDLE_CHILDREN + 1) {
			printf("\nThe broker read the children more than once per change (%.0f reads, "
			       "median, "
			       "with %d reader%s; one round is %d): the events of the other children arrive "
			       "while the round the first one started is waiting for its listing, and mark "
			       "it as not a cut, so it is read again (broker/zk/bundle.c).\n",
			       bres[i].reads.st.median, bres[i].n, bres[i].n == 1 ? "" : "s",
			       BUNDLE_CHILDREN + 1);
			break;
		}
	printf("\n| check | bundles read | mixed states | misshapen | read errors | verdict |\n"
	       "|---|---:|---:|---:|---:|---|\n");
	printf("| every bundle a reader read held one state in all %d entries | %" PRIu64 " | %" PRIu64
	       " | %" PRIu64 " | %" PRIu64 " | %s |\n",
	       BUNDLE_CHILDREN, sh->bundles_read, sh->bundles_mixed, sh->bundles_shape, sh->read_errors,
	       pass_bundle ? "PASS" : "FAIL");
	printf("\n");
}

/* One CHUNKED_SIZE memcpy between warm buffers, median of 9, in ms: what
 * each copy the broker and the readers make costs here. */
static double memcpy_ms(void)
{
	uint8_t *a = malloc(CHUNKED_SIZE), *b = malloc(CHUNKED_SIZE);
	double v[9];
	bench_stats st;

	if (!a || !b)
		bench_die("out of memory");
	memset(a, 1, CHUNKED_SIZE);
	memset(b, 2, CHUNKED_SIZE);
	for (int i = 0; i < 9; i++) {
		uint64_t t0 = zkw_clock_mono_ns();

		memcpy(i % 2 ? a : b, i % 2 ? b : a, CHUNKED_SIZE);
		v[i] = (double)(zkw_clock_mono_ns() - t0) / 1e6;
	}
	bench_stats_of(v, 9, &st);
	free(a);
	free(b);
	return st.median;
}

static void print_chunked_report(const struct config_result *cres, int nc, bool pass_chunked)
{
	printf("## A %u MiB chunked configuration: manifest switch -> every reader holds it "
	       "(bench_bundle)\n\n",
	       CHUNKED_SIZE >> 20);
	printf("A zkw-broker --capacity 64m on a node holding a manifest (docs/design.md, \"Chunked "
	       "content\"): %u MiB in %u chunks of %u bytes (zkw-push's default), written first as zkw-push "
	       "does (a new directory and its chunks, %d creates in flight; untimed), then the manifest "
	       "switched with one zoo_set. zkw: from that zoo_set call until the last of N readers holds "
	       "the new content (its length and the state number at both ends checked, then the stamp; "
	       "its XXH3 is then checked against the writer's on every read: %" PRIu64 " checks, %" PRIu64
	       " failed). Floor: a bare C client in its own process with a data watch on a twin "
	       "manifest: on the event it gets the manifest, then every chunk pipelined into one buffer "
	       "(allocated and faulted in once, reused), then hashes the whole (XXH3, as the broker does "
	       "before it publishes: the floor includes the hash). The broker does the same reads and "
	       "hash, then copies the content into the segment, and each reader copies it out. Samples "
	       "interleaved, after %d of warm-up of each. Between samples (untimed) the old chunk "
	       "directory is deleted, %d small writes push the chunks out of the server's log cache (its "
	       "last 500 transactions) and reads of %d small nodes out of its response cache (the "
	       "serialized answers to the last 400 paths read): without that, ZooKeeper's 512 MiB heap "
	       "fills up with old chunks within 20 versions. Target set here: %.2fx of the "
	       "floor, room for the two %u MiB copies any publication through shared memory makes (into the "
	       "segment, out of it; one such memcpy between warm buffers takes %.1f ms here) on top of "
	       "the reads and the hash.\n\n",
	       CHUNKED_SIZE >> 20, CHUNK_COUNT, CHUNK_SIZE, CHUNK_WINDOW, sh->hash_checked, sh->hash_bad,
	       CHUNKED_WARM, PAD_WRITES, FLUSH_READS, CHUNKED_TARGET, CHUNKED_SIZE >> 20, memcpy_ms());
	print_rows(cres, nc, "zkw chunked (broker + readers)",
	           "floor: bare C client, chunks pipelined + XXH3");
	print_ratios(cres, nc, "20 MiB chunked", CHUNKED_TARGET);
	printf("\n| check | contents read | torn or short | XXH3 checks | XXH3 failed | floor rounds failed "
	       "| "
	       "verdict |\n|---|---:|---:|---:|---:|---:|---|\n");
	printf("| every %u MiB content a reader read was whole and hashed right | %" PRIu64 " | %" PRIu64
	       " | %" PRIu64 " | %" PRIu64 " | %" PRIu64 " | %s |\n",
	       CHUNKED_SIZE >> 20, sh->chunked_read, sh->chunked_bad, sh->hash_checked, sh->hash_bad,
	       sh->cfloor_bad, pass_chunked ? "PASS" : "FAIL");
	printf("\n");
}

/* ---- main ------------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f, "usage: bench_bundle --broker PATH [-z HOSTS] [--samples N] [--chunked-samples N]\n"
	           "                    [--only bundle|chunked] [--quick] [--markdown]\n");
}

int main(int argc, char **argv)
{
	static const int bundle_readers[] = {1, 16}, chunked_readers[] = {1, 4};
	enum { NB = sizeof(bundle_readers) / sizeof(bundle_readers[0]) };
	enum { NC = sizeof(chunked_readers) / sizeof(chunked_readers[0]) };
	static struct config_result bres[NB], cres[NC];
	static struct chunked_node big, big_floor;
	uint64_t t_start = zkw_clock_mono_ns();
	zkh_cluster *own_zk = NULL;
	pid_t broker, bfloor_pid, cfloor_pid;
	void *scratch;
	struct zkw_opt o;
	zhandle_t *zh;
	int c;
	bool pass_bundle, pass_chunked;

	bench_init("bench_bundle");
	zkw_opt_init(
	        &o, argc, argv, "bench_bundle",
	        "z|zookeeper: b|broker: s=samples: c=chunked-samples: o=only: q|quick m|markdown p|plain "
	        "h|help",
	        usage);
	while ((c = zkw_opt_next(&o)) != -1) {
		switch (c) {
		case 'z': opt_hosts = o.arg; break;
		case 'b': opt_broker = o.arg; break;
		case 's':
			if (zkw_opt_int(&o, "a number of samples from 1 to 100000", 1, 100000, &opt_samples))
				return 2;
			break;
		case 'c':
			if (zkw_opt_int(&o, "a number of samples from 1 to 1000", 1, 1000,
			                &opt_chunked_samples))
				return 2;
			break;
		case 'o':
			run_bundle_rows = strcmp(o.arg, "bundle") == 0;
			run_chunked_rows = strcmp(o.arg, "chunked") == 0;
			if (!run_bundle_rows && !run_chunked_rows) {
				fprintf(stderr, "bench_bundle: --only %s: want bundle or chunked\n", o.arg);
				return 2;
			}
			break;
		case 'q':
			opt_samples = 30;
			opt_chunked_samples = 5;
			break;
		case 'm':
		case 'p': break; /* the report is markdown either way */
		default: return 2;
		}
	}
	if (!opt_broker || zkw_opt_no_operands(&o)) {
		usage(stderr);
		return 2;
	}

	sh = bench_shared_alloc(sizeof(*sh));
	for (int i = 0; i < BUNDLE_CHILDREN; i++)
		snprintf(child_name[i], sizeof(child_name[i]), "c%03d", i);
	snprintf(base_path, sizeof(base_path), "/zkwbench/bdl%d", (int)getpid());
	snprintf(bundle_path, sizeof(bundle_path), "%s/bundle", base_path);
	snprintf(bundle_floor_path, sizeof(bundle_floor_path), "%s/bundle-floor", base_path);
	snprintf(big_path, sizeof(big_path), "%s/big", base_path);
	snprintf(big_floor_path, sizeof(big_floor_path), "%s/big-floor", base_path);
	snprintf(pad_path, sizeof(pad_path), "%s/pad", base_path);
	snprintf(flush_path, sizeof(flush_path), "%s/flush", base_path);
	snprintf(shm_mark, sizeof(shm_mark), "zkwbench.bdl%d.", (int)getpid());
	snprintf(bundle_shm, sizeof(bundle_shm), "%sbundle", shm_mark);
	snprintf(big_shm, sizeof(big_shm), "%sbig", shm_mark);
	snprintf(log_path, sizeof(log_path), "/tmp/zkwbench-bundle-%d.log", (int)getpid());
	bench_sweep_on_exit(shm_mark);
	big.path = big_path;
	big_floor.path = big_floor_path;
	fill_content();
	scratch = malloc(CHUNKED_SIZE + 4096);
	if (!scratch)
		bench_die("out of memory");

	if (!opt_hosts) {
		bench_note("no -z: starting a loopback ZooKeeper");
		own_zk = zkh_start(1);
		if (!own_zk)
			bench_die("could not start a loopback ZooKeeper");
		opt_hosts = zkh_hosts(own_zk);
	}
	/* The nodes from a short-lived handle: the floors are forked from a
	 * single-threaded bench. */
	zh = bench_zk_connect(opt_hosts);
	setup_nodes(zh, &big, &big_floor);
	zkw_zk_close(zh);
	bfloor_pid = bench_fork();
	if (bfloor_pid == 0)
		bundle_floor_main();
	cfloor_pid = bench_fork();
	if (cfloor_pid == 0)
		chunked_floor_main();
	zh = bench_zk_connect(opt_hosts);

	/* ---- 1. the bundle ---- */
	if (run_bundle_rows) {
		const char *argv_b[] = {opt_broker,         "-z",       opt_hosts, "-f",
		                        bundle_path,        "--bundle", "--shm",   bundle_shm,
		                        "--unlink-on-exit", "--socket", "none",    NULL};

		broker = broker_start(argv_b, bundle_shm, bundle_ok, scratch, CHUNKED_SIZE + 4096);
		for (int i = 0; i < NB; i++) {
			bench_note("bundle: %d reader%s, %d changes of each", bundle_readers[i],
			           bundle_readers[i] == 1 ? "" : "s", opt_samples);
			/* The first warms up ZooKeeper's JIT, the broker and both clients. */
			run_bundle(zh, &bres[i], bundle_readers[i], opt_samples, i == 0 ? BUNDLE_WARM : 3);
		}
		broker_stop(broker);
	}

	/* ---- 2. the chunked configuration ---- */
	if (run_chunked_rows) {
		const char *argv_c[] = {opt_broker,   "-z",   opt_hosts, "-f",    big_path,
		                        "--capacity", "64m",  "--shm",   big_shm, "--unlink-on-exit",
		                        "--socket",   "none", NULL};

		broker = broker_start(argv_c, big_shm, chunked_ok, scratch, CHUNKED_SIZE + 4096);
		for (int i = 0; i < NC; i++) {
			bench_note("chunked: %d reader%s, %d changes of each", chunked_readers[i],
			           chunked_readers[i] == 1 ? "" : "s", opt_chunked_samples);
			run_chunked(zh, &big, &big_floor, &cres[i], chunked_readers[i], opt_chunked_samples,
			            i == 0 ? CHUNKED_WARM : 1);
		}
		broker_stop(broker);
	}

	free(scratch);
	proc_stop_pid(bfloor_pid, SIGTERM, 1000);
	proc_stop_pid(cfloor_pid, SIGTERM, 1000);
	zkw_zk_delete_tree(zh, base_path, NULL, 0);
	for (int i = 0; i < PAD_WRITES; i++) /* the last chunks out of the log cache too */
		bench_zk_put(zh, "/zkwbench", "", 0);
	zkw_zk_close(zh);
	if (own_zk)
		zkh_stop(own_zk);
	unlink(log_path); /* kept only when the bench fails */

	/* ---- report ---- */
	pass_bundle = !sh->bundles_mixed && !sh->bundles_shape && !sh->bfloor_bad;
	pass_chunked = !sh->chunked_bad && !sh->hash_bad && sh->hash_checked && !sh->cfloor_bad;
	if (run_bundle_rows)
		print_bundle_report(bres, NB, pass_bundle);
	if (run_chunked_rows)
		print_chunked_report(cres, NC, pass_chunked);
	printf("Segments reopened by readers after a replacement: %" PRIu64 ".\n", sh->reopens);
	printf("\n_bench_bundle finished in %.1f s._\n\n", (double)(zkw_clock_mono_ns() - t_start) / 1e9);
	return (pass_bundle || !run_bundle_rows) && (pass_chunked || !run_chunked_rows) ? 0 : 1;
}
