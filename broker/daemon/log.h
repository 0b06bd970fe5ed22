/* SPDX-License-Identifier: Apache-2.0 */
/* log.h - the broker's log: one timestamped line per event on stderr.
 *
 * Every line is escaped as a whole before it is written (zkw__log_escape):
 * whatever a message carries from outside - a path, a ZooKeeper message
 * forwarded by the watch library, an error - a line never holds a raw
 * control byte, so it cannot fake a second line, move a terminal's cursor or
 * hide what precedes it.
 *
 *     zkw__log_printf(ZKW_LOG_WARN, "%s: invalid: %s", path, error);
 *
 *     static zkw__log_limit lim;   // at most one line a second for a kind of event
 *     unsigned missed;
 *     if (zkw__log_limit_event(&lim, zkw_clock_mono_ms(), &missed))
 *             zkw__log_printf(ZKW_LOG_WARN, "it happened (%u more not logged)", missed);
 */
#ifndef ZKW_BROKER_LOG_H
#define ZKW_BROKER_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <zkw/watcher.h> /* ZKW_LOG_ERROR .. ZKW_LOG_DEBUG */

/* Log DEBUG lines too (default: INFO and above). */
extern bool zkw__log_verbose;

void zkw__log_printf(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Adapter for callbacks that hand over a finished message (the watcher's
 * log hook): ctx is unused. */
void zkw__log_sink(void *ctx, int level, const char *message);

/* Copy the len bytes of src into dst (cap bytes, always NUL-terminated when
 * cap > 0) with every byte that is not plain printable text written as
 * \xNN: the C0 controls (CR, LF, ESC, TAB...), DEL, bytes that are not
 * well-formed UTF-8, the C1 controls U+0080-U+009F and the characters that
 * change how the rest of a line reads (line separators, bidi controls,
 * the set lib/zkw_text.h escapes for the tools); a backslash becomes
 * \\, so the escaped text reads back unambiguously. Printable UTF-8 is kept.
 * Never cuts an escape or a character in two when dst is too small. Returns
 * the length written. The one escaping function of the broker: the log uses
 * it on every line, the command line on every reason it gives. */
size_t zkw__log_escape(char *dst, size_t cap, const void *src, size_t len);

/* ---- rate limits -------------------------------------------------------- */

/* One kind of event logged at most once per ZKW_LOG_LIMIT_MS, after a
 * first burst of `burst` lines (0 counts as 1): the events in between are
 * counted and the count goes with the next line. One owner (not
 * thread-safe); zero-initialised (but for burst) means "nothing logged yet". */
#define ZKW_LOG_LIMIT_MS 1000

typedef struct zkw__log_limit {
	unsigned burst;      /* lines allowed back to back before the rate applies */
	unsigned suppressed; /* events counted, not logged, since the last line */
	int64_t tat_ms;      /* when the allowance is whole again (GCRA's theoretical arrival time) */
} zkw__log_limit;

/* CLOCK_MONOTONIC in milliseconds. */

/* An event at now_ms: true when it may be logged now (*missed is then the
 * number of earlier events that were not, and a new window starts); false
 * when it is only counted. */
bool zkw__log_limit_event(zkw__log_limit *l, int64_t now_ms, unsigned *missed);

/* Counted events whose window has ended: true when a summary line is due at
 * now_ms (*missed is their number; a new window starts), else false. */
bool zkw__log_limit_flush(zkw__log_limit *l, int64_t now_ms, unsigned *missed);

/* When zkw__log_limit_flush will have something to say: the window's end,
 * or INT64_MAX when nothing is counted. */
int64_t zkw__log_limit_due(const zkw__log_limit *l);

#endif
