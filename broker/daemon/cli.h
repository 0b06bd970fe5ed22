/* SPDX-License-Identifier: Apache-2.0 */
/* cli.h - zkw-broker's command line, parsed into a configuration.
 *
 * Kept out of main.c so that it can be unit-tested and fuzzed: it never
 * exits and never prints; every string in the result points into argv; the
 * watch and rule arrays are allocated: zkw__cli_free releases them.
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

#include "publish/validate.h"
#include "publish/writer.h"

/* Defaults of the control socket and its policy (docs/design.md, "The
 * control socket"). */
#define ZKW_CLI_SOCKET_MODE       0660
#define ZKW_CLI_MAX_WATCHES       10000
#define ZKW_CLI_MAX_PEER_SUBS     256
#define ZKW_CLI_MAX_CONNECTIONS   1024
#define ZKW_CLI_LINGER_S          600
#define ZKW_CLI_SUBSCRIBE_TIMEOUT 5000 /* ms */
/* The state directory (docs/design.md, "The state directory"): --state-dir,
 * else $ZKW_STATE_DIR, else this (the unit's StateDirectory=); "none" = no
 * disk cache. */
#define ZKW_CLI_STATE_DIR     "/var/lib/zkw"
#define ZKW_CLI_STATE_DIR_ENV "ZKW_STATE_DIR"

/* Which of a watch's validation rules it was given itself (the others come
 * from the broker's defaults). */
#define ZKW_CLI_RULE_FORMAT 0x1u
#define ZKW_CLI_RULE_EMPTY  0x2u
#define ZKW_CLI_RULE_SHRINK 0x4u

/* One watched path and the segment it is published into. */
typedef struct zkw_cli_watch {
	const char *path;
	bool pointer;
	bool bundle; /* the node's children as one snapshot; never with pointer */
	bool ensure;
	char shm[ZKW_SHM_NAME_MAX + 1]; /* normalised ("/name"); never empty after a parse */
	uint64_t capacity;              /* never 0 after a parse */
	mode_t mode;                    /* [watch] mode; 0 = the broker's (--mode) */
	bool group_set;                 /* [watch] group, else the broker's (--group) */
	gid_t group;
	zkw_validate_rules rules; /* what content may be published (complete after a parse) */
	unsigned rules_set;       /* ZKW_CLI_RULE_*: given for this watch (before the parse completes it) */
	/* From the configuration file: its [watch LABEL] and line. */
	bool from_file;
	const char *label;
	int line;
} zkw_cli_watch;

/* One --allow / --allow-ensure rule. */
typedef enum { ZKW_RULE_ANY, ZKW_RULE_UID, ZKW_RULE_GID } zkw_rule_kind;
typedef struct zkw_cli_rule {
	zkw_rule_kind kind;
	uint32_t id;        /* uid or gid (names resolved at parse time) */
	bool ensure;        /* --allow-ensure */
	const char *prefix; /* absolute path, whole components */
	const char *text;   /* the rule as given, for refusals ("gid:100=/app") */
} zkw_cli_rule;

typedef struct zkw_cli {
	const char *hosts;
	const char *config_path; /* --config FILE, NULL = none */
	zkw_cli_watch *watches;  /* the file's, then the command line's -f, in order */
	int nwatches, watches_cap;
	int cli_first_watch;       /* watches[cli_first_watch..] came from -f */
	uint64_t default_capacity; /* [broker] capacity / --capacity before -f; 0 = ZKW_DEFAULT_CAPACITY */
	zkw_cli_watch demand;      /* what a watch added on demand starts from (capacity, rules) */
	const char *state_dir;     /* NULL = none */
	char **owned;              /* strings read from the file */
	int nowned, owned_cap;
	/* The control socket: path, or NULL for none (--socket none). */
	const char *socket_path;
	mode_t socket_mode;
	gid_t socket_group; /* (gid_t)-1 = the broker's */
	zkw_cli_rule *rules;
	int nrules, rules_cap;
	int max_watches, max_peer_subscriptions, max_connections;
	int linger_s, subscribe_timeout_ms;
	zkw_session_options session; /* log left NULL */
	zkw_writer_options segment;  /* capacity, watch_path per watch */
	bool unlink_on_exit;
	bool verbose;
	bool help;         /* --help: print zkw__cli_usage(stdout), exit 0; nothing else is set */
	bool version;      /* --version: print ZKW_VERSION, exit 0; nothing else is set */
	bool check_config; /* --check-config: print zkw__cli_print, exit 0 */
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

/* A copy of text that lives as long as cli (NULL for NULL, or when out of
 * memory). */
const char *zkw__cli_keep(zkw_cli *cli, const char *text);

/* The effective configuration, in the configuration file's format (what
 * --check-config prints). */
void zkw__cli_print(FILE *out, const zkw_cli *cli);

bool zkw__cli_same_rules(const zkw_validate_rules *a, const zkw_validate_rules *b);

/* Release what zkw__cli_parse allocated: call it after every parse, failed
 * or not (and it may be called twice). */
void zkw__cli_free(zkw_cli *cli);

#endif
