/* cli.h - zkw-broker's command line, parsed into a configuration.
 *
 * Kept out of main.c so that it can be unit-tested and fuzzed: it never
 * exits, never prints and never allocates; every string in the result
 * points into argv.
 *
 *     zkw_cli cli;
 *     char why[512];
 *     int rc = zkw_cli_parse(&cli, argc, argv, why, sizeof(why));
 *     if (rc == ZKW_CLI_HELP) { zkw_cli_usage(stdout); return 0; }
 *     if (rc) { fprintf(stderr, "zkw-broker: %s (try --help)\n", why); return 2; }
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

/* zkw_cli_parse results. */
#define ZKW_CLI_OK    0
#define ZKW_CLI_HELP  1 /* --help: print zkw_cli_usage(stdout), exit 0 */
#define ZKW_CLI_USAGE 2 /* bad usage: `why` says what; exit 2 */

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
	zkw_session_options session; /* log, errbuf left NULL */
	zkw_writer_options segment;  /* capacity, watch_path per watch */
	bool unlink_on_exit;
	bool verbose;
} zkw_cli;

/* Parse argv (argv[0] is the program) into *cli, which is fully initialised
 * first (the broker's defaults: valid init on, 10 s timeouts, reconcile
 * 60 s). ZKW_CLI_OK, ZKW_CLI_HELP or ZKW_CLI_USAGE with a one-line reason
 * in why. Uses getopt_long (resets optind): not thread-safe. */
int zkw_cli_parse(zkw_cli *cli, int argc, char **argv, char *why, size_t whylen);

void zkw_cli_usage(FILE *out);

#endif
