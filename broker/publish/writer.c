/* SPDX-License-Identifier: Apache-2.0 */
/* writer.c - the single writer of a zkw shared-memory segment.
 *
 * Publishing generation g fills slot g % slot_count (never the published
 * one) between zkw_slot_write_begin() and zkw_slot_write_end(), then
 * zkw_segment_announce() releases g into the hot line, bumps the futex word
 * and wakes every waiter. Both halves of that protocol, and the reads they
 * pair with, are in zkw/segment.h: the writer knows the ABI, not the reader.
 *
 * Opening (docs/design.md, "Liveness and the single writer" and "Broker
 * restart and stop"):
 *   1. The broker lock: an OFD write lock on /dev/shm/.zkw-lock.<name>, a
 *      0600 file that only our uid can open. Brokers exclude each other
 *      there, so no lock a reader takes on the segment can keep a broker
 *      from starting.
 *   2. The segment. An existing one that is ours, sane, not writable by
 *      group or others, and whose write lock (the liveness lock) we get is
 *      adopted in place: readers carry on without reopening. Otherwise a
 *      new one is made: an unnamed object (O_TMPFILE: nobody else can open
 *      or lock it), allocated up front with posix_fallocate(), write-locked,
 *      initialised - continuing the generation and the validated last
 *      snapshot of the one it replaces - then linked under the name. A
 *      replaced segment is marked ZKW_STATE_RETIRED and woken a last time.
 *   3. Growth (zkw_writer_options.grow): a segment starts at
 *      ZKW_WRITER_MIN_CAPACITY; content that does not fit makes the writer
 *      replace it, as in 2., by a larger one (zkw_writer_sized_capacity()),
 *      then publish into the new one. Capacity is per segment: readers
 *      cache it at open and reopen the name when the old one is retired.
 * Everything read back from an existing segment is validated first; a
 * segment others might still write is read with pread(2), which cannot
 * fault, and retired with pwrite(2).
 */
#include "writer.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <zkw/segment.h>

#define ZKW_RESTART_ERROR "zkw-broker restarted, connecting to Zookeeper"

#define SHM_DIR        "/dev/shm" /* where glibc's shm_open() puts "/name" */
#define LOCK_PREFIX    ".zkw-lock."
#define NEW_PREFIX     ".zkw-new."
#define OPEN_ATTEMPTS  8    /* the name changed under us: look again */
#define LOOK_AGAIN     1    /* internal: the name changed under us */
#define HOLDER_WAIT_MS 2000 /* a dying broker's segment lock outlives its broker lock briefly */

struct zkw_writer {
	char name[ZKW_SHM_NAME_MAX + 1];
	char lock_path[sizeof(SHM_DIR) + sizeof(LOCK_PREFIX) + ZKW_SHM_NAME_MAX];
	int fd;      /* the segment; holds the liveness (write) lock */
	int lock_fd; /* the broker lock file */
	uint8_t *base;
	size_t size;
	uint64_t capacity;     /* of the current segment */
	uint64_t max_capacity; /* what a growing writer grows to */
	bool grow;
	mode_t mode; /* for the segments growth creates */
	gid_t group;
	char watch_path[ZKW_WATCH_PATH_MAX];
	uint64_t slot_size;
	uint32_t slot_count;
	uint64_t generation;     /* last published */
	uint64_t confirmed_ns;   /* last confirmation stored (hot line; 0 = none) */
	uint64_t content_serial; /* of the last publication */
	bool compare_content;    /* next publication compares bytes */
	bool drop_kept;          /* the published slot failed validation: keep nothing */
	char notice[512];        /* what the open repaired or replaced ("" if nothing) */
	char error[256];         /* why the last growth failed ("" if it did not) */
};

/* The fields a keep_content publication carries over, loaded once. */
struct kept {
	uint64_t len;
	uint32_t pointer_len;
	int64_t version;
	int64_t mzxid;
	uint64_t changed_ns;
	uint64_t content_gen;
	uint32_t flags; /* ZKW_SLOT_* */
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

static void note(zkw_writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void note(zkw_writer *w, const char *fmt, ...)
{
	size_t used = strlen(w->notice);
	va_list ap;

	if (used && used + 2 < sizeof(w->notice)) {
		memcpy(w->notice + used, "; ", 3);
		used += 2;
	}
	va_start(ap, fmt);
	vsnprintf(w->notice + used, sizeof(w->notice) - used, fmt, ap);
	va_end(ap);
}

static int foreign_owner(const char *what, const char *path, uid_t uid, char *why, size_t whylen)
{
	char owner[64];

	zkw__uid_text(owner, sizeof(owner), uid);
	return zkw__errorf(why, whylen, -EPERM,
	                   "%s %s is owned by %s, not by us (uid %u); refusing it (another user may have "
	                   "created it first: remove it)",
	                   what, path, owner, (unsigned)geteuid());
}

/* ---- the broker lock ---------------------------------------------------- */

/* SHM_DIR/.zkw-lock.<name>, or with a hash in front of a cut name when
 * that would exceed NAME_MAX. */
static void make_lock_path(char *out, size_t cap, const char *name)
{
	const char *base = name + 1;
	size_t n = strlen(base), room = NAME_MAX - (sizeof(LOCK_PREFIX) - 1);
	uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */

	if (n <= room) {
		snprintf(out, cap, SHM_DIR "/" LOCK_PREFIX "%s", base);
		return;
	}
	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)base[i]) * 0x100000001b3ULL;
	snprintf(out, cap, SHM_DIR "/" LOCK_PREFIX "%016llx.%.*s", (unsigned long long)h, (int)(room - 17),
	         base);
}

int zkw_writer_remove(const char *shm_name)
{
	char name[ZKW_SHM_NAME_MAX + 1], lock[sizeof(SHM_DIR) + sizeof(LOCK_PREFIX) + ZKW_SHM_NAME_MAX];
	int err = zkw_shm_name(name, sizeof(name), shm_name);

	if (err)
		return err;
	make_lock_path(lock, sizeof(lock), name);
	err = shm_unlink(name) < 0 && errno != ENOENT ? -errno : 0;
	if (unlink(lock) < 0 && errno != ENOENT && !err)
		err = -errno;
	return err;
}

/* The pid the segment names, for a message; 0 if unknown. */
static uint32_t segment_pid(const zkw_writer *w)
{
	uint32_t pid = 0;
	int fd = shm_open(w->name, O_RDONLY | O_CLOEXEC, 0);

	if (fd < 0)
		return 0;
	if (pread(fd, &pid, sizeof(pid), offsetof(struct zkw_segment_ident, broker_pid)) != sizeof(pid))
		pid = 0;
	close(fd);
	return pid;
}

static int held_by_another(zkw_writer *w, char *why, size_t whylen)
{
	return zkw__errorf(why, whylen, -EBUSY, "segment %s is held by another zkw-broker (pid %u)", w->name,
	                   segment_pid(w));
}

static int lock_broker_once(zkw_writer *w, char *why, size_t whylen);

/* Take the broker lock: exclusion between brokers of this name. 0 with
 * w->lock_fd held, or -EBUSY (another broker), -EPERM (the file is not
 * ours), -errno, with w->lock_fd closed (never unlink a file we do not
 * hold: it may be another broker's, or another user's). */
static int lock_broker(zkw_writer *w, char *why, size_t whylen)
{
	int err;

	make_lock_path(w->lock_path, sizeof(w->lock_path), w->name);
	err = lock_broker_once(w, why, whylen);
	if (err && w->lock_fd >= 0) {
		close(w->lock_fd);
		w->lock_fd = -1;
	}
	return err;
}

static int lock_broker_once(zkw_writer *w, char *why, size_t whylen)
{
	struct stat st, named;
	int attempt, err;

	for (attempt = 0; attempt < OPEN_ATTEMPTS; attempt++) {
		w->lock_fd = open(w->lock_path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (w->lock_fd < 0) {
			err = errno;
			if (lstat(w->lock_path, &st) == 0 && st.st_uid != geteuid())
				return foreign_owner("broker lock", w->lock_path, st.st_uid, why, whylen);
			return zkw__errorf(why, whylen, -err, "cannot open the broker lock %s: %s",
			                   w->lock_path, strerror(err));
		}
		if (fstat(w->lock_fd, &st) < 0)
			return zkw__errorf(why, whylen, -errno, "cannot stat the broker lock %s: %s",
			                   w->lock_path, strerror(errno));
		if (st.st_uid != geteuid())
			return foreign_owner("broker lock", w->lock_path, st.st_uid, why, whylen);
		if (!S_ISREG(st.st_mode))
			return zkw__errorf(why, whylen, -EEXIST,
			                   "broker lock %s is not a regular file; remove it", w->lock_path);
		if (st.st_mode & 077) {
			/* Ours, but not made by a broker (they make it 0600):
			 * others may have it open and hold a lock on it.
			 * Replace it with a private one. */
			unlink(w->lock_path);
			close(w->lock_fd);
			w->lock_fd = -1;
			continue;
		}
		err = zkw__ofd_write_lock(w->lock_fd);
		if (err == -EAGAIN || err == -EACCES)
			return held_by_another(w, why, whylen);
		if (err)
			return zkw__errorf(why, whylen, err, "cannot lock %s: %s", w->lock_path,
			                   strerror(-err));
		/* A broker that stops unlinks the file while it holds the lock:
		 * ours counts only if it still has the name. */
		if (lstat(w->lock_path, &named) == 0 && named.st_dev == st.st_dev &&
		    named.st_ino == st.st_ino)
			return 0;
		close(w->lock_fd);
		w->lock_fd = -1;
	}
	return zkw__errorf(why, whylen, -EAGAIN, "cannot take the broker lock %s: it keeps being replaced",
	                   w->lock_path);
}

/* ---- creating, checking, carrying over ----------------------------------- */

/* Allocate every page of the object now: too little memory is an error
 * here, not a SIGBUS at some later publish. */
static int allocate(zkw_writer *w, int fd, uint64_t size, char *why, size_t whylen)
{
	struct statvfs vfs;
	int err = posix_fallocate(fd, 0, (off_t)size);

	if (err == 0)
		return 0;
	if ((err == ENOSPC || err == ENOMEM) && fstatvfs(fd, &vfs) == 0)
		return zkw__errorf(why, whylen, -ENOSPC,
		                   "not enough space in " SHM_DIR " for segment %s: it needs %llu bytes, "
		                   "%llu are free (make room, or a smaller --capacity)",
		                   w->name, (unsigned long long)size,
		                   (unsigned long long)vfs.f_bavail * (unsigned long long)vfs.f_frsize);
	return zkw__errorf(why, whylen, -err, "cannot allocate %llu bytes for segment %s: %s",
	                   (unsigned long long)size, w->name, strerror(err));
}

static int map_segment(zkw_writer *w, size_t size, char *why, size_t whylen)
{
	void *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, w->fd, 0);

	if (map == MAP_FAILED)
		return zkw__errorf(why, whylen, -errno, "cannot map segment %s: %s", w->name,
		                   strerror(errno));
	w->base = map;
	w->size = size;
	return 0;
}

/* Let go of a segment being set up (the caller may try another). */
static void discard(zkw_writer *w)
{
	if (w->base)
		munmap(w->base, w->size);
	if (w->fd >= 0)
		close(w->fd);
	w->base = NULL;
	w->fd = -1;
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

/* Stamp this broker's identity: pid, a fresh epoch, the start time, and
 * the ABI minor this writer maintains. The minor goes last, with release:
 * a reader that sees minor 2 (its acquire load at open, zkw/client.h)
 * sees the hot line's confirmation time stored before it
 * (take_confirmed()). */
static void stamp_broker(zkw_writer *w)
{
	struct zkw_segment_ident *id = &writer_header(w)->ident;

	zkw__store32(&id->broker_pid, (uint32_t)getpid());
	zkw__store64(&id->broker_epoch, new_epoch());
	zkw__store64(&id->broker_started_ns, zkw__now_ns(CLOCK_REALTIME));
	__atomic_store_n(&id->abi_minor, (uint16_t)ZKW_ABI_MINOR, __ATOMIC_RELEASE);
}

/* The last confirmation a segment holds, from what its last writer kept
 * up: the hot line's word when that writer was of minor 2 or later (a
 * zero there - nothing stored yet - defers to the slot), else the
 * published slot's (an older writer leaves the word 0, or stale when it
 * adopted a newer writer's segment). */
static uint64_t segment_confirmed(unsigned abi_minor, uint64_t hot_confirmed, uint64_t slot_confirmed)
{
	if (abi_minor >= ZKW_ABI_MINOR_HOT_CONFIRMED && hot_confirmed)
		return hot_confirmed;
	return slot_confirmed;
}

/* Make confirmed_ns this writer's, in the hot line too (before the minor
 * is stamped: see stamp_broker()). */
static void take_confirmed(zkw_writer *w, uint64_t confirmed_ns)
{
	w->confirmed_ns = confirmed_ns;
	zkw_segment_set_confirmed(&writer_header(w)->hot, confirmed_ns);
}

/* Load, once, what a keep_content publication carries over from slot s,
 * which should hold generation gen, and check it: 0 when it is sane, else
 * -EBADMSG with the reason in buf (may be NULL). A segment is read back
 * only through this check, so whatever it holds stays within its fields. */
static int load_kept(const zkw_writer *w, const struct zkw_slot *s, uint64_t gen, struct kept *k, char *buf,
                     size_t cap)
{
	uint64_t seq = zkw__load64(&s->seq), slot_gen = zkw__load64(&s->generation);
	uint32_t error_len = zkw__load32(&s->error_len);

	k->len = zkw__load64(&s->len);
	k->pointer_len = zkw__load32(&s->pointer_len);
	k->version = (int64_t)zkw__load64(&s->version);
	k->mzxid = (int64_t)zkw__load64(&s->mzxid);
	k->changed_ns = zkw__load64(&s->changed_ns);
	k->content_gen = zkw__load64(&s->content_gen);
	k->flags = zkw__load32(&s->flags);
	if (seq & 1)
		return zkw__errorf(buf, cap, -EBADMSG, "its sequence %llu is odd (a write that never ended)",
		                   (unsigned long long)seq);
	if (slot_gen != gen)
		return zkw__errorf(buf, cap, -EBADMSG, "it holds generation %llu, not the published %llu",
		                   (unsigned long long)slot_gen, (unsigned long long)gen);
	if (k->len > w->capacity)
		return zkw__errorf(buf, cap, -EBADMSG, "its content length %llu exceeds the capacity %llu",
		                   (unsigned long long)k->len, (unsigned long long)w->capacity);
	if (k->pointer_len >= ZKW_POINTER_MAX)
		return zkw__errorf(buf, cap, -EBADMSG, "its pointer length %u is not below %u",
		                   k->pointer_len, ZKW_POINTER_MAX);
	if (error_len >= ZKW_ERROR_MAX)
		return zkw__errorf(buf, cap, -EBADMSG, "its error length %u is not below %u", error_len,
		                   ZKW_ERROR_MAX);
	if (k->content_gen > gen)
		return zkw__errorf(buf, cap, -EBADMSG,
		                   "its content generation %llu is newer than the slot's %llu",
		                   (unsigned long long)k->content_gen, (unsigned long long)gen);
	return 0;
}

/* The identity block of a segment we create; the magic goes last. */
static void init_identity(zkw_writer *w, uint64_t size)
{
	struct zkw_segment_ident *id = &writer_header(w)->ident;

	id->abi_major = ZKW_ABI_MAJOR;
	id->header_size = ZKW_HEADER_SIZE;
	id->segment_size = size;
	id->slot_size = w->slot_size;
	id->capacity = w->capacity;
	id->slot_count = w->slot_count;
	stamp_broker(w);
}

static int pread_full(int fd, void *buf, size_t len, off_t off)
{
	while (len) {
		ssize_t n = pread(fd, buf, len, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf = (uint8_t *)buf + n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

/* Continue from the segment we replace (`old`, its header already
 * checked): its generation, and its published slot once validated - or an
 * empty invalid snapshot in its place, named in the notice. Read with
 * pread(2) into the new object, which nobody else can reach yet. */
static void carry_over(zkw_writer *w, int old_fd, const struct zkw_segment_header *old, bool growing)
{
	uint64_t gen = old->hot.generation;
	struct zkw_slot *s = writer_slot(w, gen);
	/* The old segment's own layout (checked): its capacity may differ. */
	uint64_t old_slot_size = old->ident.slot_size;
	off_t off = (off_t)ZKW_HEADER_SIZE + (off_t)(gen % w->slot_count) * (off_t)old_slot_size;
	char problem[200] = "it cannot be read";
	struct kept k;
	int bad =
	        pread_full(old_fd, s, old_slot_size < w->slot_size ? old_slot_size : w->slot_size, off) != 0;

	if (!bad)
		bad = load_kept(w, s, gen, &k, problem, sizeof(problem)) < 0;
	if (!bad && k.len > old->ident.capacity) {
		snprintf(problem, sizeof(problem), "its content length %llu exceeds its capacity %llu",
		         (unsigned long long)k.len, (unsigned long long)old->ident.capacity);
		bad = 1;
	}
	if (bad) {
		memset(s, 0, w->slot_size);
		s->generation = gen;
		s->content_gen = gen;
		s->version = -1;
		note(w, "the last snapshot of segment %s was dropped: %s", w->name, problem);
	}
	if (!growing)
		s->flags = 0; /* this broker is not connected yet */
	zkw__store64(&writer_header(w)->hot.generation, gen);
	w->generation = gen;
	take_confirmed(w, segment_confirmed(old->ident.abi_minor, old->hot.confirmed_ns, s->confirmed_ns));
}

/* Mark a replaced segment retired and wake its waiters, through syscalls
 * only: whoever else may still write it cannot make us fault. Only the
 * state word's low byte changes, so pwrite(2) cannot tear it; the state
 * goes before the futex word (two syscalls in order), as in
 * zkw_segment_announce(). */
static void retire_segment(int fd)
{
	const off_t state_off = offsetof(struct zkw_segment_header, hot.state);
	const off_t futex_off = offsetof(struct zkw_segment_header, hot.futex);
	uint32_t state = 0, word = 0;
	void *map;

	if (pread(fd, &state, sizeof(state), state_off) != sizeof(state))
		return;
	state = (state & ~(uint32_t)(ZKW_STATE_RUNNING | ZKW_STATE_CONNECTED)) | ZKW_STATE_RETIRED;
	if (pwrite(fd, &state, sizeof(state), state_off) != sizeof(state))
		return;
	if (pread(fd, &word, sizeof(word), futex_off) == sizeof(word)) {
		word++;
		if (pwrite(fd, &word, sizeof(word), futex_off) != sizeof(word))
			return;
	}
	/* FUTEX_WAKE needs an address: a read-only view of the first page.
	 * The kernel answers EFAULT, never SIGBUS, if the page is gone. */
	map = mmap(NULL, ZKW_HEADER_SIZE, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		return;
	zkw__futex((const uint32_t *)(const void *)((const uint8_t *)map + futex_off), FUTEX_WAKE, INT_MAX,
	           NULL, 0);
	munmap(map, ZKW_HEADER_SIZE);
}

static int apply_permissions(zkw_writer *w, mode_t mode, gid_t group, char *why, size_t whylen)
{
	if (fchmod(w->fd, mode) < 0)
		return zkw__errorf(why, whylen, -errno, "cannot chmod segment %s to %o: %s", w->name,
		                   (unsigned)mode, strerror(errno));
	if (group != (gid_t)-1 && fchown(w->fd, (uid_t)-1, group) < 0)
		return zkw__errorf(why, whylen, -errno, "cannot give segment %s to group %u: %s", w->name,
		                   (unsigned)group, strerror(errno));
	return 0;
}

/* linkat(2) of an unnamed object: through /proc (any user), else
 * AT_EMPTY_PATH (needs CAP_DAC_READ_SEARCH). -1 with errno on failure. */
static int link_object(int fd, const char *dst)
{
	char proc[64];

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	if (linkat(AT_FDCWD, proc, AT_FDCWD, dst, AT_SYMLINK_FOLLOW) == 0)
		return 0;
	if (errno != ENOENT)
		return -1;
	return linkat(fd, "", AT_FDCWD, dst, AT_EMPTY_PATH);
}

/* Give the new object its name: fresh, only if the name is still free
 * (LOOK_AGAIN if it is not); replacing, atomically over the old one (a
 * temporary name, then rename(2)). */
static int name_segment(zkw_writer *w, bool replace, char *why, size_t whylen)
{
	char dst[sizeof(SHM_DIR) + NAME_MAX + 1], tmp[sizeof(SHM_DIR) + 64];
	uint64_t r;
	int attempt, err;

	snprintf(dst, sizeof(dst), SHM_DIR "/%s", w->name + 1);
	if (!replace) {
		if (link_object(w->fd, dst) == 0)
			return 0;
		if (errno == EEXIST)
			return LOOK_AGAIN;
		return zkw__errorf(why, whylen, -errno, "cannot name segment %s: %s", w->name,
		                   strerror(errno));
	}
	for (attempt = 0;; attempt++) {
		r = new_epoch();
		snprintf(tmp, sizeof(tmp), SHM_DIR "/" NEW_PREFIX "%016llx", (unsigned long long)r);
		if (link_object(w->fd, tmp) == 0)
			break;
		if (errno != EEXIST || attempt == OPEN_ATTEMPTS)
			return zkw__errorf(why, whylen, -errno, "cannot name the new segment %s: %s", tmp,
			                   strerror(errno));
	}
	if (rename(tmp, dst) < 0) {
		err = errno;
		unlink(tmp);
		return zkw__errorf(why, whylen, -err, "cannot put the new segment in place of %s: %s",
		                   w->name, strerror(err));
	}
	return 0;
}

static void set_capacity(zkw_writer *w, uint64_t capacity)
{
	w->capacity = capacity;
	w->slot_size = zkw_segment_slot_size(capacity);
}

uint64_t zkw_writer_sized_capacity(uint64_t len, uint64_t max)
{
	uint64_t c = ZKW_WRITER_MIN_CAPACITY;

	while (c < max && c / 2 < len)
		c *= 2;
	return c < max ? c : max;
}

/* The content length of the published slot of a segment whose header `h`
 * was checked, read with pread(2); 0 if it cannot be read. */
static uint64_t published_len(int fd, const struct zkw_segment_header *h)
{
	off_t off = (off_t)ZKW_HEADER_SIZE +
	            (off_t)(h->hot.generation % h->ident.slot_count) * (off_t)h->ident.slot_size;
	uint64_t len = 0;

	if (pread_full(fd, &len, sizeof(len), off + (off_t)offsetof(struct zkw_slot, len)) != 0)
		return 0;
	return len;
}

/* A new segment, created where nobody else can reach it, then named.
 * old_fd >= 0: it replaces that segment (continuing from its header `old`
 * when given, then retiring it). 0, LOOK_AGAIN, or -errno; on failure
 * nothing is left behind. */
static int create_segment(zkw_writer *w, int old_fd, const struct zkw_segment_header *old, bool growing,
                          mode_t mode, gid_t group, char *why, size_t whylen)
{
	uint64_t size = zkw_segment_size(w->capacity, w->slot_count);
	int err;

	w->fd = open(SHM_DIR, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (w->fd < 0)
		return zkw__errorf(why, whylen, -errno, "cannot create a segment in " SHM_DIR ": %s",
		                   strerror(errno));
	err = allocate(w, w->fd, size, why, whylen);
	if (!err && zkw__ofd_write_lock(w->fd) != 0) /* nobody else can reach it: cannot fail */
		err = zkw__errorf(why, whylen, -EIO, "cannot lock the new segment %s", w->name);
	if (!err)
		err = map_segment(w, size, why, whylen);
	if (err)
		goto fail;
	init_identity(w, size);
	if (old)
		carry_over(w, old_fd, old, growing);
	if (growing) { /* the same broker goes on: its identity and state too */
		zkw__store32(&writer_header(w)->ident.broker_pid, old->ident.broker_pid);
		zkw__store64(&writer_header(w)->ident.broker_epoch, old->ident.broker_epoch);
		zkw__store64(&writer_header(w)->ident.broker_started_ns, old->ident.broker_started_ns);
		set_watch_path(w, w->watch_path);
	}
	zkw_segment_set_state(&writer_header(w)->hot,
	                      growing ? old->hot.state & (ZKW_STATE_RUNNING | ZKW_STATE_VALID | ZKW_STATE_CONNECTED |
	                                                  ZKW_STATE_CACHED | ZKW_STATE_REJECTED)
	                              : ZKW_STATE_RUNNING);
	/* A reader that sees the magic sees every identity field. The release
	 * store pairs with the acquire load of the magic in
	 * zkw__reader_validate() (zkw/client.h). No reader can map the
	 * object before it has a name, but the rule costs nothing. */
	__atomic_store_n(&writer_header(w)->ident.magic, ZKW_SEGMENT_MAGIC, __ATOMIC_RELEASE);
	err = apply_permissions(w, mode, group, why, whylen);
	if (!err)
		err = name_segment(w, old_fd >= 0, why, whylen);
	if (err)
		goto fail;
	if (old)
		retire_segment(old_fd);
	return 0;
fail:
	discard(w);
	if (!growing) {
		w->generation = 0;
		w->notice[0] = '\0';
	}
	return err;
}

/* Check a segment's header (read with pread) against what we would
 * create: its own capacity (any, for a growing writer) and the layout
 * that capacity implies. 0, or -EEXIST naming the difference. */
static int check_header(zkw_writer *w, int fd, const struct stat *st, struct zkw_segment_header *h, char *why,
                        size_t whylen)
{
	const struct zkw_segment_ident *id = &h->ident;
	uint64_t expect;

	if ((uint64_t)st->st_size < ZKW_HEADER_SIZE || pread_full(fd, h, sizeof(*h), 0) != 0)
		return zkw__errorf(why, whylen, -EEXIST,
		                   "segment %s exists but is not a zkw segment (%lld bytes); remove it",
		                   w->name, (long long)st->st_size);
	if (id->magic != ZKW_SEGMENT_MAGIC || id->abi_major != ZKW_ABI_MAJOR ||
	    id->header_size != ZKW_HEADER_SIZE)
		return zkw__errorf(why, whylen, -EEXIST,
		                   "segment %s exists but is not a zkw segment of ABI %u; remove it", w->name,
		                   ZKW_ABI_MAJOR);
	if (!w->grow && id->capacity != w->capacity)
		return zkw__errorf(
		        why, whylen, -EEXIST,
		        "segment %s exists with capacity %llu bytes, not %llu; use that capacity or "
		        "remove it",
		        w->name, (unsigned long long)id->capacity, (unsigned long long)w->capacity);
	if (id->capacity < 1 || id->capacity > ZKW_CAPACITY_MAX)
		return zkw__errorf(why, whylen, -EEXIST,
		                   "segment %s exists but its capacity %llu is corrupt; remove it", w->name,
		                   (unsigned long long)id->capacity);
	expect = zkw_segment_size(id->capacity, w->slot_count);
	if (id->slot_count != w->slot_count || id->slot_size != zkw_segment_slot_size(id->capacity) ||
	    id->segment_size != expect || (uint64_t)st->st_size < expect)
		return zkw__errorf(why, whylen, -EEXIST,
		                   "segment %s exists but its layout is corrupt; remove it", w->name);
	if (h->hot.generation > ZKW_GENERATION_MAX)
		return zkw__errorf(why, whylen, -EEXIST,
		                   "segment %s exists but its generation %llu is corrupt; remove it", w->name,
		                   (unsigned long long)h->hot.generation);
	return 0;
}

/* Take over the segment in place (its write lock is ours): readers carry
 * on without reopening. */
static int adopt_segment(zkw_writer *w, char *why, size_t whylen)
{
	uint64_t size = zkw_segment_size(w->capacity, w->slot_count);
	struct zkw_segment_header *h;
	char problem[200];
	struct kept k;
	uint32_t i;
	int err;

	/* A segment from an older broker may have been sized only: give it
	 * its pages now, not at a publish. */
	err = allocate(w, w->fd, size, why, whylen);
	if (!err)
		err = map_segment(w, size, why, whylen);
	if (err)
		return err;
	/* Only a writer stores the generation, and we hold the lock. */
	w->generation = zkw__load64(&writer_header(w)->hot.generation);
	if (w->generation > ZKW_GENERATION_MAX)
		return zkw__errorf(why, whylen, -EEXIST, "segment %s: generation %llu is corrupt; remove it",
		                   w->name, (unsigned long long)w->generation);
	/* Checked before the repair below, which would make an odd
	 * published slot look even. */
	if (load_kept(w, writer_slot(w, w->generation), w->generation, &k, problem, sizeof(problem)) < 0) {
		w->drop_kept = true;
		note(w, "the last snapshot of segment %s was dropped: %s", w->name, problem);
	}
	/* A broker killed mid-publish left that slot odd; it was never
	 * published, so make it even and let the next publish overwrite it. */
	for (i = 0; i < w->slot_count; i++)
		zkw_slot_write_repair(writer_slot(w, i));
	/* The confirmation time goes on from what the last writer kept up,
	 * into the hot line before stamp_broker() raises the minor. */
	h = writer_header(w);
	take_confirmed(w, segment_confirmed(__atomic_load_n(&h->ident.abi_minor, __ATOMIC_RELAXED),
	                                    zkw__load64(&h->hot.confirmed_ns),
	                                    zkw__load64(&writer_slot(w, w->generation)->confirmed_ns)));
	stamp_broker(w);
	return 0;
}

/* Find the segment the name holds and take it: adopt it, replace it, or
 * create it. 0, LOOK_AGAIN (the name changed under us), or -errno. */
static int take_segment(zkw_writer *w, mode_t mode, gid_t group, char *why, size_t whylen)
{
	char path[sizeof(SHM_DIR) + NAME_MAX + 1];
	struct zkw_segment_header h;
	const char *replace_why = NULL;
	char too_large[160];
	struct stat st;
	struct flock fl;
	int fd, err;

	/* A new segment's capacity (an existing one brings its own). */
	set_capacity(w, w->grow ? zkw_writer_sized_capacity(0, w->max_capacity) : w->max_capacity);
	fd = shm_open(w->name, O_RDWR | O_CLOEXEC, 0);
	if (fd < 0 && errno == ENOENT)
		return create_segment(w, -1, NULL, false, mode, group, why, whylen);
	if (fd < 0) {
		err = errno;
		snprintf(path, sizeof(path), SHM_DIR "/%s", w->name + 1);
		if (lstat(path, &st) == 0 && st.st_uid != geteuid())
			return foreign_owner("segment", w->name, st.st_uid, why, whylen);
		return zkw__errorf(why, whylen, -err, "cannot open segment %s: %s", w->name, strerror(err));
	}
	if (fstat(fd, &st) < 0) {
		err = zkw__errorf(why, whylen, -errno, "cannot stat segment %s: %s", w->name,
		                  strerror(errno));
		close(fd);
		return err;
	}
	if (st.st_uid != geteuid()) {
		close(fd);
		return foreign_owner("segment", w->name, st.st_uid, why, whylen);
	}
	if (st.st_size == 0) { /* ours but empty: nothing to continue from */
		err = create_segment(w, fd, NULL, false, mode, group, why, whylen);
		close(fd);
		return err;
	}
	err = check_header(w, fd, &st, &h, why, whylen);
	if (err) {
		close(fd);
		return err;
	}
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		replace_why = "it was writable by group or others";
	} else {
		int64_t deadline = (int64_t)(zkw__now_ns(CLOCK_MONOTONIC) / 1000000u) + HOLDER_WAIT_MS;

		while ((err = zkw__ofd_write_lock(fd)) == -EAGAIN || err == -EACCES) {
			memset(&fl, 0, sizeof(fl));
			fl.l_type = F_WRLCK;
			fl.l_whence = SEEK_SET;
			if (fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type == F_RDLCK) {
				replace_why = "another process holds a read lock on it";
				break;
			}
			/* A write lock (or one released meanwhile): a broker that
			 * does not use the broker lock (an older zkw-broker), or
			 * one still dying - its descriptors close one by one. */
			if ((int64_t)(zkw__now_ns(CLOCK_MONOTONIC) / 1000000u) > deadline) {
				close(fd);
				return held_by_another(w, why, whylen);
			}
			if (fl.l_type != F_UNLCK)
				usleep(5000);
		}
		if (!replace_why && err) {
			close(fd);
			return zkw__errorf(why, whylen, err, "cannot lock segment %s: %s", w->name,
			                   strerror(-err));
		}
	}
	/* Its own capacity, when it is within what we may grow to (without
	 * grow, check_header() made sure it is ours). A larger one is replaced
	 * by one sized for its content (dropped if above the maximum). */
	if (h.ident.capacity <= w->max_capacity) {
		set_capacity(w, h.ident.capacity);
	} else if (!replace_why) {
		snprintf(too_large, sizeof(too_large), "its capacity %llu exceeds the maximum %llu",
		         (unsigned long long)h.ident.capacity, (unsigned long long)w->max_capacity);
		replace_why = too_large;
	}
	if (h.ident.capacity > w->max_capacity) {
		uint64_t len = published_len(fd, &h);

		set_capacity(w, zkw_writer_sized_capacity(len <= w->max_capacity ? len : 0, w->max_capacity));
	}
	if (!replace_why) {
		w->fd = fd;
		err = apply_permissions(w, mode, group, why, whylen);
		return err ? err : adopt_segment(w, why, whylen);
	}
	err = create_segment(w, fd, &h, false, mode, group, why, whylen);
	close(fd);
	if (err == 0)
		note(w, "segment %s replaced because %s; readers of the old one are told to reopen it",
		     w->name, replace_why);
	return err;
}

static int writer_setup(zkw_writer *w, const zkw_writer_options *opt, char *why, size_t whylen)
{
	mode_t mode = opt && opt->mode ? opt->mode : 0640;
	gid_t group = opt ? opt->group : (gid_t)-1;
	int attempt, err;

	if (mode & ~(mode_t)0777)
		return zkw__errorf(why, whylen, -EINVAL,
		                   "mode %04o for segment %s: only permission bits (0777) apply",
		                   (unsigned)mode, w->name);
	if (mode & (S_IWGRP | S_IWOTH))
		return zkw__errorf(
		        why, whylen, -EINVAL,
		        "mode %04o would let group or others write segment %s and change what every "
		        "reader sees; refused (readers refuse such segments too)",
		        (unsigned)mode, w->name);
	w->mode = mode;
	w->group = group;
	if (w->grow) { /* a maximum that can never fit: say so now, not at a growth */
		uint64_t most = zkw_segment_size(w->max_capacity, w->slot_count);
		struct statvfs vfs;

		if (statvfs(SHM_DIR, &vfs) == 0 && vfs.f_blocks > 0 &&
		    most > (uint64_t)vfs.f_blocks * (uint64_t)vfs.f_frsize)
			return zkw__errorf(
			        why, whylen, -ENOSPC,
			        "not enough space in " SHM_DIR " for segment %s at its maximum "
			        "capacity %llu: it needs %llu bytes, " SHM_DIR " holds %llu in all "
			        "(a smaller --capacity, or a larger " SHM_DIR ")",
			        w->name, (unsigned long long)w->max_capacity, (unsigned long long)most,
			        (unsigned long long)vfs.f_blocks * (unsigned long long)vfs.f_frsize);
	}
	err = lock_broker(w, why, whylen);
	for (attempt = 0; !err && attempt < OPEN_ATTEMPTS; attempt++) {
		err = take_segment(w, mode, group, why, whylen);
		if (err != LOOK_AGAIN)
			break;
	}
	if (err == LOOK_AGAIN)
		err = zkw__errorf(why, whylen, -EAGAIN, "segment %s keeps changing under us; giving up",
		                  w->name);
	if (err)
		return err;
	set_watch_path(w, w->watch_path);
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
	w->lock_fd = -1;
	w->max_capacity = opt && opt->capacity ? opt->capacity : ZKW_DEFAULT_CAPACITY;
	w->grow = opt && opt->grow;
	w->slot_count = ZKW_SLOT_COUNT;
	w->compare_content = true;
	snprintf(w->watch_path, sizeof(w->watch_path), "%s", opt && opt->watch_path ? opt->watch_path : "");
	err = zkw_shm_name(w->name, sizeof(w->name), shm_name);
	if (err)
		zkw__errorf(why, whylen, err,
		            "invalid segment name \"%s\": one component, at most %d characters",
		            shm_name ? shm_name : "", ZKW_SHM_NAME_MAX - 1);
	else if (w->max_capacity > ZKW_CAPACITY_MAX)
		err = zkw__errorf(why, whylen, -EINVAL, "capacity %llu exceeds the maximum %u",
		                  (unsigned long long)w->max_capacity, ZKW_CAPACITY_MAX);
	else
		err = writer_setup(w, opt, why, whylen);
	if (err) {
		discard(w);
		if (w->lock_fd >= 0) { /* ours: unlinked while locked, as in close */
			unlink(w->lock_path);
			close(w->lock_fd);
		}
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
 * from the published slot `cur` (the last good value). What is read back
 * from cur is loaded once and checked (load_kept()): a slot that fails the
 * check is carried over as empty content, a change, never as bytes out of
 * its bounds. */
static uint32_t fill_content(zkw_writer *w, struct zkw_slot *s, const struct zkw_slot *cur,
                             const zkw_publication *p, uint64_t gen)
{
	struct kept k;
	bool kept_ok = !w->drop_kept && load_kept(w, cur, w->generation, &k, NULL, 0) == 0;
	bool changed;
	uint64_t changed_ns, content_gen;

	w->drop_kept = false;
	if (p->keep_content && !kept_ok) {
		zkw__store32(&s->pointer_len, 0);
		zkw__store64(&s->len, 0);
		zkw__store64(&s->version, (uint64_t)-1);
		zkw__store64(&s->mzxid, 0);
		zkw__store64(&s->changed_ns, zkw__now_ns(CLOCK_REALTIME));
		zkw__store64(&s->content_gen, gen);
		return 0;
	}
	if (p->keep_content) {
		zkw_payload_store((uint8_t *)s + ZKW_SLOT_CONTENT_OFFSET,
		                  (const uint8_t *)cur + ZKW_SLOT_CONTENT_OFFSET, k.len);
		zkw_payload_store(s->pointer, cur->pointer, k.pointer_len);
		zkw__store32(&s->pointer_len, k.pointer_len);
		zkw__store64(&s->len, k.len);
		zkw__store64(&s->version, (uint64_t)k.version);
		zkw__store64(&s->mzxid, (uint64_t)k.mzxid);
		zkw__store64(&s->changed_ns, k.changed_ns);
		zkw__store64(&s->content_gen, k.content_gen);
		return k.flags & (ZKW_SLOT_CACHED | ZKW_SLOT_BUNDLE);
	}
	if (p->cached) {
		/* Restored as saved; compare_content stays: the first live
		 * publication compares bytes. */
		changed_ns = p->changed_ns ? p->changed_ns : zkw__now_ns(CLOCK_REALTIME);
		content_gen = p->content_gen && p->content_gen < gen ? p->content_gen : gen;
	} else {
		if (!kept_ok)
			changed = true;
		else if (w->compare_content)
			changed = w->generation == 0 || k.len != p->len ||
			          memcmp((const uint8_t *)cur + ZKW_SLOT_CONTENT_OFFSET, p->content, p->len) != 0;
		else
			changed = p->content_serial != w->content_serial;
		w->compare_content = false;
		w->content_serial = p->content_serial;
		changed_ns = changed ? zkw__now_ns(CLOCK_REALTIME) : k.changed_ns;
		content_gen = changed ? gen : k.content_gen;
	}
	zkw_payload_store((uint8_t *)s + ZKW_SLOT_CONTENT_OFFSET, p->content, p->len);
	copy_text(s->pointer, &s->pointer_len, p->pointer, ZKW_POINTER_MAX);
	zkw__store64(&s->len, p->len);
	zkw__store64(&s->version, (uint64_t)p->version);
	zkw__store64(&s->mzxid, (uint64_t)p->mzxid);
	zkw__store64(&s->changed_ns, changed_ns);
	zkw__store64(&s->content_gen, content_gen);
	return p->cached ? ZKW_SLOT_CACHED : 0;
}

/* Replace the segment by a larger one for content of len bytes: created
 * where nobody can reach it, continuing this one's generation, published
 * snapshot, state and broker identity, renamed over the name; this one is
 * then retired (readers reopen the name) and let go. 0, or -errno with
 * the reason in w->error and this segment kept. */
static int grow_segment(zkw_writer *w, uint64_t len)
{
	struct zkw_segment_header old;
	int old_fd = w->fd;
	uint8_t *old_base = w->base;
	size_t old_size = w->size;
	uint64_t old_capacity = w->capacity;
	gid_t group = w->group;
	struct stat st;
	int err;

	memset(&old, 0, sizeof(old));
	old.ident = writer_header(w)->ident; /* only we write it */
	old.hot.generation = w->generation;
	old.hot.state = zkw_segment_state(&writer_header(w)->hot);
	old.hot.confirmed_ns = w->confirmed_ns;
	/* Left as created (no --group): keep the group the segment has. */
	if (group == (gid_t)-1 && fstat(old_fd, &st) == 0 && st.st_gid != getegid())
		group = st.st_gid;
	set_capacity(w, zkw_writer_sized_capacity(len, w->max_capacity));
	w->fd = -1;
	w->base = NULL;
	err = create_segment(w, old_fd, &old, true, w->mode, group, w->error, sizeof(w->error));
	if (err == LOOK_AGAIN) /* only a fresh name can be taken */
		err = zkw__errorf(w->error, sizeof(w->error), -EIO, "cannot replace segment %s", w->name);
	if (err) {
		w->fd = old_fd;
		w->base = old_base;
		w->size = old_size;
		set_capacity(w, old_capacity);
		return err;
	}
	munmap(old_base, old_size);
	close(old_fd); /* its write lock goes with it; it is retired */
	return 0;
}

int zkw_writer_publish(zkw_writer *w, const zkw_publication *p)
{
	uint64_t gen = w->generation + 1;
	struct zkw_slot *s;
	const struct zkw_slot *cur;
	uint32_t flags = (p->valid ? ZKW_SLOT_VALID : 0) | (p->connected ? ZKW_SLOT_CONNECTED : 0) |
	                 (p->rejected ? ZKW_SLOT_REJECTED : 0) | (p->bundle ? ZKW_SLOT_BUNDLE : 0);
	uint32_t state;
	uint64_t start, confirmed;
	int err;

	w->error[0] = '\0';
	if (p->cached) {
		if (p->after_generation >= ZKW_GENERATION_MAX || p->content_gen > p->after_generation ||
		    (p->len && !p->content) || p->keep_content)
			return -EINVAL;
		/* Above the saved generation, on the other slot than the
		 * published one (the generation may skip ahead). */
		if (p->after_generation >= gen)
			gen = p->after_generation + 1;
		if (gen % w->slot_count == w->generation % w->slot_count)
			gen++;
	}
	if (!p->keep_content && p->len > w->capacity) {
		if (!w->grow || p->len > w->max_capacity)
			return -EMSGSIZE;
		if (p->len && !p->content)
			return -EINVAL;
		err = grow_segment(w, p->len);
		if (err)
			return err;
	}
	if (!p->keep_content && p->len && !p->content)
		return -EINVAL;
	s = writer_slot(w, gen);
	cur = writer_slot(w, w->generation);
	/* A publication without a confirmation of its own carries the last
	 * one stored over - a zkw_writer_confirm()'s too, which the published
	 * slot does not hold. */
	confirmed = p->confirmed_ns ? p->confirmed_ns : w->confirmed_ns;

	/* The seqlock's write side (zkw/segment.h): begin, relaxed payload
	 * stores, end. */
	start = zkw_slot_write_begin(s);

	zkw__store64(&s->generation, gen);
	zkw__store64(&s->confirmed_ns, confirmed);
	copy_text(s->error, &s->error_len, p->valid ? NULL : p->error, ZKW_ERROR_MAX);
	flags |= fill_content(w, s, cur, p, gen);
	zkw__store32(&s->flags, flags);
	state = ZKW_STATE_RUNNING | (p->valid ? ZKW_STATE_VALID : 0) | (p->connected ? ZKW_STATE_CONNECTED : 0) |
	        (flags & ZKW_SLOT_CACHED ? ZKW_STATE_CACHED : 0) |
	        (flags & ZKW_SLOT_REJECTED ? ZKW_STATE_REJECTED : 0);

	if (__builtin_expect(zkw_writer_fault_hook != NULL, 0))
		zkw_writer_fault_hook();

	zkw_slot_write_end(s, start);

	/* Confirmation time, then state, generation, futex word, wake: the
	 * hot line of zkw/segment.h. */
	take_confirmed(w, confirmed);
	zkw_segment_announce(&writer_header(w)->hot, gen, state);
	w->generation = gen;
	return 0;
}

int zkw_writer_confirm(zkw_writer *w, uint64_t confirmed_ns)
{
	if (confirmed_ns == 0)
		return -EINVAL;
	take_confirmed(w, confirmed_ns);
	return 0;
}

int zkw_writer_view_published(const zkw_writer *w, zkw_writer_view *out)
{
	const struct zkw_slot *s = writer_slot(w, w->generation);
	struct kept k;

	memset(out, 0, sizeof(*out));
	out->content = "";
	out->version = -1;
	if (w->generation == 0)
		return 0;
	if (w->drop_kept || load_kept(w, s, w->generation, &k, NULL, 0) < 0)
		return -EBADMSG;
	out->generation = w->generation;
	out->flags = k.flags;
	out->content = (const uint8_t *)s + ZKW_SLOT_CONTENT_OFFSET;
	out->len = (size_t)k.len;
	out->version = k.version;
	out->mzxid = k.mzxid;
	out->changed_ns = k.changed_ns;
	out->content_gen = k.content_gen;
	out->confirmed_ns = w->confirmed_ns;
	zkw_payload_load(out->pointer, s->pointer, k.pointer_len);
	out->pointer[k.pointer_len] = '\0';
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

const char *zkw_writer_notice(const zkw_writer *w)
{
	return w->notice;
}

const char *zkw_writer_error(const zkw_writer *w)
{
	return w->error;
}

void zkw_writer_close(zkw_writer *w, bool unlink_segment)
{
	if (!w)
		return;
	/* A segment about to lose its name is retired first: the wake below
	 * tells its waiters (-ESTALE) instead of leaving them on a segment
	 * nobody can reach again. The release fetch-or pairs with the
	 * acquire load in zkw_segment_state(); the wake comes after it. */
	if (unlink_segment)
		__atomic_fetch_or(&writer_header(w)->hot.state, ZKW_STATE_RETIRED, __ATOMIC_RELEASE);
	zkw_segment_announce_stopped(&writer_header(w)->hot);
	if (unlink_segment)
		shm_unlink(w->name);
	munmap(w->base, w->size);
	/* The segment's lock first, then the broker lock: a broker that gets
	 * the broker lock finds the segment free. The lock file is unlinked
	 * while still locked (lock_broker() checks that the file it locked
	 * still has the name). */
	close(w->fd);
	unlink(w->lock_path);
	close(w->lock_fd);
	free(w);
}
