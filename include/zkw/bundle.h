/* SPDX-License-Identifier: Apache-2.0 */
/* bundle.h - a znode's children as one snapshot: the bundle layout, its
 * reader and its encoder.
 *
 * A watch in bundle mode publishes the children of one znode (names, data,
 * mzxid and version of each) as ONE content, a consistent cut the broker
 * took; the slot carries ZKW_SLOT_BUNDLE (zkw_snapshot.bundle). The layout,
 * version 1, in the host's byte order (docs/design.md, "Bundle layout"):
 *
 *   header (32 B)  magic "ZKB1", version, header_size, count, entry_size,
 *                  the parent's pzxid and cversion
 *   entries        count * entry_size bytes from header_size, sorted by
 *                  name (bytewise; a prefix first), names unique
 *   names          each followed by a NUL
 *   data           the children's contents, in entry order
 *
 * Reading is done on a private copy of the content (what zkw_reader_read
 * copied out), so there are no atomics here: plain, bounds-checked loads.
 * Every offset and length is checked against the content's length before
 * it is believed, without overflow; zkw_bundle_open checks every entry and
 * the order of the names once, so an iteration cannot fail half-way. No
 * allocation; libc only; C and C++.
 *
 *     zkw_bundle b;
 *     zkw_bundle_entry e;
 *     if (meta.bundle && zkw_bundle_open(&b, buf, n) == 0) {
 *             for (uint32_t i = 0; i < b.count; i++)
 *                     if (zkw_bundle_entry_at(&b, i, &e) == 0)
 *                             use(e.name, e.data, e.len);
 *             if (zkw_bundle_find(&b, "db", &e) == 0)
 *                     use_db(e.data, e.len);
 *     }
 *
 * The encoder (the broker's, and the tests') writes the same layout from
 * inputs sorted with zkw_bundle_sort_inputs, whose order is the one
 * zkw_bundle_find searches in.
 */
#ifndef ZKW_BUNDLE_H
#define ZKW_BUNDLE_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ZKW_BUNDLE_MAGIC       0x31424b5au /* the bytes "ZKB1" little-endian */
#define ZKW_BUNDLE_VERSION     1u          /* readers refuse another: -EPROTO */
#define ZKW_BUNDLE_HEADER_SIZE 32u         /* what this writer writes; readers accept more */
#define ZKW_BUNDLE_ENTRY_SIZE  32u         /* the same */

/* The header, at offset 0 of the content. */
struct zkw_bundle_wire_header {
	uint32_t magic;       /* ZKW_BUNDLE_MAGIC */
	uint16_t version;     /* ZKW_BUNDLE_VERSION */
	uint16_t header_size; /* >= 32: the entries start here */
	uint32_t count;       /* number of entries */
	uint32_t entry_size;  /* >= 32: bytes per entry (the rest is skipped) */
	int64_t pzxid;        /* the parent's pzxid at the cut */
	int32_t cversion;     /* the parent's cversion at the cut */
	uint32_t reserved;    /* 0; ignored by readers */
};

/* One entry of the table; offsets are from the start of the content. */
struct zkw_bundle_wire_entry {
	uint32_t name_off;
	uint32_t name_len; /* without the NUL that follows the name */
	uint32_t data_off;
	uint32_t data_len;
	int64_t mzxid;     /* of the child */
	int32_t version;   /* the child's data version */
	uint32_t reserved; /* 0; ignored by readers */
};

/* The layout is the ABI: pin it (the same macro as zkw/segment.h's). */
#ifndef ZKW_STATIC_ASSERT
#ifdef __cplusplus
#define ZKW_STATIC_ASSERT(c, m) static_assert(c, m)
#else
#define ZKW_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif
#endif
ZKW_STATIC_ASSERT(offsetof(struct zkw_bundle_wire_header, version) == 4, "bundle header");
ZKW_STATIC_ASSERT(offsetof(struct zkw_bundle_wire_header, header_size) == 6, "bundle header");
ZKW_STATIC_ASSERT(offsetof(struct zkw_bundle_wire_header, count) == 8, "bundle header");
ZKW_STATIC_ASSERT(offsetof(struct zkw_bundle_wire_header, entry_size) == 12, "bundle header");
ZKW_STATIC_ASSERT(offsetof(struct zkw_bundle_wire_header, pzxid) == 16, "bundle header");
ZKW_STATIC_ASSERT(offsetof(struct zkw_bundle_wire_header, cversion) == 24, "bundle header");
ZKW_STATIC_ASSERT(offsetof(struct zkw_bundle_wire_header, reserved) == 28, "bundle header");
ZKW_STATIC_ASSERT(sizeof(struct zkw_bundle_wire_header) == ZKW_BUNDLE_HEADER_SIZE, "bundle header size");
ZKW_STATIC_ASSERT(offsetof(struct zkw_bundle_wire_entry, name_len) == 4, "bundle entry");
ZKW_STATIC_ASSERT(offsetof(struct zkw_bundle_wire_entry, data_off) == 8, "bundle entry");
ZKW_STATIC_ASSERT(offsetof(struct zkw_bundle_wire_entry, data_len) == 12, "bundle entry");
ZKW_STATIC_ASSERT(offsetof(struct zkw_bundle_wire_entry, mzxid) == 16, "bundle entry");
ZKW_STATIC_ASSERT(offsetof(struct zkw_bundle_wire_entry, version) == 24, "bundle entry");
ZKW_STATIC_ASSERT(offsetof(struct zkw_bundle_wire_entry, reserved) == 28, "bundle entry");
ZKW_STATIC_ASSERT(sizeof(struct zkw_bundle_wire_entry) == ZKW_BUNDLE_ENTRY_SIZE, "bundle entry size");

/* An opened bundle: the content it reads (not copied: keep it alive and
 * unchanged while the bundle is used) and its checked header. */
typedef struct zkw_bundle {
	const unsigned char *base;
	size_t len;
	uint32_t count, entry_size, header_size;
	int64_t pzxid;
	int32_t cversion;
} zkw_bundle;

/* One child. name is NUL-terminated (name_len bytes, none of them NUL);
 * data points into the content (len bytes, not terminated). */
typedef struct zkw_bundle_entry {
	const char *name;
	size_t name_len;
	const void *data;
	size_t len;
	int64_t mzxid;
	int32_t version;
} zkw_bundle_entry;

/* One child for the encoder: name need not be NUL-terminated. */
typedef struct zkw_bundle_input {
	const char *name;
	size_t name_len;
	const void *data;
	size_t len;
	int64_t mzxid;
	int32_t version;
} zkw_bundle_input;

/* ---- names ------------------------------------------------------------ */

/* The one order of names: bytewise (memcmp), a prefix before the longer
 * name. <0, 0, >0. The encoder's check, zkw_bundle_sort_inputs and
 * zkw_bundle_find all use it. */
static inline int zkw_bundle_name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}

/* A name ZooKeeper allows for a child: not empty, no NUL, no '/', not "."
 * or "..". Readers refuse any other (a consumer may turn names into file
 * names), and so does the encoder. */
static inline int zkw__bundle_name_ok(const char *name, size_t len)
{
	if (len == 0 || memchr(name, '\0', len) || memchr(name, '/', len))
		return 0;
	return !(name[0] == '.' && (len == 1 || (len == 2 && name[1] == '.')));
}

/* ---- reader ----------------------------------------------------------- */

/* Entry i's record, its ranges checked against the content. 0 or -EBADMSG. */
static inline int zkw__bundle_entry_load(const zkw_bundle *b, uint32_t i, zkw_bundle_entry *e)
{
	struct zkw_bundle_wire_entry w;
	uint64_t at = (uint64_t)b->header_size + (uint64_t)i * b->entry_size;
	const char *name;

	/* open checked count * entry_size; a zkw_bundle made by hand may lie,
	 * so check again (both factors are 32-bit: no overflow in 64). */
	if (b->entry_size < ZKW_BUNDLE_ENTRY_SIZE || at > b->len || b->len - at < b->entry_size)
		return -EBADMSG;
	memcpy(&w, b->base + at, sizeof(w)); /* the content may be unaligned */
	/* The name and its NUL: name_off + name_len < len. */
	if (w.name_off >= b->len || w.name_len >= b->len - w.name_off)
		return -EBADMSG;
	if (w.data_off > b->len || w.data_len > b->len - w.data_off)
		return -EBADMSG;
	name = (const char *)b->base + w.name_off;
	if (name[w.name_len] != '\0' || !zkw__bundle_name_ok(name, w.name_len))
		return -EBADMSG;
	e->name = name;
	e->name_len = w.name_len;
	e->data = b->base + w.data_off;
	e->len = w.data_len;
	e->mzxid = w.mzxid;
	e->version = w.version;
	return 0;
}

/* Open the bundle in content[0, len): check the header, every entry and
 * the order of the names. 0; -EBADMSG not a bundle, or a corrupt one
 * (anything out of range, a name without its NUL or not a child's name,
 * names out of order or repeated); -EPROTO another version of the layout.
 * b is set only on success. */
static inline int zkw_bundle_open(zkw_bundle *b, const void *content, size_t len)
{
	const unsigned char *base = (const unsigned char *)content;
	struct zkw_bundle_wire_header h;
	zkw_bundle_entry prev, cur;
	zkw_bundle t;
	uint32_t i;
	int err;

	memset(&prev, 0, sizeof(prev));
	if (!base || len < offsetof(struct zkw_bundle_wire_header, header_size))
		return -EBADMSG;
	memcpy(&h, base, offsetof(struct zkw_bundle_wire_header, header_size));
	if (h.magic != ZKW_BUNDLE_MAGIC)
		return -EBADMSG;
	if (h.version != ZKW_BUNDLE_VERSION)
		return -EPROTO;
	if (len < sizeof(h))
		return -EBADMSG;
	memcpy(&h, base, sizeof(h));
	if (h.header_size < ZKW_BUNDLE_HEADER_SIZE || h.header_size > len ||
	    h.entry_size < ZKW_BUNDLE_ENTRY_SIZE || (uint64_t)h.count * h.entry_size > len - h.header_size)
		return -EBADMSG;
	t.base = base;
	t.len = len;
	t.count = h.count;
	t.entry_size = h.entry_size;
	t.header_size = h.header_size;
	t.pzxid = h.pzxid;
	t.cversion = h.cversion;
	for (i = 0; i < t.count; i++) {
		err = zkw__bundle_entry_load(&t, i, &cur);
		if (err)
			return err;
		if (i && zkw_bundle_name_cmp(prev.name, prev.name_len, cur.name, cur.name_len) >= 0)
			return -EBADMSG; /* zkw_bundle_find would miss names */
		prev = cur;
	}
	*b = t;
	return 0;
}

/* Entry i (0 <= i < b->count) into *e. 0; -ERANGE i >= count; -EBADMSG
 * the entry is corrupt (never after zkw_bundle_open accepted b, unless
 * the content changed since). */
static inline int zkw_bundle_entry_at(const zkw_bundle *b, uint32_t i, zkw_bundle_entry *e)
{
	if (i >= b->count)
		return -ERANGE;
	return zkw__bundle_entry_load(b, i, e);
}

/* The child called name[0, name_len) into *e: a binary search in the
 * order of zkw_bundle_name_cmp. 0; -ENOENT no such child; -EBADMSG a
 * corrupt entry on the way. */
static inline int zkw_bundle_find_n(const zkw_bundle *b, const char *name, size_t name_len,
                                    zkw_bundle_entry *e)
{
	uint32_t lo = 0, hi = b->count;
	zkw_bundle_entry mid;

	while (lo < hi) {
		uint32_t i = lo + (hi - lo) / 2;
		int c, err = zkw__bundle_entry_load(b, i, &mid);

		if (err)
			return err;
		c = zkw_bundle_name_cmp(name, name_len, mid.name, mid.name_len);
		if (c == 0) {
			*e = mid;
			return 0;
		}
		if (c < 0)
			hi = i;
		else
			lo = i + 1;
	}
	return -ENOENT;
}

/* The same for a NUL-terminated name. */
static inline int zkw_bundle_find(const zkw_bundle *b, const char *name, zkw_bundle_entry *e)
{
	return zkw_bundle_find_n(b, name, strlen(name), e);
}

/* ---- encoder ---------------------------------------------------------- */

static inline int zkw__bundle_input_cmp(const void *a, const void *b)
{
	const zkw_bundle_input *x = (const zkw_bundle_input *)a, *y = (const zkw_bundle_input *)b;

	return zkw_bundle_name_cmp(x->name, x->name_len, y->name, y->name_len);
}

/* Sort inputs into the bundle's order (zkw_bundle_name_cmp). */
static inline void zkw_bundle_sort_inputs(zkw_bundle_input *in, uint32_t n)
{
	if (n > 1)
		qsort(in, n, sizeof(*in), zkw__bundle_input_cmp);
}

/* Bytes the bundle of in[0, n) takes; 0 when it cannot be encoded because
 * it would exceed UINT32_MAX bytes (every offset and length is 32-bit).
 * An empty bundle is ZKW_BUNDLE_HEADER_SIZE bytes. */
static inline size_t zkw_bundle_encoded_size(const zkw_bundle_input *in, uint32_t n)
{
	uint64_t total = ZKW_BUNDLE_HEADER_SIZE + (uint64_t)n * ZKW_BUNDLE_ENTRY_SIZE;
	uint32_t i;

	for (i = 0; i < n && total <= UINT32_MAX; i++) {
		/* Each term is checked before it is added: no overflow. */
		if (in[i].name_len >= UINT32_MAX || in[i].len > UINT32_MAX)
			return 0;
		total += (uint64_t)in[i].name_len + 1 + (uint64_t)in[i].len;
	}
	return total <= UINT32_MAX ? (size_t)total : 0; /* size_t has 32 bits at least */
}

/* Encode in[0, n) - sorted by zkw_bundle_name_cmp, names unique - with
 * the parent's pzxid and cversion into out[0, cap). 0; -EINVAL a name
 * that is not a child's (empty, a NUL or '/' in it, "." or ".."), names
 * out of order or repeated, data NULL with a length, or a bundle above
 * UINT32_MAX bytes; -ENOBUFS cap below zkw_bundle_encoded_size(). Nothing
 * is written unless it succeeds. */
static inline int zkw_bundle_encode(void *out, size_t cap, const zkw_bundle_input *in, uint32_t n,
                                    int64_t pzxid, int32_t cversion)
{
	unsigned char *p = (unsigned char *)out;
	struct zkw_bundle_wire_header h;
	struct zkw_bundle_wire_entry w;
	size_t size = zkw_bundle_encoded_size(in, n);
	uint32_t name_at, data_at, i;

	if (size == 0)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		if (!in[i].name || !zkw__bundle_name_ok(in[i].name, in[i].name_len) ||
		    (!in[i].data && in[i].len))
			return -EINVAL;
		if (i &&
		    zkw_bundle_name_cmp(in[i - 1].name, in[i - 1].name_len, in[i].name, in[i].name_len) >= 0)
			return -EINVAL;
	}
	if (cap < size || !p)
		return -ENOBUFS;

	memset(&h, 0, sizeof(h));
	h.magic = ZKW_BUNDLE_MAGIC;
	h.version = ZKW_BUNDLE_VERSION;
	h.header_size = ZKW_BUNDLE_HEADER_SIZE;
	h.count = n;
	h.entry_size = ZKW_BUNDLE_ENTRY_SIZE;
	h.pzxid = pzxid;
	h.cversion = cversion;
	memcpy(p, &h, sizeof(h));
	/* size <= UINT32_MAX: every offset below fits. */
	name_at = ZKW_BUNDLE_HEADER_SIZE + n * ZKW_BUNDLE_ENTRY_SIZE;
	data_at = name_at;
	for (i = 0; i < n; i++)
		data_at += (uint32_t)in[i].name_len + 1;
	for (i = 0; i < n; i++) {
		memset(&w, 0, sizeof(w));
		w.name_off = name_at;
		w.name_len = (uint32_t)in[i].name_len;
		w.data_off = data_at;
		w.data_len = (uint32_t)in[i].len;
		w.mzxid = in[i].mzxid;
		w.version = in[i].version;
		memcpy(p + ZKW_BUNDLE_HEADER_SIZE + (size_t)i * ZKW_BUNDLE_ENTRY_SIZE, &w, sizeof(w));
		memcpy(p + name_at, in[i].name, in[i].name_len);
		p[name_at + in[i].name_len] = '\0';
		if (in[i].len)
			memcpy(p + data_at, in[i].data, in[i].len);
		name_at += w.name_len + 1;
		data_at += w.data_len;
	}
	return 0;
}

#ifdef __cplusplus
}
#endif
#endif /* ZKW_BUNDLE_H */
