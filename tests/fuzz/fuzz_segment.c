/* SPDX-License-Identifier: Apache-2.0 */
/* fuzz_segment.c - arbitrary bytes as a shared-memory segment.
 *
 * The input becomes the whole content of a POSIX shm object; then
 * zkw_reader_open, the poll calls, zkw_reader_read and the dispatcher must
 * give an error or a bounded result: never a crash, a hang or a read out of
 * the mapping (the object is exactly the input's size, so ASan and SIGBUS
 * both catch one). A segment smaller than its declared size is refused.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zkw/client.h>

#include "fuzz.h"

#define FUZZ_SEGMENT_BUF 65536

static int fuzz_segment_count;

static void fuzz_segment_config(void *ctx, const void *content, size_t len)
{
	(void)ctx;
	FUZZ_CHECK(len <= FUZZ_SEGMENT_BUF, "config() within the caller's buffer");
	if (len)
		fuzz_segment_count += ((const uint8_t *)content)[len - 1] & 1; /* touch the bytes */
}

static void fuzz_segment_error(void *ctx, const char *message)
{
	(void)ctx;
	FUZZ_CHECK(strlen(message) < ZKW_ERROR_MAX, "error text bounded");
}

static void fuzz_segment_valid(void *ctx, bool valid)
{
	(void)ctx;
	fuzz_segment_count += valid;
}

/* Random bytes fail the magic check at once, which leaves the rest of the
 * validation and the read path (seqlock, lengths, dispatcher) unexplored.
 * So an input that starts with the magic is taken as the whole segment, as
 * it is (the identity checks); any other input gets a well-formed identity
 * block: bytes 1-2 pick a capacity, the rest lands on the hot line and the
 * slots - hostile generations, sequences, lengths and text behind a valid
 * header. */
static const uint8_t *fuzz_segment_shape(const uint8_t *data, size_t *size)
{
	static uint8_t *seg;
	static size_t seg_cap;
	uint64_t capacity, magic = ZKW_SEGMENT_MAGIC;

	if (*size < 3 || (*size >= sizeof(magic) && memcmp(data, &magic, sizeof(magic)) == 0))
		return data;
	capacity = ((uint64_t)data[1] | (uint64_t)data[2] << 8) % 8192;
	*size = fuzz_segment_image(&seg, &seg_cap, capacity, data + 3, *size - 3);
	return seg;
}

static int fuzz_segment(const uint8_t *data, size_t size)
{
	static uint8_t *buf;
	char name[64];
	zkw_reader r;
	zkw_snapshot snap;
	int fd, rc;

	if (!buf && !(buf = malloc(FUZZ_SEGMENT_BUF)))
		abort();
	data = fuzz_segment_shape(data, &size);
	snprintf(name, sizeof(name), "/zkwfuzz.%d", (int)getpid());
	fd = shm_open(name, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		abort();
	if ((size && write(fd, data, size) != (ssize_t)size) || ftruncate(fd, (off_t)size) < 0)
		abort();
	close(fd);

	rc = zkw_reader_open(&r, name);
	shm_unlink(name); /* the mapping stays */
	if (rc != 0) {
		FUZZ_CHECK(rc < 0 && r.why && r.base == NULL && r.fd == -1,
		           "a failed open leaves nothing behind");
		return 0;
	}
	/* Accepted: the declared layout fits in the object. */
	FUZZ_CHECK(r.map_size == size, "mapped exactly the object");
	FUZZ_CHECK(ZKW_HEADER_SIZE + (uint64_t)r.slot_count * r.slot_size <= size,
	           "declared segment fits the object");
	FUZZ_CHECK(r.capacity + ZKW_SLOT_CONTENT_OFFSET <= r.slot_size, "content fits its slot");

	(void)zkw_reader_generation(&r);
	(void)zkw_reader_is_valid(&r);
	(void)zkw_reader_ping(&r); /* nobody holds the lock: false, never a hang */
	(void)zkw_reader_broker_pid(&r);

	for (size_t cap = 0; cap <= FUZZ_SEGMENT_BUF; cap += FUZZ_SEGMENT_BUF / 2) {
		ssize_t n = zkw_reader_read(&r, &snap, buf, cap);

		FUZZ_CHECK(n >= 0 || n == -ENOBUFS || n == -EAGAIN || n == -EBADMSG, "documented results");
		if (n >= 0) {
			FUZZ_CHECK((size_t)n <= cap && snap.len == (size_t)n, "length within the buffer");
			FUZZ_CHECK(memchr(snap.error, 0, sizeof(snap.error)) != NULL, "error terminated");
			FUZZ_CHECK(memchr(snap.pointer, 0, sizeof(snap.pointer)) != NULL,
			           "pointer terminated");
		} else if (n == -ENOBUFS) {
			FUZZ_CHECK(snap.len > cap && snap.len <= r.capacity, "needed size reported");
		}
	}
	/* Nothing will ever publish: a zero timeout returns at once, with
	 * -ESTALE instead when the state says the segment is retired. */
	int waited = zkw_reader_wait(&r, zkw_reader_generation(&r), 0);

	FUZZ_CHECK(waited == (zkw_reader_retired(&r) ? -ESTALE : 0), "wait times out or reports retirement");

	zkw_dispatcher d;
	zkw_handlers h = {
	        .valid = fuzz_segment_valid, .config = fuzz_segment_config, .error = fuzz_segment_error};
	zkw_dispatcher_init(&d, &r, &h, buf, FUZZ_SEGMENT_BUF);
	for (int i = 0; i < 2; i++) {
		rc = zkw_dispatch(&d, 0);
		FUZZ_CHECK(rc >= -4095 && rc <= 3, "bounded dispatch result");
	}
	zkw_reader_close(&r);
	return 0;
}

#ifndef ZKW_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_segment(data, size);
}
#endif
