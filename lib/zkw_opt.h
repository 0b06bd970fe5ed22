/* SPDX-License-Identifier: Apache-2.0 */
/* zkw_opt.h - the command lines of zkw's tools and benchmarks: options
 * stated once, strict numbers, and the usage conventions, in one place.
 *
 * A program states its options once, in a spec string of space-separated
 * items (getopt_long's short-option string and option table both follow
 * from it):
 *
 *     "f|file:"     -f and --file, with an argument; key 'f'
 *     "w|wipe"      -w and --wipe, without one
 *     "T=timeout:"  --timeout only, with an argument; key 'T' (no -T)
 *     "h|help"      the long name "help": the usage on stdout, then exit(0)
 *
 * and walks argv with zkw_opt_next(), which returns each option's key
 * (getopt_long underneath: GNU argument order, unambiguous abbreviations,
 * "--"). An unknown option or a missing argument: getopt's message, the
 * usage on stderr, and ZKW_OPT_ERROR. Numbers are taken whole and in range:
 * zkw_opt_int() says `PROG: OPT wants WHAT, not "ARG"` on stderr otherwise.
 *
 *     struct zkw_opt o;
 *     zkw_opt_init(&o, argc, argv, "zkw-push", "f|file: T=timeout: h|help", usage);
 *     while ((c = zkw_opt_next(&o)) != -1)
 *             switch (c) {
 *             case 'f': file = o.arg; break;
 *             case 'T':
 *                     if (zkw_opt_int(&o, "a positive number of ms", 1, INT_MAX, &ms))
 *                             return 2;
 *                     break;
 *             default: return 2; // ZKW_OPT_ERROR: already reported
 *             }
 *     if (zkw_opt_no_operands(&o))
 *             return 2;
 */
#ifndef ZKW_LIB_OPT_H
#define ZKW_LIB_OPT_H

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>

#define ZKW_OPT_MAX      24  /* options in a spec */
#define ZKW_OPT_NAME_MAX 24  /* bytes of a long name, with its NUL */
#define ZKW_OPT_ERROR    '?' /* zkw_opt_next: bad command line, reported */

struct zkw_opt {
	int argc;
	char **argv;
	const char *prog; /* for messages: "zkw-push" */
	const char *spec;
	void (*usage)(FILE *out);
	/* After zkw_opt_next: the option's key and argument (NULL without),
	 * and the index of the next argv element (the first operand once
	 * zkw_opt_next has returned -1). */
	int key;
	const char *arg;
	int index;
	/* What the spec says, and getopt_long's tables of it. */
	bool ready;
	int n;
	struct {
		int key;
		bool has_short; /* -K works (else --name only) */
		char name[ZKW_OPT_NAME_MAX];
	} item[ZKW_OPT_MAX];
	struct option longopts[ZKW_OPT_MAX + 1];
	char shortopts[2 * ZKW_OPT_MAX + 1];
};

void zkw_opt_init(struct zkw_opt *o, int argc, char **argv, const char *prog, const char *spec,
                  void (*usage)(FILE *out));
/* The next option's key; -1 after the last option; ZKW_OPT_ERROR after an
 * unknown option, a missing argument or a malformed spec (reported). */
int zkw_opt_next(struct zkw_opt *o);

/* The current option's argument as a whole decimal number in [min, max].
 * 0, or -EINVAL after saying why on stderr. */
int zkw_opt_int(struct zkw_opt *o, const char *what, int min, int max, int *out);
int zkw_opt_long(struct zkw_opt *o, const char *what, long min, long max, long *out);

/* 0 when argv holds no operand after the options; else -EINVAL after
 * `PROG: unexpected argument "ARG"` on stderr. */
int zkw_opt_no_operands(struct zkw_opt *o);

/* The current option's argument as a user: a uid (whole decimal number
 * below (uid_t)-1) or a user name known to getpwnam(). 0, or -EINVAL after
 * `PROG: OPT wants a user name or uid, not "ARG"` (with the reason) on
 * stderr. */
int zkw_opt_uid(struct zkw_opt *o, uid_t *out);

/* The strict number parser underneath: s whole (strtol's leading blanks and
 * sign allowed, nothing after), base 10, within [min, max]. 0 and *out, or
 * -EINVAL (not a number) / -ERANGE (out of range). */
int zkw_parse_long(const char *s, long min, long max, long *out);

#endif
