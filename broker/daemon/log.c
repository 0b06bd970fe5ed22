/* SPDX-License-Identifier: Apache-2.0 */
/* log.c - the broker's log: "2026-11-25T04:05:06.789Z zkw-broker[42] info: ..." */
#include "log.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <zkw_clock.h>
#include <zkw_text.h>

bool zkw__log_verbose;

/* The longest message escaped whole: the watch library's messages are cut
 * at 1536 bytes, and each byte takes at most 4 when escaped. */
#define LOG_ESCAPED_MAX (4 * 2048 + 1)

static const char *level_name(int level)
{
	switch (level) {
	case ZKW_LOG_ERROR: return "error";
	case ZKW_LOG_WARN: return "warning";
	case ZKW_LOG_INFO: return "info";
	default: return "debug";
	}
}

size_t zkw__log_escape(char *dst, size_t cap, const void *src, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = src;
	size_t i = 0, o = 0;

	if (!cap)
		return 0;
	while (i < len) {
		unsigned char c = p[i];
		char esc[4];
		const char *piece = (const char *)p + i;
		size_t n = 1, step = 1;

		if (c == '\\') {
			piece = "\\\\";
			n = 2;
		} else if (c >= 0x80 && (step = zkw_text_shown(p + i, len - i)) != 0) {
			n = step;
		} else if (c < 0x20 || c >= 0x7f) {
			esc[0] = '\\';
			esc[1] = 'x';
			esc[2] = hex[c >> 4];
			esc[3] = hex[c & 0xf];
			piece = esc;
			n = 4;
			step = 1;
		}
		if (o + n >= cap)
			break; /* no room for the whole piece and the NUL */
		memcpy(dst + o, piece, n);
		o += n;
		i += step;
	}
	dst[o] = '\0';
	return o;
}

/* stderr is the journal's stream (systemd sets JOURNAL_STREAM to its
 * device:inode): lines then carry sd-daemon priority prefixes ("<3>") and
 * no timestamp or pid of our own, which the journal records itself. Any
 * other stderr (a terminal, a file, a pipe) gets the full line. */
static int journal_stream = -1; /* -1 = not decided yet */

static bool to_journal(void)
{
	int j = __atomic_load_n(&journal_stream, __ATOMIC_RELAXED);

	if (j < 0) {
		const char *v = getenv("JOURNAL_STREAM");
		unsigned long long dev, ino;
		struct stat st;

		j = v && sscanf(v, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
		    (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
		__atomic_store_n(&journal_stream, j, __ATOMIC_RELAXED);
	}
	return j == 1;
}

/* sd-daemon(3) priorities: LOG_ERR 3, LOG_WARNING 4, LOG_INFO 6, LOG_DEBUG 7. */
static int journal_priority(int level)
{
	switch (level) {
	case ZKW_LOG_ERROR: return 3;
	case ZKW_LOG_WARN: return 4;
	case ZKW_LOG_INFO: return 6;
	default: return 7;
	}
}

static void log_line(int level, const char *message)
{
	struct timespec ts;
	struct tm tm;
	char stamp[32], escaped[LOG_ESCAPED_MAX];

	if (level >= ZKW_LOG_DEBUG && !zkw__log_verbose)
		return;
	/* Every line whole, whatever its parts: our own text is plain, so
	 * escaping the line escapes exactly what came from outside. */
	zkw__log_escape(escaped, sizeof(escaped), message, strlen(message));
	if (to_journal()) {
		fprintf(stderr, "<%d>%s: %s\n", journal_priority(level), level_name(level), escaped);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	/* One fprintf per line: stdio locks the stream, so lines from the
	 * watcher's threads never interleave. */
	fprintf(stderr, "%s.%03ldZ zkw-broker[%ld] %s: %s\n", stamp, ts.tv_nsec / 1000000L, (long)getpid(),
	        level_name(level), escaped);
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

/* ---- rate limits -------------------------------------------------------- */

/* From when the next line may be logged. */
static int64_t limit_allowed_ms(const zkw__log_limit *l)
{
	int64_t burst = l->burst ? l->burst : 1;

	return l->tat_ms - (burst - 1) * ZKW_LOG_LIMIT_MS;
}

/* A line is logged now: report the count and spend one line's allowance. */
static bool limit_take(zkw__log_limit *l, int64_t now_ms, unsigned *missed)
{
	*missed = l->suppressed;
	l->suppressed = 0;
	l->tat_ms = (l->tat_ms > now_ms ? l->tat_ms : now_ms) + ZKW_LOG_LIMIT_MS;
	return true;
}

bool zkw__log_limit_event(zkw__log_limit *l, int64_t now_ms, unsigned *missed)
{
	if (now_ms >= limit_allowed_ms(l))
		return limit_take(l, now_ms, missed);
	if (l->suppressed < UINT_MAX)
		l->suppressed++;
	*missed = 0;
	return false;
}

bool zkw__log_limit_flush(zkw__log_limit *l, int64_t now_ms, unsigned *missed)
{
	if (l->suppressed && now_ms >= limit_allowed_ms(l))
		return limit_take(l, now_ms, missed);
	*missed = 0;
	return false;
}

int64_t zkw__log_limit_due(const zkw__log_limit *l)
{
	return l->suppressed ? limit_allowed_ms(l) : INT64_MAX;
}
