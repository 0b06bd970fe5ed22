/* SPDX-License-Identifier: Apache-2.0 */
/* fuzz_pointer.c - zkw_pointer_parse on arbitrary bytes.
 *
 * Never crashes, never writes past outcap, and every success is a path
 * the contract allows: starts with '/', not "/", no empty, "." or ".."
 * component, no control byte, shorter than ZKW_POINTER_MAX, and equal to
 * the input with surrounding whitespace trimmed.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zkw/watcher.h>

#include "fuzz.h"

static bool fuzz_pointer_is_space(uint8_t c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static void fuzz_pointer_check_success(const uint8_t *data, size_t size, const char *out, int rc)
{
	size_t n = (size_t)rc, start = 0, end = size;

	FUZZ_CHECK(strlen(out) == n, "length matches the NUL-terminated result");
	FUZZ_CHECK(n >= 2 && out[0] == '/', "absolute, not the root");
	FUZZ_CHECK(n < ZKW_POINTER_MAX, "bounded length");
	FUZZ_CHECK(out[n - 1] != '/', "no trailing '/'");
	FUZZ_CHECK(!strstr(out, "//"), "no empty component");
	FUZZ_CHECK(!strstr(out, "/./") && !strstr(out, "/../"), "no '.' or '..' component");
	FUZZ_CHECK(!(n >= 2 && strcmp(out + n - 2, "/.") == 0), "no trailing '.' component");
	FUZZ_CHECK(!(n >= 3 && strcmp(out + n - 3, "/..") == 0), "no trailing '..' component");
	for (size_t i = 0; i < n; i++)
		FUZZ_CHECK((uint8_t)out[i] >= 0x20 && (uint8_t)out[i] != 0x7f, "no control byte");
	while (start < end && fuzz_pointer_is_space(data[start]))
		start++;
	while (end > start && fuzz_pointer_is_space(data[end - 1]))
		end--;
	FUZZ_CHECK(end - start == n && memcmp(data + start, out, n) == 0, "result is the trimmed input");
}

static int fuzz_pointer(const uint8_t *data, size_t size)
{
	char out[ZKW_POINTER_MAX + 16];
	const char *why = NULL;
	int rc;

	memset(out, 0x55, sizeof(out));
	rc = zkw_pointer_parse(size ? data : NULL, size, out, sizeof(out), &why);
	if (rc >= 0) {
		fuzz_pointer_check_success(data, size, out, rc);
	} else {
		FUZZ_CHECK(rc == -EINVAL || rc == -ENAMETOOLONG, "documented errors only");
		FUZZ_CHECK(why && *why, "a reason on failure");
	}

	/* Again into an exactly sized heap buffer (ASan sees any overflow):
	 * a valid path that does not fit is -ENOBUFS, nothing else changes. */
	size_t cap = size ? data[0] % 48 : 0;
	char *small = malloc(cap ? cap : 1);
	int rc2 = zkw_pointer_parse(size ? data : NULL, size, small, cap, NULL);

	if (rc >= 0 && (size_t)rc + 1 > cap)
		FUZZ_CHECK(rc2 == -ENOBUFS, "too small a buffer is -ENOBUFS");
	else if (rc >= 0)
		FUZZ_CHECK(rc2 == rc && memcmp(small, out, (size_t)rc + 1) == 0,
		           "same result in a fitting buffer");
	else
		FUZZ_CHECK(rc2 == rc, "same error whatever the buffer");
	free(small);
	return 0;
}

#ifndef ZKW_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_pointer(data, size);
}
#endif
