/* SPDX-License-Identifier: Apache-2.0 */
/* zkw-push - push a local file into ZooKeeper as PATH/ID (the seed's file
 * pusher, without its path-joining bugs).
 *
 *     zkw-push -z 127.0.0.1:2181 -f settings.txt --parent /tmp/ -i myconfig
 *     echo /tmp/myconfig | zkw-push -z ... -f - --parent /tmp_pointers -i pointer1
 *     zkw-push -z ... --wipe --parent /tmp -i myconfig      # null data
 *     zkw-push -z ... --auth-file ~/.zkw-auth -f settings.txt --parent /app -i conf
 *
 * All or nothing: a file that cannot be read whole (an I/O error, no memory
 * for the buffer, larger than --max-bytes) pushes nothing. --max-bytes
 * defaults to ZooKeeper's default limit and goes up to INT_MAX, the largest
 * length the ZooKeeper client takes (for servers with a larger
 * jute.maxbuffer).
 *
 * Its letters mean what they mean in the other tools (README.md, "One
 * command-line language"); the seed pusher's spellings stay as hidden
 * aliases: -p/--path for --parent, -w for --wipe, --zoo-keeper, and
 * --timeout for --init-timeout. Nodes it creates get --acl, by default
 * creator all + world read with --auth-file, the open ACL without (said on
 * stderr when it creates one); an existing node keeps its ACL.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zkw/watcher.h>

#include "zkw_auth.h"
#include "zkw_opt.h"
#include "zkw_zk.h"

#define EXIT_USAGE 2

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: zkw-push -z HOSTS -f FILE --parent PATH -i ID [options]\n"
	        "       zkw-push -z HOSTS --wipe --parent PATH -i ID [options]\n"
	        "Push FILE into ZooKeeper as node PATH/ID, creating missing parents.\n"
	        "  -z, --zookeeper HOSTS  connect string: host:port[,host:port...][/chroot]\n"
	        "  -f, --file FILE        the configuration file to push ('-' reads standard input)\n"
	        "  -i, --id ID            node name under PATH\n"
	        "      --parent PATH      absolute parent path ('/tmp' or '/tmp/')\n"
	        "      --wipe             set the node's data to null instead of pushing a file\n"
	        "      --auth-file FILE   ZooKeeper credentials, a line 'digest USER:PASSWORD' each;\n"
	        "                         FILE must be yours, mode 0600 or stricter\n"
	        "      --acl SPEC         ACL of the nodes it creates: SCHEME:ID:PERMS,... (default\n"
	        "                         %s with --auth-file, else %s);\n"
	        "                         an existing node keeps its own\n"
	        "      --init-timeout MS  how long to wait for a server to answer (default %d)\n"
	        "      --max-bytes N      refuse content larger than N (default %d, ZooKeeper's limit;\n"
	        "                         at most %d)\n"
	        "  -V, --version          print the version\n"
	        "  -h, --help             this help\n"
	        "Exit status: 0 pushed, 1 failed (nothing pushed), 2 bad usage.\n",
	        ZKW_ACL_DEFAULT_AUTH, ZKW_ACL_DEFAULT_OPEN, ZKW_SESSION_TIMEOUT_MS_DEFAULT, ZKW_ZK_DATA_MAX,
	        INT_MAX);
}

/* Read all of a file (or stdin) into a heap buffer, refusing more than max
 * bytes. 0 or -errno; -EFBIG when too large (*len = bytes seen so far);
 * -ENOMEM when the buffer cannot grow (*len = bytes read, *need = the size
 * asked for). Never a partial success. */
static int slurp(const char *file, long max, char **data, long *len, size_t *need)
{
	FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "rb");
	size_t cap = 65536, n = 0, got;
	char *buf;
	int err = 0;

	if (!f)
		return -errno;
	*need = cap;
	buf = malloc(cap);
	while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
		n += got;
		if ((long)n > max) {
			err = -EFBIG;
			break;
		}
		if (n == cap) {
			char *bigger;

			*need = cap * 2;
			bigger = realloc(buf, *need);
			if (!bigger) {
				err = -ENOMEM; /* buf and its n bytes stay: the caller frees */
				break;
			}
			buf = bigger;
			cap *= 2;
		}
	}
	if (!buf)
		err = -ENOMEM;
	else if (!err && ferror(f))
		err = -EIO;
	if (f != stdin)
		fclose(f);
	*data = buf;
	*len = (long)n;
	return err;
}

struct push_args {
	const char *file, *id, *parent, *hosts, *auth_file, *acl_spec;
	int wipe;
	int timeout_ms;
	long max_bytes;
	zkw_session_acl *acl; /* --acl parsed, else NULL */
	size_t nacl;
};

/* The options, once. Hidden aliases (the seed pusher's spellings, kept for
 * scripts): p|path for P=parent, w for W=wipe, Z=zoo-keeper for
 * z|zookeeper, t=timeout for T=init-timeout. */
#define PUSH_OPTIONS                                                                                         \
	"z|zookeeper: Z=zoo-keeper: f|file: i|id: P=parent: p|path: W=wipe w A=auth-file: a=acl: "           \
	"T=init-timeout: t=timeout: M=max-bytes: V|version h|help"

/* 0 to go on, EXIT_USAGE after saying why, or -1 when done (--version). */
static int parse_args(int argc, char **argv, struct push_args *a)
{
	char why[512];
	struct zkw_opt o;
	int c;

	zkw_opt_init(&o, argc, argv, "zkw-push", PUSH_OPTIONS, usage);
	while ((c = zkw_opt_next(&o)) != -1) {
		switch (c) {
		case 'f': a->file = o.arg; break;
		case 'i': a->id = o.arg; break;
		case 'P':
		case 'p': a->parent = o.arg; break;
		case 'Z':
		case 'z': a->hosts = o.arg; break;
		case 'W':
		case 'w': a->wipe = 1; break;
		case 'A': a->auth_file = o.arg; break;
		case 'a': a->acl_spec = o.arg; break;
		case 'V': printf("zkw-push %s\n", ZKW_VERSION); return -1;
		case 'T':
		case 't':
			if (zkw_opt_int(&o, "a positive number of ms", 1, INT_MAX, &a->timeout_ms))
				return EXIT_USAGE;
			break;
		case 'M':
			/* The ZooKeeper client takes an int length: a larger limit
			 * would wrap, not allow more. */
			if (zkw_opt_long(&o,
			                 "a byte count from 0 to 2147483647 (the largest node data a "
			                 "ZooKeeper client can write)",
			                 0, INT_MAX, &a->max_bytes))
				return EXIT_USAGE;
			break;
		default: return EXIT_USAGE;
		}
	}
	if (zkw_opt_no_operands(&o))
		return EXIT_USAGE;
	if (!a->id || !a->parent || !a->hosts || (!a->file && !a->wipe)) {
		fprintf(stderr, "zkw-push: missing %s\n",
		        !a->id       ? "-i ID"
		        : !a->parent ? "--parent PATH"
		        : !a->hosts  ? "-z HOSTS"
		                     : "-f FILE (or --wipe)");
		usage(stderr);
		return EXIT_USAGE;
	}
	if (a->file && a->wipe) {
		fprintf(stderr, "zkw-push: -f and --wipe exclude each other\n");
		return EXIT_USAGE;
	}
	/* A connect string is checked here, once, rather than by the client,
	 * the session and us in turn. */
	if (zkw_zk_hosts_check(a->hosts, why, sizeof(why))) {
		fprintf(stderr, "zkw-push: -z %s: %s\n", a->hosts, why);
		return EXIT_USAGE;
	}
	if (a->acl_spec && zkw_auth_acl_parse(a->acl_spec, &a->acl, &a->nacl, why, sizeof(why))) {
		fprintf(stderr, "zkw-push: --acl: %s\n", why);
		return EXIT_USAGE;
	}
	if (a->acl && zkw_auth_acl_needs_credentials(a->acl, a->nacl) && !a->auth_file) {
		fprintf(stderr,
		        "zkw-push: --acl %s: an auth entry names the creator's authenticated identities, and "
		        "there are none without --auth-file\n",
		        a->acl_spec);
		return EXIT_USAGE;
	}
	return 0;
}

/* Join and validate PATH/ID as a strict absolute ZooKeeper path. */
static int node_path(const struct push_args *a, char *out, size_t cap)
{
	char joined[ZKW_POINTER_MAX + 1];
	const char *why = NULL;
	int rc;

	if (a->parent[0] != '/') {
		fprintf(stderr, "zkw-push: --parent %s: the parent path must be absolute (start with '/')\n",
		        a->parent);
		return EXIT_USAGE;
	}
	rc = zkw_zk_join(joined, sizeof(joined), a->parent, a->id);
	if (rc != 0 || zkw_pointer_parse(joined, strlen(joined), out, cap, &why) < 0) {
		fprintf(stderr, "zkw-push: \"%s\" + \"%s\" is not a valid ZooKeeper path: %s\n", a->parent,
		        a->id,
		        why             ? why
		        : rc == -EINVAL ? "empty node id"
		                        : "too long");
		return EXIT_USAGE;
	}
	return 0;
}

static int wipe(zhandle_t *zh, const char *path)
{
	char why[256];
	int err = zkw_zk_set(zh, path, NULL, -1, why, sizeof(why));

	if (err == -ENOENT) {
		fprintf(stderr, "zkw-push: conf node %s does not exist, nothing to wipe\n", path);
		return 1;
	}
	if (err) {
		fprintf(stderr, "zkw-push: cannot wipe %s: %s\n", path, why);
		return 1;
	}
	printf("wiping conf node %s\n", path);
	return 0;
}

static int push(zhandle_t *zh, const struct push_args *a, bool authenticated, const char *path,
                const char *data, long len)
{
	/* Created nodes get --acl, else the default for the credentials. */
	const char *spec = authenticated ? ZKW_ACL_DEFAULT_AUTH : ZKW_ACL_DEFAULT_OPEN;
	zkw_session_acl *chosen = NULL;
	struct ACL_vector acl = {0};
	size_t n = a->nacl;
	char why[256];
	int created = 0, rc = 1;

	if (len < 0 || len > INT_MAX) { /* parse_args caps --max-bytes: cannot happen */
		fprintf(stderr, "zkw-push: %ld bytes is more than a ZooKeeper node can take\n", len);
		return 1;
	}
	if (!a->acl && zkw_auth_acl_parse(spec, &chosen, &n, why, sizeof(why))) {
		fprintf(stderr, "zkw-push: the default ACL %s: %s\n", spec, why);
		return 1;
	}
	if (zkw_zk_acl_vector(a->acl ? a->acl : chosen, n, &acl)) {
		fprintf(stderr, "zkw-push: no memory for the ACL\n");
	} else if (zkw_zk_put_acl(zh, path, data, (int)len, &acl, &created, why, sizeof(why))) {
		fprintf(stderr, "zkw-push: cannot write %s: %s\n", path, why);
	} else {
		printf(created ? "creating conf node\n" : "updating conf file\n");
		if (created && !a->acl && !authenticated)
			fprintf(stderr,
			        "zkw-push: warning: created %s with the open ACL %s: anyone may change or "
			        "delete it; give --auth-file (creator all, world read) or choose with "
			        "--acl\n",
			        path, ZKW_ACL_DEFAULT_OPEN);
		rc = 0;
	}
	free(acl.data);
	free(chosen);
	return rc;
}

/* What a run holds, released at every exit. */
static void release(struct push_args *a, zkw_session_credential *cred, size_t ncred, char *data)
{
	free(a->acl);
	zkw_auth_credentials_free(cred, ncred);
	free(data);
}

int main(int argc, char **argv)
{
	struct push_args a = {.timeout_ms = ZKW_SESSION_TIMEOUT_MS_DEFAULT, .max_bytes = ZKW_ZK_DATA_MAX};
	char path[ZKW_POINTER_MAX], why[512];
	zkw_session_credential *cred = NULL;
	size_t ncred = 0;
	char *data = NULL;
	long len = 0;
	size_t need = 0;
	zhandle_t *zh;
	int rc;

	rc = parse_args(argc, argv, &a);
	if (rc) {
		release(&a, NULL, 0, NULL);
		return rc < 0 ? (fflush(stdout) == 0 ? 0 : 1) : rc;
	}
	rc = node_path(&a, path, sizeof(path));
	if (rc) {
		release(&a, NULL, 0, NULL);
		return rc;
	}
	if (a.auth_file && zkw_auth_file_read(a.auth_file, &cred, &ncred, why, sizeof(why))) {
		fprintf(stderr, "zkw-push: --auth-file: %s\n", why);
		release(&a, NULL, 0, NULL);
		return 1;
	}
	if (a.file) {
		rc = slurp(a.file, a.max_bytes, &data, &len, &need);
		if (rc == -EFBIG) {
			fprintf(stderr, "zkw-push: %s is larger than %ld bytes (%s); nothing pushed\n",
			        a.file, a.max_bytes,
			        a.max_bytes == ZKW_ZK_DATA_MAX ? "ZooKeeper's limit" : "--max-bytes");
			release(&a, cred, ncred, data);
			return 1;
		}
		if (rc == -ENOMEM) {
			fprintf(stderr,
			        "zkw-push: cannot read %s: out of memory growing the buffer to %zu bytes "
			        "(%ld bytes read); nothing pushed\n",
			        a.file, need, len);
			release(&a, cred, ncred, data);
			return 1;
		}
		if (rc) {
			fprintf(stderr, "zkw-push: cannot read %s: %s\n", a.file, strerror(-rc));
			release(&a, cred, ncred, data);
			return 1;
		}
	}
	zoo_set_debug_level(0); /* the client's own log: our one-line errors say what failed */
	if (zkw_zk_connect(&zh, a.hosts, a.timeout_ms, ZKW_SESSION_TIMEOUT_MS_DEFAULT, why, sizeof(why))) {
		fprintf(stderr, "zkw-push: %s\n", why);
		release(&a, cred, ncred, data);
		return 1;
	}
	if (ncred && zkw_zk_auth(zh, cred, ncred, a.timeout_ms, why, sizeof(why))) {
		fprintf(stderr, "zkw-push: %s (credentials from %s); nothing pushed\n", why, a.auth_file);
		zkw_zk_close(zh);
		release(&a, cred, ncred, data);
		return 1;
	}
	rc = a.wipe ? wipe(zh, path) : push(zh, &a, ncred > 0, path, data, len);
	zkw_zk_close(zh);
	release(&a, cred, ncred, data);
	return rc;
}
