/* SPDX-License-Identifier: Apache-2.0 */
/* zkw_text.h - show bytes from outside (a segment, a ZooKeeper node) on a
 * terminal or in JSON without letting them act on it.
 *
 * Whatever a segment holds was written by another process: a watched path,
 * an error or a pointer may carry ESC, CR, BEL or invalid UTF-8, which a
 * terminal would obey (colours, a cleared screen, an overwritten line, a
 * window title). The tools print every such string through this one
 * escaper. By default printable ASCII and valid UTF-8 pass; a backslash
 * becomes "\\", newline, CR and tab "\n", "\r", "\t", and every other
 * byte that a terminal could act on is written as "\xNN": C0 controls,
 * DEL, the C1 controls U+0080..U+009F (their two UTF-8 bytes), the Unicode
 * line separators and bidirectional controls (U+2028, U+2029, U+200E,
 * U+200F, U+202A..U+202E, U+2066..U+2069), and each byte of invalid UTF-8
 * (stray or missing continuation bytes, overlong forms, surrogates, code
 * points above U+10FFFF).
 *
 *     zkw_text_put(stdout, m->error, strlen(m->error), 0);             // plain text
 *     zkw_text_put(stdout, content, len, ZKW_TEXT_QUOTE | ZKW_TEXT_ASCII); // "a\x00b"
 *     zkw_text_put(stdout, content, len, ZKW_TEXT_JSON);               // UTF-8 kept, "\x01" -> "\u0001"
 */
#ifndef ZKW_LIB_TEXT_H
#define ZKW_LIB_TEXT_H

#include <stddef.h>
#include <stdio.h>

#define ZKW_TEXT_QUOTE 0x1u /* wrap in double quotes; a quote inside becomes \" */
#define ZKW_TEXT_ASCII 0x2u /* escape every byte outside printable ASCII, UTF-8 too */
/* Text shown as lines (zkw-example's content, as the seed prints it):
 * newline and tab are written as they are and a backslash is not doubled;
 * everything else is escaped as above. */
#define ZKW_TEXT_LINES 0x4u
/* A JSON string (RFC 8259), valid for any bytes: quoted; \" \\ \n \r
 * \t; well-formed UTF-8 as it is (the bytes "caf\xc3\xa9" stay those
 * bytes), except the characters a terminal acts on (C1 controls, line
 * separators, bidi controls), written \uXXXX with their code point; the
 * other C0 controls and DEL as \u00XX; each byte that is not part of
 * well-formed UTF-8 as \u00XX of its value (read as Latin-1: lossy, the
 * exact bytes need another channel, such as zkw-inspect's content_base64).
 * Nothing but printable ASCII and printable UTF-8 is written raw.
 * Overrides the other flags. */
#define ZKW_TEXT_JSON 0x8u

/* Write len bytes of data to f, escaped as the flags say. */
void zkw_text_put(FILE *f, const void *data, size_t len, unsigned flags);

/* The same for a NUL-terminated string. */
void zkw_text_puts(FILE *f, const char *s, unsigned flags);

/* How many bytes at p (len available) form one character that is shown as
 * it is: 1 for printable ASCII, 2..4 for a valid UTF-8 sequence of a
 * character a terminal does not act on; 0 when the byte at p is to be
 * escaped. */
size_t zkw_text_shown(const unsigned char *p, size_t len);

#endif
