/* SPDX-License-Identifier: Apache-2.0 */
/* zkw_text.c - escaping bytes from outside for a terminal or JSON (see
 * zkw_text.h). */
#include "zkw_text.h"

#include <stdint.h>
#include <string.h>

static int is_cont(unsigned char c)
{
	return (c & 0xc0) == 0x80;
}

/* Characters that a terminal acts on although they are valid UTF-8. */
static int is_hidden_control(uint32_t cp)
{
	return (cp >= 0x80 && cp <= 0x9f)         /* C1 controls: CSI, OSC, ... */
	       || cp == 0x200e || cp == 0x200f    /* LRM, RLM */
	       || cp == 0x2028 || cp == 0x2029    /* line and paragraph separators */
	       || (cp >= 0x202a && cp <= 0x202e)  /* bidi embeddings and overrides */
	       || (cp >= 0x2066 && cp <= 0x2069); /* bidi isolates */
}

/* The length of the well-formed UTF-8 sequence of one non-ASCII character
 * at p (len available), its code point in *cp; 0 when the byte at p does
 * not start one (a continuation byte, 0xc0/0xc1 (always overlong) or
 * 0xf5.., a truncated or overlong sequence, a surrogate, a code point above
 * U+10FFFF). */
static size_t utf8_decode(const unsigned char *p, size_t len, uint32_t *cp)
{
	unsigned char c = p[0];
	size_t n;
	uint32_t min;

	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		*cp = c & 0x1f;
		min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		*cp = c & 0x0f;
		min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		*cp = c & 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	if (len < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if (!is_cont(p[i]))
			return 0;
		*cp = *cp << 6 | (p[i] & 0x3f);
	}
	if (*cp < min || *cp > 0x10ffff || (*cp >= 0xd800 && *cp <= 0xdfff))
		return 0;
	return n;
}

size_t zkw_text_shown(const unsigned char *p, size_t len)
{
	uint32_t cp;
	size_t n;

	if (len == 0)
		return 0;
	if (p[0] < 0x80)
		return p[0] >= 0x20 && p[0] < 0x7f ? 1 : 0;
	n = utf8_decode(p, len, &cp);
	return n && !is_hidden_control(cp) ? n : 0;
}

/* One character or byte at p of a JSON string: UTF-8 as it is, except the
 * characters a terminal acts on (\uXXXX of the code point); a byte that is
 * not part of well-formed UTF-8 as \u00XX. Returns the bytes consumed. */
static size_t json_put_other(FILE *f, const unsigned char *p, size_t len)
{
	uint32_t cp;
	size_t n = p[0] >= 0x80 ? utf8_decode(p, len, &cp) : 0;

	if (n && !is_hidden_control(cp)) {
		fwrite(p, 1, n, f);
		return n;
	}
	if (n) { /* C1 controls, bidi controls, line separators: all below U+FFFF */
		fprintf(f, "\\u%04x", (unsigned)cp);
		return n;
	}
	fprintf(f, "\\u%04x", p[0]);
	return 1;
}

void zkw_text_put(FILE *f, const void *data, size_t len, unsigned flags)
{
	const unsigned char *p = data;
	int json = (flags & ZKW_TEXT_JSON) != 0;
	int quote = json || (flags & ZKW_TEXT_QUOTE);
	int ascii = !json && (flags & ZKW_TEXT_ASCII);
	int lines = !json && (flags & ZKW_TEXT_LINES);
	size_t i = 0;

	if (quote)
		fputc('"', f);
	while (i < len) {
		unsigned char c = p[i];
		size_t n;

		if (c == '\\' && !lines) {
			fputs("\\\\", f);
		} else if (c == '"' && quote) {
			fputs("\\\"", f);
		} else if ((c == '\n' || c == '\t') && lines) {
			fputc(c, f);
		} else if (c == '\n') {
			fputs("\\n", f);
		} else if (c == '\r') {
			fputs("\\r", f);
		} else if (c == '\t') {
			fputs("\\t", f);
		} else if (json && !(c >= 0x20 && c < 0x7f)) {
			i += json_put_other(f, p + i, len - i);
			continue;
		} else if ((n = zkw_text_shown(p + i, len - i)) != 0 && (n == 1 || !ascii)) {
			fwrite(p + i, 1, n, f);
			i += n;
			continue;
		} else {
			fprintf(f, "\\x%02x", c);
		}
		i++;
	}
	if (quote)
		fputc('"', f);
}

void zkw_text_puts(FILE *f, const char *s, unsigned flags)
{
	zkw_text_put(f, s, strlen(s), flags);
}
