/* SPDX-License-Identifier: Apache-2.0 */
/* fuzz_cli.c - zkw-broker's command-line parser (broker/daemon/cli.c).
 *
 * The input is split at NUL bytes into arguments after "zkw-broker". The
 * parser must never crash or exit, must answer 0 (maybe --help) or -EINVAL
 * (with a reason), and an accepted command line must be one the broker can run:
 * hosts given, 1..64 watches, absolute paths, distinct well-formed segment
 * names, capacities and timeouts in range. Nothing from outside gets through
 * raw: accepted paths and segment names obey zkw_pointer_parse untrimmed, the
 * hosts hold no control byte, the mode no group or other write bit, and a
 * refusal's reason holds no control byte whatever argv held.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/cli.h"
#include "fuzz.h"

#define FUZZ_CLI_MAX_ARGS 128

static void fuzz_cli_check_ok(const zkw_cli *c)
{
	FUZZ_CHECK(c->hosts != NULL, "hosts given");
	FUZZ_CHECK((c->nwatches >= 1 || c->socket_path) && c->nwatches <= c->max_watches,
	           "something to serve, within --max-watches");
	for (int i = 0; i < c->nwatches; i++) {
		const zkw_cli_watch *w = &c->watches[i];
		char again[ZKW_SHM_NAME_MAX + 1];

		char parsed[ZKW_POINTER_MAX];

		FUZZ_CHECK(w->path && w->path[0] == '/', "absolute path");
		FUZZ_CHECK(zkw_pointer_parse(w->path, strlen(w->path), parsed, sizeof(parsed), NULL) ==
		                   (int)strlen(w->path),
		           "path valid for ZooKeeper, untrimmed");
		FUZZ_CHECK(zkw_pointer_parse(w->shm, strlen(w->shm), parsed, sizeof(parsed), NULL) ==
		                   (int)strlen(w->shm),
		           "segment name without control bytes");
		FUZZ_CHECK(w->shm[0] == '/' && strlen(w->shm) <= ZKW_SHM_NAME_MAX, "normalised segment name");
		FUZZ_CHECK(zkw_shm_name(again, sizeof(again), w->shm) == 0 && strcmp(again, w->shm) == 0,
		           "segment name stable under normalisation");
		FUZZ_CHECK(w->capacity >= 1 && w->capacity <= ZKW_CAPACITY_MAX, "capacity in range");
		for (int j = 0; j < i; j++)
			FUZZ_CHECK(strcmp(c->watches[j].shm, w->shm) != 0, "one segment per watch");
	}
	FUZZ_CHECK(c->session.session_timeout_ms >= 1 && c->session.session_timeout_ms <= 3600000,
	           "session timeout");
	FUZZ_CHECK(c->session.init_timeout_ms >= 1 && c->session.init_timeout_ms <= 3600000, "init timeout");
	FUZZ_CHECK(c->session.reconcile_s >= 0 && c->session.reconcile_s <= 86400, "reconcile");
	FUZZ_CHECK(c->segment.mode <= 0777, "mode");
	FUZZ_CHECK((c->segment.mode & 022) == 0, "no group or other write bit");
	for (const char *p = c->hosts; *p; p++)
		FUZZ_CHECK((unsigned char)*p >= 0x20 && *p != 0x7f, "hosts without control bytes");
}

static int fuzz_cli(const uint8_t *data, size_t size)
{
	static zkw_cli cli;
	char *copy = malloc(size + 1);
	char *argv[FUZZ_CLI_MAX_ARGS + 2], *argv2[FUZZ_CLI_MAX_ARGS + 2];
	char why[512];
	int argc = 0, rc;
	bool help;

	if (!copy)
		abort();
	memcpy(copy, data, size);
	copy[size] = '\0';
	argv[argc++] = (char *)"zkw-broker";
	for (char *p = copy; p <= copy + size && argc <= FUZZ_CLI_MAX_ARGS; p += strlen(p) + 1)
		argv[argc++] = p;
	argv[argc] = NULL;
	memcpy(argv2, argv, sizeof(argv)); /* getopt permutes argv: keep the original order */

	rc = zkw__cli_parse(&cli, argc, argv, why, sizeof(why));
	help = cli.help;
	FUZZ_CHECK(rc == 0 || rc == -EINVAL, "documented results");
	if (rc == -EINVAL) {
		FUZZ_CHECK(why[0] != '\0' && memchr(why, 0, sizeof(why)), "a reason for bad usage");
		for (const char *p = why; *p; p++)
			FUZZ_CHECK((unsigned char)*p >= 0x20 && *p != 0x7f, "a reason without control bytes");
	}
	/* --help and --version stop the parse: nothing else is set. */
	if (rc == 0 && !help && !cli.version)
		fuzz_cli_check_ok(&cli);
	zkw__cli_free(&cli);
	/* Parsing twice gives the same answer (getopt state is reset). */
	FUZZ_CHECK(zkw__cli_parse(&cli, argc, argv2, why, sizeof(why)) == rc && cli.help == help,
	           "parse is repeatable");
	zkw__cli_free(&cli);
	free(copy);
	return 0;
}

#ifndef ZKW_FUZZ_REPLAY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_cli(data, size);
}
#endif
