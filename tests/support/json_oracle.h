/* SPDX-License-Identifier: Apache-2.0 */
/* json_oracle.h - json-c's strict verdict on a JSON text, the oracle the
 * validator's unit test and fuzz target compare broker/publish/validate.c
 * with (the broker itself does not use json-c: docs/design.md, "Validation
 * before publish"). Header-only: the fuzz target is built on its own. */
#ifndef ZKW_TEST_JSON_ORACLE_H
#define ZKW_TEST_JSON_ORACLE_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "publish/validate.h"

/* Does json-c (strict) accept s[0..n)? Told the end by a NUL after a copy. */
static inline bool json_c_accepts(const void *s, size_t n)
{
	struct json_tokener *tok = json_tokener_new_ex(4 * ZKW_VALIDATE_MAX_DEPTH);
	char *copy = malloc(n + 1);
	struct json_object *value;
	bool ok;

	if (!tok || !copy)
		abort();
	memcpy(copy, s, n);
	copy[n] = '\0';
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	value = json_tokener_parse_ex(tok, copy, (int)n + 1);
	ok = json_tokener_get_error(tok) == json_tokener_success;
	json_object_put(value);
	json_tokener_free(tok);
	free(copy);
	return ok;
}

#endif
