/* SPDX-License-Identifier: Apache-2.0 */
/* validate.h - the content gate of a watch: what ZooKeeper holds is checked
 * before it is published, and refused content never reaches the workers
 * (the watch keeps its last good content).
 *
 * Three checks, each a watch's option, in this order:
 *
 *   reject-empty   0 bytes (any format), or only whitespace (json, yaml);
 *   validate       json: exactly one RFC 8259 value, nothing but
 *                  whitespace around it, UTF-8 throughout (RFC 3629: no
 *                  overlong form, no surrogate), no byte order mark, no
 *                  NUL; numbers, escapes and literals as the RFC spells
 *                  them (so no NaN, "1." or "-01"), control characters
 *                  only escaped; duplicate keys and lone surrogate escapes
 *                  ("\ud800") are grammatical and pass. Our own validator:
 *                  one streaming pass, no allocation;
 *                  yaml: the whole stream parses (libyaml, event by event:
 *                  no document is built, no alias expanded, so an alias
 *                  to an anchor never defined is not noticed), UTF-8
 *                  only, any number of documents, including none;
 *   max-shrink     the content is not shorter than (100 - PERCENT)% of the
 *                  last good content.
 *
 * A pure function: no state, no lock. JSON needs O(1) memory (the nesting
 * is a bitset on the stack); YAML allocates only libyaml's parser and
 * frees it. Safe from any thread.
 *
 *     zkw_validate_rules rules = {.format = ZKW_VALIDATE_JSON, .reject_empty = true, .max_shrink = 50};
 *     if (zkw_validate(&rules, data, len, last_good_len, why, sizeof(why)) != 0)
 *             publish_invalid_keep_last_good(why);
 */
#ifndef ZKW_BROKER_VALIDATE_H
#define ZKW_BROKER_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum zkw_validate_format {
	ZKW_VALIDATE_NONE = 0,
	ZKW_VALIDATE_JSON,
	ZKW_VALIDATE_YAML,
} zkw_validate_format;

typedef struct zkw_validate_rules {
	zkw_validate_format format;
	/* 0 bytes, or (json, yaml) only spaces, tabs, CR and LF, is refused. */
	bool reject_empty;
	/* Percent 1..100; 0 = off. Content shorter than (100 - max_shrink)%
	 * of the last good content is refused; 100 refuses nothing. */
	unsigned max_shrink;
} zkw_validate_rules;

/* Arrays and objects (json), sequences and mappings (yaml) nest at most
 * this deep; one level more is refused. */
#define ZKW_VALIDATE_MAX_DEPTH 512

/* Check `len` bytes at `content` (any bytes, NUL included; never read
 * past len; content may be NULL when len is 0) against the rules.
 * last_good_len is the length of the content published last as valid,
 * < 0 when unknown (no shrink check).
 *
 * 0: accepted (why, when given, is set to ""). Else why (NULL or 0 = not
 * wanted; always NUL-terminated, a single line of printable ASCII that
 * never quotes the content) names the cause, and:
 *   -ENODATA  empty (reject-empty): "empty content (reject-empty)"
 *   -EBADMSG  not json / yaml:
 *             "invalid JSON at line 3, column 7: expected ',' or '}'"
 *             "invalid YAML at line 2, column 1: did not find expected key"
 *             (lines and columns from 1; a column counts characters)
 *   -ERANGE   shrunk too much: "shrunk by 90% (1000 -> 100 bytes; max-shrink 50%)"
 *   -ENOMEM   libyaml ran out of memory (JSON allocates nothing)
 *   -EINVAL   rules out of range (a format not of the enum, max_shrink
 *             above 100), or content NULL with len > 0.
 * The checks run in the order of the summary above; the first that fails
 * decides. JSON runs at 0.7 to 0.9 GB/s (about 1.3 ms for 1 MiB, 90 ms
 * for 64 MiB), libyaml at tens of MB/s: call it once per content change,
 * not per read. */
int zkw_validate(const zkw_validate_rules *r, const void *content, size_t len, int64_t last_good_len,
                 char *why, size_t whylen);

/* "json" | "yaml" | "none" -> 0 and *out; else -EINVAL (*out untouched). */
int zkw_validate_parse_format(const char *s, zkw_validate_format *out);

/* "json", "yaml", "none"; "?" for a value not of the enum. */
const char *zkw_validate_format_name(zkw_validate_format f);

/* "PERCENT" or "PERCENT%", decimal 0..100, nothing else (no sign, no
 * space) -> 0 and *out; else -EINVAL (*out untouched). */
int zkw_validate_parse_percent(const char *s, unsigned *out);

#endif
