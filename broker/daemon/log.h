/* SPDX-License-Identifier: Apache-2.0 */
/* log.h - the broker's log: one timestamped line per event on stderr. */
#ifndef ZKW_BROKER_LOG_H
#define ZKW_BROKER_LOG_H

#include <stdbool.h>

#include <zkw/watcher.h> /* ZKW_LOG_ERROR .. ZKW_LOG_DEBUG */

/* Log DEBUG lines too (default: INFO and above). */
extern bool zkw__log_verbose;

void zkw__log_printf(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Adapter for callbacks that hand over a finished message (the watcher's
 * log hook): ctx is unused. */
void zkw__log_sink(void *ctx, int level, const char *message);

#endif
