/* SPDX-License-Identifier: Apache-2.0 */
/* notify.c - sd_notify through a libsystemd loaded on demand (notify.h). */
#include "notify.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"

#define LIBSYSTEMD "libsystemd.so.0"

static int (*notify_fn)(int unset_environment, const char *state);
static int (*watchdog_fn)(int unset_environment, uint64_t *usec);

/* Only the main thread notifies: no lock. */
static bool load(void)
{
	static bool tried;
	void *h;

	if (tried)
		return notify_fn != NULL;
	tried = true;
	if (!getenv("NOTIFY_SOCKET"))
		return false;
	h = dlopen(LIBSYSTEMD, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		zkw__log_printf(ZKW_LOG_WARN, "NOTIFY_SOCKET is set but %s cannot be loaded (%s): systemd is not told",
		                LIBSYSTEMD, dlerror());
		return false;
	}
	*(void **)&notify_fn = dlsym(h, "sd_notify");
	*(void **)&watchdog_fn = dlsym(h, "sd_watchdog_enabled");
	if (!notify_fn || !watchdog_fn) {
		zkw__log_printf(ZKW_LOG_WARN, "%s lacks sd_notify: systemd is not told", LIBSYSTEMD);
		notify_fn = NULL;
		watchdog_fn = NULL;
	}
	return notify_fn != NULL;
}

void zkw__notify(const char *fmt, ...)
{
	char state[1024];
	va_list ap;

	if (!load())
		return;
	va_start(ap, fmt);
	vsnprintf(state, sizeof(state), fmt, ap);
	va_end(ap);
	notify_fn(0, state);
}

uint64_t zkw__notify_watchdog_usec(void)
{
	uint64_t usec = 0;

	if (!load() || watchdog_fn(0, &usec) <= 0)
		return 0;
	return usec;
}
