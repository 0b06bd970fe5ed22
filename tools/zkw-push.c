/* SPDX-License-Identifier: Apache-2.0 */
/* zkw-push - push a local file into ZooKeeper as PATH/ID (the seed's file
 * pusher, without its path-joining bugs), a directory as PATH/ID's children
 * in one transaction, or a large file as chunks and a manifest.
 *
 *     zkw-push -z 127.0.0.1:2181 -f settings.txt --parent /tmp/ -i myconfig
 *     echo /tmp/myconfig | zkw-push -z ... -f - --parent /tmp_pointers -i pointer1
 *     zkw-push -z ... --wipe --parent /tmp -i myconfig      # null data
 *     zkw-push -z ... --auth-file ~/.zkw-auth -f settings.txt --parent /app -i conf
 *     zkw-push -z ... --bundle conf.d/ --parent /app -i conf.d   # one multi-op
 *     zkw-push -z ... -f big.json --parent /app -i big           # > 1 MiB: chunked
 *
 * All or nothing: a file that cannot be read whole (an I/O error, no memory
 * for the buffer, larger than it may be) pushes nothing. Content up to
 * --max-bytes (ZooKeeper's default limit; up to INT_MAX, the largest length
 * the ZooKeeper client takes, for servers with a larger jute.maxbuffer) is
 * the node's data; larger content, or any with --chunked, up to 256 MiB, is
 * chunked (docs/design.md, "Chunked content"; the broker parses it): immutable
 * chunk nodes under PATH/ID/zkw-chunks/<id>/, then the manifest switched
 * into PATH/ID in one write, then old chunk directories removed (all but
 * the new one, the one the replaced manifest named, and those younger than
 * --grace). A plain push or a wipe collects them by the same rule.
 *
 * --bundle DIR makes PATH/ID's children equal DIR's regular files in one
 * zoo_multi: creates, setData for the changed, deletes for the children no
 * longer there, and a version check for each unchanged one (left untouched:
 * its mzxid stays), so a reader sees all of the change or none of it. A
 * concurrent writer makes the transaction fail as a whole; it is computed
 * again, a few times.
 *
 * Its letters mean what they mean in the other tools (README.md, "One
 * command-line language"); the seed pusher's spellings stay as hidden
 * aliases: -p/--path for --parent, -w for --wipe, --zoo-keeper, and
 * --timeout for --init-timeout. Nodes it creates get --acl, by default
 * creator all + world read with --auth-file, the open ACL without (said on
 * stderr when it creates one); an existing node keeps its ACL.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include <zkw/segment.h> /* ZKW_CAPACITY_MAX */
#include <zkw/watcher.h>

#include "zkw_auth.h"
#include "zkw_opt.h"
#include "zkw_zk.h"

#define EXIT_USAGE 2

/* Chunked content (the manifest format is shared with the broker). */
#define CHUNKS_NODE        "zkw-chunks"
#define CHUNK_SIZE_DEFAULT (1024 * 1024 - 8 * 1024) /* under jute.maxbuffer, with room for the packet */
#define CHUNK_SIZE_MAX     (1024 * 1024)
#define CHUNK_COUNT_MAX    99999999 /* chunk names are 8 decimal digits */
#define CHUNK_ID_LEN       16
#define CHUNK_WINDOW       8 /* creates in flight */
#define GRACE_S_DEFAULT    60
#define MANIFEST_MAX       4096
#define MANIFEST_MAGIC     "zkw-chunked 1\n"

/* A bundle's transaction: one request, under jute.maxbuffer with room. */
#define BUNDLE_REQUEST_MAX (1024 * 1024 - 8 * 1024)
/* Attempts at a write another writer keeps changing under us. */
#define CONFLICT_ATTEMPTS 5

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: zkw-push -z HOSTS -f FILE --parent PATH -i ID [options]\n"
	        "       zkw-push -z HOSTS --bundle DIR --parent PATH -i ID [options]\n"
	        "       zkw-push -z HOSTS --wipe --parent PATH -i ID [options]\n"
	        "Push FILE into ZooKeeper as node PATH/ID, creating missing parents, or DIR's files\n"
	        "as PATH/ID's children in one transaction.\n"
	        "  -z, --zookeeper HOSTS  connect string: host:port[,host:port...][/chroot]\n"
	        "  -f, --file FILE        the configuration file to push ('-' reads standard input)\n"
	        "  -i, --id ID            node name under PATH\n"
	        "      --parent PATH      absolute parent path ('/tmp' or '/tmp/')\n"
	        "      --wipe             set the node's data to null instead of pushing a file\n"
	        "      --bundle DIR       make the node's children DIR's regular files (not symbolic\n"
	        "                         links; names starting with '.' and subdirectories skipped),\n"
	        "                         created, updated and deleted in one transaction\n"
	        "      --chunked          store FILE as chunk nodes under PATH/ID/" CHUNKS_NODE " and a\n"
	        "                         manifest in PATH/ID (up to %u bytes)\n"
	        "      --chunk-size BYTES the size of a chunk (default %d, 1 to %d)\n"
	        "      --grace SECONDS    keep old chunk directories this long (default %d)\n"
	        "      --auth-file FILE   ZooKeeper credentials, a line 'digest USER:PASSWORD' each;\n"
	        "                         FILE must be yours, mode 0600 or stricter\n"
	        "      --acl SPEC         ACL of the nodes it creates: SCHEME:ID:PERMS,... (default\n"
	        "                         %s with --auth-file, else %s);\n"
	        "                         an existing node keeps its own\n"
	        "      --init-timeout MS  how long to wait for a server to answer (default %d)\n"
	        "      --max-bytes N      the largest content stored as the node's data (default %d,\n"
	        "                         ZooKeeper's limit; at most %d): larger content is chunked,\n"
	        "                         a larger bundle file refused\n"
	        "  -V, --version          print the version\n"
	        "  -h, --help             this help\n"
	        "Exit status: 0 pushed (or nothing to change), 1 failed (nothing pushed), 2 bad usage.\n",
	        ZKW_CAPACITY_MAX, CHUNK_SIZE_DEFAULT, CHUNK_SIZE_MAX, GRACE_S_DEFAULT, ZKW_ACL_DEFAULT_AUTH,
	        ZKW_ACL_DEFAULT_OPEN, ZKW_SESSION_TIMEOUT_MS_DEFAULT, ZKW_ZK_DATA_MAX, INT_MAX);
}

/* Read all of fd into a heap buffer, refusing more than max bytes. 0 or
 * -errno; -EFBIG when too large (*len = bytes seen so far); -ENOMEM when
 * the buffer cannot grow (*len = bytes read, *need = the size asked for).
 * Never a partial success; *data is the caller's to free in every case. */
static int read_all(int fd, long max, char **data, long *len, size_t *need)
{
	size_t cap = 65536, n = 0;
	char *buf = malloc(cap);
	int err = 0;

	*need = cap;
	while (buf) {
		ssize_t got;

		if (n == cap) {
			/* Double, but never past max + 1: one byte more than
			 * allowed is all it takes to refuse. */
			size_t want = cap * 2 > (size_t)max + 1 ? (size_t)max + 1 : cap * 2;
			char *bigger;

			*need = want;
			bigger = realloc(buf, want);
			if (!bigger) {
				err = -ENOMEM; /* buf and its n bytes stay: the caller frees */
				break;
			}
			buf = bigger;
			cap = want;
		}
		got = read(fd, buf + n, cap - n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			err = -errno;
			break;
		}
		if (got == 0)
			break;
		n += (size_t)got;
		if ((long)n > max) {
			err = -EFBIG;
			break;
		}
	}
	if (!buf)
		err = -ENOMEM;
	*data = buf;
	*len = (long)n;
	return err;
}

/* read_all of a file, or of standard input for "-". */
static int slurp(const char *file, long max, char **data, long *len, size_t *need)
{
	int fd = strcmp(file, "-") == 0 ? STDIN_FILENO : open(file, O_RDONLY | O_CLOEXEC);
	int err;

	*data = NULL;
	*len = 0;
	if (fd < 0)
		return -errno;
	err = read_all(fd, max, data, len, need);
	if (fd != STDIN_FILENO)
		close(fd);
	return err;
}

struct push_args {
	const char *file, *id, *parent, *hosts, *auth_file, *acl_spec, *bundle;
	int wipe, chunked;
	int timeout_ms;
	long max_bytes;
	int chunk_size, chunk_size_given;
	int grace_s, grace_given;
	zkw_session_acl *acl; /* --acl parsed, else NULL */
	size_t nacl;
};

/* The options, once. Hidden aliases (the seed pusher's spellings, kept for
 * scripts): p|path for P=parent, w for W=wipe, Z=zoo-keeper for
 * z|zookeeper, t=timeout for T=init-timeout. */
#define PUSH_OPTIONS                                                                                         \
	"z|zookeeper: Z=zoo-keeper: f|file: i|id: P=parent: p|path: W=wipe w A=auth-file: a=acl: "           \
	"T=init-timeout: t=timeout: M=max-bytes: B=bundle: C=chunked S=chunk-size: G=grace: V|version "      \
	"h|help"

/* What the options say together; 0 or EXIT_USAGE after saying why. */
static int check_modes(const struct push_args *a)
{
	if (!a->id || !a->parent || !a->hosts || (!a->file && !a->wipe && !a->bundle)) {
		fprintf(stderr, "zkw-push: missing %s\n",
		        !a->id       ? "-i ID"
		        : !a->parent ? "--parent PATH"
		        : !a->hosts  ? "-z HOSTS"
		                     : "-f FILE (or --bundle DIR, or --wipe)");
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!!a->file + !!a->wipe + !!a->bundle > 1) {
		fprintf(stderr, "zkw-push: %s exclude each other\n",
		        a->file && a->wipe ? "-f and --wipe"
		        : a->file          ? "-f and --bundle"
		                           : "--wipe and --bundle");
		return EXIT_USAGE;
	}
	if (!a->file && (a->chunked || a->chunk_size_given)) {
		fprintf(stderr, "zkw-push: %s applies to -f FILE only\n",
		        a->chunked ? "--chunked" : "--chunk-size");
		return EXIT_USAGE;
	}
	if (a->bundle && a->grace_given) {
		fprintf(stderr,
		        "zkw-push: --grace applies to -f FILE and --wipe only (a bundle has no chunks)\n");
		return EXIT_USAGE;
	}
	return 0;
}

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
		case 'B': a->bundle = o.arg; break;
		case 'C': a->chunked = 1; break;
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
		case 'S':
			if (zkw_opt_int(&o, "a byte count from 1 to 1048576", 1, CHUNK_SIZE_MAX,
			                &a->chunk_size))
				return EXIT_USAGE;
			a->chunk_size_given = 1;
			break;
		case 'G':
			if (zkw_opt_int(&o, "a number of seconds from 0 to 2147483647", 0, INT_MAX,
			                &a->grace_s))
				return EXIT_USAGE;
			a->grace_given = 1;
			break;
		default: return EXIT_USAGE;
		}
	}
	if (zkw_opt_no_operands(&o) || check_modes(a))
		return EXIT_USAGE;
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

/* Bytes as a reader sees them in a message: controls and non-ASCII as \xNN. */
static const char *escaped(const char *s, char *buf, size_t cap)
{
	size_t n = 0;

	for (; *s && n + 5 < cap; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch < 0x20 || ch >= 0x7f || ch == '\\')
			n += (size_t)snprintf(buf + n, cap - n, "\\x%02x", ch);
		else
			buf[n++] = (char)ch;
	}
	buf[n] = '\0';
	return buf;
}

/* The ACL of the nodes a push creates: --acl, else the default for the
 * credentials (*chosen, to free). 0, or 1 after saying why. */
static int creation_acl(const struct push_args *a, bool authenticated, zkw_session_acl **chosen,
                        struct ACL_vector *acl)
{
	const char *spec = authenticated ? ZKW_ACL_DEFAULT_AUTH : ZKW_ACL_DEFAULT_OPEN;
	size_t n = a->nacl;
	char why[256];

	*chosen = NULL;
	if (!a->acl && zkw_auth_acl_parse(spec, chosen, &n, why, sizeof(why))) {
		fprintf(stderr, "zkw-push: the default ACL %s: %s\n", spec, why);
		return 1;
	}
	if (zkw_zk_acl_vector(a->acl ? a->acl : *chosen, n, acl)) {
		fprintf(stderr, "zkw-push: no memory for the ACL\n");
		return 1;
	}
	return 0;
}

static void warn_open_acl(const struct push_args *a, bool authenticated, const char *what)
{
	if (a->acl || authenticated)
		return;
	fprintf(stderr,
	        "zkw-push: warning: created %s with the open ACL %s: anyone may change or delete it; give "
	        "--auth-file (creator all, world read) or choose with --acl\n",
	        what, ZKW_ACL_DEFAULT_OPEN);
}

/* ---- chunked content: the manifest ---------------------------------------- */

/* A decimal field of a manifest line, whole: 0 or -1. */
static int manifest_number(const char *s, size_t len, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (len == 0 || len > 20 || (len > 1 && s[0] == '0'))
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9' || v > (max - (uint64_t)(s[i] - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return 0;
}

static bool chunk_id_valid(const char *s, size_t len)
{
	if (len != CHUNK_ID_LEN)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* Is content (len bytes) the manifest of node path? Then its chunk
 * directory's id into id (CHUNK_ID_LEN + 1 bytes) and 0; else -1. Only the
 * replaced content's directory matters here (it is kept for one more push),
 * so anything that is not exactly a manifest of this node is none. */
static int manifest_chunk_id(const char *content, size_t len, const char *path, char *id)
{
	static const char *const key[] = {"zkw-chunked ", "size ", "chunks ", "chunk-size ", "xxh3 ", "dir "};
	uint64_t size = 0, chunks = 0, chunk_size = 0, v;
	const char *p = content, *end = content + len;
	size_t plen = strlen(path);

	for (size_t k = 0; k < sizeof(key) / sizeof(key[0]); k++) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t klen = strlen(key[k]), vlen;
		const char *value = p + klen;

		if (!nl || (size_t)(nl - p) < klen || memcmp(p, key[k], klen) != 0)
			return -1;
		vlen = (size_t)(nl - value);
		switch (k) {
		case 0:
			if (vlen != 1 || value[0] != '1')
				return -1;
			break;
		case 1:
			if (manifest_number(value, vlen, ZKW_CAPACITY_MAX, &size))
				return -1;
			break;
		case 2:
			if (manifest_number(value, vlen, CHUNK_COUNT_MAX, &chunks))
				return -1;
			break;
		case 3:
			if (manifest_number(value, vlen, CHUNK_SIZE_MAX, &chunk_size) || chunk_size == 0)
				return -1;
			break;
		case 4:
			if (!chunk_id_valid(value, vlen)) /* 16 lowercase hex digits, as an id */
				return -1;
			break;
		case 5:
			if (vlen != plen + sizeof("/" CHUNKS_NODE "/") - 1 + CHUNK_ID_LEN ||
			    memcmp(value, path, plen) != 0 ||
			    memcmp(value + plen, "/" CHUNKS_NODE "/", sizeof("/" CHUNKS_NODE "/") - 1) != 0 ||
			    !chunk_id_valid(value + vlen - CHUNK_ID_LEN, CHUNK_ID_LEN))
				return -1;
			memcpy(id, value + vlen - CHUNK_ID_LEN, CHUNK_ID_LEN);
			id[CHUNK_ID_LEN] = '\0';
			break;
		}
		p = nl + 1;
	}
	v = size ? (size + chunk_size - 1) / chunk_size : 0;
	return p == end && v == chunks ? 0 : -1;
}

/* A new chunk directory id: the time in ms, then 16 random bits, so that
 * ids sort by creation. */
static void new_chunk_id(char *id)
{
	struct timespec now;
	uint16_t noise = 0;

	clock_gettime(CLOCK_REALTIME, &now);
	if (getrandom(&noise, sizeof(noise), 0) != (ssize_t)sizeof(noise))
		noise = (uint16_t)(now.tv_nsec ^ getpid());
	snprintf(id, CHUNK_ID_LEN + 1, "%016" PRIx64,
	         ((uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000) << 16 | noise);
}

/* ---- switching a node's content ------------------------------------------- */

/* What switch_content did. */
struct switched {
	int created;                     /* the node was created */
	char previous[CHUNK_ID_LEN + 1]; /* the replaced manifest's chunk directory, else "" */
	int64_t mtime;                   /* the server's time of the write, ms */
};

/* Write len bytes of data (NULL: null data) into path in one setData, or
 * one create when it is missing (and may_create; parents too), and learn
 * which content it replaced: the setData names the version read, so that
 * content is exactly the one replaced (another writer in between: read
 * again). 0 or -errno with why. */
static int switch_content(zhandle_t *zh, const char *path, const char *data, int len, bool may_create,
                          const struct ACL_vector *acl, struct switched *out, char *why, size_t whylen)
{
	char old[MANIFEST_MAX];
	int zrc = ZOK;

	*out = (struct switched){0};
	for (int attempt = 0; attempt < CONFLICT_ATTEMPTS; attempt++) {
		struct Stat st;
		int olen = sizeof(old);

		zrc = zoo_get(zh, path, 0, old, &olen, &st);
		if (zrc == ZNONODE && may_create) {
			int err = zkw_zk_create_parents_acl(zh, path, acl, why, whylen);

			if (err)
				return err;
			zrc = zoo_create2(zh, path, data, data ? len : -1, acl, 0, NULL, 0, &st);
			if (zrc == ZNODEEXISTS) /* lost a race with another creator */
				continue;
			if (zrc == ZOK) {
				out->created = 1;
				out->mtime = st.mtime;
			}
			break;
		}
		if (zrc != ZOK)
			break;
		out->previous[0] = '\0';
		if (olen > 0 && st.dataLength == olen)
			(void)manifest_chunk_id(old, (size_t)olen, path, out->previous);
		zrc = zoo_set2(zh, path, data, data ? len : -1, st.version, &st);
		if (zrc == ZBADVERSION || (zrc == ZNONODE && may_create))
			continue; /* changed or deleted since we read it */
		if (zrc == ZOK)
			out->mtime = st.mtime;
		break;
	}
	return zrc == ZOK ? 0 : zkw__errorf(why, whylen, zkw_zk_errno(zrc), "%s", zerror(zrc));
}

/* Remove the chunk directories of path nobody needs any more: all but
 * keep_new (just written), keep_previous (the replaced manifest's: a
 * reader may still be reading it) and those created less than grace_s
 * before now_ms (the write's time on the server, so no clock is compared
 * with another host's). Only names that are chunk ids are touched. The
 * content is already pushed: a failure here is a warning. */
static void collect_chunk_dirs(zhandle_t *zh, const char *path, const char *keep_new,
                               const char *keep_previous, int64_t now_ms, int grace_s)
{
	char chunks[ZKW_POINTER_MAX + 64], why[256];
	zkw_zk_child *dir = NULL;
	size_t n = 0;
	int err;

	snprintf(chunks, sizeof(chunks), "%s/%s", path, CHUNKS_NODE);
	err = zkw_zk_children_stat(zh, chunks, &dir, &n, why, sizeof(why));
	if (err == -ENOENT)
		return;
	if (err) {
		fprintf(stderr, "zkw-push: warning: cannot list the old chunk directories in %s: %s\n",
		        chunks, why);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		char victim[ZKW_POINTER_MAX + 128];

		if (!chunk_id_valid(dir[i].name, strlen(dir[i].name)) || strcmp(dir[i].name, keep_new) == 0 ||
		    strcmp(dir[i].name, keep_previous) == 0 ||
		    now_ms - dir[i].stat.ctime < (int64_t)grace_s * 1000)
			continue;
		snprintf(victim, sizeof(victim), "%s/%s", chunks, dir[i].name);
		err = zkw_zk_delete_tree(zh, victim, why, sizeof(why));
		if (err == 0)
			printf("removed old chunk directory %s\n", victim);
		else if (err != -ENOENT)
			fprintf(stderr, "zkw-push: warning: cannot remove the old chunk directory %s: %s\n",
			        victim, why);
	}
	zkw_zk_children_free(dir, n);
}

/* ---- plain pushes and wipes -------------------------------------------------- */

static int wipe(zhandle_t *zh, const struct push_args *a, const char *path)
{
	struct switched sw;
	char why[256];
	int err = switch_content(zh, path, NULL, -1, false, NULL, &sw, why, sizeof(why));

	if (err == -ENOENT) {
		fprintf(stderr, "zkw-push: conf node %s does not exist, nothing to wipe\n", path);
		return 1;
	}
	if (err) {
		fprintf(stderr, "zkw-push: cannot wipe %s: %s\n", path, why);
		return 1;
	}
	printf("wiping conf node %s\n", path);
	collect_chunk_dirs(zh, path, "", sw.previous, sw.mtime, a->grace_s);
	return 0;
}

static int push_plain(zhandle_t *zh, const struct push_args *a, bool authenticated,
                      const struct ACL_vector *acl, const char *path, const char *data, long len)
{
	struct switched sw;
	char why[256];

	if (len < 0 || len > INT_MAX) { /* chunked above --max-bytes: cannot happen */
		fprintf(stderr, "zkw-push: %ld bytes is more than a ZooKeeper node can take\n", len);
		return 1;
	}
	if (switch_content(zh, path, data, (int)len, true, acl, &sw, why, sizeof(why))) {
		fprintf(stderr, "zkw-push: cannot write %s: %s\n", path, why);
		return 1;
	}
	printf(sw.created ? "creating conf node\n" : "updating conf file\n");
	if (sw.created)
		warn_open_acl(a, authenticated, path);
	collect_chunk_dirs(zh, path, "", sw.previous, sw.mtime, a->grace_s);
	return 0;
}

/* ---- chunked pushes ----------------------------------------------------------- */

struct chunking {
	const char *dir;
	const char *data;
	size_t len, chunk_size;
};

/* zkw_zk_node_fn: chunk i of the content. */
static int chunk_node(void *ctx, size_t i, char *path, size_t cap, const char **data, int *len, char *why,
                      size_t whylen)
{
	const struct chunking *c = ctx;
	size_t off = i * c->chunk_size;
	int n = snprintf(path, cap, "%s/%08zu", c->dir, i);

	if (n < 0 || (size_t)n >= cap)
		return zkw__errorf(why, whylen, -ENAMETOOLONG, "chunk path longer than %zu bytes", cap - 1);
	*data = c->data + off;
	*len = (int)(c->len - off < c->chunk_size ? c->len - off : c->chunk_size);
	return 0;
}

/* Can path hold chunked content of len bytes in chunks of chunk_size? 0,
 * or 1 after saying why (before anything is pushed). */
static int chunkable(const char *path, long len, int chunk_size)
{
	size_t chunks = len ? ((size_t)len + (size_t)chunk_size - 1) / (size_t)chunk_size : 0;
	size_t dir_len = strlen(path) + sizeof("/" CHUNKS_NODE "/") - 1 + CHUNK_ID_LEN;

	if (chunks > CHUNK_COUNT_MAX) {
		fprintf(stderr,
		        "zkw-push: %ld bytes in chunks of %d would be %zu chunks, more than %d: give a "
		        "larger "
		        "--chunk-size; nothing pushed\n",
		        len, chunk_size, chunks, CHUNK_COUNT_MAX);
		return 1;
	}
	/* The broker's rule for a manifest's dir (broker/zk/chunks.c): the
	 * node, a chunk name and the dir under ZKW_POINTER_MAX, which keeps
	 * every chunk path a path the tools and the broker take. */
	if (strlen(path) + 1 + 8 + 1 + dir_len >= ZKW_POINTER_MAX) {
		fprintf(stderr,
		        "zkw-push: %s is too long a path for chunked content (%zu bytes; the broker takes a "
		        "chunk directory below a node of up to %d); nothing pushed\n",
		        path, strlen(path), (ZKW_POINTER_MAX - 38 - 1) / 2);
		return 1;
	}
	return 0;
}

static int push_chunked(zhandle_t *zh, const struct push_args *a, bool authenticated,
                        const struct ACL_vector *acl, const char *path, const char *data, long len)
{
	char id[CHUNK_ID_LEN + 1], dir[ZKW_POINTER_MAX + 64], manifest[MANIFEST_MAX], why[512];
	struct chunking c = {
	        .dir = dir, .data = data, .len = (size_t)len, .chunk_size = (size_t)a->chunk_size};
	size_t chunks = len ? ((size_t)len + c.chunk_size - 1) / c.chunk_size : 0;
	uint64_t hash = XXH3_64bits(data, (size_t)len);
	struct switched sw;
	struct Stat st;
	int err, zrc = ZNODEEXISTS, mlen, existed;

	err = zkw_zk_stat(zh, path, &st, why, sizeof(why));
	if (err && err != -ENOENT) {
		fprintf(stderr, "zkw-push: cannot read %s: %s; nothing pushed\n", path, why);
		return 1;
	}
	existed = err == 0;
	/* <node> and <node>/zkw-chunks (the parents of the directory), then
	 * a directory of our own: a new id, never one that exists. */
	for (int attempt = 0; attempt < CONFLICT_ATTEMPTS && zrc == ZNODEEXISTS; attempt++) {
		new_chunk_id(id);
		snprintf(dir, sizeof(dir), "%s/%s/%s", path, CHUNKS_NODE, id);
		err = zkw_zk_create_parents_acl(zh, dir, acl, why, sizeof(why));
		if (err) {
			fprintf(stderr, "zkw-push: cannot create the parents of %s: %s; nothing pushed\n",
			        dir, why);
			return 1;
		}
		zrc = zoo_create(zh, dir, "", 0, acl, 0, NULL, 0);
	}
	if (zrc != ZOK) {
		fprintf(stderr, "zkw-push: cannot create the chunk directory %s: %s; nothing pushed\n", dir,
		        zerror(zrc));
		return 1;
	}
	err = zkw_zk_create_pipelined(zh, chunks, chunk_node, &c, acl, CHUNK_WINDOW, why, sizeof(why));
	mlen = snprintf(manifest, sizeof(manifest),
	                MANIFEST_MAGIC "size %ld\nchunks %zu\nchunk-size %d\nxxh3 %016" PRIx64 "\ndir %s\n",
	                len, chunks, a->chunk_size, (uint64_t)hash, dir);
	if (err)
		fprintf(stderr, "zkw-push: cannot write the chunks of %s: %s; nothing pushed\n", path, why);
	else if (switch_content(zh, path, manifest, mlen, true, acl, &sw, why, sizeof(why)))
		fprintf(stderr, "zkw-push: cannot write the manifest into %s: %s; nothing pushed\n", path,
		        why);
	else
		goto switched;
	/* The manifest still names the old chunks: ours are nobody's. */
	err = zkw_zk_delete_tree(zh, dir, why, sizeof(why));
	if (err && err != -ENOENT)
		fprintf(stderr, "zkw-push: warning: cannot remove the unused chunk directory %s: %s\n", dir,
		        why);
	return 1;

switched:
	printf("%s (chunked): %ld bytes in %zu chunks of %d\n",
	       existed ? "updating conf file" : "creating conf node", len, chunks, a->chunk_size);
	printf("dir %s\nxxh3 %016" PRIx64 "\n", dir, (uint64_t)hash);
	warn_open_acl(a, authenticated, existed ? "the chunk nodes" : "the node and its chunk nodes");
	collect_chunk_dirs(zh, path, id, sw.previous, sw.mtime, a->grace_s);
	return 0;
}

/* ---- bundles ------------------------------------------------------------------- */

struct bundle_file {
	char *name;
	char *data;
	long len;
};

struct bundle {
	const char *dir;
	struct bundle_file *file;
	size_t n, cap;
};

static void bundle_free(struct bundle *b)
{
	for (size_t i = 0; i < b->n; i++) {
		free(b->file[i].name);
		free(b->file[i].data);
	}
	free(b->file);
	*b = (struct bundle){0};
}

static int by_file_name(const void *x, const void *y)
{
	return strcmp(((const struct bundle_file *)x)->name, ((const struct bundle_file *)y)->name);
}

/* Why name cannot be a child of path, or NULL. */
static const char *child_name_problem(const char *path, const char *name)
{
	char probe[ZKW_POINTER_MAX + 8], out[ZKW_POINTER_MAX + 8];
	const char *why = NULL;
	int n;

	if (strcmp(name, CHUNKS_NODE) == 0)
		return "the name " CHUNKS_NODE " is reserved for chunked content";
	for (const char *p = name; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return "a control character in the name";
	if (strlen(path) + 1 + strlen(name) >= ZKW_POINTER_MAX)
		return "the node's path would be too long";
	/* The path rules ZooKeeper's own (UTF-8, the ranges it refuses); the
	 * "/x" after it keeps a trailing blank, which the parser would trim. */
	n = snprintf(probe, sizeof(probe), "/%s/x", name);
	if (n < 0 || (size_t)n >= sizeof(probe) ||
	    zkw_pointer_parse(probe, (size_t)n, out, sizeof(out), &why) != n)
		return why ? why : "not a valid node name";
	return NULL;
}

static int bundle_add(struct bundle *b, const char *name, char *data, long len)
{
	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 16;
		struct bundle_file *bigger = realloc(b->file, cap * sizeof(*bigger));

		if (!bigger)
			return -ENOMEM;
		b->file = bigger;
		b->cap = cap;
	}
	b->file[b->n] = (struct bundle_file){.name = strdup(name), .data = data, .len = len};
	if (!b->file[b->n].name)
		return -ENOMEM;
	b->n++;
	return 0;
}

/* One entry of the bundle directory (open as dfd): read it into b, skip it
 * (a subdirectory, with a warning), or refuse it. 0, or 1 after saying why. */
static int bundle_entry(struct bundle *b, int dfd, const char *name, const char *path, long max_bytes)
{
	char shown[1024];
	const char *problem;
	struct stat st;
	char *data = NULL;
	size_t need = 0;
	long len = 0;
	int fd, err;

	escaped(name, shown, sizeof(shown));
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == -1) {
		fprintf(stderr, "zkw-push: --bundle %s: %s: %s; nothing pushed\n", b->dir, shown,
		        strerror(errno));
		return 1;
	}
	if (S_ISDIR(st.st_mode)) {
		fprintf(stderr,
		        "zkw-push: warning: --bundle %s: %s is a directory: skipped (a bundle is one level "
		        "of files)\n",
		        b->dir, shown);
		return 0;
	}
	if (S_ISLNK(st.st_mode)) {
		fprintf(stderr,
		        "zkw-push: --bundle %s: %s is a symbolic link: a bundle takes regular files only "
		        "(copy "
		        "the file it points at); nothing pushed\n",
		        b->dir, shown);
		return 1;
	}
	if (!S_ISREG(st.st_mode)) {
		fprintf(stderr, "zkw-push: --bundle %s: %s is not a regular file; nothing pushed\n", b->dir,
		        shown);
		return 1;
	}
	if ((problem = child_name_problem(path, name))) {
		fprintf(stderr, "zkw-push: --bundle %s: \"%s\" cannot be a node name: %s; nothing pushed\n",
		        b->dir, shown, problem);
		return 1;
	}
	/* O_NOFOLLOW | O_NONBLOCK and fstat again: what is opened is what
	 * was checked, even if the entry was replaced meanwhile. */
	fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0 || fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		fprintf(stderr, "zkw-push: --bundle %s: cannot read %s: %s; nothing pushed\n", b->dir, shown,
		        fd < 0 ? strerror(errno) : "not a regular file any more");
		if (fd >= 0)
			close(fd);
		return 1;
	}
	err = read_all(fd, max_bytes, &data, &len, &need);
	close(fd);
	if (err == -EFBIG)
		fprintf(stderr,
		        "zkw-push: --bundle %s: %s is larger than %ld bytes (%s; a bundle's files are not "
		        "chunked); nothing pushed\n",
		        b->dir, shown, max_bytes,
		        max_bytes == ZKW_ZK_DATA_MAX ? "ZooKeeper's limit" : "--max-bytes");
	else if (err == -ENOMEM)
		fprintf(stderr,
		        "zkw-push: --bundle %s: cannot read %s: out of memory (%zu bytes); nothing pushed\n",
		        b->dir, shown, need);
	else if (err)
		fprintf(stderr, "zkw-push: --bundle %s: cannot read %s: %s; nothing pushed\n", b->dir, shown,
		        strerror(-err));
	else if (bundle_add(b, name, data, len))
		fprintf(stderr, "zkw-push: --bundle %s: out of memory; nothing pushed\n", b->dir);
	else
		return 0;
	free(data);
	return 1;
}

/* Read the bundle directory's files (sorted by name). 0, or 1 after saying
 * why (nothing is pushed then). */
static int bundle_read(struct bundle *b, const char *dirpath, const char *path, long max_bytes)
{
	struct dirent *e;
	DIR *d;
	int rc = 0;

	*b = (struct bundle){.dir = dirpath};
	d = opendir(dirpath);
	if (!d) {
		fprintf(stderr, "zkw-push: --bundle %s: %s; nothing pushed\n", dirpath, strerror(errno));
		return 1;
	}
	errno = 0;
	while (rc == 0 && (e = readdir(d))) {
		if (e->d_name[0] != '.') /* hidden files, editors' and tools' leftovers, "." and ".." */
			rc = bundle_entry(b, dirfd(d), e->d_name, path, max_bytes);
		errno = 0;
	}
	if (rc == 0 && errno) {
		fprintf(stderr, "zkw-push: --bundle %s: %s; nothing pushed\n", dirpath, strerror(errno));
		rc = 1;
	}
	closedir(d);
	if (rc == 0 && b->n > 1)
		qsort(b->file, b->n, sizeof(b->file[0]), by_file_name);
	return rc;
}

/* One transaction making path's children equal the bundle. */
struct bundle_plan {
	zoo_op_t *op;
	char **path; /* op i's path, owned */
	int n;
	int creates_parent, created, updated, deleted, unchanged;
};

static void plan_free(struct bundle_plan *p)
{
	for (int i = 0; i < p->n; i++)
		free(p->path[i]);
	free(p->path);
	free(p->op);
	*p = (struct bundle_plan){0};
}

/* Room for the ops of a bundle of nfiles against nchildren children. */
static int plan_alloc(struct bundle_plan *p, size_t nfiles, size_t nchildren)
{
	size_t cap = nfiles + nchildren + 1;

	*p = (struct bundle_plan){0};
	p->op = calloc(cap, sizeof(*p->op));
	p->path = calloc(cap, sizeof(*p->path));
	return p->op && p->path ? 0 : -ENOMEM;
}

/* path/name, allocated (NULL: out of memory). */
static char *child_path(const char *path, const char *name)
{
	size_t len = strlen(path) + 1 + strlen(name) + 1;
	char *s = malloc(len);

	if (s)
		snprintf(s, len, "%s/%s", path, name);
	return s;
}

/* The next op, on path (which the plan then owns). */
static zoo_op_t *plan_op(struct bundle_plan *p, char *path)
{
	p->path[p->n] = path;
	return &p->op[p->n++];
}

/* Outcomes of planning and pushing a bundle. */
#define BUNDLE_CONFLICT 2 /* ZooKeeper changed under us: compute again */

/* Plan one file that is also a child: an update when the content differs,
 * else a version check (the child is left alone, its mzxid stays). */
static int plan_file(zhandle_t *zh, struct bundle_plan *p, const struct bundle_file *file, char *child,
                     char *why, size_t whylen)
{
	int olen = (int)file->len + 1; /* one more: a longer child differs */
	char *old = malloc((size_t)olen);
	struct Stat st;
	int err;

	if (!old)
		return zkw__errorf(why, whylen, -ENOMEM, "out of memory");
	err = zkw_zk_get_stat(zh, child, old, &olen, &st, why, whylen);
	if (!err && olen == file->len && st.dataLength == file->len &&
	    memcmp(old, file->data, (size_t)file->len) == 0) {
		zoo_check_op_init(plan_op(p, child), child, st.version);
		p->unchanged++;
	} else if (!err) {
		zoo_set_op_init(plan_op(p, child), child, file->data, (int)file->len, st.version, NULL);
		p->updated++;
	}
	free(old);
	return err;
}

/* Plan one child that no file stands for any more: its deletion, unless it
 * has children of its own (refused: 1 after saying why). */
static int plan_orphan(zhandle_t *zh, const struct bundle *b, struct bundle_plan *p, const char *name,
                       char *child, char *why, size_t whylen)
{
	char shown[1024];
	struct Stat st;
	int err = zkw_zk_stat(zh, child, &st, why, whylen);

	if (err)
		return err;
	if (st.numChildren > 0) {
		fprintf(stderr,
		        "zkw-push: %s has %d children: not deleted (a bundle is one level of nodes); remove "
		        "it "
		        "yourself or add a file named \"%s\" to %s; nothing pushed\n",
		        child, st.numChildren, escaped(name, shown, sizeof(shown)), b->dir);
		return 1;
	}
	zoo_delete_op_init(plan_op(p, child), child, st.version);
	p->deleted++;
	return 0;
}

/* Compare the bundle with path's children and plan the transaction. 0,
 * BUNDLE_CONFLICT, or 1 after saying why. */
static int bundle_plan(zhandle_t *zh, const struct bundle *b, const char *path, const struct ACL_vector *acl,
                       struct bundle_plan *p)
{
	struct String_vector children = {0};
	size_t f = 0, c = 0;
	char why[512];
	int err, rc = 0;

	err = zkw_zk_children(zh, path, &children, NULL, why, sizeof(why));
	if (err && err != -ENOENT) {
		fprintf(stderr, "zkw-push: cannot list the children of %s: %s; nothing pushed\n", path, why);
		return 1;
	}
	if (plan_alloc(p, b->n, (size_t)children.count)) {
		rc = -ENOMEM;
	} else if (err == -ENOENT) { /* the parent too, in the same transaction */
		char *self = strdup(path);

		if (self)
			zoo_create_op_init(plan_op(p, self), self, "", 0, acl, 0, NULL, 0);
		p->creates_parent = 1;
		rc = self ? 0 : -ENOMEM;
	}
	/* Both lists are sorted: one merge walk. */
	while (rc == 0 && (f < b->n || c < (size_t)children.count)) {
		int cmp = f == b->n                     ? 1
		          : c == (size_t)children.count ? -1
		                                        : strcmp(b->file[f].name, children.data[c]);
		const char *name = cmp <= 0 ? b->file[f].name : children.data[c];
		char *child = child_path(path, name);

		if (!child) {
			rc = -ENOMEM;
			break;
		}
		if (cmp < 0) { /* a new file */
			zoo_create_op_init(plan_op(p, child), child, b->file[f].data, (int)b->file[f].len,
			                   acl, 0, NULL, 0);
			p->created++;
			f++;
			continue;
		}
		if (cmp == 0) {
			err = plan_file(zh, p, &b->file[f], child, why, sizeof(why));
			f++, c++;
		} else if (strcmp(name, CHUNKS_NODE) == 0) { /* chunked content's, never a bundle's */
			free(child);
			c++;
			continue;
		} else {
			err = plan_orphan(zh, b, p, name, child, why, sizeof(why));
			c++;
		}
		if (err == 0)
			continue;     /* the plan owns child */
		if (err == -ENOENT) { /* gone since the listing */
			rc = BUNDLE_CONFLICT;
		} else if (err == -ENOMEM || err == 1) {
			rc = err; /* 1: refused, said */
		} else {
			fprintf(stderr, "zkw-push: cannot read %s: %s; nothing pushed\n", child, why);
			rc = 1;
		}
		free(child);
	}
	deallocate_String_vector(&children);
	if (rc == -ENOMEM) {
		fprintf(stderr, "zkw-push: out of memory; nothing pushed\n");
		rc = 1;
	}
	return rc;
}

/* Say what the transaction changed. */
static void bundle_report(const struct bundle_plan *p, const char *path)
{
	for (int i = 0; i < p->n; i++) {
		const zoo_op_t *op = &p->op[i];

		if (op->type == ZOO_CREATE_OP)
			printf("created %s\n", p->path[i]);
		else if (op->type == ZOO_SETDATA_OP)
			printf("updated %s\n", p->path[i]);
		else if (op->type == ZOO_DELETE_OP)
			printf("deleted %s\n", p->path[i]);
	}
	printf("bundle %s: %d created, %d updated, %d deleted, %d unchanged\n", path, p->created, p->updated,
	       p->deleted, p->unchanged);
}

/* A result code of a transaction that failed because ZooKeeper changed
 * between our reading it and the transaction. */
static bool conflict(int err)
{
	return err == -EEXIST || err == -ENOENT || err == -ESTALE || err == -ENOTEMPTY;
}

static int push_bundle(zhandle_t *zh, const struct push_args *a, bool authenticated,
                       const struct ACL_vector *acl, const char *path, const struct bundle *b)
{
	const char *chroot = strchr(a->hosts, '/');
	char why[1024], last[1024] = "";

	for (int attempt = 0; attempt < CONFLICT_ATTEMPTS; attempt++) {
		struct bundle_plan p;
		zoo_op_result_t *results;
		size_t size;
		int rc = bundle_plan(zh, b, path, acl, &p), err;

		if (rc == BUNDLE_CONFLICT) {
			snprintf(last, sizeof(last), "a child of %.900s vanished while it was read", path);
			plan_free(&p);
			continue;
		}
		if (rc) {
			plan_free(&p);
			return 1;
		}
		if (!p.creates_parent && p.created + p.updated + p.deleted == 0) {
			printf("bundle %s: nothing to change (%d unchanged)\n", path, p.unchanged);
			plan_free(&p);
			return 0;
		}
		size = zkw_zk_multi_size(p.op, p.n, chroot && chroot[1] ? strlen(chroot) : 0);
		if (size > BUNDLE_REQUEST_MAX) {
			fprintf(stderr,
			        "zkw-push: --bundle %s: the transaction would be %zu bytes (%d created, %d "
			        "updated, %d deleted), more than the %d one ZooKeeper request may hold (its "
			        "jute.maxbuffer is 1 MiB): push fewer or smaller files; nothing pushed\n",
			        b->dir, size, p.created, p.updated, p.deleted, BUNDLE_REQUEST_MAX);
			plan_free(&p);
			return 1;
		}
		/* The parent's parents are outside the transaction: empty nodes,
		 * as a plain push creates them. */
		if (p.creates_parent && (err = zkw_zk_create_parents_acl(zh, path, acl, why, sizeof(why)))) {
			fprintf(stderr, "zkw-push: cannot create the parents of %s: %s; nothing pushed\n",
			        path, why);
			plan_free(&p);
			return 1;
		}
		results = calloc((size_t)p.n, sizeof(*results));
		err = results ? zkw_zk_multi(zh, p.n, p.op, results, NULL, why, sizeof(why)) : -ENOMEM;
		free(results);
		if (err == 0) {
			bundle_report(&p, path);
			if (p.creates_parent || p.created)
				warn_open_acl(a, authenticated, p.creates_parent ? path : "the new children");
			plan_free(&p);
			return 0;
		}
		plan_free(&p);
		if (err == -ENOMEM) {
			fprintf(stderr, "zkw-push: out of memory; nothing pushed\n");
			return 1;
		}
		if (!conflict(err)) {
			fprintf(stderr, "zkw-push: the transaction on %s failed: %s; nothing pushed\n", path,
			        why);
			return 1;
		}
		snprintf(last, sizeof(last), "%s", why);
	}
	fprintf(stderr,
	        "zkw-push: %s kept changing while the bundle was pushed (%d attempts; the last: %s); nothing "
	        "pushed\n",
	        path, CONFLICT_ATTEMPTS, last);
	return 1;
}

/* ---- main ---------------------------------------------------------------------- */

/* Read -f FILE whole: 0, or 1 after saying why. Without --chunked, content
 * up to --max-bytes is plain and up to 256 MiB chunked. */
static int read_content(const struct push_args *a, char **data, long *len)
{
	long limit =
	        a->chunked ? (long)ZKW_CAPACITY_MAX
	                   : (a->max_bytes > (long)ZKW_CAPACITY_MAX ? a->max_bytes : (long)ZKW_CAPACITY_MAX);
	size_t need = 0;
	int rc = slurp(a->file, limit, data, len, &need);

	if (rc == -EFBIG)
		fprintf(stderr, "zkw-push: %s is larger than %ld bytes (%s); nothing pushed\n", a->file,
		        limit, limit == a->max_bytes ? "--max-bytes" : "the largest chunked content");
	else if (rc == -ENOMEM)
		fprintf(stderr,
		        "zkw-push: cannot read %s: out of memory growing the buffer to %zu bytes (%ld bytes "
		        "read); nothing pushed\n",
		        a->file, need, *len);
	else if (rc)
		fprintf(stderr, "zkw-push: cannot read %s: %s\n", a->file, strerror(-rc));
	return rc ? 1 : 0;
}

/* What a run holds, released at every exit. */
static void release(struct push_args *a, zkw_session_credential *cred, size_t ncred, char *data)
{
	free(a->acl);
	zkw_auth_credentials_free(cred, ncred);
	free(data);
}

/* Connect, authenticate and push what was read. */
static int run(struct push_args *a, const zkw_session_credential *cred, size_t ncred, const char *path,
               const char *data, long len, const struct bundle *b)
{
	zkw_session_acl *chosen = NULL;
	struct ACL_vector acl = {0};
	char why[512];
	zhandle_t *zh;
	int rc = 1;

	zoo_set_debug_level(0); /* the client's own log: our one-line errors say what failed */
	if (zkw_zk_connect(&zh, a->hosts, a->timeout_ms, ZKW_SESSION_TIMEOUT_MS_DEFAULT, why, sizeof(why))) {
		fprintf(stderr, "zkw-push: %s\n", why);
		return 1;
	}
	if (ncred && zkw_zk_auth(zh, cred, ncred, a->timeout_ms, why, sizeof(why))) {
		fprintf(stderr, "zkw-push: %s (credentials from %s); nothing pushed\n", why, a->auth_file);
	} else if (a->wipe) {
		rc = wipe(zh, a, path);
	} else if (creation_acl(a, ncred > 0, &chosen, &acl) == 0) {
		if (b)
			rc = push_bundle(zh, a, ncred > 0, &acl, path, b);
		else if (a->chunked || len > a->max_bytes)
			rc = push_chunked(zh, a, ncred > 0, &acl, path, data, len);
		else
			rc = push_plain(zh, a, ncred > 0, &acl, path, data, len);
	}
	zkw_zk_close(zh);
	free(acl.data);
	free(chosen);
	return rc;
}

int main(int argc, char **argv)
{
	struct push_args a = {.timeout_ms = ZKW_SESSION_TIMEOUT_MS_DEFAULT,
	                      .max_bytes = ZKW_ZK_DATA_MAX,
	                      .chunk_size = CHUNK_SIZE_DEFAULT,
	                      .grace_s = GRACE_S_DEFAULT};
	char path[ZKW_POINTER_MAX], why[512];
	zkw_session_credential *cred = NULL;
	struct bundle b = {0};
	size_t ncred = 0;
	char *data = NULL;
	long len = 0;
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
	/* Everything local is read and checked before ZooKeeper is asked. */
	if (a.bundle)
		rc = bundle_read(&b, a.bundle, path, a.max_bytes);
	else if (a.file)
		rc = read_content(&a, &data, &len) ||
		     ((a.chunked || len > a.max_bytes) && chunkable(path, len, a.chunk_size));
	if (rc == 0)
		rc = run(&a, cred, ncred, path, data, len, a.bundle ? &b : NULL);
	bundle_free(&b);
	release(&a, cred, ncred, data);
	return rc;
}
