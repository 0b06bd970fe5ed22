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

typedef struct zkw_writer zkw_writer;

typedef struct zkw_writer_options {
	uint64_t capacity;      /* content bytes; 0 = ZKW_DEFAULT_CAPACITY */
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
	const char *pointer;   /* NULL or "" when not in pointer mode */
	const char *error;     /* NULL or "" when valid */
	uint64_t confirmed_ns; /* 0 = keep the published one */
} zkw_publication;

/* Take the broker lock (/dev/shm/.zkw-lock.<name>), then create, adopt or
 * replace the segment and hold its write lock (the liveness readers see).
 * 0 or -errno: -EBUSY another broker holds it; -EPERM the segment or the
 * lock file is owned by another uid; -EEXIST it exists with another
 * capacity, is not a zkw segment or is corrupt; -EINVAL bad name, capacity
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
 * capacity (nothing published: the caller publishes an invalid state). */
int zkw_writer_publish(zkw_writer *w, const zkw_publication *p);

/* Generation of the last publication. */
uint64_t zkw_writer_generation(const zkw_writer *w);
uint64_t zkw_writer_capacity(const zkw_writer *w);
const char *zkw_writer_name(const zkw_writer *w);

/* Mark the broker stopped (state RUNNING cleared, readers woken), release
 * the locks (the lock file is removed) and unmap; unlink the segment too
 * when asked. NULL is fine. */
void zkw_writer_close(zkw_writer *w, bool unlink_segment);

/* Test seam: when set, called between zkw_slot_write_begin() and
 * zkw_slot_write_end() (a publish "in the middle": the slot's sequence is
 * odd), e.g. to kill the writer. */
extern void (*zkw_writer_fault_hook)(void);

#endif
