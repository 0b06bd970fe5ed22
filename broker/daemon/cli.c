/* SPDX-License-Identifier: Apache-2.0 */
/* cli.c - zkw-broker's command line (see cli.h). */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>
#include <strings.h>

#include "log.h"
#include "zkw_zk.h"
#include "zkw_auth.h"

/* How long the broker waits for a first ZooKeeper server at start (valid
 * init): longer than a library user's ZKW_INIT_TIMEOUT_MS_DEFAULT, since a
 * broker often starts together with its ensemble. */
#define BROKER_INIT_TIMEOUT_MS 10000

void zkw__cli_usage(FILE *out)
{
	fprintf(out,
	        "usage: zkw-broker -z HOSTS [-f PATH [watch options]]... [options]\n"
	        "Watch ZooKeeper nodes over one session and publish each into shared memory;\n"
	        "workers subscribe to more through the control socket.\n"
	        "\n"
	        "  -z, --zookeeper HOSTS     connect string: host:port[,host:port...][/chroot]\n"
	        "  -f, --file PATH           a node to watch for good; repeat for several watches\n"
	        "watch options (apply to the preceding -f; before any -f, to every watch):\n"
	        "  -p, --pointer             the node holds the path of the node to watch\n"
	        "      --bundle              publish the node's children (names and data) as one\n"
	        "                            consistent snapshot (not with -p)\n"
	        "      --ensure              create the node (and parents) empty if missing\n"
	        "      --shm NAME            segment name (default zkw + PATH with '/' -> '.')\n"
	        "      --capacity BYTES      largest content; segments start at 8k and grow to it\n"
	        "                            (k and m suffixes allowed; default 1m)\n"
	        "      --validate FORMAT     publish only content that parses: json, yaml or none\n"
	        "      --reject-empty        never publish empty content\n"
	        "      --max-shrink PERCENT  never publish content shorter by more than PERCENT\n"
	        "                            of the last good one\n"
	        "options:\n"
	        "      --no-valid-init       start even when ZooKeeper does not answer; retry\n"
	        "      --init-timeout MS     with valid init: give up after MS (default %d)\n"
	        "      --session-timeout MS  ZooKeeper session timeout (default %d)\n"
	        "      --reconcile SECONDS   re-check every watch this often, jittered (default %d; 0 off)\n"
	        "      --reconcile-rate N    at most N re-check requests a second, spread evenly; a\n"
	        "                            longer round when the watches need it (default %d)\n"
	        "      --reconnect-max MS    after an outage longer than the session timeout, wait at\n"
	        "                            most MS between new sessions (default %d)\n"
	        "      --auth-file FILE      ZooKeeper credentials, a line 'digest USER:PASSWORD' each,\n"
	        "                            for every session; FILE must be the broker's, mode 0600\n"
	        "      --acl SPEC            ACL of the nodes --ensure creates: SCHEME:ID:PERMS,...\n"
	        "                            (default " ZKW_ACL_DEFAULT_AUTH " with --auth-file,\n"
	        "                            else " ZKW_ACL_DEFAULT_OPEN ", with a warning)\n"
	        "      --mode MODE           octal segment mode, no group/other write (default 0640)\n"
	        "      --group GROUP         segment group, name or gid\n"
	        "      --unlink-on-exit      remove the segments when stopping\n"
	        "      --state-dir DIR|none  keep each watch's last good content there, for a start\n"
	        "                            without ZooKeeper (default $ZKW_STATE_DIR, else %s)\n"
	        "control socket (docs/design.md, \"The control socket\"):\n"
	        "      --socket PATH|none    listen there (default $ZKW_SOCKET, else %s)\n"
	        "      --socket-mode MODE    octal mode of the socket (default %04o)\n"
	        "      --socket-group GROUP  group of the socket, name or gid\n"
	        "      --allow SUBJECT=PREFIX\n"
	        "                            SUBJECT (uid:N user:NAME gid:N group:NAME any) may\n"
	        "                            subscribe to PREFIX and below; without any rule, all may\n"
	        "      --allow-ensure SUBJECT=PREFIX  the same, and may ask ensure (without any\n"
	        "                            rule, only root and the broker's own uid may)\n"
	        "      --max-watches N       watches in all, -f included (default %d)\n"
	        "      --max-peer-subscriptions N  per uid, over its connections (default %d)\n"
	        "      --max-connections N   open connections (default %d)\n"
	        "      --linger SECONDS      keep a watch added on demand this long after its last\n"
	        "                            subscriber left (default %d)\n"
	        "      --subscribe-timeout MS  answer a subscription after at most MS even when\n"
	        "                            ZooKeeper has not answered yet (default %d)\n"
	        "  -c, --config FILE         read the configuration file FILE (see zkw-broker.conf(5));\n"
	        "                            the command line overrides it\n"
	        "      --check-config        check the configuration, print it as it would run, exit\n"
	        "  -v, --verbose             log ZooKeeper client details too\n"
	        "  -V, --version             print the version\n"
	        "  -h, --help                this help\n",
	        BROKER_INIT_TIMEOUT_MS, ZKW_SESSION_TIMEOUT_MS_DEFAULT, ZKW_RECONCILE_S_DEFAULT,
	        ZKW_RECONCILE_RATE_DEFAULT, ZKW_RECONNECT_MAX_MS_DEFAULT, ZKW_CLI_STATE_DIR, ZKW_SOCKET_DEFAULT, ZKW_CLI_SOCKET_MODE, ZKW_CLI_MAX_WATCHES,
	        ZKW_CLI_MAX_PEER_SUBS, ZKW_CLI_MAX_CONNECTIONS, ZKW_CLI_LINGER_S, ZKW_CLI_SUBSCRIBE_TIMEOUT);
}

struct cli_why {
	char *buf;
	size_t len;
};

/* -EINVAL with the reason in why, escaped as the log escapes its lines
 * (zkw__log_escape): reasons quote argv, which may hold any byte, and the
 * broker prints them on a terminal or into a journal. */
static int bad_usage(struct cli_why *why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad_usage(struct cli_why *why, const char *fmt, ...)
{
	char raw[2048];
	va_list ap;

	if (!why->buf || !why->len)
		return -EINVAL;
	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	zkw__log_escape(why->buf, why->len, raw, strlen(raw));
	return -EINVAL;
}

/* zkw_pointer_parse's answer for "/" + the first n bytes of comp + tail:
 * the length it keeps, or -errno. */
static int probe_path(const char *comp, size_t n, const char *tail)
{
	char probe[ZKW_POINTER_MAX + 2], out[ZKW_POINTER_MAX];
	size_t tn = strlen(tail);

	if (n + tn + 1 >= sizeof(probe))
		return -ENAMETOOLONG;
	probe[0] = '/';
	memcpy(probe + 1, comp, n);
	memcpy(probe + 1 + n, tail, tn);
	return zkw_pointer_parse(probe, n + tn + 1, out, sizeof(out), NULL);
}

/* Is "/" + comp[0..n) + "x" a path, as given? */
static bool probe_prefix(const char *comp, size_t n)
{
	return probe_path(comp, n, "x") == (int)n + 2;
}

/* Where in an absolute path (len bytes, known to be refused by
 * zkw_pointer_parse) the parser's complaint lies: the first component it
 * refuses, and in it the first byte after the longest prefix it accepts.
 * The parser stays the one judge of what a path may hold. A component is
 * refused when "/" + it is (its trailing blanks trimmed: inside a path they
 * are followed by more) or "/" + it + "x" is (a control byte at its end);
 * in it the parser is asked about "/" + a prefix + "x" (the "x" keeps a
 * prefix from ending in a trimmed blank or being "." or ".."). A component
 * refused only as a whole ("." or "..") is pointed at from its start, an
 * empty one at its '/'. len when nothing is found. */
static size_t path_bad_byte(const char *path, size_t len)
{
	size_t comp = 1;

	while (comp <= len) {
		const char *slash = memchr(path + comp, '/', len - comp);
		size_t stop = slash ? (size_t)(slash - path) : len, n = stop - comp, k;

		if (n == 0)
			return comp == len ? len - 1 : comp; /* trailing '/', or the second of "//" */
		if (probe_path(path + comp, n, "") < 0 || !probe_prefix(path + comp, n)) {
			if (probe_prefix(path + comp, n))
				return comp; /* "." or "..": the whole component */
			for (k = n; k-- > 0;)
				if (probe_prefix(path + comp, k))
					return comp + k;
			return comp;
		}
		comp = stop + 1;
	}
	return len;
}

/* A path the watch library will take as given (zkw_session_watch applies the
 * pointer rules untrimmed), or -EINVAL naming the first bad byte. what is
 * the option ("-f"), for the message. */
static int check_path(const char *what, const char *path, struct cli_why *why)
{
	char out[ZKW_POINTER_MAX];
	const char *reason = "";
	size_t len = strlen(path), bad;
	int rc;

	if (path[0] != '/')
		return bad_usage(why, "%s %s: the path must be absolute (start with '/')", what, path);
	rc = zkw_pointer_parse(path, len, out, sizeof(out), &reason);
	if (rc >= 0 && (size_t)rc == len)
		return 0;
	if (rc == -ENAMETOOLONG)
		return bad_usage(why, "%s %.40s...: path too long (%zu bytes, at most %d)", what, path, len,
		                 ZKW_POINTER_MAX - 1);
	if (len == 1)
		return bad_usage(why, "%s %s: %s", what, path, reason);
	if (rc >= 0) {
		/* Accepted only once trimmed: what follows the path is blank. */
		bad = (size_t)rc;
		reason = path[bad] == ' ' ? "trailing space" : "control character in path";
	} else {
		bad = path_bad_byte(path, len);
	}
	if (bad >= len)
		return bad_usage(why, "%s %s: %s", what, path, reason);
	return bad_usage(why, "%s %s: %s at byte %zu ('%c')", what, path, reason, bad + 1, path[bad]);
}

/* A connect string the ZooKeeper client will take (lib/zkw_zk's rules,
 * which zkw-push applies too), and a chroot that obeys the path rules of
 * -f. One line naming what is wrong, so a typo is told once, at the start,
 * not by the client, the session and the broker in turn. */
static int check_hosts(const char *hosts, struct cli_why *why)
{
	const char *chroot = strchr(hosts, '/');
	char reason[512];

	if (zkw_zk_hosts_check(hosts, reason, sizeof(reason)) < 0)
		return bad_usage(why, "-z %s: %s", hosts, reason);
	if (chroot && chroot[1] && check_path("-z chroot", chroot, why) < 0)
		return -EINVAL;
	return 0;
}

static int parse_capacity(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *s == '-')
		return -EINVAL;
	/* Refuse before multiplying: a wrapped product could land in range. */
	if (*end == 'k' || *end == 'K') {
		if (v > ZKW_CAPACITY_MAX / 1024)
			return -EINVAL;
		v *= 1024, end++;
	} else if (*end == 'm' || *end == 'M') {
		if (v > ZKW_CAPACITY_MAX / (1024 * 1024))
			return -EINVAL;
		v *= 1024 * 1024, end++;
	}
	if (*end || v == 0 || v > ZKW_CAPACITY_MAX)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_int(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_group(const char *s, gid_t *out)
{
	struct group *gr = getgrnam(s);
	long gid;

	if (gr) {
		*out = gr->gr_gid;
		return 0;
	}
	if (parse_int(s, 0, 0x7fffffff, &gid) < 0)
		return -EINVAL;
	*out = (gid_t)gid;
	return 0;
}

enum {
	OPT_ENSURE = 256,
	OPT_NO_VALID_INIT,
	OPT_INIT_TIMEOUT,
	OPT_SHM,
	OPT_CAPACITY,
	OPT_SESSION_TIMEOUT,
	OPT_RECONCILE,
	OPT_RECONNECT_MAX,
	OPT_MODE,
	OPT_GROUP,
	OPT_UNLINK,
	OPT_SOCKET,
	OPT_SOCKET_MODE,
	OPT_SOCKET_GROUP,
	OPT_ALLOW,
	OPT_ALLOW_ENSURE,
	OPT_MAX_WATCHES,
	OPT_MAX_PEER_SUBS,
	OPT_MAX_CONNECTIONS,
	OPT_LINGER,
	OPT_SUBSCRIBE_TIMEOUT,
	OPT_RECONCILE_RATE,
	OPT_CHECK_CONFIG,
	OPT_AUTH_FILE,
	OPT_ACL,
	OPT_STATE_DIR,
	OPT_VALIDATE,
	OPT_REJECT_EMPTY,
	OPT_MAX_SHRINK,
	OPT_BUNDLE,
};

#define SHORT_OPTS ":z:f:pvhc:V"

static int parse_mode(const char *opt, const char *arg, mode_t *out, struct cli_why *why)
{
	char *end;
	long v = strtol(arg, &end, 8);

	if (*end || end == arg || v <= 0 || v > 0777)
		return bad_usage(why, "%s %s: want octal permissions such as 0640", opt, arg);
	*out = (mode_t)v;
	return 0;
}

static int parse_user(const char *s, uid_t *out)
{
	struct passwd *pw = getpwnam(s);
	long uid;

	if (pw) {
		*out = pw->pw_uid;
		return 0;
	}
	if (parse_int(s, 0, 0x7fffffff, &uid) < 0)
		return -EINVAL;
	*out = (uid_t)uid;
	return 0;
}

/* --allow[-ensure] SUBJECT=PREFIX */
static int add_rule(zkw_cli *c, const char *opt, const char *arg, bool ensure, struct cli_why *why)
{
	const char *eq = strchr(arg, '='), *name;
	zkw_cli_rule r = {.ensure = ensure, .text = arg};
	char subject[64];
	size_t n;
	int rc;

	if (!eq || eq == arg || (size_t)(eq - arg) >= sizeof(subject))
		return bad_usage(why, "%s %s: want SUBJECT=PREFIX (uid:N, user:NAME, gid:N, group:NAME or any)",
		                 opt, arg);
	n = (size_t)(eq - arg);
	memcpy(subject, arg, n);
	subject[n] = '\0';
	r.prefix = eq + 1;
	if (strcmp(r.prefix, "/") != 0 && (rc = check_path(opt, r.prefix, why)) < 0)
		return rc;
	name = strchr(subject, ':');
	if (strcmp(subject, "any") == 0) {
		r.kind = ZKW_RULE_ANY;
	} else if (name && (strncmp(subject, "uid:", 4) == 0 || strncmp(subject, "user:", 5) == 0)) {
		uid_t uid;

		if (parse_user(name + 1, &uid) < 0)
			return bad_usage(why, "%s %s: no such user '%s'", opt, arg, name + 1);
		r.kind = ZKW_RULE_UID;
		r.id = (uint32_t)uid;
	} else if (name && (strncmp(subject, "gid:", 4) == 0 || strncmp(subject, "group:", 6) == 0)) {
		gid_t gid;

		if (parse_group(name + 1, &gid) < 0)
			return bad_usage(why, "%s %s: no such group '%s'", opt, arg, name + 1);
		r.kind = ZKW_RULE_GID;
		r.id = (uint32_t)gid;
	} else {
		return bad_usage(why, "%s %s: unknown subject '%s' (uid:N, user:NAME, gid:N, group:NAME or any)",
		                 opt, arg, subject);
	}
	if (c->nrules == c->rules_cap) {
		int cap = c->rules_cap ? c->rules_cap * 2 : 8;
		zkw_cli_rule *p = realloc(c->rules, (size_t)cap * sizeof(*p));

		if (!p)
			return bad_usage(why, "out of memory");
		c->rules = p;
		c->rules_cap = cap;
	}
	c->rules[c->nrules++] = r;
	return 0;
}

void zkw__cli_free(zkw_cli *c)
{
	for (int i = 0; i < c->nowned; i++)
		free(c->owned[i]);
	free(c->owned);
	free(c->watches);
	free(c->rules);
	c->owned = NULL;
	c->watches = NULL;
	c->rules = NULL;
	c->nowned = c->owned_cap = c->nwatches = c->watches_cap = c->nrules = c->rules_cap = 0;
}

static int parse_bool(const char *v, bool *out);

/* -p, --ensure, --shm, --capacity, --validate, --reject-empty (arg NULL,
 * or a boolean's text from the file) or --max-shrink for watch w. */
static int apply_watch_option_to(zkw_cli_watch *w, int opt, const char *arg, struct cli_why *why)
{
	bool flag = true;

	switch (opt) {
	case 'p': w->pointer = true; return 0;
	case OPT_ENSURE: w->ensure = true; return 0;
	case OPT_BUNDLE: w->bundle = true; return 0;
	case OPT_VALIDATE:
		if (zkw_validate_parse_format(arg, &w->rules.format) < 0)
			return bad_usage(why, "--validate %s: want json, yaml or none", arg);
		w->rules_set |= ZKW_CLI_RULE_FORMAT;
		return 0;
	case OPT_REJECT_EMPTY:
		if (arg && parse_bool(arg, &flag) < 0)
			return bad_usage(why, "reject-empty = %s: want true or false", arg);
		w->rules.reject_empty = flag;
		w->rules_set |= ZKW_CLI_RULE_EMPTY;
		return 0;
	case OPT_MAX_SHRINK:
		if (zkw_validate_parse_percent(arg, &w->rules.max_shrink) < 0)
			return bad_usage(why, "--max-shrink %s: want a percentage from 0 (off) to 100", arg);
		w->rules_set |= ZKW_CLI_RULE_SHRINK;
		return 0;
	case OPT_SHM:
		if (zkw_shm_name(w->shm, sizeof(w->shm), arg) < 0)
			return bad_usage(why,
			                 "--shm %s: a segment name is one component of at most %d characters",
			                 arg, ZKW_SHM_NAME_MAX - 1);
		/* "/name" is a one-component path: the same characters as a
		 * ZooKeeper path, so no control byte reaches /dev/shm or a log. */
		return check_path("--shm", w->shm, why);
	default: /* OPT_CAPACITY */
		if (parse_capacity(arg, &w->capacity) < 0)
			return bad_usage(
			        why,
			        "--capacity %s: want a byte count from 1 to %u (k and m suffixes allowed)",
			        arg, ZKW_CAPACITY_MAX);
		return 0;
	}
}

/* The rules given to from, over those of to. */
static void inherit_rules(zkw_cli_watch *to, const zkw_cli_watch *from)
{
	if (from->rules_set & ZKW_CLI_RULE_FORMAT)
		to->rules.format = from->rules.format;
	if (from->rules_set & ZKW_CLI_RULE_EMPTY)
		to->rules.reject_empty = from->rules.reject_empty;
	if (from->rules_set & ZKW_CLI_RULE_SHRINK)
		to->rules.max_shrink = from->rules.max_shrink;
	to->rules_set |= from->rules_set;
}

/* A watch option applies to the preceding command-line -f; before the
 * first, to the defaults (a watch without a path) that every -f starts
 * from, and --capacity there is the broker's default (for the file's
 * watches and those added on demand too). */
static int apply_watch_option(zkw_cli *c, zkw_cli_watch *defaults, int opt, const char *arg,
                              struct cli_why *why)
{
	int rc;

	if (c->nwatches > c->cli_first_watch)
		return apply_watch_option_to(&c->watches[c->nwatches - 1], opt, arg, why);
	rc = apply_watch_option_to(defaults, opt, arg, why);
	if (rc == 0 && opt == OPT_CAPACITY)
		c->default_capacity = defaults->capacity;
	if (rc == 0)
		inherit_rules(&c->demand, defaults); /* the broker's defaults too */
	return rc;
}

static int add_watch(zkw_cli *c, const zkw_cli_watch *defaults, const char *path, struct cli_why *why)
{
	zkw_cli_watch *w;
	int rc;

	if ((rc = check_path("-f", path, why)) < 0)
		return rc;
	if (c->nwatches == c->watches_cap) {
		int cap = c->watches_cap ? c->watches_cap * 2 : 16;
		zkw_cli_watch *p = realloc(c->watches, (size_t)cap * sizeof(*p));

		if (!p)
			return bad_usage(why, "out of memory");
		c->watches = p;
		c->watches_cap = cap;
	}
	w = &c->watches[c->nwatches++];
	*w = *defaults;
	w->path = path;
	return 0;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The two watches that would share segment name, in the order given. */
static int share_error(const zkw_cli *c, const char *name, struct cli_why *why)
{
	const char *first = NULL;
	int i;

	for (i = 0; i < c->nwatches; i++) {
		if (strcmp(c->watches[i].shm, name) != 0)
			continue;
		if (first)
			return bad_usage(why, "watches %s and %s would share segment %s; give each its own --shm",
			                 first, c->watches[i].path, name);
		first = c->watches[i].path;
	}
	return bad_usage(why, "two watches would share segment %s", name);
}

/* Default segment names, and no two watches on one segment. */
static int finish_watches(zkw_cli *c, struct cli_why *why)
{
	int i;

	if (c->nwatches > c->max_watches)
		return bad_usage(why, "%d watches given, more than --max-watches %d", c->nwatches,
		                 c->max_watches);
	for (i = 0; i < c->nwatches; i++) {
		zkw_cli_watch *w = &c->watches[i];

		if (w->pointer && w->bundle)
			return bad_usage(why, "%s: pointer mode and bundle mode do not go together", w->path);
		if (!w->shm[0] && zkw_shm_default_name(w->shm, sizeof(w->shm), w->path) < 0)
			return bad_usage(why, "-f %s: path too long for a default segment name; give --shm",
			                 w->path);
	}
	for (i = 0; i < c->nwatches; i++) {
		zkw_cli_watch own = c->watches[i];

		if (!c->watches[i].capacity)
			c->watches[i].capacity = c->default_capacity ? c->default_capacity : ZKW_DEFAULT_CAPACITY;
		/* The broker's rules, then the watch's own over them. */
		c->watches[i].rules = c->demand.rules;
		inherit_rules(&c->watches[i], &own);
	}
	/* No two watches on one segment: sort a copy of the names (a broker
	 * may have thousands of -f). */
	if (c->nwatches > 1) {
		const char **names = malloc((size_t)c->nwatches * sizeof(*names));
		int rc = 0;

		if (!names)
			return bad_usage(why, "out of memory");
		for (i = 0; i < c->nwatches; i++)
			names[i] = c->watches[i].shm;
		qsort(names, (size_t)c->nwatches, sizeof(*names), cmp_name);
		for (i = 1; i < c->nwatches && !rc; i++)
			if (strcmp(names[i - 1], names[i]) == 0)
				rc = share_error(c, names[i], why);
		free(names);
		return rc;
	}
	return 0;
}

static void cli_defaults(zkw_cli *c)
{
	memset(c, 0, sizeof(*c));
	zkw_session_options_init(&c->session);
	c->session.valid_init = true;
	c->session.session_timeout_ms = ZKW_SESSION_TIMEOUT_MS_DEFAULT;
	c->session.init_timeout_ms = BROKER_INIT_TIMEOUT_MS;
	c->segment.group = (gid_t)-1;
	c->segment.grow = true; /* --capacity is the maximum a segment grows to */
	/* $ZKW_SOCKET, which readers use too, else the default; "none" = none. */
	c->socket_path = getenv(ZKW_SOCKET_ENV) && *getenv(ZKW_SOCKET_ENV) ? getenv(ZKW_SOCKET_ENV)
	                                                                   : ZKW_SOCKET_DEFAULT;
	if (strcmp(c->socket_path, "none") == 0)
		c->socket_path = NULL;
	c->socket_mode = ZKW_CLI_SOCKET_MODE;
	c->state_dir = getenv(ZKW_CLI_STATE_DIR_ENV) && *getenv(ZKW_CLI_STATE_DIR_ENV) ? getenv(ZKW_CLI_STATE_DIR_ENV)
	                                                                             : ZKW_CLI_STATE_DIR;
	if (strcmp(c->state_dir, "none") == 0)
		c->state_dir = NULL;
	c->socket_group = (gid_t)-1;
	c->max_watches = ZKW_CLI_MAX_WATCHES;
	c->max_peer_subscriptions = ZKW_CLI_MAX_PEER_SUBS;
	c->max_connections = ZKW_CLI_MAX_CONNECTIONS;
	c->linger_s = ZKW_CLI_LINGER_S;
	c->subscribe_timeout_ms = ZKW_CLI_SUBSCRIBE_TIMEOUT;
}

static const struct option opts[] = {
        {"zookeeper", required_argument, NULL, 'z'},
        {"file", required_argument, NULL, 'f'},
        {"pointer", no_argument, NULL, 'p'},
        {"ensure", no_argument, NULL, OPT_ENSURE},
        {"no-valid-init", no_argument, NULL, OPT_NO_VALID_INIT},
        {"init-timeout", required_argument, NULL, OPT_INIT_TIMEOUT},
        {"shm", required_argument, NULL, OPT_SHM},
        {"capacity", required_argument, NULL, OPT_CAPACITY},
        {"session-timeout", required_argument, NULL, OPT_SESSION_TIMEOUT},
        {"reconcile", required_argument, NULL, OPT_RECONCILE},
        {"reconnect-max", required_argument, NULL, OPT_RECONNECT_MAX},
        {"mode", required_argument, NULL, OPT_MODE},
        {"group", required_argument, NULL, OPT_GROUP},
        {"unlink-on-exit", no_argument, NULL, OPT_UNLINK},
        {"socket", required_argument, NULL, OPT_SOCKET},
        {"socket-mode", required_argument, NULL, OPT_SOCKET_MODE},
        {"socket-group", required_argument, NULL, OPT_SOCKET_GROUP},
        {"allow", required_argument, NULL, OPT_ALLOW},
        {"allow-ensure", required_argument, NULL, OPT_ALLOW_ENSURE},
        {"max-watches", required_argument, NULL, OPT_MAX_WATCHES},
        {"max-peer-subscriptions", required_argument, NULL, OPT_MAX_PEER_SUBS},
        {"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
        {"linger", required_argument, NULL, OPT_LINGER},
        {"subscribe-timeout", required_argument, NULL, OPT_SUBSCRIBE_TIMEOUT},
        {"reconcile-rate", required_argument, NULL, OPT_RECONCILE_RATE},
        {"verbose", no_argument, NULL, 'v'},
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, OPT_CHECK_CONFIG},
        {"auth-file", required_argument, NULL, OPT_AUTH_FILE},
        {"acl", required_argument, NULL, OPT_ACL},
        {"state-dir", required_argument, NULL, OPT_STATE_DIR},
        {"validate", required_argument, NULL, OPT_VALIDATE},
        {"reject-empty", no_argument, NULL, OPT_REJECT_EMPTY},
        {"max-shrink", required_argument, NULL, OPT_MAX_SHRINK},
        {"bundle", no_argument, NULL, OPT_BUNDLE},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
};

/* Keep an allocation of the configuration (credentials, an ACL) until
 * zkw__cli_free, with the strings read from the file. */
static int own(zkw_cli *c, void *block)
{
	if (c->nowned == c->owned_cap) {
		int cap = c->owned_cap ? c->owned_cap * 2 : 32;
		char **p = realloc(c->owned, (size_t)cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		c->owned = p;
		c->owned_cap = cap;
	}
	c->owned[c->nowned++] = block;
	return 0;
}

/* --auth-file FILE: read (and checked) now, so that a bad file stops the
 * start, --check-config and a reload, naming the file; --acl SPEC. */
static int apply_auth_option(zkw_cli *c, int ch, const char *arg, struct cli_why *why)
{
	char reason[1024];

	if (ch == OPT_AUTH_FILE) {
		zkw_session_credential *cred;
		size_t n;

		if (zkw_auth_file_read(arg, &cred, &n, reason, sizeof(reason)) < 0)
			return bad_usage(why, "--auth-file: %s", reason);
		if (own(c, cred) < 0) {
			zkw_auth_credentials_free(cred, n);
			return bad_usage(why, "out of memory");
		}
		c->session.credentials = cred;
		c->session.ncredentials = n;
		c->session.credentials_from = arg;
	} else {
		zkw_session_acl *acl;
		size_t n;

		if (zkw_auth_acl_parse(arg, &acl, &n, reason, sizeof(reason)) < 0)
			return bad_usage(why, "--acl: %s", reason);
		if (own(c, acl) < 0) {
			free(acl);
			return bad_usage(why, "out of memory");
		}
		c->session.acl = acl;
		c->session.nacl = n;
	}
	return 0;
}

/* One option (ch, as getopt_long returns it; name for messages) with its
 * value, from the command line or the configuration file. */
static int apply_option(zkw_cli *c, zkw_cli_watch *defaults, int ch, const char *arg, const char *name,
                        struct cli_why *why)
{
	long v;
	int rc = 0;

	switch (ch) {
	case 'z':
		c->hosts = arg;
		for (const char *p = arg; *p; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				return bad_usage(why, "-z %s: control character at byte %zu ('%c')",
				                 arg, (size_t)(p - arg) + 1, *p);
		return check_hosts(arg, why);
	case 'f': rc = add_watch(c, defaults, arg, why); break;
	case 'p':
	case OPT_ENSURE:
	case OPT_BUNDLE:
	case OPT_SHM:
	case OPT_CAPACITY:
	case OPT_VALIDATE:
	case OPT_REJECT_EMPTY:
	case OPT_MAX_SHRINK: rc = apply_watch_option(c, defaults, ch, arg, why); break;
	case OPT_STATE_DIR:
		if (strcmp(arg, "none") == 0) {
			c->state_dir = NULL;
			break;
		}
		if (arg[0] != '/' || strlen(arg) >= 4096)
			return bad_usage(why, "--state-dir %s: want an absolute path, or none", arg);
		for (const char *p = arg; *p; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				return bad_usage(why, "--state-dir %s: control character at byte %zu", arg,
				                 (size_t)(p - arg) + 1);
		c->state_dir = arg;
		break;
	case OPT_NO_VALID_INIT: c->session.valid_init = false; break;
	case OPT_INIT_TIMEOUT:
		if (parse_int(arg, 1, 3600000, &v) < 0)
			return bad_usage(why, "--init-timeout %s: want milliseconds", arg);
		c->session.init_timeout_ms = (int)v;
		break;
	case OPT_SESSION_TIMEOUT:
		if (parse_int(arg, 1, 3600000, &v) < 0)
			return bad_usage(why, "--session-timeout %s: want milliseconds", arg);
		c->session.session_timeout_ms = (int)v;
		break;
	case OPT_RECONCILE:
		if (parse_int(arg, 0, 86400, &v) < 0)
			return bad_usage(why, "--reconcile %s: want seconds (0 turns it off)",
			                 arg);
		c->session.reconcile_s = (int)v;
		break;
	case OPT_RECONCILE_RATE:
		if (parse_int(arg, 1, 100000, &v) < 0)
			return bad_usage(why, "--reconcile-rate %s: want requests a second (1 to 100000)", arg);
		c->session.reconcile_rate = (int)v;
		break;
	case OPT_RECONNECT_MAX:
		if (parse_int(arg, 100, 3600000, &v) < 0)
			return bad_usage(why,
			                 "--reconnect-max %s: want milliseconds from 100 to 3600000",
			                 arg);
		c->session.reconnect_max_ms = (int)v;
		break;
	case OPT_SOCKET:
		if (strcmp(arg, "none") == 0) {
			c->socket_path = NULL;
			break;
		}
		if (arg[0] != '/' || strlen(arg) >= sizeof(((struct sockaddr_un *)0)->sun_path))
			return bad_usage(why, "--socket %s: want an absolute path of at most %zu bytes, or none",
			                 arg, sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
		c->socket_path = arg;
		break;
	case OPT_SOCKET_MODE: rc = parse_mode("--socket-mode", arg, &c->socket_mode, why); break;
	case OPT_SOCKET_GROUP:
		if (parse_group(arg, &c->socket_group) < 0)
			return bad_usage(why, "--socket-group %s: no such group", arg);
		break;
	case OPT_ALLOW:
	case OPT_ALLOW_ENSURE:
		rc = add_rule(c, ch == OPT_ALLOW ? "--allow" : "--allow-ensure", arg, ch == OPT_ALLOW_ENSURE,
		              why);
		break;
	case OPT_MAX_WATCHES:
	case OPT_MAX_PEER_SUBS:
	case OPT_MAX_CONNECTIONS:
		if (parse_int(arg, 1, 1000000, &v) < 0)
			return bad_usage(why, "%s %s: want a count from 1 to 1000000", name, arg);
		*(ch == OPT_MAX_WATCHES       ? &c->max_watches
		  : ch == OPT_MAX_PEER_SUBS   ? &c->max_peer_subscriptions
		                              : &c->max_connections) = (int)v;
		break;
	case OPT_LINGER:
		if (parse_int(arg, 0, 30 * 86400, &v) < 0)
			return bad_usage(why, "--linger %s: want seconds (0 to 2592000)", arg);
		c->linger_s = (int)v;
		break;
	case OPT_SUBSCRIBE_TIMEOUT:
		if (parse_int(arg, 1, 600000, &v) < 0)
			return bad_usage(why, "--subscribe-timeout %s: want milliseconds (1 to 600000)", arg);
		c->subscribe_timeout_ms = (int)v;
		break;
	case OPT_MODE:
		if ((rc = parse_mode("--mode", arg, &c->segment.mode, why)) < 0)
			return rc;
		v = (long)c->segment.mode;
		if (v & 022)
			return bad_usage(why,
			                 "--mode %s: group/other write permission (%04lo) refused: "
			                 "whoever may write a segment can crash or fool its readers "
			                 "(read bits are fine: 0640, 0644)",
			                 arg, v & 022);
		c->segment.mode = (mode_t)v;
		break;
	case OPT_GROUP:
		if (parse_group(arg, &c->segment.group) < 0)
			return bad_usage(why, "--group %s: no such group", arg);
		break;
	case OPT_UNLINK: c->unlink_on_exit = true; break;
	case 'v': c->verbose = true; break;
	case OPT_AUTH_FILE:
	case OPT_ACL: rc = apply_auth_option(c, ch, arg, why); break;
	default: return bad_usage(why, "unknown option %s", name);
	}
	return rc;
}

/* The long option called name. */
static const struct option *option_by_name(const char *name)
{
	for (const struct option *o = opts; o->name; o++)
		if (strcmp(o->name, name) == 0)
			return o;
	return NULL;
}

/* ---- the configuration file (docs/design.md, "The configuration file") */

/* Keep a copy of a value from the file for as long as the configuration. */
static const char *keep(zkw_cli *c, const char *text);

const char *zkw__cli_keep(zkw_cli *c, const char *text)
{
	return text ? keep(c, text) : NULL;
}

static const char *keep(zkw_cli *c, const char *text)
{
	char *copy = strdup(text), **p;

	if (!copy)
		return NULL;
	if (c->nowned == c->owned_cap) {
		int cap = c->owned_cap ? c->owned_cap * 2 : 32;

		p = realloc(c->owned, (size_t)cap * sizeof(*p));
		if (!p) {
			free(copy);
			return NULL;
		}
		c->owned = p;
		c->owned_cap = cap;
	}
	c->owned[c->nowned++] = copy;
	return copy;
}

static int parse_bool(const char *v, bool *out)
{
	static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(v, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

struct file_state {
	zkw_cli *c;
	zkw_cli_watch *defaults;
	char reason[1024]; /* the first refusal, without its place */
	int line;          /* its line when known here (0: libinih tells) */
};

static int file_refuse(struct file_state *st, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int file_refuse(struct file_state *st, int line, const char *fmt, ...)
{
	va_list ap;

	if (st->reason[0])
		return 0; /* the first reason is the one told */
	va_start(ap, fmt);
	vsnprintf(st->reason, sizeof(st->reason), fmt, ap);
	va_end(ap);
	st->line = line;
	return 0;
}

static zkw_cli_watch *file_watch(zkw_cli *c, const char *label)
{
	for (int i = 0; i < c->nwatches; i++)
		if (c->watches[i].label && strcmp(c->watches[i].label, label) == 0)
			return &c->watches[i];
	return NULL;
}

/* The keys of [broker] and [socket]: the long option of the same meaning. */
static const struct option *file_option(const char *section, const char *key)
{
	static const char *const broker_keys[] = {"zookeeper", "session-timeout", "init-timeout", "reconcile",
	                                           "reconcile-rate", "reconnect-max", "capacity", "mode", "group",
	                                           "verbose", "unlink-on-exit", "auth-file", "acl", "state-dir",
	                                           "validate", "reject-empty", "max-shrink", NULL};
	static const char *const socket_keys[] = {"linger", "subscribe-timeout", "max-watches",
	                                           "max-peer-subscriptions", "max-connections", "allow",
	                                           "allow-ensure", NULL};
	const char *const *keys = strcmp(section, "socket") == 0 ? socket_keys : broker_keys;

	if (strcmp(section, "socket") == 0) {
		if (strcmp(key, "path") == 0)
			return option_by_name("socket");
		if (strcmp(key, "mode") == 0)
			return option_by_name("socket-mode");
		if (strcmp(key, "group") == 0)
			return option_by_name("socket-group");
	}
	for (; *keys; keys++)
		if (strcmp(*keys, key) == 0)
			return option_by_name(key);
	return NULL;
}

/* libinih's handler: one key. 1 = fine, 0 = refused (the reason kept). */
static int file_key(void *user, const char *section, const char *key, const char *raw)
{
	struct file_state *st = user;
	char why[1024] = "";
	struct cli_why w = {why, sizeof(why)};
	const struct option *o;
	const char *value;
	zkw_cli *c = st->c;
	bool flag;
	int rc;

	if (st->reason[0])
		return 1; /* refused already: say the first reason only */
	value = keep(c, raw);
	if (!value)
		return file_refuse(st, 0, "out of memory");
	if (strncmp(section, "watch ", 6) == 0) {
		zkw_cli_watch *cw = file_watch(c, section + 6);

		if (!cw)
			return file_refuse(st, 0, "[%s]: not a watch section", section);
		if (strcmp(key, "path") == 0) {
			if (check_path("path", value, &w) < 0)
				return file_refuse(st, 0, "%s", why);
			cw->path = value;
			return 1;
		}
		if (strcmp(key, "pointer") == 0 || strcmp(key, "ensure") == 0 || strcmp(key, "bundle") == 0) {
			if (parse_bool(value, &flag) < 0)
				return file_refuse(st, 0, "%s = %s: want true or false", key, raw);
			if (key[0] == 'p')
				cw->pointer = flag;
			else if (key[0] == 'b')
				cw->bundle = flag;
			else
				cw->ensure = flag;
			return 1;
		}
		if (strcmp(key, "mode") == 0) {
			if (parse_mode("mode", value, &cw->mode, &w) < 0)
				return file_refuse(st, 0, "%s", why);
			if (cw->mode & 022)
				return file_refuse(st, 0,
				                   "mode = %s: group/other write permission refused: whoever may write "
				                   "a segment can crash or fool its readers (0640, 0644 are fine)",
				                   raw);
			return 1;
		}
		if (strcmp(key, "group") == 0) {
			if (parse_group(value, &cw->group) < 0)
				return file_refuse(st, 0, "group = %s: no such group", raw);
			cw->group_set = true;
			return 1;
		}
		o = option_by_name(key);
		if (o && (o->val == OPT_SHM || o->val == OPT_CAPACITY || o->val == OPT_VALIDATE ||
		          o->val == OPT_REJECT_EMPTY || o->val == OPT_MAX_SHRINK)) {
			rc = apply_watch_option_to(cw, o->val, value, &w);
			return rc < 0 ? file_refuse(st, 0, "%s", why) : 1;
		}
		return file_refuse(st, 0,
		                   "unknown key '%s' in [%s] (path, pointer, bundle, ensure, shm, capacity, mode, group, "
		                   "validate, reject-empty, max-shrink)",
		                   key, section);
	}
	if (strcmp(section, "broker") != 0 && strcmp(section, "socket") != 0)
		return file_refuse(st, 0, "key '%s' outside a known section", key);
	if (strcmp(section, "broker") == 0 && strcmp(key, "valid-init") == 0) {
		if (parse_bool(value, &flag) < 0)
			return file_refuse(st, 0, "valid-init = %s: want true or false", raw);
		c->session.valid_init = flag;
		return 1;
	}
	o = file_option(section, key);
	if (!o)
		return file_refuse(st, 0, "unknown key '%s' in [%s]", key, section);
	if (o->val == OPT_VALIDATE || o->val == OPT_REJECT_EMPTY || o->val == OPT_MAX_SHRINK) {
		/* The broker's rules: every watch's, unless it has its own. */
		rc = apply_watch_option_to(st->defaults, o->val, value, &w);
		if (rc == 0)
			inherit_rules(&c->demand, st->defaults);
		return rc < 0 ? file_refuse(st, 0, "%s", why) : 1;
	}
	if (o->has_arg == no_argument) {
		if (parse_bool(value, &flag) < 0)
			return file_refuse(st, 0, "%s = %s: want true or false", key, raw);
		if (o->val == OPT_UNLINK)
			c->unlink_on_exit = flag;
		else
			c->verbose = flag;
		return 1;
	}
	if (o->val == OPT_CAPACITY) {
		rc = apply_watch_option_to(st->defaults, OPT_CAPACITY, value, &w);
		if (rc == 0)
			c->default_capacity = st->defaults->capacity;
	} else {
		rc = apply_option(c, st->defaults, o->val, value, o->name, &w);
	}
	return rc < 0 ? file_refuse(st, 0, "%s", why) : 1;
}

/* The sections, in order, with their lines: libinih calls back for keys
 * only, and a [watch PATH] needs none. Each [watch LABEL] becomes a watch
 * here; its keys come through file_key. */
static void file_sections(struct file_state *st, FILE *f)
{
	char line[4096];
	int n = 0;

	while (!st->reason[0] && fgets(line, sizeof(line), f)) {
		char *p = line, *end, why[1024] = "";
		struct cli_why w = {why, sizeof(why)};
		const char *label;
		zkw_cli_watch *cw;

		n++;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p != '[')
			continue;
		end = strchr(p, ']');
		if (!end) {
			file_refuse(st, n, "a section header without ']'");
			break;
		}
		*end = '\0';
		p++;
		if (strcmp(p, "broker") == 0 || strcmp(p, "socket") == 0)
			continue;
		if (strncmp(p, "watch ", 6) != 0 || !p[6]) {
			file_refuse(st, n, "unknown section [%s] (broker, socket, watch PATH)", p);
			break;
		}
		label = keep(st->c, p + 6);
		if (!label) {
			file_refuse(st, n, "out of memory");
			break;
		}
		if (file_watch(st->c, label)) {
			file_refuse(st, n, "a second [watch %s]", label);
			break;
		}
		/* A label that is a path is the watch's path ("path =" may
		 * still say otherwise); any other label wants a path key. */
		if (add_watch(st->c, &(zkw_cli_watch){0}, label[0] == '/' ? label : "/x", &w) < 0) {
			file_refuse(st, n, "[watch %s]: %s", label, why);
			break;
		}
		cw = &st->c->watches[st->c->nwatches - 1];
		cw->label = label;
		cw->line = n;
		cw->from_file = true;
		if (label[0] != '/')
			cw->path = NULL;
	}
}

/* Read FILE into c, on top of the defaults. 0, or -EINVAL with
 * "FILE:LINE: reason" (escaped) in why. */
static int read_file(zkw_cli *c, zkw_cli_watch *defaults, const char *file, struct cli_why *why)
{
	struct file_state st = {.c = c, .defaults = defaults};
	FILE *f = fopen(file, "re");
	int rc;

	if (!f)
		return bad_usage(why, "--config %s: %s", file, strerror(errno));
	file_sections(&st, f);
	if (!st.reason[0]) {
		rewind(f);
		rc = ini_parse_file(f, file_key, &st);
		if (rc < 0 && !st.reason[0])
			file_refuse(&st, 0, "cannot read the file");
		else if (rc > 0 && !st.reason[0])
			file_refuse(&st, rc, "neither a [section], a key = value nor a comment");
		if (rc > 0 && !st.line)
			st.line = rc;
	}
	fclose(f);
	for (int i = 0; i < c->nwatches && !st.reason[0]; i++)
		if (c->watches[i].from_file && !c->watches[i].path)
			file_refuse(&st, c->watches[i].line, "[watch %s] has no path (path = /...)", c->watches[i].label);
	if (st.reason[0])
		return bad_usage(why, "%s:%d: %s", file, st.line, st.reason);
	return 0;
}

/* --config, --help and --version first: they decide what else is read. */
static int scan_argv(zkw_cli *c, int argc, char **argv, const char **config, struct cli_why *why)
{
	int ch;

	*config = NULL;
	opterr = 0;
	optind = 0; /* glibc: full re-initialisation, so the parser can run again */
	while ((ch = getopt_long(argc, argv, SHORT_OPTS, opts, NULL)) != -1) {
		if (ch == 'c')
			*config = strcmp(optarg, "none") == 0 ? NULL : optarg;
		else if (ch == 'h')
			c->help = true;
		else if (ch == 'V')
			c->version = true;
		else if (ch == ':')
			return bad_usage(why, "option %s needs a value", argv[optind - 1]);
		else if (ch == '?')
			return bad_usage(why, "unknown option %s", argv[optind - 1]);
	}
	if (optind < argc)
		return bad_usage(why, "unexpected argument \"%s\"", argv[optind]);
	return 0;
}

/* A command-line -f replaces the file's watch of the same path and mode. */
static void drop_replaced_watches(zkw_cli *c)
{
	int i, j, k = 0, first = c->cli_first_watch;

	for (i = 0; i < c->nwatches; i++) {
		bool replaced = false;

		for (j = first; i < first && j < c->nwatches && !replaced; j++)
			replaced = c->watches[j].pointer == c->watches[i].pointer &&
			           c->watches[j].bundle == c->watches[i].bundle &&
			           strcmp(c->watches[j].path, c->watches[i].path) == 0;
		if (!replaced)
			c->watches[k++] = c->watches[i];
		else if (i < first)
			c->cli_first_watch--;
	}
	c->nwatches = k;
}

int zkw__cli_parse(zkw_cli *c, int argc, char **argv, char *whybuf, size_t whylen)
{
	zkw_cli_watch defaults = {0};
	struct cli_why why = {whybuf, whylen};
	const char *config;
	int ch, rc, file_rules;

	cli_defaults(c);
	if (whybuf && whylen)
		whybuf[0] = '\0';
	if ((rc = scan_argv(c, argc, argv, &config, &why)) < 0)
		return rc;
	if (c->help || c->version)
		return 0;
	c->config_path = config;
	if (config && (rc = read_file(c, &defaults, config, &why)) < 0)
		return rc;
	file_rules = c->nrules;
	/* The command line's own watch defaults start empty; its --capacity
	 * before any -f still overrides the file's default capacity. */
	memset(&defaults, 0, sizeof(defaults));
	c->cli_first_watch = c->nwatches;
	optind = 0;
	while ((ch = getopt_long(argc, argv, SHORT_OPTS, opts, NULL)) != -1) {
		if (ch == 'c' || ch == 'h' || ch == 'V')
			continue;
		if (ch == OPT_CHECK_CONFIG) {
			c->check_config = true;
			continue;
		}
		/* Rules given on the command line replace the file's. */
		if ((ch == OPT_ALLOW || ch == OPT_ALLOW_ENSURE) && file_rules) {
			c->nrules = 0;
			file_rules = 0;
		}
		rc = apply_option(c, &defaults, ch, optarg, argv[optind - 1], &why);
		if (rc < 0)
			return rc;
	}
	if (!c->hosts)
		return bad_usage(&why, "missing -z HOSTS%s", config ? " (or zookeeper = in [broker])" : "");
	drop_replaced_watches(c);
	if (!c->nwatches && !c->socket_path)
		return bad_usage(&why, "nothing to serve: give -f PATH, or a control socket (not --socket none)");
	c->demand.capacity = c->default_capacity ? c->default_capacity : ZKW_DEFAULT_CAPACITY;
	if (c->session.acl && zkw_auth_acl_needs_credentials(c->session.acl, c->session.nacl) &&
	    !c->session.ncredentials)
		return bad_usage(&why, "--acl: an auth entry names the creator's authenticated identities, "
		                       "and there are none without --auth-file");
	return finish_watches(c, &why);
}

bool zkw__cli_same_rules(const zkw_validate_rules *a, const zkw_validate_rules *b)
{
	return a->format == b->format && a->reject_empty == b->reject_empty && a->max_shrink == b->max_shrink;
}

static void print_rules(FILE *out, const zkw_validate_rules *r)
{
	fprintf(out, "validate = %s\nreject-empty = %s\nmax-shrink = %u\n", zkw_validate_format_name(r->format),
	        r->reject_empty ? "true" : "false", r->max_shrink);
}

static void print_group(FILE *out, const char *key, gid_t gid)
{
	struct group *gr;

	if (gid == (gid_t)-1)
		return;
	gr = getgrgid(gid);
	if (gr)
		fprintf(out, "%s = %s\n", key, gr->gr_name);
	else
		fprintf(out, "%s = %u\n", key, (unsigned)gid);
}

/* Paths and names hold no control byte (checked at the parse): printed as
 * they are. */
void zkw__cli_print(FILE *out, const zkw_cli *c)
{
	fprintf(out, "; zkw-broker %s: the effective configuration%s%s\n", ZKW_VERSION,
	        c->config_path ? " from " : " (command line only)", c->config_path ? c->config_path : "");
	fprintf(out, "[broker]\nzookeeper = %s\n", c->hosts);
	fprintf(out, "session-timeout = %d\n", c->session.session_timeout_ms);
	fprintf(out, "init-timeout = %d\n", c->session.init_timeout_ms);
	fprintf(out, "valid-init = %s\n", c->session.valid_init ? "true" : "false");
	fprintf(out, "reconcile = %d\n", c->session.reconcile_s);
	fprintf(out, "reconcile-rate = %d\n",
	        c->session.reconcile_rate ? c->session.reconcile_rate : ZKW_RECONCILE_RATE_DEFAULT);
	fprintf(out, "reconnect-max = %d\n",
	        c->session.reconnect_max_ms ? c->session.reconnect_max_ms : ZKW_RECONNECT_MAX_MS_DEFAULT);
	if (c->session.credentials_from) /* the file, never what it holds */
		fprintf(out, "auth-file = %s\n", c->session.credentials_from);
	if (c->session.acl) {
		char acl[4096];

		if (zkw_auth_acl_format(c->session.acl, c->session.nacl, acl, sizeof(acl)) >= 0)
			fprintf(out, "acl = %s\n", acl);
	} else {
		fprintf(out, "; acl: the default, %s\n",
		        c->session.ncredentials ? ZKW_ACL_DEFAULT_AUTH : ZKW_ACL_DEFAULT_OPEN " (open)");
	}
	fprintf(out, "capacity = %llu\n", (unsigned long long)c->demand.capacity);
	fprintf(out, "mode = %04o\n", (unsigned)(c->segment.mode ? c->segment.mode : 0640));
	print_group(out, "group", c->segment.group);
	fprintf(out, "unlink-on-exit = %s\n", c->unlink_on_exit ? "true" : "false");
	fprintf(out, "state-dir = %s\n", c->state_dir ? c->state_dir : "none");
	print_rules(out, &c->demand.rules);
	fprintf(out, "verbose = %s\n", c->verbose ? "true" : "false");
	fprintf(out, "\n[socket]\npath = %s\n", c->socket_path ? c->socket_path : "none");
	fprintf(out, "mode = %04o\n", (unsigned)c->socket_mode);
	print_group(out, "group", c->socket_group);
	fprintf(out, "linger = %d\n", c->linger_s);
	fprintf(out, "subscribe-timeout = %d\n", c->subscribe_timeout_ms);
	fprintf(out, "max-watches = %d\n", c->max_watches);
	fprintf(out, "max-peer-subscriptions = %d\n", c->max_peer_subscriptions);
	fprintf(out, "max-connections = %d\n", c->max_connections);
	for (int i = 0; i < c->nrules; i++)
		fprintf(out, "%s = %s\n", c->rules[i].ensure ? "allow-ensure" : "allow", c->rules[i].text);
	for (int i = 0; i < c->nwatches; i++) {
		const zkw_cli_watch *w = &c->watches[i];

		/* A pointer watch and a plain one may share a path: not a label. */
		fprintf(out, "\n[watch %s%s]%s\n", w->pointer ? "pointer " : w->bundle ? "bundle " : "", w->path,
		        w->from_file ? "" : " ; -f");
		if (w->pointer)
			fprintf(out, "path = %s\npointer = true\n", w->path);
		if (w->bundle)
			fprintf(out, "path = %s\nbundle = true\n", w->path);
		if (w->ensure)
			fprintf(out, "ensure = true\n");
		fprintf(out, "shm = %s\ncapacity = %llu\n", w->shm + 1, (unsigned long long)w->capacity);
		if (w->mode)
			fprintf(out, "mode = %04o\n", (unsigned)w->mode);
		if (w->group_set)
			print_group(out, "group", w->group);
		if (!zkw__cli_same_rules(&w->rules, &c->demand.rules))
			print_rules(out, &w->rules);
	}
}
