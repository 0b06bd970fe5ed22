/* SPDX-License-Identifier: Apache-2.0 */
/* test_pointer.c - zkw_pointer_parse: every rule of contract item 7. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <zkw/watcher.h>

/* Parse a C string (or len bytes of it); returns rc, fills out. */
static int parse_n(const char *s, size_t len, char *out, const char **why)
{
	return zkw_pointer_parse(s, len, out, ZKW_POINTER_MAX, why);
}

static int parse(const char *s, char *out, const char **why)
{
	return parse_n(s, strlen(s), out, why);
}

static void assert_valid(const char *in, const char *expect)
{
	char out[ZKW_POINTER_MAX];
	const char *why = "unset";
	int rc = parse(in, out, &why);

	if (rc < 0)
		fail_msg("'%s' rejected: %s", in, why);
	assert_int_equal(rc, (int)strlen(expect));
	assert_string_equal(out, expect);
	assert_string_equal(why, "");
}

static void assert_invalid_n(const char *in, size_t len, int err, const char *why_part)
{
	char out[ZKW_POINTER_MAX];
	const char *why = NULL;
	int rc = parse_n(in, len, out, &why);

	if (rc >= 0)
		fail_msg("'%.*s' accepted as '%s'", (int)len, in, out);
	assert_int_equal(rc, err);
	assert_non_null(why);
	if (!strstr(why, why_part))
		fail_msg("'%.*s': reason '%s' lacks '%s'", (int)len, in, why, why_part);
}

static void assert_invalid(const char *in, int err, const char *why_part)
{
	assert_invalid_n(in, strlen(in), err, why_part);
}

static void test_plain_absolute_paths(void **state)
{
	(void)state;
	assert_valid("/a", "/a");
	assert_valid("/tmp/myconfig", "/tmp/myconfig");
	assert_valid("/a/b/c/d-e_f.g", "/a/b/c/d-e_f.g");
	assert_valid("/zookeeper/config", "/zookeeper/config");
	assert_valid("/...", "/..."); /* only exactly "." and ".." are special */
	assert_valid("/.a/..b/c.", "/.a/..b/c.");
}

static void test_surrounding_whitespace_trimmed(void **state)
{
	(void)state;
	assert_valid("/tmp/myconfig\n", "/tmp/myconfig"); /* echo / editor */
	assert_valid("/tmp/myconfig\r\n", "/tmp/myconfig");
	assert_valid("  \t/tmp/x \t\r\n\n", "/tmp/x");
	assert_valid("\n\n/x", "/x");
}

static void test_inner_whitespace_kept(void **state)
{
	(void)state;
	/* A space inside a component is a legal ZooKeeper name character. */
	assert_valid("/my config/x y", "/my config/x y");
	/* A tab or newline inside is a control character. */
	assert_invalid("/a\tb", -EINVAL, "control");
	assert_invalid("/a\nb", -EINVAL, "control");
	assert_invalid("/a\n/b", -EINVAL, "control");
}

static void test_empty_and_null(void **state)
{
	char out[ZKW_POINTER_MAX];
	const char *why = NULL;

	(void)state;
	assert_int_equal(zkw_pointer_parse(NULL, 0, out, sizeof out, &why), -EINVAL);
	assert_non_null(strstr(why, "empty"));
	assert_invalid("", -EINVAL, "empty");
	assert_invalid(" \t\r\n", -EINVAL, "empty");
	/* why may be NULL */
	assert_int_equal(zkw_pointer_parse("", 0, out, sizeof out, NULL), -EINVAL);
}

static void test_must_be_absolute(void **state)
{
	(void)state;
	assert_invalid("tmp/myconfig", -EINVAL, "absolute");
	assert_invalid("./x", -EINVAL, "absolute");
	assert_invalid("x", -EINVAL, "absolute");
}

static void test_root_rejected(void **state)
{
	(void)state;
	assert_invalid("/", -EINVAL, "root");
	assert_invalid(" / \n", -EINVAL, "root");
}

static void test_empty_components(void **state)
{
	(void)state;
	assert_invalid("//", -EINVAL, "empty path component");
	assert_invalid("//a", -EINVAL, "empty path component");
	assert_invalid("/a//b", -EINVAL, "empty path component");
	assert_invalid("/a/", -EINVAL, "empty path component");
	assert_invalid("/a/b/\n", -EINVAL, "empty path component");
}

static void test_dot_components(void **state)
{
	(void)state;
	assert_invalid("/.", -EINVAL, "'.'");
	assert_invalid("/..", -EINVAL, "'.'");
	assert_invalid("/a/./b", -EINVAL, "'.'");
	assert_invalid("/a/../b", -EINVAL, "'.'");
	assert_invalid("/a/b/..", -EINVAL, "'.'");
}

static void test_control_characters(void **state)
{
	char in[8];

	(void)state;
	for (int c = 1; c < 0x20; c++) {
		if (c == '\t' || c == '\n' || c == '\r')
			continue; /* trimmed at the ends; tested inside above */
		in[0] = '/', in[1] = 'a', in[2] = (char)c, in[3] = 'b', in[4] = 0;
		assert_invalid(in, -EINVAL, "control");
		in[2] = 'b', in[3] = (char)c; /* at the end, not trimmed */
		assert_invalid(in, -EINVAL, "control");
	}
	assert_invalid("/a\x7f", -EINVAL, "control");
	assert_invalid("/a\x0b", -EINVAL, "control"); /* \v is not trimmed */
	assert_invalid("/a\x0c", -EINVAL, "control"); /* nor \f */
}

static void test_nul_bytes(void **state)
{
	(void)state;
	assert_invalid_n("/a\0b", 4, -EINVAL, "NUL");
	assert_invalid_n("/a\0", 3, -EINVAL, "NUL");
	assert_invalid_n("\0/a", 3, -EINVAL, "absolute");
}

static void test_utf8(void **state)
{
	(void)state;
	assert_valid("/caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac", "/caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac");
	assert_valid("/\xf0\x9f\x98\x80", "/\xf0\x9f\x98\x80"); /* 4-byte emoji */
	assert_invalid("/\xc3", -EINVAL, "UTF-8");              /* truncated */
	assert_invalid("/\xc3(", -EINVAL, "UTF-8");             /* bad continuation */
	assert_invalid("/\xc0\xaf", -EINVAL, "UTF-8");          /* overlong '/' */
	assert_invalid("/\xe0\x80\xaf", -EINVAL, "UTF-8");      /* overlong 3-byte */
	assert_invalid("/\xc2\x85", -EINVAL, "UTF-8");          /* U+0085 C1 control */
	assert_invalid("/\xed\xa0\x80", -EINVAL, "UTF-8");      /* surrogate */
	assert_invalid("/\xef\xbf\xbf", -EINVAL, "UTF-8");      /* U+FFFF */
	assert_invalid("/\xff", -EINVAL, "UTF-8");
	assert_invalid("/\x80", -EINVAL, "UTF-8");
	assert_invalid("/\xf4\x90\x80\x80", -EINVAL, "UTF-8"); /* > U+10FFFF */
}

static void test_length_boundaries(void **state)
{
	char in[ZKW_POINTER_MAX + 8], out[ZKW_POINTER_MAX];
	const char *why;

	(void)state;
	/* ZKW_POINTER_MAX - 1 characters fit (with the NUL). */
	in[0] = '/';
	memset(in + 1, 'a', ZKW_POINTER_MAX - 2);
	in[ZKW_POINTER_MAX - 1] = '\0';
	assert_int_equal(parse(in, out, &why), ZKW_POINTER_MAX - 1);
	assert_memory_equal(out, in, ZKW_POINTER_MAX);

	/* One more does not. */
	memset(in + 1, 'a', ZKW_POINTER_MAX - 1);
	in[ZKW_POINTER_MAX] = '\0';
	assert_invalid(in, -ENAMETOOLONG, "too long");

	/* Surrounding whitespace does not count. */
	memset(in + 1, 'a', ZKW_POINTER_MAX - 2);
	in[ZKW_POINTER_MAX - 1] = '\n';
	in[ZKW_POINTER_MAX] = '\n';
	in[ZKW_POINTER_MAX + 1] = '\0';
	assert_int_equal(parse(in, out, &why), ZKW_POINTER_MAX - 1);
}

static void test_small_output_buffer(void **state)
{
	char out[4];
	const char *why;

	(void)state;
	assert_int_equal(zkw_pointer_parse("/abc", 4, out, sizeof out, &why), -ENOBUFS);
	assert_int_equal(zkw_pointer_parse("/ab\n", 4, out, sizeof out, &why), 3);
	assert_string_equal(out, "/ab");
	/* An invalid path is reported as invalid even with a small buffer. */
	assert_int_equal(zkw_pointer_parse("a", 1, out, 0, &why), -EINVAL);
}

static void test_length_not_string(void **state)
{
	char out[ZKW_POINTER_MAX];
	const char *why;

	(void)state;
	/* Only len bytes are looked at: no NUL needed, trailing bytes ignored. */
	assert_int_equal(zkw_pointer_parse("/abcdef", 3, out, sizeof out, &why), 3);
	assert_string_equal(out, "/ab");
}

static void test_binary_garbage_never_crashes(void **state)
{
	unsigned char in[64];
	char out[ZKW_POINTER_MAX];
	uint32_t x = 2463534242u;

	(void)state;
	/* A cheap in-test fuzz: any bytes give a clean verdict, and whatever is
	 * accepted re-parses to itself (the parser is idempotent). */
	for (int round = 0; round < 20000; round++) {
		size_t len = (size_t)(round % (int)sizeof in);
		const char *why;
		int rc;

		for (size_t i = 0; i < len; i++) {
			x ^= x << 13, x ^= x >> 17, x ^= x << 5;
			in[i] = (round & 1) ? (unsigned char)"/ab.\n\t"[x % 6] : (unsigned char)x;
		}
		rc = zkw_pointer_parse(in, len, out, sizeof out, &why);
		if (rc >= 0) {
			char again[ZKW_POINTER_MAX];

			assert_int_equal(zkw_pointer_parse(out, (size_t)rc, again, sizeof again, &why), rc);
			assert_string_equal(again, out);
		} else {
			assert_true(rc == -EINVAL || rc == -ENAMETOOLONG);
			assert_true(why && why[0]);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_plain_absolute_paths),
	        cmocka_unit_test(test_surrounding_whitespace_trimmed),
	        cmocka_unit_test(test_inner_whitespace_kept),
	        cmocka_unit_test(test_empty_and_null),
	        cmocka_unit_test(test_must_be_absolute),
	        cmocka_unit_test(test_root_rejected),
	        cmocka_unit_test(test_empty_components),
	        cmocka_unit_test(test_dot_components),
	        cmocka_unit_test(test_control_characters),
	        cmocka_unit_test(test_nul_bytes),
	        cmocka_unit_test(test_utf8),
	        cmocka_unit_test(test_length_boundaries),
	        cmocka_unit_test(test_small_output_buffer),
	        cmocka_unit_test(test_length_not_string),
	        cmocka_unit_test(test_binary_garbage_never_crashes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
