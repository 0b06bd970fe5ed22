/* SPDX-License-Identifier: Apache-2.0 */
/* test_bundle.c - the bundle layout of include/zkw/bundle.h: a znode's
 * children as one snapshot, its reader and its encoder.
 *
 *   - the encoder writes exactly the documented layout (compared with a
 *     bundle laid out by hand, field by field at the spec's offsets);
 *   - round trips of 0, 1 and 100 children; zkw_bundle_find hits (first,
 *     last, middle, a prefix of another name, bytes above 0x7f) and misses
 *     (before, after, between, longer, shorter, empty);
 *   - the encoder refuses unsorted, repeated and impossible names, data
 *     without a pointer, sizes past 32 bits (-EINVAL) and a short buffer
 *     (-ENOBUFS), writing nothing; zkw_bundle_sort_inputs sorts in the
 *     order the reader searches;
 *   - the reader refuses another version (-EPROTO), a foreign magic,
 *     every truncation, every out-of-range count, size and offset (those
 *     whose 32-bit sum wraps too), names without their NUL, empty, with a
 *     NUL or '/' inside, "." and "..", names out of order or repeated
 *     (-EBADMSG); it accepts larger header and entry sizes, skipping what
 *     it does not know;
 *   - every single-byte change of a small bundle, to every value, and
 *     20,000 random multi-byte changes: refused, or read entirely within
 *     the content. Every input sits at the very end of a page followed by
 *     an inaccessible one, so a read past its end faults.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include <zkw/bundle.h>

#include "guard.h"

/* ---- a bundle laid out by hand: the spec's offsets, not the header's structs */

struct child {
	const char *name;
	size_t name_len;
	const char *data;
	size_t len;
	int64_t mzxid;
	int32_t version;
};

#define CHILD(name, data, mzxid, version)                                                                    \
	{                                                                                                    \
		name, sizeof(name) - 1, data, sizeof(data) - 1, mzxid, version                               \
	}

static void put16(unsigned char *p, size_t off, uint16_t v)
{
	memcpy(p + off, &v, 2); /* native byte order, as the spec says */
}

static void put32(unsigned char *p, size_t off, uint32_t v)
{
	memcpy(p + off, &v, 4);
}

static void put64(unsigned char *p, size_t off, uint64_t v)
{
	memcpy(p + off, &v, 8);
}

/* Lay out c[0, n) with the given header and entry sizes (the bytes a
 * version-1 reader does not know are filled with 0xAA); the total length. */
static size_t hand_build(unsigned char *out, size_t cap, uint16_t header_size, uint32_t entry_size,
                         const struct child *c, uint32_t n, int64_t pzxid, int32_t cversion)
{
	size_t names = header_size + (size_t)n * entry_size, data = names, total;

	for (uint32_t i = 0; i < n; i++)
		data += c[i].name_len + 1;
	total = data;
	for (uint32_t i = 0; i < n; i++)
		total += c[i].len;
	assert_true(total <= cap);
	memset(out, 0xAA, names);
	put32(out, 0, 0x31424b5a);
	put16(out, 4, 1);
	put16(out, 6, header_size);
	put32(out, 8, n);
	put32(out, 12, entry_size);
	put64(out, 16, (uint64_t)pzxid);
	put32(out, 24, (uint32_t)cversion);
	put32(out, 28, 0);
	for (uint32_t i = 0; i < n; i++) {
		size_t e = header_size + (size_t)i * entry_size;

		put32(out, e, (uint32_t)names);
		put32(out, e + 4, (uint32_t)c[i].name_len);
		put32(out, e + 8, (uint32_t)data);
		put32(out, e + 12, (uint32_t)c[i].len);
		put64(out, e + 16, (uint64_t)c[i].mzxid);
		put32(out, e + 24, (uint32_t)c[i].version);
		put32(out, e + 28, 0);
		memcpy(out + names, c[i].name, c[i].name_len);
		out[names + c[i].name_len] = '\0';
		names += c[i].name_len + 1;
		memcpy(out + data, c[i].data, c[i].len);
		data += c[i].len;
	}
	return total;
}

static void to_inputs(zkw_bundle_input *in, const struct child *c, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		in[i].name = c[i].name;
		in[i].name_len = c[i].name_len;
		in[i].data = c[i].data;
		in[i].len = c[i].len;
		in[i].mzxid = c[i].mzxid;
		in[i].version = c[i].version;
	}
}

/* Three children, sorted: the small bundle the corruption tests mutate. */
static const struct child small[] = {
        CHILD("a", "1", 0x100000001, 3),
        CHILD("bc", "22", 0x100000002, 0),
        CHILD("d", "", 0x100000003, 7),
};
#define SMALL_N 3u

/* ---- what a reader returns must lie in the content ------------------------ */

static bool inside(const void *p, size_t n, const unsigned char *at, size_t len)
{
	const unsigned char *q = (const unsigned char *)p;

	return q >= at && q <= at + len && n <= (size_t)(at + len - q);
}

/* Read every entry of an opened bundle: each within [at, at + len), its
 * name NUL-terminated there with no NUL inside, found again by name. */
static void expect_readable_within(const zkw_bundle *b, const unsigned char *at, size_t len, const char *what)
{
	zkw_bundle_entry e, f;

	for (uint32_t i = 0; i < b->count; i++) {
		int rc;

		memset(&e, 0, sizeof(e));
		rc = zkw_bundle_entry_at(b, i, &e);

		if (rc != 0)
			fail_msg("%s: entry %u of an opened bundle: %d", what, i, rc);
		if (!inside(e.name, e.name_len + 1, at, len) || !inside(e.data, e.len, at, len))
			fail_msg("%s: entry %u points outside the content", what, i);
		if (e.name[e.name_len] != '\0' || strlen(e.name) != e.name_len || e.name_len == 0)
			fail_msg("%s: entry %u: a bad name was accepted", what, i);
		rc = zkw_bundle_find_n(b, e.name, e.name_len, &f);
		if (rc != 0 || f.name != e.name || f.data != e.data)
			fail_msg("%s: entry %u not found by its name (%d)", what, i, rc);
	}
	assert_int_equal(zkw_bundle_entry_at(b, b->count, &e), -ERANGE);
}

/* Open a changed copy: refused (-EBADMSG or -EPROTO), or every entry reads
 * within the content. *accepted counts the latter. */
static void open_mutated(const unsigned char *m, size_t n, const char *what, unsigned *accepted)
{
	unsigned char *at = guard_place(m, n);
	zkw_bundle b;
	int rc = zkw_bundle_open(&b, at, n);

	if (rc == 0) {
		expect_readable_within(&b, at, n, what);
		++*accepted;
	} else if (rc != -EBADMSG && rc != -EPROTO) {
		fail_msg("%s: open gave %d", what, rc);
	}
}

/* ---- layout ---------------------------------------------------------------- */

/* The encoder writes byte for byte what the spec describes. */
static void test_encoder_writes_the_documented_layout(void **state)
{
	static unsigned char want[512], got[512];
	zkw_bundle_input in[SMALL_N];
	size_t n, size;

	(void)state;
	n = hand_build(want, sizeof(want), 32, 32, small, SMALL_N, 0x7000000000000001, 42);
	assert_int_equal(n, 32 + 3 * 32 + (2 + 3 + 2) + (1 + 2 + 0));
	to_inputs(in, small, SMALL_N);
	size = zkw_bundle_encoded_size(in, SMALL_N);
	assert_int_equal(size, n);
	memset(got, 0x55, sizeof(got));
	assert_int_equal(zkw_bundle_encode(got, sizeof(got), in, SMALL_N, 0x7000000000000001, 42), 0);
	assert_memory_equal(got, want, n);
	assert_int_equal(got[n], 0x55); /* not a byte more */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	assert_memory_equal(got, "ZKB1\x01\x00\x20\x00\x03\x00\x00\x00\x20\x00\x00\x00", 16);
#endif
	/* the names, each with its NUL, then the data */
	assert_memory_equal(got + 128, "a\0bc\0d\000122", 10); /* "d", NUL (octal \000), "122" */
}

/* ---- round trips ----------------------------------------------------------- */

static void round_trip(uint32_t n)
{
	static char names[100][24], data[100][200];
	static zkw_bundle_input in[100];
	static unsigned char buf[GUARD_MAX];
	zkw_bundle b;
	zkw_bundle_entry e;
	unsigned char *at;
	size_t size;

	assert_true(n <= 100);
	/* Written in reverse order, sorted by the library. */
	for (uint32_t i = 0; i < n; i++) {
		uint32_t k = n - 1 - i;

		snprintf(names[k], sizeof(names[k]), "child-%03u", k);
		memset(data[k], 'a' + (int)(k % 26), k * 2 % 200);
		in[i].name = names[k];
		in[i].name_len = strlen(names[k]);
		in[i].data = data[k];
		in[i].len = k * 2 % 200; /* 0 for the first: an empty child */
		in[i].mzxid = 0x200000000 + k;
		in[i].version = (int32_t)k;
	}
	if (n > 1)
		assert_int_equal(zkw_bundle_encode(buf, sizeof(buf), in, n, 1, 1), -EINVAL); /* not sorted */
	zkw_bundle_sort_inputs(in, n);
	size = zkw_bundle_encoded_size(in, n);
	assert_true(size >= 32 && size <= sizeof(buf));
	if (n == 0)
		assert_int_equal(size, 32);
	assert_int_equal(zkw_bundle_encode(buf, sizeof(buf), in, n, -5, 99), 0);
	at = guard_place(buf, size);

	assert_int_equal(zkw_bundle_open(&b, at, size), 0);
	assert_int_equal(b.count, n);
	assert_int_equal(b.header_size, 32);
	assert_int_equal(b.entry_size, 32);
	assert_int_equal(b.pzxid, -5);
	assert_int_equal(b.cversion, 99);
	assert_true(b.base == at && b.len == size);
	for (uint32_t k = 0; k < n; k++) {
		assert_int_equal(zkw_bundle_entry_at(&b, k, &e), 0);
		assert_string_equal(e.name, names[k]);
		assert_int_equal(e.name_len, strlen(names[k]));
		assert_int_equal(e.len, k * 2 % 200);
		if (e.len)
			assert_memory_equal(e.data, data[k], e.len);
		assert_int_equal(e.mzxid, 0x200000000 + k);
		assert_int_equal(e.version, (int32_t)k);
		memset(&e, 0, sizeof(e));
		assert_int_equal(zkw_bundle_find(&b, names[k], &e), 0);
		assert_string_equal(e.name, names[k]);
		assert_int_equal(e.version, (int32_t)k);
	}
	assert_int_equal(zkw_bundle_entry_at(&b, n, &e), -ERANGE);
	assert_int_equal(zkw_bundle_entry_at(&b, UINT32_MAX, &e), -ERANGE);
	assert_int_equal(zkw_bundle_find(&b, "child-", &e), -ENOENT);
	expect_readable_within(&b, at, size, "round trip");
}

static void test_round_trip_0_1_100(void **state)
{
	(void)state;
	round_trip(0);
	round_trip(1);
	round_trip(100);
}

/* ---- find ------------------------------------------------------------------ */

static void expect_found(const zkw_bundle *b, const char *name, size_t len, int32_t version)
{
	zkw_bundle_entry e;
	int rc;

	memset(&e, 0, sizeof(e));
	rc = zkw_bundle_find_n(b, name, len, &e);
	if (rc != 0 || e.version != version || e.name_len != len || memcmp(e.name, name, len) != 0)
		fail_msg("find \"%.*s\": %d, version %d (want 0, version %d)", (int)len, name, rc, e.version,
		         version);
}

static void expect_missing(const zkw_bundle *b, const char *name, size_t len)
{
	zkw_bundle_entry e;
	int rc = zkw_bundle_find_n(b, name, len, &e);

	if (rc != -ENOENT)
		fail_msg("find \"%.*s\": %d, want -ENOENT", (int)len, name, rc);
}

#define FOUND(b, lit, v) expect_found(b, lit, sizeof(lit) - 1, v)
#define MISSING(b, lit)  expect_missing(b, lit, sizeof(lit) - 1)

static void test_find_hits_and_misses(void **state)
{
	/* Sorted bytewise, a prefix first, 0x80 after 0x7f (unsigned bytes). */
	static const struct child c[] = {
	        CHILD("B", "", 1, 0),     CHILD("a", "", 2, 1),           CHILD("ab", "", 3, 2),
	        CHILD("abc", "", 4, 3),   CHILD("abd", "", 5, 4),         CHILD("b\x7f", "", 6, 5),
	        CHILD("b\x80", "", 7, 6), CHILD("caf\xc3\xa9", "", 8, 7), CHILD("zz", "", 9, 8),
	};
	uint32_t n = sizeof(c) / sizeof(c[0]);
	static unsigned char buf[1024];
	zkw_bundle_input in[sizeof(c) / sizeof(c[0])];
	zkw_bundle_entry e;
	zkw_bundle b;
	size_t size;

	(void)state;
	to_inputs(in, c, n);
	size = zkw_bundle_encoded_size(in, n);
	assert_int_equal(zkw_bundle_encode(buf, sizeof(buf), in, n, 0, 0), 0);
	assert_int_equal(zkw_bundle_open(&b, guard_place(buf, size), size), 0);
	FOUND(&b, "B", 0);   /* first */
	FOUND(&b, "zz", 8);  /* last */
	FOUND(&b, "abc", 3); /* middle */
	FOUND(&b, "a", 1);   /* a prefix of three others */
	FOUND(&b, "ab", 2);  /* a prefix of two others */
	FOUND(&b, "abd", 4);
	FOUND(&b, "b\x7f", 5);
	FOUND(&b, "b\x80", 6);
	FOUND(&b, "caf\xc3\xa9", 7);
	assert_int_equal(zkw_bundle_find(&b, "abc", &e), 0);
	assert_int_equal(e.mzxid, 4);
	MISSING(&b, "");     /* before everything */
	MISSING(&b, "A");    /* before the first but one */
	MISSING(&b, "0");    /* before the first */
	MISSING(&b, "zzz");  /* after the last, longer */
	MISSING(&b, "z");    /* a prefix of the last */
	MISSING(&b, "\xff"); /* after everything */
	MISSING(&b, "aa");   /* between */
	MISSING(&b, "abcd"); /* longer than a name */
	MISSING(&b, "b");    /* shorter than two names */
	MISSING(&b, "caf");
	MISSING(&b, "a\0"); /* a NUL is never part of a name */
	MISSING(&b, "b\x81");

	/* And in the empty bundle. */
	assert_int_equal(zkw_bundle_encode(buf, sizeof(buf), NULL, 0, 0, 0), 0);
	assert_int_equal(zkw_bundle_open(&b, guard_place(buf, 32), 32), 0);
	MISSING(&b, "a");
	assert_int_equal(zkw_bundle_entry_at(&b, 0, &e), -ERANGE);
}

/* ---- the encoder ------------------------------------------------------------ */

static void expect_encode(const zkw_bundle_input *in, uint32_t n, size_t cap, int want, const char *what)
{
	static unsigned char buf[256];
	int rc;

	memset(buf, 0x55, sizeof(buf));
	assert_true(cap <= sizeof(buf));
	rc = zkw_bundle_encode(buf, cap, in, n, 1, 1);
	if (rc != want)
		fail_msg("%s: encode gave %d, want %d", what, rc, want);
	if (rc != 0)
		for (size_t i = 0; i < sizeof(buf); i++)
			if (buf[i] != 0x55)
				fail_msg("%s: a refused encode wrote byte %zu", what, i);
}

static void test_encoder_refuses_what_it_cannot_write(void **state)
{
	zkw_bundle_input in[2] = {{"a", 1, "x", 1, 1, 1}, {"b", 1, "y", 1, 2, 2}};
	zkw_bundle_input one[1] = {{"a", 1, "x", 1, 1, 1}};
	size_t size;

	(void)state;
	size = zkw_bundle_encoded_size(in, 2);
	assert_int_equal(size, 32 + 64 + 4 + 2);
	expect_encode(in, 2, size, 0, "exact size");
	expect_encode(in, 2, size - 1, -ENOBUFS, "one byte short");
	expect_encode(in, 2, 0, -ENOBUFS, "no room");
	assert_int_equal(zkw_bundle_encode(NULL, 0, NULL, 0, 0, 0), -ENOBUFS);

	in[1].name = "a";
	expect_encode(in, 2, size, -EINVAL, "repeated name");
	in[0].name = "b";
	expect_encode(in, 2, size, -EINVAL, "names out of order");
	in[0].name = "a";
	in[1].name = "b";

	static const struct {
		const char *name;
		size_t len;
	} bad[] = {{"", 0}, {"a\0b", 3}, {"a/b", 3}, {"/", 1}, {".", 1}, {"..", 2}, {"\0", 1}};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		one[0].name = bad[i].name;
		one[0].name_len = bad[i].len;
		expect_encode(one, 1, 200, -EINVAL, "a name no child has");
	}
	static const char *good[] = {"...", ".a", "a.", "-", " "};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		one[0].name = good[i];
		one[0].name_len = strlen(good[i]);
		expect_encode(one, 1, 200, 0, good[i]);
	}
	one[0].name = NULL;
	one[0].name_len = 1;
	expect_encode(one, 1, 200, -EINVAL, "no name");
	one[0].name = "a";
	one[0].data = NULL;
	one[0].len = 1;
	expect_encode(one, 1, 200, -EINVAL, "data NULL with a length");
	one[0].len = 0;
	expect_encode(one, 1, 200, 0, "data NULL, empty");

	/* Sizes past 32 bits: refused before any byte is looked at. */
	one[0].data = "x";
	one[0].len = (size_t)UINT32_MAX + 1;
	assert_int_equal(zkw_bundle_encoded_size(one, 1), 0);
	expect_encode(one, 1, 200, -EINVAL, "data above 4 GiB");
	one[0].len = 1;
	one[0].name_len = UINT32_MAX;
	assert_int_equal(zkw_bundle_encoded_size(one, 1), 0);
	expect_encode(one, 1, 200, -EINVAL, "name above 4 GiB");
	one[0].name_len = SIZE_MAX;
	assert_int_equal(zkw_bundle_encoded_size(one, 1), 0);
	in[0].len = in[1].len = 0x80000000u; /* each fits, the sum does not */
	assert_int_equal(zkw_bundle_encoded_size(in, 2), 0);
	expect_encode(in, 2, 200, -EINVAL, "a total above 4 GiB");
	in[0].len = UINT32_MAX - 32 - 32 - 2; /* the largest that fits, exactly */
	assert_int_equal(zkw_bundle_encoded_size(in, 1), UINT32_MAX);
	in[0].len++;
	assert_int_equal(zkw_bundle_encoded_size(in, 1), 0);
}

static void test_sort_inputs_is_the_readers_order(void **state)
{
	static const char *names[] = {"b", "a\x80", "a", "ab", "a\x7f", "B", "\xff", "aa", "a\x01"};
	static const char *want[] = {"B", "a", "a\x01", "aa", "ab", "a\x7f", "a\x80", "b", "\xff"};
	uint32_t n = sizeof(names) / sizeof(names[0]);
	zkw_bundle_input in[sizeof(names) / sizeof(names[0])];
	static unsigned char buf[1024];
	zkw_bundle b;

	(void)state;
	for (uint32_t i = 0; i < n; i++) {
		memset(&in[i], 0, sizeof(in[i]));
		in[i].name = names[i];
		in[i].name_len = strlen(names[i]);
		in[i].version = (int32_t)i;
	}
	zkw_bundle_sort_inputs(in, n);
	for (uint32_t i = 0; i < n; i++)
		assert_string_equal(in[i].name, want[i]);
	assert_int_equal(zkw_bundle_encode(buf, sizeof(buf), in, n, 0, 0), 0);
	assert_int_equal(zkw_bundle_open(&b, buf, zkw_bundle_encoded_size(in, n)), 0);
	for (uint32_t i = 0; i < n; i++)
		expect_found(&b, names[i], strlen(names[i]), (int32_t)i);
	assert_true(zkw_bundle_name_cmp("a", 1, "ab", 2) < 0);
	assert_true(zkw_bundle_name_cmp("ab", 2, "a", 1) > 0);
	assert_true(zkw_bundle_name_cmp("a\x80", 2, "a\x7f", 2) > 0);
	assert_int_equal(zkw_bundle_name_cmp("ab", 2, "abc", 2), 0);
	zkw_bundle_sort_inputs(NULL, 0);
}

/* ---- the reader against what no encoder writes -------------------------------- */

static unsigned char hostile[1024];

/* The small bundle, laid out by hand, in hostile[]; its length. */
static size_t small_bundle(void)
{
	memset(hostile, 0, sizeof(hostile));
	return hand_build(hostile, sizeof(hostile), 32, 32, small, SMALL_N, 9, 8);
}

static int open_placed(size_t n)
{
	zkw_bundle b;

	return zkw_bundle_open(&b, guard_place(hostile, n), n);
}

#define HEADER_U32(off, v, want)                                                                             \
	do {                                                                                                 \
		size_t n_ = small_bundle();                                                                  \
		put32(hostile, off, v);                                                                      \
		int rc_ = open_placed(n_);                                                                   \
		if (rc_ != (want))                                                                           \
			fail_msg("u32 at %d = 0x%x: open gave %d, want %d", (int)(off), (unsigned)(v), rc_,  \
			         (int)(want));                                                               \
	} while (0)

static void test_version_and_magic(void **state)
{
	size_t n;

	(void)state;
	n = small_bundle();
	assert_int_equal(open_placed(n), 0);
	for (uint16_t v = 0; v < 8; v++) {
		n = small_bundle();
		put16(hostile, 4, v);
		assert_int_equal(open_placed(n), v == 1 ? 0 : -EPROTO);
	}
	n = small_bundle();
	put16(hostile, 4, 0xffff);
	assert_int_equal(open_placed(n), -EPROTO);
	/* A version 2 bundle shorter than a version 1 header: still -EPROTO. */
	n = small_bundle();
	put16(hostile, 4, 2);
	assert_int_equal(open_placed(8), -EPROTO);
	HEADER_U32(0, 0x32424b5a, -EBADMSG); /* "ZKB2" is no bundle of any version */
	HEADER_U32(0, 0, -EBADMSG);
	HEADER_U32(0, 0x5a4b4231, -EBADMSG); /* the magic in the other byte order */
	assert_int_equal(zkw_bundle_open(&(zkw_bundle){0}, NULL, 0), -EBADMSG);
	assert_int_equal(zkw_bundle_open(&(zkw_bundle){0}, NULL, 100), -EBADMSG);
}

static void test_every_truncation_refused(void **state)
{
	size_t n;

	(void)state;
	n = small_bundle();
	assert_int_equal(open_placed(n), 0);
	for (size_t len = 0; len < n; len++) {
		int rc = open_placed(len);

		if (rc != -EBADMSG)
			fail_msg("the small bundle cut to %zu of %zu bytes: open gave %d", len, n, rc);
	}
	/* Empty data last: cutting it short still leaves no room for its NUL... */
	static const struct child names_last[] = {CHILD("a", "", 1, 1), CHILD("b", "", 2, 2)};
	n = hand_build(hostile, sizeof(hostile), 32, 32, names_last, 2, 0, 0);
	assert_int_equal(open_placed(n), 0);
	for (size_t len = 0; len < n; len++)
		assert_int_equal(open_placed(len), -EBADMSG);
	/* ... and a header alone is an empty bundle only when count says 0. */
	static const struct child none[1];
	n = hand_build(hostile, sizeof(hostile), 32, 32, none, 0, 0, 0);
	assert_int_equal(n, 32);
	assert_int_equal(open_placed(32), 0);
	for (size_t len = 0; len < 32; len++)
		assert_int_equal(open_placed(len), -EBADMSG);
}

static void test_sizes_counts_and_offsets_out_of_range(void **state)
{
	const size_t e0 = 32, e1 = 64, e2 = 96; /* the small bundle's entries */
	size_t n;

	(void)state;
	n = small_bundle();
	/* count */
	HEADER_U32(8, 4, -EBADMSG);
	HEADER_U32(8, UINT32_MAX, -EBADMSG);
	HEADER_U32(8, 0x08000000, -EBADMSG); /* * 32 = 2^32: wraps to 0 in 32 bits */
	HEADER_U32(8, 2, 0);                 /* fewer entries than there is room for: fine */
	HEADER_U32(8, 0, 0);
	/* entry_size */
	HEADER_U32(12, 0, -EBADMSG);
	HEADER_U32(12, 31, -EBADMSG);
	HEADER_U32(12, UINT32_MAX, -EBADMSG);
	HEADER_U32(12, 0x80000000u, -EBADMSG); /* * 3 wraps in 32 bits */
	/* header_size (u16 at 6): below 32 or past the end refused; in
	 * between the table is read shifted, refused or read within. */
	for (uint32_t hs = 0; hs <= 0xffff; hs += (hs < 160 ? 1 : 97)) {
		unsigned accepted = 0;
		char what[32];

		n = small_bundle();
		put16(hostile, 6, (uint16_t)hs);
		snprintf(what, sizeof(what), "header_size %u", hs);
		open_mutated(hostile, n, what, &accepted);
		if ((hs < 32 || hs > n - 3 * 32) && accepted)
			fail_msg("header_size %u of a %zu-byte bundle accepted", hs, n);
		if (hs == 32 && !accepted)
			fail_msg("header_size 32 refused");
	}
	/* The header alone (no entries) is checked as much. */
	static const struct child none[1];
	const struct {
		uint16_t header_size;
		uint32_t entry_size;
		int want;
	} empty[] = {{32, 32, 0},        {40, 32, 0},       {32, 1000, 0},     {41, 32, -EBADMSG},
	             {31, 32, -EBADMSG}, {0, 32, -EBADMSG}, {32, 0, -EBADMSG}, {32, 31, -EBADMSG}};
	for (size_t i = 0; i < sizeof(empty) / sizeof(empty[0]); i++) {
		assert_int_equal(hand_build(hostile, sizeof(hostile), 32, 32, none, 0, 0, 0), 32);
		memset(hostile + 32, 0, 8);
		put16(hostile, 6, empty[i].header_size);
		put32(hostile, 12, empty[i].entry_size);
		if (open_placed(40) != empty[i].want) /* 40 bytes: 8 past the header */
			fail_msg("an empty bundle of 40 bytes, header_size %u, entry_size %u: %d, want %d",
			         empty[i].header_size, empty[i].entry_size, open_placed(40), empty[i].want);
	}
	/* An entry's ranges, those whose 32-bit sums wrap included. */
	const struct {
		size_t off;
		uint32_t v;
	} bad[] = {
	        {e0 + 0, UINT32_MAX},      /* name_off + 1 wraps to 0 */
	        {e0 + 0, (uint32_t)n},     /* name at the end: no room */
	        {e0 + 0, (uint32_t)n - 1}, /* the last byte: no NUL after it */
	        {e0 + 4, UINT32_MAX},      /* name_len wraps */
	        {e0 + 4, 0},               /* empty name */
	        {e0 + 4, 2},               /* "a" + NUL: no NUL at name_off + 2 */
	        {e1 + 4, (uint32_t)n},     /* name_len past the content */
	        {e0 + 8, (uint32_t)n + 1}, /* data starts past the end */
	        {e0 + 8, UINT32_MAX},      /* data_off + 1 wraps */
	        {e0 + 12, UINT32_MAX},     /* data_len wraps */
	        {e0 + 12, (uint32_t)n},    /* data past the end */
	        {e2 + 8, 0xfffffff0u},     /* data_off + data_len (0) past the end */
	        {e1 + 12, 0xfffffffeu},    /* data_off + data_len wraps to 136 */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		HEADER_U32(bad[i].off, bad[i].v, -EBADMSG);
	/* Data ranges anywhere inside are the writer's business; at the very
	 * end with no bytes they are fine. */
	n = small_bundle();
	HEADER_U32(e2 + 8, (uint32_t)n, 0);
	HEADER_U32(e0 + 8, 0, 0);
	n = small_bundle();
	put32(hostile, e0 + 8, 0);
	put32(hostile, e0 + 12, (uint32_t)n); /* the whole content as data */
	assert_int_equal(open_placed(n), 0);
	/* Reserved words are ignored. */
	HEADER_U32(28, UINT32_MAX, 0);
	HEADER_U32(e1 + 28, UINT32_MAX, 0);
}

static void test_names_a_child_cannot_have_refused(void **state)
{
	static const struct {
		struct child c[2];
		const char *what;
	} cases[] = {
	        {{CHILD("a", "", 1, 1), CHILD("a", "", 2, 2)}, "a name twice"},
	        {{CHILD("b", "", 1, 1), CHILD("a", "", 2, 2)}, "names out of order"},
	        {{CHILD("ab", "", 1, 1), CHILD("a", "", 2, 2)}, "a prefix after the longer name"},
	        {{CHILD("a\x80", "", 1, 1), CHILD("a\x7f", "", 2, 2)}, "0x80 before 0x7f"},
	        {{CHILD("a", "", 1, 1), CHILD("b\0c", "", 2, 2)}, "a NUL inside a name"},
	        {{CHILD("a", "", 1, 1), CHILD("b/c", "", 2, 2)}, "a slash inside a name"},
	        {{CHILD("..", "", 1, 1), CHILD("a", "", 2, 2)}, "\"..\""},
	        {{CHILD(".", "", 1, 1), CHILD("a", "", 2, 2)}, "\".\""},
	        {{CHILD("", "", 1, 1), CHILD("a", "", 2, 2)}, "an empty name"},
	};
	static const struct child ok[] = {CHILD("...", "", 1, 1), CHILD(".a", "", 2, 2)};
	size_t n;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		n = hand_build(hostile, sizeof(hostile), 32, 32, cases[i].c, 2, 0, 0);
		if (open_placed(n) != -EBADMSG)
			fail_msg("%s: accepted", cases[i].what);
	}
	n = hand_build(hostile, sizeof(hostile), 32, 32, ok, 2, 0, 0);
	assert_int_equal(open_placed(n), 0);
}

/* Forward compatibility: a later writer's larger header and entries are
 * read, the bytes this reader does not know skipped. */
static void test_larger_header_and_entries_accepted(void **state)
{
	static const struct {
		uint16_t header_size;
		uint32_t entry_size;
	} sizes[] = {{32, 32}, {33, 32}, {48, 32}, {32, 33}, {32, 40}, {64, 64}, {4096, 100}};
	zkw_bundle_entry e;
	zkw_bundle b;
	static unsigned char buf[8192];

	(void)state;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t n = hand_build(buf, sizeof(buf), sizes[i].header_size, sizes[i].entry_size, small,
		                      SMALL_N, 77, 66);
		unsigned char *at = guard_place(buf, n);

		if (zkw_bundle_open(&b, at, n) != 0)
			fail_msg("header %u, entries %u: refused", sizes[i].header_size, sizes[i].entry_size);
		assert_int_equal(b.header_size, sizes[i].header_size);
		assert_int_equal(b.entry_size, sizes[i].entry_size);
		assert_int_equal(b.count, SMALL_N);
		assert_int_equal(b.pzxid, 77);
		assert_int_equal(b.cversion, 66);
		for (uint32_t k = 0; k < SMALL_N; k++) {
			assert_int_equal(zkw_bundle_entry_at(&b, k, &e), 0);
			assert_string_equal(e.name, small[k].name);
			assert_int_equal(e.len, small[k].len);
			assert_memory_equal(e.data, small[k].data, e.len);
			assert_int_equal(e.mzxid, small[k].mzxid);
			assert_int_equal(e.version, small[k].version);
		}
		assert_int_equal(zkw_bundle_find(&b, "bc", &e), 0);
		assert_memory_equal(e.data, "22", 2);
		expect_readable_within(&b, at, n, "larger sizes");
	}
}

/* A zkw_bundle filled in by hand (or changed after open) cannot steer the
 * accessors out of the content either. */
static void test_accessors_check_a_bundle_made_by_hand(void **state)
{
	zkw_bundle b, lie;
	zkw_bundle_entry e;
	size_t n;

	(void)state;
	n = small_bundle();
	assert_int_equal(zkw_bundle_open(&b, guard_place(hostile, n), n), 0);
	lie = b;
	lie.count = 1000;
	assert_int_equal(zkw_bundle_entry_at(&lie, 999, &e), -EBADMSG);
	assert_int_equal(zkw_bundle_entry_at(&lie, 2, &e), 0);
	assert_int_equal(zkw_bundle_find(&lie, "zz", &e), -EBADMSG); /* the search walks past the end */
	lie = b;
	lie.entry_size = 0;
	assert_int_equal(zkw_bundle_entry_at(&lie, 0, &e), -EBADMSG);
	lie = b;
	lie.header_size = UINT32_MAX;
	assert_int_equal(zkw_bundle_entry_at(&lie, 0, &e), -EBADMSG);
	lie = b;
	lie.len = 100; /* the names and data are beyond */
	assert_int_equal(zkw_bundle_entry_at(&lie, 0, &e), -EBADMSG);
	assert_int_equal(zkw_bundle_find(&lie, "a", &e), -EBADMSG);
}

/* ---- corruption ----------------------------------------------------------------- */

static void test_every_single_byte_change(void **state)
{
	unsigned char orig[1024], m[1024];
	unsigned accepted = 0, refused_version = 0;
	size_t n;
	char what[64];

	(void)state;
	n = small_bundle();
	memcpy(orig, hostile, n);
	for (size_t i = 0; i < n; i++) {
		for (unsigned v = 0; v < 256; v++) {
			zkw_bundle b;

			if (v == orig[i])
				continue;
			memcpy(m, orig, n);
			m[i] = (unsigned char)v;
			snprintf(what, sizeof(what), "byte %zu = 0x%02x", i, v);
			open_mutated(m, n, what, &accepted);
			if ((i == 4 || i == 5) && zkw_bundle_open(&b, guard_place(m, n), n) == -EPROTO)
				refused_version++;
		}
	}
	/* Both outcomes happen: the test exercises the reader's checks and its
	 * reads (data and reserved bytes change without harm). */
	print_message("%zu bytes x 255 values: %u accepted, %zu refused\n", n, accepted, 255 * n - accepted);
	assert_true(accepted > 255 * 10);
	assert_true(255 * n - accepted > 255 * 10);
	assert_int_equal(refused_version, 2 * 255);
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t next_random(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Several bytes at once, biased towards the header and the table, where
 * values near the content length and near 2^32 matter; and a random cut. */
static void test_random_multi_byte_changes(void **state)
{
	unsigned char orig[1024], m[1024];
	unsigned accepted = 0;
	size_t n;
	char what[64];

	(void)state;
	n = small_bundle();
	memcpy(orig, hostile, n);
	for (int round = 0; round < 20000; round++) {
		size_t len = n, changes = 1 + next_random() % 4;

		memcpy(m, orig, n);
		for (size_t k = 0; k < changes; k++) {
			uint64_t x = next_random(), kind = (x >> 32) % 4;
			size_t at = x % 2 ? (x >> 8) % 128 : (x >> 8) % n;
			uint32_t word = kind == 1   ? (uint32_t)(n - (x >> 40) % 8)
			                : kind == 2 ? UINT32_MAX - (uint32_t)((x >> 40) % 8)
			                            : (uint32_t)((x >> 40) % 256);

			if (kind == 0) {
				m[at] = (unsigned char)(x >> 40);
			} else {
				at &= ~(size_t)3;
				if (at + 4 <= n)
					memcpy(m + at, &word, 4);
			}
		}
		if (next_random() % 8 == 0)
			len = next_random() % (n + 1);
		snprintf(what, sizeof(what), "round %d", round);
		open_mutated(m, len, what, &accepted);
	}
	print_message("20000 random changes: %u accepted\n", accepted);
	assert_true(accepted > 100);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_encoder_writes_the_documented_layout),
	        cmocka_unit_test(test_round_trip_0_1_100),
	        cmocka_unit_test(test_find_hits_and_misses),
	        cmocka_unit_test(test_encoder_refuses_what_it_cannot_write),
	        cmocka_unit_test(test_sort_inputs_is_the_readers_order),
	        cmocka_unit_test(test_version_and_magic),
	        cmocka_unit_test(test_every_truncation_refused),
	        cmocka_unit_test(test_sizes_counts_and_offsets_out_of_range),
	        cmocka_unit_test(test_names_a_child_cannot_have_refused),
	        cmocka_unit_test(test_larger_header_and_entries_accepted),
	        cmocka_unit_test(test_accessors_check_a_bundle_made_by_hand),
	        cmocka_unit_test(test_every_single_byte_change),
	        cmocka_unit_test(test_random_multi_byte_changes),
	};

	return cmocka_run_group_tests(tests, guard_map, guard_unmap);
}
