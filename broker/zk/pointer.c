/* SPDX-License-Identifier: Apache-2.0 */
/* pointer.c - parse a pointer node's content into a ZooKeeper path.
 *
 * A pointer node holds the path of the real config node, typed by a human
 * (often with a trailing newline from an editor or echo). The seed refused
 * the newline; we trim it, and refuse anything ZooKeeper itself would refuse
 * or that would make us watch something surprising ("/", "..", controls).
 * Pure and allocation-free so it can be unit-tested and fuzzed alone.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <zkw/watcher.h>

static bool is_trim_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Length of the UTF-8 sequence at p (at most n bytes), 0 when malformed,
 * overlong, a surrogate, or a code point ZooKeeper refuses in paths
 * (C1 controls, U+D800-U+F8FF, U+FFF0-U+FFFF). */
static size_t utf8_char(const unsigned char *p, size_t n)
{
	uint32_t cp;
	size_t len;

	if (p[0] < 0xc2)
		return 0; /* continuation byte or overlong 2-byte lead */
	if (p[0] < 0xe0) {
		len = 2;
		cp = p[0] & 0x1f;
	} else if (p[0] < 0xf0) {
		len = 3;
		cp = p[0] & 0x0f;
	} else if (p[0] < 0xf5) {
		len = 4;
		cp = p[0] & 0x07;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0; /* overlong or beyond Unicode */
	if (cp <= 0x9f || (cp >= 0xd800 && cp <= 0xf8ff) || (cp >= 0xfff0 && cp <= 0xffff))
		return 0;
	return len;
}

/* Check one path component [p, p+n): not empty, not "." or "..", no
 * control or malformed bytes. NULL when fine, else why. */
static const char *check_component(const unsigned char *p, size_t n)
{
	if (n == 0)
		return "empty path component ('//' or trailing '/')";
	if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
		return "'.' or '..' path component";
	for (size_t i = 0; i < n;) {
		unsigned char c = p[i];
		size_t step;

		if (c == 0)
			return "NUL byte in path";
		if (c < 0x20 || c == 0x7f)
			return "control character in path";
		if (c < 0x80) {
			i++;
			continue;
		}
		step = utf8_char(p + i, n - i);
		if (step == 0)
			return "invalid UTF-8 or forbidden character in path";
		i += step;
	}
	return NULL;
}

static int parse_fail(const char **why, const char *reason, int err)
{
	if (why)
		*why = reason;
	return err;
}

int zkw_pointer_parse(const void *data, size_t len, char *out, size_t outcap, const char **why)
{
	const unsigned char *p = data;
	size_t start = 0, end = len;

	if (why)
		*why = "";
	if (p == NULL || len == 0)
		return parse_fail(why, "empty pointer", -EINVAL);
	while (start < end && is_trim_space(p[start]))
		start++;
	while (end > start && is_trim_space(p[end - 1]))
		end--;
	if (start == end)
		return parse_fail(why, "empty pointer", -EINVAL);
	if (p[start] != '/')
		return parse_fail(why, "not an absolute path (must start with '/')", -EINVAL);
	if (end - start >= ZKW_POINTER_MAX)
		return parse_fail(why, "path too long", -ENAMETOOLONG);
	if (end - start == 1)
		return parse_fail(why, "the root '/' is not a config node", -EINVAL);

	/* Components sit between '/' separators: [comp, next '/'). */
	for (size_t comp = start + 1; comp <= end;) {
		const unsigned char *slash = memchr(p + comp, '/', end - comp);
		size_t stop = slash ? (size_t)(slash - p) : end;
		const char *bad = check_component(p + comp, stop - comp);

		if (bad)
			return parse_fail(why, bad, -EINVAL);
		comp = stop + 1;
	}
	if (outcap < end - start + 1)
		return parse_fail(why, "output buffer too small", -ENOBUFS);
	memcpy(out, p + start, end - start);
	out[end - start] = '\0';
	return (int)(end - start);
}
