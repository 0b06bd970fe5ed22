/* SPDX-License-Identifier: Apache-2.0 */
/* fuzz_adopt.c - arbitrary bytes as a segment the writer must continue.
 *
 * The input becomes an existing segment of this uid that zkw_writer_open()
 * adopts in place or - when the input's last byte asks for it - replaces
 * (bit 0: the segment is mode 0666; bit 1: this process holds a read lock
 * on it). Then the writer publishes keep_content and fresh content.
 * Invariants: the open succeeds or refuses the segment with -EEXIST, never
 * crashes or copies out of bounds (ASan, and a segment exactly the input's
 * size); after it, a reader reads what the writer published, within the
 * capacity; a snapshot the writer says it kept is the input's published
 * one, byte for byte; fresh content reads back.
 *
 * As in fuzz_segment.c, an input that starts with the magic is the whole
 * segment as it is; any other gets a well-formed identity block (bytes 1-2
 * pick a capacity) with the rest on the hot line and the slots, and unless
 * bit 2 of the last byte is set, a small generation (most random ones are
 * beyond ZKW_GENERATION_MAX and refused at once).
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
#include "publish/writer.h"

#define FUZZ_ADOPT_CAPACITY_MAX 8192u

static const uint8_t *fuzz_adopt_shape(const uint8_t *data, size_t *size, uint8_t mode, uint64_t *capacity)
{
	static uint8_t *seg;
	static size_t seg_cap;
	struct zkw_segment_ident id;
	uint64_t total, magic = ZKW_SEGMENT_MAGIC;

	if (*size >= sizeof(id) && memcmp(data, &magic, sizeof(magic)) == 0) {
		memcpy(&id, data, sizeof(id));
		*capacity = id.capacity >= 1 && id.capacity <= FUZZ_ADOPT_CAPACITY_MAX ? id.capacity : 4096;
		return data;
	}
	*capacity =
	        1 + (*size >= 3 ? ((uint64_t)data[1] | (uint64_t)data[2] << 8) % FUZZ_ADOPT_CAPACITY_MAX : 0);
	total = fuzz_segment_image(&seg, &seg_cap, *capacity, data + 3, *size > 3 ? *size - 3 : 0);
	if (!(mode & 4)) {
		struct zkw_segment_header *h = (struct zkw_segment_header *)(void *)seg;

		h->hot.generation %= 64;
	}
	*size = total;
	return seg;
}

static int fuzz_adopt(const uint8_t *data, size_t size)
{
	static uint8_t buf[FUZZ_ADOPT_CAPACITY_MAX + 64];
	uint8_t mode = size ? data[size - 1] : 0;
	zkw_writer_options opt = {.group = (gid_t)-1};
	struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
	const struct zkw_segment_header *h;
	const struct zkw_slot *published;
	char name[64], lock[96], why[512];
	uint64_t capacity, gen;
	zkw_writer *w;
	zkw_reader r;
	zkw_snapshot m;
	int fd, locker = -1, rc;
	ssize_t n;

	data = fuzz_adopt_shape(data, &size, mode, &capacity);
	opt.capacity = capacity;
	snprintf(name, sizeof(name), "/zkwfuzzadopt.%d", (int)getpid());
	snprintf(lock, sizeof(lock), "/dev/shm/.zkw-lock.%s", name + 1);
	shm_unlink(name);
	fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fd < 0)
		abort();
	if ((size && write(fd, data, size) != (ssize_t)size) || ftruncate(fd, (off_t)size) < 0)
		abort();
	if ((mode & 1) && fchmod(fd, 0666) < 0)
		abort();
	close(fd);
	if (mode & 2) { /* another open file description: its lock conflicts with the writer's */
		locker = shm_open(name, O_RDONLY, 0);
		if (locker < 0 || fcntl(locker, F_OFD_SETLK, &fl) < 0)
			abort();
	}

	rc = zkw_writer_open(&w, name, &opt, why, sizeof(why));
	FUZZ_CHECK(rc == 0 || rc == -EEXIST, "the writer continues the segment or refuses it as corrupt");
	if (rc) {
		FUZZ_CHECK(why[0] != '\0', "a refusal says why");
		goto out;
	}
	FUZZ_CHECK(zkw_reader_open(&r, name) == 0, "what the writer opened, a reader opens");
	FUZZ_CHECK(zkw_reader_capacity(&r) == capacity, "capacity kept");
	FUZZ_CHECK(zkw_reader_generation(&r) == zkw_writer_generation(w), "one generation");
	FUZZ_CHECK(!zkw_reader_retired(&r) && zkw_reader_broker_alive(&r), "the writer's segment, alive");
	h = (const struct zkw_segment_header *)(const void *)data;
	gen = h->hot.generation;
	if (gen > 0) {
		/* The "restarted" publication: the writer's own slot. */
		n = zkw_reader_read(&r, &m, buf, sizeof(buf));
		FUZZ_CHECK(n >= 0 && (uint64_t)n <= capacity,
		           "the restarted snapshot reads within the capacity");
		FUZZ_CHECK(m.generation == gen + 1 && !m.valid, "restarted: the next generation, invalid");
		published = zkw_segment_slot(data, zkw_segment_slot_size(capacity), ZKW_SLOT_COUNT, gen);
		if (!strstr(zkw_writer_notice(w), "dropped"))
			FUZZ_CHECK((uint64_t)n == published->len &&
			                   memcmp(buf, (const uint8_t *)published + ZKW_SLOT_CONTENT_OFFSET,
			                          (size_t)n) == 0,
			           "a kept snapshot is the one published, byte for byte");
		else
			FUZZ_CHECK(n == 0 && m.version == -1 && m.content_gen >= gen &&
			                   m.content_gen <= gen + 1,
			           "a dropped snapshot is honest empty content, a change");
	}
	zkw_publication keep = {.keep_content = true, .error = "fuzz: connecting"};
	zkw_publication fresh = {
	        .valid = true, .connected = true, .content = "fuzz", .len = 4, .content_serial = 1};
	FUZZ_CHECK(zkw_writer_publish(w, &keep) == 0, "keep_content publishes");
	n = zkw_reader_read(&r, &m, buf, sizeof(buf));
	FUZZ_CHECK(n >= 0 && (uint64_t)n <= capacity, "a kept snapshot reads within the capacity");
	if (capacity >= 4) {
		FUZZ_CHECK(zkw_writer_publish(w, &fresh) == 0, "fresh content publishes");
		FUZZ_CHECK(zkw_reader_read(&r, &m, buf, sizeof(buf)) == 4 && memcmp(buf, "fuzz", 4) == 0 &&
		                   m.valid,
		           "fresh content reads back");
	}
	zkw_reader_close(&r);
	zkw_writer_close(w, true);
out:
	if (locker >= 0)
		close(locker);
	shm_unlink(name);
	unlink(lock);
	return 0;
}

#ifndef ZKW_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_adopt(data, size);
}
#endif
