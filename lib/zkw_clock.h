/* zkw_clock.h - the clocks of zkw's broker, tools and tests, in one place.
 *
 * Header-only and internal (never installed): nanoseconds and milliseconds
 * of a clock, an absolute deadline "ms from now" for pthread_cond_timedwait
 * (on a CLOCK_MONOTONIC condition variable) or FUTEX_WAIT_BITSET, and the
 * milliseconds left until such a deadline.
 *
 *     struct timespec dl = zkw_clock_deadline_ms(CLOCK_MONOTONIC, 5000);
 *     while (!done)
 *             if (pthread_cond_timedwait(&cond, &lock, &dl) == ETIMEDOUT)
 *                     break;
 */
#ifndef ZKW_LIB_CLOCK_H
#define ZKW_LIB_CLOCK_H

#include <errno.h>
#include <stdint.h>
#include <time.h>

static inline uint64_t zkw_clock_ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Milliseconds of CLOCK_MONOTONIC: the clock of every timeout. */
static inline int64_t zkw_clock_mono_ms(void)
{
	return (int64_t)(zkw_clock_ns(CLOCK_MONOTONIC) / 1000000u);
}

static inline struct timespec zkw_clock_timespec(uint64_t ns)
{
	struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u), .tv_nsec = (long)(ns % 1000000000u)};

	return ts;
}

/* The absolute time ms milliseconds from now on clock (ms < 0 counts as 0). */
static inline struct timespec zkw_clock_deadline_ms(clockid_t clock, int64_t ms)
{
	return zkw_clock_timespec(zkw_clock_ns(clock) + (uint64_t)(ms > 0 ? ms : 0) * 1000000u);
}

/* Milliseconds from now until the CLOCK_MONOTONIC time deadline_ms (as
 * zkw_clock_mono_ms() counts), never negative. */
static inline int64_t zkw_clock_ms_left(int64_t deadline_ms)
{
	int64_t left = deadline_ms - zkw_clock_mono_ms();

	return left > 0 ? left : 0;
}

/* Sleep ms milliseconds, resumed across signals. Only where no event can
 * be awaited (pacing a writer, a backoff). */
static inline void zkw_clock_sleep_ms(int64_t ms)
{
	struct timespec ts = zkw_clock_timespec((uint64_t)(ms > 0 ? ms : 0) * 1000000u);

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

#endif /* ZKW_LIB_CLOCK_H */
