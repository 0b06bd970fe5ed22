/* SPDX-License-Identifier: Apache-2.0 */
/* cli.h - zkw-broker's command line, parsed into a configuration.
 *
 * Kept out of main.c so that it can be unit-tested and fuzzed: it never
 * exits, never prints and never allocates; every string in the result
 * points into argv.
 *
 *     zkw_cli cli;
 *     char why[512];
 *     if (zkw__cli_parse(&cli, argc, argv, why, sizeof(why)) < 0) {
 *             fprintf(stderr, "zkw-broker: %s (try --help)\n", why); return 2; }
 *     if (cli.help) { zkw__cli_usage(stdout); return 0; }
 *
 * Naming: the daemon's functions shared between its .c files (and its
 * tests) are zkw__<module>_*; errors follow zkw/common.h.
 */
#ifndef ZKW_BROKER_CLI_H
#define ZKW_BROKER_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <zkw/client.h>
#include <zkw/watcher.h>

#include "publish/writer.h"

#define ZKW_CLI_MAX_WATCHES 64

/* One watched path and the segment it is published into. */
typedef struct zkw_cli_watch {
	const char *path;
	bool pointer;
	bool ensure;
	char shm[ZKW_SHM_NAME_MAX + 1]; /* normalised ("/name"); never empty after a parse */
	uint64_t capacity;
} zkw_cli_watch;

typedef struct zkw_cli {
	const char *hosts;
	zkw_cli_watch watches[ZKW_CLI_MAX_WATCHES];
	int nwatches;
	zkw_session_options session; /* log left NULL */
	zkw_writer_options segment;  /* capacity, watch_path per watch */
	bool unlink_on_exit;
	bool verbose;
	bool help; /* --help: print zkw__cli_usage(stdout), exit 0; nothing else is set */
} zkw_cli;

/* Parse argv (argv[0] is the program) into *cli, which is fully initialised
 * first (the broker's defaults: valid init on, a session timeout of
 * ZKW_SESSION_TIMEOUT_MS_DEFAULT, a longer init timeout, reconcile
 * ZKW_RECONCILE_S_DEFAULT). 0 (see cli->help), or -EINVAL on bad usage with
 * a one-line reason in why (exit 2). Uses getopt_long (resets optind): not
 * thread-safe.
 *
 * What comes out is safe to create, log and publish: every -f path obeys
 * zkw_pointer_parse's rules untrimmed (as zkw_session_watch demands), and so
 * does every segment name ("/name"); -z holds no control byte; --mode has no
 * group or other write bit. A refusal names the first bad byte by its
 * position, and the reason is escaped with zkw__log_escape (no raw control
 * byte, whatever argv held). */
int zkw__cli_parse(zkw_cli *cli, int argc, char **argv, char *why, size_t whylen);

void zkw__cli_usage(FILE *out);

#endif
