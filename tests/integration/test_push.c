/* SPDX-License-Identifier: Apache-2.0 */
/* test_push.c - zkw-push's bundles and chunked content (issue 15), the real
 * binary (proc) against a real ZooKeeper (zkh); what each push left in
 * ZooKeeper is read back over a session of the test's own (lib/zkw_zk).
 *
 * Bundles: DIR's files become the node's children in ONE transaction (every
 * change at one zxid; unchanged children keep their mzxid); what cannot be
 * pushed (a symbolic link, a bad name, a child with children, a transaction
 * above ZooKeeper's request limit) is refused and nothing changes.
 *
 * Chunked content: every manifest line is checked against the format
 * (docs/design.md, "Chunked content": the broker parses it), the chunks
 * read back are the file, the XXH3 is recomputed here; old chunk
 * directories go by the rule (all but the new one, the previous one and
 * the young ones).
 *
 * Nodes live under /zkwpush<pid>, files under $TMPDIR/zkwpush.XXXXXX; both
 * are removed by the group teardown.
 */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include <cmocka.h>
#include <zookeeper/zookeeper.h>

#include "itest.h"
#include "proc.h"
#include "zkh.h"
#include "zkw_clock.h"
#include "zkw_zk.h"

#define WAIT_MS       60000 /* one zkw-push run; 20 MiB under ASan included */
#define CHUNK_DEFAULT 1040384
#define NODE_CAP      (1024 * 1024 + 16)
#define BIG_SIZE      (20u * 1024 * 1024)
#define REQUEST_MAX   (1024 * 1024 - 8 * 1024)
#define ID_LEN        16
#define PATH_CAP      1200 /* a path built from SHORT_CAP ones */
#define SHORT_CAP     512  /* a local directory, a file, a node of the test */
#define DIR_CAP       1100 /* a manifest's dir */

static zkh_cluster *zk;
static const char *hosts;
static zhandle_t *zh;    /* the test's own session, to look */
static const char *root; /* "/zkwpush<pid>" (itest_root) */
static char tmpdir[256]; /* local files (itest_dir_make) */

/* ---- helpers ---------------------------------------------------------- */

/* zkw-push with the arguments given (NULL-terminated), bounded by WAIT_MS. */
#define push(...) itest_run_tool("zkw-push", NULL, __VA_ARGS__)

/* A fresh local directory for one bundle; its path in buf. */
static const char *local_dir(char *buf, size_t cap, const char *name)
{
	snprintf(buf, cap, "%s/%s", tmpdir, name);
	assert_int_equal(mkdir(buf, 0700), 0);
	return buf;
}

static void put_file(const char *dir, const char *name, const char *text)
{
	char path[PATH_CAP];

	itest_local_file(path, sizeof(path), dir, name, text, strlen(text));
}

static void remove_file(const char *dir, const char *name)
{
	char path[PATH_CAP];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	assert_int_equal(unlink(path), 0);
}

/* Deterministic bytes that compress badly. */
static void fill(unsigned char *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15u + 1;

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (unsigned char)x;
	}
}

/* A node's data (malloc'd, NUL after it) and stat; NULL when missing. */
static char *node_get(const char *path, int *len, struct Stat *st)
{
	char *buf = malloc(NODE_CAP + 1);
	int n = NODE_CAP;
	int zrc;

	assert_non_null(buf);
	zrc = zoo_get(zh, path, 0, buf, &n, st);
	if (zrc == ZNONODE) {
		free(buf);
		return NULL;
	}
	if (zrc != ZOK)
		itest_fail_free(buf, NULL, "zoo_get %s: %s", path, zerror(zrc));
	buf[n > 0 ? n : 0] = '\0';
	*len = n;
	return buf;
}

static bool node_exists(const char *path)
{
	struct Stat st;
	int zrc = zoo_exists(zh, path, 0, &st);

	if (zrc != ZOK && zrc != ZNONODE)
		fail_msg("zoo_exists %s: %s", path, zerror(zrc));
	return zrc == ZOK;
}

static struct Stat node_stat(const char *path)
{
	struct Stat st;
	int zrc = zoo_exists(zh, path, 0, &st);

	if (zrc != ZOK)
		fail_msg("zoo_exists %s: %s", path, zerror(zrc));
	return st;
}

static void expect_data(const char *path, const char *want)
{
	struct Stat st;
	int len;
	char *got = node_get(path, &len, &st);

	if (!got)
		fail_msg("%s: no such node, want \"%s\"", path, want);
	if (len != (int)strlen(want) || memcmp(got, want, (size_t)len) != 0)
		itest_fail_free(got, NULL, "%s holds %d bytes \"%.200s\", want \"%s\"", path, len,
		                len > 0 ? got : "", want);
	free(got);
}

/* The children of path, sorted, as one string "a,b,c" (for comparisons). */
static void children_list(const char *path, char *out, size_t cap)
{
	struct String_vector names;
	char why[256];
	size_t n = 0;

	out[0] = '\0';
	if (zkw_zk_children(zh, path, &names, NULL, why, sizeof(why)))
		fail_msg("children of %s: %s", path, why);
	for (int i = 0; i < names.count; i++)
		n += (size_t)snprintf(out + n, cap - n, "%s%s", i ? "," : "", names.data[i]);
	deallocate_String_vector(&names);
}

static void expect_children(const char *path, const char *want)
{
	char got[4096];

	children_list(path, got, sizeof(got));
	if (strcmp(got, want) != 0)
		fail_msg("children of %s: \"%s\", want \"%s\"", path, got, want);
}

static int64_t mzxid(const char *parent, const char *name)
{
	char path[PATH_CAP];

	snprintf(path, sizeof(path), "%s/%s", parent, name);
	return node_stat(path).mzxid;
}

/* ---- the manifest, line by line ------------------------------------------ */

struct manifest {
	uint64_t size, chunks, chunk_size, hash;
	char dir[DIR_CAP];
	char id[ID_LEN + 1];
};

/* One "key value\n" line at *p: the value into out. */
static void manifest_line(const char **p, const char *end, int line, const char *key, char *out, size_t cap)
{
	const char *nl = memchr(*p, '\n', (size_t)(end - *p));
	size_t klen = strlen(key), vlen;

	if (!nl)
		fail_msg("manifest line %d: missing or not ended by \\n (want \"%s ...\")", line, key);
	if ((size_t)(nl - *p) <= klen + 1 || memcmp(*p, key, klen) != 0 || (*p)[klen] != ' ')
		fail_msg("manifest line %d: \"%.*s\", want \"%s ...\"", line, (int)(nl - *p), *p, key);
	vlen = (size_t)(nl - *p) - klen - 1;
	assert_true(vlen < cap);
	memcpy(out, *p + klen + 1, vlen);
	out[vlen] = '\0';
	*p = nl + 1;
}

static uint64_t decimal(const char *s, int line)
{
	uint64_t v = 0;

	if (!*s || (s[0] == '0' && s[1]))
		fail_msg("manifest line %d: \"%s\" is not a plain decimal", line, s);
	for (const char *c = s; *c; c++) {
		if (*c < '0' || *c > '9')
			fail_msg("manifest line %d: \"%s\" is not a decimal", line, s);
		v = v * 10 + (uint64_t)(*c - '0');
	}
	return v;
}

static bool lower_hex(const char *s, size_t len)
{
	if (strlen(s) != len)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* Read node's manifest and check every line of it (exactly six, in order,
 * each ended by \n, nothing after). */
static struct manifest read_manifest(const char *path)
{
	struct manifest m = {0};
	struct Stat st;
	char v[PATH_CAP], want[PATH_CAP];
	int len;
	char *text = node_get(path, &len, &st);
	const char *p, *end;

	if (!text)
		fail_msg("%s: no manifest node", path);
	p = text;
	end = text + (len > 0 ? len : 0);
	manifest_line(&p, end, 1, "zkw-chunked", v, sizeof(v));
	if (strcmp(v, "1") != 0)
		itest_fail_free(text, NULL, "manifest line 1: \"zkw-chunked %s\", want \"zkw-chunked 1\"", v);
	manifest_line(&p, end, 2, "size", v, sizeof(v));
	m.size = decimal(v, 2);
	assert_true(m.size <= 256u * 1024 * 1024);
	manifest_line(&p, end, 3, "chunks", v, sizeof(v));
	m.chunks = decimal(v, 3);
	manifest_line(&p, end, 4, "chunk-size", v, sizeof(v));
	m.chunk_size = decimal(v, 4);
	assert_true(m.chunk_size >= 1 && m.chunk_size <= 1048576);
	assert_int_equal(m.chunks, m.size ? (m.size + m.chunk_size - 1) / m.chunk_size : 0);
	manifest_line(&p, end, 5, "xxh3", v, sizeof(v));
	if (!lower_hex(v, 16))
		itest_fail_free(text, NULL, "manifest line 5: xxh3 \"%s\" is not 16 lowercase hex digits", v);
	m.hash = strtoull(v, NULL, 16);
	manifest_line(&p, end, 6, "dir", m.dir, sizeof(m.dir));
	snprintf(want, sizeof(want), "%s/zkw-chunks/", path);
	if (strncmp(m.dir, want, strlen(want)) != 0 || !lower_hex(m.dir + strlen(want), ID_LEN))
		itest_fail_free(text, NULL, "manifest line 6: dir \"%s\", want %s<16 lowercase hex digits>",
		                m.dir, want);
	memcpy(m.id, m.dir + strlen(want), ID_LEN);
	if (p != end)
		itest_fail_free(text, NULL, "manifest: %d bytes after the dir line", (int)(end - p));
	free(text);
	return m;
}

/* The chunks of m, read back and checked (names 00000000.., each exactly
 * chunk-size bytes but the last), concatenated: must be want, and hash to
 * the manifest's XXH3, computed here. */
static void expect_chunked(const char *path, const void *want, size_t want_len, uint64_t chunk_size)
{
	struct manifest m = read_manifest(path);
	struct String_vector names;
	unsigned char *all = malloc(want_len + 1);
	char why[256];
	size_t off = 0;

	assert_non_null(all);
	assert_int_equal(m.size, want_len);
	assert_int_equal(m.chunk_size, chunk_size);
	assert_int_equal(m.hash, XXH3_64bits(want, want_len));
	if (zkw_zk_children(zh, m.dir, &names, NULL, why, sizeof(why)))
		itest_fail_free((char *)all, NULL, "children of %s: %s", m.dir, why);
	assert_int_equal((uint64_t)names.count, m.chunks);
	for (int i = 0; i < names.count; i++) {
		char name[16], chunk[PATH_CAP];
		uint64_t expect =
		        (uint64_t)i + 1 < m.chunks ? m.chunk_size : m.size - m.chunk_size * (m.chunks - 1);
		struct Stat st;
		int len;
		char *data;

		snprintf(name, sizeof(name), "%08d", i);
		if (strcmp(names.data[i], name) != 0)
			fail_msg("chunk %d of %s is named \"%s\", want \"%s\"", i, m.dir, names.data[i],
			         name);
		snprintf(chunk, sizeof(chunk), "%s/%s", m.dir, name);
		data = node_get(chunk, &len, &st);
		assert_non_null(data);
		if ((uint64_t)len != expect || off + (size_t)len > want_len)
			itest_fail_free(data, (char *)all, "chunk %s: %d bytes, want %" PRIu64, chunk, len,
			                expect);
		memcpy(all + off, data, (size_t)len);
		off += (size_t)len;
		free(data);
	}
	deallocate_String_vector(&names);
	assert_int_equal(off, want_len);
	if (memcmp(all, want, want_len) != 0)
		itest_fail_free((char *)all, NULL, "the chunks of %s concatenated differ from the file",
		                path);
	assert_int_equal(XXH3_64bits(all, off), m.hash);
	free(all);
}

/* The chunk directories of path, sorted, "a,b". */
static void chunk_dirs(const char *path, char *out, size_t cap)
{
	char chunks[PATH_CAP];

	snprintf(chunks, sizeof(chunks), "%s/zkw-chunks", path);
	children_list(chunks, out, cap);
}

/* zkw-push --chunked FILE (with more options) into path: the manifest's id. */
static void push_chunked_ok(const char *path_id, const char *file, const char *extra1, const char *extra2,
                            char *id)
{
	char path[SHORT_CAP], line[PATH_CAP];
	struct manifest m;
	struct itest_run r = push("-z", hosts, "--parent", root, "-i", path_id, "-f", file, "--chunked",
	                          "--chunk-size", "1000", extra1, extra2, NULL);

	ITEST_EXPECT_RUN(r, 0);
	itest_node(path, sizeof(path), path_id);
	m = read_manifest(path);
	snprintf(line, sizeof(line), "dir %s\n", m.dir);
	ITEST_EXPECT_IN(r, out, line);
	snprintf(line, sizeof(line), "xxh3 %016" PRIx64 "\n", m.hash);
	ITEST_EXPECT_IN(r, out, line);
	itest_run_free(&r);
	memcpy(id, m.id, ID_LEN + 1);
}

/* ---- fixtures ----------------------------------------------------------- */

static int group_setup(void **state)
{
	char why[256];

	(void)state;
	zk = itest_zk_start(&(struct itest_config){.prefix = "zkwpush", .wait_ms = WAIT_MS});
	if (!zk || !itest_dir_make(tmpdir, sizeof(tmpdir)))
		return -1;
	hosts = zkh_hosts(zk);
	root = itest_root();
	if (zkw_zk_connect(&zh, hosts, 10000, 10000, why, sizeof(why))) {
		fprintf(stderr, "test session: %s\n", why);
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	zkw_zk_close(zh);
	itest_group_cleanup();
	if (tmpdir[0])
		itest_tree_remove(tmpdir, false);
	return 0;
}

/* ---- bundles ------------------------------------------------------------- */

/* Create, update, delete in one push; unchanged children untouched; hidden
 * files and subdirectories skipped; zkw-chunks never touched; a push with
 * nothing to change changes nothing. */
static void test_bundle_create_update_delete(void **state)
{
	char dir[SHORT_CAP], sub[PATH_CAP], parent[SHORT_CAP], path[PATH_CAP];
	int64_t a0, b0, c0, b1, d1, created_z;
	struct Stat pst;
	struct itest_run r;

	(void)state;
	local_dir(dir, sizeof(dir), "crud");
	put_file(dir, "a", "alpha");
	put_file(dir, "b", "beta");
	put_file(dir, "c", "gamma");
	put_file(dir, ".hidden", "never pushed");
	snprintf(sub, sizeof(sub), "%s/subdir", dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	itest_node(parent, sizeof(parent), "crud");

	/* First push: the parent and three children, created together. */
	r = push("-z", hosts, "--bundle", dir, "--parent", root, "-i", "crud", NULL);
	ITEST_EXPECT_RUN(r, 0);
	ITEST_EXPECT_IN(r, out, "3 created, 0 updated, 0 deleted, 0 unchanged");
	ITEST_EXPECT_IN(r, err, "subdir is a directory: skipped");
	itest_run_free(&r);
	expect_children(parent, "a,b,c");
	expect_data(itest_node(path, sizeof(path), "crud/a"), "alpha");
	expect_data(itest_node(path, sizeof(path), "crud/b"), "beta");
	expect_data(itest_node(path, sizeof(path), "crud/c"), "gamma");
	a0 = mzxid(parent, "a");
	b0 = mzxid(parent, "b");
	c0 = mzxid(parent, "c");
	created_z = node_stat(parent).czxid;
	/* Parent and children in one transaction. */
	assert_int_equal(a0, b0);
	assert_int_equal(b0, c0);
	assert_int_equal(c0, created_z);

	/* Chunked content's directory under the parent: never a bundle's. */
	itest_node(path, sizeof(path), "crud/zkw-chunks");
	assert_int_equal(zoo_create(zh, path, "keep", 4, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0), ZOK);
	itest_node(path, sizeof(path), "crud/zkw-chunks/0000000000000001");
	assert_int_equal(zoo_create(zh, path, "", 0, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0), ZOK);

	/* b changed, c gone, d new, a as it was. */
	put_file(dir, "b", "beta, second edition");
	remove_file(dir, "c");
	put_file(dir, "d", "delta");
	r = push("-z", hosts, "--bundle", dir, "--parent", root, "-i", "crud", NULL);
	ITEST_EXPECT_RUN(r, 0);
	ITEST_EXPECT_IN(r, out, "1 created, 1 updated, 1 deleted, 1 unchanged");
	ITEST_EXPECT_IN(r, out, "created ");
	ITEST_EXPECT_IN(r, out, "/crud/d\n");
	ITEST_EXPECT_IN(r, out, "deleted ");
	itest_run_free(&r);
	expect_children(parent, "a,b,d,zkw-chunks");
	expect_data(itest_node(path, sizeof(path), "crud/a"), "alpha");
	expect_data(itest_node(path, sizeof(path), "crud/b"), "beta, second edition");
	expect_data(itest_node(path, sizeof(path), "crud/d"), "delta");
	expect_data(itest_node(path, sizeof(path), "crud/zkw-chunks"), "keep");
	expect_children(path, "0000000000000001");
	/* a untouched; b's update, d's creation and c's deletion (the
	 * parent's pzxid) share one zxid, after the first push's. */
	assert_int_equal(mzxid(parent, "a"), a0);
	b1 = mzxid(parent, "b");
	d1 = mzxid(parent, "d");
	pst = node_stat(parent);
	assert_true(b1 > b0);
	assert_int_equal(b1, d1);
	assert_int_equal(pst.pzxid, b1);

	/* Nothing to change: exit 0, nothing written. */
	r = push("-z", hosts, "--bundle", dir, "--parent", root, "-i", "crud", NULL);
	ITEST_EXPECT_RUN(r, 0);
	ITEST_EXPECT_IN(r, out, "nothing to change (3 unchanged)");
	itest_run_free(&r);
	assert_int_equal(mzxid(parent, "a"), a0);
	assert_int_equal(mzxid(parent, "b"), b1);
	assert_int_equal(mzxid(parent, "d"), d1);
	assert_int_equal(node_stat(parent).pzxid, pst.pzxid);
	assert_int_equal(node_stat(parent).cversion, pst.cversion);

	/* An empty file and an emptied directory: the children go, the
	 * parent and zkw-chunks stay. */
	remove_file(dir, "a");
	remove_file(dir, "b");
	remove_file(dir, "d");
	put_file(dir, "empty", "");
	r = push("-z", hosts, "--bundle", dir, "--parent", root, "-i", "crud", NULL);
	ITEST_EXPECT_RUN(r, 0);
	ITEST_EXPECT_IN(r, out, "1 created, 0 updated, 3 deleted, 0 unchanged");
	itest_run_free(&r);
	expect_children(parent, "empty,zkw-chunks");
	expect_data(itest_node(path, sizeof(path), "crud/empty"), "");
}

/* Many changes: every changed child carries the same mzxid, the proof that
 * they were one transaction (separate writes get one zxid each). */
static void test_bundle_one_transaction(void **state)
{
	char dir[SHORT_CAP], parent[SHORT_CAP], name[16], text[64];
	int64_t first, unchanged;
	struct itest_run r;

	(void)state;
	local_dir(dir, sizeof(dir), "atomic");
	itest_node(parent, sizeof(parent), "atomic");
	for (int i = 0; i < 12; i++) {
		snprintf(name, sizeof(name), "key%02d", i);
		snprintf(text, sizeof(text), "value %d, version 1", i);
		put_file(dir, name, text);
	}
	r = push("-z", hosts, "--bundle", dir, "--parent", root, "-i", "atomic", NULL);
	ITEST_EXPECT_RUN(r, 0);
	itest_run_free(&r);
	unchanged = mzxid(parent, "key11");

	/* Change 11 of the 12, add 4. */
	for (int i = 0; i < 16; i++) {
		if (i == 11)
			continue;
		snprintf(name, sizeof(name), "key%02d", i);
		snprintf(text, sizeof(text), "value %d, version 2", i);
		put_file(dir, name, text);
	}
	r = push("-z", hosts, "--bundle", dir, "--parent", root, "-i", "atomic", NULL);
	ITEST_EXPECT_RUN(r, 0);
	ITEST_EXPECT_IN(r, out, "4 created, 11 updated, 0 deleted, 1 unchanged");
	itest_run_free(&r);
	first = mzxid(parent, "key00");
	assert_true(first > unchanged);
	for (int i = 0; i < 16; i++) {
		int64_t z;

		snprintf(name, sizeof(name), "key%02d", i);
		z = mzxid(parent, name);
		if (i == 11 ? z != unchanged : z != first)
			fail_msg("%s/%s: mzxid %#" PRIx64 ", want %#" PRIx64 " (%s)", parent, name, z,
			         i == 11 ? unchanged : first,
			         i == 11 ? "unchanged" : "the one transaction's");
	}
	assert_int_equal(node_stat(parent).pzxid, first);
}

/* The state of a bundle parent, to prove that a refused push changed
 * nothing: children, each one's mzxid, the parent's cversion. */
struct snapshot {
	char children[4096];
	int64_t mzxid_sum;
	int32_t cversion;
};

static struct snapshot snapshot(const char *parent)
{
	struct snapshot s = {0};
	struct String_vector names;
	char why[256];

	children_list(parent, s.children, sizeof(s.children));
	assert_int_equal(zkw_zk_children(zh, parent, &names, NULL, why, sizeof(why)), 0);
	for (int i = 0; i < names.count; i++)
		s.mzxid_sum += mzxid(parent, names.data[i]);
	deallocate_String_vector(&names);
	s.cversion = node_stat(parent).cversion;
	return s;
}

static void expect_unchanged(const char *parent, const struct snapshot *before)
{
	struct snapshot now = snapshot(parent);

	if (strcmp(now.children, before->children) != 0 || now.mzxid_sum != before->mzxid_sum ||
	    now.cversion != before->cversion)
		fail_msg("%s changed by a refused push: children \"%s\" (were \"%s\"), cversion %d (was %d)",
		         parent, now.children, before->children, now.cversion, before->cversion);
}

/* A symbolic link, bad names, a FIFO, a child with children: refused by
 * name, exit 1, nothing pushed (the other changes of the same push
 * included). */
static void test_bundle_refusals_push_nothing(void **state)
{
	char dir[SHORT_CAP], parent[SHORT_CAP], path[PATH_CAP], target[PATH_CAP];
	const struct {
		const char *name, *why;
	} bad[] = {
	        {"ctl\001char", "control character"},
	        {"bad\377utf8", "UTF-8"},
	        {"zkw-chunks", "reserved"},
	};
	struct snapshot before;
	struct itest_run r;

	(void)state;
	local_dir(dir, sizeof(dir), "refused");
	itest_node(parent, sizeof(parent), "refused");
	put_file(dir, "good", "good");
	put_file(dir, "old", "old");
	r = push("-z", hosts, "--bundle", dir, "--parent", root, "-i", "refused", NULL);
	ITEST_EXPECT_RUN(r, 0);
	itest_run_free(&r);
	before = snapshot(parent);
	/* Changes that would go through on their own. */
	put_file(dir, "good", "changed");
	put_file(dir, "new", "new");
	remove_file(dir, "old");

	/* A symbolic link (to a regular file, even): refused by name. */
	snprintf(target, sizeof(target), "%s/new", dir);
	snprintf(path, sizeof(path), "%s/link", dir);
	assert_int_equal(symlink(target, path), 0);
	r = push("-z", hosts, "--bundle", dir, "--parent", root, "-i", "refused", NULL);
	ITEST_EXPECT_RUN(r, 1);
	ITEST_EXPECT_IN(r, err, "link is a symbolic link");
	ITEST_EXPECT_IN(r, err, "nothing pushed");
	itest_run_free(&r);
	expect_unchanged(parent, &before);
	assert_int_equal(unlink(path), 0);

	/* Names ZooKeeper would not take, and the reserved one. */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		put_file(dir, bad[i].name, "x");
		r = push("-z", hosts, "--bundle", dir, "--parent", root, "-i", "refused", NULL);
		ITEST_EXPECT_RUN(r, 1);
		ITEST_EXPECT_IN(r, err, "cannot be a node name");
		ITEST_EXPECT_IN(r, err, bad[i].why);
		ITEST_EXPECT_IN(r, err, "nothing pushed");
		itest_run_free(&r);
		expect_unchanged(parent, &before);
		remove_file(dir, bad[i].name);
	}

	/* A FIFO: not a regular file (and never opened: no hang). */
	snprintf(path, sizeof(path), "%s/fifo", dir);
	assert_int_equal(mkfifo(path, 0600), 0);
	r = push("-z", hosts, "--bundle", dir, "--parent", root, "-i", "refused", NULL);
	ITEST_EXPECT_RUN(r, 1);
	ITEST_EXPECT_IN(r, err, "fifo is not a regular file");
	itest_run_free(&r);
	expect_unchanged(parent, &before);
	assert_int_equal(unlink(path), 0);

	/* A child with children of its own that the push would delete. */
	itest_node(path, sizeof(path), "refused/old/grandchild");
	assert_int_equal(zoo_create(zh, path, "", 0, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0), ZOK);
	before = snapshot(parent);
	r = push("-z", hosts, "--bundle", dir, "--parent", root, "-i", "refused", NULL);
	ITEST_EXPECT_RUN(r, 1);
	ITEST_EXPECT_IN(r, err, "/refused/old has 1 children: not deleted");
	itest_run_free(&r);
	expect_unchanged(parent, &before);
	expect_data(itest_node(path, sizeof(path), "refused/good"), "good");

	/* Once it is gone, the same push goes through. */
	zkw_zk_delete_tree(zh, itest_node(path, sizeof(path), "refused/old"), NULL, 0);
	r = push("-z", hosts, "--bundle", dir, "--parent", root, "-i", "refused", NULL);
	ITEST_EXPECT_RUN(r, 0);
	ITEST_EXPECT_IN(r, out, "1 created, 1 updated, 0 deleted, 0 unchanged");
	itest_run_free(&r);
	expect_children(parent, "good,new");
	expect_data(itest_node(path, sizeof(path), "refused/good"), "changed");
}

/* A transaction above ZooKeeper's request limit, or a file above
 * --max-bytes: refused, nothing pushed; just under the limit: pushed. */
static void test_bundle_too_large_refused(void **state)
{
	const size_t third = 400000; /* three: 1.2 MB in one request */
	char dir[SHORT_CAP], parent[SHORT_CAP], file[PATH_CAP], name[16];
	unsigned char *data = malloc(third);
	struct itest_run r;

	(void)state;
	assert_non_null(data);
	local_dir(dir, sizeof(dir), "large");
	itest_node(parent, sizeof(parent), "large");
	for (int i = 0; i < 3; i++) {
		fill(data, third, (uint64_t)i + 1);
		snprintf(name, sizeof(name), "part%d", i);
		itest_local_file(file, sizeof(file), dir, name, data, third);
	}
	r = push("-z", hosts, "--bundle", dir, "--parent", root, "-i", "large", NULL);
	ITEST_EXPECT_RUN(r, 1);
	ITEST_EXPECT_IN(r, err, "fewer or smaller files");
	ITEST_EXPECT_IN(r, err, "nothing pushed");
	itest_run_free(&r);
	assert_false(node_exists(parent)); /* not even the parent */

	/* Two of them: about 800 KB, pushed (the estimate is not a bound
	 * that refuses everything). */
	snprintf(file, sizeof(file), "%s/part2", dir);
	assert_int_equal(unlink(file), 0);
	r = push("-z", hosts, "--bundle", dir, "--parent", root, "-i", "large", NULL);
	ITEST_EXPECT_RUN(r, 0);
	ITEST_EXPECT_IN(r, out, "2 created");
	itest_run_free(&r);
	expect_children(parent, "part0,part1");

	/* Just over the limit in one request: 2 files replaced (setData) and
	 * one created, each under --max-bytes. */
	{
		size_t big = (REQUEST_MAX - 2 * third) + 64;

		free(data);
		data = malloc(third > big ? third : big);
		assert_non_null(data);
		fill(data, big, 9);
		itest_local_file(file, sizeof(file), dir, "part2", data, big);
		fill(data, third, 7);
		itest_local_file(file, sizeof(file), dir, "part0", data, third);
		fill(data, third, 8);
		itest_local_file(file, sizeof(file), dir, "part1", data, third);
	}
	{
		struct snapshot before = snapshot(parent);

		r = push("-z", hosts, "--bundle", dir, "--parent", root, "-i", "large", NULL);
		ITEST_EXPECT_RUN(r, 1);
		ITEST_EXPECT_IN(r, err, "fewer or smaller files");
		itest_run_free(&r);
		expect_unchanged(parent, &before);

		/* A file above --max-bytes: refused by name, not chunked. */
		put_file(dir, "part2", "eleven byte");
		r = push("-z", hosts, "--bundle", dir, "--parent", root, "-i", "large", "--max-bytes",
		         "400000", NULL);
		ITEST_EXPECT_RUN(r, 0); /* 400000 exactly: allowed */
		itest_run_free(&r);
		before = snapshot(parent);
		r = push("-z", hosts, "--bundle", dir, "--parent", root, "-i", "large", "--max-bytes", "10",
		         NULL);
		ITEST_EXPECT_RUN(r, 1);
		ITEST_EXPECT_IN(r, err, "larger than 10 bytes");
		ITEST_EXPECT_IN(r, err, "not chunked");
		itest_run_free(&r);
		expect_unchanged(parent, &before);
	}
	free(data);
}

/* ---- chunked content ------------------------------------------------------ */

/* 20 MiB with --chunked: the manifest, line by line; the chunks are the
 * file; the hash is XXH3 (computed here); the dir id is the time in ms
 * then 16 random bits. */
static void test_chunked_20mib(void **state)
{
	char file[SHORT_CAP], path[SHORT_CAP], line[PATH_CAP], why[256];
	unsigned char *data = malloc(BIG_SIZE);
	struct timespec t0, t1;
	struct manifest m;
	uint64_t id, ms0, ms1;
	int64_t took;
	struct itest_run r;

	(void)state;
	assert_non_null(data);
	fill(data, BIG_SIZE, 20);
	itest_local_file(file, sizeof(file), tmpdir, "big.bin", data, BIG_SIZE);
	itest_node(path, sizeof(path), "big");

	clock_gettime(CLOCK_REALTIME, &t0);
	took = zkw_clock_mono_ms();
	r = push("-z", hosts, "--parent", root, "-i", "big", "-f", file, "--chunked", NULL);
	took = zkw_clock_mono_ms() - took;
	clock_gettime(CLOCK_REALTIME, &t1);
	ITEST_EXPECT_RUN(r, 0);
	m = read_manifest(path);
	assert_int_equal(m.chunks, (BIG_SIZE + CHUNK_DEFAULT - 1) / CHUNK_DEFAULT); /* 21 */
	snprintf(line, sizeof(line), "dir %s\n", m.dir);
	ITEST_EXPECT_IN(r, out, line);
	snprintf(line, sizeof(line), "xxh3 %016" PRIx64 "\n", XXH3_64bits(data, BIG_SIZE));
	ITEST_EXPECT_IN(r, out, line);
	itest_run_free(&r);
	printf("# 20 MiB chunked push: %" PRId64 " ms\n", took);
	expect_chunked(path, data, BIG_SIZE, CHUNK_DEFAULT);

	/* The id: ms << 16 | 16 random bits, within the run. */
	id = strtoull(m.id, NULL, 16);
	ms0 = (uint64_t)t0.tv_sec * 1000 + (uint64_t)t0.tv_nsec / 1000000;
	ms1 = (uint64_t)t1.tv_sec * 1000 + (uint64_t)t1.tv_nsec / 1000000;
	if ((id >> 16) < ms0 || (id >> 16) > ms1)
		fail_msg("dir id %s: %" PRIu64 " ms, not within the push (%" PRIu64 "..%" PRIu64 ")", m.id,
		         id >> 16, ms0, ms1);
	free(data);
	/* 20 MiB is much for the test server's heap: gone now. */
	assert_int_equal(zkw_zk_delete_tree(zh, path, why, sizeof(why)), 0);
}

/* Pushes 1, 2, 3 (--grace 3600), 4 (--grace 0), then plain content twice:
 * the previous directory is kept for one push, young ones for the grace,
 * and the rest go. */
static void test_chunked_switch_and_grace(void **state)
{
	char file[SHORT_CAP], path[SHORT_CAP], want[256], got[256];
	char a[ID_LEN + 1], b[ID_LEN + 1], c[ID_LEN + 1], d[ID_LEN + 1];
	unsigned char data[5000];
	struct itest_run r;

	(void)state;
	itest_node(path, sizeof(path), "switch");
	fill(data, sizeof(data), 1);
	itest_local_file(file, sizeof(file), tmpdir, "v1", data, sizeof(data));
	push_chunked_ok("switch", file, NULL, NULL, a);
	expect_chunked(path, data, sizeof(data), 1000);
	chunk_dirs(path, got, sizeof(got));
	assert_string_equal(got, a);

	/* Second: switches to a new dir, keeps the first (the previous). */
	fill(data, sizeof(data), 2);
	itest_local_file(file, sizeof(file), tmpdir, "v2", data, sizeof(data));
	push_chunked_ok("switch", file, NULL, NULL, b);
	assert_true(strcmp(b, a) > 0); /* ids sort by creation */
	expect_chunked(path, data, sizeof(data), 1000);
	snprintf(want, sizeof(want), "%s,%s", a, b);
	chunk_dirs(path, got, sizeof(got));
	assert_string_equal(got, want);

	/* Third, with a long grace: the first is no longer the previous one,
	 * but young: kept. */
	fill(data, sizeof(data), 3);
	itest_local_file(file, sizeof(file), tmpdir, "v3", data, sizeof(data));
	push_chunked_ok("switch", file, "--grace", "3600", c);
	snprintf(want, sizeof(want), "%s,%s,%s", a, b, c);
	chunk_dirs(path, got, sizeof(got));
	assert_string_equal(got, want);

	/* Fourth, grace 0: all but the new one and the previous one go. */
	fill(data, sizeof(data), 4);
	itest_local_file(file, sizeof(file), tmpdir, "v4", data, sizeof(data));
	push_chunked_ok("switch", file, "--grace", "0", d);
	expect_chunked(path, data, sizeof(data), 1000);
	snprintf(want, sizeof(want), "%s,%s", c, d);
	chunk_dirs(path, got, sizeof(got));
	assert_string_equal(got, want);

	/* Plain content replaces the manifest; the directory it named is the
	 * previous one now: kept; c goes. */
	itest_local_file(file, sizeof(file), tmpdir, "plain", "plain again", 11);
	r = push("-z", hosts, "--parent", root, "-i", "switch", "-f", file, "--grace", "0", NULL);
	ITEST_EXPECT_RUN(r, 0);
	ITEST_EXPECT_IN(r, out, "updating conf file\n");
	itest_run_free(&r);
	expect_data(path, "plain again");
	chunk_dirs(path, got, sizeof(got));
	assert_string_equal(got, d);

	/* Plain after plain: no previous directory; d goes. */
	r = push("-z", hosts, "--parent", root, "-i", "switch", "-f", file, "--grace", "0", NULL);
	ITEST_EXPECT_RUN(r, 0);
	itest_run_free(&r);
	chunk_dirs(path, got, sizeof(got));
	assert_string_equal(got, "");
}

/* Above --max-bytes, content is chunked without --chunked; at it, plain. */
static void test_chunked_above_max_bytes(void **state)
{
	const size_t big = 1024 * 1024 + 1;
	char file[SHORT_CAP], path[SHORT_CAP];
	unsigned char *data = malloc(big);
	struct itest_run r;

	(void)state;
	assert_non_null(data);
	itest_node(path, sizeof(path), "auto");
	itest_local_file(file, sizeof(file), tmpdir, "ten", "ten bytes!", 10);
	r = push("-z", hosts, "--parent", root, "-i", "auto", "-f", file, "--max-bytes", "10", NULL);
	ITEST_EXPECT_RUN(r, 0);
	ITEST_EXPECT_IN(r, out, "creating conf node\n");
	itest_run_free(&r);
	expect_data(path, "ten bytes!");

	itest_local_file(file, sizeof(file), tmpdir, "eleven", "eleven byte", 11);
	r = push("-z", hosts, "--parent", root, "-i", "auto", "-f", file, "--max-bytes", "10", NULL);
	ITEST_EXPECT_RUN(r, 0);
	ITEST_EXPECT_IN(r, out, "(chunked): 11 bytes in 1 chunks");
	itest_run_free(&r);
	expect_chunked(path, "eleven byte", 11, CHUNK_DEFAULT);

	/* A real 1 MiB + 1 file against the default limit: 2 chunks. */
	fill(data, big, 11);
	itest_local_file(file, sizeof(file), tmpdir, "huge.bin", data, big);
	r = push("-z", hosts, "--parent", root, "-i", "auto", "-f", file, NULL);
	ITEST_EXPECT_RUN(r, 0);
	itest_run_free(&r);
	expect_chunked(path, data, big, CHUNK_DEFAULT);
	free(data);
}

/* Content exactly a multiple of the chunk size (no empty last chunk), one
 * byte more, 0 bytes (chunks 0, an empty directory), chunk size 1, and
 * the option's range. */
static void test_chunk_size_edges(void **state)
{
	char file[SHORT_CAP], path[SHORT_CAP], id[ID_LEN + 1];
	unsigned char data[3001];
	struct manifest m;
	struct itest_run r;

	(void)state;
	itest_node(path, sizeof(path), "edges");
	fill(data, sizeof(data), 5);
	itest_local_file(file, sizeof(file), tmpdir, "3000", data, 3000);
	push_chunked_ok("edges", file, NULL, NULL, id);
	m = read_manifest(path);
	assert_int_equal(m.chunks, 3);
	expect_chunked(path, data, 3000, 1000);

	itest_local_file(file, sizeof(file), tmpdir, "3001", data, 3001);
	push_chunked_ok("edges", file, NULL, NULL, id);
	m = read_manifest(path);
	assert_int_equal(m.chunks, 4); /* the last one 1 byte */
	expect_chunked(path, data, 3001, 1000);

	/* Empty content: size 0, chunks 0, the dir there and empty. */
	itest_local_file(file, sizeof(file), tmpdir, "empty", "", 0);
	push_chunked_ok("edges", file, NULL, NULL, id);
	m = read_manifest(path);
	assert_int_equal(m.size, 0);
	assert_int_equal(m.chunks, 0);
	assert_int_equal(m.hash, XXH3_64bits("", 0));
	assert_true(node_exists(m.dir));
	expect_chunked(path, "", 0, 1000);

	/* Chunk size 1: a chunk per byte. */
	itest_local_file(file, sizeof(file), tmpdir, "five", "12345", 5);
	r = push("-z", hosts, "--parent", root, "-i", "edges", "-f", file, "--chunked", "--chunk-size", "1",
	         NULL);
	ITEST_EXPECT_RUN(r, 0);
	itest_run_free(&r);
	expect_chunked(path, "12345", 5, 1);
	m = read_manifest(path);
	expect_children(m.dir, "00000000,00000001,00000002,00000003,00000004");

	/* The range, and the options that do not go with a bundle or a wipe. */
	{
		const char *bad[][2] = {
		        {"--chunk-size", "0"}, {"--chunk-size", "1048577"}, {"--grace", "-1"}};

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			r = push("-z", hosts, "--parent", root, "-i", "edges", "-f", file, bad[i][0],
			         bad[i][1], NULL);
			ITEST_EXPECT_RUN(r, 2);
			ITEST_EXPECT_IN(r, err, bad[i][0]);
			itest_run_free(&r);
		}
		r = push("-z", hosts, "--parent", root, "-i", "edges", "--bundle", tmpdir, "--chunked", NULL);
		ITEST_EXPECT_RUN(r, 2);
		itest_run_free(&r);
		r = push("-z", hosts, "--parent", root, "-i", "edges", "--wipe", "--chunk-size", "5", NULL);
		ITEST_EXPECT_RUN(r, 2);
		itest_run_free(&r);
		r = push("-z", hosts, "--parent", root, "-i", "edges", "--bundle", tmpdir, "-f", file, NULL);
		ITEST_EXPECT_RUN(r, 2);
		itest_run_free(&r);
	}
	/* The manifest is still the chunk-size-1 one. */
	expect_chunked(path, "12345", 5, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_bundle_create_update_delete),
	        cmocka_unit_test(test_bundle_one_transaction),
	        cmocka_unit_test(test_bundle_refusals_push_nothing),
	        cmocka_unit_test(test_bundle_too_large_refused),
	        cmocka_unit_test(test_chunked_20mib),
	        cmocka_unit_test(test_chunked_switch_and_grace),
	        cmocka_unit_test(test_chunked_above_max_bytes),
	        cmocka_unit_test(test_chunk_size_edges),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
