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
	mode_t mode;            /* 0 = 0640 */
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

/* Create or re-open a segment and take its exclusive lock. 0 or -errno:
 * -EBUSY another broker holds it; -EPERM owned by another uid; -EEXIST it
 * exists with another capacity or is not a zkw segment; -EINVAL bad name
 * or capacity. `why` receives a one-line reason. A re-opened segment keeps
 * its generation rising, gets a new epoch, has any odd slot repaired, and
 * publishes "broker restarted" (last content kept, invalid, disconnected). */
int zkw_writer_open(zkw_writer **out, const char *shm_name, const zkw_writer_options *opt, char *why,
                    size_t whylen);

/* Publish a snapshot: fill the unpublished slot, publish it, bump the futex
 * word and wake every waiter. 0, or -EMSGSIZE when content exceeds the
 * capacity (nothing published: the caller publishes an invalid state). */
int zkw_writer_publish(zkw_writer *w, const zkw_publication *p);

/* Generation of the last publication. */
uint64_t zkw_writer_generation(const zkw_writer *w);
uint64_t zkw_writer_capacity(const zkw_writer *w);
const char *zkw_writer_name(const zkw_writer *w);

/* Mark the broker stopped (state RUNNING cleared, readers woken), release
 * the lock and unmap; unlink the segment too when asked. NULL is fine. */
void zkw_writer_close(zkw_writer *w, bool unlink_segment);

/* Test seam: when set, called between zkw_slot_write_begin() and
 * zkw_slot_write_end() (a publish "in the middle": the slot's sequence is
 * odd), e.g. to kill the writer. */
extern void (*zkw_writer_fault_hook)(void);

#endif
