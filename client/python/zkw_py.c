/* reader.c - zkw/client.h behind a small, stable C ABI for language
 * bindings (ctypes, cffi, FFI of any kind): build/libzkw-client.so.
 *
 * client.h is header-only (static inline), so a binding has nothing to
 * call; these are exported, non-inline wrappers. The ABI avoids the
 * layout of zkw_snapshot (bool, size_t, two large char arrays): metadata
 * comes back in zkw_py_meta, fixed-size fields only (mirrored in
 * client/python/zkw.py, checked at load time with zkw_py_meta_size()),
 * and the error and pointer texts through accessors.
 *
 *     void *h = zkw_py_open("/zkw.tmp.myconfig", -1, &err, &why);
 *     zkw_py_meta m;
 *     int64_t n = zkw_py_read(h, &m, buf, cap);   // -ENOBUFS: m.len needed
 *     const char *e = zkw_py_error(h);            // of that read
 *     zkw_py_close(h);
 *
 * A handle is not for concurrent use by several threads, except
 * zkw_py_generation/is_valid/ping/wait, which only read the segment.
 * Errors are 0 or -errno, as in client.h.
 */
#include <zkw/client.h>
#include <zkw/common.h>

#include <stdlib.h>

#define ZKW_PY_ABI 1 /* bump on any change of the functions or zkw_py_meta */


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
ZKW_API struct zkw_py_reader *zkw_py_open(const char *shm_name, int64_t expected_uid, int *err,
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

int zkw_py_abi(void)
{
	return ZKW_PY_ABI;
}

int zkw_py_meta_size(void)
{
	return (int)sizeof(zkw_py_meta);
}

/* Open a segment; expected_uid < 0 accepts any owner. NULL on failure with
 * *err = -errno and *why = a static text naming the cause. */
struct zkw_py_reader *zkw_py_open(const char *shm_name, int64_t expected_uid, int *err, const char **why)
{
	zkw_reader_options opt = {.expected_uid = expected_uid < 0 ? (uid_t)-1 : (uid_t)expected_uid};
	struct zkw_py_reader *h = calloc(1, sizeof(*h));
	int rc;

	if (!h) {
		*err = -ENOMEM;
		*why = "out of memory";
		return NULL;
	}
	rc = zkw_reader_open_ex(&h->reader, shm_name, &opt);
	if (rc) {
		*err = rc;
		*why = h->reader.why ? h->reader.why : "cannot open segment";
		free(h);
		return NULL;
	}
	*err = 0;
	*why = "";
	return h;
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
