/* SPDX-License-Identifier: Apache-2.0 */
/* zkw_opt.c - command lines from one spec string (see zkw_opt.h). */
#include "zkw_opt.h"

#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>

int zkw_parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	if (!s)
		return -EINVAL;
	errno = 0;
	v = strtol(s, &end, 10);
	if (end == s || *end)
		return -EINVAL;
	if (errno == ERANGE || v < min || v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

void zkw_opt_init(struct zkw_opt *o, int argc, char **argv, const char *prog, const char *spec,
                  void (*usage)(FILE *out))
{
	*o = (struct zkw_opt){
	        .argc = argc, .argv = argv, .prog = prog, .spec = spec, .usage = usage, .index = optind};
}

/* One spec item, len bytes at s: "K", "K|name" or "K=name", then ':' when
 * it takes an argument. */
static int add_item(struct zkw_opt *o, const char *s, size_t len)
{
	bool arg = len > 1 && s[len - 1] == ':';
	size_t name_len = len - arg > 2 ? len - arg - 2 : 0;
	char *sp = o->shortopts + strlen(o->shortopts);

	if (o->n == ZKW_OPT_MAX || s[0] == ':' || s[0] == '|' || s[0] == '=' || s[0] == ' ')
		return -EINVAL;
	if (len - arg != 1 && (name_len == 0 || (s[1] != '|' && s[1] != '=')))
		return -EINVAL;
	if (name_len >= ZKW_OPT_NAME_MAX)
		return -EINVAL;
	o->item[o->n].key = (unsigned char)s[0];
	o->item[o->n].has_short = len - arg == 1 || s[1] == '|';
	memcpy(o->item[o->n].name, s + 2, name_len);
	o->item[o->n].name[name_len] = '\0';
	if (o->item[o->n].has_short) {
		*sp++ = s[0];
		if (arg)
			*sp = ':';
	}
	if (name_len) {
		struct option *lo = o->longopts;

		while (lo->name)
			lo++;
		*lo = (struct option){o->item[o->n].name, arg ? required_argument : no_argument, NULL, s[0]};
	}
	o->n++;
	return 0;
}

static int build(struct zkw_opt *o)
{
	const char *s = o->spec;

	while (*(s += strspn(s, " "))) {
		size_t len = strcspn(s, " ");

		if (add_item(o, s, len) < 0)
			return -EINVAL;
		s += len;
	}
	o->ready = true;
	return 0;
}

static int item_of(const struct zkw_opt *o, int key)
{
	for (int i = 0; i < o->n; i++)
		if (o->item[i].key == key)
			return i;
	return -1;
}

int zkw_opt_next(struct zkw_opt *o)
{
	int c, i;

	if (!o->ready && build(o) < 0) {
		fprintf(stderr, "%s: malformed option spec \"%s\"\n", o->prog, o->spec);
		return ZKW_OPT_ERROR;
	}
	c = getopt_long(o->argc, o->argv, o->shortopts, o->longopts, NULL);
	o->key = c;
	o->arg = c == -1 ? NULL : optarg;
	o->index = optind;
	if (c == '?') {
		o->usage(stderr);
		return ZKW_OPT_ERROR;
	}
	if (c != -1 && (i = item_of(o, c)) >= 0 && !strcmp(o->item[i].name, "help")) {
		o->usage(stdout);
		exit(0);
	}
	return c;
}

/* The option as a user would name it in a message: "-s" or "--timeout". */
static void label(const struct zkw_opt *o, char *buf, size_t cap)
{
	int i = item_of(o, o->key);

	if (i < 0 || o->item[i].has_short)
		snprintf(buf, cap, "-%c", o->key);
	else
		snprintf(buf, cap, "--%s", o->item[i].name);
}

int zkw_opt_long(struct zkw_opt *o, const char *what, long min, long max, long *out)
{
	char opt[ZKW_OPT_NAME_MAX + 2];

	if (zkw_parse_long(o->arg, min, max, out) == 0)
		return 0;
	label(o, opt, sizeof(opt));
	fprintf(stderr, "%s: %s wants %s, not \"%s\"\n", o->prog, opt, what, o->arg ? o->arg : "");
	return -EINVAL;
}

int zkw_opt_int(struct zkw_opt *o, const char *what, int min, int max, int *out)
{
	long v;
	int err = zkw_opt_long(o, what, min, max, &v);

	if (!err)
		*out = (int)v;
	return err;
}

int zkw_opt_no_operands(struct zkw_opt *o)
{
	if (o->index >= o->argc)
		return 0;
	fprintf(stderr, "%s: unexpected argument \"%s\"\n", o->prog, o->argv[o->index]);
	return -EINVAL;
}

int zkw_opt_uid(struct zkw_opt *o, uid_t *out)
{
	char opt[ZKW_OPT_NAME_MAX + 2];
	const char *why = "no such user";
	struct passwd *pw;
	long v;
	int err = zkw_parse_long(o->arg, 0, (long)(uid_t)-2, &v);

	if (err == 0) {
		*out = (uid_t)v;
		return 0;
	}
	if (err == -ERANGE) {
		why = "out of range";
	} else if (o->arg && o->arg[0]) {
		pw = getpwnam(o->arg);
		if (pw) {
			*out = pw->pw_uid;
			return 0;
		}
	}
	label(o, opt, sizeof(opt));
	fprintf(stderr, "%s: %s wants a user name or uid, not \"%s\" (%s)\n", o->prog, opt,
	        o->arg ? o->arg : "", why);
	return -EINVAL;
}
