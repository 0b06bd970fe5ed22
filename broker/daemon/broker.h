/* SPDX-License-Identifier: Apache-2.0 */
/* broker.h - the running broker: its watches, and what the control socket
 * (control.c) asks of them.
 *
 * Who touches what (docs/design.md, "Threads and who may block where"):
 *  - the watch table (b->watches, b->nwatches, each watch's subscribers,
 *    linger and list links) belongs to the thread that adds and removes
 *    watches: the main thread at start, then the control thread, then the
 *    main thread again once the control thread is joined;
 *  - a watch's writer and log state belong to publish_state, which the
 *    ZooKeeper session serialises (the writer's single-writer rule);
 *  - the pub_* words are written by publish_state and read by the control
 *    thread, with atomics.
 */
#ifndef ZKW_BROKER_BROKER_H
#define ZKW_BROKER_BROKER_H

#include <stdbool.h>
#include <stdint.h>

#include <zkw/watcher.h>

#include "daemon/cli.h"
#include "daemon/log.h"
#include "publish/state.h"
#include "publish/validate.h"
#include "publish/writer.h"

/* One watch at run time. */
typedef struct broker_watch {
	char *path;
	bool pointer;
	bool bundle; /* the node's children as one snapshot (never with pointer) */
	bool ensure;
	bool permanent; /* -f: never removed; else added on demand */
	char shm[ZKW_SHM_NAME_MAX + 1];
	uint64_t capacity; /* the most the segment may grow to */
	mode_t mode;       /* of its segment; 0 = the broker's */
	bool group_set;
	gid_t group;
	zkw_validate_rules rules; /* fixed for the watch's life (a reload re-creates it) */
	zkw_writer *writer;
	zkw_watch *watch;

	/* Written by publish_state, read by the control thread (atomics). */
	uint32_t pub_evaluated; /* 1 once ZooKeeper answered for it */
	uint32_t pub_valid;
	uint64_t pub_generation;
	uint64_t pub_len;
	uint64_t pub_capacity;
	char pub_error[ZKW_ERROR_MAX]; /* under pub_lock */
	/* Control thread only. */
	unsigned subscribers;
	int64_t linger_until; /* CLOCK_MONOTONIC ms; 0 = not lingering */
	size_t index;         /* in b->watches */

	/* publish_state only: the segment does not show the watch's state
	 * (a failed growth); what the log last said of it (log_state). */
	bool degraded;
	/* Validation: the content serial last checked, whether it was
	 * refused, and why. */
	uint64_t checked_serial;
	bool rejecting;
	char reject_why[ZKW_ERROR_MAX];
	/* The segment holds the copy loaded from the state directory, saved
	 * at this time ("" once ZooKeeper's content replaced it). */
	char cached_from[40];
	bool logged;
	bool logged_valid;
	char logged_error[ZKW_ERROR_MAX];
	zkw__log_limit log_limit;
} broker_watch;

typedef struct broker {
	zkw_cli cli;
	zkw_session *session;
	broker_watch **watches;
	size_t nwatches, watches_cap;
	size_t ndemand;      /* watches added on demand */
	size_t fd_watch_cap; /* watches the open file limit leaves room for */
	unsigned long long fd_limit; /* RLIMIT_NOFILE's soft limit; 0 = unlimited */
	int64_t started_ms;
	size_t cold_starts; /* watches that published a cached copy when added */
} broker;

/* An eventfd written by publish_state when a watch is first evaluated and
 * read by the control thread; -1 when there is no control socket. */
extern int broker_evaluated_fd;

/* Add a watch (path is copied) and open its segment: 0 with *out, or
 * -errno with the reason in why. name NULL = the on-demand naming rule
 * (docs/design.md, "Lifetime of a watch added on demand"). Does not start
 * watching until broker_watch_start (so that all -f segments open first). */
int broker_watch_add(broker *b, const char *path, bool pointer, bool bundle, bool ensure, bool permanent, const char *name,
                     uint64_t capacity, broker_watch **out, char *why, size_t whylen);
/* Added on demand, a watch takes the broker's validation rules
 * (b->cli.demand.rules) and capacity from its caller. When the state
 * directory holds a snapshot of the watch newer than its segment, an add
 * publishes it at once (marked cached). */
/* The same for a configured watch: its mode and group too. */
int broker_watch_add_cfg(broker *b, const zkw_cli_watch *c, broker_watch **out, char *why, size_t whylen);
/* Start its ZooKeeper watch: 0 or -errno (logged). */
int broker_watch_start(broker *b, broker_watch *w);
/* Remove a watch: no state is published after it returns; the segment is
 * retired (its readers see -ESTALE) and unlinked; error is published
 * into it first. */
void broker_watch_remove(broker *b, broker_watch *w, const char *error);
broker_watch *broker_watch_find(broker *b, const char *path, bool pointer, bool bundle);
broker_watch *broker_watch_by_name(broker *b, const char *name);
/* The published error of w, copied into buf. */
void broker_watch_error(broker_watch *w, char *buf, size_t cap);

/* control.c: the control socket. start: 0 or -errno (logged); runs until
 * control_stop, which joins its thread. */
int control_start(broker *b);
void control_stop(void);
/* Run fn(arg) where the watch table may change: on the control thread,
 * waiting for it to finish; directly when there is no control thread. */
void control_call(void (*fn)(void *), void *arg);

#endif
