/* SPDX-License-Identifier: Apache-2.0 */
/* test_segment.c - the shared-memory segment: ABI, reader validation, the
 * single writer, the seqlock under a multi-process storm, a writer killed
 * mid-publish, futex waits, ping and the event dispatcher.
 *
 * Every test uses its own segment name ("/zkw.test.<pid>.<n>"); the per-test
 * teardown unlinks every name handed out and its broker lock file, so a
 * failing test leaves nothing in /dev/shm. Children never call cmocka: they report through their exit
 * status (checked by the parent) or a shared anonymous mapping.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <zkw/client.h>

#include "proc.h"
#include "zkw_clock.h"
#include <zkw/segment.h>

#include "publish/writer.h"
#include "segtest.h"

/* ---- fixture: unique names, unlinked after every test ------------------ */

#define MAX_NAMES 32
static char names[MAX_NAMES][64];
static int names_used;
static unsigned name_counter;

static const char *new_name(void)
{
	assert_true(names_used < MAX_NAMES);
	snprintf(names[names_used], sizeof(names[0]), "/zkw.test.%d.%u", (int)getpid(), name_counter++);
	return names[names_used++];
}

static int unlink_names(void **state)
{
	char lock[128];

	(void)state;
	for (int i = 0; i < names_used; i++) {
		zkw_writer_remove(names[i]); /* ENOENT is fine: the test unlinked it */
		/* The broker lock file a killed writer leaves behind. */
		snprintf(lock, sizeof(lock), "/dev/shm/.zkw-lock.%s", names[i] + 1);
		unlink(lock);
	}
	names_used = 0;
	return 0;
}

/* ---- helpers ------------------------------------------------------------ */

static void publish(zkw_writer *w, bool valid, bool connected, const char *content, uint64_t serial,
                    const char *error)
{
	zkw_publication p = {
	        .valid = valid,
	        .connected = connected,
	        .content = content,
	        .len = content ? strlen(content) : 0,
	        .content_serial = serial,
	        .version = (int64_t)serial,
	        .mzxid = (int64_t)serial * 10,
	        .error = error,
	        .confirmed_ns = 1,
	};

	assert_int_equal(zkw_writer_publish(w, &p), 0);
}

static void publish_keep(zkw_writer *w, const char *error)
{
	zkw_publication p = {.keep_content = true, .error = error};

	assert_int_equal(zkw_writer_publish(w, &p), 0);
}

/* Read the current snapshot as a NUL-terminated string. */
/* Wait for a child to end, at most timeout_ms (a pidfd is the event); a
 * child still running then is killed. The wait status, or -1 on timeout. */
/* One byte through a pipe: the event between parent and child. */
/* ---- layout and names --------------------------------------------------- */

static void test_layout_matches_the_abi(void **state)
{
	(void)state;
	assert_int_equal(offsetof(struct zkw_segment_ident, magic), 0);
	assert_int_equal(offsetof(struct zkw_segment_ident, abi_major), 8);
	assert_int_equal(offsetof(struct zkw_segment_ident, abi_minor), 10);
	assert_int_equal(offsetof(struct zkw_segment_ident, header_size), 12);
	assert_int_equal(offsetof(struct zkw_segment_ident, segment_size), 16);
	assert_int_equal(offsetof(struct zkw_segment_ident, slot_size), 24);
	assert_int_equal(offsetof(struct zkw_segment_ident, capacity), 32);
	assert_int_equal(offsetof(struct zkw_segment_ident, broker_pid), 44);
	assert_int_equal(offsetof(struct zkw_segment_ident, broker_started_ns), 56);
	assert_int_equal(sizeof(struct zkw_segment_hot), ZKW_CACHELINE);
	assert_int_equal(offsetof(struct zkw_segment_header, hot.confirmed_ns), 80); /* minor 2 */
	assert_int_equal(offsetof(struct zkw_segment_header, watch_path_len), 128);
	assert_int_equal(offsetof(struct zkw_slot, seq), 0);
	assert_int_equal(offsetof(struct zkw_slot, flags), 16);
	assert_int_equal(offsetof(struct zkw_slot, error_len), 20);
	assert_int_equal(offsetof(struct zkw_slot, version), 32);
	assert_int_equal(offsetof(struct zkw_slot, mzxid), 40);
	assert_int_equal(offsetof(struct zkw_slot, confirmed_ns), 48);
	assert_int_equal(offsetof(struct zkw_slot, changed_ns), 56);
	/* The magic reads "\x7fZKWSEG1" in memory (little-endian hosts). */
	uint64_t magic = ZKW_SEGMENT_MAGIC;
	assert_memory_equal(&magic, "\x7fZKWSEG1", 8);

	/* Slots are whole cache lines holding the fixed part plus content. */
	assert_int_equal(zkw_segment_slot_size(0), ZKW_SLOT_CONTENT_OFFSET);
	assert_int_equal(zkw_segment_slot_size(1), ZKW_SLOT_CONTENT_OFFSET + 64);
	assert_int_equal(zkw_segment_slot_size(64), ZKW_SLOT_CONTENT_OFFSET + 64);
	assert_int_equal(zkw_segment_slot_size(65), ZKW_SLOT_CONTENT_OFFSET + 128);
	assert_int_equal(zkw_segment_slot_size(ZKW_DEFAULT_CAPACITY),
	                 ZKW_SLOT_CONTENT_OFFSET + ZKW_DEFAULT_CAPACITY);
	assert_int_equal(zkw_segment_size(4096, 2), ZKW_HEADER_SIZE + 2 * (ZKW_SLOT_CONTENT_OFFSET + 4096));
}

/* The named steps of zkw/segment.h, on a segment in private memory: the
 * seqlock's sequence values, the slot accessor, both payload copies (the
 * one this build uses and the portable word copy) and the hot line. */
static void test_seqlock_steps_and_hot_line(void **state)
{
	size_t size = (size_t)zkw_segment_size(64, ZKW_SLOT_COUNT);
	uint64_t slot_size = zkw_segment_slot_size(64);
	uint8_t *base = aligned_alloc(ZKW_CACHELINE, size);
	struct zkw_segment_hot *hot;
	struct zkw_slot *s;
	unsigned char src[40], dst[41];
	uint64_t start;

	(void)state;
	assert_non_null(base);
	memset(base, 0, size);
	hot = &((struct zkw_segment_header *)(void *)base)->hot;

	/* One accessor: generation g lives in slot g % slot_count. */
	s = zkw_segment_slot(base, slot_size, ZKW_SLOT_COUNT, 0);
	assert_ptr_equal(s, base + ZKW_HEADER_SIZE);
	assert_ptr_equal(zkw_segment_slot(base, slot_size, ZKW_SLOT_COUNT, 3),
	                 base + ZKW_HEADER_SIZE + slot_size);
	assert_ptr_equal(zkw_segment_slot(base, slot_size, ZKW_SLOT_COUNT, 4), s);

	/* Sequence: even at rest, odd inside a write; a read that began
	 * before or during a write must retry. */
	assert_int_equal(zkw_slot_read_begin(s), 0);
	assert_false(zkw_slot_read_retry(s, 0));
	start = zkw_slot_write_begin(s);
	assert_int_equal(start, 0);
	assert_int_equal(zkw_slot_read_begin(s), 1);
	assert_true(zkw_slot_read_retry(s, 0));
	zkw_slot_write_end(s, start);
	assert_int_equal(zkw_slot_read_begin(s), 2);
	assert_true(zkw_slot_read_retry(s, 0));
	assert_false(zkw_slot_read_retry(s, 2));
	/* Repair: an abandoned odd sequence becomes even, an even one stays. */
	zkw_slot_write_repair(s);
	assert_int_equal(zkw_slot_read_begin(s), 2);
	(void)zkw_slot_write_begin(s);
	zkw_slot_write_repair(s);
	assert_int_equal(zkw_slot_read_begin(s), 4);
	assert_false(zkw_slot_read_retry(s, 4));

	/* Payload: every length round-trips through the segment, and a load
	 * never writes past n in private memory (it may be the caller's
	 * exact-size buffer). */
	for (size_t i = 0; i < sizeof(src); i++)
		src[i] = (unsigned char)(i * 37 + 1);
	for (size_t n = 0; n <= sizeof(src); n++) {
		uint8_t *content = (uint8_t *)s + ZKW_SLOT_CONTENT_OFFSET;

		memset(content, 0xee, 64);
		memset(dst, 0xaa, sizeof(dst));
		zkw_payload_store(content, src, n);
		zkw_payload_load(dst, content, n);
		assert_memory_equal(dst, src, n);
		assert_int_equal(dst[n], 0xaa);

		memset(content, 0xee, 64);
		memset(dst, 0xaa, sizeof(dst));
		zkw__payload_copy_words(content, src, n, ZKW__PAYLOAD_STORE);
		zkw__payload_copy_words(dst, content, n, ZKW__PAYLOAD_LOAD);
		assert_memory_equal(dst, src, n);
		assert_int_equal(dst[n], 0xaa);
		/* A partial last word is stored whole, zero-padded. */
		for (size_t k = n; k < (n + 7) / 8 * 8; k++)
			assert_int_equal(content[k], 0);
	}

	/* Relaxed words. */
	zkw__store64(&s->len, 0x0123456789abcdefULL);
	zkw__store32(&s->flags, 0x89abcdefu);
	assert_int_equal(zkw__load64(&s->len), 0x0123456789abcdefULL);
	assert_int_equal(zkw__load32(&s->flags), 0x89abcdefu);

	/* Hot line: announce stores state and generation and bumps the word;
	 * stopping clears RUNNING and CONNECTED only. */
	zkw_segment_set_state(hot, ZKW_STATE_RUNNING);
	assert_int_equal(zkw_segment_state(hot), ZKW_STATE_RUNNING);
	assert_int_equal(zkw_segment_generation(hot), 0);
	assert_int_equal(zkw_segment_futex_word(hot), 0);
	zkw_segment_announce(hot, 7, ZKW_STATE_RUNNING | ZKW_STATE_VALID | ZKW_STATE_CONNECTED);
	assert_int_equal(zkw_segment_generation(hot), 7);
	assert_int_equal(zkw_segment_state(hot), ZKW_STATE_RUNNING | ZKW_STATE_VALID | ZKW_STATE_CONNECTED);
	assert_int_equal(zkw_segment_futex_word(hot), 1);
	zkw_segment_announce_stopped(hot);
	assert_int_equal(zkw_segment_state(hot), ZKW_STATE_VALID);
	assert_int_equal(zkw_segment_generation(hot), 7);
	assert_int_equal(zkw_segment_futex_word(hot), 2);
	zkw_segment_wake(hot);
	assert_int_equal(zkw_segment_futex_word(hot), 3);
	/* A stale word never sleeps. */
	assert_int_equal(zkw_segment_futex_wait(hot, 2, NULL), -EAGAIN);
	free(base);
}

static void test_created_segment_header_is_filled_in(void **state)
{
	const char *name = new_name();
	zkw_writer *w = segtest_open_writer(name, 4096);
	zkw_reader r;
	struct stat st;
	char path[128];
	uint64_t t0 = (uint64_t)time(NULL);

	(void)state;
	segtest_open_reader(&r, name);
	const struct zkw_segment_ident *id =
	        &((const struct zkw_segment_header *)(const void *)r.base)->ident;
	snprintf(path, sizeof(path), "/dev/shm%s", name);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(id->magic, ZKW_SEGMENT_MAGIC);
	assert_int_equal(id->abi_major, ZKW_ABI_MAJOR);
	assert_int_equal(id->abi_minor, ZKW_ABI_MINOR);
	assert_int_equal(id->header_size, ZKW_HEADER_SIZE);
	assert_int_equal(id->slot_count, ZKW_SLOT_COUNT);
	assert_int_equal(id->capacity, 4096);
	assert_int_equal(id->slot_size, zkw_segment_slot_size(4096));
	assert_int_equal(id->segment_size, zkw_segment_size(4096, ZKW_SLOT_COUNT));
	assert_int_equal((uint64_t)st.st_size, id->segment_size);
	assert_int_equal(id->broker_pid, (uint32_t)getpid());
	assert_int_equal(zkw_reader_broker_pid(&r), (uint32_t)getpid());
	assert_true(zkw_reader_broker_epoch(&r) != 0);
	assert_in_range(id->broker_started_ns / 1000000000u, t0 - 5, t0 + 5);
	assert_string_equal(((const struct zkw_segment_header *)(const void *)r.base)->watch_path,
	                    "/tmp/test");
	assert_int_equal(zkw_reader_capacity(&r), 4096);
	/* Nothing published yet: generation 0 reads as empty and invalid. */
	zkw_snapshot m;
	char buf[16];
	assert_int_equal(zkw_reader_generation(&r), 0);
	assert_int_equal(zkw_reader_read(&r, &m, buf, sizeof(buf)), 0);
	assert_false(m.valid);
	assert_false(m.connected);
	assert_int_equal(m.generation, 0);
	zkw_reader_close(&r);
	zkw_writer_close(w, true);
}

static void test_shm_names_are_normalised(void **state)
{
	char out[ZKW_SHM_NAME_MAX + 1], small[8], longname[300];

	(void)state;
	assert_int_equal(zkw_shm_name(out, sizeof(out), "abc"), 0);
	assert_string_equal(out, "/abc");
	assert_int_equal(zkw_shm_name(out, sizeof(out), "/zkw.tmp.x"), 0);
	assert_string_equal(out, "/zkw.tmp.x");
	assert_int_equal(zkw_shm_name(out, sizeof(out), NULL), -EINVAL);
	assert_int_equal(zkw_shm_name(out, sizeof(out), ""), -EINVAL);
	assert_int_equal(zkw_shm_name(out, sizeof(out), "/"), -EINVAL);
	assert_int_equal(zkw_shm_name(out, sizeof(out), "a/b"), -EINVAL);
	assert_int_equal(zkw_shm_name(out, sizeof(out), "/a/b"), -EINVAL);
	assert_int_equal(zkw_shm_name(out, sizeof(out), "."), -EINVAL);
	assert_int_equal(zkw_shm_name(out, sizeof(out), "/.."), -EINVAL);
	assert_int_equal(zkw_shm_name(small, sizeof(small), "abcdefgh"), -ENAMETOOLONG);
	/* 254 characters after the slash fit, 255 do not. */
	memset(longname, 'x', 254);
	longname[254] = '\0';
	assert_int_equal(zkw_shm_name(out, sizeof(out), longname), 0);
	assert_int_equal(strlen(out), 255);
	longname[254] = 'x';
	longname[255] = '\0';
	assert_int_equal(zkw_shm_name(out, sizeof(out), longname), -ENAMETOOLONG);

	assert_int_equal(zkw_shm_default_name(out, sizeof(out), "/tmp/myconfig"), 0);
	assert_string_equal(out, "/zkw.tmp.myconfig");
	assert_int_equal(zkw_shm_default_name(out, sizeof(out), "/a"), 0);
	assert_string_equal(out, "/zkw.a");
	assert_int_equal(zkw_shm_default_name(out, sizeof(out), "tmp/x"), -EINVAL);
	assert_int_equal(zkw_shm_default_name(out, sizeof(out), ""), -EINVAL);
	assert_int_equal(zkw_shm_default_name(out, sizeof(out), NULL), -EINVAL);
	assert_int_equal(zkw_shm_default_name(small, sizeof(small), "/tmp/myconfig"), -ENAMETOOLONG);
	longname[0] = '/';
	memset(longname + 1, 'y', 250);
	longname[251] = '\0'; /* "/zkw" + 251 = 255 characters: the limit */
	assert_int_equal(zkw_shm_default_name(out, sizeof(out), longname), 0);
	assert_int_equal(strlen(out), ZKW_SHM_NAME_MAX);
	assert_int_equal(zkw_shm_name(small, 0, "a"), -ENAMETOOLONG);
	longname[251] = 'y';
	longname[252] = '\0';
	assert_int_equal(zkw_shm_default_name(out, sizeof(out), longname), -ENAMETOOLONG);
}

/* ---- open / validate ---------------------------------------------------- */

/* A copy of segment src as a new segment dst of `size` bytes (cut or zero-
 * extended), mapped read-write so the test can corrupt it; *len = mapping. */
static uint8_t *variant_begin(const char *src, const char *dst, size_t size, size_t *len)
{
	int sfd = shm_open(src, O_RDONLY, 0);
	int dfd = shm_open(dst, O_RDWR | O_CREAT | O_EXCL, 0600);
	struct stat st;
	uint8_t *s, *d;

	assert_true(sfd >= 0 && dfd >= 0);
	assert_int_equal(fstat(sfd, &st), 0);
	assert_int_equal(ftruncate(dfd, (off_t)size), 0);
	*len = size;
	if (size == 0) {
		close(sfd);
		close(dfd);
		return NULL;
	}
	s = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, sfd, 0);
	d = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, dfd, 0);
	assert_true(s != MAP_FAILED && d != MAP_FAILED);
	memcpy(d, s, size < (size_t)st.st_size ? size : (size_t)st.st_size);
	munmap(s, (size_t)st.st_size);
	close(sfd);
	close(dfd);
	return d;
}

static void variant_end(uint8_t *base, size_t len)
{
	if (base)
		munmap(base, len);
}

static struct zkw_segment_ident *ident_of(uint8_t *base)
{
	return &((struct zkw_segment_header *)(void *)base)->ident;
}

static struct zkw_slot *slot_of(uint8_t *base, uint64_t slot_size, uint64_t generation)
{
	return (struct zkw_slot *)(void *)(base + ZKW_HEADER_SIZE + (generation % 2) * slot_size);
}

static void expect_open_fails(const char *name, int err, const char *why_part)
{
	zkw_reader r;
	int got = zkw_reader_open(&r, name);

	if (got != err)
		fail_msg("open %s: got %d (%s), want %d", name, got, r.why ? r.why : "-", err);
	assert_non_null(r.why);
	if (why_part && !strstr(r.why, why_part))
		fail_msg("open %s: why \"%s\" does not mention \"%s\"", name, r.why, why_part);
	/* Nothing left open or mapped behind a failure. */
	assert_null(r.base);
	assert_int_equal(r.fd, -1);
}

/* Make a corrupt copy of `good` by setting one ident field, check the open. */
enum ident_field {
	F_SLOT_COUNT,
	F_CAPACITY,
	F_SLOT_SIZE,
	F_SEGMENT_SIZE,
	F_HEADER_SIZE,
	F_MAGIC,
	F_ABI_MAJOR,
	F_ABI_MINOR
};

static void expect_corrupt_field(const char *good, size_t size, enum ident_field f, uint64_t value, int err,
                                 const char *why_part)
{
	const char *name = new_name();
	size_t len;
	uint8_t *base = variant_begin(good, name, size, &len);
	struct zkw_segment_ident *id = ident_of(base);

	switch (f) {
	case F_SLOT_COUNT: id->slot_count = (uint32_t)value; break;
	case F_CAPACITY: id->capacity = value; break;
	case F_SLOT_SIZE: id->slot_size = value; break;
	case F_SEGMENT_SIZE: id->segment_size = value; break;
	case F_HEADER_SIZE: id->header_size = (uint32_t)value; break;
	case F_MAGIC: id->magic = value; break;
	case F_ABI_MAJOR: id->abi_major = (uint16_t)value; break;
	case F_ABI_MINOR: id->abi_minor = (uint16_t)value; break;
	}
	variant_end(base, len);
	if (err == 0) {
		zkw_reader r;

		assert_int_equal(zkw_reader_open(&r, name), 0);
		zkw_reader_close(&r);
	} else {
		expect_open_fails(name, err, why_part);
	}
}

static void test_open_refuses_missing_truncated_and_corrupt_segments(void **state)
{
	const char *good = new_name();
	zkw_writer *w = segtest_open_writer(good, 4096);
	uint64_t slot = zkw_segment_slot_size(4096), size = zkw_segment_size(4096, 2);
	const char *name;
	size_t len;

	(void)state;
	publish(w, true, true, "good content", 1, NULL);
	expect_open_fails("/zkw.test.no.such.segment", -ENOENT, "no such segment");
	expect_open_fails("a/b", -EINVAL, "name");
	expect_open_fails(NULL, -EINVAL, "name");

	/* Truncated: empty, header only, half a slot, one byte short. */
	const size_t cuts[] = {0, ZKW_HEADER_SIZE, ZKW_HEADER_SIZE + slot / 2,
	                       ZKW_HEADER_SIZE + slot + slot / 2, size - 1};
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		name = new_name();
		variant_end(variant_begin(good, name, cuts[i], &len), len);
		expect_open_fails(name, -EBADMSG, "truncated");
	}

	/* Corrupt identity fields. */
	expect_corrupt_field(good, size, F_SLOT_COUNT, 0, -EBADMSG, "slot count");
	expect_corrupt_field(good, size, F_SLOT_COUNT, 1, -EBADMSG, "slot count");
	expect_corrupt_field(good, size, F_SLOT_COUNT, 17, -EBADMSG, "slot count");
	expect_corrupt_field(good, size, F_SLOT_COUNT, UINT32_MAX, -EBADMSG, "slot count");
	expect_corrupt_field(good, size, F_CAPACITY, (uint64_t)ZKW_CAPACITY_MAX + 1, -EBADMSG, "capacity");
	expect_corrupt_field(good, size, F_CAPACITY, UINT64_MAX, -EBADMSG, "capacity");
	expect_corrupt_field(good, size, F_CAPACITY, 8192, -EBADMSG,
	                     "slot size"); /* slots too small for it */
	expect_corrupt_field(good, size, F_SLOT_SIZE, slot - 64, -EBADMSG, "slot size");
	expect_corrupt_field(good, size, F_SLOT_SIZE, slot + 1, -EBADMSG, "slot size");
	expect_corrupt_field(good, size, F_SLOT_SIZE, UINT64_MAX - 63, -EBADMSG, "slot size");
	expect_corrupt_field(good, size, F_SEGMENT_SIZE, size + 64, -EBADMSG, "segment size");
	expect_corrupt_field(good, size, F_SEGMENT_SIZE, size - 64, -EBADMSG, "segment size");
	expect_corrupt_field(good, size, F_HEADER_SIZE, 4096, -EBADMSG, "header size");
	expect_corrupt_field(good, size, F_MAGIC, 0, -EBADMSG, "magic"); /* a segment being created */
	expect_corrupt_field(good, size, F_MAGIC, 0x4c45467fULL, -EBADMSG, "magic");
	expect_corrupt_field(good, size, F_ABI_MAJOR, ZKW_ABI_MAJOR + 1, -EPROTO, "ABI");
	expect_corrupt_field(good, size, F_ABI_MAJOR, 0, -EPROTO, "ABI");
	/* A newer minor version is a compatible addition: accepted. */
	expect_corrupt_field(good, size, F_ABI_MINOR, ZKW_ABI_MINOR + 7, 0, NULL);

	/* A consistent header that claims bigger slots than the object holds:
	 * the reader must compare with the real size, not trust the header. */
	name = new_name();
	uint8_t *base = variant_begin(good, name, size, &len);
	ident_of(base)->capacity = 1 << 20;
	ident_of(base)->slot_size = zkw_segment_slot_size(1 << 20);
	ident_of(base)->segment_size = zkw_segment_size(1 << 20, 2);
	variant_end(base, len);
	expect_open_fails(name, -EBADMSG, "truncated");

	/* A bigger object than the header says is fine (only bounds matter). */
	name = new_name();
	variant_end(variant_begin(good, name, size + 4096, &len), len);
	zkw_reader r;
	char buf[64];
	segtest_open_reader(&r, name);
	assert_int_equal(segtest_read_text(&r, NULL, buf, sizeof(buf)), 12);
	assert_string_equal(buf, "good content");
	zkw_reader_close(&r);
	zkw_writer_close(w, true);
}

/* A slot that passes the seqlock but carries hostile lengths, or never
 * becomes readable: the read fails with an error, bounded, no overrun. */
static void test_read_refuses_hostile_slots(void **state)
{
	const char *good = new_name();
	zkw_writer *w = segtest_open_writer(good, 4096);
	uint64_t slot = zkw_segment_slot_size(4096), size = zkw_segment_size(4096, 2);
	struct {
		size_t field; /* offset in the slot */
		int width;
		uint64_t value;
		ssize_t expect;
	} cases[] = {
	        {offsetof(struct zkw_slot, len), 8, 4097, -EBADMSG},
	        {offsetof(struct zkw_slot, len), 8, UINT64_MAX, -EBADMSG},
	        {offsetof(struct zkw_slot, error_len), 4, ZKW_ERROR_MAX, -EBADMSG},
	        {offsetof(struct zkw_slot, pointer_len), 4, UINT32_MAX, -EBADMSG},
	        {offsetof(struct zkw_slot, generation), 8, 12345, -EAGAIN}, /* never matches */
	        {offsetof(struct zkw_slot, seq), 8, 7, -EAGAIN},            /* odd forever */
	};

	(void)state;
	publish(w, true, true, "abc", 1, NULL);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *name = new_name();
		size_t len;
		uint8_t *base = variant_begin(good, name, size, &len);
		uint8_t *field = (uint8_t *)slot_of(base, slot, 1) + cases[i].field;
		zkw_reader r;
		zkw_snapshot m;
		char buf[8192];
		uint64_t t0;
		ssize_t n;

		if (cases[i].width == 8)
			memcpy(field, &cases[i].value, 8);
		else
			memcpy(field, &(uint32_t){(uint32_t)cases[i].value}, 4);
		variant_end(base, len);
		segtest_open_reader(&r, name);
		t0 = zkw_clock_mono_ns();
		n = zkw_reader_read(&r, &m, buf, sizeof(buf));
		if (n != cases[i].expect)
			fail_msg("case %zu: read returned %zd, want %zd", i, n, cases[i].expect);
		assert_true(zkw_clock_mono_ns() - t0 < 2000000000u); /* bounded retries */
		zkw_reader_close(&r);
	}
	zkw_writer_close(w, true);
}

static void test_open_checks_owner_and_permissions(void **state)
{
	const char *name = new_name();
	zkw_writer_options opt = {.capacity = 4096, .mode = 0600, .group = (gid_t)-1};
	zkw_reader_options any = {.expected_uid = (uid_t)-1}, me = {.expected_uid = geteuid()},
	                   other = {.expected_uid = geteuid() + 1};
	zkw_writer *w;
	zkw_reader r;
	char why[256];
	pid_t pid;

	(void)state;
	assert_int_equal(zkw_writer_open(&w, name, &opt, why, sizeof(why)), 0);
	assert_int_equal(zkw_reader_open_ex(&r, name, &any), 0);
	zkw_reader_close(&r);
	assert_int_equal(zkw_reader_open_ex(&r, name, &me), 0);
	zkw_reader_close(&r);
	assert_int_equal(zkw_reader_open_ex(&r, name, &other), -EPERM);
	assert_non_null(r.why);
	assert_non_null(strstr(r.why, "owner"));
	assert_null(r.base);

	/* Permission denied: an unrelated user on a 0600 segment. As root,
	 * become nobody in a child; otherwise chmod the segment to 0. */
	pid = segtest_fork();
	if (pid == 0) {
		int err;

		if (geteuid() == 0) {
			if (setgid(65534) < 0 || setuid(65534) < 0)
				_exit(10);
		} else {
			int fd = shm_open(name, O_RDWR, 0);

			if (fd < 0 || fchmod(fd, 0) < 0)
				_exit(11);
		}
		err = zkw_reader_open(&r, name);
		_exit(err == -EACCES && r.why && strstr(r.why, "permission") ? 0 : 12);
	}
	segtest_expect_exit_ok(pid, 10000, "reader without permission");
	zkw_writer_close(w, true);

	/* The writer refuses a pre-existing segment owned by somebody else. */
	if (geteuid() == 0) {
		const char *foreign = new_name();
		int fd = shm_open(foreign, O_RDWR | O_CREAT | O_EXCL, 0600);

		assert_true(fd >= 0);
		assert_int_equal(fchown(fd, 65534, 65534), 0);
		close(fd);
		assert_int_equal(zkw_writer_open(&w, foreign, &opt, why, sizeof(why)), -EPERM);
		assert_non_null(strstr(why, "owned by uid 65534"));
	}
}

static void test_reader_mapping_is_read_only(void **state)
{
	const char *name = new_name();
	zkw_writer *w = segtest_open_writer(name, 4096);
	zkw_reader r;
	pid_t pid;
	int status;

	(void)state;
	publish(w, true, true, "x", 1, NULL);
	segtest_open_reader(&r, name);
	/* The fd is read-only, so the mapping cannot be made writable either. */
	assert_int_equal(mprotect((void *)r.base, r.map_size, PROT_READ | PROT_WRITE), -1);
	assert_int_equal(errno, EACCES);

	pid = segtest_fork();
	if (pid == 0) {
		/* Die of the fault itself, not of a sanitizer's SEGV report. */
		struct sigaction sa = {.sa_handler = SIG_DFL};

		sigaction(SIGSEGV, &sa, NULL);
		*(volatile uint8_t *)(uintptr_t)(r.base + ZKW_HEADER_SIZE) = 1;
		_exit(0);
	}
	status = proc_reap_pid(pid, 10000);
	assert_true(status != -1);
	if (!WIFSIGNALED(status))
		fail_msg("a write through the reader's mapping did not fault (exit %d)", WEXITSTATUS(status));
	assert_int_equal(WTERMSIG(status), SIGSEGV);
	zkw_reader_close(&r);
	zkw_writer_close(w, true);
}

static void test_read_reports_enobufs_without_touching_the_buffer(void **state)
{
	const char *name = new_name();
	zkw_writer *w = segtest_open_writer(name, 4096);
	zkw_reader r;
	zkw_snapshot m;
	uint8_t buf[200], fill[200];
	char content[101];

	(void)state;
	memset(content, 'c', 100);
	content[100] = '\0';
	publish(w, true, true, content, 1, NULL);
	segtest_open_reader(&r, name);
	memset(buf, 0xAA, sizeof(buf));
	memset(fill, 0xAA, sizeof(fill));
	memset(&m, 0, sizeof(m));
	assert_int_equal(zkw_reader_read(&r, &m, buf, 99), -ENOBUFS);
	assert_int_equal(m.len, 100);
	assert_int_equal(m.generation, 1);
	assert_memory_equal(buf, fill, sizeof(buf));
	assert_int_equal(zkw_reader_read(&r, &m, buf, 0), -ENOBUFS);
	assert_int_equal(zkw_reader_read(&r, &m, buf, 100), 100);
	assert_memory_equal(buf, content, 100);
	assert_int_equal(buf[100], 0xAA);
	/* Empty content fits a zero-sized buffer; meta may be NULL. */
	publish(w, true, true, "", 2, NULL);
	assert_int_equal(zkw_reader_read(&r, NULL, NULL, 0), 0);
	zkw_reader_close(&r);
	zkw_writer_close(w, true);
}

/* ---- writer ------------------------------------------------------------- */

static void test_second_writer_is_refused_naming_the_holder(void **state)
{
	const char *name = new_name();
	zkw_writer *w = segtest_open_writer(name, 4096), *w2 = NULL;
	zkw_writer_options opt = {.capacity = 4096, .group = (gid_t)-1};
	char why[256], pidtext[32];
	pid_t pid;

	(void)state;
	snprintf(pidtext, sizeof(pidtext), "pid %d", (int)getpid());
	/* Two opens in one process are two open file descriptions: OFD locks
	 * conflict between them. */
	assert_int_equal(zkw_writer_open(&w2, name, &opt, why, sizeof(why)), -EBUSY);
	assert_null(w2);
	if (!strstr(why, pidtext))
		fail_msg("EBUSY message \"%s\" does not name %s", why, pidtext);

	pid = segtest_fork();
	if (pid == 0) {
		int err = zkw_writer_open(&w2, name, &opt, why, sizeof(why));

		_exit(err == -EBUSY && strstr(why, pidtext) ? 0 : 1);
	}
	segtest_expect_exit_ok(pid, 10000, "second writer in another process");
	zkw_writer_close(w, true);
}

static void test_writer_rejects_bad_capacity_and_oversized_content(void **state)
{
	const char *name = new_name();
	zkw_writer_options opt = {.capacity = (uint64_t)ZKW_CAPACITY_MAX + 1, .group = (gid_t)-1};
	zkw_writer *w;
	zkw_reader r;
	zkw_snapshot m;
	char why[256], big[5000], buf[64];

	(void)state;
	assert_int_equal(zkw_writer_open(&w, name, &opt, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "capacity"));
	assert_int_equal(zkw_writer_open(&w, "a/b", NULL, why, sizeof(why)), -EINVAL);
	assert_int_equal(zkw_writer_open(&w, "", NULL, why, sizeof(why)), -EINVAL);

	w = segtest_open_writer(name, 4096);
	publish(w, true, true, "small", 1, NULL);
	segtest_open_reader(&r, name);
	memset(big, 'b', sizeof(big));
	zkw_publication p = {.valid = true, .content = big, .len = 4097, .content_serial = 2};
	assert_int_equal(zkw_writer_publish(w, &p), -EMSGSIZE);
	assert_int_equal(zkw_writer_generation(w), 1);
	assert_int_equal(zkw_reader_generation(&r), 1);
	assert_int_equal(segtest_read_text(&r, &m, buf, sizeof(buf)), 5);
	assert_string_equal(buf, "small");
	/* Exactly the capacity fits. */
	p.len = 4096;
	assert_int_equal(zkw_writer_publish(w, &p), 0);
	assert_int_equal(zkw_reader_read(&r, &m, big, sizeof(big)), 4096);
	zkw_reader_close(&r);
	zkw_writer_close(w, true);
}

static mode_t shm_mode(const char *name)
{
	char path[128];
	struct stat st;

	snprintf(path, sizeof(path), "/dev/shm%s", name);
	if (stat(path, &st) < 0)
		return (mode_t)-1;
	return st.st_mode & 07777;
}

static void test_writer_modes_unlink_and_capacity_mismatch(void **state)
{
	const char *name = new_name(), *custom = new_name();
	zkw_writer_options opt = {.capacity = 4096, .mode = 0604, .group = getgid()};
	zkw_writer *w;
	char why[256];
	mode_t old = umask(077); /* the mode must not depend on the umask */

	(void)state;
	w = segtest_open_writer(name, 4096);
	assert_int_equal(shm_mode(name), 0640);
	zkw_writer_close(w, false);
	assert_int_equal(shm_mode(name), 0640); /* kept without unlink */

	assert_int_equal(zkw_writer_open(&w, custom, &opt, why, sizeof(why)), 0);
	umask(old);
	assert_int_equal(shm_mode(custom), 0604);
	zkw_writer_close(w, true);
	assert_int_equal(shm_mode(custom), (mode_t)-1);
	expect_open_fails(custom, -ENOENT, "no such segment");

	/* Re-opening with another capacity is refused, naming both. */
	opt.capacity = 8192;
	opt.mode = 0;
	assert_int_equal(zkw_writer_open(&w, name, &opt, why, sizeof(why)), -EEXIST);
	assert_non_null(strstr(why, "4096"));
	/* A file that is not a zkw segment is refused too, not overwritten. */
	int fd = shm_open(name, O_RDWR, 0);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "junk", 4, 0), 4);
	close(fd);
	opt.capacity = 4096;
	assert_int_equal(zkw_writer_open(&w, name, &opt, why, sizeof(why)), -EEXIST);
	assert_non_null(strstr(why, "not a zkw segment"));
}

static void test_reopened_writer_continues_and_keeps_content(void **state)
{
	const char *name = new_name();
	zkw_writer *w = segtest_open_writer(name, 4096);
	zkw_reader r;
	zkw_snapshot m, before;
	char buf[64];
	uint64_t epoch;

	(void)state;
	publish(w, true, true, "content one", 1, NULL);
	publish(w, true, true, "content two", 2, NULL);
	segtest_open_reader(&r, name);
	assert_int_equal(segtest_read_text(&r, &before, buf, sizeof(buf)), 11);
	assert_int_equal(before.content_gen, 2);
	epoch = zkw_reader_broker_epoch(&r);
	zkw_writer_close(w, false);

	w = segtest_open_writer(name, 4096);
	assert_int_equal(zkw_writer_generation(w), 3);
	assert_true(zkw_reader_broker_epoch(&r) != epoch);
	/* The "restarted" publication: last content kept, invalid, named. */
	assert_int_equal(zkw_reader_generation(&r), 3);
	assert_int_equal(segtest_read_text(&r, &m, buf, sizeof(buf)), 11);
	assert_string_equal(buf, "content two");
	assert_false(m.valid);
	assert_false(m.connected);
	assert_non_null(strstr(m.error, "restarted"));
	assert_int_equal(m.content_gen, before.content_gen);
	assert_int_equal(m.changed_ns, before.changed_ns);
	assert_int_equal(m.version, before.version);
	assert_int_equal(m.confirmed_ns, before.confirmed_ns);

	/* First publication after a reopen compares bytes: identical content
	 * under an unrelated serial is not a change... */
	publish(w, true, true, "content two", 77, NULL);
	assert_int_equal(segtest_read_text(&r, &m, buf, sizeof(buf)), 11);
	assert_true(m.valid);
	assert_string_equal(m.error, "");
	assert_int_equal(m.generation, 4);
	assert_int_equal(m.content_gen, before.content_gen);
	/* ...after it the serial decides: same serial, no change; a new one,
	 * a change (even with the same bytes: the serial is the contract). */
	publish(w, true, true, "content two", 77, NULL);
	assert_int_equal(segtest_read_text(&r, &m, buf, sizeof(buf)), 11);
	assert_int_equal(m.content_gen, before.content_gen);
	publish(w, true, true, "content two", 78, NULL);
	assert_int_equal(segtest_read_text(&r, &m, buf, sizeof(buf)), 11);
	assert_int_equal(m.content_gen, 6);
	zkw_writer_close(w, false);

	/* Reopen, then different bytes: a change at once. */
	w = segtest_open_writer(name, 4096);
	assert_int_equal(zkw_writer_generation(w), 7);
	publish(w, true, true, "content three", 78, NULL);
	assert_int_equal(segtest_read_text(&r, &m, buf, sizeof(buf)), 13);
	assert_int_equal(m.content_gen, 8);
	assert_int_equal(m.generation, 8);
	zkw_reader_close(&r);
	zkw_writer_close(w, true);
}

/* ---- multi-process stress ------------------------------------------------ */

/* Content of "content generation" c: a pure function of c, carrying its
 * own header and checksum so a reader can tell a torn copy:
 *   [0,8) seed(c)   [8,16) length   [16,len-8) pool bytes   [len-8,len) checksum
 * Shorter than 24 bytes: bytes derived from seed(c) alone. */
#define STRESS_CAPACITY 65536u
#define STRESS_READERS  4
#define STRESS_DONE     "stress: writer done"

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	return x ^ (x >> 33);
}

static uint64_t stress_seed(uint64_t c)
{
	return mix64(c + 0x9e3779b97f4a7c15ULL);
}

static size_t stress_len(uint64_t c)
{
	uint64_t h = mix64(c);

	if (c % 97 == 0)
		return 0;
	if (c % 251 == 0)
		return STRESS_CAPACITY - (size_t)(h % 64); /* near the capacity */
	if (c % 16 == 0)
		return (size_t)(h % STRESS_CAPACITY);
	return (size_t)(h % 4096);
}

static uint64_t stress_checksum(const uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ n;
	size_t i;

	for (i = 0; i + 8 <= n; i += 8) {
		uint64_t w;

		memcpy(&w, p + i, 8);
		h = (h ^ w) * 0x100000001b3ULL;
		h ^= h >> 29;
	}
	for (; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ULL;
	return h;
}

static uint8_t stress_pool[2 * STRESS_CAPACITY];

static void stress_pool_init(void)
{
	uint64_t x = 88172645463325252ULL;

	for (size_t i = 0; i < sizeof(stress_pool); i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		memcpy(stress_pool + i, &x, 8);
	}
}

static size_t stress_fill(uint8_t *buf, uint64_t c)
{
	size_t len = stress_len(c);
	uint64_t seed = stress_seed(c), sum, l = len;

	if (len < 24) {
		for (size_t i = 0; i < len; i++)
			buf[i] = (uint8_t)((seed >> (8 * (i % 8))) + i);
		return len;
	}
	memcpy(buf, &seed, 8);
	memcpy(buf + 8, &l, 8);
	memcpy(buf + 16, stress_pool + (c % 4096) * 8, len - 24);
	sum = stress_checksum(buf, len - 8);
	memcpy(buf + len - 8, &sum, 8);
	return len;
}

enum { STRESS_OK, STRESS_TORN, STRESS_BAD_LEN };

static int stress_verify(const uint8_t *buf, size_t n, const zkw_snapshot *m)
{
	uint64_t seed = stress_seed(m->content_gen), embedded, sum;

	if (n != m->len || n != stress_len(m->content_gen))
		return STRESS_BAD_LEN;
	if (m->version != (int64_t)m->content_gen || m->mzxid != 3 * (int64_t)m->content_gen)
		return STRESS_TORN; /* fixed fields from another generation */
	if (n < 24) {
		for (size_t i = 0; i < n; i++)
			if (buf[i] != (uint8_t)((seed >> (8 * (i % 8))) + i))
				return STRESS_TORN;
		return STRESS_OK;
	}
	memcpy(&embedded, buf, 8);
	if (embedded != seed)
		return STRESS_TORN;
	memcpy(&embedded, buf + 8, 8);
	if (embedded != n)
		return STRESS_BAD_LEN;
	memcpy(&sum, buf + n - 8, 8);
	return sum == stress_checksum(buf, n - 8) ? STRESS_OK : STRESS_TORN;
}

struct stress_report {
	uint64_t reads, changes, eagain, torn, bad_len, backwards, errors, last_gen;
	int waits; /* 1 = reader used zkw_reader_wait */
	int finished;
};

struct stress_shared {
	uint64_t publishes;
	uint64_t final_gen;
	struct stress_report reader[STRESS_READERS];
};

static int stress_publish(zkw_writer *w, uint8_t *buf, bool valid, const char *error)
{
	uint64_t c = zkw_writer_generation(w) + 1;
	zkw_publication p = {
	        .valid = valid,
	        .connected = true,
	        .content = buf,
	        .len = stress_fill(buf, c),
	        .content_serial = c, /* every publication is new content */
	        .version = (int64_t)c,
	        .mzxid = 3 * (int64_t)c,
	        .error = error,
	        .confirmed_ns = c,
	};

	return zkw_writer_publish(w, &p);
}

/* Pin the calling process to the index-th CPU it may use (modulo their
 * number). With one CPU there is nothing to arrange. On 2 cores, left to
 * the scheduler, the wait readers (woken at every publish) preempt the
 * tight readers, which then mostly run while the writer is off-CPU and see
 * only a few dozen generations: the seqlock is hardly exercised. Pinning
 * the writer and the tight readers to different CPUs makes them overlap. */
static void pin_to_cpu(int index)
{
	cpu_set_t allowed, one;
	int n, seen = 0;

	if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0 || (n = CPU_COUNT(&allowed)) < 2)
		return;
	index %= n;
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
		if (!CPU_ISSET(cpu, &allowed) || seen++ != index)
			continue;
		CPU_ZERO(&one);
		CPU_SET(cpu, &one);
		sched_setaffinity(0, sizeof(one), &one);
		return;
	}
}

static void stress_reader(const char *name, struct stress_report *rep, bool use_wait, int ready_fd,
                          int timeout_s)
{
	uint8_t *buf = malloc(STRESS_CAPACITY);
	uint64_t deadline = zkw_clock_mono_ns() + (uint64_t)timeout_s * 1000000000u, last = 0;
	zkw_reader r;
	zkw_snapshot m;

	rep->waits = use_wait;
	pin_to_cpu(use_wait ? 0 : 1); /* the writer is on CPU 0 */
	if (!buf || zkw_reader_open(&r, name) != 0)
		_exit(2);
	segtest_send_byte(ready_fd, 'r');
	for (;;) {
		ssize_t n;

		if (use_wait) {
			int rc = zkw_reader_wait(&r, last, 1000);

			if (rc < 0) {
				rep->errors++;
				_exit(3);
			}
		}
		n = zkw_reader_read(&r, &m, buf, STRESS_CAPACITY);
		if (n == -EAGAIN) {
			rep->eagain++;
			continue;
		}
		if (n < 0) {
			rep->errors++;
			_exit(4);
		}
		rep->reads++;
		if (m.generation < last)
			rep->backwards++;
		if (m.generation != last)
			rep->changes++;
		last = m.generation;
		rep->last_gen = last;
		switch (stress_verify(buf, (size_t)n, &m)) {
		case STRESS_TORN: rep->torn++; break;
		case STRESS_BAD_LEN: rep->bad_len++; break;
		default: break;
		}
		if (!m.valid && strcmp(m.error, STRESS_DONE) == 0)
			break;
		if (zkw_clock_mono_ns() > deadline)
			_exit(5); /* never saw the final marker */
	}
	rep->finished = 1;
	zkw_reader_close(&r);
	_exit(0);
}

static double stress_scale(void)
{
	const char *s = getenv("ZKW_STRESS_SCALE");
	double scale = 1.0;

#if defined(__SANITIZE_THREAD__)
	scale = 0.3; /* TSan sees every word of every copy (portable path) */
#endif
	/* ASan needs no scaling: the copies are uninstrumented asm and the
	 * whole storm takes under a second either way. */
	if (s && *s)
		scale = strtod(s, NULL);
	return scale > 0 ? scale : 1.0;
}

static void test_stress_readers_never_see_a_torn_snapshot(void **state)
{
	const char *name = new_name();
	uint64_t publishes = (uint64_t)(100000 * stress_scale());
	struct stress_shared *sh;
	pid_t readers[STRESS_READERS], writer;
	uint8_t *buf = malloc(STRESS_CAPACITY);
	int ready[2];
	zkw_writer *w;
	uint64_t t0;
	const int timeout_s = 120;

	(void)state;
	assert_non_null(buf);
	if (publishes < 1000)
		publishes = 1000;
	stress_pool_init();
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(sh != MAP_FAILED);
	memset(sh, 0, sizeof(*sh));
	assert_int_equal(pipe(ready), 0);

	/* Create the segment with one stress-formatted snapshot, then let it
	 * go: the readers must not inherit the writer's lock or mapping. */
	w = segtest_open_writer(name, STRESS_CAPACITY);
	assert_int_equal(stress_publish(w, buf, true, NULL), 0);
	zkw_writer_close(w, false);

	for (int i = 0; i < STRESS_READERS; i++) {
		readers[i] = segtest_fork();
		if (readers[i] == 0) {
			close(ready[0]);
			stress_reader(name, &sh->reader[i], i % 2 == 1, ready[1], timeout_s);
		}
	}
	close(ready[1]);
	for (int i = 0; i < STRESS_READERS; i++)
		if (segtest_recv_byte(ready[0], 10000) != 'r')
			fail_msg("stress reader %d did not start", i);
	close(ready[0]);

	t0 = zkw_clock_mono_ns();
	writer = segtest_fork();
	if (writer == 0) {
		uint64_t n;

		pin_to_cpu(0);
		if (zkw_writer_open(&w, name,
		                    &(zkw_writer_options){.capacity = STRESS_CAPACITY, .group = (gid_t)-1},
		                    NULL, 0) != 0)
			_exit(2);
		for (n = 0; n < publishes; n++)
			if (stress_publish(w, buf, true, NULL) != 0)
				_exit(3);
		/* The final marker: readers stop when they see it. */
		if (stress_publish(w, buf, false, STRESS_DONE) != 0)
			_exit(4);
		sh->publishes = n + 1;
		sh->final_gen = zkw_writer_generation(w);
		zkw_writer_close(w, false);
		_exit(0);
	}
	segtest_expect_exit_ok(writer, timeout_s * 1000, "stress writer");
	double writer_s = (double)(zkw_clock_mono_ns() - t0) / 1e9;
	int failed = 0;
	for (int i = 0; i < STRESS_READERS; i++) {
		int status = proc_reap_pid(readers[i], timeout_s * 1000);

		if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			print_error("stress reader %d failed: status 0x%x\n", i, status);
			failed = 1;
		}
	}
	double total_s = (double)(zkw_clock_mono_ns() - t0) / 1e9;

	printf("stress: %" PRIu64 " publishes (final generation %" PRIu64
	       ") in %.2f s, readers done after %.2f s\n",
	       sh->publishes, sh->final_gen, writer_s, total_s);
	for (int i = 0; i < STRESS_READERS; i++) {
		const struct stress_report *rep = &sh->reader[i];

		printf("stress: reader %d (%s): %" PRIu64 " reads, %" PRIu64
		       " generations seen, torn=%" PRIu64 ", bad_len=%" PRIu64 ", backwards=%" PRIu64
		       ", -EAGAIN=%" PRIu64 ", last generation %" PRIu64 "\n",
		       i, rep->waits ? "wait+read" : "tight read", rep->reads, rep->changes, rep->torn,
		       rep->bad_len, rep->backwards, rep->eagain, rep->last_gen);
	}
	fflush(stdout);
	assert_false(failed);
	assert_true(sh->publishes >= publishes);
	for (int i = 0; i < STRESS_READERS; i++) {
		const struct stress_report *rep = &sh->reader[i];

		assert_int_equal(rep->torn, 0);
		assert_int_equal(rep->bad_len, 0);
		assert_int_equal(rep->backwards, 0);
		assert_int_equal(rep->errors, 0);
		assert_true(rep->finished);
		assert_int_equal(rep->last_gen, sh->final_gen);
		assert_true(rep->reads > 0);
	}
	munmap(sh, sizeof(*sh));
	free(buf);
}

/* ---- a writer killed mid-publish ---------------------------------------- */

static void die_mid_publish(void)
{
	raise(SIGKILL);
}

static void test_writer_killed_mid_publish_leaves_last_snapshot(void **state)
{
	const char *name = new_name();
	int up[2], down[2], status;
	zkw_reader r;
	zkw_snapshot m;
	char buf[128];
	pid_t pid;
	uint64_t t0, slot_size;

	(void)state;
	assert_int_equal(pipe(up), 0);
	assert_int_equal(pipe(down), 0);
	pid = segtest_fork();
	if (pid == 0) {
		zkw_writer *w;
		zkw_publication p = {.valid = true, .connected = true};
		char text[32];

		if (zkw_writer_open(&w, name, &(zkw_writer_options){.capacity = 4096, .group = (gid_t)-1},
		                    NULL, 0) != 0)
			_exit(2);
		for (int i = 1; i <= 3; i++) {
			snprintf(text, sizeof(text), "snapshot-%d", i);
			p.content = text;
			p.len = strlen(text);
			p.content_serial = (uint64_t)i;
			p.version = i;
			zkw_writer_publish(w, &p);
		}
		segtest_send_byte(up[1], 'r');
		if (segtest_recv_byte(down[0], 10000) != 'g')
			_exit(3);
		zkw_writer_fault_hook = die_mid_publish;
		p.content = "half-written, never published";
		p.len = strlen(p.content);
		p.content_serial = 4;
		zkw_writer_publish(w, &p);
		_exit(4); /* not reached */
	}
	if (segtest_recv_byte(up[0], 10000) != 'r') {
		proc_reap_pid(pid, 0);
		fail_msg("writer child did not publish");
	}
	segtest_open_reader(&r, name);
	assert_true(zkw_reader_ping(&r));
	assert_int_equal(zkw_reader_broker_pid(&r), (uint32_t)pid);
	segtest_send_byte(down[1], 'g');
	status = proc_reap_pid(pid, 10000);
	assert_true(status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

	/* The half-written slot (generation 4 -> slot 0) is left odd... */
	slot_size = zkw_segment_slot_size(4096);
	const struct zkw_slot *half = (const struct zkw_slot *)(const void *)(r.base + ZKW_HEADER_SIZE);
	assert_true(__atomic_load_n(&half->seq, __ATOMIC_RELAXED) & 1);
	assert_int_equal(__atomic_load_n(&half->generation, __ATOMIC_RELAXED), 4);
	/* ...and readers get the last published snapshot, at once. */
	t0 = zkw_clock_mono_ns();
	assert_int_equal(segtest_read_text(&r, &m, buf, sizeof(buf)), 10);
	assert_string_equal(buf, "snapshot-3");
	assert_int_equal(m.generation, 3);
	assert_true(m.valid);
	assert_true(zkw_clock_mono_ns() - t0 < 1000000000u);
	assert_int_equal(zkw_reader_wait(&r, 3, 50), 0);
	assert_false(zkw_reader_broker_alive(&r));
	assert_false(zkw_reader_ping(&r));

	/* A new writer takes over: generation continues, the odd slot is
	 * repaired, and the same open reader follows. */
	zkw_writer *w = segtest_open_writer(name, 4096);
	assert_int_equal(zkw_writer_generation(w), 4);
	for (uint32_t i = 0; i < 2; i++) {
		const struct zkw_slot *s =
		        (const struct zkw_slot *)(const void *)(r.base + ZKW_HEADER_SIZE + i * slot_size);
		assert_false(__atomic_load_n(&s->seq, __ATOMIC_RELAXED) & 1);
	}
	assert_true(zkw_reader_broker_alive(&r));
	assert_false(zkw_reader_ping(&r)); /* not connected yet */
	assert_int_equal(segtest_read_text(&r, &m, buf, sizeof(buf)), 10);
	assert_string_equal(buf, "snapshot-3");
	assert_int_equal(m.generation, 4);
	assert_false(m.valid);
	assert_non_null(strstr(m.error, "restarted"));
	assert_int_equal(m.content_gen, 3);
	publish(w, true, true, "snapshot-5", 5, NULL);
	assert_int_equal(segtest_read_text(&r, &m, buf, sizeof(buf)), 10);
	assert_string_equal(buf, "snapshot-5");
	assert_int_equal(m.generation, 5);
	assert_true(m.valid);
	assert_true(zkw_reader_ping(&r));
	assert_int_equal(zkw_reader_broker_pid(&r), (uint32_t)getpid());
	zkw_reader_close(&r);
	zkw_writer_close(w, true);
	close(up[0]);
	close(up[1]);
	close(down[0]);
	close(down[1]);
}

/* ---- wait --------------------------------------------------------------- */

static void test_wait_times_out_no_earlier_than_asked(void **state)
{
	const char *name = new_name();
	zkw_writer *w = segtest_open_writer(name, 4096);
	zkw_reader r;
	uint64_t t0, elapsed;

	(void)state;
	publish(w, true, true, "a", 1, NULL);
	segtest_open_reader(&r, name);
	t0 = zkw_clock_mono_ns();
	assert_int_equal(zkw_reader_wait(&r, 1, 200), 0);
	elapsed = zkw_clock_mono_ns() - t0;
	if (elapsed < 200000000u || elapsed > 1200000000u)
		fail_msg("wait(200 ms) took %.1f ms", (double)elapsed / 1e6);
	/* timeout 0 is a poll */
	assert_int_equal(zkw_reader_wait(&r, 1, 0), 0);
	/* Already different: returns 1 at once, whatever the timeout. */
	t0 = zkw_clock_mono_ns();
	assert_int_equal(zkw_reader_wait(&r, 0, 5000), 1);
	assert_int_equal(zkw_reader_wait(&r, 0, -1), 1);
	assert_int_equal(zkw_reader_wait(&r, 0, 0), 1);
	assert_true(zkw_clock_mono_ns() - t0 < 100000000u);
	/* A clean close wakes waiters but moves no generation: still a timeout. */
	zkw_writer_close(w, false);
	assert_int_equal(zkw_reader_wait(&r, 1, 50), 0);
	zkw_reader_close(&r);
}

/* Is process pid asleep (state S)? The child uses this to publish only once
 * the parent is really blocked in the futex. */
static bool process_sleeping(pid_t pid)
{
	char path[64], stat[512];
	FILE *f;
	size_t n;
	char *p;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return false;
	n = fread(stat, 1, sizeof(stat) - 1, f);
	fclose(f);
	stat[n] = '\0';
	p = strrchr(stat, ')'); /* comm may contain spaces */
	return p && p[1] == ' ' && p[2] == 'S';
}

static volatile sig_atomic_t alarms;

static void on_alarm(int sig)
{
	(void)sig;
	alarms++;
}

static void install_alarm_handler(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm; /* no SA_RESTART: the wait must see EINTR */
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGALRM, &sa, NULL), 0);
}

static void arm_timer_ms(int ms)
{
	struct itimerval it = {.it_value = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000}};

	assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
}

/* Fork a child that publishes through the inherited writer once the parent
 * sleeps (the mapping is shared, so the child's publish is the real thing). */
static pid_t publish_when_parent_sleeps(zkw_writer *w, const char *content, uint64_t serial)
{
	pid_t parent = getpid(), pid = segtest_fork();

	if (pid == 0) {
		uint64_t until = zkw_clock_mono_ns() + 5000000000u;
		zkw_publication p = {.valid = true,
		                     .connected = true,
		                     .content = content,
		                     .len = strlen(content),
		                     .content_serial = serial};

		while (!process_sleeping(parent) && zkw_clock_mono_ns() < until)
			usleep(1000); /* no event says "blocked in futex"; poll /proc */
		_exit(zkw_writer_publish(w, &p) == 0 ? 0 : 1);
	}
	return pid;
}

static void test_wait_wakes_on_publish(void **state)
{
	const char *name = new_name();
	zkw_writer *w = segtest_open_writer(name, 4096);
	zkw_reader r;
	pid_t pid;
	int rc;

	(void)state;
	publish(w, true, true, "a", 1, NULL);
	segtest_open_reader(&r, name);
	install_alarm_handler();

	pid = publish_when_parent_sleeps(w, "b", 2);
	rc = zkw_reader_wait(&r, 1, 10000);
	segtest_expect_exit_ok(pid, 10000, "publisher");
	assert_int_equal(rc, 1);
	assert_int_equal(zkw_reader_generation(&r), 2);

	/* The child published generation 2 through its copy of w; ours still
	 * says 1. Re-open the writer so it picks the generation up from the
	 * segment (its restart publication is generation 3). */
	zkw_writer_close(w, false);
	w = segtest_open_writer(name, 4096);
	assert_int_equal(zkw_writer_generation(w), 3);

	/* Forever (-1), with a watchdog: SIGALRM would turn a hang into -EINTR. */
	alarms = 0;
	arm_timer_ms(10000);
	pid = publish_when_parent_sleeps(w, "c", 4);
	rc = zkw_reader_wait(&r, 3, -1);
	arm_timer_ms(0);
	segtest_expect_exit_ok(pid, 10000, "publisher");
	if (rc != 1)
		fail_msg("wait(-1) returned %d (alarms %d): no wakeup", rc, (int)alarms);
	assert_int_equal(zkw_reader_generation(&r), 4);
	zkw_reader_close(&r);
	zkw_writer_close(w, true);
}

static void test_wait_returns_eintr_on_a_signal(void **state)
{
	const char *name = new_name();
	zkw_writer *w = segtest_open_writer(name, 4096);
	zkw_reader r;
	uint64_t t0;
	int rc;

	(void)state;
	publish(w, true, true, "a", 1, NULL);
	segtest_open_reader(&r, name);
	install_alarm_handler();
	alarms = 0;
	arm_timer_ms(100);
	t0 = zkw_clock_mono_ns();
	rc = zkw_reader_wait(&r, 1, 10000);
	arm_timer_ms(0);
	assert_int_equal(rc, -EINTR);
	assert_int_equal(alarms, 1);
	assert_true(zkw_clock_mono_ns() - t0 < 5000000000u);
	zkw_reader_close(&r);
	zkw_writer_close(w, true);
}

/* ---- the confirmation time (ABI minor 2) --------------------------------- */

/* CLOCK_REALTIME-like values, far apart so no two can be confused. */
#define CONFIRMED(s) ((uint64_t)(1700000000u + (s)) * 1000000000u)

static void publish_confirmed(zkw_writer *w, const char *content, uint64_t serial, uint64_t confirmed_ns)
{
	zkw_publication p = {
	        .valid = true,
	        .connected = true,
	        .content = content,
	        .len = strlen(content),
	        .content_serial = serial,
	        .version = (int64_t)serial,
	        .confirmed_ns = confirmed_ns,
	};

	assert_int_equal(zkw_writer_publish(w, &p), 0);
}

static const struct zkw_segment_hot *reader_hot(const zkw_reader *r)
{
	return &((const struct zkw_segment_header *)(const void *)r->base)->hot;
}

/* What the published slot says, raw (all a reader of minor 1 looks at). */
static uint64_t slot_confirmed(const zkw_reader *r)
{
	return zkw__load64(&zkw_segment_slot(r->base, r->slot_size, r->slot_count, zkw_reader_generation(r))
	                            ->confirmed_ns);
}

/* The confirmation time of a full read (content too large for buf is
 * fine: the snapshot's fields are filled in). */
static uint64_t read_confirmed(const zkw_reader *r)
{
	zkw_snapshot m;
	char buf[64];
	ssize_t n = zkw_reader_read(r, &m, buf, sizeof(buf));

	if (n < 0 && n != -ENOBUFS)
		fail_msg("zkw_reader_read: %zd", n);
	return m.confirmed_ns;
}

/* Fork a child that confirms through the inherited writer (the mapping is
 * shared: its store is the real thing) once the parent sleeps. It exits 0
 * when the parent still sleeps after the confirmation, which therefore
 * came during the parent's wait; 2 when the parent was awake by then. */
static pid_t confirm_when_parent_sleeps(zkw_writer *w, uint64_t confirmed_ns)
{
	pid_t parent = getpid(), pid = segtest_fork();

	if (pid == 0) {
		uint64_t until = zkw_clock_mono_ns() + 5000000000u;

		while (!process_sleeping(parent) && zkw_clock_mono_ns() < until)
			usleep(1000); /* no event says "blocked in futex"; poll /proc */
		if (zkw_writer_confirm(w, confirmed_ns) != 0)
			_exit(1);
		_exit(process_sleeping(parent) ? 0 : 2);
	}
	return pid;
}

/* A reconcile that finds nothing changed: zkw_writer_confirm() moves the
 * hot line's confirmation time only. Readers see it with one load and in
 * a full read; the generation, the state and the futex word stay, and a
 * waiter asleep on the word is not woken (it times out). */
static void test_confirm_moves_confirmed_at_and_wakes_nobody(void **state)
{
	const char *name = new_name();
	zkw_writer *w = segtest_open_writer(name, 4096);
	const struct zkw_segment_hot *hot;
	uint32_t word, st;
	uint64_t gen;
	zkw_reader r;
	int attempt, rc = 0, child = 2;

	(void)state;
	publish_confirmed(w, "a", 1, CONFIRMED(0));
	segtest_open_reader(&r, name);
	hot = reader_hot(&r);
	assert_int_equal(r.abi_minor, ZKW_ABI_MINOR);
	assert_int_equal(zkw_reader_confirmed_ns(&r), CONFIRMED(0));
	assert_int_equal(read_confirmed(&r), CONFIRMED(0));
	gen = zkw_reader_generation(&r);
	st = zkw_reader_state(&r);
	word = zkw_segment_futex_word(hot);

	/* A confirmation while the reader sleeps on the futex word: the
	 * sleep must end by its timeout (-ETIMEDOUT), not by a wake (0) nor
	 * because the word moved (-EAGAIN). A confirmation that came only
	 * after the timeout proves nothing: try again. */
	for (attempt = 0; attempt < 5 && child == 2; attempt++) {
		struct timespec ts;
		pid_t pid = confirm_when_parent_sleeps(w, CONFIRMED(10 + attempt));

		rc = zkw_segment_futex_wait(hot, word, zkw__deadline(&ts, 300));
		child = proc_reap_pid(pid, 10000);
		if (child == -1 || !WIFEXITED(child) || (WEXITSTATUS(child) != 0 && WEXITSTATUS(child) != 2))
			fail_msg("confirming child: wait status 0x%x", child);
		child = WEXITSTATUS(child);
		if (rc != -ETIMEDOUT)
			fail_msg(
			        "a waiter on the futex word got %d (%s) from a confirmation, want -ETIMEDOUT",
			        rc,
			        rc == 0         ? "woken"
			        : rc == -EAGAIN ? "the word moved"
			                        : strerror(-rc));
	}
	if (child != 0)
		fail_msg("the confirmation never came while the waiter slept (%d attempts)", attempt);
	assert_int_equal(zkw_reader_confirmed_ns(&r), CONFIRMED(10 + attempt - 1));
	assert_int_equal(zkw_reader_generation(&r), gen);
	assert_int_equal(zkw_reader_state(&r), st);
	assert_int_equal(zkw_segment_futex_word(hot), word);
	assert_int_equal(zkw_reader_wait(&r, gen, 20), 0);

	/* In-process, the same: one word moves, in the hot line. The slot
	 * keeps what was published; a full read reports the newer. */
	assert_int_equal(zkw_writer_confirm(w, CONFIRMED(20)), 0);
	assert_int_equal(zkw_segment_confirmed_ns(hot), CONFIRMED(20));
	assert_int_equal(zkw_reader_confirmed_ns(&r), CONFIRMED(20));
	assert_int_equal(slot_confirmed(&r), CONFIRMED(0));
	assert_int_equal(read_confirmed(&r), CONFIRMED(20));
	assert_int_equal(zkw_reader_generation(&r), gen);
	assert_int_equal(zkw_writer_generation(w), gen);
	assert_int_equal(zkw_segment_futex_word(hot), word);
	assert_int_equal(zkw_writer_confirm(w, 0), -EINVAL);
	assert_int_equal(zkw_reader_confirmed_ns(&r), CONFIRMED(20));
	zkw_reader_close(&r);
	zkw_writer_close(w, true);
}

/* A publish after a confirmation: without a confirmation of its own it
 * keeps the confirmation's (newer than the published slot's) and puts it
 * in its slot, where readers of minor 1 see it; with one, that. A
 * restarted writer carries it on. */
static void test_publish_after_confirm_keeps_the_newer(void **state)
{
	const char *name = new_name();
	zkw_writer *w = segtest_open_writer(name, 4096);
	zkw_reader r;

	(void)state;
	publish_confirmed(w, "a", 1, CONFIRMED(0));
	segtest_open_reader(&r, name);
	assert_int_equal(zkw_writer_confirm(w, CONFIRMED(5)), 0);
	publish_keep(w, "Connection interrupted with Zookeeper, re-establishing");
	assert_int_equal(slot_confirmed(&r), CONFIRMED(5));
	assert_int_equal(zkw_reader_confirmed_ns(&r), CONFIRMED(5));
	assert_int_equal(read_confirmed(&r), CONFIRMED(5));
	publish_confirmed(w, "b", 2, 0);
	assert_int_equal(slot_confirmed(&r), CONFIRMED(5));
	assert_int_equal(zkw_reader_confirmed_ns(&r), CONFIRMED(5));
	publish_confirmed(w, "c", 3, CONFIRMED(9));
	assert_int_equal(slot_confirmed(&r), CONFIRMED(9));
	assert_int_equal(zkw_reader_confirmed_ns(&r), CONFIRMED(9));
	assert_int_equal(read_confirmed(&r), CONFIRMED(9));

	/* Confirmed after the last publish, then restarted: the restart
	 * publication carries the confirmation on, slot and hot line. */
	assert_int_equal(zkw_writer_confirm(w, CONFIRMED(12)), 0);
	zkw_writer_close(w, false);
	w = segtest_open_writer(name, 4096);
	assert_int_equal(zkw_writer_generation(w), 5);
	assert_int_equal(slot_confirmed(&r), CONFIRMED(12));
	assert_int_equal(zkw_reader_confirmed_ns(&r), CONFIRMED(12));
	assert_int_equal(read_confirmed(&r), CONFIRMED(12));
	zkw_reader_close(&r);
	zkw_writer_close(w, true);
}

/* Make the segment `name` (its writer closed) look like one an older
 * broker (ABI minor 1) left: that minor in the identity, and in the hot
 * line's confirmation word what such a broker leaves there - 0, or the
 * stale value of a newer broker it took the segment over from. */
static void make_minor_1(const char *name, uint64_t hot_confirmed)
{
	int fd = shm_open(name, O_RDWR, 0);
	struct zkw_segment_header *h;

	assert_true(fd >= 0);
	h = mmap(NULL, ZKW_HEADER_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(h != MAP_FAILED);
	h->ident.abi_minor = 1;
	h->hot.confirmed_ns = hot_confirmed;
	munmap(h, ZKW_HEADER_SIZE);
	close(fd);
}

/* An older broker's segment (minor 1): readers take the confirmation time
 * from the published slot, never from the hot line's word, which such a
 * broker does not keep up. A writer adopting it - in place, or replacing
 * it when a reader holds a lock - writes minor 2 and starts the word from
 * the slot. */
static void test_minor_1_segment_read_through_the_slot_and_upgraded(void **state)
{
	const char *name = new_name();
	zkw_writer *w = segtest_open_writer(name, 4096);
	zkw_reader old_r, new_r;

	(void)state;
	publish_confirmed(w, "old broker", 1, CONFIRMED(0));
	zkw_writer_close(w, false);

	/* Minor 1 as an older broker leaves it: the word is 0. */
	make_minor_1(name, 0);
	segtest_open_reader(&old_r, name);
	assert_int_equal(old_r.abi_minor, 1);
	assert_int_equal(zkw_reader_confirmed_ns(&old_r), CONFIRMED(0));
	assert_int_equal(read_confirmed(&old_r), CONFIRMED(0));
	zkw_reader_close(&old_r);
	/* An older broker that took over a newer one's segment: a stale
	 * word, here later than the slot, is not believed either. */
	make_minor_1(name, CONFIRMED(1000));
	segtest_open_reader(&old_r, name);
	assert_int_equal(zkw_reader_confirmed_ns(&old_r), CONFIRMED(0));
	assert_int_equal(read_confirmed(&old_r), CONFIRMED(0));

	/* Adopted in place: minor 2, the word from the slot (not the stale
	 * one), before any publish of ours. */
	w = segtest_open_writer(name, 4096);
	assert_string_equal(zkw_writer_notice(w), "");
	assert_false(zkw_reader_retired(&old_r));
	segtest_open_reader(&new_r, name);
	assert_int_equal(new_r.abi_minor, ZKW_ABI_MINOR);
	assert_int_equal(((const struct zkw_segment_header *)(const void *)new_r.base)->ident.abi_minor,
	                 ZKW_ABI_MINOR);
	assert_int_equal(zkw_segment_confirmed_ns(reader_hot(&new_r)), CONFIRMED(0));
	assert_int_equal(zkw_reader_confirmed_ns(&new_r), CONFIRMED(0));
	assert_int_equal(read_confirmed(&new_r), CONFIRMED(0));
	/* A confirmation: one load for the reader opened on minor 2; the one
	 * opened on minor 1 reads the slot, which the next publish brings up
	 * to date. */
	assert_int_equal(zkw_writer_confirm(w, CONFIRMED(30)), 0);
	assert_int_equal(zkw_reader_confirmed_ns(&new_r), CONFIRMED(30));
	assert_int_equal(zkw_reader_confirmed_ns(&old_r), CONFIRMED(0));
	publish_keep(w, "Connection interrupted with Zookeeper, re-establishing");
	assert_int_equal(zkw_reader_confirmed_ns(&old_r), CONFIRMED(30));
	assert_int_equal(read_confirmed(&old_r), CONFIRMED(30));
	zkw_reader_close(&new_r);
	zkw_writer_close(w, false);

	/* Replaced: a reader's lock keeps the writer from adopting it. The
	 * new segment is minor 2 and starts the word from the old slot. */
	make_minor_1(name, CONFIRMED(1000));
	int fd = shm_open(name, O_RDONLY, 0);
	struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
	assert_true(fd >= 0);
	assert_int_equal(fcntl(fd, F_OFD_SETLK, &fl), 0);
	w = segtest_open_writer(name, 4096);
	assert_non_null(strstr(zkw_writer_notice(w), "replaced"));
	assert_true(zkw_reader_retired(&old_r));
	segtest_open_reader(&new_r, name);
	assert_int_equal(new_r.abi_minor, ZKW_ABI_MINOR);
	assert_int_equal(zkw_reader_confirmed_ns(&new_r), CONFIRMED(30));
	assert_int_equal(read_confirmed(&new_r), CONFIRMED(30));
	close(fd);
	zkw_reader_close(&new_r);
	zkw_reader_close(&old_r);
	zkw_writer_close(w, true);
}

/* A segment replaced - grown by its writer, or by the next writer because
 * a reader holds a lock on it - hands its confirmation time on to the new
 * one: a confirmation's too, which its published slot does not hold. */
static void test_replacement_carries_the_confirmation_over(void **state)
{
	const char *name = new_name();
	zkw_writer_options opt = {
	        .capacity = 65536, .grow = true, .group = (gid_t)-1, .watch_path = "/tmp/test"};
	zkw_writer *w = segtest_open_writer_opt(name, &opt);
	static char big[20000];
	zkw_reader r;

	(void)state;
	publish_confirmed(w, "small", 1, CONFIRMED(0));
	assert_int_equal(zkw_writer_confirm(w, CONFIRMED(40)), 0);
	memset(big, 'x', sizeof(big) - 1);
	publish_confirmed(w, big, 2, 0); /* grows: 8 KiB -> 64 KiB */
	assert_int_equal(zkw_writer_capacity(w), 65536);
	segtest_open_reader(&r, name);
	assert_int_equal(zkw_reader_capacity(&r), 65536);
	assert_int_equal(slot_confirmed(&r), CONFIRMED(40));
	assert_int_equal(zkw_reader_confirmed_ns(&r), CONFIRMED(40));

	/* Confirmed after the last publish; the next writer finds a reader's
	 * lock and replaces the segment. */
	assert_int_equal(zkw_writer_confirm(w, CONFIRMED(41)), 0);
	zkw_writer_close(w, false);
	int fd = shm_open(name, O_RDONLY, 0);
	struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET};
	assert_true(fd >= 0);
	assert_int_equal(fcntl(fd, F_OFD_SETLK, &fl), 0);
	w = segtest_open_writer_opt(name, &opt);
	assert_non_null(strstr(zkw_writer_notice(w), "replaced"));
	assert_true(zkw_reader_retired(&r));
	zkw_reader_close(&r);
	segtest_open_reader(&r, name);
	assert_int_equal(zkw_reader_confirmed_ns(&r), CONFIRMED(41));
	assert_int_equal(read_confirmed(&r), CONFIRMED(41));
	close(fd);
	zkw_reader_close(&r);
	zkw_writer_close(w, true);
}

/* ---- ping --------------------------------------------------------------- */

static void test_ping_follows_the_writer_process(void **state)
{
	const char *name = new_name();
	int up[2], status;
	zkw_reader r;
	pid_t pid;

	(void)state;
	assert_int_equal(pipe(up), 0);
	pid = segtest_fork();
	if (pid == 0) {
		zkw_writer *w;
		zkw_publication p = {.valid = true, .connected = true, .content = "x", .len = 1};

		if (zkw_writer_open(&w, name, NULL, NULL, 0) != 0 || zkw_writer_publish(w, &p) != 0)
			_exit(2);
		segtest_send_byte(up[1], 'r');
		pause(); /* until the parent kills us */
		_exit(3);
	}
	if (segtest_recv_byte(up[0], 10000) != 'r') {
		proc_reap_pid(pid, 0);
		fail_msg("writer child did not start");
	}
	segtest_open_reader(&r, name);
	assert_true(zkw_reader_broker_alive(&r));
	assert_true(zkw_reader_ping(&r));
	assert_true(zkw_reader_is_valid(&r));
	kill(pid, SIGKILL);
	status = proc_reap_pid(pid, 10000);
	assert_true(status != -1 && WIFSIGNALED(status));
	/* Dead broker: its state words still say connected, the lock does not. */
	assert_int_equal(zkw_reader_state(&r) & ZKW_STATE_CONNECTED, ZKW_STATE_CONNECTED);
	assert_false(zkw_reader_broker_alive(&r));
	assert_false(zkw_reader_ping(&r));
	zkw_reader_close(&r);
	close(up[0]);
	close(up[1]);

	/* In-process writer: a disconnected publish, then a clean close. */
	zkw_writer *w = segtest_open_writer(name, ZKW_DEFAULT_CAPACITY);
	segtest_open_reader(&r, name);
	assert_false(zkw_reader_ping(&r)); /* restarted: not connected */
	publish(w, false, false, NULL, 1, "Connection interrupted with Zookeeper, re-establishing");
	assert_true(zkw_reader_broker_alive(&r));
	assert_false(zkw_reader_ping(&r));
	publish(w, true, true, "y", 2, NULL);
	assert_true(zkw_reader_ping(&r));
	zkw_writer_close(w, false);
	assert_false(zkw_reader_broker_alive(&r));
	assert_false(zkw_reader_ping(&r));
	assert_int_equal(zkw_reader_state(&r) & (ZKW_STATE_RUNNING | ZKW_STATE_CONNECTED), 0);
	zkw_reader_close(&r);
}

/* ---- event dispatcher ----------------------------------------------------- */


/* Dispatch the next publication and compare the exact handler calls. */
static void expect_events(zkw_dispatcher *d, struct segtest_calls *log, const char *want, int calls)
{
	int rc;

	log->text[0] = '\0';
	rc = zkw_dispatch(d, 1000);
	if (strcmp(log->text, want) != 0 || rc != calls)
		fail_msg("dispatch: got \"%s\" (%d calls), want \"%s\" (%d)", log->text, rc, want, calls);
}

static void test_dispatcher_calls_each_handler_once_per_change(void **state)
{
	const char *name = new_name();
	zkw_writer *w = segtest_open_writer(name, 4096);
	struct segtest_calls log = {""};
	zkw_handlers h = segtest_calls_handlers(&log);
	zkw_dispatcher d;
	zkw_reader r;
	char buf[16];

	(void)state;
	segtest_open_reader(&r, name);
	zkw_dispatcher_init(&d, &r, &h, buf, sizeof(buf));
	assert_int_equal(zkw_dispatch(&d, 0), 0); /* nothing published yet */
	assert_string_equal(log.text, "");

	publish(w, true, true, "A", 1, NULL);
	expect_events(&d, &log, "config(A) valid(true) ", 2);
	publish(w, true, true, "A", 1, NULL); /* rewrite of identical bytes */
	expect_events(&d, &log, "", 0);
	publish(w, true, true, "B", 2, NULL);
	expect_events(&d, &log, "config(B) ", 1);
	publish(w, false, false, "B", 2, "Connection interrupted with Zookeeper, re-establishing");
	expect_events(&d, &log, "valid(false) error(Connection interrupted with Zookeeper, re-establishing) ",
	              2);
	publish(w, false, false, "B", 2, "Connection interrupted with Zookeeper, re-establishing");
	expect_events(&d, &log, "", 0);
	publish(w, false, true, "B", 2, "Invalid get on file path");
	expect_events(&d, &log, "error(Invalid get on file path) ", 1);
	publish(w, true, true, "B", 2, NULL);
	expect_events(&d, &log, "valid(true) ", 1);
	/* No publication: a timeout, no calls. */
	log.text[0] = '\0';
	assert_int_equal(zkw_dispatch(&d, 20), 0);
	assert_string_equal(log.text, "");

	/* Broker restart: the kept content is not a change. */
	zkw_writer_close(w, false);
	w = segtest_open_writer(name, 4096);
	expect_events(&d, &log, "valid(false) error(zkw-broker restarted, connecting to Zookeeper) ", 2);
	publish(w, true, true, "B", 99, NULL); /* same bytes after restart */
	expect_events(&d, &log, "valid(true) ", 1);
	/* Several publications between dispatches: only the net change. */
	publish(w, true, true, "C", 100, NULL);
	publish(w, true, true, "D", 101, NULL);
	expect_events(&d, &log, "config(D) ", 1);
	/* Content changed while invalid shows up when valid again. */
	publish(w, false, true, "E", 102, "Invalid pointer path");
	expect_events(&d, &log, "valid(false) error(Invalid pointer path) ", 2);
	publish(w, true, true, "E", 102, NULL);
	expect_events(&d, &log, "config(E) valid(true) ", 2);
	/* The circuit breaker: invalid, last good content kept. */
	publish_keep(w, "Connection interrupted with Zookeeper, re-establishing");
	expect_events(&d, &log, "valid(false) error(Connection interrupted with Zookeeper, re-establishing) ",
	              2);
	publish(w, true, true, "E", 102, NULL);
	expect_events(&d, &log, "valid(true) ", 1);

	/* Too big for the caller's buffer: -ENOBUFS, no handler, size given. */
	publish(w, true, true, "0123456789abcdefXYZ", 103, NULL);
	log.text[0] = '\0';
	assert_int_equal(zkw_dispatch(&d, 1000), -ENOBUFS);
	assert_int_equal(d.snap.len, 19);
	assert_string_equal(log.text, "");

	/* NULL handlers are allowed. */
	zkw_dispatcher_init(&d, &r, NULL, buf, sizeof(buf));
	publish(w, true, true, "F", 104, NULL);
	assert_int_equal(zkw_dispatch(&d, 1000), 0);
	zkw_reader_close(&r);
	zkw_writer_close(w, true);
}

/* ---- C++ ---------------------------------------------------------------- */

static const char cxx_program[] =
        "#include <zkw/segment.h>\n" /* on its own first: the writer's view */
        "#include <zkw/client.h>\n"
        "#include <cstdio>\n"
        "static void on_valid(void *, bool) {}\n"
        "int main() {\n"
        "  zkw_reader r;\n"
        "  if (zkw_reader_open(&r, \"/zkw.tmp.myconfig\") != 0) return 1;\n"
        "  static char buf[4096];\n"
        "  zkw_snapshot meta;\n"
        "  ssize_t n = zkw_reader_read(&r, &meta, buf, sizeof(buf));\n"
        "  zkw_handlers h = {on_valid, nullptr, nullptr, nullptr};\n"
        "  zkw_dispatcher d;\n"
        "  zkw_dispatcher_init(&d, &r, &h, buf, sizeof(buf));\n"
        "  (void)zkw_dispatch(&d, 0);\n"
        "  std::printf(\"%zd %d %d\\n\", n, zkw_reader_wait(&r, 0, 10), (int)zkw_reader_ping(&r));\n"
        "  zkw_reader_close(&r);\n"
        "}\n";

static void test_client_header_compiles_as_cxx(void **state)
{
	const char *srcdir = getenv("ZKW_SRCDIR");
	char cwd[PATH_MAX], cmd[PATH_MAX + 256], probe[PATH_MAX + 64];
	FILE *p;
	int status;

	(void)state;
	if (system("command -v c++ >/dev/null 2>&1") != 0) {
		print_message("no c++ compiler: skipped\n");
		skip();
	}
	if (!srcdir || !*srcdir)
		srcdir = getcwd(cwd, sizeof(cwd));
	assert_non_null(srcdir);
	snprintf(probe, sizeof(probe), "%s/include/zkw/client.h", srcdir);
	if (access(probe, R_OK) != 0)
		fail_msg("%s not found: run from the source root or set ZKW_SRCDIR", probe);
	snprintf(cmd, sizeof(cmd),
	         "c++ -std=c++17 -Wall -Wextra -Werror -I'%s/include' -fsyntax-only -x c++ -", srcdir);
	fflush(stdout);
	signal(SIGPIPE, SIG_IGN); /* a compiler that dies early must fail the test, not kill it */
	p = popen(cmd, "w");
	assert_non_null(p);
	fwrite(cxx_program, 1, sizeof(cxx_program) - 1, p);
	status = pclose(p);
	signal(SIGPIPE, SIG_DFL);
	if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("segment.h or client.h does not compile as C++17 (%s)", cmd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_teardown(test_layout_matches_the_abi, unlink_names),
	        cmocka_unit_test_teardown(test_seqlock_steps_and_hot_line, unlink_names),
	        cmocka_unit_test_teardown(test_created_segment_header_is_filled_in, unlink_names),
	        cmocka_unit_test_teardown(test_shm_names_are_normalised, unlink_names),
	        cmocka_unit_test_teardown(test_open_refuses_missing_truncated_and_corrupt_segments,
	                                  unlink_names),
	        cmocka_unit_test_teardown(test_read_refuses_hostile_slots, unlink_names),
	        cmocka_unit_test_teardown(test_open_checks_owner_and_permissions, unlink_names),
	        cmocka_unit_test_teardown(test_reader_mapping_is_read_only, unlink_names),
	        cmocka_unit_test_teardown(test_read_reports_enobufs_without_touching_the_buffer,
	                                  unlink_names),
	        cmocka_unit_test_teardown(test_second_writer_is_refused_naming_the_holder, unlink_names),
	        cmocka_unit_test_teardown(test_writer_rejects_bad_capacity_and_oversized_content,
	                                  unlink_names),
	        cmocka_unit_test_teardown(test_writer_modes_unlink_and_capacity_mismatch, unlink_names),
	        cmocka_unit_test_teardown(test_reopened_writer_continues_and_keeps_content, unlink_names),
	        cmocka_unit_test_teardown(test_stress_readers_never_see_a_torn_snapshot, unlink_names),
	        cmocka_unit_test_teardown(test_writer_killed_mid_publish_leaves_last_snapshot, unlink_names),
	        cmocka_unit_test_teardown(test_wait_times_out_no_earlier_than_asked, unlink_names),
	        cmocka_unit_test_teardown(test_wait_wakes_on_publish, unlink_names),
	        cmocka_unit_test_teardown(test_wait_returns_eintr_on_a_signal, unlink_names),
	        cmocka_unit_test_teardown(test_confirm_moves_confirmed_at_and_wakes_nobody, unlink_names),
	        cmocka_unit_test_teardown(test_publish_after_confirm_keeps_the_newer, unlink_names),
	        cmocka_unit_test_teardown(test_minor_1_segment_read_through_the_slot_and_upgraded,
	                                  unlink_names),
	        cmocka_unit_test_teardown(test_replacement_carries_the_confirmation_over, unlink_names),
	        cmocka_unit_test_teardown(test_ping_follows_the_writer_process, unlink_names),
	        cmocka_unit_test_teardown(test_dispatcher_calls_each_handler_once_per_change, unlink_names),
	        cmocka_unit_test_teardown(test_client_header_compiles_as_cxx, unlink_names),
	};

	return cmocka_run_group_tests(tests, NULL, unlink_names);
}
