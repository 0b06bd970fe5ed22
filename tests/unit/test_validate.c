/* SPDX-License-Identifier: Apache-2.0 */
/* test_validate.c - the content gate of a watch (broker/publish/validate.[ch])
 * on its own: what it accepts, what it refuses, and the words it gives.
 *
 *   - JSON: RFC 8259 values of every kind accepted; trailing data,
 *     truncation, each structural fault, bad UTF-8, NUL bytes, what json-c
 *     0.16 would let through (NaN, "1.", "-01", raw tabs in strings),
 *     nesting at and one past the limit (arrays and objects mixed, a
 *     wrong closer at any level): refused, with line and column;
 *   - json-c as the oracle: the same verdict (accept / refuse) as its
 *     strict parse on cases by hand outside its known gaps, and on 20000
 *     random documents of well-spelt tokens, valid or broken;
 *   - 64 MiB: accepted with the peak RSS unmoved, faults far in located;
 *   - YAML: several documents accepted; tab indentation, an unclosed quote,
 *     bad UTF-8, NUL, UTF-16, nesting past the limit: refused;
 *   - reject-empty, max-shrink at its boundaries, the order of the checks;
 *   - the texts: one line of printable ASCII below ZKW_ERROR_MAX, for
 *     thousands of random inputs, never quoting them;
 *   - parse_format, parse_percent, format_name;
 *   - never a byte read past len: every small input is checked at the very
 *     end of a page followed by an inaccessible one.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include <zkw/common.h>

#include "guard.h"
#include "json_oracle.h"
#include "publish/validate.h"

#define BIG_LEN     (64u << 20)
#define BIG_LINE    1024u /* one string of the big array per line */

/* The input as C would write it, for failure messages. */
static const char *shown(const void *p, size_t n)
{
	static char out[512];
	const unsigned char *s = p;
	size_t o = 0;

	for (size_t i = 0; i < n && o + 8 < sizeof(out); i++)
		o += (size_t)snprintf(out + o, sizeof(out) - o,
		                      s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\' ? "%c" : "\\x%02x", s[i]);
	return out;
}

static int run(const zkw_validate_rules *r, const void *content, size_t n, int64_t last, char *why,
               size_t whylen)
{
	if (!content)
		return zkw_validate(r, NULL, n, last, why, whylen);
	return zkw_validate(r, guard_place(content, n), n, last, why, whylen);
}

static void expect(zkw_validate_format f, const char *s, size_t n, int want, const char *want_why)
{
	zkw_validate_rules r = {.format = f};
	char why[ZKW_ERROR_MAX];
	int rc = run(&r, s, n, -1, why, sizeof(why));

	if (rc != want || strcmp(why, want_why) != 0)
		fail_msg("%s [%s]: got %d \"%s\", want %d \"%s\"", zkw_validate_format_name(f), shown(s, n),
		         rc, why, want, want_why);
}

#define JSON_OK(lit)        expect(ZKW_VALIDATE_JSON, lit, sizeof(lit) - 1, 0, "")
#define JSON_BAD(lit, text) expect(ZKW_VALIDATE_JSON, lit, sizeof(lit) - 1, -EBADMSG, text)
#define YAML_OK(lit)        expect(ZKW_VALIDATE_YAML, lit, sizeof(lit) - 1, 0, "")
#define YAML_BAD(lit, text) expect(ZKW_VALIDATE_YAML, lit, sizeof(lit) - 1, -EBADMSG, text)

/* ---- JSON ---------------------------------------------------------------- */

static void test_json_values_accepted(void **state)
{
	(void)state;
	JSON_OK("{}");
	JSON_OK("[]");
	JSON_OK("{ }");
	JSON_OK("[\n]");
	JSON_OK("{\"a\": [1, -2.5E-3, \"x\", true, false, null, {\"b\": {}}], \"\": \"\"}");
	JSON_OK("[[], {}, [[]], {\"a\": []}, [{}]]");
	/* bare scalars are JSON texts too (RFC 8259) */
	JSON_OK("0");
	JSON_OK("-0");
	JSON_OK("1.5e+3");
	JSON_OK("0.0e-0");
	JSON_OK("123456789012345678901234567890");
	JSON_OK("1e999");
	JSON_OK("\"text\"");
	JSON_OK("\"\"");
	JSON_OK("true");
	JSON_OK("false");
	JSON_OK("null");
	/* whitespace around, duplicate keys, every escape, UTF-8 of 2, 3, 4 bytes */
	JSON_OK(" \t\r\n{\"a\": 1, \"a\": 2}\r\n\t ");
	JSON_OK("\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\uD834\\uDD1E \\u0000\"");
	JSON_OK("[\"\xc3\xa9\", \"\xe2\x82\xac\", \"\xf0\x9f\x98\x80\", \"\xf4\x8f\xbf\xbf\", \"\x7f\"]");
	/* a lone surrogate escape is grammatical (RFC 8259, 8.2) */
	JSON_OK("\"\\ud800\"");
	/* strings long enough to be scanned 8 bytes at a time, specials at
	 * every position of a word */
	JSON_OK("\"0123456789abcdef0123456789abcdef\"");
	JSON_OK("[\"a\\\"2345678\", \"ab\\\\345678\", \"abcdefg\xc3\xa9\", \"abcdefgh\\u0041\"]");
}

static void test_json_faults_located(void **state)
{
	(void)state;
	JSON_BAD("", "invalid JSON: empty content");
	JSON_BAD(" \n\t\r ", "invalid JSON: only whitespace, no value");
	/* trailing data */
	JSON_BAD("{} x", "invalid JSON at line 1, column 4: trailing data after the value");
	JSON_BAD("{\"a\":1}{}", "invalid JSON at line 1, column 8: trailing data after the value");
	JSON_BAD("[1]\n\n  ]", "invalid JSON at line 3, column 3: trailing data after the value");
	JSON_BAD("1 2", "invalid JSON at line 1, column 3: trailing data after the value");
	JSON_BAD("\"a\"\"b\"", "invalid JSON at line 1, column 4: trailing data after the value");
	/* truncated: the end of the content is where it is missing */
	JSON_BAD("[1,2", "invalid JSON at line 1, column 5: unexpected end of input");
	JSON_BAD("[1,2,\n", "invalid JSON at line 2, column 1: unexpected end of input");
	JSON_BAD("{\"a\":", "invalid JSON at line 1, column 6: unexpected end of input");
	JSON_BAD("{\"a\"", "invalid JSON at line 1, column 5: unexpected end of input");
	JSON_BAD("{", "invalid JSON at line 1, column 2: unexpected end of input");
	JSON_BAD("[", "invalid JSON at line 1, column 2: unexpected end of input");
	JSON_BAD("\"abc", "invalid JSON at line 1, column 5: unexpected end of input");
	JSON_BAD("\"abc\\", "invalid JSON at line 1, column 6: unexpected end of input");
	JSON_BAD("\"\\u12", "invalid JSON at line 1, column 6: unexpected end of input");
	JSON_BAD("tru", "invalid JSON at line 1, column 4: unexpected end of input");
	JSON_BAD("[nul", "invalid JSON at line 1, column 5: unexpected end of input");
	JSON_BAD("-", "invalid JSON at line 1, column 2: digit expected after '-'");
	JSON_BAD("1.", "invalid JSON at line 1, column 3: digit expected after the decimal point");
	JSON_BAD("1e+", "invalid JSON at line 1, column 4: digit expected in the exponent");
	/* what json-c 0.16 accepts even when strict */
	JSON_BAD("NaN", "invalid JSON at line 1, column 1: invalid literal (JSON has true, false and null)");
	JSON_BAD("[Infinity]",
	         "invalid JSON at line 1, column 2: invalid literal (JSON has true, false and null)");
	JSON_BAD("-Infinity", "invalid JSON at line 1, column 2: digit expected after '-'");
	JSON_BAD("[1.]", "invalid JSON at line 1, column 4: digit expected after the decimal point");
	JSON_BAD("1.e5", "invalid JSON at line 1, column 3: digit expected after the decimal point");
	JSON_BAD("-01", "invalid JSON at line 1, column 3: number with a leading zero");
	JSON_BAD("\"a\tb\"",
	         "invalid JSON at line 1, column 3: control character in a string (must be escaped)");
	JSON_BAD("[\"a\nb\"]",
	         "invalid JSON at line 1, column 4: control character in a string (must be escaped)");
	/* and what it refuses too */
	JSON_BAD("True", "invalid JSON at line 1, column 1: invalid literal (JSON has true, false and null)");
	JSON_BAD("[truex]",
	         "invalid JSON at line 1, column 2: invalid literal (JSON has true, false and null)");
	JSON_BAD("[abc]",
	         "invalid JSON at line 1, column 2: invalid literal (JSON has true, false and null)");
	JSON_BAD("'a'", "invalid JSON at line 1, column 1: expected a value");
	JSON_BAD("/* c */ 1", "invalid JSON at line 1, column 1: expected a value");
	JSON_BAD("+1", "invalid JSON at line 1, column 1: expected a value");
	JSON_BAD(".5", "invalid JSON at line 1, column 1: expected a value");
	JSON_BAD("\"\\x\"", "invalid JSON at line 1, column 3: invalid escape");
	JSON_BAD("\"\\'\"", "invalid JSON at line 1, column 3: invalid escape");
	JSON_BAD("\"\\u12g4\"", "invalid JSON at line 1, column 6: \\u needs four hex digits");
	JSON_BAD("\xef\xbb\xbf{}", "invalid JSON at line 1, column 1: byte order mark (not allowed in JSON)");
	/* the first fault in the content wins */
	JSON_BAD("{\"a\" 1, \"b\": NaN}", "invalid JSON at line 1, column 6: expected ':' after the key");
	JSON_BAD("{\n  \"a\": 1,\n  \"b\": tru,\n}",
	         "invalid JSON at line 3, column 8: invalid literal (JSON has true, false and null)");
	/* a column counts characters, not bytes */
	JSON_BAD("[\"\xc3\xa9\xe2\x82\xac\", #]", "invalid JSON at line 1, column 8: expected a value");
}

/* The structure: what may follow what, each fault on the byte that breaks
 * it. */
static void test_json_structure_faults_located(void **state)
{
	(void)state;
	/* a value expected */
	JSON_BAD("[1,]", "invalid JSON at line 1, column 4: expected a value");
	JSON_BAD("[,1]", "invalid JSON at line 1, column 2: expected a value");
	JSON_BAD("[1,,2]", "invalid JSON at line 1, column 4: expected a value");
	JSON_BAD("{\"a\":}", "invalid JSON at line 1, column 6: expected a value");
	JSON_BAD("{\"a\":,\"b\":1}", "invalid JSON at line 1, column 6: expected a value");
	JSON_BAD("]", "invalid JSON at line 1, column 1: expected a value");
	JSON_BAD("}", "invalid JSON at line 1, column 1: expected a value");
	JSON_BAD(":", "invalid JSON at line 1, column 1: expected a value");
	JSON_BAD("[\x80]", "invalid JSON at line 1, column 2: expected a value");
	/* between values */
	JSON_BAD("[1 2]", "invalid JSON at line 1, column 4: expected ',' or ']'");
	JSON_BAD("[1}", "invalid JSON at line 1, column 3: expected ',' or ']'");
	JSON_BAD("[1:2]", "invalid JSON at line 1, column 3: expected ',' or ']'");
	JSON_BAD("[[1]}", "invalid JSON at line 1, column 5: expected ',' or ']'");
	JSON_BAD("{\"a\":1]", "invalid JSON at line 1, column 7: expected ',' or '}'");
	JSON_BAD("{\"a\":1 \"b\":2}", "invalid JSON at line 1, column 8: expected ',' or '}'");
	JSON_BAD("{\n \"a\": 1\n \"b\": 2\n}", "invalid JSON at line 3, column 2: expected ',' or '}'");
	JSON_BAD("{\"a\":{\"b\":[]]}", "invalid JSON at line 1, column 13: expected ',' or '}'");
	JSON_BAD("{\"a\":[{}}]", "invalid JSON at line 1, column 9: expected ',' or ']'");
	JSON_BAD("[1x]", "invalid JSON at line 1, column 3: expected ',' or ']'");
	JSON_BAD("[1true]", "invalid JSON at line 1, column 3: expected ',' or ']'");
	JSON_BAD("[\"a\"\"b\"]", "invalid JSON at line 1, column 5: expected ',' or ']'");
	/* keys */
	JSON_BAD("{a:1}", "invalid JSON at line 1, column 2: object key must be a string");
	JSON_BAD("{1:1}", "invalid JSON at line 1, column 2: object key must be a string");
	JSON_BAD("{,}", "invalid JSON at line 1, column 2: object key must be a string");
	JSON_BAD("{\"a\":1,}", "invalid JSON at line 1, column 8: object key must be a string");
	JSON_BAD("{\"a\":1,\n  ]", "invalid JSON at line 2, column 3: object key must be a string");
	JSON_BAD("{]", "invalid JSON at line 1, column 2: object key must be a string");
	JSON_BAD("{\"a\"}", "invalid JSON at line 1, column 5: expected ':' after the key");
	JSON_BAD("{\"a\",1}", "invalid JSON at line 1, column 5: expected ':' after the key");
	JSON_BAD("{\"a\"::1}", "invalid JSON at line 1, column 6: expected a value");
	JSON_BAD("{\"a\\q\":1}", "invalid JSON at line 1, column 5: invalid escape");
	/* an empty container closes only with its own bracket */
	JSON_BAD("[}", "invalid JSON at line 1, column 2: expected a value");
	JSON_BAD("[[]", "invalid JSON at line 1, column 4: unexpected end of input");
	/* whitespace is space, tab, CR, LF only */
	JSON_BAD("[1,\f2]", "invalid JSON at line 1, column 4: expected a value");
	JSON_BAD("\v1", "invalid JSON at line 1, column 1: expected a value");
	JSON_BAD("[1]\xc2\xa0", "invalid JSON at line 1, column 4: trailing data after the value");
	/* lines counted in a multi-line document, CRLF too */
	JSON_BAD("{\r\n  \"a\": [\r\n    1,\r\n    2\r\n  }\r\n}",
	         "invalid JSON at line 5, column 3: expected ',' or ']'");
}

static void test_json_bad_utf8_and_nul_refused(void **state)
{
	(void)state;
	JSON_BAD("{\n  \"k\": \"\xc3\x28\"\n}", "invalid JSON at line 2, column 9: invalid UTF-8");
	JSON_BAD("\"\xc0\x80\"", "invalid JSON at line 1, column 2: invalid UTF-8");     /* overlong NUL */
	JSON_BAD("\"\xe0\x9f\xbf\"", "invalid JSON at line 1, column 2: invalid UTF-8"); /* overlong */
	JSON_BAD("\"\xed\xa0\x80\"", "invalid JSON at line 1, column 2: invalid UTF-8"); /* surrogate */
	JSON_BAD("\"\xf4\x90\x80\x80\"", "invalid JSON at line 1, column 2: invalid UTF-8"); /* > U+10FFFF */
	JSON_BAD("\"\xf5\x80\x80\x80\"", "invalid JSON at line 1, column 2: invalid UTF-8");
	JSON_BAD("\"ab\xe2\x82\"", "invalid JSON at line 1, column 4: invalid UTF-8"); /* cut short */
	JSON_BAD("\"\xe2\x82", "invalid JSON at line 1, column 2: invalid UTF-8");     /* at the very end */
	JSON_BAD("\"\x80\"", "invalid JSON at line 1, column 2: invalid UTF-8");       /* lone continuation */
	/* within a string long enough to be scanned 8 bytes at a time */
	JSON_BAD("\"abcdefghijk\xffmnopqrstuvwxyz\"", "invalid JSON at line 1, column 13: invalid UTF-8");
	JSON_BAD("\"abcdefghijk\x80mnopqrstuvwxyz\"", "invalid JSON at line 1, column 13: invalid UTF-8");
	JSON_BAD("\"abcdefghij\tlmnopqrstuvwxyz\"",
	         "invalid JSON at line 1, column 12: control character in a string (must be escaped)");
	/* NUL bytes, named with their offset */
	JSON_BAD("\"a\0b\"", "invalid JSON at line 1, column 3: NUL byte (offset 2)");
	JSON_BAD("\"abcdefghij\0lmnopqrstuvwxyz\"",
	         "invalid JSON at line 1, column 12: NUL byte (offset 11)");
	JSON_BAD("{}\0", "invalid JSON at line 1, column 3: NUL byte (offset 2)");
	JSON_BAD("[1,\n\0]", "invalid JSON at line 2, column 1: NUL byte (offset 4)");
	JSON_BAD("\0", "invalid JSON at line 1, column 1: NUL byte (offset 0)");
}

/* n arrays (or objects) nested. */
static size_t nested(char *buf, unsigned n, bool objects)
{
	size_t o = 0;

	for (unsigned i = 0; i < n; i++)
		o += (size_t)sprintf(buf + o, "%s", objects ? "{\"a\":" : "[");
	o += (size_t)sprintf(buf + o, "0");
	for (unsigned i = 0; i < n; i++)
		buf[o++] = objects ? '}' : ']';
	return o;
}

/* n levels, an object at level d when pattern(d); the closer at level
 * `wrong` (0 = none) is the other kind's. The offset of that closer in
 * *wrong_at. */
static size_t nested_mixed(char *buf, unsigned n, bool (*pattern)(unsigned), unsigned wrong, size_t *wrong_at)
{
	size_t o = 0;

	for (unsigned d = 1; d <= n; d++)
		o += (size_t)sprintf(buf + o, "%s", pattern(d) ? "{\"k\": " : "[1, ");
	buf[o++] = '0';
	for (unsigned d = n; d >= 1; d--) {
		bool object = pattern(d) != (d == wrong);

		if (d == wrong)
			*wrong_at = o;
		buf[o++] = object ? '}' : ']';
	}
	return o;
}

static bool every_third(unsigned d)
{
	return d % 3 == 0;
}

static bool around_64(unsigned d)
{
	return (d / 64) % 2 == 1 || d % 64 == 63;
}

static void test_json_depth_limit(void **state)
{
	static char buf[8 * (ZKW_VALIDATE_MAX_DEPTH + 2)];
	bool (*patterns[])(unsigned) = {every_third, around_64};
	char want[128];
	size_t n, at;

	(void)state;
	n = nested(buf, ZKW_VALIDATE_MAX_DEPTH, false);
	expect(ZKW_VALIDATE_JSON, buf, n, 0, "");
	n = nested(buf, ZKW_VALIDATE_MAX_DEPTH + 1, false);
	snprintf(want, sizeof(want), "invalid JSON at line 1, column %d: nesting deeper than %d levels",
	         ZKW_VALIDATE_MAX_DEPTH + 1, ZKW_VALIDATE_MAX_DEPTH);
	expect(ZKW_VALIDATE_JSON, buf, n, -EBADMSG, want);
	n = nested(buf, ZKW_VALIDATE_MAX_DEPTH, true);
	expect(ZKW_VALIDATE_JSON, buf, n, 0, "");
	n = nested(buf, ZKW_VALIDATE_MAX_DEPTH + 1, true);
	snprintf(want, sizeof(want), "invalid JSON at line 1, column %d: nesting deeper than %d levels",
	         5 * ZKW_VALIDATE_MAX_DEPTH + 1, ZKW_VALIDATE_MAX_DEPTH);
	expect(ZKW_VALIDATE_JSON, buf, n, -EBADMSG, want);

	/* the limit holds the depth, not the count: 512 deep, back to 1,
	 * and 512 deep again */
	buf[0] = '[';
	n = 1 + nested(buf + 1, ZKW_VALIDATE_MAX_DEPTH - 1, false);
	buf[n++] = ',';
	n += nested(buf + n, ZKW_VALIDATE_MAX_DEPTH - 1, false);
	buf[n++] = ']';
	expect(ZKW_VALIDATE_JSON, buf, n, 0, "");

	/* objects and arrays mixed all the way down, each level remembered:
	 * the right closers pass, one of the other kind at any level is
	 * refused where it stands */
	for (size_t p = 0; p < sizeof(patterns) / sizeof(patterns[0]); p++) {
		static const unsigned levels[] = {1, 2, 63, 64, 65, 127, 128, 129, 300, 511, 512};

		n = nested_mixed(buf, ZKW_VALIDATE_MAX_DEPTH, patterns[p], 0, &at);
		expect(ZKW_VALIDATE_JSON, buf, n, 0, "");
		for (size_t k = 0; k < sizeof(levels) / sizeof(levels[0]); k++) {
			n = nested_mixed(buf, ZKW_VALIDATE_MAX_DEPTH, patterns[p], levels[k], &at);
			snprintf(want, sizeof(want),
			         "invalid JSON at line 1, column %zu: expected ',' or '%c'", at + 1,
			         patterns[p](levels[k]) ? '}' : ']');
			expect(ZKW_VALIDATE_JSON, buf, n, -EBADMSG, want);
		}
	}
}

/* ---- JSON: json-c as the oracle ------------------------------------------ */

static bool ours_accepts(const void *s, size_t n)
{
	zkw_validate_rules r = {.format = ZKW_VALIDATE_JSON};
	char why[ZKW_ERROR_MAX];
	int rc = run(&r, s, n, -1, why, sizeof(why));

	assert_true(rc == 0 || rc == -EBADMSG);
	return rc == 0;
}

/* Cases by hand, each with RFC 8259's verdict. json-c must agree but where
 * its gaps are known (gap: it accepts what the RFC refuses), which is why
 * the broker does not use it. */
static void test_json_agrees_with_json_c_by_hand(void **state)
{
	static const struct {
		const char *s;
		bool valid, gap;
	} cases[] = {
	        {"{\"a\": [1, 2.5, -3e4, \"x\"], \"b\": {\"c\": null}}", true, false},
	        {"[true, false, null]", true, false},
	        {"  7  ", true, false},
	        {"\"\\u00e9\\ud83d\\ude00\"", true, false},
	        {"\"\xf0\x9f\x98\x80 \xc3\xa9\"", true, false},
	        {"[[[[[[]]]]]]", true, false},
	        {"{\"\": {\"\": {}}}", true, false},
	        {"-0.0e+00", true, false},
	        {"1E5", true, false},
	        {"[1,]", false, false},
	        {"[1 2]", false, false},
	        {"{\"a\" 1}", false, false},
	        {"{\"a\":1,}", false, false},
	        {"{a:1}", false, false},
	        {"[1}", false, false},
	        {"{\"a\":1]", false, false},
	        {"[", false, false},
	        {"\"abc", false, false},
	        {"tru", false, false},
	        {"True", false, false},
	        {"nan", false, false},
	        {"infinity", false, false},
	        {"01", false, false},
	        {"[01]", false, false},
	        {".5", false, false},
	        {"+1", false, false},
	        {"1e", false, false},
	        {"-", false, false},
	        {"0x10", false, false},
	        {"1 2", false, false},
	        {"{} x", false, false},
	        {"'a'", false, false},
	        {"\"\\x\"", false, false},
	        {"\"\\'\"", false, false},
	        {"\"\\u00\"", false, false},
	        {"/* c */ 1", false, false},
	        {"[1,\f2]", false, false},
	        {"\xef\xbb\xbf{}", false, false},
	        {"", false, false},
	        {" ", false, false},
	        /* json-c's gaps */
	        {"NaN", false, true},
	        {"Infinity", false, true},
	        {"-Infinity", false, true},
	        {"[NaN]", false, true},
	        {"-01", false, true},
	        {"1.", false, true},
	        {"1.e5", false, true},
	        {"[1.]", false, true},
	        {"\"a\tb\"", false, true},
	        {"\"a\nb\"", false, true},
	        {"\"\xc0\x80\"", false, true},
	        {"\"\xed\xa0\x80\"", false, true},
	        {"\"\xff\"", false, true},
	};
	unsigned gaps = 0, gaps_json_c_accepts = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t n = strlen(cases[i].s);
		bool json_c = json_c_accepts(cases[i].s, n);

		if (ours_accepts(cases[i].s, n) != cases[i].valid)
			fail_msg("[%s]: ours %s, RFC 8259 %s", shown(cases[i].s, n),
			         cases[i].valid ? "refuses" : "accepts",
			         cases[i].valid ? "accepts" : "refuses");
		if (!cases[i].gap && json_c != cases[i].valid)
			fail_msg("[%s]: json-c %s, RFC 8259 %s", shown(cases[i].s, n),
			         json_c ? "accepts" : "refuses", cases[i].valid ? "accepts" : "refuses");
		gaps += cases[i].gap;
		gaps_json_c_accepts += cases[i].gap && json_c;
	}
	print_message("json-c accepts %u of the %u gap cases the RFC refuses\n", gaps_json_c_accepts, gaps);
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t next_random(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Tokens whose spelling json-c judges as the RFC does: its gaps are all
 * within a token (numbers, literals, string bytes), so any sequence of
 * these, valid or not, must get the same verdict from both. */
static const char *const tokens[] = {
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        /* strings */
        "\"\"",
        "\"a\"",
        "\"key\"",
        "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"",
        "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
        "\"\\u00e9\\ud83d\\ude00\\u0000\"",
        "\"a long string, 8 bytes at a time\"",
        "\"[1, {}] : ,\"",
        /* numbers */
        "0",
        "-0",
        "7",
        "-12",
        "3.25",
        "-0.5",
        "1e10",
        "2.5E-3",
        "6e+2",
        "123456789012345678901234567890",
        /* literals */
        "true",
        "false",
        "null",
};
#define TOKEN_VALUES 6 /* tokens[6..] are values */

static bool word_like(const char *t)
{
	return *t == '-' || (*t >= '0' && *t <= '9') || (*t >= 'a' && *t <= 'z');
}

/* A random valid value, as token indexes, at most `depth` deep. */
static size_t random_value(unsigned *out, size_t o, size_t cap, unsigned depth)
{
	uint64_t x = next_random();
	unsigned n;

	if (o + 4 >= cap || !depth || x % 3 == 0) {
		out[o++] = TOKEN_VALUES +
		           (unsigned)(x >> 8) % (sizeof(tokens) / sizeof(tokens[0]) - TOKEN_VALUES);
		return o;
	}
	n = (unsigned)(x >> 16) % 4;
	if (x % 3 == 1) {
		out[o++] = 2;
		for (unsigned k = 0; k < n && o + 8 < cap; k++) {
			if (k)
				out[o++] = 5;
			o = random_value(out, o, cap - 1, depth - 1);
		}
		out[o++] = 3;
	} else {
		out[o++] = 0;
		for (unsigned k = 0; k < n && o + 8 < cap; k++) {
			if (k)
				out[o++] = 5;
			out[o++] = 6 + (unsigned)(next_random() % 3);
			out[o++] = 4;
			o = random_value(out, o, cap - 1, depth - 1);
		}
		out[o++] = 1;
	}
	return o;
}

/* Random documents of these tokens, valid or broken by a token deleted,
 * repeated, swapped or put in, with random whitespace: json-c and ours
 * agree on every one. */
static void test_json_agrees_with_json_c_on_random_documents(void **state)
{
	static const char *const spaces[] = {"", "", "", " ", "\n", "\t", "\r\n  "};
	unsigned doc[256], valid_seen = 0, total = 20000;
	static char text[16384];

	(void)state;
	for (unsigned round = 0; round < total; round++) {
		size_t n = random_value(doc, 0, 200, 1 + round % 6), len = 0;
		uint64_t x = next_random();
		size_t at = n ? (size_t)(x >> 8) % n : 0;

		switch (x % 6) {
		case 0: /* delete */
			memmove(doc + at, doc + at + 1, (n - at - 1) * sizeof(doc[0]));
			n--;
			break;
		case 1: /* repeat */
			memmove(doc + at + 1, doc + at, (n - at) * sizeof(doc[0]));
			n++;
			break;
		case 2: { /* swap */
			size_t b = (size_t)(x >> 32) % n;
			unsigned t = doc[at];

			doc[at] = doc[b];
			doc[b] = t;
			break;
		}
		case 3: /* put in any token */
			memmove(doc + at + 1, doc + at, (n - at) * sizeof(doc[0]));
			doc[at] = (unsigned)(x >> 40) % (sizeof(tokens) / sizeof(tokens[0]));
			n++;
			break;
		default: break; /* left valid */
		}
		for (size_t k = 0; k < n; k++) {
			const char *sp = spaces[next_random() % (sizeof(spaces) / sizeof(spaces[0]))];

			if (k && !*sp && word_like(tokens[doc[k - 1]]) && word_like(tokens[doc[k]]))
				sp = " "; /* "1" "2" would be one token, "12" */
			len += (size_t)snprintf(text + len, sizeof(text) - len, "%s%s", sp, tokens[doc[k]]);
		}
		assert_true(len < sizeof(text) - 1);
		if (ours_accepts(text, len) != json_c_accepts(text, len))
			fail_msg("[%s]: ours %s, json-c %s", shown(text, len),
			         ours_accepts(text, len) ? "accepts" : "refuses",
			         json_c_accepts(text, len) ? "accepts" : "refuses");
		valid_seen += ours_accepts(text, len);
	}
	/* both kinds well represented */
	assert_true(valid_seen > total / 4 && valid_seen < total * 3 / 4);
}

/* [ "x...x",  one string per line of BIG_LINE bytes ... ] */
static unsigned char *big_array(size_t *len, size_t *lines)
{
	unsigned char *b = malloc(BIG_LEN);
	size_t o = 0, n = 0;

	assert_non_null(b);
	memcpy(b, "[\n", 2);
	o = 2;
	n = 1;
	while (o + 2 * BIG_LINE < BIG_LEN) {
		b[o] = '"';
		memset(b + o + 1, 'a' + (int)(n % 26), BIG_LINE - 4);
		memcpy(b + o + BIG_LINE - 3, "\",\n", 3);
		o += BIG_LINE;
		n++;
	}
	memcpy(b + o, "\"end\"\n]\n", 8);
	*len = o + 8;
	*lines = n + 2; /* the last line is "]" */
	return b;
}

/* A field of /proc/self/status in kB, or -1. */
static long status_kb(const char *field)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, strlen(field)) && line[strlen(field)] == ':')
			kb = strtol(line + strlen(field) + 1, NULL, 10);
	fclose(f);
	return kb;
}

/* The peak RSS reset to the current one (Linux >= 4.0); false when it
 * cannot be. */
static bool reset_peak_rss(void)
{
	FILE *f = fopen("/proc/self/clear_refs", "w");
	bool ok;

	if (!f)
		return false;
	ok = fputs("5", f) >= 0;
	return fclose(f) == 0 && ok;
}

static void test_json_64mib(void **state)
{
	zkw_validate_rules r = {.format = ZKW_VALIDATE_JSON};
	char why[ZKW_ERROR_MAX], want[ZKW_ERROR_MAX];
	size_t len, lines, fault_line, at;
	unsigned char *b = big_array(&len, &lines);
	long rss, peak;

	(void)state;
	assert_true(len > (63u << 20));
	/* no memory in proportion to the content: the peak RSS does not move
	 * (json-c took 8 to 35 times the content) */
	if (reset_peak_rss() && (rss = status_kb("VmRSS")) > 0) {
		assert_int_equal(zkw_validate(&r, b, len, -1, why, sizeof(why)), 0);
		peak = status_kb("VmHWM");
		if (peak - rss > 1024)
			fail_msg("peak RSS %ld kB while validating 64 MiB, %ld kB before", peak, rss);
	} else {
		print_message("peak RSS not checked: /proc/self/clear_refs not writable\n");
	}
	assert_int_equal(zkw_validate(&r, b, len, -1, why, sizeof(why)), 0);
	assert_string_equal(why, "");

	/* A missing comma far into the document. */
	fault_line = lines - 10;
	at = 2 + (fault_line - 2) * BIG_LINE; /* the start of that line */
	b[at - 2] = ' ';
	snprintf(want, sizeof(want), "invalid JSON at line %zu, column 1: expected ',' or ']'", fault_line);
	assert_int_equal(zkw_validate(&r, b, len, -1, why, sizeof(why)), -EBADMSG);
	assert_string_equal(why, want);
	b[at - 2] = ',';

	/* A control character in a string far in, at its column. */
	b[at + 700] = '\x1f';
	snprintf(want, sizeof(want),
	         "invalid JSON at line %zu, column 701: control character in a string (must be escaped)",
	         fault_line);
	assert_int_equal(zkw_validate(&r, b, len, -1, why, sizeof(why)), -EBADMSG);
	assert_string_equal(why, want);
	b[at + 700] = 'a';

	/* Data after the value, at the very end. */
	b[len - 1] = 'x';
	snprintf(want, sizeof(want), "invalid JSON at line %zu, column 2: trailing data after the value",
	         lines);
	assert_int_equal(zkw_validate(&r, b, len, -1, why, sizeof(why)), -EBADMSG);
	assert_string_equal(why, want);

	/* Cut anywhere in the last line: the end of the content is named. */
	b[len - 1] = '\n';
	assert_int_equal(zkw_validate(&r, b, len - 2, -1, why, sizeof(why)), -EBADMSG);
	snprintf(want, sizeof(want), "invalid JSON at line %zu, column 1: unexpected end of input", lines);
	assert_string_equal(why, want);
	free(b);
}

/* ---- YAML ---------------------------------------------------------------- */

static void test_yaml_accepted(void **state)
{
	(void)state;
	YAML_OK("a: 1\nb: [x, {c: d}]\nc:\n  - e\n  - \"f\"\n");
	YAML_OK("--- one\n--- two\n...\n---\nthree: 3\n");
	YAML_OK("");
	YAML_OK("   \n\n");
	YAML_OK("# only a comment\n");
	YAML_OK("\xef\xbb\xbf"
	        "a: \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\n");
	YAML_OK("base: &b {x: 1}\nderived: *b\n");
}

static void test_yaml_faults_located(void **state)
{
	(void)state;
	YAML_BAD("a:\n  b: 1\n\tc: 2\n",
	         "invalid YAML at line 3, column 1: found a tab character that violates indentation");
	YAML_BAD("a: \"abc\nb: 1\n", "invalid YAML at line 3, column 1: found unexpected end of stream");
	YAML_BAD("a: 'x", "invalid YAML at line 1, column 6: found unexpected end of stream");
	YAML_BAD("a: 1\n b: 2\n",
	         "invalid YAML at line 2, column 3: mapping values are not allowed in this context");
	YAML_BAD("a: 1\n- b\n", "invalid YAML at line 2, column 1: did not find expected key");
	YAML_BAD("[1, 2", "invalid YAML at line 1, column 6: did not find expected ',' or ']'");
	/* bytes */
	YAML_BAD("a: \xc3\x28\n", "invalid YAML at line 1, column 5: invalid trailing UTF-8 octet");
	YAML_BAD("a: 1\nb: \xed\xa0\x80\n", "invalid YAML at line 2, column 4: invalid Unicode character");
	YAML_BAD("a: x\0y\n", "invalid YAML at line 1, column 5: NUL byte (offset 4)");
	YAML_BAD("- \xc3\xa9\n- \x01\n",
	         "invalid YAML at line 2, column 3: control characters are not allowed");
	/* UTF-16 (with its BOM) is not what the workers were promised */
	YAML_BAD("\xff\xfe"
	         "a\0:\0 \0"
	         "1\0",
	         "invalid YAML at line 1, column 1: invalid leading UTF-8 octet");
}

static void test_yaml_depth_limit(void **state)
{
	static char buf[2 * ZKW_VALIDATE_MAX_DEPTH + 8];
	char want[128];
	size_t n;

	(void)state;
	n = nested(buf, ZKW_VALIDATE_MAX_DEPTH, false);
	expect(ZKW_VALIDATE_YAML, buf, n, 0, "");
	n = nested(buf, ZKW_VALIDATE_MAX_DEPTH + 1, false);
	snprintf(want, sizeof(want), "invalid YAML at line 1, column %d: nesting deeper than %d levels",
	         ZKW_VALIDATE_MAX_DEPTH + 1, ZKW_VALIDATE_MAX_DEPTH);
	expect(ZKW_VALIDATE_YAML, buf, n, -EBADMSG, want);
}

/* ---- reject-empty, max-shrink -------------------------------------------- */

static int gate(zkw_validate_format f, bool reject_empty, unsigned max_shrink, const char *s, size_t n,
                int64_t last, char *why)
{
	zkw_validate_rules r = {.format = f, .reject_empty = reject_empty, .max_shrink = max_shrink};

	return run(&r, s, n, last, why, ZKW_ERROR_MAX);
}

static void test_reject_empty(void **state)
{
	static const zkw_validate_format formats[] = {ZKW_VALIDATE_NONE, ZKW_VALIDATE_JSON,
	                                              ZKW_VALIDATE_YAML};
	char why[ZKW_ERROR_MAX];

	(void)state;
	for (size_t i = 0; i < 3; i++) {
		zkw_validate_format f = formats[i];

		assert_int_equal(gate(f, true, 0, "", 0, -1, why), -ENODATA);
		assert_string_equal(why, "empty content (reject-empty)");
		/* NULL content is fine when there is none */
		assert_int_equal(zkw_validate(&(zkw_validate_rules){.format = f, .reject_empty = true}, NULL,
		                              0, -1, why, sizeof(why)),
		                 -ENODATA);
		if (f == ZKW_VALIDATE_NONE) {
			assert_int_equal(gate(f, true, 0, " \n\t\r", 4, -1, why), 0);
		} else {
			assert_int_equal(gate(f, true, 0, " \n\t\r", 4, -1, why), -ENODATA);
			assert_string_equal(why, "only whitespace (reject-empty)");
		}
		assert_int_equal(gate(f, true, 0, " 1 ", 3, -1, why), 0);
	}
	/* off: empty content is only the format's business */
	assert_int_equal(gate(ZKW_VALIDATE_NONE, false, 0, "", 0, -1, why), 0);
	assert_int_equal(gate(ZKW_VALIDATE_YAML, false, 0, "  \n", 3, -1, why), 0);
	assert_int_equal(gate(ZKW_VALIDATE_JSON, false, 0, "  \n", 3, -1, why), -EBADMSG);
	assert_int_equal(gate(ZKW_VALIDATE_NONE, false, 0, NULL, 0, -1, why), 0);
}

static void test_max_shrink_boundaries(void **state)
{
	static char content[2000];
	char why[ZKW_ERROR_MAX];

	(void)state;
	memset(content, 'x', sizeof(content));
	/* 50%: at least 500 of 1000 */
	assert_int_equal(gate(ZKW_VALIDATE_NONE, false, 50, content, 500, 1000, why), 0);
	assert_int_equal(gate(ZKW_VALIDATE_NONE, false, 50, content, 499, 1000, why), -ERANGE);
	assert_string_equal(why, "shrunk by 51% (1000 -> 499 bytes; max-shrink 50%)");
	assert_int_equal(gate(ZKW_VALIDATE_NONE, false, 50, content, 100, 1000, why), -ERANGE);
	assert_string_equal(why, "shrunk by 90% (1000 -> 100 bytes; max-shrink 50%)");
	assert_int_equal(gate(ZKW_VALIDATE_NONE, false, 50, content, 0, 1000, why), -ERANGE);
	assert_string_equal(why, "shrunk by 100% (1000 -> 0 bytes; max-shrink 50%)");
	/* a limit that is not a whole byte rounds up: 49.95% of 999 is 499.5 */
	assert_int_equal(gate(ZKW_VALIDATE_NONE, false, 50, content, 500, 999, why), 0);
	assert_int_equal(gate(ZKW_VALIDATE_NONE, false, 50, content, 499, 999, why), -ERANGE);
	/* 1%: 99 of 100, not 98 */
	assert_int_equal(gate(ZKW_VALIDATE_NONE, false, 1, content, 99, 100, why), 0);
	assert_int_equal(gate(ZKW_VALIDATE_NONE, false, 1, content, 98, 100, why), -ERANGE);
	assert_string_equal(why, "shrunk by 2% (100 -> 98 bytes; max-shrink 1%)");
	/* growth, equal size */
	assert_int_equal(gate(ZKW_VALIDATE_NONE, false, 1, content, 2000, 1000, why), 0);
	assert_int_equal(gate(ZKW_VALIDATE_NONE, false, 1, content, 1000, 1000, why), 0);
	/* 100% lets everything through, 0 is off */
	assert_int_equal(gate(ZKW_VALIDATE_NONE, false, 100, content, 0, 1000, why), 0);
	assert_int_equal(gate(ZKW_VALIDATE_NONE, false, 0, content, 0, 1000, why), 0);
	/* the last good length unknown (-1), or nothing (0) */
	assert_int_equal(gate(ZKW_VALIDATE_NONE, false, 99, content, 0, -1, why), 0);
	assert_int_equal(gate(ZKW_VALIDATE_NONE, false, 99, content, 0, INT64_MIN, why), 0);
	assert_int_equal(gate(ZKW_VALIDATE_NONE, false, 99, content, 0, 0, why), 0);
	/* no overflow with the largest last length */
	assert_int_equal(gate(ZKW_VALIDATE_NONE, false, 99, content, 10, INT64_MAX, why), -ERANGE);
	assert_string_equal(why, "shrunk by 100% (9223372036854775807 -> 10 bytes; max-shrink 99%)");
	/* the order: empty, then syntax, then shrink */
	assert_int_equal(gate(ZKW_VALIDATE_JSON, true, 50, "", 0, 1000, why), -ENODATA);
	assert_int_equal(gate(ZKW_VALIDATE_JSON, true, 50, "[1,", 3, 1000, why), -EBADMSG);
	assert_int_equal(gate(ZKW_VALIDATE_JSON, true, 50, "[1]", 3, 1000, why), -ERANGE);
	assert_int_equal(gate(ZKW_VALIDATE_JSON, true, 50, "[1]", 3, 6, why), 0);
}

/* ---- the texts, the arguments, the parsers ------------------------------- */

/* Random inputs, mostly of the formats' own bytes: the verdict is 0 or
 * -EBADMSG, the text one line of printable ASCII that fits a segment's
 * error field. */
static void test_texts_printable_whatever_the_input(void **state)
{
	static const char alphabet[] =
	        "{}[]:,\"\\ \t\n\r-+.eE0123456789truefalsn'#&*!|>-?%@`\x01\x7f\x80\xc3\xa9\xed\xff";
	static const zkw_validate_format formats[] = {ZKW_VALIDATE_JSON, ZKW_VALIDATE_YAML};
	char why[ZKW_ERROR_MAX];
	unsigned char buf[96];

	(void)state;
	for (int round = 0; round < 20000; round++) {
		size_t n = next_random() % sizeof(buf);
		zkw_validate_format f = formats[round % 2];
		zkw_validate_rules r = {.format = f};
		int rc;

		for (size_t i = 0; i < n; i++) {
			uint64_t x = next_random();
			buf[i] = x % 8 ? (unsigned char)alphabet[(x >> 8) % (sizeof(alphabet) - 1)]
			               : (unsigned char)(x >> 8);
		}
		memset(why, 0x55, sizeof(why));
		rc = run(&r, buf, n, -1, why, sizeof(why));
		if (rc != 0 && rc != -EBADMSG)
			fail_msg("%s [%s]: %d", zkw_validate_format_name(f), shown(buf, n), rc);
		assert_true(strlen(why) < ZKW_ERROR_MAX);
		assert_true(rc == 0 ? why[0] == '\0' : strlen(why) > 10);
		for (const char *p = why; *p; p++)
			if (*p < 0x20 || *p > 0x7e)
				fail_msg("%s [%s]: byte 0x%02x in \"%s\"", zkw_validate_format_name(f),
				         shown(buf, n), (unsigned char)*p, why);
	}
}

static void test_why_buffer_and_arguments(void **state)
{
	zkw_validate_rules r = {.format = ZKW_VALIDATE_JSON};
	char why[16];

	(void)state;
	/* no buffer, or a short one: cut, NUL-terminated */
	assert_int_equal(zkw_validate(&r, "[1,", 3, -1, NULL, 0), -EBADMSG);
	why[0] = 'x';
	assert_int_equal(zkw_validate(&r, "[1,", 3, -1, why, 0), -EBADMSG);
	assert_int_equal(why[0], 'x');
	assert_int_equal(zkw_validate(&r, "[1,", 3, -1, why, sizeof(why)), -EBADMSG);
	assert_string_equal(why, "invalid JSON at");
	/* success clears it */
	assert_int_equal(zkw_validate(&r, "[1]", 3, -1, why, sizeof(why)), 0);
	assert_string_equal(why, "");
	/* what the caller got wrong */
	assert_int_equal(zkw_validate(NULL, "1", 1, -1, why, sizeof(why)), -EINVAL);
	r.format = (zkw_validate_format)7;
	assert_int_equal(zkw_validate(&r, "1", 1, -1, why, sizeof(why)), -EINVAL);
	r.format = ZKW_VALIDATE_NONE;
	r.max_shrink = 101;
	assert_int_equal(zkw_validate(&r, "1", 1, -1, why, sizeof(why)), -EINVAL);
	r.max_shrink = 0;
	assert_int_equal(zkw_validate(&r, NULL, 5, -1, why, sizeof(why)), -EINVAL);
}

static void test_parse_format(void **state)
{
	static const char *const bad[] = {"",      "JSON", "json ", " json", "jso",
	                                  "jsonx", "yml",  "None",  "null"};
	zkw_validate_format f = ZKW_VALIDATE_YAML;

	(void)state;
	assert_int_equal(zkw_validate_parse_format("json", &f), 0);
	assert_int_equal(f, ZKW_VALIDATE_JSON);
	assert_int_equal(zkw_validate_parse_format("yaml", &f), 0);
	assert_int_equal(f, ZKW_VALIDATE_YAML);
	assert_int_equal(zkw_validate_parse_format("none", &f), 0);
	assert_int_equal(f, ZKW_VALIDATE_NONE);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		f = ZKW_VALIDATE_YAML;
		assert_int_equal(zkw_validate_parse_format(bad[i], &f), -EINVAL);
		assert_int_equal(f, ZKW_VALIDATE_YAML);
	}
	assert_int_equal(zkw_validate_parse_format(NULL, &f), -EINVAL);
	assert_string_equal(zkw_validate_format_name(ZKW_VALIDATE_NONE), "none");
	assert_string_equal(zkw_validate_format_name(ZKW_VALIDATE_JSON), "json");
	assert_string_equal(zkw_validate_format_name(ZKW_VALIDATE_YAML), "yaml");
	assert_string_equal(zkw_validate_format_name((zkw_validate_format)9), "?");
}

static void test_parse_percent(void **state)
{
	static const struct {
		const char *s;
		unsigned want;
	} good[] = {{"0", 0}, {"1", 1}, {"50", 50}, {"50%", 50}, {"100", 100}, {"100%", 100}, {"007", 7}};
	static const char *const bad[] = {"",    "%",   "101", "1000", "-1",   "+5",         " 5",  "5 ",
	                                  "5%%", "5%x", "5.0", "0x10", "50 %", "4294967346", "abc", "1e2"};
	unsigned v;

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		v = 12345;
		assert_int_equal(zkw_validate_parse_percent(good[i].s, &v), 0);
		assert_int_equal(v, good[i].want);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = 12345;
		if (zkw_validate_parse_percent(bad[i], &v) != -EINVAL)
			fail_msg("\"%s\" accepted", bad[i]);
		assert_int_equal(v, 12345);
	}
	assert_int_equal(zkw_validate_parse_percent(NULL, &v), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_json_values_accepted),
	        cmocka_unit_test(test_json_faults_located),
	        cmocka_unit_test(test_json_structure_faults_located),
	        cmocka_unit_test(test_json_bad_utf8_and_nul_refused),
	        cmocka_unit_test(test_json_depth_limit),
	        cmocka_unit_test(test_json_agrees_with_json_c_by_hand),
	        cmocka_unit_test(test_json_agrees_with_json_c_on_random_documents),
	        cmocka_unit_test(test_json_64mib),
	        cmocka_unit_test(test_yaml_accepted),
	        cmocka_unit_test(test_yaml_faults_located),
	        cmocka_unit_test(test_yaml_depth_limit),
	        cmocka_unit_test(test_reject_empty),
	        cmocka_unit_test(test_max_shrink_boundaries),
	        cmocka_unit_test(test_texts_printable_whatever_the_input),
	        cmocka_unit_test(test_why_buffer_and_arguments),
	        cmocka_unit_test(test_parse_format),
	        cmocka_unit_test(test_parse_percent),
	};

	return cmocka_run_group_tests(tests, guard_map, guard_unmap);
}
