/* SPDX-License-Identifier: Apache-2.0 */
/* fuzz.h - shared bits of the libFuzzer targets in tests/fuzz/.
 *
 * Each fuzz_<target>.c defines `static int fuzz_<target>(const uint8_t *,
 * size_t)` and, unless ZKW_FUZZ_REPLAY is defined, LLVMFuzzerTestOneInput
 * calling it. tests/fuzz/test_fuzz_regress.c includes the targets with
 * ZKW_FUZZ_REPLAY and replays tests/fuzz/regress/<target>/ and the seed
 * corpora through the very same functions, built without libFuzzer.
 *
 * An invariant that breaks aborts with a message: libFuzzer keeps the input
 * as a crash, cmocka reports the replaying test as crashed.
 */
#ifndef ZKW_TESTS_FUZZ_H
#define ZKW_TESTS_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond, what)                                                                               \
	do {                                                                                                 \
		if (!(cond)) {                                                                               \
			fprintf(stderr, "fuzz invariant broken at %s:%d: %s (%s)\n", __FILE__, __LINE__,     \
			        what, #cond);                                                                \
			abort();                                                                             \
		}                                                                                            \
	} while (0)

#endif
