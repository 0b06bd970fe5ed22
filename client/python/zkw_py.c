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
 *     int err = zkw_py_open(&h, "/zkw.tmp.myconfig", -1, &why);  // 0 or -errno
 *     zkw_py_meta m;
 *     int64_t n = zkw_py_read(h, &m, buf, cap);   // -ENOBUFS: m.len needed
 *     const char *e = zkw_py_error(h);            // of that read
 *     zkw_py_close(h);
 *
 * Event mode: the binding keeps a zeroed buffer of zkw_py_delivery_size()
 * bytes (8-byte aligned) per event loop, and for every snapshot asks
 * zkw_py_delivery_next() which handlers are due (ZKW_DELIVER_* bits of
 * zkw/common.h); it calls them in bit order. The rule lives in C only.
 *
 * A handle is not for concurrent use by several threads, except
 * zkw_py_generation/is_valid/ping/wait, which only read the segment.
 * Errors follow zkw/common.h: 0 or -errno, results through out-parameters.
 */
#include <zkw/client.h>
#include <zkw/common.h>

#include <stdlib.h>

#define ZKW_PY_ABI 2 /* bump on any change of the functions, zkw_py_meta or ZKW_DELIVER_* */

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
} zkw_py_meta;

_Static_assert(sizeof(zkw_py_meta) == 64, "zkw_py_meta is mirrored in zkw.py");

struct zkw_py_reader {
	zkw_reader reader;
	zkw_snapshot snap; /* of the last read: error and pointer texts */
};

/* Prototypes: exported API (-Wmissing-prototypes; no public header, the
 * bindings declare them). */
ZKW_API int zkw_py_abi(void);
ZKW_API int zkw_py_meta_size(void);
ZKW_API int zkw_py_open(struct zkw_py_reader **out, const char *shm_name, int64_t expected_uid,
                        const char **why);
ZKW_API void zkw_py_close(struct zkw_py_reader *h);
ZKW_API uint64_t zkw_py_generation(const struct zkw_py_reader *h);
ZKW_API int zkw_py_is_valid(const struct zkw_py_reader *h);
ZKW_API int zkw_py_ping(const struct zkw_py_reader *h);
ZKW_API int zkw_py_broker_alive(const struct zkw_py_reader *h);
ZKW_API uint64_t zkw_py_capacity(const struct zkw_py_reader *h);
ZKW_API int64_t zkw_py_read(struct zkw_py_reader *h, zkw_py_meta *meta, void *buf, size_t cap);
ZKW_API const char *zkw_py_error(const struct zkw_py_reader *h);
ZKW_API const char *zkw_py_pointer(const struct zkw_py_reader *h);
ZKW_API int zkw_py_wait(const struct zkw_py_reader *h, uint64_t seen, int timeout_ms);
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

/* Open a segment into *out; expected_uid < 0 accepts any owner. 0, or
 * -errno (*out = NULL) with *why = a static text naming the cause. */
int zkw_py_open(struct zkw_py_reader **out, const char *shm_name, int64_t expected_uid, const char **why)
{
	zkw_reader_options opt = {.expected_uid = expected_uid < 0 ? (uid_t)-1 : (uid_t)expected_uid};
	struct zkw_py_reader *h = calloc(1, sizeof(*h));
	int rc;

	*out = NULL;
	if (!h) {
		*why = "out of memory";
		return -ENOMEM;
	}
	rc = zkw_reader_open_ex(&h->reader, shm_name, &opt);
	if (rc) {
		*why = h->reader.why ? h->reader.why : "cannot open segment";
		free(h);
		return rc;
	}
	*why = "";
	*out = h;
	return 0;
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

/* 1 changed, 0 timeout, -EINTR on a signal (the binding checks its own
 * signal handlers then), -errno. */
int zkw_py_wait(const struct zkw_py_reader *h, uint64_t seen, int timeout_ms)
{
	return zkw_reader_wait(&h->reader, seen, timeout_ms);
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
