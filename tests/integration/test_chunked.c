/* SPDX-License-Identifier: Apache-2.0 */
/* test_chunked.c - chunked content end to end (issue 15; docs/design.md,
 * "Chunked content"): chunks and manifests written here with the ZooKeeper
 * C client exactly as the format says (/tmp/spec15.md, the manifest
 * section), the real zkw-broker (proc) and readers through zkw/client.h:
 *
 *   - a 20 MiB configuration published whole (the segment grows to it),
 *     then updated several times while reader processes read continuously,
 *     the XXH3 of every content they read checked against the contents
 *     written: never a partial or mixed value;
 *   - a missing, a short and a corrupt chunk: the last good content stays
 *     (same bytes, same content generation), invalid, the error names the
 *     chunk; a good manifest afterwards is valid again;
 *   - chunked content behind a pointer;
 *   - invalid manifests (the error names the line), a chunk directory
 *     outside the manifest's node, content above --capacity: refused, the
 *     last good content kept.
 *
 * Waits are on events: a broker's stderr line, the segment's futex, a
 * child's exit. Segment names hold the test's pid and are unlinked by the
 * teardowns; every node lives below /zkwtck<pid>, removed at the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include <cmocka.h>
#include <zookeeper/zookeeper.h>

#include <zkw/client.h>

#include "itest.h"
#include "proc.h"
#include "zkh.h"
#include "zkw_clock.h"
#include "zkw_zk.h"
#include "publish/writer.h"

#define WAIT_MS       (ITEST_SANITIZED ? 60000 : 30000) /* any single expected change (20 MiB included) */
#define CHUNK_DEFAULT 1040384u                          /* zkw-push's: 1 MiB - 8 KiB */
#define BIG_SIZE      (20u * 1024 * 1024)
#define BIG_VERSIONS  5 /* v0 whole, v1 and v2 awaited, v3 and v4 back to back */
#define READERS       2 /* reading 20 MiB continuously, on a 2-core machine */
#define READ_CAP      (24u * 1024 * 1024)

static zkh_cluster *zk;
static const char *hosts;
static zhandle_t *zh; /* the writer's session */

/* Nodes live below "/zkwtck<pid>", segments are "zkwtck.<pid>.<tag>" (itest.h). */
enum { ANY = ITEST_ANY, YES = ITEST_YES, NO = ITEST_NO };
#define WAIT_FOR ITEST_WAIT_FOR

/* ---- contents ------------------------------------------------------------------ */

/* Contents the test holds, freed by the teardown when a failed assertion
 * left the test early. */
#define MAX_CONTENTS 8
static void *contents[MAX_CONTENTS];

static void content_free(void *p)
{
	for (int i = 0; i < MAX_CONTENTS; i++)
		if (p && contents[i] == p)
			contents[i] = NULL;
	free(p);
}

static void contents_free_all(void)
{
	for (int i = 0; i < MAX_CONTENTS; i++) {
		free(contents[i]);
		contents[i] = NULL;
	}
}

/* size pseudo-random bytes of version `seed` (xorshift64*): the same seed
 * gives the same bytes, in the parent and in its reader processes. */
static void *content_make(uint64_t seed, size_t size)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
	unsigned char *p;
	size_t i;
	int slot;

	for (slot = 0; slot < MAX_CONTENTS && contents[slot]; slot++)
		;
	assert_true(slot < MAX_CONTENTS);
	p = malloc(size ? size : 1);
	assert_non_null(p);
	contents[slot] = p;
	for (i = 0; i + 8 <= size; i += 8) {
		uint64_t v;

		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		v = x * 0x2545f4914f6cdd1dull;
		memcpy(p + i, &v, 8);
	}
	for (; i < size; i++)
		p[i] = (unsigned char)(seed + i);
	return p;
}

/* ---- ZooKeeper, from the writer's session ---------------------------------------- */

static void put(const char *path, const char *text)
{
	itest_zk_put(zh, path, text, (int)strlen(text));
}

static void delete_tree(const char *path)
{
	itest_zk_delete_tree(zh, path);
}

/* A chunk directory id as the format makes them: 16 hex digits of the
 * time in ms << 16 | 16 more bits (a counter here: unique in the run). */
static void chunk_id(char *out, size_t cap)
{
	static unsigned counter;

	snprintf(out, cap, "%016" PRIx64,
	         (uint64_t)zkw_clock_ns(CLOCK_REALTIME) / 1000000u << 16 | (counter++ & 0xffffu));
}

/* How to spoil a chunk directory, for the error tests. */
struct spoil {
	int missing; /* this chunk is not written; -1 none */
	int corrupt; /* one byte of this chunk flipped; -1 none */
	int shorter; /* this chunk one byte short; -1 none */
};
static const struct spoil INTACT = {-1, -1, -1};

/* A chunked content as zkw-push writes it: the chunks of data in a new
 * directory below node (created with its parents as needed), then the
 * manifest into node in one write. dir (cap bytes) gets the directory;
 * returns the content's XXH3. */
static uint64_t publish_chunked(const char *node, const void *data, size_t size, uint32_t chunk_size,
                                struct spoil sp, char *dir, size_t cap)
{
	const unsigned char *bytes = data;
	uint32_t count = size ? (uint32_t)((size + chunk_size - 1) / chunk_size) : 0;
	uint64_t hash = XXH3_64bits(data, size);
	char id[32], path[PATH_MAX], manifest[PATH_MAX + 256], why[256];
	unsigned char *copy = NULL;
	int rc;

	chunk_id(id, sizeof(id));
	if (snprintf(dir, cap, "%s/zkw-chunks/%s", node, id) >= (int)cap)
		fail_msg("chunk directory too long");
	snprintf(path, sizeof(path), "%s/00000000", dir);
	if (zkw_zk_create_parents(zh, path, why, sizeof(why)) != 0)
		fail_msg("create the parents of %s: %s", path, why);
	for (uint32_t i = 0; i < count; i++) {
		size_t off = (size_t)i * chunk_size, len = size - off < chunk_size ? size - off : chunk_size;
		const unsigned char *chunk = bytes + off;

		if ((int)i == sp.missing)
			continue;
		if ((int)i == sp.corrupt) {
			copy = malloc(len);
			assert_non_null(copy);
			memcpy(copy, chunk, len);
			copy[len / 2] ^= 0x20;
			chunk = copy;
		}
		if ((int)i == sp.shorter)
			len--;
		snprintf(path, sizeof(path), "%s/%08u", dir, i);
		rc = zoo_create(zh, path, (const char *)chunk, (int)len, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
		free(copy);
		copy = NULL;
		if (rc != ZOK)
			fail_msg("create %s (%zu bytes): %s", path, len, zerror(rc));
	}
	snprintf(manifest, sizeof(manifest),
	         "zkw-chunked 1\nsize %zu\nchunks %u\nchunk-size %u\nxxh3 %016" PRIx64 "\ndir %s\n", size,
	         count, chunk_size, hash, dir);
	put(node, manifest);
	return hash;
}

/* ---- 1. 20 MiB, updated under readers ------------------------------------------------ */

struct read_report {
	uint64_t reads, generations, changes, foreign, invalid, short_reads, eagain, reopened;
	uint64_t first_hash, bad_hash;
	size_t bad_len;
	bool finished;
	char why[200];
};

struct big_reader_args {
	const char *shm;
	const uint64_t *hashes;
	int nhashes;
};

/* A reader process: read continuously (no wait: every read races the
 * broker's publications), hash every content read, which must be one of
 * the contents written; stop on the last one. Never returns. */
static void big_reader(void *arg, int ready_fd, int report_fd)
{
	const char *shm = ((struct big_reader_args *)arg)->shm;
	const uint64_t *hashes = ((struct big_reader_args *)arg)->hashes;
	int nhashes = ((struct big_reader_args *)arg)->nhashes;
	unsigned char *buf = malloc(READ_CAP);
	struct read_report rep;
	uint64_t last_gen = 0, last_hash = 0;
	int64_t deadline = zkw_clock_mono_ms() + 4 * WAIT_MS;
	zkw_snapshot m;
	zkw_reader r;

	memset(&rep, 0, sizeof(rep));
	if (!buf || zkw_reader_open(&r, shm) != 0)
		_exit(10);
	if (write(ready_fd, "r", 1) != 1)
		_exit(11);
	close(ready_fd);
	while (!rep.finished) {
		ssize_t n = zkw_reader_read(&r, &m, buf, READ_CAP);
		uint64_t h;
		bool known = false;

		if (zkw_clock_mono_ms() > deadline) {
			snprintf(rep.why, sizeof(rep.why), "the last content never came (%d ms)",
			         4 * WAIT_MS);
			break;
		}
		if (n == -EAGAIN) {
			rep.eagain++;
			continue;
		}
		if (n < 0) {
			snprintf(rep.why, sizeof(rep.why), "zkw_reader_read: %s (len %zu)", strerror((int)-n),
			         m.len);
			break;
		}
		rep.reads++;
		if (!m.valid)
			rep.invalid++;
		if ((size_t)n != BIG_SIZE)
			rep.short_reads++;
		h = XXH3_64bits(buf, (size_t)n);
		for (int i = 0; i < nhashes && !known; i++)
			known = h == hashes[i];
		if (!known && !rep.foreign++) {
			rep.bad_hash = h;
			rep.bad_len = (size_t)n;
			snprintf(rep.why, sizeof(rep.why),
			         "generation %llu: %zd bytes hashing to %016" PRIx64
			         ", none of the contents written",
			         (unsigned long long)m.generation, n, h);
		}
		if (m.generation != last_gen) {
			rep.generations++;
			last_gen = m.generation;
		}
		if (!rep.first_hash)
			rep.first_hash = h;
		if (h != last_hash) {
			rep.changes++;
			last_hash = h;
		}
		if (h == hashes[nhashes - 1])
			rep.finished = true;
		if (zkw_reader_retired(&r)) {
			zkw_reader_close(&r);
			if (zkw_reader_open(&r, shm) != 0) {
				snprintf(rep.why, sizeof(rep.why), "cannot reopen a retired segment");
				break;
			}
			rep.reopened++;
		}
	}
	zkw_reader_close(&r);
	_exit(write(report_fd, &rep, sizeof(rep)) == (ssize_t)sizeof(rep) ? 0 : 12);
}

static void test_twenty_mib_updated_under_readers(void **state)
{
	char node[128], dirs[BIG_VERSIONS][PATH_MAX];
	const char *shm = itest_seg_name("big");
	uint64_t hashes[BIG_VERSIONS], content_gen, t0;
	pid_t pids[READERS] = {0};
	int reports[READERS];
	struct big_reader_args ra;
	struct read_report rep[READERS];
	void *v;
	struct itest_seg *s;
	proc *b;

	(void)state;
	itest_node(node, sizeof(node), "big");
	delete_tree(node);
	for (int i = 0; i < BIG_VERSIONS; i++) {
		v = content_make((uint64_t)i + 1, BIG_SIZE);
		hashes[i] = XXH3_64bits(v, BIG_SIZE);
		content_free(v);
	}

	b = itest_broker_start("-z", hosts, "-f", node, "--ensure", "--capacity", "64m", "--shm", shm, NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "valid and empty (--ensure)", .valid = YES, .bytes = "", .len = 0);

	/* v0, published whole: the segment grows to hold it. */
	v = content_make(1, BIG_SIZE);
	t0 = zkw_clock_mono_ns();
	publish_chunked(node, v, BIG_SIZE, CHUNK_DEFAULT, INTACT, dirs[0], sizeof(dirs[0]));
	WAIT_FOR(s, "v0: 20 MiB", .valid = YES, .bytes = v, .len = BIG_SIZE);
	print_message("20 MiB in 21 chunks: written and published in %.0f ms\n",
	              (double)(zkw_clock_mono_ns() - t0) / 1e6);
	content_free(v);
	assert_int_equal(s->snap.len, BIG_SIZE);
	assert_string_equal(s->snap.error, "");
	assert_true(zkw_reader_capacity(&s->r) >= BIG_SIZE);
	content_gen = s->snap.content_gen;

	/* The reader processes. */
	ra = (struct big_reader_args){shm, hashes, BIG_VERSIONS};
	itest_children_start(READERS, pids, reports, big_reader, &ra);

	/* v1 and v2, each awaited; the directory before goes once its
	 * successor is published (ZooKeeper's heap is 128 MiB). */
	for (int i = 1; i <= 2; i++) {
		v = content_make((uint64_t)i + 1, BIG_SIZE);
		publish_chunked(node, v, BIG_SIZE, CHUNK_DEFAULT, INTACT, dirs[i], sizeof(dirs[i]));
		if (!itest_seg_wait(s, &(struct itest_want){.valid = YES, .bytes = v, .len = BIG_SIZE},
		                    WAIT_MS, "the next version")) {
			content_free(v);
			proc_kill_pids(pids, READERS);
			fail_msg("v%d was not published", i);
		}
		content_free(v);
		assert_true(s->snap.content_gen > content_gen);
		content_gen = s->snap.content_gen;
		delete_tree(dirs[i - 1]);
	}
	/* v3 and v4 back to back: the broker may be reading v3's chunks when
	 * v4's manifest comes (its answers are then dropped). */
	v = content_make(4, BIG_SIZE);
	publish_chunked(node, v, BIG_SIZE, CHUNK_DEFAULT, INTACT, dirs[3], sizeof(dirs[3]));
	content_free(v);
	delete_tree(dirs[2]);
	v = content_make(5, BIG_SIZE);
	publish_chunked(node, v, BIG_SIZE, CHUNK_DEFAULT, INTACT, dirs[4], sizeof(dirs[4]));
	if (!itest_seg_wait(s, &(struct itest_want){.valid = YES, .bytes = v, .len = BIG_SIZE}, WAIT_MS,
	                    "v4")) {
		content_free(v);
		proc_kill_pids(pids, READERS);
		fail_msg("v4 was not published");
	}
	content_free(v);

	itest_children_reports(READERS, pids, reports, rep, sizeof(rep[0]), 4 * WAIT_MS);
	for (int i = 0; i < READERS; i++) {
		print_message(
		        "  reader process %d: %llu reads of 20 MiB (hash checked), %llu generations, %llu "
		        "content changes, %llu foreign, %llu invalid, %llu retried (-EAGAIN), %llu "
		        "reopened%s%s\n",
		        i, (unsigned long long)rep[i].reads, (unsigned long long)rep[i].generations,
		        (unsigned long long)rep[i].changes, (unsigned long long)rep[i].foreign,
		        (unsigned long long)rep[i].invalid, (unsigned long long)rep[i].eagain,
		        (unsigned long long)rep[i].reopened, rep[i].why[0] ? ": " : "", rep[i].why);
		if (rep[i].foreign || rep[i].invalid || rep[i].short_reads || !rep[i].finished) {
			proc_dump(b, "broker output");
			fail_msg("reader process %d: %llu reads of foreign content, %llu invalid, %llu not "
			         "20 MiB, "
			         "finished %d: %s",
			         i, (unsigned long long)rep[i].foreign, (unsigned long long)rep[i].invalid,
			         (unsigned long long)rep[i].short_reads, rep[i].finished, rep[i].why);
		}
		assert_true(rep[i].changes >= 2);
	}
	itest_seg_close(s);
	itest_broker_stop(b);
	delete_tree(node);
}

/* ---- 2. missing, short, corrupt chunks -------------------------------------------------------- */

static void test_bad_chunks_keep_the_last_good(void **state)
{
	char node[128], dir[PATH_MAX], also[PATH_MAX + 128];
	const char *shm = itest_seg_name("bad");
	const size_t size = 5000;
	const uint32_t chunk = 1024; /* 5 chunks, the last 904 bytes */
	uint64_t content_gen, gen, hash;
	void *good = content_make(11, size), *bad = content_make(12, size), *next = content_make(13, size);
	struct itest_seg *s;
	proc *b;

	(void)state;
	itest_node(node, sizeof(node), "bad");
	delete_tree(node);
	publish_chunked(node, good, size, chunk, INTACT, dir, sizeof(dir));
	b = itest_broker_start("-z", hosts, "-f", node, "--shm", shm, NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "the good content", .valid = YES, .bytes = good, .len = size);
	content_gen = s->snap.content_gen;
	gen = s->snap.generation;

	/* Chunk 2 (the third) missing. */
	publish_chunked(node, bad, size, chunk, (struct spoil){.missing = 2, .corrupt = -1, .shorter = -1},
	                dir, sizeof(dir));
	snprintf(also, sizeof(also), "chunk 3 of 5 (%s/00000002) is missing", dir);
	WAIT_FOR(s, "a missing chunk: invalid, the last good kept", .valid = NO, .error = ZKW_ERR_CHUNKS,
	         .error_has = also, .bytes = good, .len = size, .after_gen = gen);
	assert_int_equal(s->snap.content_gen, content_gen);
	assert_non_null(strstr(s->snap.error, node));
	gen = s->snap.generation;

	/* A good manifest: valid again. */
	publish_chunked(node, next, size, chunk, INTACT, dir, sizeof(dir));
	WAIT_FOR(s, "a good manifest again", .valid = YES, .bytes = next, .len = size, .after_gen = gen);
	assert_true(s->snap.content_gen > content_gen);
	assert_string_equal(s->snap.error, "");
	content_gen = s->snap.content_gen;
	gen = s->snap.generation;

	/* One byte of chunk 3 changed: the hash says so. */
	hash = publish_chunked(node, bad, size, chunk,
	                       (struct spoil){.missing = -1, .corrupt = 3, .shorter = -1}, dir, sizeof(dir));
	{
		unsigned char *spoilt = malloc(size);

		assert_non_null(spoilt);
		memcpy(spoilt, bad, size);
		spoilt[3 * chunk + chunk / 2] ^= 0x20;
		snprintf(also, sizeof(also),
		         "the 5 chunks in %s hash to %016" PRIx64 ", the manifest says %016" PRIx64, dir,
		         XXH3_64bits(spoilt, size), hash);
		free(spoilt);
	}
	WAIT_FOR(s, "a corrupt chunk: invalid, the last good kept", .valid = NO, .error = ZKW_ERR_CHUNKS,
	         .error_has = also, .bytes = next, .len = size, .after_gen = gen);
	assert_int_equal(s->snap.content_gen, content_gen);
	gen = s->snap.generation;

	/* The last chunk one byte short. */
	publish_chunked(node, bad, size, chunk, (struct spoil){.missing = -1, .corrupt = -1, .shorter = 4},
	                dir, sizeof(dir));
	snprintf(also, sizeof(also), "chunk 5 of 5 (%s/00000004) holds 903 bytes, the manifest says 904",
	         dir);
	WAIT_FOR(s, "a short chunk: invalid, the last good kept", .valid = NO, .error = ZKW_ERR_CHUNKS,
	         .error_has = also, .bytes = next, .len = size, .after_gen = gen);
	assert_int_equal(s->snap.content_gen, content_gen);
	gen = s->snap.generation;

	/* A good manifest again. */
	publish_chunked(node, good, size, chunk, INTACT, dir, sizeof(dir));
	WAIT_FOR(s, "good again", .valid = YES, .bytes = good, .len = size, .after_gen = gen);
	assert_true(s->snap.content_gen > content_gen);

	content_free(good);
	content_free(bad);
	content_free(next);
	itest_seg_close(s);
	itest_broker_stop(b);
	delete_tree(node);
}

/* ---- 3. behind a pointer ------------------------------------------------------------------- */

static void test_chunked_behind_a_pointer(void **state)
{
	char pointer[128], target[128], plain[128], dir[PATH_MAX];
	const char *shm = itest_seg_name("pointer");
	const size_t size = 3u * 1024 * 1024 + 17; /* 4 chunks */
	void *one = content_make(21, size), *two = content_make(22, size);
	uint64_t gen;
	struct itest_seg *s;
	proc *b;

	(void)state;
	itest_node(pointer, sizeof(pointer), "ptr");
	itest_node(target, sizeof(target), "target");
	itest_node(plain, sizeof(plain), "plain");
	delete_tree(pointer);
	delete_tree(target);
	publish_chunked(target, one, size, CHUNK_DEFAULT, INTACT, dir, sizeof(dir));
	put(plain, "a small plain value");
	put(pointer, target);
	b = itest_broker_start("-z", hosts, "-f", pointer, "-p", "--capacity", "8m", "--shm", shm, NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "the chunked target", .valid = YES, .bytes = one, .len = size);
	assert_string_equal(s->snap.pointer, target);

	/* The target's next content. */
	publish_chunked(target, two, size, CHUNK_DEFAULT, INTACT, dir, sizeof(dir));
	WAIT_FOR(s, "the target's next content", .valid = YES, .bytes = two, .len = size);
	assert_string_equal(s->snap.pointer, target);

	/* Pointed elsewhere and back: the target's manifest has not changed
	 * meanwhile, the content the watch holds has. The first publication
	 * from the target again must carry the target's content. */
	put(pointer, plain);
	WAIT_FOR(s, "a plain target", .valid = YES, .bytes = "a small plain value", .len = 19);
	assert_string_equal(s->snap.pointer, plain);
	gen = s->snap.generation;
	put(pointer, target);
	WAIT_FOR(s, "valid from the chunked target again", .valid = YES, .pointer = target, .after_gen = gen);
	if ((size_t)s->len != size || memcmp(s->buf, two, size) != 0) {
		itest_seg_describe(s);
		fail_msg("pointed back at %s (its manifest unchanged): published %zd bytes that are not its "
		         "content, valid (the plain target's content, kept from before?)",
		         target, s->len);
	}

	content_free(one);
	content_free(two);
	itest_seg_close(s);
	itest_broker_stop(b);
	delete_tree(pointer);
	delete_tree(target);
	delete_tree(plain);
}

/* ---- 4. manifests refused ----------------------------------------------------------------- */

/* Put a manifest by hand; wait until the segment says the error (a prefix,
 * and a part), with the last good content kept. */
static void expect_refused(struct itest_seg *s, const char *node, const char *manifest, const char *prefix,
                           const char *also, const void *good, size_t good_len)
{
	uint64_t gen = s->snap.generation, content_gen = s->snap.content_gen;

	put(node, manifest);
	if (!itest_seg_wait(s,
	                    &(struct itest_want){.valid = NO,
	                                         .error = prefix,
	                                         .error_has = also,
	                                         .bytes = good,
	                                         .len = good_len,
	                                         .after_gen = gen},
	                    WAIT_MS, "refused, the last good content kept"))
		fail_msg("manifest not refused as expected:\n%s", manifest);
	assert_int_equal(s->snap.content_gen, content_gen);
}

static void test_invalid_manifests_are_refused(void **state)
{
	char node[128], other[128], dir[PATH_MAX], manifest[PATH_MAX * 2], good_manifest[PATH_MAX * 2];
	char also[PATH_MAX + 128];
	const char *shm = itest_seg_name("invalid");
	const size_t size = 3000;
	void *good = content_make(31, size), *other_bytes = content_make(32, size);
	uint64_t hash = XXH3_64bits(good, size), gen;
	struct itest_seg *s;
	proc *b;
	const struct {
		const char *text; /* %s: a good dir */
		const char *error;
	} bad[] = {
	        {"zkw-chunked 2\nsize 3000\nchunks 3\nchunk-size 1000\nxxh3 %s\ndir %s\n",
	         "line 1: format 2, this broker reads format 1"},
	        {"zkw-chunked 1\nsize -1\nchunks 3\nchunk-size 1000\nxxh3 %s\ndir %s\n",
	         "line 2: size must be"},
	        {"zkw-chunked 1\nsize 3000\nchunks 4\nchunk-size 1000\nxxh3 %s\ndir %s\n",
	         "line 3: 4 chunks of 1000 bytes cannot hold 3000 bytes exactly"},
	        {"zkw-chunked 1\nsize 3000\nchunks 3\nchunk-size 0\nxxh3 %s\ndir %s\n",
	         "line 4: chunk-size must be 1 to 1048576"},
	        {"zkw-chunked 1\nsize 3000\nchunks 3\nchunk-size 1000\nxxh3 %.15s\ndir %s\n",
	         "line 5: xxh3 must be 16 lowercase hex digits"},
	        {"zkw-chunked 1\nsize 3000\nchunk-size 1000\nchunks 3\nxxh3 %s\ndir %s\n",
	         "line 3: want \"chunks ...\""},
	        {"zkw-chunked 1\nsize 3000\nchunks 3\nchunk-size 1000\nxxh3 %s\ndir %s",
	         "line 6: missing or unterminated"},
	        {"zkw-chunked 1\nsize 3000\nchunks 3\nchunk-size 1000\nxxh3 %s\ndir %s\nextra 1\n",
	         "line 7: nothing may follow the dir line"},
	        {"zkw-chunked garbage", "line 1: missing or unterminated"},
	};
	char hex[17];

	(void)state;
	itest_node(node, sizeof(node), "manifest");
	itest_node(other, sizeof(other), "manifest-other");
	delete_tree(node);
	delete_tree(other);
	snprintf(hex, sizeof(hex), "%016" PRIx64, hash);
	publish_chunked(node, good, size, 1000, INTACT, dir, sizeof(dir));
	snprintf(good_manifest, sizeof(good_manifest),
	         "zkw-chunked 1\nsize 3000\nchunks 3\nchunk-size 1000\nxxh3 %s\ndir %s\n", hex, dir);
	b = itest_broker_start("-z", hosts, "-f", node, "--shm", shm, NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "the good content", .valid = YES, .bytes = good, .len = size);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(manifest, sizeof(manifest), bad[i].text, hex, dir);
		snprintf(also, sizeof(also), "invalid manifest in %s: %s", node, bad[i].error);
		expect_refused(s, node, manifest, ZKW_ERR_CHUNKS, also, good, size);
		/* The good one back between two refusals (a refusal with the
		 * error already published is no new generation). */
		gen = s->snap.generation;
		put(node, good_manifest);
		WAIT_FOR(s, "the good manifest again", .valid = YES, .bytes = good, .len = size,
		         .after_gen = gen);
	}

	/* Chunks of another node, named by this one's manifest: refused,
	 * whatever they hold (a manifest names only what lies below its own
	 * node). A sibling whose name starts with this one's, and a path that
	 * climbs out, are outside too. */
	{
		char odir[PATH_MAX];
		const char *dirs[3];
		char sibling[PATH_MAX], climb[PATH_MAX];

		publish_chunked(other, other_bytes, size, 1000, INTACT, odir, sizeof(odir));
		snprintf(sibling, sizeof(sibling), "%s-other/zkw-chunks/%s", node, strrchr(odir, '/') + 1);
		snprintf(climb, sizeof(climb), "%s/../manifest-other/zkw-chunks/%s", node,
		         strrchr(odir, '/') + 1);
		dirs[0] = odir;
		dirs[1] = sibling;
		dirs[2] = climb;
		for (int i = 0; i < 3; i++) {
			snprintf(manifest, sizeof(manifest),
			         "zkw-chunked 1\nsize 3000\nchunks 3\nchunk-size 1000\nxxh3 %016" PRIx64
			         "\ndir %s\n",
			         XXH3_64bits(other_bytes, size), dirs[i]);
			snprintf(also, sizeof(also),
			         "invalid manifest in %s: line 6: dir must be a path below %s", node, node);
			expect_refused(s, node, manifest, ZKW_ERR_CHUNKS, also, good, size);
			gen = s->snap.generation;
			put(node, good_manifest);
			WAIT_FOR(s, "the good manifest again", .valid = YES, .bytes = good, .len = size,
			         .after_gen = gen);
		}
	}

	/* Empty chunked content: valid (size 0, no chunk). */
	gen = s->snap.generation;
	snprintf(manifest, sizeof(manifest),
	         "zkw-chunked 1\nsize 0\nchunks 0\nchunk-size 1000\nxxh3 %016" PRIx64
	         "\ndir %s/zkw-chunks/0000000000000000\n",
	         XXH3_64bits("", 0), node);
	put(node, manifest);
	WAIT_FOR(s, "empty chunked content", .valid = YES, .bytes = "", .len = 0, .after_gen = gen);

	/* Content that does not start with the magic is plain content. */
	put(node, "zkw-chunked1 is not a manifest");
	WAIT_FOR(s, "plain content", .valid = YES, .bytes = "zkw-chunked1 is not a manifest", .len = 30);

	content_free(good);
	content_free(other_bytes);
	itest_seg_close(s);
	itest_broker_stop(b);
	delete_tree(node);
	delete_tree(other);
}

/* ---- 5. above the capacity ------------------------------------------------------------------ */

static void test_chunked_content_above_the_capacity(void **state)
{
	char node[128], dir[PATH_MAX], also[PATH_MAX + 128];
	const char *shm = itest_seg_name("capacity");
	const size_t small = 600u * 1024, large = 2u * 1024 * 1024 + 1;
	void *fits = content_make(41, small), *big = content_make(42, large);
	uint64_t content_gen;
	struct itest_seg *s;
	proc *b;

	(void)state;
	itest_node(node, sizeof(node), "capacity");
	delete_tree(node);
	publish_chunked(node, fits, small, 100000, INTACT, dir, sizeof(dir));
	b = itest_broker_start("-z", hosts, "-f", node, "--capacity", "1m", "--shm", shm, NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "600 KiB in 7 chunks", .valid = YES, .bytes = fits, .len = small);
	content_gen = s->snap.content_gen;

	publish_chunked(node, big, large, CHUNK_DEFAULT, INTACT, dir, sizeof(dir));
	snprintf(also, sizeof(also), "%s holds %zu bytes in chunks, the limit is 1048576 bytes", node, large);
	WAIT_FOR(s, "too large: invalid, the last good kept", .valid = NO, .error = ZKW_ERR_TOO_LARGE,
	         .error_has = also, .bytes = fits, .len = small);
	assert_int_equal(s->snap.content_gen, content_gen);

	/* Exactly the capacity fits. */
	content_free(big);
	big = content_make(43, 1048576);
	publish_chunked(node, big, 1048576, CHUNK_DEFAULT, INTACT, dir, sizeof(dir));
	WAIT_FOR(s, "1 MiB: valid", .valid = YES, .bytes = big, .len = 1048576);

	content_free(fits);
	content_free(big);
	itest_seg_close(s);
	itest_broker_stop(b);
	delete_tree(node);
}

/* ---- fixtures ---------------------------------------------------------------------------------- */

static int group_setup(void **state)
{
	char why[256];

	(void)state;
	zk = itest_zk_start(&(struct itest_config){
	        .prefix = "zkwtck", .wait_ms = WAIT_MS, .read_cap = READ_CAP, .follow = true});
	if (!zk)
		return -1;
	hosts = zkh_hosts(zk);
	if (zkw_zk_connect(&zh, hosts, WAIT_MS, 10000, why, sizeof(why)) != 0) {
		fprintf(stderr, "connect %s: %s\n", hosts, why);
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	itest_test_cleanup();
	zkw_zk_close(zh);
	itest_zk_stop();
	return 0;
}

static int test_teardown(void **state)
{
	(void)state;
	contents_free_all();
	itest_test_cleanup();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_teardown(test_twenty_mib_updated_under_readers, test_teardown),
	        cmocka_unit_test_teardown(test_bad_chunks_keep_the_last_good, test_teardown),
	        cmocka_unit_test_teardown(test_chunked_behind_a_pointer, test_teardown),
	        cmocka_unit_test_teardown(test_invalid_manifests_are_refused, test_teardown),
	        cmocka_unit_test_teardown(test_chunked_content_above_the_capacity, test_teardown),
	};

	if (getenv("ZKW_TEST_ONLY"))
		cmocka_set_test_filter(getenv("ZKW_TEST_ONLY"));
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
