/* SPDX-License-Identifier: Apache-2.0 */
/* zkw_clock.h - the clocks of zkw's broker, tools, tests and benchmarks, in
 * one place.
 *
 * Header-only and internal (never installed): nanoseconds and milliseconds
 * of a clock, an absolute deadline "ms from now" for pthread_cond_timedwait
 * (on a condition variable made by zkw_clock_cond_init: CLOCK_MONOTONIC),
 * sem_clockwait or FUTEX_WAIT_BITSET, the milliseconds left until such a
 * deadline, and sleeps (relative, or until an absolute CLOCK_MONOTONIC time).
 * Inline on purpose: the benchmarks stamp their samples with
 * zkw_clock_mono_ns() and pace their writers with zkw_clock_sleep_until_ns(),
 * so neither may cost a call more than clock_gettime itself.
 *
 *     struct timespec dl = zkw_clock_deadline_ms(CLOCK_MONOTONIC, 5000);
 *     while (!done)
 *             if (pthread_cond_timedwait(&cond, &lock, &dl) == ETIMEDOUT)
 *                     break;
 */
#ifndef ZKW_LIB_CLOCK_H
#define ZKW_LIB_CLOCK_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

static inline uint64_t zkw_clock_ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Nanoseconds and milliseconds of CLOCK_MONOTONIC: the clock of every
 * timeout and of every measurement. */
static inline uint64_t zkw_clock_mono_ns(void)
{
	return zkw_clock_ns(CLOCK_MONOTONIC);
}

static inline int64_t zkw_clock_mono_ms(void)
{
	return (int64_t)(zkw_clock_mono_ns() / 1000000u);
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

/* A condition variable whose timed waits take CLOCK_MONOTONIC deadlines
 * (zkw_clock_deadline_ms(CLOCK_MONOTONIC, ...)). 0 or -errno. */
static inline int zkw_clock_cond_init(pthread_cond_t *cond)
{
	pthread_condattr_t attr;
	int err = pthread_condattr_init(&attr);

	if (err)
		return -err;
	err = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	if (!err)
		err = pthread_cond_init(cond, &attr);
	pthread_condattr_destroy(&attr);
	return -err;
}

/* Sleep ns nanoseconds, resumed across signals. Only where no event can
 * be awaited (pacing a writer, a backoff). */
static inline void zkw_clock_sleep_ns(uint64_t ns)
{
	struct timespec ts = zkw_clock_timespec(ns);

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static inline void zkw_clock_sleep_ms(int64_t ms)
{
	zkw_clock_sleep_ns((uint64_t)(ms > 0 ? ms : 0) * 1000000u);
}

/* Sleep until the CLOCK_MONOTONIC time at_ns (as zkw_clock_mono_ns()
 * counts): pacing on absolute times does not drift. */
static inline void zkw_clock_sleep_until_ns(uint64_t at_ns)
{
	struct timespec ts = zkw_clock_timespec(at_ns);

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

#endif /* ZKW_LIB_CLOCK_H */
