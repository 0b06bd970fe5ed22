/* SPDX-License-Identifier: Apache-2.0 */
/* notify.h - the broker's word to systemd: libsystemd's sd_notify(3), loaded
 * only when the service manager asked for notifications ($NOTIFY_SOCKET).
 *
 * A broker started by hand never maps libsystemd (nor the compression and
 * crypto libraries it pulls in): about 1 MiB of RSS and 0.4 MiB of PSS per
 * broker, which the memory side of `make bench` counts. Under systemd it is
 * the library's own sd_notify that speaks, as the unit's Type=notify
 * expects. */
#ifndef ZKW_BROKER_NOTIFY_H
#define ZKW_BROKER_NOTIFY_H

#include <stdint.h>

/* sd_notifyf(0, fmt, ...) when $NOTIFY_SOCKET is set; nothing otherwise
 * (also when libsystemd cannot be loaded: said once in the log). */
void zkw__notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* sd_watchdog_enabled(0, &usec): the watchdog period in microseconds, 0 =
 * none. */
uint64_t zkw__notify_watchdog_usec(void);

#endif
