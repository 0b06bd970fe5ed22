/* SPDX-License-Identifier: Apache-2.0 */
/* fuzz_validate.c - the content gate (broker/publish/validate.c).
 *
 * The first byte picks the rules: bits 0-1 the format (3 = none), bit 2
 * reject-empty (bits 3-7 unused); the second byte max-shrink (% 101), the
 * third the last good length in tens of bytes (255 = unknown). The rest is
 * the content, at the end of an exact-size heap copy so that a read past
 * it is caught.
 *
 * The gate must answer 0, -ENODATA, -EBADMSG or -ERANGE; its text must be
 * empty on 0, else one line of printable ASCII within ZKW_ERROR_MAX.
 *
 * And json-c is the oracle of JSON: whatever the rules, the content is
 * checked as JSON alone, and the verdict (accept / refuse) must be json-c
 * 0.16's strict one, unless the content holds what json-c is known to
 * judge otherwise (validate_json_c_gap below), where ours is the RFC's.
 */
#include <errno.h>
#include <regex.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>


#include <zkw/common.h>

#include "json_oracle.h"
#include "fuzz.h"
#include "publish/validate.h"

/* Whether s[0..n) is well-formed UTF-8 (RFC 3629), decoded code point by
 * code point: written apart from validate.c's, on purpose. */
static bool validate_utf8_ok(const uint8_t *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		uint32_t cp, min;
		size_t more;

		if (s[i] < 0x80) {
			i++;
			continue;
		}
		if ((s[i] & 0xe0) == 0xc0)
			cp = s[i] & 0x1f, more = 1, min = 0x80;
		else if ((s[i] & 0xf0) == 0xe0)
			cp = s[i] & 0x0f, more = 2, min = 0x800;
		else if ((s[i] & 0xf8) == 0xf0)
			cp = s[i] & 0x07, more = 3, min = 0x10000;
		else
			return false;
		if (n - i <= more)
			return false;
		for (size_t k = 1; k <= more; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += more + 1;
	}
	return true;
}

/* Whether the number-like run s[0..n) (json-c's number token: the bytes
 * "-+.eE0123456789") is an RFC 8259 number. */
static bool validate_number_ok(const uint8_t *s, size_t n)
{
	static regex_t number;
	static bool compiled;
	char buf[64];

	if (!compiled) {
		FUZZ_CHECK(regcomp(&number, "^-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?$",
		                   REG_EXTENDED | REG_NOSUB) == 0,
		           "the number pattern compiles");
		compiled = true;
	}
	if (n >= sizeof(buf))
		return false; /* not worth the copy: the oracle passes */
	memcpy(buf, s, n);
	buf[n] = '\0';
	return regexec(&number, buf, 0, NULL, 0) == 0;
}

/* Whether s[0..n) holds something json-c 0.16 (strict) judges otherwise
 * than RFC 8259: it accepts NaN, Infinity, -Infinity, numbers such as
 * "-01", "1." and "1.e5", raw control characters and invalid UTF-8 in
 * strings; it stops at a NUL; its nesting limit is not ours. */
static bool validate_json_c_gap(const uint8_t *s, size_t n)
{
	static const char number_bytes[] = "-+.eE0123456789";
	bool in_string = false;
	size_t depth = 0;

	if (memchr(s, 0, n) || !validate_utf8_ok(s, n))
		return true;
	for (size_t i = 0; i < n; i++) {
		if (in_string) {
			if (s[i] == '\\')
				i++;
			else if (s[i] == '"')
				in_string = false;
			else if (s[i] < 0x20)
				return true;
			continue;
		}
		if (s[i] == '"') {
			in_string = true;
		} else if (s[i] == '[' || s[i] == '{') {
			if (++depth > ZKW_VALIDATE_MAX_DEPTH)
				return true;
		} else if (s[i] == ']' || s[i] == '}') {
			depth -= depth > 0;
		} else if ((n - i >= 3 && !memcmp(s + i, "NaN", 3)) ||
		           (n - i >= 8 && !memcmp(s + i, "Infinity", 8))) {
			return true;
		} else if (s[i] == '-' || (s[i] >= '0' && s[i] <= '9')) {
			size_t end = i;

			while (end < n && strchr(number_bytes, s[end]))
				end++;
			if (!validate_number_ok(s + i, end - i))
				return true;
			i = end - 1;
		}
	}
	return false;
}

static int fuzz_validate(const uint8_t *data, size_t size)
{
	static const zkw_validate_format formats[] = {ZKW_VALIDATE_JSON, ZKW_VALIDATE_YAML, ZKW_VALIDATE_NONE,
	                                              ZKW_VALIDATE_NONE};
	const zkw_validate_rules json_only = {.format = ZKW_VALIDATE_JSON};
	char why[ZKW_ERROR_MAX];
	zkw_validate_rules r;
	int64_t last;
	uint8_t *content;
	size_t len;
	int rc;

	if (size < 3)
		return 0;
	r.format = formats[data[0] & 3];
	r.reject_empty = data[0] & 4;
	r.max_shrink = data[1] % 101u;
	last = data[2] == 255 ? -1 : (int64_t)data[2] * 10;
	len = size - 3;
	if (!(content = malloc(len ? len : 1)))
		abort();
	memcpy(content, data + 3, len);

	rc = zkw_validate(&r, content, len, last, why, sizeof(why));
	FUZZ_CHECK(rc == 0 || rc == -ENODATA || rc == -EBADMSG || rc == -ERANGE, "documented results");
	FUZZ_CHECK(memchr(why, 0, sizeof(why)) != NULL, "text NUL-terminated");
	FUZZ_CHECK(rc == 0 ? why[0] == '\0' : why[0] != '\0', "a text exactly when refused");
	for (const char *p = why; *p; p++)
		FUZZ_CHECK(*p >= 0x20 && *p <= 0x7e, "printable ASCII text");
	FUZZ_CHECK(!(len == 0 && r.reject_empty) || rc == -ENODATA, "empty refused under reject-empty");
	if (rc == -EBADMSG)
		FUZZ_CHECK(r.format != ZKW_VALIDATE_NONE, "no syntax without a format");

	rc = zkw_validate(&json_only, content, len, -1, why, sizeof(why));
	FUZZ_CHECK(rc == 0 || rc == -EBADMSG, "JSON: accepted or refused");
	if (!validate_json_c_gap(content, len))
		FUZZ_CHECK((rc == 0) == json_c_accepts(content, len), "JSON: json-c's verdict");
	free(content);
	return 0;
}

#ifndef ZKW_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_validate(data, size);
}
#endif
