/* SPDX-License-Identifier: Apache-2.0 */
/* writer.h - the single writer of a zkw shared-memory segment.
 *
 * Knows the segment ABI (zkw/segment.h) and nothing about ZooKeeper: the
 * broker's main wires watcher states into zkw_writer_publish().
 *
 *     zkw_writer *w;
 *     if (zkw_writer_open(&w, "/zkw.tmp.myconfig", &opt, why, sizeof(why)) == 0) {
 *             zkw_writer_publish(w, &publication);
 *             zkw_writer_close(w, false);
 *     }
 */
#ifndef ZKW_BROKER_WRITER_H
#define ZKW_BROKER_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <zkw/common.h> /* ZKW_POINTER_MAX */

typedef struct zkw_writer zkw_writer;

/* The sizing rule of a growing segment (zkw_writer_options.grow): it starts
 * at ZKW_WRITER_MIN_CAPACITY content bytes (most configuration files fit:
 * they never cause a replacement; the segment is 24 KiB of /dev/shm);
 * content longer than the segment's capacity makes the writer replace it
 * by one of zkw_writer_sized_capacity(len, max): the smallest power of two
 * from ZKW_WRITER_MIN_CAPACITY up that holds twice len, never above max. */
#define ZKW_WRITER_MIN_CAPACITY 8192u

typedef struct zkw_writer_options {
	/* Content bytes; 0 = ZKW_DEFAULT_CAPACITY. Without grow, every
	 * segment has exactly this capacity; with grow it is the maximum. */
	uint64_t capacity;
	/* Start at the sizing rule's capacity and grow (a replacement, see
	 * zkw_writer_publish()) up to `capacity`; an existing segment of any
	 * capacity up to it is adopted, a larger one replaced. The open
	 * refuses (-ENOSPC) a maximum whose segment /dev/shm could not hold
	 * even empty. */
	bool grow;
	mode_t mode;            /* 0 = 0640; group or other write bits are refused */
	gid_t group;            /* (gid_t)-1 = leave as created */
	const char *watch_path; /* informational, shown by zkw-inspect */
} zkw_writer_options;

/* One snapshot to publish. */
typedef struct zkw_publication {
	bool valid;
	bool connected;
	/* keep_content: republish the content already in the segment (with
	 * its version, mzxid, pointer and change time) - the circuit breaker's
	 * "last good value" - and ignore content..pointer below. */
	bool keep_content;
	const void *content;
	size_t len;
	/* Changes exactly when the content bytes change (the watcher's
	 * content_serial). The first publication of a writer compares bytes
	 * instead, so a restarted broker does not announce the same content
	 * as a change. */
	uint64_t content_serial;
	int64_t version;
	int64_t mzxid;
	const char *pointer; /* NULL or "" when not in pointer mode */
	const char *error;   /* NULL or "" when valid */
	/* CLOCK_REALTIME ns of the last confirmation by ZooKeeper, stored in
	 * the slot and the hot line; 0 = keep the last one stored (by a
	 * publish or zkw_writer_confirm()). */
	uint64_t confirmed_ns;
	/* The content ZooKeeper holds was refused by validation: with
	 * keep_content, the slot says so (ZKW_SLOT_REJECTED). */
	bool rejected;
	/* The content is a bundle (zkw/bundle.h): ZKW_SLOT_BUNDLE.
	 * Publications with keep_content carry the flag over. */
	bool bundle;
	/* A cold start from the state directory: content..pointer as they were
	 * saved, flagged ZKW_SLOT_CACHED, with the saved changed_ns and
	 * content_gen (at most after_generation), published at a generation
	 * above after_generation (the saved one) and the segment's: the
	 * generation never goes backwards across a reboot. content_serial is
	 * ignored and the next publication compares bytes, as a writer's first
	 * does: the live content announces a change only if it differs.
	 * Publications with keep_content carry the flag over; fresh content
	 * clears it. */
	bool cached;
	uint64_t after_generation;
	uint64_t changed_ns;
	uint64_t content_gen;
} zkw_publication;

/* Take the broker lock (/dev/shm/.zkw-lock.<name>), then create, adopt or
 * replace the segment and hold its write lock (the liveness readers see).
 * 0 or -errno: -EBUSY another broker holds it; -EPERM the segment or the
 * lock file is owned by another uid; -EEXIST it exists with another
 * capacity (without grow), is not a zkw segment or is corrupt; -EINVAL bad name, capacity
 * or mode (group or other write bits are refused); -ENOSPC /dev/shm cannot
 * hold it (the message gives the size wanted and the space free). `why`
 * receives a one-line reason. A segment is allocated in full at creation.
 * An existing segment is adopted in place when it can be: its generation
 * keeps rising, it gets a new epoch, any odd slot is repaired, and it
 * publishes "broker restarted" (last content kept, invalid, disconnected).
 * When a reader holds a lock on it, or group or others could write it, it
 * is replaced instead by a new one continuing its generation and content,
 * and retired (ZKW_STATE_RETIRED). What is read back from it is validated:
 * a last snapshot that fails is dropped (published as empty content). */
int zkw_writer_open(zkw_writer **out, const char *shm_name, const zkw_writer_options *opt, char *why,
                    size_t whylen);

/* What the open repaired or replaced, in words, for the log ("" if
 * nothing): a replaced segment, a dropped last snapshot. */
const char *zkw_writer_notice(const zkw_writer *w);

/* Publish a snapshot: fill the unpublished slot, publish it, bump the futex
 * word and wake every waiter. 0, or -EMSGSIZE when content exceeds the
 * capacity (the maximum of a growing writer), or, for a growing writer
 * whose segment is too small, the -errno of a failed growth (-ENOSPC ...,
 * the reason in zkw_writer_error()): nothing published, the old segment
 * kept, and the caller publishes an invalid state. Growth is a
 * replacement: a new segment of zkw_writer_sized_capacity() continuing
 * the generation and the published snapshot, renamed over the name, the
 * old one retired (ZKW_STATE_RETIRED, a last wake: readers reopen), then
 * the publish into the new one. Segments never shrink. */
int zkw_writer_publish(zkw_writer *w, const zkw_publication *p);

/* ZooKeeper confirmed what is published and nothing changed: store
 * confirmed_ns (CLOCK_REALTIME ns) in the hot line's confirmation word
 * only - no slot, no generation, no futex bump, no wake. Readers see it
 * with one load (zkw_reader_confirmed_ns()) and in the confirmed_ns of
 * zkw_reader_read(); readers of ABI minor 1 see it at the next publish,
 * which carries it into the slot. 0, or -EINVAL for 0. Never blocks. */
int zkw_writer_confirm(zkw_writer *w, uint64_t confirmed_ns);

/* Capacity of a growing segment for content of len bytes (len <= max). */
uint64_t zkw_writer_sized_capacity(uint64_t len, uint64_t max);

/* Why the last zkw_writer_publish() failed to grow the segment ("" if it
 * did not). */
const char *zkw_writer_error(const zkw_writer *w);

/* What the segment publishes now, read back from the writer's own mapping
 * with the checks an adopted segment gets. content points into the segment
 * and stays valid until the next zkw_writer_publish(). */
typedef struct zkw_writer_view {
	uint64_t generation; /* 0: nothing published (the rest is empty) */
	uint32_t flags;      /* ZKW_SLOT_* */
	const void *content;
	size_t len;
	int64_t version;
	int64_t mzxid;
	uint64_t changed_ns;
	uint64_t content_gen;
	uint64_t confirmed_ns;
	char pointer[ZKW_POINTER_MAX];
} zkw_writer_view;

/* 0, or -EBADMSG when the published slot fails its checks. */
int zkw_writer_view_published(const zkw_writer *w, zkw_writer_view *out);

/* Generation of the last publication. */
uint64_t zkw_writer_generation(const zkw_writer *w);
/* Capacity of the current segment (of a growing writer: up to the maximum). */
uint64_t zkw_writer_capacity(const zkw_writer *w);
const char *zkw_writer_name(const zkw_writer *w);

/* Mark the broker stopped (state RUNNING cleared, readers woken), release
 * the locks (the lock file is removed) and unmap; unlink the segment too
 * when asked, retiring it first (ZKW_STATE_RETIRED with that last wake:
 * waiting readers get -ESTALE instead of waiting on a segment nobody can
 * reach). NULL is fine. */
void zkw_writer_close(zkw_writer *w, bool unlink_segment);

/* Remove the segment shm_name and the broker lock a killed broker leaves
 * beside it (both may be missing), once no broker runs on it: for tests and
 * clean-ups. 0 or -errno. */
int zkw_writer_remove(const char *shm_name);

/* Test seam: when set, called between zkw_slot_write_begin() and
 * zkw_slot_write_end() (a publish "in the middle": the slot's sequence is
 * odd), e.g. to kill the writer. */
extern void (*zkw_writer_fault_hook)(void);

#endif
