/* SPDX-License-Identifier: Apache-2.0 */
/* zkw-broker - one ZooKeeper session per host, every watch published into
 * its own shared-memory segment.
 *
 *     zkw-broker -z 127.0.0.1:2181 -f /tmp/myconfig
 *     zkw-broker -z HOSTS -f /tmp_pointers/pointer1 -p --shm app -f /other --ensure
 *
 * The watch library (broker/zk/) knows ZooKeeper and nothing of shared memory; the
 * writer (broker/publish/) knows the segment and nothing of ZooKeeper. This file
 * wires each watch's state changes into its writer, and owns signals, logs
 * and the command line; control.c serves the control socket, through
 * which workers add watches on demand (broker.h says who touches what).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <zkw/client.h>
#include <zkw/watcher.h>

#include <zkw_clock.h>

#include "daemon/broker.h"
#include "daemon/cli.h"
#include "daemon/log.h"
#include "daemon/notify.h"
#include "daemon/stats.h"
#include "publish/state.h"
#include "publish/validate.h"
#include "publish/writer.h"

#define STOPPED_ERROR "zkw-broker stopped"
#define EXIT_USAGE    2 /* bad command line */
/* File descriptors a watch holds: its segment and its broker lock file
 * (a growth opens one more for a moment: FDS_SPARE covers it). */
#define FDS_PER_WATCH 2
#define FDS_SPARE     64 /* ZooKeeper, logs, the socket, epoll, growth */

/* Serialises the pub_error copies between publish_state and the control
 * thread: held for a memcpy, never while waiting. */
static pthread_mutex_t pub_lock = PTHREAD_MUTEX_INITIALIZER;
/* Broadcast (under pub_lock) when a watch is first evaluated: the start
 * waits on it before it tells systemd it is ready. */
static pthread_cond_t evaluated_cond = PTHREAD_COND_INITIALIZER;

/* ---- the watch index --------------------------------------------------
 *
 * A broker may hold 10,000 watches and add them one by one from the socket:
 * look-ups by (path, mode) and by segment name are hashed. Both live in one
 * open-addressing table per key, rebuilt at twice the size when half full,
 * with backward-shift deletion. Control thread (or main before/after it). */

typedef struct index_table {
	broker_watch **slot;
	size_t cap; /* power of two, or 0 */
	size_t used;
} index_table;

static index_table by_key, by_name;

static uint64_t hash_bytes(const char *s, uint64_t h)
{
	/* FNV-1a: fine for a table whose keys the broker owns. */
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
	return h;
}

static uint64_t key_hash(const char *path, bool pointer, bool bundle)
{
	return hash_bytes(path, 0xcbf29ce484222325ull ^ (pointer ? 0x5a : 0) ^ (bundle ? 0xb5 : 0));
}

static uint64_t watch_hash(const index_table *t, const broker_watch *w)
{
	return t == &by_key ? key_hash(w->path, w->pointer, w->bundle)
	                    : hash_bytes(w->shm, 0xcbf29ce484222325ull);
}

static int index_put(index_table *t, broker_watch *w);

static int index_grow(index_table *t)
{
	index_table old = *t;
	size_t cap = old.cap ? old.cap * 2 : 64;

	t->slot = calloc(cap, sizeof(*t->slot));
	if (!t->slot) {
		*t = old;
		return -ENOMEM;
	}
	t->cap = cap;
	t->used = 0;
	for (size_t i = 0; i < old.cap; i++)
		if (old.slot[i])
			index_put(t, old.slot[i]);
	free(old.slot);
	return 0;
}

static int index_put(index_table *t, broker_watch *w)
{
	size_t i;

	if ((t->used + 1) * 2 > t->cap && index_grow(t) < 0)
		return -ENOMEM;
	for (i = watch_hash(t, w) & (t->cap - 1); t->slot[i]; i = (i + 1) & (t->cap - 1))
		;
	t->slot[i] = w;
	t->used++;
	return 0;
}

static void index_del(index_table *t, broker_watch *w)
{
	size_t i, j, home;

	if (!t->cap)
		return;
	for (i = watch_hash(t, w) & (t->cap - 1); t->slot[i] != w; i = (i + 1) & (t->cap - 1))
		if (!t->slot[i])
			return;
	t->slot[i] = NULL;
	t->used--;
	/* Backward shift: pull later entries of the run into the hole when
	 * their home slot does not lie between the hole and them. */
	for (j = (i + 1) & (t->cap - 1); t->slot[j]; j = (j + 1) & (t->cap - 1)) {
		home = watch_hash(t, t->slot[j]) & (t->cap - 1);
		if (((j - home) & (t->cap - 1)) >= ((j - i) & (t->cap - 1))) {
			t->slot[i] = t->slot[j];
			t->slot[j] = NULL;
			i = j;
		}
	}
}

broker_watch *broker_watch_find(broker *b, const char *path, bool pointer, bool bundle)
{
	(void)b;
	if (!by_key.cap)
		return NULL;
	for (size_t i = key_hash(path, pointer, bundle) & (by_key.cap - 1); by_key.slot[i];
	     i = (i + 1) & (by_key.cap - 1))
		if (by_key.slot[i]->pointer == pointer && by_key.slot[i]->bundle == bundle &&
		    strcmp(by_key.slot[i]->path, path) == 0)
			return by_key.slot[i];
	return NULL;
}

broker_watch *broker_watch_by_name(broker *b, const char *name)
{
	(void)b;
	if (!by_name.cap)
		return NULL;
	for (size_t i = hash_bytes(name, 0xcbf29ce484222325ull) & (by_name.cap - 1); by_name.slot[i];
	     i = (i + 1) & (by_name.cap - 1))
		if (strcmp(by_name.slot[i]->shm, name) == 0)
			return by_name.slot[i];
	return NULL;
}

static bool name_taken(const char *name)
{
	return broker_watch_by_name(NULL, name) != NULL;
}

/* The segment name of a watch added on demand (docs/design.md, "Lifetime
 * of a watch added on demand"). 0 or -ENAMETOOLONG. */
static int demand_name(char *out, size_t cap, const char *path, bool pointer, bool bundle)
{
	const char *suffix = pointer ? "@pointer" : bundle ? "@bundle" : "";
	size_t slen = strlen(suffix);
	char base[ZKW_SHM_NAME_MAX + 1], hashed[32];
	size_t n;

	if (zkw_shm_default_name(base, sizeof(base), path) == 0) {
		n = strlen(base);
		if (n + slen <= ZKW_SHM_NAME_MAX && n + slen + 1 <= cap) {
			memcpy(out, base, n + 1);
			memcpy(out + n, suffix, slen + 1);
			if (!name_taken(out))
				return 0;
		}
	}
	snprintf(hashed, sizeof(hashed), "/zkw.h%016llx",
	         (unsigned long long)key_hash(path, pointer, bundle));
	if (cap < sizeof(hashed) + 12)
		return -ENAMETOOLONG;
	snprintf(out, cap, "%s", hashed);
	for (unsigned k = 2; name_taken(out); k++)
		snprintf(out, cap, "%.31s-%u", hashed, k);
	return 0;
}

/* Log a line and record it as the broker's last error (counted). */
static void log_error(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_error(int level, const char *fmt, ...)
{
	char line[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	zkw__stats_log_sink(NULL, level, line); /* the log, and the last error */
}

/* ---- the state directory (docs/design.md, "The state directory") -------
 *
 * After every publication the segment's content - the last good one - is
 * handed to the state store with the generation, and its saver thread
 * writes it (coalesced, never on this thread). A watch added later finds
 * its last snapshot there and publishes it at once, marked cached, until
 * ZooKeeper answers. */

static zkw_state *state_store;

static void state_key(const broker_watch *w, zkw_state_key *key)
{
	key->path = w->path;
	key->pointer = w->pointer;
	key->bundle = w->bundle;
	key->shm_name = w->shm;
}

/* Hand what w's segment publishes now to the saver. Publishing thread. */
static void state_save(broker_watch *w)
{
	zkw_writer_view v;
	zkw_state_snapshot s;
	zkw_state_key key;
	int rc;

	if (!state_store || zkw_writer_view_published(w->writer, &v) < 0 || !v.generation)
		return;
	state_key(w, &key);
	s = (zkw_state_snapshot){
	        .content = v.content,
	        .len = v.len,
	        .pointer = v.pointer,
	        .version = v.version,
	        .mzxid = v.mzxid,
	        .generation = v.generation,
	        .content_gen = v.content_gen,
	        .changed_ns = v.changed_ns,
	        .confirmed_ns = v.confirmed_ns,
	};
	rc = zkw_state_save(state_store, &key, &s);
	if (rc < 0)
		log_error(ZKW_LOG_WARN, "%s: cannot save its state: %s", w->path, strerror(-rc));
}

/* The saver thread: once per change of cause (a full disk is told once). */
static void state_error(void *ctx, int err, const char *why)
{
	(void)ctx;
	if (err)
		log_error(ZKW_LOG_ERROR, "%s; the broker serves on, the cached copies may be older", why);
	else
		zkw__log_printf(ZKW_LOG_INFO, "%s", why);
}

static void state_written(void *ctx, int err)
{
	(void)ctx;
	zkw__stats_add(err ? ZKW_STAT_STATE_FAILURES : ZKW_STAT_STATE_WRITES);
}

/* "2026-12-01T19:00:00Z" */
static void utc_text(uint64_t ns, char *buf, size_t cap)
{
	time_t t = (time_t)(ns / 1000000000u);
	struct tm tm;

	if (!ns || !gmtime_r(&t, &tm) || !strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, cap, "an unknown time");
}

static void share_fields(broker_watch *w, bool valid, const char *error);

/* A cold start: publish the watch's saved snapshot when it is newer than
 * what its segment holds (after a reboot the segment is new and empty).
 * Before the watch starts: no publish_state can run for w yet. */
static bool cold_start(broker_watch *w)
{
	size_t cap;
	void *buf;
	zkw_state_snapshot s;
	zkw_state_key key;
	char why[1024], when[40], error[256];
	int rc;

	if (!state_store)
		return false;
	/* A copy larger than the watch's capacity could not be published. */
	cap = zkw_state_load_size_for(state_store, w->capacity);
	buf = malloc(cap);
	if (!buf)
		return false;
	state_key(w, &key);
	rc = zkw_state_load(state_store, &key, &s, buf, cap, why, sizeof(why));
	if (rc < 0) {
		if (rc == -ENOBUFS)
			snprintf(why + strlen(why), sizeof(why) - strlen(why),
			         " (more than the watch's capacity, %llu)", (unsigned long long)w->capacity);
		if (rc != -ENOENT)
			log_error(ZKW_LOG_WARN, "%s: cached copy ignored: %s", w->path, why);
		free(buf);
		return false;
	}
	if (s.generation <= zkw_writer_generation(w->writer)) {
		zkw__log_printf(ZKW_LOG_DEBUG,
		                "%s: segment %s (generation %llu) is newer than the cached copy", w->path,
		                w->shm, (unsigned long long)zkw_writer_generation(w->writer));
		free(buf);
		return false;
	}
	utc_text(s.saved_ns, when, sizeof(when));
	snprintf(error, sizeof(error), "cached copy from %s; ZooKeeper not reached yet", when);
	rc = zkw_writer_publish(w->writer, &(zkw_publication){
	                                           .cached = true,
	                                           .bundle = w->bundle,
	                                           .content = s.content,
	                                           .len = s.len,
	                                           .version = s.version,
	                                           .mzxid = s.mzxid,
	                                           .pointer = s.pointer,
	                                           .error = error,
	                                           .confirmed_ns = s.confirmed_ns,
	                                           /* The stop's publication is not saved: one more. */
	                                           .after_generation = s.generation + 1,
	                                           .changed_ns = s.changed_ns,
	                                           .content_gen = s.content_gen,
	                                   });
	if (rc < 0) {
		log_error(ZKW_LOG_WARN, "%s: cannot publish the cached copy from %s (%zu bytes): %s", w->path,
		          when, s.len, rc == -EMSGSIZE ? "larger than the watch's capacity" : strerror(-rc));
	} else {
		snprintf(w->cached_from, sizeof(w->cached_from), "%s", when);
		zkw__stats_add(ZKW_STAT_COLD_STARTS);
		zkw__log_printf(ZKW_LOG_INFO,
		                "%s: published the cached copy from %s (%zu bytes, generation %llu) until "
		                "ZooKeeper answers",
		                w->path, when, s.len, (unsigned long long)zkw_writer_generation(w->writer));
		/* Not an evaluation (ZooKeeper has not answered): shared
		 * without share_state's wake of whoever waits for one. */
		__atomic_store_n(&w->pub_len, (uint64_t)s.len, __ATOMIC_RELAXED);
		share_fields(w, false, error);
	}
	free(buf);
	return rc == 0;
}

/* The store, or none with a warning: a broker without its disk cache still
 * serves. */
static void state_open(broker *b)
{
	zkw_state_options o = {
	        .max_content = ZKW_CAPACITY_MAX, /* each watch's capacity is its writer's business */
	        .on_error = state_error,
	        .on_write = state_written,
	};
	char why[1024];

	if (!b->cli.state_dir) {
		zkw__log_printf(ZKW_LOG_INFO,
		                "no state directory: a start without ZooKeeper publishes nothing");
		return;
	}
	if (zkw_state_open(&state_store, b->cli.state_dir, &o, why, sizeof(why)) < 0) {
		state_store = NULL;
		log_error(ZKW_LOG_WARN, "%s; running without a disk cache (--state-dir)", why);
		return;
	}
	zkw__log_printf(ZKW_LOG_DEBUG, "state directory %s", b->cli.state_dir);
}

/* Every snapshot handed over is written (or failed) before the stop. */
static void state_close(void)
{
	zkw_state_stats s;
	int rc;

	if (!state_store)
		return;
	zkw_state_flush(state_store); /* then the counts include the last writes */
	zkw_state_get_stats(state_store, &s);
	rc = zkw_state_close(state_store);
	state_store = NULL;
	if (rc < 0)
		zkw__log_printf(ZKW_LOG_WARN, "state directory: the last snapshots could not be written: %s",
		                strerror(-rc));
	else
		zkw__log_printf(ZKW_LOG_DEBUG, "state directory: %llu writes, %llu coalesced, %llu failures",
		                (unsigned long long)s.writes, (unsigned long long)s.coalesced,
		                (unsigned long long)s.failures);
}

/* ---- validation ------------------------------------------------------- */

static bool rules_active(const zkw_validate_rules *r)
{
	return r->format != ZKW_VALIDATE_NONE || r->reject_empty || r->max_shrink;
}

/* A bundle's rules: the format and reject-empty apply to every child (the
 * refusal names it), max-shrink to the bundle as a whole. */
static int validate_bundle(const zkw_validate_rules *r, const void *content, size_t len, int64_t last_good,
                           char *why, size_t whylen)
{
	zkw_validate_rules each = {.format = r->format, .reject_empty = r->reject_empty};
	zkw_validate_rules whole = {.max_shrink = r->max_shrink};
	zkw_bundle b;
	zkw_bundle_entry e;
	char child_why[512], name[256];
	int rc = zkw_bundle_open(&b, content, len);

	if (rc < 0)
		return zkw__errorf(why, whylen, rc, "not a readable bundle");
	for (uint32_t i = 0; i < b.count && rules_active(&each); i++) {
		if (zkw_bundle_entry_at(&b, i, &e) < 0)
			return zkw__errorf(why, whylen, -EBADMSG, "not a readable bundle");
		rc = zkw_validate(&each, e.data, e.len, -1, child_why, sizeof(child_why));
		if (rc < 0) {
			zkw__log_escape(name, sizeof(name), e.name, e.name_len < 200 ? e.name_len : 200);
			snprintf(why, whylen, "child %.200s: %.280s", name, child_why);
			return rc;
		}
	}
	return zkw_validate(&whole, content, len, last_good, why, whylen);
}

/* Check the watch's new content (once per content serial): false when it
 * is refused, the reason in w->reject_why (without the version, which the
 * same bytes may come back with: reject_error() adds it). Publishing
 * thread. */
static bool content_accepted(broker_watch *w, const zkw_watch_state *st)
{
	zkw_writer_view v;
	int64_t last_good = -1;
	char why[512];
	int rc;

	if (st->content_serial == w->checked_serial)
		return !w->rejecting;
	w->checked_serial = st->content_serial;
	if (zkw_writer_view_published(w->writer, &v) == 0 && v.generation)
		last_good = (int64_t)v.len;
	rc = w->bundle ? validate_bundle(&w->rules, st->content, st->len, last_good, why, sizeof(why))
	               : zkw_validate(&w->rules, st->content, st->len, last_good, why, sizeof(why));
	w->rejecting = rc < 0;
	if (rc == -ENOMEM || rc == -EINVAL) {
		/* Not a verdict on the content: refused for now (fail closed),
		 * checked again at its next evaluation. */
		w->checked_serial = 0;
		snprintf(w->reject_why, sizeof(w->reject_why), "could not be checked: %s", why);
		return false;
	}
	if (w->rejecting) {
		snprintf(w->reject_why, sizeof(w->reject_why), "%s", why);
		zkw__stats_add(ZKW_STAT_REJECTIONS);
	}
	return !w->rejecting;
}

/* ---- publishing ------------------------------------------------------- */

/* One line when a watch becomes valid or invalid, or its error changes: the
 * error comes from ZooKeeper and the watch library (paths, pointer
 * contents) and is escaped with the rest of the line. Connection loss is
 * the session's to log, once for all watches. A node whose writer flips it
 * faster than that gets STATE_LOG_BURST lines, then one a second counting
 * the changes in between; the state such a flood ends on is logged with
 * the watch's next state, at the latest at the next reconcile. */
#define STATE_LOG_BURST 10

static void log_state(broker_watch *w, const zkw_publication *st)
{
	const char *error = st->error ? st->error : "";
	bool changed;
	unsigned missed;
	char more[64] = "";

	if (!st->connected)
		return;
	changed = !w->logged || st->valid != w->logged_valid ||
	          (!st->valid && strncmp(error, w->logged_error, sizeof(w->logged_error)) != 0);
	if (changed ? !zkw__log_limit_event(&w->log_limit, zkw_clock_mono_ms(), &missed)
	            : !zkw__log_limit_flush(&w->log_limit, zkw_clock_mono_ms(), &missed))
		return;
	w->logged = true;
	w->logged_valid = st->valid;
	snprintf(w->logged_error, sizeof(w->logged_error), "%s", st->valid ? "" : error);
	if (missed)
		snprintf(more, sizeof(more), " (%u earlier change%s not logged)", missed,
		         missed == 1 ? "" : "s");
	if (st->valid)
		zkw__log_printf(ZKW_LOG_INFO, "%s: valid, version %lld, %zu bytes%s%s%s", w->path,
		                (long long)st->version, st->len, st->pointer && *st->pointer ? " from " : "",
		                st->pointer ? st->pointer : "", more);
	else
		zkw__log_printf(ZKW_LOG_WARN, "%s: invalid: %s%s", w->path, error, more);
}

int broker_evaluated_fd = -1;

/* What the control thread may read of w without touching the writer. */
static void share_fields(broker_watch *w, bool valid, const char *error)
{
	pthread_mutex_lock(&pub_lock);
	snprintf(w->pub_error, sizeof(w->pub_error), "%s", valid || !error ? "" : error);
	pthread_mutex_unlock(&pub_lock);
	__atomic_store_n(&w->pub_valid, valid ? 1u : 0u, __ATOMIC_RELAXED);
	__atomic_store_n(&w->pub_generation, zkw_writer_generation(w->writer), __ATOMIC_RELAXED);
	__atomic_store_n(&w->pub_capacity, zkw_writer_capacity(w->writer), __ATOMIC_RELAXED);
}

static void share_state(broker_watch *w, const zkw_publication *p)
{
	share_fields(w, p->valid, p->error);
	if (!p->keep_content)
		__atomic_store_n(&w->pub_len, (uint64_t)p->len, __ATOMIC_RELAXED);
	if (__atomic_load_n(&w->pub_evaluated, __ATOMIC_RELAXED) == 0) {
		pthread_mutex_lock(&pub_lock);
		pthread_cond_broadcast(&evaluated_cond);
		pthread_mutex_unlock(&pub_lock);
	}
	if (!__atomic_exchange_n(&w->pub_evaluated, 1u, __ATOMIC_RELEASE) && broker_evaluated_fd >= 0) {
		uint64_t one = 1;

		/* An eventfd: never blocks short of 2^64 - 2 wakes. */
		if (write(broker_evaluated_fd, &one, sizeof(one)) < 0) {
			/* the control thread also re-checks on its timer */
		}
	}
}

void broker_watch_error(broker_watch *w, char *buf, size_t cap)
{
	pthread_mutex_lock(&pub_lock);
	snprintf(buf, cap, "%s", w->pub_error);
	pthread_mutex_unlock(&pub_lock);
}

/* Called by the watcher, possibly on the ZooKeeper completion thread: copy
 * into the segment and wake readers, never block. The watcher serialises
 * on_state calls of one session (it holds the session lock), which is what
 * the writer's single-writer rule needs: no lock of our own. */
static void publish_state(void *ctx, const zkw_watch_state *st)
{
	broker_watch *w = ctx;
	zkw_publication p = {
	        .valid = st->valid,
	        .connected = st->connected,
	        /* Until this broker has read the node once, the segment's
	         * content (from a previous broker) is the last good value. */
	        .keep_content = st->content_serial == 0,
	        .content = st->content,
	        .len = st->len,
	        .content_serial = st->content_serial,
	        .version = st->version,
	        .mzxid = st->mzxid,
	        .pointer = st->pointer,
	        .error = st->error,
	        .confirmed_ns = st->confirmed_ns,
	        .bundle = w->bundle,
	};
	char grow_error[ZKW_ERROR_MAX], cached_error[ZKW_ERROR_MAX], reject_error[ZKW_ERROR_MAX];
	uint64_t capacity = zkw_writer_capacity(w->writer);
	int rc;

	/* A reconcile that found nothing changed: the confirmation time moves
	 * (one word of the hot line), no generation, no reader woken. */
	if (st->confirm_only && st->confirmed_ns && zkw_writer_generation(w->writer) && !w->degraded &&
	    zkw_writer_confirm(w->writer, st->confirmed_ns) == 0) {
		zkw__stats_add(ZKW_STAT_CONFIRMATIONS);
		zkw__log_printf(ZKW_LOG_DEBUG, "%s: confirmed (generation %llu unchanged)", w->path,
		                (unsigned long long)zkw_writer_generation(w->writer));
		return;
	}
	/* Content the watch's rules refuse never reaches the segment: the last
	 * good content stays, flagged rejected, with the reason (unless
	 * ZooKeeper's own trouble is the news). */
	if (st->content_serial && rules_active(&w->rules) && !content_accepted(w, st)) {
		p.keep_content = true;
		p.rejected = true;
		p.valid = false;
		if (st->valid || !st->error || !*st->error) {
			snprintf(reject_error, sizeof(reject_error),
			         "Rejected version %d (%zu bytes): %.900s; the last good content stays "
			         "published",
			         (int)st->version, st->len, w->reject_why);
			p.error = reject_error;
		}
	}
	if (!p.keep_content)
		w->cached_from[0] = '\0'; /* ZooKeeper's content replaces the cached copy */
	else if (w->cached_from[0] && !p.valid && !p.rejected) {
		snprintf(cached_error, sizeof(cached_error), "%s; serving the cached copy from %s",
		         p.error && *p.error ? p.error : "ZooKeeper not reached yet", w->cached_from);
		p.error = cached_error;
	}
	rc = zkw_writer_publish(w->writer, &p);
	if (zkw_writer_capacity(w->writer) != capacity)
		zkw__log_printf(ZKW_LOG_INFO, "%s: segment %s grown to a capacity of %llu bytes", w->path,
		                w->shm, (unsigned long long)zkw_writer_capacity(w->writer));
	if (rc == -EMSGSIZE) {
		/* The watcher checks max_len; this is the backstop. */
		p.valid = false;
		p.keep_content = true;
		p.error = "Content too large for the segment";
		rc = zkw_writer_publish(w->writer, &p);
	} else if (rc < 0 && *zkw_writer_error(w->writer)) {
		/* The segment could not grow to the content (/dev/shm full):
		 * the last good content stays, invalid, with the reason. */
		snprintf(grow_error, sizeof(grow_error), "Cannot grow the segment: %s",
		         zkw_writer_error(w->writer));
		p.valid = false;
		p.keep_content = true;
		p.error = grow_error;
		rc = zkw_writer_publish(w->writer, &p);
	}
	/* What the segment shows is not the watch's state (content too large,
	 * no room to grow): the next confirmation publishes in full, and so
	 * retries. */
	w->degraded = rc != 0 || (p.valid != st->valid && !p.rejected);
	log_state(w, &p);
	share_state(w, &p);
	if (rc) {
		log_error(ZKW_LOG_ERROR, "%s: cannot publish to %s: %s", w->path, w->shm, strerror(-rc));
		return;
	}
	zkw__stats_add(ZKW_STAT_PUBLISHES);
	state_save(w);
	if (!p.valid && p.connected && p.error && *p.error) /* what log_state says at WARN */
		zkw__stats_error(ZKW_LOG_WARN, "%s: invalid: %s", w->path, p.error);
	zkw__log_printf(ZKW_LOG_DEBUG, "%s: published generation %llu (valid=%d len=%zu)", w->path,
	                (unsigned long long)zkw_writer_generation(w->writer), st->valid, st->len);
}

/* ---- watches ---------------------------------------------------------- */

static void watch_free(broker_watch *w)
{
	free(w->path);
	free(w);
}

static int watch_add(broker *b, const char *path, bool pointer, bool bundle, bool ensure, bool permanent,
                     const char *name, uint64_t capacity, mode_t mode, const gid_t *group,
                     const zkw_validate_rules *rules, broker_watch **out, char *why, size_t whylen);

int broker_watch_add(broker *b, const char *path, bool pointer, bool bundle, bool ensure, bool permanent,
                     const char *name, uint64_t capacity, broker_watch **out, char *why, size_t whylen)
{
	return watch_add(b, path, pointer, bundle, ensure, permanent, name, capacity, 0, NULL,
	                 &b->cli.demand.rules, out, why, whylen);
}

int broker_watch_add_cfg(broker *b, const zkw_cli_watch *c, broker_watch **out, char *why, size_t whylen)
{
	return watch_add(b, c->path, c->pointer, c->bundle, c->ensure, true, c->shm, c->capacity, c->mode,
	                 c->group_set ? &c->group : NULL, &c->rules, out, why, whylen);
}

static int watch_add(broker *b, const char *path, bool pointer, bool bundle, bool ensure, bool permanent,
                     const char *name, uint64_t capacity, mode_t mode, const gid_t *group,
                     const zkw_validate_rules *rules, broker_watch **out, char *why, size_t whylen)
{
	zkw_writer_options o = b->cli.segment;
	broker_watch *w;
	int rc;

	*out = NULL;
	if (b->nwatches == b->watches_cap) {
		size_t cap = b->watches_cap ? b->watches_cap * 2 : 64;
		broker_watch **p = realloc(b->watches, cap * sizeof(*p));

		if (!p)
			return zkw__errorf(why, whylen, -ENOMEM, "out of memory");
		b->watches = p;
		b->watches_cap = cap;
	}
	w = calloc(1, sizeof(*w));
	if (!w || !(w->path = strdup(path))) {
		free(w);
		return zkw__errorf(why, whylen, -ENOMEM, "out of memory");
	}
	w->pointer = pointer;
	w->bundle = bundle;
	w->ensure = ensure;
	w->permanent = permanent;
	w->capacity = capacity;
	w->mode = mode;
	w->group_set = group != NULL;
	w->group = group ? *group : 0;
	w->rules = *rules;
	if (mode)
		o.mode = mode;
	if (group)
		o.group = *group;
	w->log_limit.burst = STATE_LOG_BURST;
	if (name)
		snprintf(w->shm, sizeof(w->shm), "%s", name);
	else if (demand_name(w->shm, sizeof(w->shm), path, pointer, bundle) < 0) {
		watch_free(w);
		return zkw__errorf(why, whylen, -ENAMETOOLONG, "no free segment name for %s", path);
	}
	o.capacity = capacity;
	o.watch_path = w->path;
	rc = zkw_writer_open(&w->writer, w->shm, &o, why, whylen);
	if (rc < 0) {
		watch_free(w);
		return rc;
	}
	if (index_put(&by_key, w) < 0 || index_put(&by_name, w) < 0) {
		index_del(&by_key, w);
		zkw_writer_close(w->writer, false);
		watch_free(w);
		return zkw__errorf(why, whylen, -ENOMEM, "out of memory");
	}
	__atomic_store_n(&w->pub_generation, zkw_writer_generation(w->writer), __ATOMIC_RELAXED);
	__atomic_store_n(&w->pub_capacity, zkw_writer_capacity(w->writer), __ATOMIC_RELAXED);
	if (*zkw_writer_notice(w->writer)) /* a replaced segment, a dropped snapshot */
		zkw__log_printf(ZKW_LOG_WARN, "%s", zkw_writer_notice(w->writer));
	zkw__log_printf(
	        ZKW_LOG_INFO,
	        "publishing %s%s into segment %s (%s; capacity %llu of at most %llu, generation %llu)",
	        w->path,
	        w->pointer  ? " (pointer)"
	        : w->bundle ? " (bundle)"
	                    : "",
	        w->shm, permanent ? "-f" : "on demand", (unsigned long long)zkw_writer_capacity(w->writer),
	        (unsigned long long)capacity, (unsigned long long)zkw_writer_generation(w->writer));
	w->index = b->nwatches;
	b->watches[b->nwatches++] = w;
	if (!permanent)
		b->ndemand++;
	if (cold_start(w))
		b->cold_starts++;
	*out = w;
	return 0;
}

int broker_watch_start(broker *b, broker_watch *w)
{
	zkw_watch_options o = {
	        .pointer = w->pointer,
	        .bundle = w->bundle,
	        .ensure = w->ensure,
	        .max_len = w->capacity,
	        .on_state = publish_state,
	        .ctx = w,
	};
	int rc = zkw_session_watch(b->session, w->path, &o, &w->watch);

	if (rc < 0)
		zkw__log_printf(ZKW_LOG_ERROR, "cannot watch %s: %s", w->path, strerror(-rc));
	return rc;
}

/* Out of the table and the indexes; the caller frees or closes. */
static void watch_unlink(broker *b, broker_watch *w)
{
	size_t i = w->index;

	index_del(&by_key, w);
	index_del(&by_name, w);
	b->watches[i] = b->watches[--b->nwatches];
	b->watches[i]->index = i;
	if (!w->permanent)
		b->ndemand--;
}

void broker_watch_remove(broker *b, broker_watch *w, const char *error)
{
	zkw_publication gone = {.keep_content = true, .error = error};

	zkw_watch_remove(w->watch); /* no publish_state for w after this */
	w->watch = NULL;
	watch_unlink(b, w);
	zkw_writer_publish(w->writer, &gone);
	zkw_writer_close(w->writer, true); /* retired (readers see -ESTALE), then unlinked */
	zkw__log_printf(ZKW_LOG_INFO, "%s%s: watch removed, segment %s retired (%s)", w->path,
	                w->pointer  ? " (pointer)"
	                : w->bundle ? " (bundle)"
	                            : "",
	                w->shm, error);
	watch_free(w);
}

/* At stop, after the session is closed: every segment says the broker
 * stopped; those added on demand are retired and unlinked (their
 * subscribers subscribe again to a new broker), the others only with
 * --unlink-on-exit. */
static void stop_publishing(broker *b)
{
	while (b->nwatches) {
		broker_watch *w = b->watches[b->nwatches - 1];
		zkw_publication stopped = {.keep_content = true, .error = STOPPED_ERROR};

		watch_unlink(b, w);
		/* Not saved: a cold start counts one more generation for it (a
		 * stop with 10,000 watches writes no 10,000 files). */
		zkw_writer_publish(w->writer, &stopped);
		zkw_writer_close(w->writer, b->cli.unlink_on_exit || !w->permanent);
		watch_free(w);
	}
	free(b->watches);
	free(by_key.slot);
	free(by_name.slot);
}

/* Descriptors: raise the soft limit to what --max-watches and
 * --max-connections need, up to the hard limit. When the hard limit is
 * lower, say so once and let b->fd_watch_cap (the watches it leaves room
 * for) refuse subscriptions beyond it, by name; -EMFILE (logged) when even
 * the -f watches do not fit. */
static int raise_fd_limit(broker *b)
{
	struct rlimit rl;
	rlim_t fixed = (rlim_t)b->cli.max_connections + FDS_SPARE;
	rlim_t want = (rlim_t)b->cli.max_watches * FDS_PER_WATCH + fixed;

	b->fd_watch_cap = (size_t)b->cli.max_watches;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 0;
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
		struct rlimit up = {want, want};

		/* A privileged broker (CAP_SYS_RESOURCE) may raise the hard
		 * limit itself, up to fs.nr_open; otherwise up to the hard one. */
		if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want &&
		    setrlimit(RLIMIT_NOFILE, &up) == 0) {
			rl = up;
		} else {
			rl.rlim_cur =
			        rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
			if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
				getrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	b->fd_limit = rl.rlim_cur == RLIM_INFINITY ? 0 : (unsigned long long)rl.rlim_cur;
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want)
		return 0;
	b->fd_watch_cap = rl.rlim_cur > fixed ? (size_t)((rl.rlim_cur - fixed) / FDS_PER_WATCH) : 0;
	if (b->fd_watch_cap < (size_t)b->cli.nwatches) {
		zkw__log_printf(
		        ZKW_LOG_ERROR,
		        "the open file limit (ulimit -Hn: %llu) is too low for %d watches (%llu descriptors "
		        "needed): raise it (LimitNOFILE= in a systemd unit)",
		        (unsigned long long)rl.rlim_max, b->cli.nwatches,
		        (unsigned long long)((rlim_t)b->cli.nwatches * FDS_PER_WATCH + fixed));
		return -EMFILE;
	}
	zkw__log_printf(
	        ZKW_LOG_WARN,
	        "the open file limit (ulimit -Hn: %llu) leaves room for %zu watches, not --max-watches %d "
	        "(%llu descriptors needed): subscriptions beyond are refused; raise LimitNOFILE= or lower "
	        "--max-watches",
	        (unsigned long long)rl.rlim_max, b->fd_watch_cap, b->cli.max_watches,
	        (unsigned long long)want);
	return 0;
}

/* ---- fault injection (tests only) -------------------------------------
 *
 * ZKW_TEST_FAULT_STALL_MID_PUBLISH_US=N makes every publish announce itself
 * on stderr ("zkw-fault: mid-publish") and stall N microseconds (at most one
 * second) between the odd and the even store of the slot's sequence, so a
 * test can SIGKILL the broker exactly mid-publish (tests/fault/test_failover.c).
 * Compiled in unless ZKW_NO_FAULT_INJECTION: unarmed it costs one getenv at
 * start, and the tests then exercise the very binary that ships. */
#ifndef ZKW_NO_FAULT_INJECTION
static useconds_t fault_stall_us, fault_save_us;

static void fault_stall_mid_publish(void)
{
	static const char line[] = "zkw-fault: mid-publish\n";

	if (write(STDERR_FILENO, line, sizeof(line) - 1) < 0) {
		/* nothing to do: the stall below is what matters */
	}
	usleep(fault_stall_us);
}

/* ZKW_TEST_FAULT_STALL_BEFORE_SAVE_US=N: the saver thread says
 * "zkw-fault: saving" before each state file it writes and stalls N
 * microseconds, so a test can SIGKILL the broker at any point of a save
 * (tests/integration/test_coldstart.c). */
static void fault_stall_before_save(void)
{
	static const char line[] = "zkw-fault: saving\n";

	if (write(STDERR_FILENO, line, sizeof(line) - 1) < 0) {
		/* the stall is what matters */
	}
	usleep(fault_save_us);
}

static void arm_fault_injection(void)
{
	const char *v = getenv("ZKW_TEST_FAULT_STALL_MID_PUBLISH_US");
	const char *s = getenv("ZKW_TEST_FAULT_STALL_BEFORE_SAVE_US");
	long us;

	if (s && *s) {
		us = strtol(s, NULL, 10);
		fault_save_us = (useconds_t)(us < 0 ? 0 : us > 1000000 ? 1000000 : us);
		zkw_state_write_hook = fault_stall_before_save;
		zkw__log_printf(ZKW_LOG_WARN,
		                "fault injection armed: stalling %u us before each save (tests only)",
		                (unsigned)fault_save_us);
	}
	if (!v || !*v)
		return;
	us = strtol(v, NULL, 10);
	fault_stall_us = (useconds_t)(us < 0 ? 0 : us > 1000000 ? 1000000 : us);
	zkw_writer_fault_hook = fault_stall_mid_publish;
	zkw__log_printf(ZKW_LOG_WARN, "fault injection armed: stalling %u us mid-publish (tests only)",
	                (unsigned)fault_stall_us);
}
#else
static void arm_fault_injection(void)
{
}
#endif

/* ---- signals ----------------------------------------------------------
 *
 * No asynchronous signal kills the broker without a word (docs/design.md,
 * "Signals"): every one whose default action would terminate it either
 * stops it cleanly or is logged and ignored. All of them are blocked in
 * every thread (the mask is set before the first thread exists and is
 * inherited) and collected here, by the main thread, with sigwaitinfo.
 * Faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT) keep
 * their default action, SIGPIPE is ignored (a write to a closed stderr
 * fails instead), SIGTSTP suspends as SIGSTOP does. */

struct sig_rule {
	int sig;
	const char *name;
	bool stops;
	const char *note; /* after "ignored" */
};

static const struct sig_rule sig_rules[] = {
        {SIGTERM, "SIGTERM", true, NULL},
        {SIGINT, "SIGINT", true, NULL},
        {SIGQUIT, "SIGQUIT", true, NULL},
        /* The soft RLIMIT_CPU: SIGKILL follows at the hard one. */
        {SIGXCPU, "SIGXCPU", true, NULL},
        /* Not a stop: it reloads the configuration file (reload_config). */
        {SIGHUP, "SIGHUP", false, NULL},
        {SIGUSR1, "SIGUSR1", false, NULL},
        {SIGUSR2, "SIGUSR2", false, NULL},
        {SIGALRM, "SIGALRM", false, NULL},
        {SIGVTALRM, "SIGVTALRM", false, NULL},
        {SIGPROF, "SIGPROF", false, NULL},
        {SIGIO, "SIGIO", false, NULL}, /* SIGPOLL */
#ifdef SIGPWR
        {SIGPWR, "SIGPWR", false, NULL},
#endif
#ifdef SIGSTKFLT
        {SIGSTKFLT, "SIGSTKFLT", false, NULL},
#endif
        /* RLIMIT_FSIZE: the write fails with EFBIG, which its caller reports. */
        {SIGXFSZ, "SIGXFSZ", false, NULL},
        /* Blocked, they no longer stop a broker in a terminal's background;
         * a blocked SIGTTOU lets the write proceed. */
        {SIGTTIN, "SIGTTIN", false, NULL},
        {SIGTTOU, "SIGTTOU", false, NULL},
};

/* The rule for sig; real-time signals (SIGRTMIN..SIGRTMAX) are ignored. */
static const struct sig_rule *sig_rule(int sig, char *name, size_t cap)
{
	static const struct sig_rule realtime = {0, NULL, false, NULL};

	for (size_t i = 0; i < sizeof(sig_rules) / sizeof(sig_rules[0]); i++)
		if (sig_rules[i].sig == sig) {
			snprintf(name, cap, "%s", sig_rules[i].name);
			return &sig_rules[i];
		}
	snprintf(name, cap, "SIGRTMIN+%d", sig - SIGRTMIN);
	return &realtime;
}

/* Block every signal of the table and the real-time ones in this thread,
 * hence in every thread created after it, and give each its default action:
 * a signal ignored by whoever started us (nohup, a shell's '&') would be
 * discarded before sigwaitinfo could see it. */
static void signals_block(sigset_t *set)
{
	struct sigaction dfl;
	int sig;

	sigemptyset(set);
	for (size_t i = 0; i < sizeof(sig_rules) / sizeof(sig_rules[0]); i++)
		sigaddset(set, sig_rules[i].sig);
	for (sig = SIGRTMIN; sig <= SIGRTMAX; sig++)
		sigaddset(set, sig);
	pthread_sigmask(SIG_BLOCK, set, NULL);
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigemptyset(&dfl.sa_mask);
	for (sig = 1; sig < NSIG; sig++)
		if (sigismember(set, sig) == 1)
			sigaction(sig, &dfl, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* " from pid N (uid U)" when a process sent it. */
static void sig_sender(const siginfo_t *info, char *out, size_t cap)
{
	out[0] = '\0';
	if (info->si_code == SI_USER || info->si_code == SI_QUEUE || info->si_code == SI_TKILL)
		snprintf(out, cap, " from pid %ld (uid %ld)", (long)info->si_pid, (long)info->si_uid);
}

/* Log every ignored signal, at most one line per signal a second (a flood
 * is counted, and the count logged when its second is over), until a stop
 * signal or SIGHUP comes: that one is returned. */
static uint64_t watchdog_usec;
static int64_t watchdog_due;
static broker *watchdog_broker;
static void watchdog_tick(broker *b);

static int wait_for_signal(const sigset_t *set)
{
	static zkw__log_limit limits[NSIG];
	char name[32], from[64];

	for (;;) {
		const struct sig_rule *rule;
		int64_t due = INT64_MAX, now;
		unsigned missed;
		siginfo_t info;
		int sig;

		for (sig = 1; sig < NSIG; sig++)
			if (zkw__log_limit_due(&limits[sig]) < due)
				due = zkw__log_limit_due(&limits[sig]);
		if (watchdog_usec) {
			if (zkw_clock_mono_ms() >= watchdog_due) {
				watchdog_tick(watchdog_broker);
				watchdog_due = zkw_clock_mono_ms() + (int64_t)(watchdog_usec / 2000);
			}
			if (watchdog_due < due)
				due = watchdog_due;
		}
		if (due == INT64_MAX) {
			sig = sigwaitinfo(set, &info);
		} else {
			int64_t left = due - zkw_clock_mono_ms();
			struct timespec ts = {0, 0};

			if (left > 0) {
				ts.tv_sec = left / 1000;
				ts.tv_nsec = (left % 1000) * 1000000L;
			}
			sig = sigtimedwait(set, &info, &ts);
		}
		now = zkw_clock_mono_ms();
		for (int s = 1; s < NSIG; s++)
			if (zkw__log_limit_flush(&limits[s], now, &missed)) {
				sig_rule(s, name, sizeof(name));
				zkw__log_printf(ZKW_LOG_WARN, "received %s %u more time%s: ignored", name,
				                missed, missed == 1 ? "" : "s");
			}
		if (sig <= 0 || sig >= NSIG)
			continue; /* EAGAIN (a count was due) or EINTR */
		rule = sig_rule(sig, name, sizeof(name));
		sig_sender(&info, from, sizeof(from));
		if (rule->stops) {
			zkw__log_printf(ZKW_LOG_INFO, "stopping on %s%s", name, from);
			return sig;
		}
		if (sig == SIGHUP) {
			zkw__log_printf(ZKW_LOG_INFO, "reloading the configuration on SIGHUP%s", from);
			return sig;
		}
		/* Counts were flushed above: missed is 0 here. */
		if (zkw__log_limit_event(&limits[sig], now, &missed))
			zkw__log_printf(ZKW_LOG_WARN, "received %s%s: ignored%s", name, from,
			                rule->note ? rule->note : "");
	}
}

/* ---- systemd (Type=notify) ---------------------------------------------
 *
 * sd_notify(3) (notify.h: libsystemd, loaded only under a service manager)
 * does nothing without $NOTIFY_SOCKET: a broker started by hand pays
 * nothing. READY=1 once every configured watch has been evaluated
 * (valid, or invalid with its reason) and the socket listens; RELOADING=1
 * and READY=1 around a reload; STOPPING=1 at the stop; STATUS= says what
 * the broker holds; WATCHDOG=1 every half WatchdogSec, only while the
 * session answers its lock (a broker stuck on it is restarted). */

struct status_req {
	broker *b;
	const char *state;
};

static void notify_status_now(void *arg)
{
	const struct status_req *q = arg;
	broker *b = q->b;
	const char *state = q->state;
	unsigned valid = 0;
	int64_t id = 0;
	bool connected = zkw_session_identity(b->session, &id, NULL) == 0;

	for (size_t i = 0; i < b->nwatches; i++)
		valid += __atomic_load_n(&b->watches[i]->pub_valid, __ATOMIC_RELAXED);
	/* "not connected", not "unreachable": right after a start without
	 * valid init, no server has been tried yet. */
	zkw__notify("%sSTATUS=serving: %zu watch%s (%u valid, %zu on demand), ZooKeeper %s", state,
	            b->nwatches, b->nwatches == 1 ? "" : "es", valid, b->ndemand,
	            connected ? "connected" : "not connected");
}

/* Where the watch table may be read (the control thread when it runs: a
 * control thread that no longer answers stops the watchdog too). */
static void notify_status(broker *b, const char *state)
{
	struct status_req q = {b, state};

	control_call(notify_status_now, &q);
}

/* Wait until every watch has been evaluated, at most the init timeout; a
 * stop signal pending ends the wait early (it is taken afterwards). */
static void await_first_evaluations(broker *b, const sigset_t *set)
{
	int64_t deadline = zkw_clock_mono_ms() + b->cli.session.init_timeout_ms;

	pthread_mutex_lock(&pub_lock);
	for (;;) {
		size_t pending = 0;
		sigset_t now;
		struct timespec ts;

		for (size_t i = 0; i < b->nwatches; i++)
			pending += !__atomic_load_n(&b->watches[i]->pub_evaluated, __ATOMIC_ACQUIRE);
		if (!pending || zkw_clock_mono_ms() >= deadline)
			break;
		if (sigpending(&now) == 0)
			for (int sig = 1; sig < NSIG; sig++)
				if (sigismember(set, sig) == 1 && sigismember(&now, sig) == 1 &&
				    sig != SIGHUP)
					goto out;
		/* Slices of 100 ms: a stop signal is only pending, never woken for. */
		ts = zkw_clock_deadline_ms(CLOCK_REALTIME, 100);
		pthread_cond_timedwait(&evaluated_cond, &pub_lock, &ts);
	}
out:
	pthread_mutex_unlock(&pub_lock);
}

static void watchdog_tick(broker *b)
{
	/* zkw_session_identity takes the session lock: a session stuck on it
	 * stops the pings, and systemd restarts the broker. */
	notify_status(b, "WATCHDOG=1\n");
}

/* ---- reload (docs/design.md, "Reload (SIGHUP)") ----------------------- */

static bool same_text(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* What a running broker keeps until it restarts: the next configuration
 * gets the running values, and the log says what was not applied. */
static void keep_restart_settings(const zkw_cli *run, zkw_cli *next)
{
	struct {
		bool changed;
		const char *what;
	} fixed[] = {
	        {!same_text(run->hosts, next->hosts), "zookeeper"},
	        {run->session.session_timeout_ms != next->session.session_timeout_ms ||
	                 run->session.init_timeout_ms != next->session.init_timeout_ms ||
	                 run->session.valid_init != next->session.valid_init ||
	                 run->session.reconcile_s != next->session.reconcile_s ||
	                 run->session.reconcile_rate != next->session.reconcile_rate ||
	                 run->session.reconnect_max_ms != next->session.reconnect_max_ms,
	         "the session settings"},
	        {!same_text(run->socket_path, next->socket_path) || run->socket_mode != next->socket_mode ||
	                 run->socket_group != next->socket_group,
	         "the socket's path, mode or group"},
	        {run->segment.mode != next->segment.mode || run->segment.group != next->segment.group,
	         "the segments' mode or group"},
	        {run->unlink_on_exit != next->unlink_on_exit, "unlink-on-exit"},
	        {!same_text(run->state_dir, next->state_dir), "state-dir"},
	        {!same_text(run->session.credentials_from, next->session.credentials_from) ||
	                 run->session.ncredentials != next->session.ncredentials,
	         "auth-file"},
	        {run->session.nacl != next->session.nacl, "acl"},
	};

	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		if (fixed[i].changed)
			zkw__log_printf(ZKW_LOG_WARN,
			                "reload: %s changed: needs a restart, the running value stays",
			                fixed[i].what);
	/* The running values, copied into next (run is freed after the
	 * swap): the scalars as they are, the strings into next's keeping.
	 * The session's pointers (credentials, ACL, hooks) were used when it
	 * opened; next keeps its own, compared above. */
	next->hosts = zkw__cli_keep(next, run->hosts);
	next->session.session_timeout_ms = run->session.session_timeout_ms;
	next->session.init_timeout_ms = run->session.init_timeout_ms;
	next->session.valid_init = run->session.valid_init;
	next->session.reconcile_s = run->session.reconcile_s;
	next->session.reconcile_rate = run->session.reconcile_rate;
	next->session.reconnect_max_ms = run->session.reconnect_max_ms;
	next->socket_path = zkw__cli_keep(next, run->socket_path);
	next->socket_mode = run->socket_mode;
	next->socket_group = run->socket_group;
	next->segment = run->segment;
	next->unlink_on_exit = run->unlink_on_exit;
	next->state_dir = zkw__cli_keep(next, run->state_dir);
}

struct reload {
	broker *b;
	zkw_cli next; /* becomes b->cli; the old one is freed */
	unsigned added, removed, recreated, kept, demoted;
};

static const zkw_cli_watch *next_watch(const zkw_cli *c, const char *path, bool pointer, bool bundle)
{
	for (int i = 0; i < c->nwatches; i++)
		if (c->watches[i].pointer == pointer && c->watches[i].bundle == bundle &&
		    strcmp(c->watches[i].path, path) == 0)
			return &c->watches[i];
	return NULL;
}

/* Does the running watch w serve what c describes, segment and all? */
static bool same_watch(const broker_watch *w, const zkw_cli_watch *c)
{
	return strcmp(w->shm, c->shm) == 0 && w->capacity == c->capacity && w->ensure == c->ensure &&
	       w->mode == c->mode && w->group_set == c->group_set &&
	       (!w->group_set || w->group == c->group) && zkw__cli_same_rules(&w->rules, &c->rules);
}

/* Runs where the watch table may change (the control thread, or main when
 * there is none). */
static void reload_apply(void *arg)
{
	struct reload *r = arg;
	broker *b = r->b;
	zkw_cli old;
	char why[512];

	/* Watches the file no longer has, or has otherwise. */
	for (size_t i = 0; i < b->nwatches;) {
		broker_watch *w = b->watches[i];
		const zkw_cli_watch *nw =
		        w->permanent ? next_watch(&r->next, w->path, w->pointer, w->bundle) : NULL;

		if (!w->permanent || (nw && same_watch(w, nw))) {
			r->kept += w->permanent;
			i++;
			continue;
		}
		if (!nw && w->subscribers) {
			/* Subscribers use it: it lives on as a watch on demand. */
			w->permanent = false;
			b->ndemand++;
			r->demoted++;
			zkw__log_printf(ZKW_LOG_INFO,
			                "reload: %s is no longer configured; kept on demand for its %u "
			                "subscriber%s",
			                w->path, w->subscribers, w->subscribers == 1 ? "" : "s");
			i++;
			continue;
		}
		if (!nw && state_store) { /* gone for good: so is its cached copy */
			zkw_state_key key;

			state_key(w, &key);
			zkw_state_remove(state_store, &key);
		}
		broker_watch_remove(b, w,
		                    nw ? "Watch re-created: its configuration changed"
		                       : "Watch removed from the configuration");
		r->removed++;
		/* b->watches[i] now holds another watch: look at it next. */
	}
	/* Watches new to the file (or re-created above). */
	for (int i = 0; i < r->next.nwatches; i++) {
		const zkw_cli_watch *c = &r->next.watches[i];
		broker_watch *w = broker_watch_find(b, c->path, c->pointer, c->bundle);

		if (w && w->permanent)
			continue;
		if (w && same_watch(w, c)) {
			w->permanent = true; /* a watch on demand, now configured */
			b->ndemand--;
			r->kept++;
			continue;
		}
		if (w)
			broker_watch_remove(b, w, "Watch re-created: now configured");
		if (broker_watch_add_cfg(b, c, &w, why, sizeof(why)) < 0) {
			zkw__log_printf(ZKW_LOG_ERROR, "reload: %s", why);
			continue;
		}
		if (broker_watch_start(b, w) < 0) {
			broker_watch_remove(b, w, "Watch could not start");
			continue;
		}
		r->added++;
	}
	/* The socket's policy applies from the next request on. */
	old = b->cli;
	b->cli = r->next;
	zkw__cli_free(&old);
}

/* SIGHUP: read the configuration again (argv as at start: the command line
 * keeps overriding the file) and apply the difference. A refused file is
 * logged and changes nothing. */
static void reload_config(broker *b, int argc, char **argv)
{
	struct reload r = {.b = b};
	char why[1024];

	if (!b->cli.config_path) {
		zkw__log_printf(ZKW_LOG_WARN, "reload: no configuration file (--config): nothing to reload");
		return;
	}
	if (zkw__cli_parse(&r.next, argc, argv, why, sizeof(why)) < 0) {
		zkw__log_printf(ZKW_LOG_ERROR, "reload refused, the running configuration stays: %s", why);
		zkw__cli_free(&r.next);
		return;
	}
	r.next.session.log = zkw__log_sink;
	keep_restart_settings(&b->cli, &r.next);
	zkw__notify("RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)zkw_clock_mono_ms() * 1000ull);
	control_call(reload_apply, &r);
	notify_status(b, "READY=1\n");
	zkw__log_printf(ZKW_LOG_INFO,
	                "reloaded %s: %u watch%s added, %u removed or re-created, %u unchanged%s",
	                b->cli.config_path, r.added, r.added == 1 ? "" : "es", r.removed, r.kept,
	                r.demoted ? " (some kept on demand)" : "");
}

/* ---- main ------------------------------------------------------------- */

int main(int argc, char **argv)
{
	static broker b;
	zkw_session_options session_opt;
	char why[512] = "";
	sigset_t set;
	int i, rc;

	if (zkw__cli_parse(&b.cli, argc, argv, why, sizeof(why)) < 0) {
		fprintf(stderr, "zkw-broker: %s (try --help)\n", why);
		zkw__cli_free(&b.cli);
		return EXIT_USAGE;
	}
	if (b.cli.help || b.cli.version || b.cli.check_config) {
		if (b.cli.help)
			zkw__cli_usage(stdout);
		else if (b.cli.version)
			printf("zkw-broker %s\n", ZKW_VERSION);
		else
			zkw__cli_print(stdout, &b.cli);
		zkw__cli_free(&b.cli);
		return fflush(stdout) == 0 ? 0 : 1;
	}
	zkw__log_verbose = b.cli.verbose;
	b.cli.session.log = zkw__stats_log_sink; /* the log, and the last error in the counters */
	b.cli.session.count = zkw__stats_session_count;
	b.started_ms = zkw_clock_mono_ms();
	arm_fault_injection();

	/* Every thread (ZooKeeper's, the watcher's, the control thread)
	 * inherits a mask with the signals blocked; the main thread collects
	 * them with sigwaitinfo. */
	signals_block(&set);

	zkw__log_printf(ZKW_LOG_INFO, "starting: ZooKeeper %s, %d watch%s, session timeout %d ms%s%s",
	                b.cli.hosts, b.cli.nwatches, b.cli.nwatches == 1 ? "" : "es",
	                b.cli.session.session_timeout_ms, b.cli.socket_path ? ", socket " : "",
	                b.cli.socket_path ? b.cli.socket_path : "");
	rc = raise_fd_limit(&b);
	if (zkw__stats_open(b.cli.socket_path, b.cli.segment.mode, b.cli.segment.group, why, sizeof(why)) < 0)
		zkw__log_printf(ZKW_LOG_WARN, "%s; running without them", why);
	state_open(&b);
	for (i = 0; i < b.cli.nwatches && rc == 0; i++) {
		const zkw_cli_watch *c = &b.cli.watches[i];
		broker_watch *w;

		rc = broker_watch_add_cfg(&b, c, &w, why, sizeof(why));
		if (rc < 0)
			zkw__log_printf(ZKW_LOG_ERROR, "%s", why);
	}
	/* Cached copies are published: a ZooKeeper that does not answer is
	 * what they are for, not a reason to stop (valid init waived). */
	session_opt = b.cli.session;
	if (rc == 0 && b.cold_starts && session_opt.valid_init) {
		zkw__log_printf(ZKW_LOG_INFO,
		                "%zu watch%s serve%s a cached copy: the broker keeps running if ZooKeeper "
		                "does not answer within %d ms",
		                b.cold_starts, b.cold_starts == 1 ? "" : "es", b.cold_starts == 1 ? "s" : "",
		                b.cli.session.init_timeout_ms);
		session_opt.valid_init = false;
	}
	if (rc == 0 && (rc = zkw_session_open(&b.session, b.cli.hosts, &session_opt, why, sizeof(why))) < 0)
		zkw__log_printf(ZKW_LOG_ERROR, "%s", why);
	for (size_t k = 0; k < b.nwatches && rc == 0; k++)
		rc = broker_watch_start(&b, b.watches[k]);
	if (rc == 0)
		await_first_evaluations(&b, &set);
	if (rc == 0 && b.cli.socket_path)
		rc = control_start(&b);
	if (rc == 0) {
		notify_status(&b, "READY=1\n");
		watchdog_usec = zkw__notify_watchdog_usec();
		watchdog_broker = &b;
		watchdog_due = zkw_clock_mono_ms();
	}
	while (rc == 0 && wait_for_signal(&set) == SIGHUP)
		reload_config(&b, argc, argv);
	zkw__notify("STOPPING=1");
	control_stop();               /* no watch added or removed after this */
	zkw_session_close(b.session); /* no publish_state after this returns */
	stop_publishing(&b);
	state_close();
	zkw__stats_close(); /* every counting thread is gone */
	zkw__cli_free(&b.cli);
	if (rc)
		return 1;
	zkw__log_printf(ZKW_LOG_INFO, "stopped%s", b.cli.unlink_on_exit ? ", segments removed" : "");
	return 0;
}
