/* SPDX-License-Identifier: Apache-2.0 */
/* stats.h - the broker's counters, published in shared memory for
 * zkw-inspect --list / --prometheus (layout: lib/zkw_stats.h; design:
 * docs/design.md, "The broker's counters").
 *
 * One object per broker process, so the functions keep it in a file-static
 * and may be called from any thread: counting is one relaxed atomic add,
 * and a no-op until zkw__stats_open succeeded (or after it failed: the
 * broker runs without metrics rather than not at all).
 *
 *     zkw__stats_open(socket_path, 0640, group, why, sizeof why);   // main, at start
 *     zkw__stats_add(ZKW_STAT_PUBLISHES);                           // anywhere
 *     zkw__stats_error(ZKW_LOG_ERROR, "%s: cannot publish", path);  // anywhere
 *     zkw__stats_close();                                           // main, at a clean stop
 */
#ifndef ZKW_BROKER_STATS_H
#define ZKW_BROKER_STATS_H

#include <sys/types.h>

#include <zkw/watcher.h> /* zkw_session_count, ZKW_LOG_* */

#include "zkw_stats.h"

/* Create /dev/shm/zkw-stats.<pid> (mode and group as the segments':
 * group or other write bits are refused), after removing the objects our
 * uid's dead brokers left. 0, or -errno with the reason in why. */
int zkw__stats_open(const char *socket_path, mode_t mode, gid_t group, char *why, size_t whylen);

/* Count one event. */
void zkw__stats_add(enum zkw_stat which);

/* Record the last error (level ZKW_LOG_ERROR or ZKW_LOG_WARN) with the
 * time now, and count it. */
void zkw__stats_error(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* zkw_session_options.count: the watch library's events. */
void zkw__stats_session_count(void *ctx, zkw_session_count what);

/* zkw_session_options.log: the broker's log (zkw__log_sink), and an error
 * or a warning of the session also becomes the last error. */
void zkw__stats_log_sink(void *ctx, int level, const char *message);

/* Remove the object (if the name is still ours) and release it. */
void zkw__stats_close(void);

/* Its name ("/zkw-stats.1234"), "" when there is none. */
const char *zkw__stats_name(void);

#endif
