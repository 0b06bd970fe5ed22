/* SPDX-License-Identifier: Apache-2.0 */
/* guard.h - inputs that end where readable memory ends, for tests of
 * parsers that must never read past the length they are given: the bytes
 * are copied to the end of GUARD_MAX readable bytes followed by a
 * PROT_NONE page, so one byte too far is a SIGSEGV, not a silent read.
 *
 *     return cmocka_run_group_tests(tests, guard_map, guard_unmap);
 *     zkw_validate(&rules, guard_place(text, n), n, ...);
 */
#ifndef ZKW_TEST_GUARD_H
#define ZKW_TEST_GUARD_H

#include <stddef.h>

#define GUARD_MAX (64u * 1024u) /* the largest input placed against the guard page */

/* cmocka group setup / teardown: map and unmap the guarded area. */
int guard_map(void **state);
int guard_unmap(void **state);

/* Copy n bytes (n <= GUARD_MAX, asserted) to the end of the guarded area
 * and return where they start. content may lie in the area already. */
unsigned char *guard_place(const void *content, size_t n);

#endif
