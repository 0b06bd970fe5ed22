/* SPDX-License-Identifier: Apache-2.0 */
/* validate.c - the content gate of a watch: reject-empty, json / yaml,
 * max-shrink (validate.h).
 *
 * JSON is checked by a validator of our own: one pass over the bytes, no
 * allocation (the nesting is a bitset of ZKW_VALIDATE_MAX_DEPTH bits on
 * the stack), the whole of RFC 8259 and nothing else. json-c, which did
 * the structure before, builds the value's tree whatever it is asked (an
 * array of 64 MiB of small values took 2 GiB and 3 s), and lets through
 * what RFC 8259 refuses (NaN, "1.", "-01", raw control characters, bad
 * UTF-8); it remains the tests' oracle (tests/unit/test_validate.c,
 * tests/fuzz/fuzz_validate.c). Strings, the bulk of most documents, are
 * scanned 8 bytes at a time.
 *
 * libyaml is used event by event: memory in proportion to the nesting
 * only, which is why YAML is held to the same depth limit as JSON.
 */
#include "validate.h"

#include <errno.h>
#include <string.h>

#include <yaml.h>

#include <zkw/common.h>

#define STRINGIFY_(x) #x
#define STRINGIFY(x)  STRINGIFY_(x)

static bool is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The offset of the first byte at or after `from` that is not JSON / YAML
 * whitespace, or len. */
static size_t skip_space(const unsigned char *s, size_t from, size_t len)
{
	while (from < len && is_space(s[from]))
		from++;
	return from;
}

/* Line and column (from 1) of byte offset `off`: lines end at LF, a
 * column counts characters (bytes that are not UTF-8 continuation bytes). */
static void locate(const unsigned char *s, size_t off, size_t *line, size_t *column)
{
	const unsigned char *p = s, *end = s + off, *nl;

	*line = 1;
	while (p < end && (nl = memchr(p, '\n', (size_t)(end - p)))) {
		(*line)++;
		p = nl + 1;
	}
	*column = 1;
	for (; p < end; p++)
		*column += (*p & 0xc0) != 0x80;
}

/* ---- JSON --------------------------------------------------------------- */

/* The length of the UTF-8 sequence at s (RFC 3629: no overlong form, no
 * surrogate, nothing above U+10FFFF), or 0 when it is not one. s[0] >= 0x80. */
static size_t utf8_sequence(const unsigned char *s, size_t avail)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xbf;
	size_t n;

	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	if (avail < n)
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return n;
}

static bool is_hex(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static bool is_letter(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* A fault found before the end of the content names the byte it is on;
 * content that stops too early names the end. */
#define JSON_EOF      "unexpected end of input"
#define JSON_TOO_DEEP "nesting deeper than " STRINGIFY(ZKW_VALIDATE_MAX_DEPTH) " levels"
#define BYTES8(b)     (0x0101010101010101ULL * (b))

/* Whether one of the 8 bytes in w is not a plain string byte: a control
 * character, '"', '\\' or a byte >= 0x80. (x - 0x01..) & ~x & 0x80.. is
 * nonzero exactly when a byte of x is 0, (x - 0x20..) & ~x & 0x80.. when
 * one is below 0x20 (borrows only spread above a byte that matched). */
static bool string_special8(uint64_t w)
{
	uint64_t quote = w ^ BYTES8('"'), backslash = w ^ BYTES8('\\');

	return (((w - BYTES8(0x20)) & ~w) | ((quote - BYTES8(1)) & ~quote) |
	        ((backslash - BYTES8(1)) & ~backslash) | w) &
	       BYTES8(0x80);
}

static bool string_plain(unsigned char c)
{
	return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

/* Each lex_* starts at *pos on the token's first byte and leaves *pos
 * after the token (NULL back) or on the fault (its words back). */
static const char *lex_string(const unsigned char *s, size_t len, size_t *pos)
{
	size_t i = *pos + 1, n;
	uint64_t w;

	for (;;) {
		while (len - i >= 8) {
			memcpy(&w, s + i, 8);
			if (string_special8(w))
				break;
			i += 8;
		}
		while (i < len && string_plain(s[i]))
			i++;
		if (i == len)
			break;
		if (s[i] == '"') {
			*pos = i + 1;
			return NULL;
		}
		if (s[i] == '\\') {
			if (++i == len)
				break;
			switch (s[i]) {
			case '"':
			case '\\':
			case '/':
			case 'b':
			case 'f':
			case 'n':
			case 'r':
			case 't': i++; continue;
			case 'u':
				for (n = 1; n <= 4; n++)
					if (i + n == len || !is_hex(s[i + n])) {
						*pos = i + n;
						return i + n == len ? JSON_EOF : "\\u needs four hex digits";
					}
				i += 5;
				continue;
			default: *pos = i; return "invalid escape";
			}
		}
		if (s[i] < 0x20) {
			*pos = i;
			return "control character in a string (must be escaped)";
		}
		if (!(n = utf8_sequence(s + i, len - i))) {
			*pos = i;
			return "invalid UTF-8";
		}
		i += n;
	}
	*pos = len;
	return JSON_EOF;
}

/* RFC 8259: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)? */
static const char *lex_number(const unsigned char *s, size_t len, size_t *pos)
{
	size_t i = *pos;

	if (s[i] == '-')
		i++;
	if (i == len || !is_digit(s[i])) {
		*pos = i;
		return "digit expected after '-'";
	}
	if (s[i] == '0') {
		if (++i < len && is_digit(s[i])) {
			*pos = i;
			return "number with a leading zero";
		}
	} else {
		while (i < len && is_digit(s[i]))
			i++;
	}
	if (i < len && s[i] == '.') {
		if (++i == len || !is_digit(s[i])) {
			*pos = i;
			return "digit expected after the decimal point";
		}
		while (i < len && is_digit(s[i]))
			i++;
	}
	if (i < len && (s[i] == 'e' || s[i] == 'E')) {
		if (++i < len && (s[i] == '+' || s[i] == '-'))
			i++;
		if (i == len || !is_digit(s[i])) {
			*pos = i;
			return "digit expected in the exponent";
		}
		while (i < len && is_digit(s[i]))
			i++;
	}
	*pos = i;
	return NULL;
}

/* true, false, null. A run of letters is one word, so "nullx" is not null
 * followed by something; a literal cut short by the end is the end's
 * fault. */
static const char *lex_word(const unsigned char *s, size_t len, size_t *pos)
{
	const char *literal = s[*pos] == 't' ? "true" : s[*pos] == 'f' ? "false" : "null";
	size_t i = *pos, n = strlen(literal);

	while (i < len && is_letter(s[i]))
		i++;
	if (i - *pos == n && !memcmp(s + *pos, literal, n)) {
		*pos = i;
		return NULL;
	}
	if (i == len && i - *pos < n && !memcmp(s + *pos, literal, i - *pos)) {
		*pos = len;
		return JSON_EOF;
	}
	return "invalid literal (JSON has true, false and null)";
}

/* NULL when s[0..len) is exactly one JSON value with whitespace around it,
 * else the first fault's words and its offset in *at. One pass; the only
 * memory is the nesting, a bit a level, set for an object. */
static const char *json_check(const unsigned char *s, size_t len, size_t *at)
{
	uint64_t objects[ZKW_VALIDATE_MAX_DEPTH / 64 + 1] = {0};
	enum { WANT_VALUE, WANT_KEY, WANT_COLON, WANT_MORE } want = WANT_VALUE;
	bool object = false; /* the innermost container is an object */
	bool opened = false; /* and nothing is in it yet */
	size_t i = 0, depth = 0;
	const char *what = NULL;
	unsigned char c;

	for (;;) {
		i = skip_space(s, i, len);
		if (i == len) {
			if (want == WANT_MORE && !depth)
				return NULL;
			*at = len;
			return JSON_EOF;
		}
		c = s[i];
		if (c == (object ? '}' : ']') && depth && (want == WANT_MORE || opened)) {
			i++;
			want = WANT_MORE;
			opened = false;
			if (--depth)
				object = objects[(depth - 1) / 64] >> (depth - 1) % 64 & 1;
			continue;
		}
		opened = false;
		switch (want) {
		case WANT_VALUE:
			want = WANT_MORE;
			if (c == '"') {
				what = lex_string(s, len, &i);
			} else if (c == '-' || is_digit(c)) {
				what = lex_number(s, len, &i);
			} else if (c == '{' || c == '[') {
				if (depth == ZKW_VALIDATE_MAX_DEPTH) {
					what = JSON_TOO_DEEP;
					break;
				}
				object = c == '{';
				objects[depth / 64] &= ~((uint64_t)1 << depth % 64);
				objects[depth / 64] |= (uint64_t)object << depth % 64;
				depth++;
				i++;
				want = object ? WANT_KEY : WANT_VALUE;
				opened = true;
			} else if (is_letter(c)) {
				what = lex_word(s, len, &i);
			} else {
				what = "expected a value";
			}
			break;
		case WANT_KEY:
			if (c != '"') {
				what = "object key must be a string";
				break;
			}
			what = lex_string(s, len, &i);
			want = WANT_COLON;
			break;
		case WANT_COLON:
			if (c != ':') {
				what = "expected ':' after the key";
				break;
			}
			i++;
			want = WANT_VALUE;
			break;
		case WANT_MORE:
			if (!depth) {
				what = "trailing data after the value";
			} else if (c == ',') {
				i++;
				want = object ? WANT_KEY : WANT_VALUE;
			} else {
				what = object ? "expected ',' or '}'" : "expected ',' or ']'";
			}
			break;
		}
		if (what) {
			*at = i;
			return what;
		}
	}
}

/* A fault at s[off] in words. A NUL byte is named with its offset: an
 * editor shows it as nothing at all, or not at all. */
static int syntax_fault(const char *format, const unsigned char *s, size_t len, size_t off, const char *what,
                        char *why, size_t whylen)
{
	size_t line, column;

	locate(s, off, &line, &column);
	if (off < len && !s[off])
		return zkw__errorf(why, whylen, -EBADMSG,
		                   "invalid %s at line %zu, column %zu: NUL byte (offset %zu)", format, line,
		                   column, off);
	return zkw__errorf(why, whylen, -EBADMSG, "invalid %s at line %zu, column %zu: %s", format, line,
	                   column, what);
}

static int validate_json(const unsigned char *s, size_t len, char *why, size_t whylen)
{
	const char *what;
	size_t at;

	if (skip_space(s, 0, len) == len)
		return zkw__errorf(why, whylen, -EBADMSG, "invalid JSON: %s",
		                   len ? "only whitespace, no value" : "empty content");
	if (len >= 3 && !memcmp(s, "\xef\xbb\xbf", 3))
		return syntax_fault("JSON", s, len, 0, "byte order mark (not allowed in JSON)", why, whylen);
	if (!(what = json_check(s, len, &at)))
		return 0;
	return syntax_fault("JSON", s, len, at, what, why, whylen);
}

/* ---- YAML --------------------------------------------------------------- */

/* The parser's fault, in words. */
static int yaml_fault(const yaml_parser_t *parser, const unsigned char *s, size_t len, char *why,
                      size_t whylen)
{
	const char *problem = parser->problem ? parser->problem : "syntax error";

	if (parser->error == YAML_MEMORY_ERROR)
		return zkw__errorf(why, whylen, -ENOMEM, "invalid YAML: out of memory while parsing");
	if (parser->error == YAML_READER_ERROR)
		return syntax_fault("YAML", s, len,
		                    parser->problem_offset < len ? parser->problem_offset : len, problem, why,
		                    whylen);
	/* libyaml ends the stream on a line of its own; the end of the
	 * content is where an operator looks. */
	if (parser->problem_mark.index >= len)
		return syntax_fault("YAML", s, len, len, problem, why, whylen);
	return zkw__errorf(why, whylen, -EBADMSG, "invalid YAML at line %zu, column %zu: %s",
	                   parser->problem_mark.line + 1, parser->problem_mark.column + 1, problem);
}

static int validate_yaml(const unsigned char *s, size_t len, char *why, size_t whylen)
{
	yaml_parser_t parser;
	yaml_event_type_t type;
	yaml_event_t event;
	unsigned depth = 0;
	int err = 0;

	if (!yaml_parser_initialize(&parser))
		return zkw__errorf(why, whylen, -ENOMEM, "invalid YAML: out of memory while parsing");
	yaml_parser_set_input_string(&parser, s, len);
	/* UTF-8 only: a BOM must not make libyaml read UTF-16 the workers
	 * were never promised. */
	yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING);
	do {
		if (!yaml_parser_parse(&parser, &event)) {
			err = yaml_fault(&parser, s, len, why, whylen);
			break;
		}
		type = event.type;
		if ((type == YAML_SEQUENCE_START_EVENT || type == YAML_MAPPING_START_EVENT) &&
		    ++depth > ZKW_VALIDATE_MAX_DEPTH)
			err = zkw__errorf(
			        why, whylen, -EBADMSG,
			        "invalid YAML at line %zu, column %zu: nesting deeper than %d levels",
			        event.start_mark.line + 1, event.start_mark.column + 1,
			        ZKW_VALIDATE_MAX_DEPTH);
		else if (type == YAML_SEQUENCE_END_EVENT || type == YAML_MAPPING_END_EVENT)
			depth--;
		yaml_event_delete(&event);
	} while (!err && type != YAML_STREAM_END_EVENT);
	yaml_parser_delete(&parser);
	return err;
}

/* ---- the gate ----------------------------------------------------------- */

/* Refused when len < last * (100 - pct) / 100, rounded up: computed as
 * q * (100 - pct) + ceil(r * (100 - pct) / 100) with last = 100 q + r, so
 * that nothing overflows. */
static int check_shrink(size_t len, uint64_t last, unsigned pct, char *why, size_t whylen)
{
	uint64_t keep = 100 - pct, min = last / 100 * keep + (last % 100 * keep + 99) / 100, lost, shown;

	if ((uint64_t)len >= min)
		return 0;
	/* Rounded up, so the figure shown is always above max-shrink. */
	lost = last - len;
	if (last <= UINT64_MAX / 200)
		shown = (lost * 100 + last - 1) / last;
	else
		shown = lost / (last / 100);
	if (shown <= pct)
		shown = pct + 1;
	if (shown > 100)
		shown = 100;
	return zkw__errorf(why, whylen, -ERANGE, "shrunk by %u%% (%llu -> %zu bytes; max-shrink %u%%)",
	                   (unsigned)shown, (unsigned long long)last, len, pct);
}

int zkw_validate(const zkw_validate_rules *r, const void *content, size_t len, int64_t last_good_len,
                 char *why, size_t whylen)
{
	const unsigned char *s = content;
	int err = 0;

	if (why && whylen)
		why[0] = '\0';
	if (!r || (r->format != ZKW_VALIDATE_NONE && r->format != ZKW_VALIDATE_JSON &&
	           r->format != ZKW_VALIDATE_YAML))
		return zkw__errorf(why, whylen, -EINVAL, "validate: unknown format");
	if (r->max_shrink > 100)
		return zkw__errorf(why, whylen, -EINVAL, "validate: max-shrink %u%% above 100%%",
		                   r->max_shrink);
	if (!s && len)
		return zkw__errorf(why, whylen, -EINVAL, "validate: no content");
	if (!len)
		s = (const unsigned char *)"";

	if (r->reject_empty) {
		if (!len)
			return zkw__errorf(why, whylen, -ENODATA, "empty content (reject-empty)");
		if (r->format != ZKW_VALIDATE_NONE && skip_space(s, 0, len) == len)
			return zkw__errorf(why, whylen, -ENODATA, "only whitespace (reject-empty)");
	}
	if (r->format == ZKW_VALIDATE_JSON)
		err = validate_json(s, len, why, whylen);
	else if (r->format == ZKW_VALIDATE_YAML)
		err = validate_yaml(s, len, why, whylen);
	if (err)
		return err;
	if (r->max_shrink && last_good_len >= 0)
		return check_shrink(len, (uint64_t)last_good_len, r->max_shrink, why, whylen);
	return 0;
}

int zkw_validate_parse_format(const char *s, zkw_validate_format *out)
{
	static const zkw_validate_format all[] = {ZKW_VALIDATE_NONE, ZKW_VALIDATE_JSON, ZKW_VALIDATE_YAML};

	for (size_t i = 0; s && i < sizeof(all) / sizeof(all[0]); i++)
		if (!strcmp(s, zkw_validate_format_name(all[i]))) {
			*out = all[i];
			return 0;
		}
	return -EINVAL;
}

const char *zkw_validate_format_name(zkw_validate_format f)
{
	switch (f) {
	case ZKW_VALIDATE_NONE: return "none";
	case ZKW_VALIDATE_JSON: return "json";
	case ZKW_VALIDATE_YAML: return "yaml";
	}
	return "?";
}

int zkw_validate_parse_percent(const char *s, unsigned *out)
{
	unsigned v = 0;
	size_t i = 0;

	if (!s)
		return -EINVAL;
	for (; is_digit((unsigned char)s[i]); i++)
		if ((v = v * 10 + (unsigned)(s[i] - '0')) > 100)
			return -EINVAL;
	if (!i || (s[i] == '%' && s[i + 1]) || (s[i] && s[i] != '%'))
		return -EINVAL;
	*out = v;
	return 0;
}
