/* SPDX-License-Identifier: Apache-2.0 */
/* log.c - the broker's log: "2026-11-25T04:05:06.789Z zkw-broker[42] info: ..." */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

bool zkw__log_verbose;

static const char *level_name(int level)
{
	switch (level) {
	case ZKW_LOG_ERROR: return "error";
	case ZKW_LOG_WARN: return "warning";
	case ZKW_LOG_INFO: return "info";
	default: return "debug";
	}
}

static void log_line(int level, const char *message)
{
	struct timespec ts;
	struct tm tm;
	char stamp[32];

	if (level >= ZKW_LOG_DEBUG && !zkw__log_verbose)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	/* One fprintf per line: stdio locks the stream, so lines from the
	 * watcher's threads never interleave. */
	fprintf(stderr, "%s.%03ldZ zkw-broker[%ld] %s: %s\n", stamp, ts.tv_nsec / 1000000L, (long)getpid(),
	        level_name(level), message);
}

void zkw__log_printf(int level, const char *fmt, ...)
{
	char message[1024];
	va_list ap;

	if (level >= ZKW_LOG_DEBUG && !zkw__log_verbose)
		return;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	log_line(level, message);
}

void zkw__log_sink(void *ctx, int level, const char *message)
{
	(void)ctx;
	log_line(level, message);
}
