/* SPDX-License-Identifier: Apache-2.0 */
/* zkw_py.c - zkw/client.h behind a small, stable C ABI for language
 * bindings (ctypes, cffi, FFI of any kind): build/libzkw-client.so.
 *
 * client.h is header-only (static inline), so a binding has nothing to
 * call; these are exported, non-inline wrappers. The ABI avoids the
 * layout of zkw_snapshot (bool, size_t, two large char arrays): metadata
 * comes back in zkw_py_meta, fixed-size fields only (mirrored in
 * client/python/zkw.py, checked at load time with zkw_py_meta_size()),
 * and the error and pointer texts through accessors.
 *
 *     struct zkw_py_reader *h;
 *     char why[512];
 *     int err = zkw_py_open(&h, "/zkw.tmp.myconfig", -1, why, sizeof(why)); // 0 or -errno
 *     // or through the broker's control socket (NULL: $ZKW_SOCKET, else the default):
 *     err = zkw_py_subscribe(&h, NULL, "/tmp/myconfig", ZKW_SUBSCRIBE_POINTER, 0, -1, why, sizeof(why));
 *     zkw_py_meta m;
 *     int64_t n = zkw_py_read(h, &m, buf, cap);   // -ENOBUFS: m.len needed
 *     const char *e = zkw_py_error(h);            // of that read
 *     zkw_py_shutdown(h);                         // any thread: waits return -ECANCELED
 *     zkw_py_close(h);                            // once no call is in flight
 *
 * Event mode: the binding keeps a zeroed buffer of zkw_py_delivery_size()
 * bytes (8-byte aligned) per event loop, and for every snapshot asks
 * zkw_py_delivery_next() which handlers are due (ZKW_DELIVER_* bits of
 * zkw/common.h); it calls them in bit order. The rule lives in C only.
 *
 * Polling without a call: zkw_py_hot_layout() gives the offsets of the
 * generation and state words in the segment's header and the state bits;
 * a binding maps the header of zkw_py_fd() read-only itself and loads them
 * (a mapping of its own, which it keeps alive while any thread loads from
 * it, whatever zkw_py_close does).
 *
 * Threads: zkw_py_generation/is_valid/ping/broker_alive/capacity/wait may
 * run in several threads at once (they only read the segment); zkw_py_read
 * and the texts of the last read (zkw_py_error/pointer) need one caller at
 * a time. zkw_py_shutdown() may be called while other threads are in any
 * of these: it makes every zkw_py_wait in flight, and every later one,
 * return -ECANCELED at once. zkw_py_close() frees the handle and unmaps
 * the segment: the binding calls it only once no call is in flight (zkw.py
 * counts its calls under a lock: shutdown, wait for the count to drop to
 * zero, close).
 * Errors follow zkw/common.h: 0 or -errno, results through out-parameters.
 */
#include <zkw/client.h>
#include <zkw/common.h>

#include <limits.h>
#include <linux/futex.h>
#include <linux/time_types.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ZKW_PY_ABI 5 /* bump on any change of the functions, zkw_py_meta or ZKW_DELIVER_* */

/* Where futex_waitv(2) (Linux 5.16) is missing, a wait sleeps on the
 * segment alone in slices this long and re-checks the shutdown word. */
#define ZKW_PY_FALLBACK_SLICE_MS 20

typedef struct zkw_py_meta {
	uint64_t generation;
	uint64_t content_gen;
	uint64_t len; /* content length (needed size on -ENOBUFS) */
	int64_t version;
	int64_t mzxid;
	uint64_t confirmed_ns;
	uint64_t changed_ns;
	uint32_t valid;
	uint32_t connected;
	uint32_t cached;   /* zkw_snapshot.cached: from the broker's disk cache */
	uint32_t rejected; /* zkw_snapshot.rejected: newer content failed validation */
	uint32_t bundle;   /* zkw_snapshot.bundle: the content is a bundle (zkw/bundle.h) */
	uint32_t reserved; /* 0: keeps the size a multiple of 8 */
} zkw_py_meta;

_Static_assert(sizeof(zkw_py_meta) == 80, "zkw_py_meta is mirrored in zkw.py");

struct zkw_py_reader {
	zkw_reader reader;
	zkw_snapshot snap; /* of the last read: error and pointer texts */
	uint32_t closing;  /* private futex word: 1 once zkw_py_shutdown() ran */
	int no_waitv;      /* the kernel lacks futex_waitv(2) (atomic: waits race) */
};

/* zkw_py_hot_layout(): header size, generation offset, state offset,
 * ZKW_STATE_VALID, ZKW_STATE_RETIRED, ZKW_SUBSCRIBE_POINTER,
 * ZKW_SUBSCRIBE_ENSURE, ZKW_SUBSCRIBE_BUNDLE. */
#define ZKW_PY_HOT_LAYOUT_WORDS 8

/* Prototypes: exported API (-Wmissing-prototypes; no public header, the
 * bindings declare them). */
ZKW_API int zkw_py_abi(void);
ZKW_API int zkw_py_meta_size(void);
ZKW_API int zkw_py_open(struct zkw_py_reader **out, const char *shm_name, int64_t expected_uid, char *why,
                        size_t whylen);
ZKW_API int zkw_py_subscribe(struct zkw_py_reader **out, const char *socket_path, const char *zk_path,
                             unsigned flags, int timeout_ms, int64_t expected_uid, char *why, size_t whylen);
ZKW_API int zkw_py_segment_name(const struct zkw_py_reader *h, char *out, size_t cap);
ZKW_API int zkw_py_fd(const struct zkw_py_reader *h);
ZKW_API void zkw_py_hot_layout(uint32_t out[ZKW_PY_HOT_LAYOUT_WORDS]);
ZKW_API void zkw_py_shutdown(struct zkw_py_reader *h);
ZKW_API void zkw_py_close(struct zkw_py_reader *h);
ZKW_API uint64_t zkw_py_generation(const struct zkw_py_reader *h);
ZKW_API int zkw_py_is_valid(const struct zkw_py_reader *h);
ZKW_API int zkw_py_ping(const struct zkw_py_reader *h);
ZKW_API int zkw_py_broker_alive(const struct zkw_py_reader *h);
ZKW_API uint64_t zkw_py_capacity(const struct zkw_py_reader *h);
ZKW_API int64_t zkw_py_read(struct zkw_py_reader *h, zkw_py_meta *meta, void *buf, size_t cap);
ZKW_API const char *zkw_py_error(const struct zkw_py_reader *h);
ZKW_API const char *zkw_py_pointer(const struct zkw_py_reader *h);
ZKW_API int zkw_py_wait(struct zkw_py_reader *h, uint64_t seen, int timeout_ms);
ZKW_API int zkw_py_default_name(const char *zk_path, char *out, size_t cap);
ZKW_API int zkw_py_delivery_size(void);
ZKW_API unsigned zkw_py_delivery_next(zkw_delivery *d, int valid, uint64_t content_gen, const char *error);

int zkw_py_abi(void)
{
	return ZKW_PY_ABI;
}

int zkw_py_meta_size(void)
{
	return (int)sizeof(zkw_py_meta);
}

static void why_set(char *why, size_t whylen, const char *text)
{
	if (why && whylen)
		snprintf(why, whylen, "%s", text);
}

/* A reader of the binding's own, or NULL (why says so). */
static struct zkw_py_reader *reader_new(char *why, size_t whylen)
{
	struct zkw_py_reader *h = calloc(1, sizeof(*h));

	why_set(why, whylen, h ? "" : "out of memory");
	return h;
}

/* After a zkw_reader_open_ex/_subscribe_ex that returned rc: *out = h, or
 * h freed and the cause copied into why (r->why may point into h). */
static int reader_done(struct zkw_py_reader **out, struct zkw_py_reader *h, int rc, const char *what,
                       char *why, size_t whylen)
{
	if (rc) {
		why_set(why, whylen, h->reader.why ? h->reader.why : what);
		zkw_reader_close(&h->reader);
		free(h);
		return rc;
	}
	*out = h;
	return 0;
}

static uid_t uid_or_policy(int64_t expected_uid)
{
	return expected_uid < 0 ? (uid_t)-1 : (uid_t)expected_uid;
}

/* Open a segment into *out; expected_uid >= 0 demands that owner,
 * expected_uid < 0 applies the reader's default owner policy
 * (zkw_reader_options.expected_uid = (uid_t)-1, see zkw/client.h). 0, or
 * -errno (*out = NULL) with the cause in words in why (whylen bytes, always
 * NUL-terminated; r->why may point into the reader, so it is copied). */
int zkw_py_open(struct zkw_py_reader **out, const char *shm_name, int64_t expected_uid, char *why,
                size_t whylen)
{
	zkw_reader_options opt;
	struct zkw_py_reader *h = reader_new(why, whylen);

	*out = NULL;
	if (!h)
		return -ENOMEM;
	memset(&opt, 0, sizeof(opt));
	opt.expected_uid = uid_or_policy(expected_uid);
	return reader_done(out, h, zkw_reader_open_ex(&h->reader, shm_name, &opt), "cannot open segment", why,
	                   whylen);
}

/* Subscribe to zk_path through the broker's control socket
 * (zkw_reader_subscribe_ex): socket_path NULL or "" means $ZKW_SOCKET, else
 * ZKW_SOCKET_DEFAULT; flags are ZKW_SUBSCRIBE_* bits; timeout_ms <= 0 the
 * client's default; expected_uid as in zkw_py_open (it names the broker's
 * uid, which must own the segment). 0 or -errno, as zkw_py_open; the
 * subscription lasts until zkw_py_close. */
int zkw_py_subscribe(struct zkw_py_reader **out, const char *socket_path, const char *zk_path, unsigned flags,
                     int timeout_ms, int64_t expected_uid, char *why, size_t whylen)
{
	zkw_subscribe_options opt;
	struct zkw_py_reader *h = reader_new(why, whylen);

	*out = NULL;
	if (!h)
		return -ENOMEM;
	memset(&opt, 0, sizeof(opt));
	opt.timeout_ms = timeout_ms > 0 ? timeout_ms : 0;
	opt.expected_uid = uid_or_policy(expected_uid);
	return reader_done(out, h, zkw_reader_subscribe_ex(&h->reader, socket_path, zk_path, flags, &opt),
	                   "cannot subscribe", why, whylen);
}

/* The segment's name as /proc/self/fd shows it ("/zkw.tmp.myconfig": the
 * /dev/shm prefix and an unlinked name's " (deleted)" dropped); informative
 * only: a subscriber never opens it. 0 or -errno. */
int zkw_py_segment_name(const struct zkw_py_reader *h, char *out, size_t cap)
{
	static const char shm_dir[] = "/dev/shm", deleted[] = " (deleted)";
	char link[64], target[PATH_MAX];
	const char *name = target;
	ssize_t n;
	size_t len;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", h->reader.fd);
	n = readlink(link, target, sizeof(target) - 1);
	if (n < 0)
		return -errno;
	target[n] = '\0';
	len = (size_t)n;
	if (len > sizeof(deleted) - 1 && strcmp(target + len - (sizeof(deleted) - 1), deleted) == 0)
		target[len -= sizeof(deleted) - 1] = '\0';
	if (strncmp(target, shm_dir, sizeof(shm_dir) - 1) == 0 && target[sizeof(shm_dir) - 1] == '/') {
		name += sizeof(shm_dir) - 1;
		len -= sizeof(shm_dir) - 1;
	}
	if (len + 1 > cap)
		return -ENAMETOOLONG;
	memcpy(out, name, len + 1);
	return 0;
}

/* The segment's descriptor (read-only), owned by h: a binding may map its
 * header, never close it. */
int zkw_py_fd(const struct zkw_py_reader *h)
{
	return h->reader.fd;
}

/* What a binding needs to poll the hot line of its own mapping of the
 * header, and the subscribe flags (ZKW_PY_HOT_LAYOUT_WORDS words). */
void zkw_py_hot_layout(uint32_t out[ZKW_PY_HOT_LAYOUT_WORDS])
{
	out[0] = ZKW_HEADER_SIZE;
	out[1] = (uint32_t)offsetof(struct zkw_segment_header, hot.generation);
	out[2] = (uint32_t)offsetof(struct zkw_segment_header, hot.state);
	out[3] = ZKW_STATE_VALID;
	out[4] = ZKW_STATE_RETIRED;
	out[5] = ZKW_SUBSCRIBE_POINTER;
	out[6] = ZKW_SUBSCRIBE_ENSURE;
	out[7] = ZKW_SUBSCRIBE_BUNDLE;
}

/* Make every zkw_py_wait on h, in flight or later, return -ECANCELED at
 * once. Safe while other threads are in any zkw_py_* call on h except
 * zkw_py_close. Idempotent. */
void zkw_py_shutdown(struct zkw_py_reader *h)
{
	/* The release store pairs with the acquire load in zkw_py_wait(); the
	 * wake reaches a waiter already asleep in futex_waitv (the kernel
	 * re-checks the word before sleeping, so none sleeps past it). */
	__atomic_store_n(&h->closing, 1, __ATOMIC_RELEASE);
	syscall(SYS_futex, &h->closing, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

void zkw_py_close(struct zkw_py_reader *h)
{
	if (!h)
		return;
	zkw_reader_close(&h->reader);
	free(h);
}

uint64_t zkw_py_generation(const struct zkw_py_reader *h)
{
	return zkw_reader_generation(&h->reader);
}

int zkw_py_is_valid(const struct zkw_py_reader *h)
{
	return zkw_reader_is_valid(&h->reader);
}

int zkw_py_ping(const struct zkw_py_reader *h)
{
	return zkw_reader_ping(&h->reader);
}

int zkw_py_broker_alive(const struct zkw_py_reader *h)
{
	return zkw_reader_broker_alive(&h->reader);
}

uint64_t zkw_py_capacity(const struct zkw_py_reader *h)
{
	return zkw_reader_capacity(&h->reader);
}

/* zkw_reader_read(): content length, -ENOBUFS (meta->len = size needed),
 * -EAGAIN or -EBADMSG. The texts of this read: zkw_py_error/pointer(). */
int64_t zkw_py_read(struct zkw_py_reader *h, zkw_py_meta *meta, void *buf, size_t cap)
{
	ssize_t n = zkw_reader_read(&h->reader, &h->snap, buf, cap);

	if (n >= 0 || n == -ENOBUFS) {
		meta->generation = h->snap.generation;
		meta->content_gen = h->snap.content_gen;
		meta->len = h->snap.len;
		meta->version = h->snap.version;
		meta->mzxid = h->snap.mzxid;
		meta->confirmed_ns = h->snap.confirmed_ns;
		meta->changed_ns = h->snap.changed_ns;
		meta->valid = h->snap.valid;
		meta->connected = h->snap.connected;
		meta->cached = h->snap.cached;
		meta->rejected = h->snap.rejected;
		meta->bundle = h->snap.bundle;
		meta->reserved = 0;
	}
	return (int64_t)n;
}

const char *zkw_py_error(const struct zkw_py_reader *h)
{
	return h->snap.error;
}

const char *zkw_py_pointer(const struct zkw_py_reader *h)
{
	return h->snap.pointer;
}

static int shutting_down(const struct zkw_py_reader *h)
{
	return __atomic_load_n(&h->closing, __ATOMIC_ACQUIRE) != 0;
}

/* zkw_reader_wait() that zkw_py_shutdown() interrupts: 1 changed, 0
 * timeout, -ECANCELED after zkw_py_shutdown(), -ESTALE when the segment is
 * retired (as zkw_reader_wait: reopen the name), -EINTR on a signal (the
 * binding checks its own signal handlers then), -errno. One futex_waitv(2)
 * sleeps on the segment's shared word and the handle's private shutdown
 * word at once, so shutdown wakes exactly this handle's waiters. */
int zkw_py_wait(struct zkw_py_reader *h, uint64_t seen, int timeout_ms)
{
	const struct zkw_segment_hot *hot = &zkw__header(&h->reader)->hot;
	struct timespec deadline;
	const struct timespec *dl = zkw__deadline(&deadline, timeout_ms);
	uint64_t end_ns = dl ? (uint64_t)dl->tv_sec * 1000000000u + (uint64_t)dl->tv_nsec : 0;

	for (;;) {
		/* Loaded before the generation, as in zkw_reader_wait(): the
		 * acquire load pairs with the release increment in
		 * zkw_segment_wake() (zkw/segment.h). */
		uint32_t word_seen = zkw_segment_futex_word(hot);
		uint64_t now;
		int rc, slice;

		if (shutting_down(h))
			return -ECANCELED;
		if (zkw_reader_generation(&h->reader) != seen)
			return 1;
		if (zkw_reader_retired(&h->reader))
			return -ESTALE; /* the retiring broker bumped the word after the bit */
		now = zkw__now_ns(CLOCK_MONOTONIC);
		if (dl && now >= end_ns)
			return 0;
#ifdef SYS_futex_waitv
		if (!__atomic_load_n(&h->no_waitv, __ATOMIC_RELAXED)) {
			/* futex_waitv takes the 64-bit kernel timespec on every ABI */
			struct __kernel_timespec kdl = {.tv_sec = dl ? dl->tv_sec : 0,
			                                .tv_nsec = dl ? dl->tv_nsec : 0};
			struct futex_waitv w[2] = {
			        {.val = word_seen, .uaddr = (uintptr_t)&hot->futex, .flags = FUTEX_32},
			        {.val = 0,
			         .uaddr = (uintptr_t)&h->closing,
			         .flags = FUTEX_32 | FUTEX_PRIVATE_FLAG},
			};

			/* The kernel re-checks both words before sleeping: a
			 * publish or a shutdown after our loads makes it return.
			 * The deadline is absolute, so wakeups do not stretch it. */
			if (syscall(SYS_futex_waitv, w, 2, 0, dl ? &kdl : NULL, CLOCK_MONOTONIC) >= 0 ||
			    errno == EAGAIN || errno == ETIMEDOUT)
				continue; /* the checks above decide */
			if (errno == EINTR)
				return -EINTR;
			if (errno != ENOSYS && errno != EINVAL)
				return -errno;
			__atomic_store_n(&h->no_waitv, 1, __ATOMIC_RELAXED);
		}
#endif
		/* Old kernels: the segment alone, in slices, re-checking the
		 * shutdown word between them. */
		slice = ZKW_PY_FALLBACK_SLICE_MS;
		if (dl && end_ns - now < (uint64_t)slice * 1000000u)
			slice = (int)((end_ns - now + 999999u) / 1000000u);
		rc = zkw_reader_wait(&h->reader, seen, slice);
		if (rc != 0)
			return rc;
	}
}

/* "/tmp/myconfig" -> "/zkw.tmp.myconfig". 0 or -EINVAL/-ENAMETOOLONG. */
int zkw_py_default_name(const char *zk_path, char *out, size_t cap)
{
	return zkw_shm_default_name(out, cap, zk_path);
}

/* Size of the delivery state the binding keeps (zeroed = nothing yet). */
int zkw_py_delivery_size(void)
{
	return (int)sizeof(zkw_delivery);
}

/* Which handlers a snapshot calls: zkw_delivery_next() of zkw/common.h,
 * ZKW_DELIVER_CONFIG, _VALID and _ERROR bits, to be called in bit order. */
unsigned zkw_py_delivery_next(zkw_delivery *d, int valid, uint64_t content_gen, const char *error)
{
	return zkw_delivery_next(d, valid != 0, content_gen, error);
}
