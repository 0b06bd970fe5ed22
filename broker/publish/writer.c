/* SPDX-License-Identifier: Apache-2.0 */
/* writer.c - the single writer of a zkw shared-memory segment.
 *
 * Publishing generation g fills slot g % slot_count (never the published
 * one) between zkw_slot_write_begin() and zkw_slot_write_end(), then
 * zkw_segment_announce() releases g into the hot line, bumps the futex word
 * and wakes every waiter. Both halves of that protocol, and the reads they
 * pair with, are in zkw/segment.h: the writer knows the ABI, not the reader.
 */
#include "writer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zkw/segment.h>

#define ZKW_RESTART_ERROR "zkw-broker restarted, connecting to Zookeeper"

struct zkw_writer {
	char name[ZKW_SHM_NAME_MAX + 1];
	int fd;
	uint8_t *base;
	size_t size;
	uint64_t capacity;
	uint64_t slot_size;
	uint32_t slot_count;
	uint64_t generation;     /* last published */
	uint64_t content_serial; /* of the last publication */
	bool compare_content;    /* next publication compares bytes */
};

void (*zkw_writer_fault_hook)(void);

static struct zkw_segment_header *writer_header(const zkw_writer *w)
{
	return (struct zkw_segment_header *)(void *)w->base;
}

static struct zkw_slot *writer_slot(const zkw_writer *w, uint64_t generation)
{
	return zkw_segment_slot(w->base, w->slot_size, w->slot_count, generation);
}

static uint64_t new_epoch(void)
{
	uint64_t epoch = 0;

	if (getrandom(&epoch, sizeof(epoch), 0) != (ssize_t)sizeof(epoch))
		epoch = zkw__now_ns(CLOCK_REALTIME) ^ ((uint64_t)getpid() << 32);
	return epoch | 1; /* never 0: 0 means "no broker ever" */
}

static int lock_segment(zkw_writer *w, char *why, size_t whylen)
{
	struct flock fl;
	uint32_t pid = 0;

	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	if (fcntl(w->fd, F_OFD_SETLK, &fl) == 0)
		return 0;
	if (errno != EAGAIN && errno != EACCES)
		return zkw__errorf(why, whylen, -errno, "cannot lock segment %s: %s", w->name, strerror(errno));
	if (pread(w->fd, &pid, sizeof(pid), offsetof(struct zkw_segment_ident, broker_pid)) != sizeof(pid))
		pid = 0;
	return zkw__errorf(why, whylen, -EBUSY, "segment %s is held by another zkw-broker (pid %u)", w->name, pid);
}

static int map_segment(zkw_writer *w, size_t size, char *why, size_t whylen)
{
	void *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, w->fd, 0);

	if (map == MAP_FAILED)
		return zkw__errorf(why, whylen, -errno, "cannot map segment %s: %s", w->name, strerror(errno));
	w->base = map;
	w->size = size;
	return 0;
}

static void set_watch_path(zkw_writer *w, const char *path)
{
	struct zkw_segment_header *h = writer_header(w);
	size_t len = path ? strlen(path) : 0;

	if (len >= ZKW_WATCH_PATH_MAX)
		len = ZKW_WATCH_PATH_MAX - 1;
	zkw__store64(&h->watch_path_len, 0);                     /* informational: no seqlock, */
	zkw_payload_store(h->watch_path, path ? path : "", len); /* length goes last */
	zkw__store64(&h->watch_path_len, len);
}

/* Stamp this broker's identity: pid, a fresh epoch, the start time. */
static void stamp_broker(zkw_writer *w)
{
	struct zkw_segment_ident *id = &writer_header(w)->ident;

	zkw__store32(&id->broker_pid, (uint32_t)getpid());
	zkw__store64(&id->broker_epoch, new_epoch());
	zkw__store64(&id->broker_started_ns, zkw__now_ns(CLOCK_REALTIME));
}

static int init_segment(zkw_writer *w, char *why, size_t whylen)
{
	struct zkw_segment_ident *id;
	uint64_t size = zkw_segment_size(w->capacity, ZKW_SLOT_COUNT);
	int err;

	if (ftruncate(w->fd, (off_t)size) < 0)
		return zkw__errorf(why, whylen, -errno, "cannot size segment %s to %llu bytes: %s", w->name,
		            (unsigned long long)size, strerror(errno));
	err = map_segment(w, size, why, whylen);
	if (err)
		return err;
	id = &writer_header(w)->ident;
	id->abi_major = ZKW_ABI_MAJOR;
	id->abi_minor = ZKW_ABI_MINOR;
	id->header_size = ZKW_HEADER_SIZE;
	id->segment_size = size;
	id->slot_size = w->slot_size;
	id->capacity = w->capacity;
	id->slot_count = w->slot_count;
	stamp_broker(w);
	/* A reader that maps the segment now sees magic 0 and refuses it; once
	 * it sees the magic, every other identity field is there. The release
	 * store pairs with the acquire load of the magic in
	 * zkw__reader_validate() (zkw/client.h). */
	__atomic_store_n(&id->magic, ZKW_SEGMENT_MAGIC, __ATOMIC_RELEASE);
	return 0;
}

/* Check an existing segment against what we would create. */
static int adopt_segment(zkw_writer *w, const struct stat *st, char *why, size_t whylen)
{
	const struct zkw_segment_ident *id;
	uint64_t expect = zkw_segment_size(w->capacity, ZKW_SLOT_COUNT);
	uint32_t i;
	int err;

	if ((uint64_t)st->st_size < ZKW_HEADER_SIZE)
		return zkw__errorf(why, whylen, -EEXIST,
		            "segment %s exists but is not a zkw segment (%lld bytes); remove it", w->name,
		            (long long)st->st_size);
	err = map_segment(w, (size_t)st->st_size, why, whylen);
	if (err)
		return err;
	id = &writer_header(w)->ident;
	if (id->magic != ZKW_SEGMENT_MAGIC || id->abi_major != ZKW_ABI_MAJOR ||
	    id->header_size != ZKW_HEADER_SIZE)
		return zkw__errorf(why, whylen, -EEXIST,
		            "segment %s exists but is not a zkw segment of ABI %u; remove it", w->name,
		            ZKW_ABI_MAJOR);
	if (id->capacity != w->capacity)
		return zkw__errorf(why, whylen, -EEXIST,
		            "segment %s exists with capacity %llu bytes, not %llu; use that capacity or "
		            "remove it",
		            w->name, (unsigned long long)id->capacity, (unsigned long long)w->capacity);
	if (id->slot_count != w->slot_count || id->slot_size != w->slot_size || id->segment_size != expect ||
	    (uint64_t)st->st_size < expect)
		return zkw__errorf(why, whylen, -EEXIST, "segment %s exists but its layout is corrupt; remove it",
		            w->name);

	/* A broker killed mid-publish left that slot odd; it was never
	 * published, so make it even and let the next publish overwrite it. */
	for (i = 0; i < w->slot_count; i++)
		zkw_slot_write_repair(writer_slot(w, i));
	/* Only a writer stores the generation, and we hold the lock. */
	w->generation = zkw__load64(&writer_header(w)->hot.generation);
	stamp_broker(w);
	return 0;
}

static int open_fd(zkw_writer *w, mode_t mode, bool *created, char *why, size_t whylen)
{
	w->fd = shm_open(w->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	*created = w->fd >= 0;
	if (w->fd < 0 && errno == EEXIST)
		w->fd = shm_open(w->name, O_RDWR | O_CLOEXEC, 0);
	if (w->fd < 0)
		return zkw__errorf(why, whylen, -errno, "cannot open segment %s: %s", w->name, strerror(errno));
	return 0;
}

static int apply_permissions(zkw_writer *w, mode_t mode, gid_t group, char *why, size_t whylen)
{
	if (fchmod(w->fd, mode) < 0)
		return zkw__errorf(why, whylen, -errno, "cannot chmod segment %s to %o: %s", w->name, (unsigned)mode,
		            strerror(errno));
	if (group != (gid_t)-1 && fchown(w->fd, (uid_t)-1, group) < 0)
		return zkw__errorf(why, whylen, -errno, "cannot give segment %s to group %u: %s", w->name,
		            (unsigned)group, strerror(errno));
	return 0;
}

static int writer_setup(zkw_writer *w, const zkw_writer_options *opt, char *why, size_t whylen)
{
	mode_t mode = opt && opt->mode ? opt->mode : 0640;
	gid_t group = opt ? opt->group : (gid_t)-1;
	struct stat st;
	bool created;
	int err;

	err = open_fd(w, mode, &created, why, whylen);
	if (err)
		return err;
	if (fstat(w->fd, &st) < 0)
		return zkw__errorf(why, whylen, -errno, "cannot stat segment %s: %s", w->name, strerror(errno));
	if (st.st_uid != geteuid())
		return zkw__errorf(why, whylen, -EPERM,
		            "segment %s is owned by uid %u, not by us (uid %u); refusing it", w->name,
		            (unsigned)st.st_uid, (unsigned)geteuid());
	err = lock_segment(w, why, whylen);
	if (err)
		return err;
	err = apply_permissions(w, mode, group, why, whylen);
	if (err)
		return err;
	/* An empty object is one we (or a racing broker that lost the lock)
	 * just created: initialise it. */
	if (created || st.st_size == 0)
		err = init_segment(w, why, whylen);
	else
		err = adopt_segment(w, &st, why, whylen);
	if (err)
		return err;
	set_watch_path(w, opt ? opt->watch_path : NULL);
	return 0;
}

int zkw_writer_open(zkw_writer **out, const char *shm_name, const zkw_writer_options *opt, char *why,
                    size_t whylen)
{
	zkw_writer *w;
	int err;

	*out = NULL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return zkw__errorf(why, whylen, -ENOMEM, "out of memory");
	w->fd = -1;
	w->capacity = opt && opt->capacity ? opt->capacity : ZKW_DEFAULT_CAPACITY;
	w->slot_count = ZKW_SLOT_COUNT;
	w->slot_size = zkw_segment_slot_size(w->capacity);
	w->compare_content = true;
	err = zkw_shm_name(w->name, sizeof(w->name), shm_name);
	if (err)
		zkw__errorf(why, whylen, err, "invalid segment name \"%s\": one component, at most %d characters",
		     shm_name ? shm_name : "", ZKW_SHM_NAME_MAX - 1);
	else if (w->capacity > ZKW_CAPACITY_MAX)
		err = zkw__errorf(why, whylen, -EINVAL, "capacity %llu exceeds the maximum %u",
		           (unsigned long long)w->capacity, ZKW_CAPACITY_MAX);
	else
		err = writer_setup(w, opt, why, whylen);
	if (err) {
		if (w->base)
			munmap(w->base, w->size);
		if (w->fd >= 0)
			close(w->fd);
		free(w);
		return err;
	}
	if (w->generation > 0) {
		zkw_publication restarted = {
		        .keep_content = true,
		        .error = ZKW_RESTART_ERROR,
		};
		zkw_writer_publish(w, &restarted);
	} else {
		zkw_segment_set_state(&writer_header(w)->hot, ZKW_STATE_RUNNING);
	}
	*out = w;
	return 0;
}

static void copy_text(char *dst, uint32_t *len_field, const char *text, uint32_t max)
{
	size_t len = text ? strlen(text) : 0;

	if (len >= max)
		len = max - 1;
	zkw_payload_store(dst, text ? text : "", len);
	zkw__store32(len_field, (uint32_t)len);
}

/* Content, its identity and its pointer: fresh from p, or carried over
 * from the published slot `cur` (the last good value). */
static void fill_content(zkw_writer *w, struct zkw_slot *s, const struct zkw_slot *cur,
                         const zkw_publication *p, uint64_t gen)
{
	bool changed;

	if (p->keep_content) {
		zkw_payload_store((uint8_t *)s + ZKW_SLOT_CONTENT_OFFSET,
		                  (const uint8_t *)cur + ZKW_SLOT_CONTENT_OFFSET, cur->len);
		zkw_payload_store(s->pointer, cur->pointer, cur->pointer_len);
		zkw__store32(&s->pointer_len, cur->pointer_len);
		zkw__store64(&s->len, cur->len);
		zkw__store64(&s->version, (uint64_t)cur->version);
		zkw__store64(&s->mzxid, (uint64_t)cur->mzxid);
		zkw__store64(&s->changed_ns, cur->changed_ns);
		zkw__store64(&s->content_gen, cur->content_gen);
		return;
	}
	if (w->compare_content)
		changed = w->generation == 0 || cur->len != p->len ||
		          memcmp((const uint8_t *)cur + ZKW_SLOT_CONTENT_OFFSET, p->content, p->len) != 0;
	else
		changed = p->content_serial != w->content_serial;
	w->compare_content = false;
	w->content_serial = p->content_serial;
	zkw_payload_store((uint8_t *)s + ZKW_SLOT_CONTENT_OFFSET, p->content, p->len);
	copy_text(s->pointer, &s->pointer_len, p->pointer, ZKW_POINTER_MAX);
	zkw__store64(&s->len, p->len);
	zkw__store64(&s->version, (uint64_t)p->version);
	zkw__store64(&s->mzxid, (uint64_t)p->mzxid);
	zkw__store64(&s->changed_ns, changed ? zkw__now_ns(CLOCK_REALTIME) : cur->changed_ns);
	zkw__store64(&s->content_gen, changed ? gen : cur->content_gen);
}

int zkw_writer_publish(zkw_writer *w, const zkw_publication *p)
{
	uint64_t gen = w->generation + 1;
	struct zkw_slot *s = writer_slot(w, gen);
	const struct zkw_slot *cur = writer_slot(w, w->generation);
	uint32_t flags = (p->valid ? ZKW_SLOT_VALID : 0) | (p->connected ? ZKW_SLOT_CONNECTED : 0);
	uint32_t state = ZKW_STATE_RUNNING | (p->valid ? ZKW_STATE_VALID : 0) |
	                 (p->connected ? ZKW_STATE_CONNECTED : 0);
	uint64_t start;

	if (!p->keep_content && p->len > w->capacity)
		return -EMSGSIZE;
	if (!p->keep_content && p->len && !p->content)
		return -EINVAL;

	/* The seqlock's write side (zkw/segment.h): begin, relaxed payload
	 * stores, end. */
	start = zkw_slot_write_begin(s);

	zkw__store64(&s->generation, gen);
	zkw__store32(&s->flags, flags);
	zkw__store64(&s->confirmed_ns, p->confirmed_ns ? p->confirmed_ns : cur->confirmed_ns);
	copy_text(s->error, &s->error_len, p->valid ? NULL : p->error, ZKW_ERROR_MAX);
	fill_content(w, s, cur, p, gen);

	if (__builtin_expect(zkw_writer_fault_hook != NULL, 0))
		zkw_writer_fault_hook();

	zkw_slot_write_end(s, start);

	/* State, generation, futex word, wake: the hot line of zkw/segment.h. */
	zkw_segment_announce(&writer_header(w)->hot, gen, state);
	w->generation = gen;
	return 0;
}

uint64_t zkw_writer_generation(const zkw_writer *w)
{
	return w->generation;
}

uint64_t zkw_writer_capacity(const zkw_writer *w)
{
	return w->capacity;
}

const char *zkw_writer_name(const zkw_writer *w)
{
	return w->name;
}

void zkw_writer_close(zkw_writer *w, bool unlink_segment)
{
	if (!w)
		return;
	zkw_segment_announce_stopped(&writer_header(w)->hot);
	if (unlink_segment)
		shm_unlink(w->name);
	munmap(w->base, w->size);
	close(w->fd); /* releases the lock */
	free(w);
}
