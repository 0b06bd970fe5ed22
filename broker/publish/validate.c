/* SPDX-License-Identifier: Apache-2.0 */
/* validate.c - the content gate of a watch: reject-empty, json / yaml,
 * max-shrink (validate.h).
 *
 * JSON is two passes over the bytes. A lexical pass of our own comes first
 * and refuses what json-c 0.16 accepts even with JSON_TOKENER_STRICT but
 * RFC 8259 does not: the literals NaN, Infinity and -Infinity, numbers like
 * "1." and "-01", raw control characters (tab included) inside strings,
 * and invalid UTF-8 (json-c's JSON_TOKENER_VALIDATE_UTF8 lets overlong
 * forms, surrogates and F5..F7 through, and refuses a character split
 * between two calls, which the chunking below would cause). It also finds
 * NUL bytes, which json-c takes for the end of its input. json-c then
 * parses the structure, and only the bytes before the lexical pass's first
 * fault: whichever fault comes first in the content is the one reported,
 * with json-c's own words for what it finds. json-c takes an int length,
 * so content is handed over in pieces of at most 1 GiB (content up to the
 * 256 MiB capacity in one), each ending just after whitespace or a
 * structural character: json-c 0.16 misjudges a number split between two
 * calls ("7" then "-0" passes as one number).
 *
 * json-c builds the value's tree while it parses (its tokener has no
 * other mode): memory in proportion to the number of values, all freed
 * before returning. libyaml is used event by event: memory in proportion
 * to the nesting only, which is why YAML is held to the same depth limit
 * as JSON.
 */
#include "validate.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#include <json-c/json_object.h>
#include <json-c/json_tokener.h>
#include <yaml.h>

#include <zkw/common.h>

#define STRINGIFY_(x) #x
#define STRINGIFY(x)  STRINGIFY_(x)
#define JSON_CHUNK    ((size_t)1 << 30) /* below INT_MAX */

size_t zkw__validate_json_chunk;

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

/* ---- JSON: the lexical pass --------------------------------------------- */

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

/* Each lex_* starts at *pos on the token's first byte and leaves *pos
 * after the token (NULL back) or on the fault (its words back). A token
 * cut short by the end of the content is json-c's to report ("unexpected
 * end of data"), except a number json-c would take whole ("1.", "1e"). */
static const char *lex_string(const unsigned char *s, size_t len, size_t *pos)
{
	size_t i = *pos + 1, n;

	for (;;) {
		while (i < len && s[i] >= 0x20 && s[i] < 0x80 && s[i] != '"' && s[i] != '\\')
			i++;
		if (i == len)
			break;
		if (s[i] == '"') {
			i++;
			break;
		}
		if (s[i] == '\\') {
			if (++i == len)
				break;
			if (s[i] == 'u') {
				for (n = 0; n < 4 && ++i < len; n++)
					if (!is_hex(s[i])) {
						*pos = i;
						return "\\u needs four hex digits";
					}
				if (i < len)
					i++;
				continue;
			}
			if (!s[i] || !strchr("\"\\/bfnrt", s[i])) {
				*pos = i;
				return "invalid escape in a string";
			}
			i++;
			continue;
		}
		if (s[i] < 0x20) {
			*pos = i;
			return s[i] ? "control character in a string (must be escaped)" : "NUL byte";
		}
		if (!(n = utf8_sequence(s + i, len - i))) {
			*pos = i;
			return "invalid UTF-8";
		}
		i += n;
	}
	*pos = i;
	return NULL;
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

static bool is_letter(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static const char *lex_word(const unsigned char *s, size_t len, size_t *pos)
{
	size_t i = *pos, n;

	while (i < len && is_letter(s[i]))
		i++;
	n = i - *pos;
	/* A prefix of a literal at the very end is json-c's "unexpected end". */
	if ((n == 4 && (!memcmp(s + *pos, "true", 4) || !memcmp(s + *pos, "null", 4))) ||
	    (n == 5 && !memcmp(s + *pos, "false", 5)) ||
	    (i == len && n < 5 &&
	     (!memcmp(s + *pos, "true", n) || !memcmp(s + *pos, "null", n) ||
	      !memcmp(s + *pos, "false", n)))) {
		*pos = i;
		return NULL;
	}
	return "invalid literal (JSON has true, false and null)";
}

/* The offset of the first lexical fault and its words in *what, or len
 * and NULL; *inside: the fault is within a string or a number, not on the
 * first byte of a token. Also counts the nesting: json-c's own limit
 * counts a scalar in the innermost array as one more level, and an empty
 * one not. */
static size_t json_lex(const unsigned char *s, size_t len, const char **what, bool *inside)
{
	unsigned depth = 0;
	size_t i = 0, start;

	*what = NULL;
	while (i < len) {
		unsigned char c = s[i];

		if (c == '{' || c == '[') {
			if (++depth > ZKW_VALIDATE_MAX_DEPTH) {
				*what = "nesting deeper than " STRINGIFY(ZKW_VALIDATE_MAX_DEPTH) " levels";
				return i;
			}
			i++;
			continue;
		}
		if (c == '}' || c == ']') {
			depth -= depth > 0; /* a closer too many is json-c's to report */
			i++;
			continue;
		}
		if (is_space(c) || c == ':' || c == ',') {
			i++;
			continue;
		}
		start = i;
		if (c == '"')
			*what = lex_string(s, len, &i);
		else if (c == '-' || is_digit(c))
			*what = lex_number(s, len, &i);
		else if (is_letter(c))
			*what = lex_word(s, len, &i);
		else if (!c)
			*what = "NUL byte";
		else
			*what = "unexpected character";
		if (*what) {
			*inside = i != start;
			return i;
		}
	}
	return len;
}

/* ---- JSON: the structure (json-c) -------------------------------------- */

enum json_outcome { JSON_VALUE, JSON_FAULT, JSON_INCOMPLETE };

static bool is_separator(unsigned char c)
{
	return is_space(c) || c == '{' || c == '}' || c == '[' || c == ']' || c == ':' || c == ',';
}

/* The length of json-c's next piece of s[at..n): all of it when it fits
 * in `chunk`, else up to the last separator within `chunk` bytes, or when
 * there is none the first one after (never beyond INT_MAX bytes), so that
 * no token is cut in two. */
static size_t json_piece(const unsigned char *s, size_t at, size_t n, size_t chunk)
{
	size_t end, max = n - at < INT_MAX ? n : at + INT_MAX;

	if (n - at <= chunk)
		return n - at;
	for (end = at + chunk; end > at; end--)
		if (is_separator(s[end - 1]))
			return end - at;
	for (end = at + chunk; end < max; end++)
		if (is_separator(s[end]))
			return end + 1 - at;
	return max - at;
}

/* Parse s[0..n) with json-c. final: n is the end of the content (json-c is
 * then told so, with the terminating NUL it wants). JSON_VALUE: a whole
 * value ends at *off; JSON_FAULT: json-c's fault at *off, its words in
 * *what; JSON_INCOMPLETE: s[0..n) is a valid beginning. -ENOMEM when the
 * tokener cannot be had. */
static int json_structure(const unsigned char *s, size_t n, bool final, size_t *off, const char **what)
{
	size_t chunk = zkw__validate_json_chunk ? zkw__validate_json_chunk : JSON_CHUNK;
	enum json_tokener_error err = json_tokener_continue;
	struct json_tokener *tok;
	struct json_object *value;
	size_t at = 0, piece = 0;
	int outcome;

	if (chunk > JSON_CHUNK)
		chunk = JSON_CHUNK;
	/* Above ours (json_lex), which is the one that counts. */
	if (!(tok = json_tokener_new_ex(ZKW_VALIDATE_MAX_DEPTH + 2)))
		return -ENOMEM;
	/* Trailing bytes are ours to check: json-c sees them only within the
	 * chunk that ends the value, which would make the words depend on
	 * where a chunk ends. */
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_ALLOW_TRAILING_CHARS);
	while (err == json_tokener_continue) {
		at += piece;
		if (at < n) {
			piece = json_piece(s, at, n, chunk);
			value = json_tokener_parse_ex(tok, (const char *)s + at, (int)piece);
		} else if (final) {
			piece = 0;
			value = json_tokener_parse_ex(tok, "", 1);
		} else {
			break;
		}
		err = json_tokener_get_error(tok);
		json_object_put(value);
		if (err != json_tokener_continue)
			*off = at + json_tokener_get_parse_end(tok);
		else if (!piece)
			err = json_tokener_error_parse_eof; /* defensive: the NUL ends every value */
	}
	if (err == json_tokener_continue) {
		outcome = JSON_INCOMPLETE;
	} else if (err == json_tokener_success) {
		outcome = JSON_VALUE;
	} else {
		outcome = JSON_FAULT;
		*what = json_tokener_error_desc(err);
	}
	if (*off > n) /* past the terminating NUL */
		*off = n;
	json_tokener_free(tok);
	return outcome;
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
	const char *lex_what, *what = NULL;
	size_t lex_off, off = 0, rest;
	bool inside = false;
	int outcome;

	if (skip_space(s, 0, len) == len)
		return zkw__errorf(why, whylen, -EBADMSG, "invalid JSON: %s",
		                   len ? "only whitespace, no value" : "empty content");
	if (len >= 3 && !memcmp(s, "\xef\xbb\xbf", 3))
		return syntax_fault("JSON", s, len, 0, "byte order mark (not allowed in JSON)", why, whylen);
	lex_off = json_lex(s, len, &lex_what, &inside);
	/* Where a token starts with a byte json-c can judge, json-c sees it
	 * too, and its words say what was expected there ("quoted object
	 * property name expected"); within a string or a number ours are the
	 * more precise. */
	outcome = json_structure(s, lex_what && !inside ? lex_off + 1 : lex_off, !lex_what, &off, &what);
	if (outcome == -ENOMEM)
		return zkw__errorf(why, whylen, -ENOMEM, "invalid JSON: out of memory while parsing");
	if (outcome == JSON_FAULT && off <= lex_off)
		return syntax_fault("JSON", s, len, off, what, why, whylen);
	if (outcome == JSON_VALUE && (rest = skip_space(s, off, len)) < len && rest <= lex_off)
		return syntax_fault("JSON", s, len, rest, "data after the JSON value", why, whylen);
	if (lex_what)
		return syntax_fault("JSON", s, len, lex_off, lex_what, why, whylen);
	return 0;
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
