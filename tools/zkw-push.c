/* zkw-push - push a local file into ZooKeeper as PATH/ID (the seed's file
 * pusher, without its path-joining bugs).
 *
 *     zkw-push -f settings.txt -i myconfig -p /tmp/ -z 127.0.0.1:2181
 *     echo /tmp/myconfig | zkw-push -f - -i pointer1 -p /tmp_pointers -z ...
 *     zkw-push -w -i myconfig -p /tmp -z ...        # wipe: null data
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zkw/watcher.h>

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
	        "      --timeout MS      connect timeout (default 10000)\n"
	        "      --max-bytes N     refuse content larger than N (default %d, ZooKeeper's limit)\n"
	        "  -h, --help            this help\n",
	        ZKW_ZK_DATA_MAX);
}

/* Read all of a file (or stdin) into a heap buffer, refusing more than max
 * bytes. 0 or -errno; -EFBIG when too large (*len = bytes seen so far). */
static int slurp(const char *file, long max, char **data, long *len)
{
	FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "rb");
	size_t cap = 65536, n = 0, got;
	char *buf;
	int err = 0;

	if (!f)
		return -errno;
	buf = malloc(cap);
	while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
		n += got;
		if ((long)n > max) {
			err = -EFBIG;
			break;
		}
		if (n == cap) {
			char *bigger = realloc(buf, cap * 2);

			if (!bigger)
				break;
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
	static const struct option opts[] = {
	        {"file", required_argument, NULL, 'f'},
	        {"id", required_argument, NULL, 'i'},
	        {"path", required_argument, NULL, 'p'},
	        {"zookeeper", required_argument, NULL, 'z'},
	        {"wipe", no_argument, NULL, 'w'},
	        {"timeout", required_argument, NULL, 'T'},
	        {"max-bytes", required_argument, NULL, 'M'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	char *end;
	int c;

	while ((c = getopt_long(argc, argv, "f:i:p:z:wh", opts, NULL)) != -1) {
		switch (c) {
		case 'f': a->file = optarg; break;
		case 'i': a->id = optarg; break;
		case 'p': a->parent = optarg; break;
		case 'z': a->hosts = optarg; break;
		case 'w': a->wipe = 1; break;
		case 'T':
			a->timeout_ms = (int)strtol(optarg, &end, 10);
			if (*end || a->timeout_ms <= 0) {
				fprintf(stderr,
				        "zkw-push: --timeout wants a positive number of ms, not \"%s\"\n",
				        optarg);
				return EXIT_USAGE;
			}
			break;
		case 'M':
			a->max_bytes = strtol(optarg, &end, 10);
			if (*end || a->max_bytes < 0) {
				fprintf(stderr, "zkw-push: --max-bytes wants a byte count, not \"%s\"\n",
				        optarg);
				return EXIT_USAGE;
			}
			break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return EXIT_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "zkw-push: unexpected argument \"%s\"\n", argv[optind]);
		return EXIT_USAGE;
	}
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
	int rc = zoo_set(zh, path, NULL, -1, -1);

	if (rc == ZNONODE) {
		fprintf(stderr, "zkw-push: conf node %s does not exist, nothing to wipe\n", path);
		return 1;
	}
	if (rc != ZOK) {
		fprintf(stderr, "zkw-push: cannot wipe %s: %s\n", path, zerror(rc));
		return 1;
	}
	printf("wiping conf node %s\n", path);
	return 0;
}

static int push(zhandle_t *zh, const char *path, const char *data, long len)
{
	int created = 0;
	int rc = zkw_zk_put(zh, path, data, (int)len, &created);

	if (rc != ZOK) {
		fprintf(stderr, "zkw-push: cannot write %s: %s\n", path, zerror(rc));
		return 1;
	}
	printf(created ? "creating conf node\n" : "updating conf file\n");
	return 0;
}

int main(int argc, char **argv)
{
	struct push_args a = {.timeout_ms = 10000, .max_bytes = ZKW_ZK_DATA_MAX};
	char path[ZKW_POINTER_MAX], why[512];
	char *data = NULL;
	long len = 0;
	zhandle_t *zh;
	int rc;

	rc = parse_args(argc, argv, &a);
	if (rc)
		return rc;
	rc = node_path(&a, path, sizeof(path));
	if (rc)
		return rc;
	if (a.file) {
		rc = slurp(a.file, a.max_bytes, &data, &len);
		if (rc == -EFBIG) {
			fprintf(stderr,
			        "zkw-push: %s is larger than %ld bytes (ZooKeeper's limit); nothing pushed\n",
			        a.file, a.max_bytes);
			free(data);
			return 1;
		}
		if (rc) {
			fprintf(stderr, "zkw-push: cannot read %s: %s\n", a.file, strerror(-rc));
			free(data);
			return 1;
		}
	}
	zh = zkw_zk_connect(a.hosts, a.timeout_ms, 10000, why, sizeof(why));
	if (!zh) {
		fprintf(stderr, "zkw-push: %s\n", why);
		free(data);
		return 1;
	}
	rc = a.wipe ? wipe(zh, path) : push(zh, path, data, len);
	zkw_zk_close(zh);
	free(data);
	return rc;
}
