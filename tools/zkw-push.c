/* SPDX-License-Identifier: Apache-2.0 */
/* zkw-push - push a local file into ZooKeeper as PATH/ID (the seed's file
 * pusher, without its path-joining bugs).
 *
 *     zkw-push -f settings.txt -i myconfig -p /tmp/ -z 127.0.0.1:2181
 *     echo /tmp/myconfig | zkw-push -f - -i pointer1 -p /tmp_pointers -z ...
 *     zkw-push -w -i myconfig -p /tmp -z ...        # wipe: null data
 *
 * All or nothing: a file that cannot be read whole (an I/O error, no memory
 * for the buffer, larger than --max-bytes) pushes nothing. --max-bytes
 * defaults to ZooKeeper's default limit and goes up to INT_MAX, the largest
 * length the ZooKeeper client takes (for servers with a larger
 * jute.maxbuffer).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zkw/watcher.h>

#include "zkw_opt.h"
#include "zkw_zk.h"

#define EXIT_USAGE 2

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: zkw-push -f FILE -i ID -p PATH -z HOSTS [-w] [--timeout MS]\n"
	        "Push FILE into ZooKeeper as node PATH/ID, creating missing parents.\n"
	        "  -f, --file FILE       file to push ('-' reads standard input)\n"
	        "  -i, --id ID           node name under PATH\n"
	        "  -p, --path PATH       absolute parent path ('/tmp' or '/tmp/')\n"
	        "  -z, --zookeeper HOSTS connect string, e.g. 127.0.0.1:2181[,host:port...][/chroot]\n"
	        "  -w, --wipe            set the node's data to null instead of pushing a file\n"
	        "      --timeout MS      connect timeout (default %d)\n"
	        "      --max-bytes N     refuse content larger than N (default %d, ZooKeeper's limit;\n"
	        "                        at most %d)\n"
	        "  -h, --help            this help\n",
	        ZKW_SESSION_TIMEOUT_MS_DEFAULT, ZKW_ZK_DATA_MAX, INT_MAX);
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
	const char *file, *id, *parent, *hosts;
	int wipe;
	int timeout_ms;
	long max_bytes;
};

static int parse_args(int argc, char **argv, struct push_args *a)
{
	struct zkw_opt o;
	int c;

	zkw_opt_init(&o, argc, argv, "zkw-push",
	             "f|file: i|id: p|path: z|zookeeper: w|wipe T=timeout: M=max-bytes: h|help", usage);
	while ((c = zkw_opt_next(&o)) != -1) {
		switch (c) {
		case 'f': a->file = o.arg; break;
		case 'i': a->id = o.arg; break;
		case 'p': a->parent = o.arg; break;
		case 'z': a->hosts = o.arg; break;
		case 'w': a->wipe = 1; break;
		case 'T':
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
		        : !a->parent ? "-p PATH"
		        : !a->hosts  ? "-z HOSTS"
		                     : "-f FILE (or -w)");
		usage(stderr);
		return EXIT_USAGE;
	}
	if (a->file && a->wipe) {
		fprintf(stderr, "zkw-push: -f and -w exclude each other\n");
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
		fprintf(stderr, "zkw-push: -p %s: the parent path must be absolute (start with '/')\n",
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

static int push(zhandle_t *zh, const char *path, const char *data, long len)
{
	char why[256];
	int created = 0;

	if (len < 0 || len > INT_MAX) { /* parse_args caps --max-bytes: cannot happen */
		fprintf(stderr, "zkw-push: %ld bytes is more than a ZooKeeper node can take\n", len);
		return 1;
	}
	if (zkw_zk_put(zh, path, data, (int)len, &created, why, sizeof(why))) {
		fprintf(stderr, "zkw-push: cannot write %s: %s\n", path, why);
		return 1;
	}
	printf(created ? "creating conf node\n" : "updating conf file\n");
	return 0;
}

int main(int argc, char **argv)
{
	struct push_args a = {.timeout_ms = ZKW_SESSION_TIMEOUT_MS_DEFAULT, .max_bytes = ZKW_ZK_DATA_MAX};
	char path[ZKW_POINTER_MAX], why[512];
	char *data = NULL;
	long len = 0;
	size_t need = 0;
	zhandle_t *zh;
	int rc;

	rc = parse_args(argc, argv, &a);
	if (rc)
		return rc;
	rc = node_path(&a, path, sizeof(path));
	if (rc)
		return rc;
	if (a.file) {
		rc = slurp(a.file, a.max_bytes, &data, &len, &need);
		if (rc == -EFBIG) {
			fprintf(stderr, "zkw-push: %s is larger than %ld bytes (%s); nothing pushed\n",
			        a.file, a.max_bytes,
			        a.max_bytes == ZKW_ZK_DATA_MAX ? "ZooKeeper's limit" : "--max-bytes");
			free(data);
			return 1;
		}
		if (rc == -ENOMEM) {
			fprintf(stderr,
			        "zkw-push: cannot read %s: out of memory growing the buffer to %zu bytes "
			        "(%ld bytes read); nothing pushed\n",
			        a.file, need, len);
			free(data);
			return 1;
		}
		if (rc) {
			fprintf(stderr, "zkw-push: cannot read %s: %s\n", a.file, strerror(-rc));
			free(data);
			return 1;
		}
	}
	zoo_set_debug_level(0); /* the client's own log: our one-line errors say what failed */
	if (zkw_zk_connect(&zh, a.hosts, a.timeout_ms, ZKW_SESSION_TIMEOUT_MS_DEFAULT, why, sizeof(why))) {
		fprintf(stderr, "zkw-push: %s\n", why);
		free(data);
		return 1;
	}
	rc = a.wipe ? wipe(zh, path) : push(zh, path, data, len);
	zkw_zk_close(zh);
	free(data);
	return rc;
}
