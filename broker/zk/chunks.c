/* SPDX-License-Identifier: Apache-2.0 */
/* chunks.c - content larger than a znode: a manifest and its chunks.
 *
 * A content node (the watched node, or a pointer's target) whose data is a
 * manifest (docs/design.md, "Chunked content") stands for content stored in
 * immutable chunk nodes below it. The watch reads every chunk (plain gets,
 * no watch: chunks never change, a new content gets a new directory and a
 * new manifest, whose data watch is what tells us), checks each one's
 * size, the total and the XXH3 hash, and only then hands the whole content
 * to the evaluation. A missing, short or corrupt chunk is an error naming
 * the chunk; the last good content stays published.
 *
 * Runs with the session lock held, as watch.c. Each chunk request carries a
 * small allocated context (the watch, the assembly round, the index),
 * freed by its completion, which the client calls exactly once, even for
 * a handle being closed. Answers of an older round (a manifest replaced,
 * a handle torn down) are dropped.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "internal.h"

#define MANIFEST_MAGIC "zkw-chunked "

enum chunks_state { CHUNKS_NONE, CHUNKS_LOADING, CHUNKS_READY, CHUNKS_TAKEN, CHUNKS_FAILED };

struct zkw__chunks {
	enum chunks_state state;
	uint64_t round;   /* of the assembly in progress; answers of others are dropped */
	unsigned outstanding; /* chunk requests of the current handle in flight */
	/* The manifest this state is about: its node and mzxid. */
	char node[ZKW_POINTER_MAX];
	int64_t mzxid;
	/* What it says. */
	uint64_t size;
	uint32_t count;
	uint32_t chunk_size;
	uint64_t hash;
	char dir[ZKW_POINTER_MAX];
	/* The assembly. */
	uint8_t *buf;
	uint32_t received;
	/* The last content taken: the watch's content_serial then, and its
	 * hash (kept across manifests: a new one with another hash is a
	 * change, no byte compare needed). */
	uint64_t taken_serial;
	uint64_t taken_hash;
	bool taken_any;
	char why[ZKW_ERROR_MAX];
};

struct chunk_req {
	struct zkw_watch *w;
	uint64_t round;
	uint32_t index;
};

bool zkw__chunks_is_manifest(const void *data, size_t len)
{
	return len >= sizeof(MANIFEST_MAGIC) - 1 && memcmp(data, MANIFEST_MAGIC, sizeof(MANIFEST_MAGIC) - 1) == 0;
}

/* One "key value\n" line of the manifest at *p (end e): the value, NUL-
 * terminated in out. 0, or -1 with the reason in why. */
static int manifest_line(const char **p, const char *e, const char *key, char *out, size_t cap, unsigned line,
                         char *why, size_t whylen)
{
	size_t klen = strlen(key);
	const char *nl = memchr(*p, '\n', (size_t)(e - *p));
	size_t vlen;

	if (!nl) {
		snprintf(why, whylen, "line %u: missing or unterminated (want \"%s ...\")", line, key);
		return -1;
	}
	if ((size_t)(nl - *p) <= klen + 1 || memcmp(*p, key, klen) != 0 || (*p)[klen] != ' ') {
		snprintf(why, whylen, "line %u: want \"%s ...\"", line, key);
		return -1;
	}
	vlen = (size_t)(nl - *p) - klen - 1;
	if (vlen >= cap || memchr(*p + klen + 1, '\0', vlen)) {
		snprintf(why, whylen, "line %u: bad %s value", line, key);
		return -1;
	}
	memcpy(out, *p + klen + 1, vlen);
	out[vlen] = '\0';
	*p = nl + 1;
	return 0;
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s || (s[0] == '0' && s[1]))
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	if (v > max)
		return -1;
	*out = v;
	return 0;
}

/* Parse the manifest of node `node` into ch. 0, or -1 with the reason. */
static int manifest_parse(struct zkw__chunks *ch, const char *node, const char *data, size_t len, char *why,
                          size_t whylen)
{
	const char *p = data, *e = data + len;
	char v[ZKW_POINTER_MAX], want[ZKW_POINTER_MAX + 16];
	uint64_t n;

	if (manifest_line(&p, e, "zkw-chunked", v, sizeof(v), 1, why, whylen) < 0)
		return -1;
	if (strcmp(v, "1") != 0) {
		snprintf(why, whylen, "line 1: format %.16s, this broker reads format 1", v);
		return -1;
	}
	if (manifest_line(&p, e, "size", v, sizeof(v), 2, why, whylen) < 0)
		return -1;
	if (parse_u64(v, ZKW_CAPACITY_MAX_BYTES, &ch->size) < 0) {
		snprintf(why, whylen, "line 2: size must be a byte count up to %u", ZKW_CAPACITY_MAX_BYTES);
		return -1;
	}
	if (manifest_line(&p, e, "chunks", v, sizeof(v), 3, why, whylen) < 0)
		return -1;
	if (parse_u64(v, UINT32_MAX, &n) < 0) {
		snprintf(why, whylen, "line 3: chunks must be a count");
		return -1;
	}
	ch->count = (uint32_t)n;
	if (manifest_line(&p, e, "chunk-size", v, sizeof(v), 4, why, whylen) < 0)
		return -1;
	if (parse_u64(v, ZKW_CHUNK_SIZE_MAX, &n) < 0 || n == 0) {
		snprintf(why, whylen, "line 4: chunk-size must be 1 to %u", ZKW_CHUNK_SIZE_MAX);
		return -1;
	}
	ch->chunk_size = (uint32_t)n;
	if ((uint64_t)ch->count != (ch->size + ch->chunk_size - 1) / ch->chunk_size) {
		snprintf(why, whylen, "line 3: %u chunks of %u bytes cannot hold %" PRIu64 " bytes exactly", ch->count,
		         ch->chunk_size, ch->size);
		return -1;
	}
	if (manifest_line(&p, e, "xxh3", v, sizeof(v), 5, why, whylen) < 0)
		return -1;
	ch->hash = 0;
	for (int i = 0; i < 16; i++) {
		char c = v[i];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
			snprintf(why, whylen, "line 5: xxh3 must be 16 lowercase hex digits");
			return -1;
		}
		ch->hash = ch->hash << 4 | (uint64_t)(c <= '9' ? c - '0' : c - 'a' + 10);
	}
	if (v[16]) {
		snprintf(why, whylen, "line 5: xxh3 must be 16 lowercase hex digits");
		return -1;
	}
	if (manifest_line(&p, e, "dir", ch->dir, sizeof(ch->dir), 6, why, whylen) < 0)
		return -1;
	/* Below the manifest's own node: a manifest can only name content its
	 * node's writers placed there, never another part of the tree the
	 * broker may read. The chunk paths must also be paths. */
	snprintf(want, sizeof(want), "%s/", strcmp(node, "/") == 0 ? "" : node);
	if (strncmp(ch->dir, want, strlen(want)) != 0 || strlen(ch->dir) <= strlen(want) ||
	    strlen(ch->dir) + 1 + 8 >= ZKW_POINTER_MAX || /* room for "/00000000" */
	    zkw_pointer_parse(ch->dir, strlen(ch->dir), v, sizeof(v), NULL) != (int)strlen(ch->dir)) {
		snprintf(why, whylen, "line 6: dir must be a path below %s", node);
		return -1;
	}
	if (p != e) {
		snprintf(why, whylen, "line 7: nothing may follow the dir line");
		return -1;
	}
	return 0;
}

static uint64_t chunk_len(const struct zkw__chunks *ch, uint32_t i)
{
	return i + 1 < ch->count ? ch->chunk_size : ch->size - (uint64_t)ch->chunk_size * (ch->count - 1);
}

static void chunk_done(int rc, const char *value, int value_len, const struct Stat *stat, const void *ctx)
{
	struct chunk_req *req = (struct chunk_req *)ctx;
	struct zkw_watch *w = req->w;
	struct zkw__chunks *ch;
	uint32_t i = req->index;
	bool settle = false;

	(void)stat;
	pthread_mutex_lock(&w->session->lock);
	ch = w->chunks;
	if (!ch || req->round != ch->round)
		goto out; /* a replaced manifest, a torn-down handle */
	if (ch->outstanding)
		ch->outstanding--;
	if (!zkw__watch_active(w)) {
		settle = true;
		goto out;
	}
	if (ch->state != CHUNKS_LOADING)
		goto out; /* failed already: the rest of the answers only count */
	if (rc != ZOK) {
		if (zkw__rc_is_connection(rc)) {
			ch->state = CHUNKS_NONE; /* read again after the reconnection */
			goto out;
		}
		ch->state = CHUNKS_FAILED;
		snprintf(ch->why, sizeof(ch->why), "chunk %u of %u (%s/%08u) %s", i + 1, ch->count, ch->dir, i,
		         rc == ZNONODE ? "is missing" : zerror(rc));
	} else if ((uint64_t)(value_len < 0 ? 0 : value_len) != chunk_len(ch, i)) {
		ch->state = CHUNKS_FAILED;
		snprintf(ch->why, sizeof(ch->why), "chunk %u of %u (%s/%08u) holds %d bytes, the manifest says %" PRIu64,
		         i + 1, ch->count, ch->dir, i, value_len < 0 ? 0 : value_len, chunk_len(ch, i));
	} else {
		if (value_len > 0)
			memcpy(ch->buf + (uint64_t)i * ch->chunk_size, value, (size_t)value_len);
		if (++ch->received == ch->count) {
			uint64_t h = XXH3_64bits(ch->buf, (size_t)ch->size);

			if (h == ch->hash) {
				ch->state = CHUNKS_READY;
			} else {
				ch->state = CHUNKS_FAILED;
				snprintf(ch->why, sizeof(ch->why),
				         "the %u chunks in %s hash to %016" PRIx64 ", the manifest says %016" PRIx64,
				         ch->count, ch->dir, h, ch->hash);
			}
		}
	}
	if (ch->state == CHUNKS_READY || ch->state == CHUNKS_FAILED) {
		if (ch->state == CHUNKS_FAILED) {
			free(ch->buf);
			ch->buf = NULL;
		}
		zkw__watch_evaluate(w);
	}
out:
	if (settle)
		zkw__watch_settle(w);
	pthread_mutex_unlock(&w->session->lock);
	free(req);
}

/* Start reading the chunks ch describes. */
static void chunks_load(struct zkw_watch *w, struct zkw__chunks *ch)
{
	zhandle_t *zh = w->session->zh;
	char path[ZKW_POINTER_MAX + 16];

	ch->round++;
	ch->received = 0;
	ch->outstanding = 0;
	free(ch->buf);
	ch->buf = malloc(ch->size ? (size_t)ch->size : 1);
	if (!ch->buf) {
		ch->state = CHUNKS_FAILED;
		snprintf(ch->why, sizeof(ch->why), "no memory for %" PRIu64 " bytes of chunks", ch->size);
		return;
	}
	if (ch->count == 0) {
		ch->state = XXH3_64bits(ch->buf, 0) == ch->hash ? CHUNKS_READY : CHUNKS_FAILED;
		if (ch->state == CHUNKS_FAILED)
			snprintf(ch->why, sizeof(ch->why), "empty content does not hash to %016" PRIx64, ch->hash);
		return;
	}
	ch->state = CHUNKS_LOADING;
	for (uint32_t i = 0; i < ch->count; i++) {
		struct chunk_req *req = malloc(sizeof(*req));
		int rc;

		if (!req) {
			ch->state = CHUNKS_FAILED;
			snprintf(ch->why, sizeof(ch->why), "out of memory");
			return;
		}
		*req = (struct chunk_req){w, ch->round, i};
		snprintf(path, sizeof(path), "%s/%08u", ch->dir, i);
		rc = zh ? zoo_aget(zh, path, 0, chunk_done, req) : ZINVALIDSTATE;
		if (rc != ZOK) {
			free(req);
			/* Not connected: the reconnection reads everything again. */
			ch->state = zkw__rc_is_connection(rc) ? CHUNKS_NONE : CHUNKS_FAILED;
			snprintf(ch->why, sizeof(ch->why), "chunk %u of %u (%s): %s", i + 1, ch->count, path, zerror(rc));
			return;
		}
		ch->outstanding++;
		zkw__session_count(w->session, ZKW_COUNT_READ);
	}
}

int zkw__chunks_resolve(struct zkw_watch *w, const struct zkw__node *c, char *err, const void **data, size_t *len)
{
	struct zkw__chunks *ch = w->chunks, next;
	char why[ZKW_ERROR_MAX];

	if (!ch) {
		ch = w->chunks = calloc(1, sizeof(*ch));
		if (!ch) {
			snprintf(err, ZKW_ERROR_MAX, "%s: out of memory", c->path);
			return -1;
		}
	}
	if (strcmp(ch->node, c->path) == 0 && ch->mzxid == c->mzxid) {
		switch (ch->state) {
		case CHUNKS_LOADING: return 0;
		case CHUNKS_READY:
			*data = ch->buf;
			*len = (size_t)ch->size;
			return 1;
		case CHUNKS_TAKEN:
			/* The content the watch holds already - unless other
			 * content replaced it since (a pointer that went
			 * elsewhere and came back): then read it again. */
			if (w->st.content_serial != ch->taken_serial)
				break;
			*data = w->content;
			*len = w->st.len;
			return 1;
		case CHUNKS_FAILED:
			snprintf(err, ZKW_ERROR_MAX, ZKW_ERR_CHUNKS ": %.400s: %.700s", c->path, ch->why);
			return -1;
		case CHUNKS_NONE: break;
		}
	}
	/* A new manifest (or one to read again). */
	memset(&next, 0, sizeof(next));
	if (manifest_parse(&next, c->path, c->data, c->len, why, sizeof(why)) < 0) {
		snprintf(err, ZKW_ERROR_MAX, ZKW_ERR_CHUNKS ": invalid manifest in %.400s: %.700s", c->path, why);
		return -1;
	}
	if (next.size > w->max_len) {
		snprintf(err, ZKW_ERROR_MAX, ZKW_ERR_TOO_LARGE ": %s holds %" PRIu64 " bytes in chunks, the limit is %zu bytes",
		         c->path, next.size, w->max_len);
		return -1;
	}
	snprintf(ch->node, sizeof(ch->node), "%s", c->path);
	ch->mzxid = c->mzxid;
	ch->size = next.size;
	ch->count = next.count;
	ch->chunk_size = next.chunk_size;
	ch->hash = next.hash;
	memcpy(ch->dir, next.dir, sizeof(ch->dir));
	ch->why[0] = '\0';
	zkw__session_log(w->session, ZKW_LOG_DEBUG, "%s: reading %u chunks (%" PRIu64 " bytes) from %s", c->path,
	                 ch->count, ch->size, ch->dir);
	chunks_load(w, ch);
	if (ch->state == CHUNKS_NONE)
		return 0; /* not connected: the reconnection reads it again */
	return zkw__chunks_resolve(w, c, err, data, len);
}

bool zkw__chunks_take(struct zkw_watch *w, const struct zkw__node *c)
{
	struct zkw__chunks *ch = w->chunks;
	bool changed = false, same;

	if (ch && ch->state == CHUNKS_READY) {
		/* The same bytes as the watch holds? Known different without a
		 * look when the watch holds the last chunked content and the
		 * hashes differ, or the lengths do. */
		if (w->st.content_serial == 0 || w->st.len != ch->size)
			same = false;
		else if (ch->taken_any && w->st.content_serial == ch->taken_serial && ch->taken_hash != ch->hash)
			same = false;
		else
			same = ch->size == 0 || memcmp(w->content, ch->buf, (size_t)ch->size) == 0;
		if (same) {
			free(ch->buf);
		} else {
			/* The assembly becomes the watch's content: no copy. */
			free(w->content);
			w->content = ch->buf;
			w->content_cap = ch->size ? (size_t)ch->size : 1;
			w->st.len = (size_t)ch->size;
			w->st.content_serial++;
			changed = true;
		}
		ch->buf = NULL;
		ch->state = CHUNKS_TAKEN;
		ch->taken_serial = w->st.content_serial;
		ch->taken_hash = ch->hash;
		ch->taken_any = true;
	}
	changed |= w->st.version != c->version || w->st.mzxid != c->mzxid;
	w->st.version = c->version;
	w->st.mzxid = c->mzxid;
	return changed;
}

void zkw__chunks_reset_handle(struct zkw_watch *w)
{
	struct zkw__chunks *ch = w->chunks;

	if (!ch)
		return;
	ch->round++; /* answers still to come are dropped */
	ch->outstanding = 0;
	if (ch->state == CHUNKS_LOADING)
		ch->state = CHUNKS_NONE;
}

bool zkw__chunks_idle(const struct zkw_watch *w)
{
	return !w->chunks || !w->chunks->outstanding;
}

void zkw__chunks_free(struct zkw_watch *w)
{
	if (!w->chunks)
		return;
	free(w->chunks->buf);
	free(w->chunks);
	w->chunks = NULL;
}
