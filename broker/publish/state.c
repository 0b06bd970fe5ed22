/* SPDX-License-Identifier: Apache-2.0 */
/* state.c - the state directory: each watch's last good snapshot on disk
 * (docs/design.md, "The state directory").
 *
 * A file is written the way a crash cannot tear: an unnamed O_TMPFILE in
 * the directory (write-locked, so a cleanup never takes it for a dead
 * one), written whole, fsync(2), linked under a temporary name, renamed
 * over the watch's file, then fsync(2) of the directory. Whatever moment a
 * process dies at, the name holds the old file or the new one; what a
 * power cut could leave (a file whose data never reached the disk) fails
 * the xxHash that covers every byte, and a load refuses it.
 *
 * Threads. zkw_state_save() runs in the publishing thread (the broker's
 * ZooKeeper completion thread, which must never block on the disk): it
 * builds the file image in memory (malloc, copy), then, under the store's
 * mutex, puts it in the watch's pending slot - replacing a snapshot still
 * waiting there - and wakes the saver. One saver thread takes the oldest
 * pending watch's image out of its slot, drops the mutex, checksums and
 * writes it, and takes the mutex again to count the result. No thread
 * holds the mutex across I/O, so the publishing thread waits at most for
 * a few pointer moves. Each watch has at most two images alive: the one
 * being written and the newest pending one.
 */
#include "state.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <zkw/segment.h>

/* ---- the file format ----------------------------------------------------
 *
 * Native byte order (the directory belongs to one host), 128-byte header,
 * then the watched path, the segment name and the pointer target, each
 * followed by a NUL, then the content, then the XXH3 64-bit hash of every
 * byte before it. */

#define FILE_MAGIC        0x31504e53574b5a7fULL /* "\x7fZKWSNP1" little-endian; never changes */
#define FILE_FORMAT       1u                    /* any change of the layout: loads refuse another */
#define FILE_HEADER_SIZE  128u
#define FILE_POINTER_MODE 0x1u /* flags: the key's pointer mode */
#define FILE_BUNDLE_MODE  0x2u /* flags: the key's bundle mode */
#define FILE_CHECKSUM_LEN 8u
#define FILE_SUFFIX       ".zkws"
#define TMP_PREFIX        ".zkws-tmp." /* no state file name starts with '.' */
#define READABLE_MAX      80u

struct file_header {
	uint64_t magic;
	uint32_t format;
	uint32_t header_size;
	uint32_t flags;
	uint32_t path_len; /* each without its NUL */
	uint32_t shm_len;
	uint32_t pointer_len;
	uint64_t content_len;
	int64_t version;
	int64_t mzxid;
	uint64_t generation;
	uint64_t content_gen;
	uint64_t saved_ns;
	uint64_t changed_ns;
	uint64_t confirmed_ns;
	uint64_t file_size; /* the whole file, checksum included */
	uint8_t reserved[24];
};
ZKW_STATIC_ASSERT(sizeof(struct file_header) == FILE_HEADER_SIZE, "state file header is 128 bytes");
ZKW_STATIC_ASSERT(offsetof(struct file_header, content_len) == 32, "state file layout");
ZKW_STATIC_ASSERT(offsetof(struct file_header, file_size) == 96, "state file layout");

#define RETRY_MS_DEFAULT     1000u
#define RETRY_MAX_MS_DEFAULT 30000u

void (*zkw_state_write_hook)(void);

/* One watch that has been saved: its pending image, if any. */
struct entry {
	struct entry *hash_next;
	struct entry *queue_next;
	uint64_t hash;
	bool queued;  /* in the saver's queue (iff image != NULL) */
	bool busy;    /* the saver is writing an image of it, without the lock */
	bool removed; /* zkw_state_remove() took it out: never queue it again */
	uint8_t *image;
	size_t image_len;
	char name[ZKW_STATE_FILE_NAME_MAX];
};

struct zkw_state {
	int dirfd;
	bool named_temps; /* the saver's: O_TMPFILE cannot be linked here */
	char dir[PATH_MAX];
	uint64_t max_content;
	zkw_state_error_fn *on_error;
	void (*on_write)(void *ctx, int err);
	void *ctx;
	unsigned retry_ms, retry_max_ms;

	pthread_mutex_t mu;  /* everything below */
	pthread_cond_t work; /* to the saver: queued, flush, close */
	pthread_cond_t done; /* from the saver: a write settled, a flush pass ended */
	pthread_t saver;

	struct entry **buckets; /* by hash, chained */
	size_t nbuckets, nentries;
	struct entry *queue_head, *queue_tail; /* oldest first */
	size_t queue_len;

	uint64_t flush_requested, flush_done;
	int flush_result; /* of the last pass */
	bool closing;
	unsigned backoff_ms;    /* 0 = the last write worked */
	uint64_t backoff_until; /* CLOCK_MONOTONIC ns */
	int reported;           /* the last cause given to on_error */
	zkw_state_stats stats;
};

/* ---- keys and names ----------------------------------------------------- */

static int check_key(const zkw_state_key *key, size_t *path_len, size_t *shm_len)
{
	char norm[ZKW_SHM_NAME_MAX + 1];

	if (!key || !key->path || !key->shm_name)
		return -EINVAL;
	*path_len = strlen(key->path);
	if (*path_len == 0 || *path_len >= ZKW_WATCH_PATH_MAX)
		return -EINVAL;
	if (zkw_shm_name(norm, sizeof(norm), key->shm_name) != 0 || strcmp(norm, key->shm_name) != 0)
		return -EINVAL;
	*shm_len = strlen(key->shm_name);
	return 0;
}

/* XXH3-128 of the key's identity, encoded without ambiguity (neither
 * string holds a NUL). */
static XXH128_hash_t key_hash(const zkw_state_key *key, size_t path_len, size_t shm_len)
{
	char id[16 + ZKW_WATCH_PATH_MAX + ZKW_SHM_NAME_MAX + 8];
	size_t n = 0;

	memcpy(id, "zkw-state", 10);
	n = 10;
	memcpy(id + n, key->path, path_len + 1);
	n += path_len + 1;
	id[n++] = key->pointer ? 'p' : key->bundle ? 'b' : 'n';
	id[n++] = '\0';
	memcpy(id + n, key->shm_name, shm_len);
	n += shm_len;
	return XXH3_128bits(id, n);
}

static int file_name(const zkw_state_key *key, char *buf, size_t cap, uint64_t *hash)
{
	char readable[READABLE_MAX + 1];
	size_t path_len, shm_len, i, n;
	XXH128_hash_t h;
	int err = check_key(key, &path_len, &shm_len);

	if (err)
		return err;
	h = key_hash(key, path_len, shm_len);
	/* The segment name, for people listing the directory: safe bytes
	 * only, and never a leading '.' (temporary files have one). */
	n = shm_len - 1 < READABLE_MAX ? shm_len - 1 : READABLE_MAX;
	for (i = 0; i < n; i++) {
		char c = key->shm_name[1 + i];
		bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		            c == '.' || c == '_' || c == '-' || c == '@' || c == '+';
		readable[i] = safe && !(i == 0 && c == '.') ? c : '_';
	}
	readable[n] = '\0';
	if ((size_t)snprintf(buf, cap, "%s-%016llx%016llx" FILE_SUFFIX, readable,
	                     (unsigned long long)h.high64, (unsigned long long)h.low64) >= cap)
		return -ENAMETOOLONG;
	if (hash)
		*hash = h.low64;
	return 0;
}

int zkw_state_file_name(const zkw_state_key *key, char *buf, size_t cap)
{
	return file_name(key, buf, cap, NULL);
}

/* ---- the file image ----------------------------------------------------- */

static size_t image_size(size_t path_len, size_t shm_len, size_t pointer_len, size_t content_len)
{
	return FILE_HEADER_SIZE + path_len + 1 + shm_len + 1 + pointer_len + 1 + content_len +
	       FILE_CHECKSUM_LEN;
}

static uint8_t *build_image(const zkw_state_key *key, size_t path_len, size_t shm_len,
                            const zkw_state_snapshot *snap, size_t pointer_len, size_t *len)
{
	size_t size = image_size(path_len, shm_len, pointer_len, snap->len);
	struct file_header h;
	uint8_t *image = malloc(size), *p;

	if (!image)
		return NULL;
	memset(&h, 0, sizeof(h));
	h.magic = FILE_MAGIC;
	h.format = FILE_FORMAT;
	h.header_size = FILE_HEADER_SIZE;
	h.flags = (key->pointer ? FILE_POINTER_MODE : 0) | (key->bundle ? FILE_BUNDLE_MODE : 0);
	h.path_len = (uint32_t)path_len;
	h.shm_len = (uint32_t)shm_len;
	h.pointer_len = (uint32_t)pointer_len;
	h.content_len = snap->len;
	h.version = snap->version;
	h.mzxid = snap->mzxid;
	h.generation = snap->generation;
	h.content_gen = snap->content_gen;
	h.saved_ns = snap->saved_ns ? snap->saved_ns : zkw__now_ns(CLOCK_REALTIME);
	h.changed_ns = snap->changed_ns;
	h.confirmed_ns = snap->confirmed_ns;
	h.file_size = size;
	memcpy(image, &h, sizeof(h));
	p = image + sizeof(h);
	memcpy(p, key->path, path_len + 1);
	p += path_len + 1;
	memcpy(p, key->shm_name, shm_len + 1);
	p += shm_len + 1;
	if (pointer_len)
		memcpy(p, snap->pointer, pointer_len);
	p[pointer_len] = '\0';
	p += pointer_len + 1;
	if (snap->len)
		memcpy(p, snap->content, snap->len);
	/* The checksum is the saver's to compute (seal_image): the
	 * publishing thread only copies. */
	*len = size;
	return image;
}

static void seal_image(uint8_t *image, size_t len)
{
	uint64_t sum = XXH3_64bits(image, len - FILE_CHECKSUM_LEN);

	memcpy(image + len - FILE_CHECKSUM_LEN, &sum, sizeof(sum));
}

/* A string of the image at *off, len bytes and its NUL, with no NUL
 * inside; *off moves past it. */
static bool take_string(const uint8_t *buf, size_t *off, size_t len, const char **out)
{
	const char *s = (const char *)buf + *off;

	if (s[len] != '\0' || memchr(s, '\0', len))
		return false;
	*out = s;
	*off += len + 1;
	return true;
}

static int corrupt(char *why, size_t whylen, const char *file, const char *what)
{
	return zkw__errorf(why, whylen, -EBADMSG, "state file %s refused: %s", file, what);
}

/* Check a whole file read into buf and point *out into it. Nothing is
 * believed before the sizes and the checksum agree. */
static int parse_image(const zkw_state *st, const zkw_state_key *key, const char *file, const uint8_t *buf,
                       size_t size, zkw_state_snapshot *out, char *why, size_t whylen)
{
	struct file_header h;
	const char *path, *shm, *pointer;
	uint64_t sum, want;
	size_t off;
	static const uint8_t zero[sizeof(h.reserved)];

	if (size < image_size(1, 2, 0, 0))
		return zkw__errorf(why, whylen, -EBADMSG, "state file %s refused: truncated (%zu bytes)",
		                   file, size);
	memcpy(&h, buf, sizeof(h));
	if (h.magic != FILE_MAGIC)
		return corrupt(why, whylen, file, "not a zkw state file (bad magic)");
	if (h.format != FILE_FORMAT)
		return zkw__errorf(why, whylen, -EPROTO,
		                   "state file %s refused: format %u, this broker reads format %u", file,
		                   (unsigned)h.format, FILE_FORMAT);
	if (h.header_size != FILE_HEADER_SIZE)
		return corrupt(why, whylen, file, "bad header size");
	if (h.file_size != size)
		return zkw__errorf(why, whylen, -EBADMSG,
		                   "state file %s refused: torn (it holds %zu bytes, its header says %llu)",
		                   file, size, (unsigned long long)h.file_size);
	if (h.path_len == 0 || h.path_len >= ZKW_WATCH_PATH_MAX || h.shm_len < 2 ||
	    h.shm_len > ZKW_SHM_NAME_MAX || h.pointer_len >= ZKW_POINTER_MAX || h.content_len > size ||
	    image_size(h.path_len, h.shm_len, h.pointer_len, (size_t)h.content_len) != size)
		return corrupt(why, whylen, file, "its lengths do not add up");
	sum = XXH3_64bits(buf, size - FILE_CHECKSUM_LEN);
	memcpy(&want, buf + size - FILE_CHECKSUM_LEN, sizeof(want));
	if (sum != want)
		return corrupt(why, whylen, file, "checksum mismatch (corrupt or torn)");
	/* From here on the bytes are the ones a save wrote: anything wrong
	 * is a save zkw_state_save() should have refused, or a forgery. */
	off = FILE_HEADER_SIZE;
	if (!take_string(buf, &off, h.path_len, &path) || !take_string(buf, &off, h.shm_len, &shm) ||
	    !take_string(buf, &off, h.pointer_len, &pointer))
		return corrupt(why, whylen, file, "a text field is not terminated");
	if ((h.flags & ~(FILE_POINTER_MODE | FILE_BUNDLE_MODE)) || memcmp(h.reserved, zero, sizeof(zero)) != 0)
		return corrupt(why, whylen, file, "unknown flags or reserved bytes set");
	if (h.generation > ZKW_GENERATION_MAX || h.content_gen > h.generation)
		return corrupt(why, whylen, file, "impossible generations");
	if (h.content_len > st->max_content)
		return zkw__errorf(why, whylen, -EMSGSIZE,
		                   "state file %s refused: %llu content bytes, more than the capacity %llu",
		                   file, (unsigned long long)h.content_len,
		                   (unsigned long long)st->max_content);
	if (strcmp(path, key->path) != 0 || strcmp(shm, key->shm_name) != 0 ||
	    !(h.flags & FILE_POINTER_MODE) != !key->pointer || !(h.flags & FILE_BUNDLE_MODE) != !key->bundle)
		return zkw__errorf(why, whylen, -EBADMSG,
		                   "state file %s refused: it was saved for another watch (%s%s, segment %s)",
		                   file, path,
		                   (h.flags & FILE_POINTER_MODE)  ? " in pointer mode"
		                   : (h.flags & FILE_BUNDLE_MODE) ? " in bundle mode"
		                                                  : "",
		                   shm);
	memset(out, 0, sizeof(*out));
	out->content = buf + off;
	out->len = (size_t)h.content_len;
	out->pointer = pointer;
	out->version = h.version;
	out->mzxid = h.mzxid;
	out->generation = h.generation;
	out->content_gen = h.content_gen;
	out->changed_ns = h.changed_ns;
	out->confirmed_ns = h.confirmed_ns;
	out->saved_ns = h.saved_ns;
	return 0;
}

/* ---- files ---------------------------------------------------------------- */

static void temp_name(char *buf, size_t cap)
{
	uint64_t r = 0;

	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
		r = zkw__now_ns(CLOCK_MONOTONIC) ^ ((uint64_t)getpid() << 40);
	snprintf(buf, cap, TMP_PREFIX "%016llx", (unsigned long long)r);
}

/* An unnamed file in the directory; a named temporary one where the file
 * system has no O_TMPFILE or it cannot be linked (*tmp set then).
 * Write-locked either way. */
static int create_temp(zkw_state *st, char *tmp, size_t cap)
{
	int fd = -1;

	tmp[0] = '\0';
	errno = EOPNOTSUPP;
	if (!st->named_temps)
		fd = openat(st->dirfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
	if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
		for (int attempt = 0; attempt < 8; attempt++) {
			temp_name(tmp, cap);
			fd = openat(st->dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			            0600);
			if (fd >= 0 || errno != EEXIST)
				break;
		}
		if (fd < 0)
			tmp[0] = '\0';
	}
	if (fd < 0)
		return -errno;
	if (zkw__ofd_write_lock(fd) < 0 || fchmod(fd, 0600) < 0) {
		int err = -errno;

		if (tmp[0])
			unlinkat(st->dirfd, tmp, 0);
		tmp[0] = '\0';
		close(fd);
		return err;
	}
	return fd;
}

/* Name an unnamed file tmp (a fresh name) in the directory. */
static int link_temp(zkw_state *st, int fd, char *tmp, size_t cap)
{
	char proc[64];

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	for (int attempt = 0; attempt < 8; attempt++) {
		temp_name(tmp, cap);
		if (linkat(AT_FDCWD, proc, st->dirfd, tmp, AT_SYMLINK_FOLLOW) == 0)
			return 0;
		if (errno == ENOENT && linkat(fd, "", st->dirfd, tmp, AT_EMPTY_PATH) == 0)
			return 0;
		if (errno != EEXIST)
			break;
	}
	tmp[0] = '\0';
	return -errno;
}

static int write_full(int fd, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Put the image in place of the file `name`: 0, or -errno with the old
 * file as it was (unless only the final sync of the directory failed). */
static int write_file(zkw_state *st, const char *name, const uint8_t *image, size_t len, char *why,
                      size_t whylen)
{
	char tmp[sizeof(TMP_PREFIX) + 17];
	const char *step = "create a temporary file";
	int fd, err;

again:
	fd = create_temp(st, tmp, sizeof(tmp));
	if (fd < 0) {
		err = fd;
		goto fail;
	}
	step = "write";
	err = write_full(fd, image, len);
	if (!err) {
		step = "sync";
		err = fsync(fd) < 0 ? -errno : 0;
	}
	if (!err && !tmp[0]) {
		step = "link";
		err = link_temp(st, fd, tmp, sizeof(tmp));
		if ((err == -ENOENT || err == -EPERM) && !st->named_temps) {
			/* No /proc and no CAP_DAC_READ_SEARCH: named
			 * temporary files from now on. */
			st->named_temps = true;
			close(fd);
			goto again;
		}
	}
	if (!err) {
		step = "rename";
		err = renameat(st->dirfd, tmp, st->dirfd, name) < 0 ? -errno : 0;
		if (!err) {
			tmp[0] = '\0';
			step = "sync the directory after writing";
			err = fsync(st->dirfd) < 0 ? -errno : 0;
		}
	}
	if (tmp[0])
		unlinkat(st->dirfd, tmp, 0);
	close(fd); /* releases the lock */
	if (!err)
		return 0;
fail:
	return zkw__errorf(why, whylen, err, "cannot save state file %s/%s (%zu bytes): %s failed: %s",
	                   st->dir, name, len, step, strerror(-err));
}

/* Temporary files a killed process left: ours, regular, and locked by
 * nobody (a live writer holds a lock on its own). */
static void remove_dead_temps(zkw_state *st)
{
	int dfd = openat(st->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
	struct dirent *e;

	if (!d) {
		if (dfd >= 0)
			close(dfd);
		return;
	}
	while ((e = readdir(d))) {
		struct stat sb;
		int fd;

		if (strncmp(e->d_name, TMP_PREFIX, sizeof(TMP_PREFIX) - 1) != 0)
			continue;
		fd = openat(st->dirfd, e->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_uid == geteuid() && !zkw__ofd_write_locked(fd))
			unlinkat(st->dirfd, e->d_name, 0);
		close(fd);
	}
	closedir(d);
}

/* ---- the pending table and queue (st->mu held) -------------------------- */

static struct entry *find_entry(const zkw_state *st, const char *name, uint64_t hash)
{
	struct entry *e;

	if (!st->nbuckets)
		return NULL;
	for (e = st->buckets[hash & (st->nbuckets - 1)]; e; e = e->hash_next)
		if (e->hash == hash && strcmp(e->name, name) == 0)
			return e;
	return NULL;
}

static void insert_entry(zkw_state *st, struct entry *e)
{
	size_t i = e->hash & (st->nbuckets - 1);

	e->hash_next = st->buckets[i];
	st->buckets[i] = e;
	st->nentries++;
}

/* Room for one more entry: -ENOMEM when the table cannot grow. */
static int reserve_entry(zkw_state *st)
{
	struct entry **b, *e, *next;
	size_t n, i;

	if (st->nentries < st->nbuckets)
		return 0;
	n = st->nbuckets ? st->nbuckets * 2 : 64;
	b = calloc(n, sizeof(*b));
	if (!b)
		return -ENOMEM;
	for (i = 0; i < st->nbuckets; i++)
		for (e = st->buckets[i]; e; e = next) {
			next = e->hash_next;
			e->hash_next = b[e->hash & (n - 1)];
			b[e->hash & (n - 1)] = e;
		}
	free(st->buckets);
	st->buckets = b;
	st->nbuckets = n;
	return 0;
}

static void unlink_entry(zkw_state *st, struct entry *e)
{
	struct entry **pp = &st->buckets[e->hash & (st->nbuckets - 1)];

	while (*pp != e)
		pp = &(*pp)->hash_next;
	*pp = e->hash_next;
	st->nentries--;
}

static void enqueue(zkw_state *st, struct entry *e)
{
	e->queue_next = NULL;
	if (st->queue_tail)
		st->queue_tail->queue_next = e;
	else
		st->queue_head = e;
	st->queue_tail = e;
	e->queued = true;
	st->queue_len++;
}

static struct entry *dequeue(zkw_state *st)
{
	struct entry *e = st->queue_head;

	if (!e)
		return NULL;
	st->queue_head = e->queue_next;
	if (!st->queue_head)
		st->queue_tail = NULL;
	e->queue_next = NULL;
	e->queued = false;
	st->queue_len--;
	return e;
}

static void unqueue(zkw_state *st, struct entry *e)
{
	struct entry *prev = NULL, *q;

	for (q = st->queue_head; q && q != e; q = q->queue_next)
		prev = q;
	if (!q)
		return;
	if (prev)
		prev->queue_next = e->queue_next;
	else
		st->queue_head = e->queue_next;
	if (st->queue_tail == e)
		st->queue_tail = prev;
	e->queue_next = NULL;
	e->queued = false;
	st->queue_len--;
}

/* ---- the saver thread ----------------------------------------------------- */

static void timed_wait(zkw_state *st, pthread_cond_t *cond, uint64_t until_ns)
{
	struct timespec ts = {.tv_sec = (time_t)(until_ns / 1000000000u),
	                      .tv_nsec = (long)(until_ns % 1000000000u)};

	pthread_cond_timedwait(cond, &st->mu, &ts);
}

/* Write one watch's pending image, the mutex dropped meanwhile. */
static void save_one(zkw_state *st, struct entry *e, int *pass_err, bool in_pass)
{
	char name[ZKW_STATE_FILE_NAME_MAX], why[PATH_MAX + 512];
	uint8_t *image = e->image;
	size_t len = e->image_len;
	bool report;
	int err;

	e->image = NULL;
	e->busy = true;
	memcpy(name, e->name, sizeof(name));
	pthread_mutex_unlock(&st->mu);

	if (zkw_state_write_hook)
		zkw_state_write_hook();
	seal_image(image, len);
	err = write_file(st, name, image, len, why, sizeof(why));

	pthread_mutex_lock(&st->mu);
	e->busy = false;
	if (err) {
		st->stats.failures++;
		if (in_pass && !*pass_err)
			*pass_err = err;
		/* Keep it for the next try, unless a newer one came. */
		if (!e->image && !e->removed) {
			e->image = image;
			e->image_len = len;
			image = NULL;
			enqueue(st, e);
		}
		st->backoff_ms = st->backoff_ms ? st->backoff_ms * 2 : st->retry_ms;
		if (st->backoff_ms > st->retry_max_ms)
			st->backoff_ms = st->retry_max_ms;
		st->backoff_until = zkw__now_ns(CLOCK_MONOTONIC) + (uint64_t)st->backoff_ms * 1000000u;
	} else {
		st->stats.writes++;
		st->backoff_ms = 0;
		st->backoff_until = 0;
	}
	st->stats.last_error = err;
	report = err != st->reported;
	st->reported = err;
	/* e may be freed by zkw_state_remove() from here on. */
	pthread_cond_broadcast(&st->done);
	pthread_mutex_unlock(&st->mu);
	free(image);
	if (st->on_write)
		st->on_write(st->ctx, err);
	if (report && st->on_error) {
		if (!err)
			snprintf(why, sizeof(why), "state files are saved in %s again", st->dir);
		st->on_error(st->ctx, err, why);
	}
	pthread_mutex_lock(&st->mu);
}

static void *saver_main(void *arg)
{
	zkw_state *st = arg;
	bool in_pass = false;
	uint64_t pass_id = 0;
	size_t pass_left = 0;
	int pass_err = 0;
	struct entry *e;

	pthread_mutex_lock(&st->mu);
	for (;;) {
		/* A flush: every watch queued now is written once, at once. */
		if (!in_pass && st->flush_requested != st->flush_done) {
			in_pass = true;
			pass_id = st->flush_requested;
			pass_left = st->queue_len;
			pass_err = 0;
		}
		if (in_pass && (pass_left == 0 || !st->queue_head)) {
			in_pass = false;
			st->flush_done = pass_id;
			st->flush_result = pass_err;
			pthread_cond_broadcast(&st->done);
			if (st->closing && st->flush_done == st->flush_requested)
				break;
			continue;
		}
		if (!st->queue_head) {
			pthread_cond_wait(&st->work, &st->mu);
			continue;
		}
		if (!in_pass && st->backoff_until && zkw__now_ns(CLOCK_MONOTONIC) < st->backoff_until) {
			timed_wait(st, &st->work, st->backoff_until);
			continue;
		}
		e = dequeue(st);
		if (in_pass)
			pass_left--;
		save_one(st, e, &pass_err, in_pass);
	}
	/* Closing: what still fails is dropped; the files keep the one before. */
	while ((e = dequeue(st))) {
		free(e->image);
		e->image = NULL;
		st->stats.dropped++;
	}
	pthread_mutex_unlock(&st->mu);
	return NULL;
}

/* ---- the API ---------------------------------------------------------------- */

static int open_dir(zkw_state *st, const char *dir, char *why, size_t whylen)
{
	struct stat sb;
	char owner[64];

	st->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (st->dirfd < 0 && errno == ENOENT) {
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			return zkw__errorf(why, whylen, -errno, "cannot create the state directory %s: %s",
			                   dir, strerror(errno));
		st->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	}
	if (st->dirfd < 0)
		return zkw__errorf(why, whylen, -errno, "cannot open the state directory %s: %s", dir,
		                   strerror(errno));
	if (fstat(st->dirfd, &sb) < 0)
		return zkw__errorf(why, whylen, -errno, "cannot stat the state directory %s: %s", dir,
		                   strerror(errno));
	if (sb.st_uid != geteuid()) {
		zkw__uid_text(owner, sizeof(owner), sb.st_uid);
		return zkw__errorf(
		        why, whylen, -EPERM,
		        "state directory %s is owned by %s, not by us (uid %u): refusing it (whoever "
		        "owns it decides what a cold start publishes)",
		        dir, owner, (unsigned)geteuid());
	}
	if (sb.st_mode & (S_IWGRP | S_IWOTH))
		return zkw__errorf(
		        why, whylen, -EPERM,
		        "state directory %s is writable by group or others (mode %04o): refusing it "
		        "(chmod go-w it)",
		        dir, (unsigned)(sb.st_mode & 07777));
	return 0;
}

int zkw_state_open(zkw_state **out, const char *dir, const zkw_state_options *opt, char *why, size_t whylen)
{
	zkw_state_options none = {0};
	pthread_condattr_t ca;
	sigset_t all, old;
	zkw_state *st;
	int err;

	*out = NULL;
	if (!opt)
		opt = &none;
	if (!dir || !*dir || strlen(dir) >= sizeof(st->dir))
		return zkw__errorf(why, whylen, -EINVAL, "bad state directory '%s'", dir ? dir : "(null)");
	if (opt->max_content > ZKW_CAPACITY_MAX)
		return zkw__errorf(why, whylen, -EINVAL, "state files of more than %u content bytes",
		                   ZKW_CAPACITY_MAX);
	st = calloc(1, sizeof(*st));
	if (!st)
		return zkw__errorf(why, whylen, -ENOMEM, "out of memory");
	strcpy(st->dir, dir);
	st->max_content = opt->max_content ? opt->max_content : ZKW_DEFAULT_CAPACITY;
	st->on_error = opt->on_error;
	st->on_write = opt->on_write;
	st->ctx = opt->ctx;
	st->retry_ms = opt->retry_ms ? opt->retry_ms : RETRY_MS_DEFAULT;
	st->retry_max_ms = opt->retry_max_ms ? opt->retry_max_ms : RETRY_MAX_MS_DEFAULT;
	if (st->retry_max_ms < st->retry_ms)
		st->retry_max_ms = st->retry_ms;
	err = open_dir(st, dir, why, whylen);
	if (err) {
		if (st->dirfd >= 0)
			close(st->dirfd);
		free(st);
		return err;
	}
	remove_dead_temps(st);

	pthread_mutex_init(&st->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&st->work, &ca);
	pthread_cond_init(&st->done, &ca);
	pthread_condattr_destroy(&ca);
	/* The saver takes no signal: the broker's main thread collects them. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = -pthread_create(&st->saver, NULL, saver_main, st);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err) {
		pthread_cond_destroy(&st->work);
		pthread_cond_destroy(&st->done);
		pthread_mutex_destroy(&st->mu);
		close(st->dirfd);
		free(st);
		return zkw__errorf(why, whylen, err, "cannot start the state saver thread: %s",
		                   strerror(-err));
	}
	pthread_setname_np(st->saver, "zkw-state");
	*out = st;
	return 0;
}

int zkw_state_save(zkw_state *st, const zkw_state_key *key, const zkw_state_snapshot *snap)
{
	char name[ZKW_STATE_FILE_NAME_MAX];
	size_t path_len, shm_len, pointer_len, len;
	uint8_t *image, *old;
	struct entry *e, *spare = NULL;
	uint64_t hash;
	int err;

	if (!snap || (snap->len && !snap->content))
		return -EINVAL;
	err = check_key(key, &path_len, &shm_len);
	if (!err)
		err = file_name(key, name, sizeof(name), &hash);
	if (err)
		return -EINVAL;
	pointer_len = snap->pointer ? strlen(snap->pointer) : 0;
	if (pointer_len >= ZKW_POINTER_MAX || snap->generation > ZKW_GENERATION_MAX ||
	    snap->content_gen > snap->generation)
		return -EINVAL;
	if (snap->len > st->max_content)
		return -EMSGSIZE;
	image = build_image(key, path_len, shm_len, snap, pointer_len, &len);
	if (!image)
		return -ENOMEM;

	pthread_mutex_lock(&st->mu);
	e = find_entry(st, name, hash);
	if (!e) {
		pthread_mutex_unlock(&st->mu);
		/* Allocated without the lock; the table is checked again. */
		spare = calloc(1, sizeof(*spare));
		pthread_mutex_lock(&st->mu);
		e = find_entry(st, name, hash);
		if (!e) {
			if (!spare || reserve_entry(st) < 0) {
				pthread_mutex_unlock(&st->mu);
				free(spare);
				free(image);
				return -ENOMEM;
			}
			e = spare;
			spare = NULL;
			e->hash = hash;
			memcpy(e->name, name, sizeof(name));
			insert_entry(st, e);
		}
	}
	old = e->image;
	e->image = image;
	e->image_len = len;
	if (old)
		st->stats.coalesced++;
	else
		enqueue(st, e);
	st->stats.saves++;
	pthread_cond_signal(&st->work);
	pthread_mutex_unlock(&st->mu);
	free(old);
	free(spare);
	return 0;
}

int zkw_state_flush(zkw_state *st)
{
	uint64_t ticket;
	int err;

	pthread_mutex_lock(&st->mu);
	ticket = ++st->flush_requested;
	pthread_cond_signal(&st->work);
	while (st->flush_done < ticket)
		pthread_cond_wait(&st->done, &st->mu);
	err = st->flush_result;
	pthread_mutex_unlock(&st->mu);
	return err;
}

size_t zkw_state_load_size(const zkw_state *st)
{
	return zkw_state_load_size_for(st, st->max_content);
}

size_t zkw_state_load_size_for(const zkw_state *st, uint64_t max_content)
{
	if (max_content > st->max_content)
		max_content = st->max_content;
	return image_size(ZKW_WATCH_PATH_MAX - 1, ZKW_SHM_NAME_MAX, ZKW_POINTER_MAX - 1, (size_t)max_content);
}

static int pread_full(int fd, uint8_t *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, buf + done, len - done, (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EBADMSG; /* shrank under us */
		done += (size_t)n;
	}
	return 0;
}

int zkw_state_load(zkw_state *st, const zkw_state_key *key, zkw_state_snapshot *out, void *buf, size_t buflen,
                   char *why, size_t whylen)
{
	char name[ZKW_STATE_FILE_NAME_MAX], file[PATH_MAX + ZKW_STATE_FILE_NAME_MAX + 1], owner[64];
	struct stat sb;
	size_t size;
	int fd, err;

	if (file_name(key, name, sizeof(name), NULL) != 0)
		return zkw__errorf(why, whylen, -EINVAL, "bad key for a state file");
	snprintf(file, sizeof(file), "%s/%s", st->dir, name);
	fd = openat(st->dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		return zkw__errorf(why, whylen, -ENOENT, "no state file %s", file);
	if (fd < 0 && errno == ELOOP)
		return zkw__errorf(why, whylen, -ELOOP,
		                   "state file %s refused: a symbolic link (not followed)", file);
	if (fd < 0)
		return zkw__errorf(why, whylen, -errno, "cannot open state file %s: %s", file,
		                   strerror(errno));
	if (fstat(fd, &sb) < 0) {
		err = zkw__errorf(why, whylen, -errno, "cannot stat state file %s: %s", file,
		                  strerror(errno));
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) {
		err = corrupt(why, whylen, file, "not a regular file");
		goto out;
	}
	if (sb.st_uid != geteuid()) {
		zkw__uid_text(owner, sizeof(owner), sb.st_uid);
		err = zkw__errorf(why, whylen, -EPERM,
		                  "state file %s refused: owned by %s, not by us (uid %u)", file, owner,
		                  (unsigned)geteuid());
		goto out;
	}
	if (sb.st_mode & (S_IWGRP | S_IWOTH)) {
		err = zkw__errorf(why, whylen, -EPERM,
		                  "state file %s refused: writable by group or others (mode %04o)", file,
		                  (unsigned)(sb.st_mode & 07777));
		goto out;
	}
	if ((uint64_t)sb.st_size > zkw_state_load_size(st)) {
		err = zkw__errorf(
		        why, whylen, -EMSGSIZE,
		        "state file %s refused: %lld bytes, more than a snapshot of at most %llu content "
		        "bytes takes",
		        file, (long long)sb.st_size, (unsigned long long)st->max_content);
		goto out;
	}
	size = (size_t)sb.st_size;
	if (size > buflen) {
		err = zkw__errorf(why, whylen, -ENOBUFS, "state file %s: %zu bytes, the buffer holds %zu",
		                  file, size, buflen);
		goto out;
	}
	err = pread_full(fd, buf, size);
	if (err == -EBADMSG)
		err = corrupt(why, whylen, file, "it shrank while read");
	else if (err)
		err = zkw__errorf(why, whylen, err, "cannot read state file %s: %s", file, strerror(-err));
	else
		err = parse_image(st, key, file, buf, size, out, why, whylen);
out:
	close(fd);
	return err;
}

int zkw_state_remove(zkw_state *st, const zkw_state_key *key)
{
	char name[ZKW_STATE_FILE_NAME_MAX];
	struct entry *e;
	uint64_t hash;
	int err;

	if (file_name(key, name, sizeof(name), &hash) != 0)
		return -EINVAL;
	pthread_mutex_lock(&st->mu);
	e = find_entry(st, name, hash);
	if (e) {
		unlink_entry(st, e);
		if (e->queued) {
			unqueue(st, e);
			st->stats.dropped++;
		}
		e->removed = true;
		while (e->busy)
			pthread_cond_wait(&st->done, &st->mu);
	}
	pthread_mutex_unlock(&st->mu);
	if (e) {
		free(e->image);
		free(e);
	}
	if (unlinkat(st->dirfd, name, 0) < 0)
		return errno == ENOENT ? 0 : -errno;
	err = fsync(st->dirfd) < 0 ? -errno : 0;
	return err;
}

void zkw_state_get_stats(zkw_state *st, zkw_state_stats *out)
{
	pthread_mutex_lock(&st->mu);
	*out = st->stats;
	out->pending = st->queue_len;
	pthread_mutex_unlock(&st->mu);
}

const char *zkw_state_dir(const zkw_state *st)
{
	return st->dir;
}

int zkw_state_close(zkw_state *st)
{
	struct entry *e, *next;
	int err;

	if (!st)
		return 0;
	pthread_mutex_lock(&st->mu);
	st->closing = true;
	st->flush_requested++;
	pthread_cond_signal(&st->work);
	pthread_mutex_unlock(&st->mu);
	pthread_join(st->saver, NULL);
	err = st->flush_result;
	for (size_t i = 0; i < st->nbuckets; i++)
		for (e = st->buckets[i]; e; e = next) {
			next = e->hash_next;
			free(e->image);
			free(e);
		}
	free(st->buckets);
	pthread_cond_destroy(&st->work);
	pthread_cond_destroy(&st->done);
	pthread_mutex_destroy(&st->mu);
	close(st->dirfd);
	free(st);
	return err;
}
