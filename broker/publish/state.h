/* SPDX-License-Identifier: Apache-2.0 */
/* state.h - the state directory: each watch's last good snapshot on disk,
 * for a cold start without ZooKeeper (docs/design.md, "The state
 * directory").
 *
 * One file per watch, written whole to an unnamed temporary file, synced,
 * renamed over the old one and the directory synced, with an xxHash over
 * everything: a load returns a snapshot that was saved, complete, for that
 * watch, or a refusal with its reason - never a torn, corrupt or foreign
 * one. Saves are handed to one saver thread and coalesced per watch: the
 * publishing thread copies the snapshot and returns, it never waits for
 * the disk; the newest snapshot of every watch is written, at the latest
 * by zkw_state_flush() or zkw_state_close().
 *
 *     zkw_state *st;
 *     if (zkw_state_open(&st, "/var/lib/zkw", &opt, why, sizeof(why)) == 0) {
 *             zkw_state_save(st, &key, &snapshot);      (publishing thread)
 *             zkw_state_load(st, &key, &snap, buf, buflen, why, sizeof(why));
 *             zkw_state_close(st);
 *     }
 */
#ifndef ZKW_BROKER_STATE_H
#define ZKW_BROKER_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct zkw_state zkw_state;

/* What a file belongs to: a load refuses a file saved for another key. */
typedef struct zkw_state_key {
	const char *path;     /* the watched path (in pointer mode, the pointer node) */
	bool pointer;         /* pointer mode */
	bool bundle;          /* bundle mode (not with pointer) */
	const char *shm_name; /* the watch's segment, "/zkw.tmp.myconfig" */
} zkw_state_key;

/* One watch's last good state. zkw_state_save() copies what it points to;
 * zkw_state_load() points content and pointer into the caller's buffer. */
typedef struct zkw_state_snapshot {
	const void *content;
	size_t len;
	const char *pointer; /* the pointer's target; NULL or "" when none */
	int64_t version;     /* ZooKeeper data version, -1 if none */
	int64_t mzxid;
	uint64_t generation;   /* of the segment when it published this; at most ZKW_GENERATION_MAX */
	uint64_t content_gen;  /* generation at which the content first appeared; <= generation */
	uint64_t changed_ns;   /* CLOCK_REALTIME when the bytes last changed; 0 = unknown */
	uint64_t confirmed_ns; /* last confirmation by ZooKeeper; 0 = unknown */
	/* CLOCK_REALTIME ns when the snapshot was handed to zkw_state_save():
	 * 0 there means now; a load returns it. */
	uint64_t saved_ns;
} zkw_state_snapshot;

/* Called from the saver thread, without any lock of the store, once per
 * change of cause: err is the -errno of a failed write (-ENOSPC, -EIO, ...)
 * that differs from the last one reported, or 0 when a write works again
 * after failures. `why` names the file, the directory and the cause. It
 * may call zkw_state_save() and zkw_state_get_stats(), never
 * zkw_state_flush(), zkw_state_remove() or zkw_state_close(). */
typedef void zkw_state_error_fn(void *ctx, int err, const char *why);

typedef struct zkw_state_options {
	/* The largest content saved or loaded (the broker's --capacity);
	 * 0 = ZKW_DEFAULT_CAPACITY. */
	uint64_t max_content;
	zkw_state_error_fn *on_error; /* may be NULL */
	/* May be NULL. Called from the saver thread, without any lock of the
	 * store, after every write: 0, or its -errno (for counters). The same
	 * rules as on_error. */
	void (*on_write)(void *ctx, int err);
	void *ctx;
	/* After a failed write the saver waits retry_ms, doubling up to
	 * retry_max_ms, before the next write (a flush or close does not
	 * wait); the failed snapshot stays pending unless a newer one
	 * replaces it. 0 = 1000 and 30000. */
	unsigned retry_ms;
	unsigned retry_max_ms;
} zkw_state_options;

typedef struct zkw_state_stats {
	uint64_t saves;     /* snapshots accepted by zkw_state_save() */
	uint64_t writes;    /* files written and renamed in place */
	uint64_t coalesced; /* snapshots replaced by a newer one of their watch before being written */
	uint64_t failures;  /* writes that failed */
	uint64_t dropped;   /* snapshots never written: still failing at close, or removed */
	uint64_t pending;   /* watches with a snapshot waiting to be written */
	int last_error;     /* -errno of the last write, 0 when it worked (or none yet) */
} zkw_state_stats;

/* Open the state directory `dir`, creating it 0700 when it is missing (its
 * parent must exist), and start the saver thread. The directory must be
 * owned by the effective uid and not writable by group or others (-EPERM,
 * naming the owner or the mode); anything else that is not a directory is
 * -ENOTDIR. The directory is used through a descriptor from then on: what
 * its path later names does not matter. Temporary files a killed process
 * left are removed. 0 or -errno, the reason in `why`. */
int zkw_state_open(zkw_state **out, const char *dir, const zkw_state_options *opt, char *why, size_t whylen);

/* Hand the watch's newest snapshot to the saver: copied, then queued, and
 * a snapshot of the same watch still waiting is replaced (coalesced).
 * Never waits for the disk; takes the store's mutex, which no thread holds
 * across I/O. 0, -EINVAL (a key or field out of its limits: a path of
 * ZKW_WATCH_PATH_MAX bytes or more, a segment name not of zkw_shm_name()'s
 * form, a pointer of ZKW_POINTER_MAX bytes or more, content_gen after
 * generation, generation above ZKW_GENERATION_MAX), -EMSGSIZE (content
 * above max_content) or -ENOMEM. Write errors come later, through
 * on_error, the stats and zkw_state_flush(). Safe from any thread, not
 * concurrently with zkw_state_close(). */
int zkw_state_save(zkw_state *st, const zkw_state_key *key, const zkw_state_snapshot *snap);

/* Write every snapshot saved before the call, now (a failed write's wait
 * is cut short), and return when each was written or failed once: 0, or
 * the -errno of the first write that failed. Blocks on the disk: never
 * from the publishing thread. */
int zkw_state_flush(zkw_state *st);

/* The bytes a buffer needs to load any file of this store. */
size_t zkw_state_load_size(const zkw_state *st);
/* ... any file whose content is at most max_content bytes (a larger one
 * is -ENOBUFS). */
size_t zkw_state_load_size_for(const zkw_state *st, uint64_t max_content);

/* Load the watch's file: read whole into buf, then checked - magic, format
 * version, sizes, checksum, every field's limits and the key - before
 * anything is returned. On success *out points into buf (pointer is
 * NUL-terminated). 0; -ENOENT nothing saved; -ELOOP a symbolic link in the
 * file's place (never followed); -EPERM a file of another owner or
 * writable by group or others; -EBADMSG not a state file, torn, corrupt,
 * or saved for another watch; -EPROTO another format version; -EMSGSIZE
 * content above max_content; -ENOBUFS buf too small (see
 * zkw_state_load_size()); -errno. Anything but 0 and -ENOENT deserves one
 * warning: `why` says what was refused. Reads the disk. */
int zkw_state_load(zkw_state *st, const zkw_state_key *key, zkw_state_snapshot *out, void *buf, size_t buflen,
                   char *why, size_t whylen);

/* The watch is gone for good: drop its pending snapshot, wait for a write
 * of it in progress, and remove its file. 0 (also when there was none) or
 * -errno. Reads and writes the disk. Not concurrently with a save of the
 * same key. */
int zkw_state_remove(zkw_state *st, const zkw_state_key *key);

void zkw_state_get_stats(zkw_state *st, zkw_state_stats *out);

/* The file name of a key in the directory: the segment name made safe
 * (at most 80 bytes), '-', 32 hex digits of an xxHash of the key, ".zkws".
 * 0, or -EINVAL for a key zkw_state_save() refuses. */
int zkw_state_file_name(const zkw_state_key *key, char *buf, size_t cap);
#define ZKW_STATE_FILE_NAME_MAX 128 /* with its NUL */

const char *zkw_state_dir(const zkw_state *st);

/* Write what is pending (as zkw_state_flush()), stop the saver thread and
 * free. 0, or the -errno of a snapshot that could not be written (it is
 * dropped: the file keeps the one before). NULL is fine. */
int zkw_state_close(zkw_state *st);

/* Test seam: when set, called by the saver thread before each write. */
extern void (*zkw_state_write_hook)(void);

#endif
