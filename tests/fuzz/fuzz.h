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
#include <string.h>

#include <zkw/segment.h>

#define FUZZ_CHECK(cond, what)                                                                               \
	do {                                                                                                 \
		if (!(cond)) {                                                                               \
			fprintf(stderr, "fuzz invariant broken at %s:%d: %s (%s)\n", __FILE__, __LINE__,     \
			        what, #cond);                                                                \
			abort();                                                                             \
		}                                                                                            \
	} while (0)

/* A segment image with a well-formed identity block for `capacity` and the
 * fuzzer's bytes `rest` over everything after it (hot line, path, slots),
 * in *seg (a buffer grown as needed, kept across runs). Returns the image's
 * size. */
static inline size_t fuzz_segment_image(uint8_t **seg, size_t *seg_cap, uint64_t capacity, const uint8_t *rest,
                                        size_t rest_len)
{
	uint64_t total = zkw_segment_size(capacity, ZKW_SLOT_COUNT);
	struct zkw_segment_ident id;

	if (total > *seg_cap) {
		free(*seg);
		if (!(*seg = malloc(total)))
			abort();
		*seg_cap = total;
	}
	memset(*seg, 0, total);
	memset(&id, 0, sizeof(id));
	id.magic = ZKW_SEGMENT_MAGIC;
	id.abi_major = ZKW_ABI_MAJOR;
	id.abi_minor = ZKW_ABI_MINOR;
	id.header_size = ZKW_HEADER_SIZE;
	id.segment_size = total;
	id.slot_size = zkw_segment_slot_size(capacity);
	id.capacity = capacity;
	id.slot_count = ZKW_SLOT_COUNT;
	memcpy(*seg, &id, sizeof(id));
	if (rest_len)
		memcpy(*seg + sizeof(id), rest, rest_len < total - sizeof(id) ? rest_len : total - sizeof(id));
	return total;
}

#endif
