/* SPDX-License-Identifier: Apache-2.0 */
/* stats.c - the broker's counters in /dev/shm/zkw-stats.<pid> (see stats.h
 * and lib/zkw_stats.h for the layout).
 *
 * The object is made the way a segment is (broker/publish/writer.c): an
 * unnamed O_TMPFILE in /dev/shm, allocated in full, write-locked (the OFD
 * lock readers probe for liveness), filled, given the segments' mode and
 * group, and only then linked under its name, so a named stats object is
 * locked from the moment anyone can see it. That is also what makes the
 * sweep at start safe: a named object of our uid whose lock is free
 * belongs to a broker that died without removing it.
 */
#include "daemon/stats.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zkw/common.h>
#include <zkw/segment.h> /* zkw__ofd_write_locked: the liveness lock, as segments */

#include <zkw_clock.h>

#include "daemon/log.h"

#define SHM_DIR       "/dev/shm"
#define LINK_ATTEMPTS 4

static struct zkw_stats_object *obj; /* NULL: no metrics */
static int obj_fd = -1;
static char obj_name[64]; /* "/zkw-stats.<pid>" */
static struct stat obj_st;
/* Writers of the last error: the ZooKeeper threads, the control thread,
 * main. Held for a copy of at most ZKW_STATS_ERROR_MAX bytes. */
static pthread_mutex_t error_lock = PTHREAD_MUTEX_INITIALIZER;

/* Remove name (in dirfd) if it is a stats object of our uid that no broker
 * holds: one a broker killed before its clean stop left. */
static bool remove_if_dead(int dirfd, const char *name)
{
	struct stat st, now;
	bool removed = false;
	int fd;

	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode) ||
	    st.st_uid != geteuid())
		return false;
	fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return false;
	if (fstat(fd, &now) == 0 && now.st_dev == st.st_dev && now.st_ino == st.st_ino && !zkw__ofd_write_locked(fd) &&
	    fstatat(dirfd, name, &now, AT_SYMLINK_NOFOLLOW) == 0 && now.st_ino == st.st_ino)
		removed = unlinkat(dirfd, name, 0) == 0;
	close(fd);
	return removed;
}

static void sweep_dead(void)
{
	DIR *d = opendir(SHM_DIR);
	struct dirent *e;
	unsigned removed = 0;

	if (!d)
		return;
	while ((e = readdir(d)))
		if (strncmp(e->d_name, ZKW_STATS_PREFIX, strlen(ZKW_STATS_PREFIX)) == 0 &&
		    remove_if_dead(dirfd(d), e->d_name))
			removed++;
	closedir(d);
	if (removed)
		zkw__log_printf(ZKW_LOG_INFO, "removed %u stats object%s of stopped brokers from " SHM_DIR,
		                removed, removed == 1 ? "" : "s");
}

/* Link the unnamed object under obj_name: "/zkw-stats.<pid>", or, when
 * that name is taken by something we may not remove (another user's file;
 * a live broker of our pid in another PID namespace sharing /dev/shm),
 * "/zkw-stats.<pid>.<random>". 0 or -errno. */
static int link_object(void)
{
	char proc[64], path[sizeof(SHM_DIR) + sizeof(obj_name)];
	int dirfd = open(SHM_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int err = -EEXIST;

	if (dirfd < 0)
		return -errno;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", obj_fd);
	snprintf(obj_name, sizeof(obj_name), "/" ZKW_STATS_PREFIX "%ld", (long)getpid());
	for (int attempt = 0; attempt < LINK_ATTEMPTS && err == -EEXIST; attempt++) {
		snprintf(path, sizeof(path), SHM_DIR "%s", obj_name);
		if (linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW) == 0 ||
		    linkat(obj_fd, "", AT_FDCWD, path, AT_EMPTY_PATH) == 0) {
			err = 0;
			break;
		}
		err = -errno;
		if (err == -EEXIST && !remove_if_dead(dirfd, obj_name + 1)) {
			uint64_t r = 0;

			if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
				r = zkw_clock_ns(CLOCK_MONOTONIC);
			snprintf(obj_name, sizeof(obj_name), "/" ZKW_STATS_PREFIX "%ld.%016llx",
			         (long)getpid(), (unsigned long long)r);
		}
	}
	close(dirfd);
	return err;
}

/* The identity, then the magic with release: pairs with the acquire load
 * of the magic in zkw_stats_load() (lib/zkw_stats.h). */
static void stats_publish_identity(const char *socket_path)
{
	obj->abi_major = ZKW_STATS_ABI_MAJOR;
	obj->abi_minor = ZKW_STATS_ABI_MINOR;
	obj->size = ZKW_STATS_SIZE;
	obj->broker_pid = (uint32_t)getpid();
	obj->counter_count = ZKW_STAT_COUNT;
	obj->broker_started_ns = zkw_clock_ns(CLOCK_REALTIME);
	snprintf(obj->version, sizeof(obj->version), "%s", ZKW_VERSION);
	snprintf(obj->socket, sizeof(obj->socket), "%s", socket_path ? socket_path : "");
	__atomic_store_n(&obj->magic, ZKW_STATS_MAGIC, __ATOMIC_RELEASE);
}

static int open_fail(int err, char *why, size_t whylen, const char *what)
{
	if (obj)
		munmap(obj, ZKW_STATS_SIZE);
	obj = NULL;
	if (obj_fd >= 0)
		close(obj_fd);
	obj_fd = -1;
	obj_name[0] = '\0';
	return zkw__errorf(why, whylen, err, "cannot publish the broker's counters in " SHM_DIR ": %s: %s",
	                   what, strerror(-err));
}

int zkw__stats_open(const char *socket_path, mode_t mode, gid_t group, char *why, size_t whylen)
{
	struct flock fl;
	void *map;
	int err;

	if (!mode)
		mode = 0640;
	if (mode & (S_IWGRP | S_IWOTH))
		return zkw__errorf(why, whylen, -EINVAL, "stats mode %04o has group or other write bits",
		                   (unsigned)mode);
	sweep_dead();
	obj_fd = open(SHM_DIR, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (obj_fd < 0)
		return open_fail(-errno, why, whylen, "create");
	/* Every page now: no SIGBUS at a later count when /dev/shm fills. */
	if ((err = posix_fallocate(obj_fd, 0, ZKW_STATS_SIZE)) != 0)
		return open_fail(-err, why, whylen, "allocate");
	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	if (fcntl(obj_fd, F_OFD_SETLK, &fl) < 0)
		return open_fail(-errno, why, whylen, "lock");
	map = mmap(NULL, ZKW_STATS_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, obj_fd, 0);
	if (map == MAP_FAILED)
		return open_fail(-errno, why, whylen, "map");
	obj = map;
	stats_publish_identity(socket_path);
	if (fchmod(obj_fd, mode) < 0)
		return open_fail(-errno, why, whylen, "chmod");
	if (group != (gid_t)-1 && fchown(obj_fd, (uid_t)-1, group) < 0)
		return open_fail(-errno, why, whylen, "chown to the segments' group");
	if ((err = link_object()) < 0)
		return open_fail(err, why, whylen, "link");
	if (fstat(obj_fd, &obj_st) < 0)
		memset(&obj_st, 0, sizeof(obj_st));
	return 0;
}

void zkw__stats_add(enum zkw_stat which)
{
	struct zkw_stats_object *o = __atomic_load_n(&obj, __ATOMIC_ACQUIRE);

	if (o && (unsigned)which < ZKW_STAT_COUNT)
		__atomic_fetch_add(&o->counter[which], 1, __ATOMIC_RELAXED);
}

void zkw__stats_error(int level, const char *fmt, ...)
{
	struct zkw_stats_object *o = __atomic_load_n(&obj, __ATOMIC_ACQUIRE);
	char text[ZKW_STATS_ERROR_MAX];
	uint64_t seq, now;
	size_t len;
	va_list ap;

	if (!o)
		return;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	len = strlen(text);
	now = zkw_clock_ns(CLOCK_REALTIME);
	pthread_mutex_lock(&error_lock);
	seq = __atomic_load_n(&o->error_seq, __ATOMIC_RELAXED);
	__atomic_store_n(&o->error_seq, seq + 1, __ATOMIC_RELAXED);
	/* Pairs with the acquire fence before the re-check in
	 * zkw_stats_load(): a reader that sees any byte below sees seq odd. */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	for (size_t i = 0; i < len; i++)
		__atomic_store_n(&o->error[i], text[i], __ATOMIC_RELAXED);
	__atomic_store_n(&o->error_len, (uint32_t)len, __ATOMIC_RELAXED);
	__atomic_store_n(&o->error_level, (uint32_t)level, __ATOMIC_RELAXED);
	__atomic_store_n(&o->error_ns, now, __ATOMIC_RELAXED);
	/* Pairs with the acquire load of the sequence in zkw_stats_load(). */
	__atomic_store_n(&o->error_seq, seq + 2, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&error_lock);
	zkw__stats_add(ZKW_STAT_ERRORS);
}

void zkw__stats_session_count(void *ctx, zkw_session_count what)
{
	static const enum zkw_stat map[] = {
	        [ZKW_COUNT_ZK_EVENT] = ZKW_STAT_ZK_EVENTS,
	        [ZKW_COUNT_READ] = ZKW_STAT_ZK_READS,
	        [ZKW_COUNT_RECONCILE] = ZKW_STAT_RECONCILE_CHECKS,
	        [ZKW_COUNT_REPAIR] = ZKW_STAT_RECONCILE_REPAIRS,
	        [ZKW_COUNT_RECONNECT] = ZKW_STAT_RECONNECTS,
	        [ZKW_COUNT_SESSION_LOST] = ZKW_STAT_SESSION_EXPIRIES,
	};

	(void)ctx;
	if ((unsigned)what < sizeof(map) / sizeof(map[0]))
		zkw__stats_add(map[what]);
}

void zkw__stats_log_sink(void *ctx, int level, const char *message)
{
	zkw__log_sink(ctx, level, message);
	if (level == ZKW_LOG_ERROR || level == ZKW_LOG_WARN)
		zkw__stats_error(level, "%s", message);
}

void zkw__stats_close(void)
{
	char path[sizeof(SHM_DIR) + sizeof(obj_name)];
	struct zkw_stats_object *o = obj;
	struct stat named;

	if (!o)
		return;
	/* Ours still, while we hold the lock: remove it, then let go. */
	snprintf(path, sizeof(path), SHM_DIR "%s", obj_name);
	if (lstat(path, &named) == 0 && named.st_dev == obj_st.st_dev && named.st_ino == obj_st.st_ino)
		unlink(path);
	__atomic_store_n(&obj, NULL, __ATOMIC_RELEASE);
	/* Counting threads are gone by now (the session is closed, the
	 * control thread joined), so the mapping can go. */
	munmap(o, ZKW_STATS_SIZE);
	close(obj_fd);
	obj_fd = -1;
}

const char *zkw__stats_name(void)
{
	return obj_name;
}
