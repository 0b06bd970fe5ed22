/* SPDX-License-Identifier: Apache-2.0 */
/* test_watcher.c - the watcher library against a real ZooKeeper server.
 *
 * One test per item of the watch contract (docs/design.md, "The watch contract", items 1-11), the
 * seed's three defects (short outage, node created after start, pointer
 * target deleted and recreated) and the rough edges (exactly-once, order,
 * binary, null data, size limit, ACL, bad hosts, close, leaks).
 *
 * Synchronisation is by events: every on_state / handler call is recorded
 * under a mutex and tests wait for an expected state with a bounded timeout
 * and a message saying what was expected and what was seen. The only sleeps
 * prove that nothing happens (no duplicate delivery); each says so.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <zookeeper/zookeeper.h>

#include "zk/internal.h" /* test hooks: zkw__watch_forget_zk_watches, zkw__session_* */
#include "itest.h"
#include "zkh.h"
#include <zkw/watcher.h>
#include <zkw_clock.h>
#include <zkw_zk.h>

#define WAIT_MS 15000
/* Session timeout for most tests: the harness's tickTime is short, so the
 * server grants it; a dead server is noticed in 2/3 of it. */
#define SESSION_MS 4000

static zkh_cluster *zk;
static const char *hosts;

#define now_ms()     zkw_clock_mono_ms()
#define sleep_ms(ms) zkw_clock_sleep_ms(ms)
/* For the test's own condition variables (default clock: CLOCK_REALTIME). */
#define deadline_after(ms) zkw_clock_deadline_ms(CLOCK_REALTIME, (ms))

static int count_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

static int count_threads(void)
{
	return count_dir("/proc/self/task");
}

/* On a thread-count mismatch: who is there (name, state, kernel wait). */
static void dump_threads(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;

	while (d && (e = readdir(d))) {
		char path[300], comm[64] = "", wchan[64] = "";
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
		if ((f = fopen(path, "r"))) {
			if (!fgets(comm, sizeof comm, f))
				comm[0] = 0;
			fclose(f);
		}
		snprintf(path, sizeof path, "/proc/self/task/%s/wchan", e->d_name);
		if ((f = fopen(path, "r"))) {
			if (!fgets(wchan, sizeof wchan, f))
				wchan[0] = 0;
			fclose(f);
		}
		comm[strcspn(comm, "\n")] = 0;
		print_message("  task %s %s wchan=%s\n", e->d_name, comm, wchan);
	}
	if (d)
		closedir(d);
}

/* A joined thread leaves /proc/self/task a moment after pthread_join
 * returns (the kernel clears its tid before it is reaped), so thread counts
 * are read as "settled": the same for several samples in a row, or equal to
 * the expected value within a bound. There is no event for a thread's end. */
static int settled_threads(void)
{
	int n = count_threads(), same = 0;

	for (int i = 0; i < 100 && same < 5; i++) {
		int m;

		sleep_ms(10); /* sampling interval, not synchronisation */
		m = count_threads();
		same = m == n ? same + 1 : 0;
		n = m;
	}
	return n;
}

static int thread_target;

static bool threads_at_target(void *arg)
{
	(void)arg;
	return count_threads() == thread_target;
}

static void assert_threads_(int expect, int line)
{
	int n;

	thread_target = expect;
	zkh_eventually(threads_at_target, NULL, 3000);
	n = count_threads();
	if (n != expect) {
		dump_threads();
		fail_msg("line %d: %d threads, expected %d", line, n, expect);
	}
}

#define ASSERT_THREADS(n) assert_threads_((n), __LINE__)

static int count_fds(void)
{
	return count_dir("/proc/self/fd") - 1; /* minus opendir's own */
}

/* Freeze the server and wait until every one of its threads is stopped:
 * kill(SIGSTOP) returns before a thread running on the other core has
 * stopped, and such a thread may still answer one request. */
static bool all_stopped(void *arg)
{
	char dir[64], path[384], buf[512];
	struct dirent *e;
	bool stopped = true;
	DIR *d;

	snprintf(dir, sizeof dir, "/proc/%d/task", *(int *)arg);
	d = opendir(dir);
	if (!d)
		return false;
	while (stopped && (e = readdir(d))) {
		FILE *f;
		char *state;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "%s/%s/stat", dir, e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue; /* thread gone */
		if (fgets(buf, sizeof buf, f) && (state = strrchr(buf, ')')))
			stopped = state[2] == 'T' || state[2] == 't';
		fclose(f);
	}
	closedir(d);
	return stopped;
}

static void pause_server(void)
{
	int pid = zkh_pid(zk, 0);

	assert_int_equal(zkh_pause(zk), 0);
	assert_true(zkh_eventually(all_stopped, &pid, 5000));
}

/* ------------------------------------------- session layer: state recorder */

struct rec {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int calls;
	int disconnects;    /* transitions to connected == false */
	int serial_changes; /* content_serial bumps seen */
	bool closed;        /* set after zkw_session_close / zkw_watch_remove returned */
	int calls_after_close;
	int confirm_only_calls;
	int confirm_violations; /* confirm_only calls that changed more than confirmed_ns */
	bool valid, connected;
	char *content;
	size_t len;
	uint64_t serial;
	int32_t version;
	int64_t mzxid;
	char pointer[ZKW_POINTER_MAX];
	char error[ZKW_ERROR_MAX];
	uint64_t confirmed_ns;
};

static void rec_init(struct rec *r)
{
	memset(r, 0, sizeof *r);
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
	r->connected = true;
}

static void rec_destroy(struct rec *r)
{
	free(r->content);
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->cond);
}

static void rec_on_state(void *ctx, const zkw_watch_state *st)
{
	struct rec *r = ctx;

	pthread_mutex_lock(&r->lock);
	/* confirm_only: the same state as the previous call but confirmed_ns. */
	if (st->confirm_only) {
		r->confirm_only_calls++;
		if (r->calls == 0 || st->valid != r->valid || st->connected != r->connected ||
		    st->content_serial != r->serial || st->len != r->len ||
		    (st->len && memcmp(st->content, r->content, st->len) != 0) || st->version != r->version ||
		    st->mzxid != r->mzxid || strcmp(st->pointer, r->pointer) != 0 ||
		    strcmp(st->error, r->error) != 0 || st->confirmed_ns < r->confirmed_ns)
			r->confirm_violations++;
	}
	r->calls++;
	r->calls_after_close += r->closed;
	if (r->connected && !st->connected)
		r->disconnects++;
	if (st->content_serial != r->serial) {
		r->serial_changes++;
		free(r->content);
		r->content = malloc(st->len + 1);
		assert_non_null(r->content);
		assert_non_null(st->content);
		memcpy(r->content, st->content, st->len);
		r->content[st->len] = '\0';
		r->len = st->len;
	}
	/* The contract of the fields themselves. */
	assert_true(st->valid ? st->error[0] == '\0' : st->error[0] != '\0');
	assert_true(!st->valid || st->connected);
	assert_true(st->content_serial >= r->serial);
	r->valid = st->valid;
	r->connected = st->connected;
	r->serial = st->content_serial;
	r->version = st->version;
	r->mzxid = st->mzxid;
	r->confirmed_ns = st->confirmed_ns;
	snprintf(r->pointer, sizeof r->pointer, "%s", st->pointer);
	snprintf(r->error, sizeof r->error, "%s", st->error);
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

enum tri { ANY = 0, YES, NO };

struct want {
	enum tri valid, connected;
	const char *content; /* NULL = any */
	size_t len;          /* with bin: exact length of content */
	bool bin;
	const char *error;   /* prefix; NULL = any */
	const char *pointer; /* exact; NULL = any */
	int min_calls;       /* r->calls >= this */
	int min_disconnects;
};

static bool tri_ok(enum tri t, bool v)
{
	return t == ANY || (t == YES) == v;
}

static bool rec_matches(const struct rec *r, const struct want *w)
{
	size_t len = w->bin ? w->len : w->content ? strlen(w->content) : 0;

	return r->calls > 0 && tri_ok(w->valid, r->valid) && tri_ok(w->connected, r->connected) &&
	       (!w->content || (r->content && r->len == len && memcmp(r->content, w->content, len) == 0)) &&
	       (!w->error || strncmp(r->error, w->error, strlen(w->error)) == 0) &&
	       (!w->pointer || strcmp(r->pointer, w->pointer) == 0) && r->calls >= w->min_calls &&
	       r->disconnects >= w->min_disconnects;
}

static void rec_wait_(struct rec *r, struct want w, int ms, const char *what, int line)
{
	struct timespec ts = deadline_after(ms);
	bool ok;

	pthread_mutex_lock(&r->lock);
	while (!(ok = rec_matches(r, &w)))
		if (pthread_cond_timedwait(&r->cond, &r->lock, &ts) == ETIMEDOUT) {
			ok = rec_matches(r, &w);
			break;
		}
	if (!ok) {
		char msg[4096];

		snprintf(msg, sizeof msg,
		         "line %d: no state {%s} within %d ms; last state: calls=%d valid=%d connected=%d "
		         "len=%zu content='%.60s' serial=%llu pointer='%s' error='%s' disconnects=%d",
		         line, what, ms, r->calls, r->valid, r->connected, r->len,
		         r->content ? r->content : "(none)", (unsigned long long)r->serial, r->pointer,
		         r->error, r->disconnects);
		pthread_mutex_unlock(&r->lock);
		fail_msg("%s", msg);
	}
	pthread_mutex_unlock(&r->lock);
}

#define WAIT_STATE(r, ms, ...) rec_wait_((r), (struct want){__VA_ARGS__}, (ms), #__VA_ARGS__, __LINE__)

/* Read fields under the lock. */
static uint64_t rec_serial(struct rec *r)
{
	uint64_t v;

	pthread_mutex_lock(&r->lock);
	v = r->serial;
	pthread_mutex_unlock(&r->lock);
	return v;
}

static int rec_calls(struct rec *r)
{
	int v;

	pthread_mutex_lock(&r->lock);
	v = r->calls;
	pthread_mutex_unlock(&r->lock);
	return v;
}

static int rec_serial_changes(struct rec *r)
{
	int v;

	pthread_mutex_lock(&r->lock);
	v = r->serial_changes;
	pthread_mutex_unlock(&r->lock);
	return v;
}

static zkw_session *open_session_opt(const char *h, zkw_session_options *o)
{
	char why[512] = "";
	zkw_session *s;
	int err = zkw_session_open(&s, h, o, why, sizeof why);

	if (err < 0)
		fail_msg("zkw_session_open(%s): %d %s", h, err, why);
	return s;
}

static zkw_session *open_session(void)
{
	zkw_session_options o;

	zkw_session_options_init(&o);
	o.session_timeout_ms = SESSION_MS;
	o.valid_init = true;
	return open_session_opt(hosts, &o);
}

static zkw_watch *watch(zkw_session *s, const char *path, struct rec *r, bool pointer, size_t max_len)
{
	zkw_watch_options o = {.pointer = pointer, .max_len = max_len, .on_state = rec_on_state, .ctx = r};
	zkw_watch *w = NULL;

	assert_int_equal(zkw_session_watch(s, path, &o, &w), 0);
	assert_non_null(w);
	return w;
}

/* What a failing test leaves running - a session whose on_state contexts
 * live in the failed test's frame, a writer thread (below) - is stopped by
 * each_teardown, so the next tests do not run on a corrupted heap. */
static zkw_session *cleanup_session;

static void close_session(zkw_session *s, struct rec *r)
{
	if (cleanup_session == s)
		cleanup_session = NULL;
	zkw_session_close(s);
	pthread_mutex_lock(&r->lock);
	r->closed = true;
	pthread_mutex_unlock(&r->lock);
}

/* Remove a watch; from then on r counts calls as calls_after_close. */
static void remove_watch(zkw_watch *w, struct rec *r)
{
	zkw_watch_remove(w);
	pthread_mutex_lock(&r->lock);
	r->closed = true;
	pthread_mutex_unlock(&r->lock);
}

static int rec_int(struct rec *r, const int *field)
{
	int v;

	pthread_mutex_lock(&r->lock);
	v = *field;
	pthread_mutex_unlock(&r->lock);
	return v;
}

static struct writer *cleanup_writer;

static zkw_session *open_session_cleanup(void)
{
	cleanup_session = open_session();
	return cleanup_session;
}

static void close_session_cleanup(zkw_session *s)
{
	cleanup_session = NULL;
	zkw_session_close(s);
}

/* A writer thread: its own handle, setting its nodes round-robin to
 * "<path> <n>" as fast as the server answers, until stopped. */
struct writer {
	pthread_t thread;
	const char *const *paths;
	int npaths;
	bool stop; /* atomic */
	unsigned long writes;
	char last[8][64]; /* the last value written to each path */
};

static void *writer_main(void *arg)
{
	struct writer *wr = arg;
	char why[256];
	zhandle_t *zh;

	if (zkw_zk_connect(&zh, hosts, WAIT_MS, SESSION_MS, why, sizeof why) < 0) {
		print_error("writer: %s\n", why);
		return NULL;
	}
	while (!__atomic_load_n(&wr->stop, __ATOMIC_ACQUIRE)) {
		int i = (int)(wr->writes % (unsigned long)wr->npaths);
		char v[64];

		snprintf(v, sizeof v, "%s %lu", wr->paths[i], wr->writes);
		if (zkw_zk_set(zh, wr->paths[i], v, (int)strlen(v), why, sizeof why) == 0)
			snprintf(wr->last[i], sizeof wr->last[i], "%s", v);
		wr->writes++;
	}
	zkw_zk_close(zh);
	return NULL;
}

static void writer_start(struct writer *wr, const char *const *paths, int npaths)
{
	memset(wr, 0, sizeof *wr);
	assert_true(npaths <= 8);
	wr->paths = paths;
	wr->npaths = npaths;
	for (int i = 0; i < npaths; i++) {
		itest_put(paths[i], "start");
		snprintf(wr->last[i], sizeof wr->last[i], "start");
	}
	assert_int_equal(pthread_create(&wr->thread, NULL, writer_main, wr), 0);
	cleanup_writer = wr;
}

static void writer_join(struct writer *wr)
{
	__atomic_store_n(&wr->stop, true, __ATOMIC_RELEASE);
	pthread_join(wr->thread, NULL);
	cleanup_writer = NULL;
}

/* Stop and join; the last values are in wr->last. */
static void writer_stop(struct writer *wr)
{
	writer_join(wr);
	assert_true(wr->writes > 0);
}

struct counts {
	unsigned active, draining, spare;
};

static struct counts watch_counts(zkw_session *s)
{
	struct counts c;

	zkw__session_watch_counts(s, &c.active, &c.draining, &c.spare);
	return c;
}

static bool nothing_draining(void *s)
{
	return watch_counts(s).draining == 0;
}

static int64_t expired_from;

static bool new_session_pred(void *s)
{
	int64_t id;
	char pw[16];

	return zkw_session_identity(s, &id, pw) == 0 && id != expired_from;
}

/* Expire our session for real: a second handle attaches to the same session
 * id and password and closes it, so the server ends the session under us.
 * Our client may win the session back before the close is sent (then the
 * close is not sent at all), so try again a bounded number of times. */
static void expire_session(zkw_session *s)
{
	clientid_t cid;

	assert_int_equal(zkw_session_identity(s, &cid.client_id, cid.passwd), 0);
	expired_from = cid.client_id;
	for (int attempt = 0; attempt < 5; attempt++) {
		itest_zk_session_end(&cid, SESSION_MS);
		/* No event carries the session id: poll it (bounded). */
		if (zkh_eventually(new_session_pred, s, 3000))
			return;
	}
	fail_msg("the session 0x%llx was never replaced", (unsigned long long)cid.client_id);
}

/* ---------------------------------------------- seed layer: event recorder */

struct ev {
	char kind; /* 'C' config, 'V' valid, 'E' error */
	bool valid;
	char *text;
	size_t len;
};

struct evlog {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int n;
	struct ev ev[512];
	int handler_sleep_ms; /* config handler blocks this long */
	bool in_handler;
	bool closed; /* set after zkw_watcher_close returned */
	int after_close;
	zkw_watcher *close_me; /* closed from inside the next config handler */
};

static void ev_init(struct evlog *l)
{
	memset(l, 0, sizeof *l);
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->cond, NULL);
}

static void ev_destroy(struct evlog *l)
{
	for (int i = 0; i < l->n; i++)
		free(l->ev[i].text);
	pthread_mutex_destroy(&l->lock);
	pthread_cond_destroy(&l->cond);
}

static void ev_push(struct evlog *l, char kind, bool valid, const void *text, size_t len)
{
	pthread_mutex_lock(&l->lock);
	assert_true(l->n < (int)(sizeof l->ev / sizeof l->ev[0]));
	l->after_close += l->closed;
	l->ev[l->n].kind = kind;
	l->ev[l->n].valid = valid;
	l->ev[l->n].text = malloc(len + 1);
	assert_non_null(text); /* the library never hands out NULL, even empty */
	memcpy(l->ev[l->n].text, text, len);
	l->ev[l->n].text[len] = '\0';
	l->ev[l->n].len = len;
	l->n++;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
}

static void h_valid(void *ctx, bool valid)
{
	ev_push(ctx, 'V', valid, "", 0);
}

static void h_config(void *ctx, const void *content, size_t len)
{
	struct evlog *l = ctx;
	zkw_watcher *close_me;
	int sleep_for;

	pthread_mutex_lock(&l->lock);
	l->in_handler = true;
	sleep_for = l->handler_sleep_ms;
	close_me = l->close_me;
	l->close_me = NULL;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
	if (sleep_for)
		sleep_ms(sleep_for); /* a slow user handler, on purpose */
	ev_push(l, 'C', false, content, len);
	if (close_me)
		zkw_watcher_close(close_me); /* close from inside a handler */
	pthread_mutex_lock(&l->lock);
	l->in_handler = false;
	pthread_mutex_unlock(&l->lock);
}

static void h_error(void *ctx, const char *message)
{
	ev_push(ctx, 'E', false, message, strlen(message));
}

static const zkw_handlers *handlers(struct evlog *l)
{
	static __thread zkw_handlers h;

	h = (zkw_handlers){.valid = h_valid, .config = h_config, .error = h_error, .ctx = l};
	return &h;
}

static bool ev_is(const struct ev *e, char kind, const char *text, int valid)
{
	if (e->kind != kind)
		return false;
	if (kind == 'V')
		return e->valid == (valid != 0);
	if (kind == 'E')
		return !text || strncmp(e->text, text, strlen(text)) == 0;
	return !text || (e->len == strlen(text) && memcmp(e->text, text, e->len) == 0);
}

static void ev_dump(struct evlog *l, char *buf, size_t cap)
{
	size_t off = 0;

	buf[0] = '\0';
	for (int i = 0; i < l->n && off < cap; i++) {
		const struct ev *e = &l->ev[i];
		int n = snprintf(buf + off, cap - off, " [%d]%c:%.40s", i, e->kind,
		                 e->kind == 'V' ? (e->valid ? "true" : "false") : e->text);
		off += n > 0 ? (size_t)n : 0;
	}
}

/* Wait for an event of kind (text prefix / valid) at index >= from; returns
 * its index. */
static int ev_wait_(struct evlog *l, int from, char kind, const char *text, int valid, int ms, int line)
{
	struct timespec ts = deadline_after(ms);
	int found = -1;

	pthread_mutex_lock(&l->lock);
	for (;;) {
		for (int i = from; i < l->n && found < 0; i++)
			if (ev_is(&l->ev[i], kind, text, valid))
				found = i;
		if (found >= 0 || pthread_cond_timedwait(&l->cond, &l->lock, &ts) == ETIMEDOUT)
			break;
	}
	if (found < 0) {
		for (int i = from; i < l->n && found < 0; i++)
			if (ev_is(&l->ev[i], kind, text, valid))
				found = i;
	}
	if (found < 0) {
		char dump[4096];

		ev_dump(l, dump, sizeof dump);
		pthread_mutex_unlock(&l->lock);
		fail_msg("line %d: no %c(%s) from event %d within %d ms; events:%s", line, kind,
		         kind == 'V' ? (valid ? "true" : "false")
		         : text      ? text
		                     : "*",
		         from, ms, dump);
	}
	pthread_mutex_unlock(&l->lock);
	return found;
}

#define EV_WAIT(l, from, kind, text, valid) ev_wait_((l), (from), (kind), (text), (valid), WAIT_MS, __LINE__)

static int ev_count(struct evlog *l)
{
	int n;

	pthread_mutex_lock(&l->lock);
	n = l->n;
	pthread_mutex_unlock(&l->lock);
	return n;
}

static int ev_count_kind(struct evlog *l, char kind)
{
	int n = 0;

	pthread_mutex_lock(&l->lock);
	for (int i = 0; i < l->n; i++)
		n += l->ev[i].kind == kind;
	pthread_mutex_unlock(&l->lock);
	return n;
}

/* Assert the events from index from are exactly the given sequence. */
static void ev_expect_seq_(struct evlog *l, int from, int line, const char *seq, ...)
{
	va_list ap;
	char dump[4096];
	bool ok = true;
	int i = from;

	pthread_mutex_lock(&l->lock);
	va_start(ap, seq);
	for (const char *k = seq; *k; k++, i++) {
		const char *text = *k == 'V' ? NULL : va_arg(ap, const char *);
		int valid = *k == 'V' ? va_arg(ap, int) : 0;

		if (i >= l->n || !ev_is(&l->ev[i], *k, text, valid))
			ok = false;
	}
	va_end(ap);
	ok = ok && i == l->n;
	ev_dump(l, dump, sizeof dump);
	pthread_mutex_unlock(&l->lock);
	if (!ok)
		fail_msg("line %d: expected events '%s' from %d; got:%s", line, seq, from, dump);
}

#define EV_EXPECT(l, from, ...) ev_expect_seq_((l), (from), __LINE__, __VA_ARGS__)

static zkw_watcher *open_watcher(const char *path, struct evlog *l, unsigned flags)
{
	zkw_session_options o;
	char why[512] = "";
	zkw_watcher *w;

	zkw_session_options_init(&o);
	o.session_timeout_ms = SESSION_MS;
	if (zkw_watcher_open_ex(&w, hosts, path, l ? handlers(l) : NULL, flags | ZKW_WATCHER_VALID_INIT, &o,
	                        why, sizeof why) < 0)
		fail_msg("zkw_watcher_open(%s): %s", path, why);
	return w;
}

static void close_watcher(zkw_watcher *w, struct evlog *l)
{
	zkw_watcher_close(w);
	pthread_mutex_lock(&l->lock);
	l->closed = true;
	pthread_mutex_unlock(&l->lock);
}

/* ================================================================ tests */

/* 1. valid exactly when connected + node exists (+ pointer parses and its
 * target exists) + content fits. Each condition flips it alone. */
static void test_c1_valid_definition(void **state)
{
	struct rec r;
	zkw_session *s;

	(void)state;
	rec_init(&r);
	itest_put("/c1/node", "one");
	s = open_session();
	watch(s, "/c1/node", &r, false, 8);
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .connected = YES, .content = "one", .error = "");

	itest_delete("/c1/node"); /* node gone */
	WAIT_STATE(&r, WAIT_MS, .valid = NO, .connected = YES, .error = ZKW_ERR_NO_NODE ": /c1/node");
	itest_put("/c1/node", "two");
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .content = "two");
	itest_put("/c1/node", "too long!"); /* does not fit (9 > 8) */
	WAIT_STATE(&r, WAIT_MS, .valid = NO, .connected = YES, .error = ZKW_ERR_TOO_LARGE);
	itest_put("/c1/node", "fits");
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .content = "fits");
	close_session(s, &r);
	rec_destroy(&r);
}

/* 2. The last good content is never thrown away while invalid. */
static void test_c2_last_good_content_kept(void **state)
{
	struct rec r;
	zkw_session *s;
	int32_t version;
	int64_t mzxid;

	(void)state;
	rec_init(&r);
	itest_put("/c2/node", "good");
	s = open_session();
	watch(s, "/c2/node", &r, false, 0);
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .content = "good");
	version = r.version;
	mzxid = r.mzxid;
	assert_true(mzxid > 0);
	itest_delete("/c2/node");
	WAIT_STATE(&r, WAIT_MS, .valid = NO, .content = "good", .error = ZKW_ERR_NO_NODE);
	pthread_mutex_lock(&r.lock);
	assert_int_equal(r.version, version); /* stat of the kept content */
	assert_int_equal(r.mzxid, mzxid);
	assert_int_equal(r.serial, 1);
	pthread_mutex_unlock(&r.lock);
	close_session(s, &r);
	rec_destroy(&r);
}

/* 3. Exactly once, in order: config then valid(true); valid(false) then
 * error; an identical rewrite delivers nothing. */
static void test_c3_exactly_once_and_order(void **state)
{
	struct evlog l;
	zkw_watcher *w;
	int n;

	(void)state;
	ev_init(&l);
	itest_put("/c3/node", "A");
	w = open_watcher("/c3/node", &l, 0);
	EV_WAIT(&l, 0, 'V', NULL, 1);
	EV_EXPECT(&l, 0, "CV", "A", 1);

	n = ev_count(&l);
	itest_put("/c3/node", "A"); /* same bytes, new version */
	itest_put("/c3/node", "B");
	EV_WAIT(&l, n, 'C', "B", 0);
	sleep_ms(300);              /* prove nothing more arrives */
	EV_EXPECT(&l, n, "C", "B"); /* no config for the identical rewrite */

	n = ev_count(&l);
	itest_delete("/c3/node");
	EV_WAIT(&l, n, 'E', ZKW_ERR_NO_NODE, 0);
	EV_EXPECT(&l, n, "VE", 0, ZKW_ERR_NO_NODE ": /c3/node");

	n = ev_count(&l);
	itest_put("/c3/node", "B"); /* recreated with the same bytes: valid, no config */
	EV_WAIT(&l, n, 'V', NULL, 1);
	sleep_ms(300); /* prove no config follows */
	EV_EXPECT(&l, n, "V", 1);
	assert_true(zkw_watcher_is_valid(w));
	close_watcher(w, &l);
	assert_int_equal(l.after_close, 0);
	ev_destroy(&l);
}

/* 4 + seed defect 2: a node missing at start is noticed when created;
 * deleted and recreated, again. */
static void test_c4_node_created_after_start(void **state)
{
	struct evlog l;
	zkw_watcher *w;
	char buf[64];
	int n;

	(void)state;
	ev_init(&l);
	itest_delete("/c4/late");
	w = open_watcher("/c4/late", &l, 0);
	EV_WAIT(&l, 0, 'E', ZKW_ERR_NO_NODE ": /c4/late", 0);
	assert_false(zkw_watcher_is_valid(w));
	n = ev_count(&l);
	itest_put("/c4/late", "born");
	EV_WAIT(&l, n, 'V', NULL, 1);
	EV_EXPECT(&l, n, "CV", "born", 1);
	assert_int_equal(zkw_watcher_get_file_contents(w, false, buf, sizeof buf), 4);
	assert_memory_equal(buf, "born", 4);

	n = ev_count(&l);
	itest_delete("/c4/late");
	EV_WAIT(&l, n, 'E', ZKW_ERR_NO_NODE, 0);
	itest_put("/c4/late", "reborn");
	/* config(reborn) and valid(true) are one delivery: wait for its last
	 * call, not its first, before checking the whole sequence. */
	EV_WAIT(&l, n, 'V', NULL, 1);
	EV_EXPECT(&l, n, "VECV", 0, ZKW_ERR_NO_NODE, "reborn", 1);
	close_watcher(w, &l);
	ev_destroy(&l);
}

/* 4 + 7 + seed defect 3: pointer mode. Trailing newline trimmed; pointer
 * switch follows the new target and ignores the old one; target deleted and
 * recreated is noticed; bad pointer is invalid with the seed's error. */
static void test_c4_pointer_target_deleted_and_recreated(void **state)
{
	struct rec r;
	zkw_session *s;
	uint64_t serial;

	(void)state;
	rec_init(&r);
	itest_put("/c4p/a", "config A");
	itest_put("/c4p/b", "config B");
	itest_put("/c4p/ptr", "/c4p/a\n");
	s = open_session();
	watch(s, "/c4p/ptr", &r, true, 0);
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .content = "config A", .pointer = "/c4p/a");

	itest_put("/c4p/ptr", "  /c4p/b\r\n");
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .content = "config B", .pointer = "/c4p/b");
	serial = rec_serial(&r);
	itest_put("/c4p/a", "config A2"); /* the old target: no longer ours */
	sleep_ms(300);                    /* prove nothing is delivered */
	assert_int_equal(rec_serial(&r), serial);

	itest_delete("/c4p/b"); /* target deleted: invalid, content kept */
	WAIT_STATE(&r, WAIT_MS, .valid = NO, .content = "config B", .error = ZKW_ERR_NO_NODE ": /c4p/b");
	itest_put("/c4p/b", "config B2"); /* and recreated: noticed */
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .content = "config B2", .pointer = "/c4p/b");

	itest_put("/c4p/ptr", "c4p/a"); /* not absolute */
	WAIT_STATE(&r, WAIT_MS, .valid = NO, .error = ZKW_ERR_POINTER, .content = "config B2");
	itest_put("/c4p/ptr", "/c4p/../a");
	WAIT_STATE(&r, WAIT_MS, .valid = NO, .error = ZKW_ERR_POINTER ": '.' or '..'");
	itest_put("/c4p/ptr", "/c4p/a");
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .content = "config A2", .pointer = "/c4p/a");

	itest_put("/c4p/ptr", "/c4p/missing"); /* points at nothing */
	WAIT_STATE(&r, WAIT_MS, .valid = NO, .error = ZKW_ERR_NO_NODE ": /c4p/missing");
	itest_put("/c4p/missing", "found");
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .content = "found");

	itest_delete("/c4p/ptr"); /* the pointer itself gone */
	WAIT_STATE(&r, WAIT_MS, .valid = NO, .error = ZKW_ERR_NO_NODE ": /c4p/ptr", .content = "found");
	itest_put("/c4p/ptr", "/c4p/b");
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .content = "config B2");
	close_session(s, &r);
	rec_destroy(&r);
}

/* 5 + seed defect 1: a short outage (server frozen, session survives):
 * invalid with the seed's exact error, content kept, no deadlock; on
 * reconnect valid again with no duplicate config; new writes flow. */
static void test_c5_short_outage(void **state)
{
	struct evlog l;
	zkw_watcher *w;
	int64_t t0;
	int n;

	(void)state;
	ev_init(&l);
	itest_put("/c5/outage", "before");
	w = open_watcher("/c5/outage", &l, 0);
	EV_WAIT(&l, 0, 'V', NULL, 1);
	n = ev_count(&l);

	t0 = now_ms();
	pause_server();
	/* The client notices within 2/3 of the session timeout. */
	EV_WAIT(&l, n, 'E', ZKW_ERR_CONNECTION, 0);
	assert_false(zkw_watcher_is_valid(w));
	assert_int_equal(zkw_watcher_content_len(w, false), 6); /* kept */
	assert_int_equal(zkh_resume(zk), 0);
	print_message("outage noticed after %lld ms\n", (long long)(now_ms() - t0));
	EV_WAIT(&l, n, 'V', NULL, 1);
	EV_EXPECT(&l, n, "VEV", 0, ZKW_ERR_CONNECTION, 1);
	{
		char err[ZKW_ERROR_MAX];

		pthread_mutex_lock(&l.lock);
		snprintf(err, sizeof err, "%s", l.ev[n + 1].text);
		pthread_mutex_unlock(&l.lock);
		assert_string_equal(err, ZKW_ERR_CONNECTION); /* exactly the seed's text */
	}
	n = ev_count(&l);
	itest_put("/c5/outage", "after");
	EV_WAIT(&l, n, 'C', "after", 0);
	EV_EXPECT(&l, n, "C", "after");
	assert_int_equal(ev_count_kind(&l, 'C'), 2);
	close_watcher(w, &l);
	ev_destroy(&l);
}

/* 5: a real server restart (stop, start): converges, content kept meanwhile. */
static void test_c5_server_restart(void **state)
{
	struct rec r;
	zkw_session *s;
	int changes;

	(void)state;
	rec_init(&r);
	itest_put("/c5/restart", "v1");
	s = open_session();
	watch(s, "/c5/restart", &r, false, 0);
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .content = "v1");
	assert_int_equal(zkh_member_stop(zk, 0), 0);
	WAIT_STATE(&r, WAIT_MS, .valid = NO, .connected = NO, .error = ZKW_ERR_CONNECTION, .content = "v1");
	assert_false(zkw_session_ping(s));
	assert_int_equal(zkh_member_start(zk, 0), 0);
	WAIT_STATE(&r, 30000, .valid = YES, .connected = YES, .content = "v1");
	changes = rec_serial_changes(&r);
	itest_put("/c5/restart", "v2");
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .content = "v2");
	assert_int_equal(rec_serial_changes(&r), changes + 1);
	assert_true(zkw_session_ping(s));
	close_session(s, &r);
	rec_destroy(&r);
}

/* 5: session expiry for real: new session, every watch re-armed, state
 * converges, no duplicate delivery, no thread or descriptor leaked. */
static void test_c5_session_expiry(void **state)
{
	struct rec r1, r2;
	zkw_session *s;
	int64_t id1, id2;
	char pw[16];
	int threads, fds, changes;

	(void)state;
	rec_init(&r1);
	rec_init(&r2);
	itest_put("/c5x/a", "alpha");
	itest_put("/c5x/b", "/c5x/a");
	s = open_session();
	watch(s, "/c5x/a", &r1, false, 0);
	watch(s, "/c5x/b", &r2, true, 0);
	WAIT_STATE(&r1, WAIT_MS, .valid = YES, .content = "alpha");
	WAIT_STATE(&r2, WAIT_MS, .valid = YES, .content = "alpha");
	assert_int_equal(zkw_session_identity(s, &id1, pw), 0);
	threads = settled_threads();
	fds = count_fds();

	expire_session(s);
	WAIT_STATE(&r1, WAIT_MS, .min_disconnects = 1);
	WAIT_STATE(&r1, WAIT_MS, .valid = YES, .connected = YES, .content = "alpha");
	WAIT_STATE(&r2, WAIT_MS, .valid = YES, .connected = YES, .content = "alpha");
	assert_int_equal(zkw_session_identity(s, &id2, pw), 0);
	assert_true(id1 != id2);
	assert_int_equal(rec_serial_changes(&r1), 1); /* no duplicate delivery */
	assert_int_equal(rec_serial_changes(&r2), 1);
	ASSERT_THREADS(threads);
	assert_int_equal(count_fds(), fds);

	changes = rec_serial_changes(&r1);
	itest_put("/c5x/a", "beta"); /* watches re-armed on the new session */
	WAIT_STATE(&r1, WAIT_MS, .valid = YES, .content = "beta");
	WAIT_STATE(&r2, WAIT_MS, .valid = YES, .content = "beta");
	assert_int_equal(rec_serial_changes(&r1), changes + 1);
	close_session(s, &r1);
	assert_int_equal(r1.calls_after_close + r2.calls_after_close, 0);
	rec_destroy(&r1);
	rec_destroy(&r2);
}

/* 6: ensure creates the node and its parents, empty. */
static void test_c6_ensure(void **state)
{
	struct evlog l;
	zkw_watcher *w;
	char buf[16];
	int len = sizeof buf;

	(void)state;
	ev_init(&l);
	itest_delete("/c6");
	w = open_watcher("/c6/deep/er/node", &l, ZKW_WATCHER_ENSURE);
	EV_WAIT(&l, 0, 'V', NULL, 1);
	EV_EXPECT(&l, 0, "CV", "", 1); /* empty content, valid */
	assert_int_equal(zkh_get(hosts, "/c6/deep/er/node", buf, &len), ZOK);
	assert_int_equal(len, 0);
	close_watcher(w, &l);

	/* Two watchers ensuring the same path race on ZNODEEXISTS: both fine. */
	{
		struct evlog l2, l3;
		zkw_watcher *a, *b;

		ev_init(&l2);
		ev_init(&l3);
		itest_delete("/c6");
		a = open_watcher("/c6/race/node", &l2, ZKW_WATCHER_ENSURE);
		b = open_watcher("/c6/race/node", &l3, ZKW_WATCHER_ENSURE);
		EV_WAIT(&l2, 0, 'V', NULL, 1);
		EV_WAIT(&l3, 0, 'V', NULL, 1);
		close_watcher(a, &l2);
		close_watcher(b, &l3);
		ev_destroy(&l2);
		ev_destroy(&l3);
	}
	ev_destroy(&l);
}

/* 6: valid_init fails fast, in bounded time, with a clear error, when no
 * server answers (the server is frozen: TCP accepts, nobody speaks). */
static void test_c6_valid_init_fails_fast(void **state)
{
	zkw_session_options o;
	char why[512] = "";
	zkw_watcher *w;
	zkw_session *s;
	int64_t t0;
	int err = 0;

	(void)state;
	zkw_session_options_init(&o);
	o.session_timeout_ms = SESSION_MS;
	o.valid_init = true;
	o.init_timeout_ms = 1000;
	pause_server();
	t0 = now_ms();
	err = zkw_session_open(&s, hosts, &o, why, sizeof why);
	assert_null(s);
	assert_int_equal(err, -ETIMEDOUT);
	assert_true(now_ms() - t0 < 3000);
	assert_non_null(strstr(why, "no ZooKeeper server answered"));

	/* The seed's API: same, through the flag. */
	t0 = now_ms();
	assert_int_equal(
	        zkw_watcher_open_ex(&w, hosts, "/c6/x", NULL, ZKW_WATCHER_VALID_INIT, &o, why, sizeof why),
	        -ETIMEDOUT);
	assert_null(w);
	assert_true(now_ms() - t0 < 3000);
	assert_non_null(strstr(why, "within 1000 ms"));
	assert_int_equal(zkh_resume(zk), 0);
}

/* 6: without valid_init, open returns at once and connects later. */
static void test_c6_without_valid_init_connects_later(void **state)
{
	zkw_session_options o;
	struct rec r;
	zkw_session *s;
	int64_t t0;

	(void)state;
	rec_init(&r);
	itest_put("/c6/later", "eventually");
	zkw_session_options_init(&o);
	o.session_timeout_ms = SESSION_MS;
	pause_server();
	t0 = now_ms();
	s = open_session_opt(hosts, &o);
	assert_true(now_ms() - t0 < 500);
	watch(s, "/c6/later", &r, false, 0); /* added before the session connects */
	assert_false(zkw_session_ping(s));
	assert_int_equal(zkh_resume(zk), 0);
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .content = "eventually");
	close_session(s, &r);
	rec_destroy(&r);
}

/* 6: unknown hosts and garbage: a clear error, never a crash or a hang. */
static void test_c6_unknown_host(void **state)
{
	static const char *const bad[] = {"nonexistent.invalid:2181", "garbage", "::::", ","};
	zkw_session_options o;
	struct rec r;
	zkw_session *s;
	zkw_watcher *w;
	char why[512];

	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		int64_t t0 = now_ms();
		int err = 0;

		zkw_session_options_init(&o);
		o.valid_init = true;
		why[0] = '\0';
		err = zkw_session_open(&s, bad[i], &o, why, sizeof why);
		assert_null(s);
		assert_true(err < 0);
		assert_true(now_ms() - t0 < 3000);
		assert_non_null(strstr(why, bad[i]));
		print_message("'%s' -> %s\n", bad[i], why);
	}
	assert_true(zkw_watcher_open(&w, "nonexistent.invalid:2181", "/x", NULL, ZKW_WATCHER_VALID_INIT, why,
	                             sizeof why) < 0);
	assert_null(w);
	assert_non_null(strstr(why, "resolve"));
	assert_int_equal(zkw_session_open(&s, "", NULL, NULL, 0), -EINVAL);
	assert_null(s);
	assert_int_equal(zkw_session_open(&s, NULL, NULL, NULL, 0), -EINVAL);
	assert_null(s);

	/* Without valid_init: the watch reports why it cannot connect. */
	rec_init(&r);
	zkw_session_options_init(&o);
	s = open_session_opt("nonexistent.invalid:2181", &o);
	watch(s, "/x", &r, false, 0);
	WAIT_STATE(&r, WAIT_MS, .valid = NO, .connected = NO, .error = ZKW_ERR_CONNECTING ": cannot start");
	close_session(s, &r);
	rec_destroy(&r);
}

/* 7: bad watched paths are refused up front. */
static void test_c7_watch_path_checked(void **state)
{
	zkw_watch *w = NULL;
	zkw_session *s;

	(void)state;
	s = open_session();
	assert_int_equal(zkw_session_watch(s, "relative", NULL, &w), -EINVAL);
	assert_null(w);
	assert_int_equal(zkw_session_watch(s, "/a/", NULL, &w), -EINVAL);
	assert_int_equal(zkw_session_watch(s, "/a/../b", NULL, &w), -EINVAL);
	assert_int_equal(zkw_session_watch(s, "/", NULL, &w), -EINVAL);
	assert_int_equal(zkw_session_watch(s, " /a", NULL, &w), -EINVAL);
	assert_null(w);
	assert_int_equal(zkw_session_watch(s, "/fine", NULL, &w), 0); /* no on_state is fine too */
	assert_non_null(w);
	assert_int_equal(zkw_session_watch(s, "/fine/too", NULL, NULL), 0); /* out may be NULL */
	zkw_session_close(s);
}

/* 8: null data is empty content; bytes pass through, NULs included. */
static void test_c8_null_data_and_binary(void **state)
{
	static const char bin[] = {'a', 0, 'b', 0, 0, (char)0xff, '\n', 0};
	struct rec r;
	struct evlog l;
	zkw_session *s;
	zkw_watcher *w;
	char buf[16];

	(void)state;
	rec_init(&r);
	itest_put("/c8/null", NULL);
	s = open_session();
	watch(s, "/c8/null", &r, false, 0);
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .content = "");
	itest_put_bytes("/c8/null", bin, sizeof bin);
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .content = bin, .bin = true, .len = sizeof bin);
	itest_put("/c8/null", NULL); /* a wipe */
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .content = "");
	close_session(s, &r);
	rec_destroy(&r);

	/* The seed's API hands the bytes over unchanged too. */
	ev_init(&l);
	itest_put_bytes("/c8/bin", bin, sizeof bin);
	w = open_watcher("/c8/bin", &l, 0);
	EV_WAIT(&l, 0, 'V', NULL, 1);
	assert_int_equal(l.ev[0].len, sizeof bin);
	assert_memory_equal(l.ev[0].text, bin, sizeof bin);
	assert_int_equal(zkw_watcher_get_file_contents(w, false, buf, sizeof buf), sizeof bin);
	assert_memory_equal(buf, bin, sizeof bin);
	assert_int_equal(zkw_watcher_get_file_contents(w, false, buf, 3), -ENOBUFS);
	close_watcher(w, &l);
	ev_destroy(&l);

	/* A pointer node with null data is an invalid pointer, not a crash. */
	rec_init(&r);
	itest_put("/c8/ptr", NULL);
	s = open_session();
	watch(s, "/c8/ptr", &r, true, 0);
	WAIT_STATE(&r, WAIT_MS, .valid = NO, .error = ZKW_ERR_POINTER ": empty");
	close_session(s, &r);
	rec_destroy(&r);
}

/* 8/1: content above max_len: invalid with both sizes, last good kept. */
static void test_c8_oversized_content(void **state)
{
	char big[2048];
	struct rec r;
	zkw_session *s;

	(void)state;
	rec_init(&r);
	memset(big, 'x', sizeof big);
	itest_put("/c8/big", "small");
	s = open_session();
	watch(s, "/c8/big", &r, false, 1024);
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .content = "small");
	itest_put_bytes("/c8/big", big, sizeof big);
	WAIT_STATE(&r, WAIT_MS, .valid = NO, .connected = YES, .content = "small",
	           .error = ZKW_ERR_TOO_LARGE);
	assert_non_null(strstr(r.error, "2048 bytes"));
	assert_non_null(strstr(r.error, "1024 bytes"));
	itest_put_bytes("/c8/big", big, 1024); /* exactly the limit fits */
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .content = big, .bin = true, .len = 1024);
	close_session(s, &r);
	rec_destroy(&r);
}

/* ACL: a node we may not read is invalid with a clear error; once the ACL
 * opens, the reconcile notices (an ACL change fires no watch). */
static void test_acl_denied(void **state)
{
	zkw_session_options o;
	struct rec r;
	zkw_session *s;
	zhandle_t *zh;

	(void)state;
	rec_init(&r);
	itest_delete("/acl/parent/secret");
	itest_put("/acl/parent", ""); /* parent of the secret is open */
	zh = itest_zk_attach(NULL, SESSION_MS);
	assert_int_equal(zoo_add_auth(zh, "digest", "owner:secret", 12, NULL, NULL), ZOK);
	assert_int_equal(zoo_create(zh, "/acl/parent/secret", "hidden", 6, &ZOO_CREATOR_ALL_ACL, 0, NULL, 0),
	                 ZOK);

	zkw_session_options_init(&o);
	o.session_timeout_ms = SESSION_MS;
	o.valid_init = true;
	o.reconcile_s = 1;
	s = open_session_opt(hosts, &o);
	watch(s, "/acl/parent/secret", &r, false, 0);
	WAIT_STATE(&r, WAIT_MS, .valid = NO, .connected = YES,
	           .error = ZKW_ERR_NO_AUTH ": /acl/parent/secret");
	assert_non_null(strstr(r.error, "ZNOAUTH"));

	assert_int_equal(zoo_set_acl(zh, "/acl/parent/secret", -1, &ZOO_OPEN_ACL_UNSAFE), ZOK);
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .content = "hidden");
	itest_zk_close(zh);
	close_session(s, &r);
	rec_destroy(&r);
}

static bool ping_pred(void *w)
{
	return zkw_watcher_ping(w);
}

/* 9: ping tells whether the connection is alive (no four-letter words). */
static void test_c9_ping(void **state)
{
	struct evlog l;
	zkw_watcher *w;
	int64_t t0;

	(void)state;
	ev_init(&l);
	itest_put("/c9/node", "x");
	w = open_watcher("/c9/node", &l, 0);
	assert_true(zkw_watcher_ping(w));
	pause_server();
	t0 = now_ms();
	assert_false(zkw_watcher_ping(w)); /* no answer: false, bounded */
	assert_true(now_ms() - t0 < 2500);
	assert_int_equal(zkh_resume(zk), 0);
	/* The client may be mid-reconnect right after the freeze: poll ping. */
	assert_true(zkh_eventually(ping_pred, w, WAIT_MS));
	close_watcher(w, &l);
	assert_false(zkw_watcher_ping(NULL));
	ev_destroy(&l);
}

/* 10: close stops everything: no callback afterwards, twice is harmless,
 * from a handler works, with a handler running it waits for it. */
static void test_c10_close(void **state)
{
	struct evlog l;
	struct rec r;
	zkw_session *s;
	zkw_watcher *w;
	int n;

	(void)state;
	/* Session layer: nothing after close, even with writes going on. */
	rec_init(&r);
	itest_put("/c10/node", "0");
	s = open_session();
	watch(s, "/c10/node", &r, false, 0);
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .content = "0");
	itest_put("/c10/node", "1");
	close_session(s, &r);
	itest_put("/c10/node", "2");
	sleep_ms(200); /* prove no callback arrives after close */
	assert_int_equal(r.calls_after_close, 0);
	rec_destroy(&r);
	zkw_session_close(NULL);

	/* Seed layer: stop twice (the seed's close() twice), then close. */
	ev_init(&l);
	w = open_watcher("/c10/node", &l, 0);
	EV_WAIT(&l, 0, 'V', NULL, 1);
	zkw_watcher_stop(w);
	zkw_watcher_stop(w);
	n = ev_count(&l);
	itest_put("/c10/node", "3");
	sleep_ms(200); /* prove nothing is delivered after stop */
	assert_int_equal(ev_count(&l), n);
	assert_int_equal(zkw_watcher_content_len(w, false), 1); /* getters still answer */
	assert_false(zkw_watcher_ping(w));
	close_watcher(w, &l);
	zkw_watcher_close(NULL);
	ev_destroy(&l);

	/* Close while a (slow) handler runs: waits for it, nothing after. */
	ev_init(&l);
	l.handler_sleep_ms = 500;
	w = open_watcher("/c10/node", &l, 0);
	pthread_mutex_lock(&l.lock);
	{
		struct timespec ts = deadline_after(WAIT_MS);

		while (!l.in_handler && pthread_cond_timedwait(&l.cond, &l.lock, &ts) != ETIMEDOUT)
			;
		assert_true(l.in_handler);
	}
	pthread_mutex_unlock(&l.lock);
	close_watcher(w, &l); /* returns after the running config handler */
	assert_false(l.in_handler);
	assert_int_equal(l.after_close, 0);
	assert_int_equal(ev_count_kind(&l, 'V'), 0); /* valid(true) never started */
	ev_destroy(&l);

	/* Close from inside a handler. */
	ev_init(&l);
	itest_put("/c10/node", "4");
	w = open_watcher("/c10/node", &l, 0);
	EV_WAIT(&l, 0, 'V', NULL, 1);
	pthread_mutex_lock(&l.lock);
	l.close_me = w;
	pthread_mutex_unlock(&l.lock);
	itest_put("/c10/node", "5");
	EV_WAIT(&l, 0, 'C', "5", 0);
	sleep_ms(300); /* prove the handler's close finished and nothing follows */
	n = ev_count(&l);
	assert_false(l.in_handler);
	EV_EXPECT(&l, 0, "CVC", "4", 1, "5");
	(void)n;
	ev_destroy(&l);
}

/* 11: reconcile refreshes confirmed-at and repairs a missed watch (we drop
 * our ZooKeeper watch locally, so the change notification is lost). */
static void test_c11_reconcile(void **state)
{
	zkw_session_options o;
	struct rec r;
	zkw_session *s;
	zkw_watch *w;
	uint64_t confirmed;
	int calls, changes;

	(void)state;
	rec_init(&r);
	itest_put("/c11/node", "first");
	zkw_session_options_init(&o);
	o.session_timeout_ms = SESSION_MS;
	o.valid_init = true;
	o.reconcile_s = 1;
	s = cleanup_session = open_session_opt(hosts, &o);
	w = watch(s, "/c11/node", &r, false, 0);
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .content = "first");
	pthread_mutex_lock(&r.lock);
	confirmed = r.confirmed_ns;
	pthread_mutex_unlock(&r.lock);
	calls = rec_calls(&r);
	changes = rec_serial_changes(&r);
	/* Unchanged node: each reconcile confirms (on_state, newer confirmed_ns)
	 * and delivers no content: confirm_only, nothing else moved (checked by
	 * rec_on_state against the previous call). */
	WAIT_STATE(&r, 5000, .valid = YES, .min_calls = calls + 2);
	pthread_mutex_lock(&r.lock);
	assert_true(r.confirmed_ns > confirmed);
	assert_true(r.confirm_only_calls >= 2);
	assert_int_equal(r.confirm_violations, 0);
	pthread_mutex_unlock(&r.lock);
	assert_int_equal(rec_serial_changes(&r), changes);

	assert_int_equal(zkw__watch_forget_zk_watches(w), 0);
	itest_put("/c11/node", "second");
	/* Missed by the watch (proved by the absence of a fast update would need
	 * a sleep); found by the next reconcile, within its period + jitter. */
	WAIT_STATE(&r, 5000, .valid = YES, .content = "second");
	assert_int_equal(rec_serial_changes(&r), changes + 1);
	/* ... by a normal call: a confirm_only one with new content would
	 * count as a violation. */
	assert_int_equal(rec_int(&r, &r.confirm_violations), 0);
	/* And the watch is armed again by that re-read. */
	itest_put("/c11/node", "third");
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .content = "third");
	close_session(s, &r);
	rec_destroy(&r);
}

/* Reconcile off (0): a missed watch stays missed - proves the test above
 * really exercises the reconcile, not some other path. */
static void test_c11_reconcile_off_misses(void **state)
{
	zkw_session_options o;
	struct rec r;
	zkw_session *s;
	zkw_watch *w;

	(void)state;
	rec_init(&r);
	itest_put("/c11/off", "first");
	zkw_session_options_init(&o);
	o.session_timeout_ms = SESSION_MS;
	o.valid_init = true;
	o.reconcile_s = 0;
	s = open_session_opt(hosts, &o);
	w = watch(s, "/c11/off", &r, false, 0);
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .content = "first");
	assert_int_equal(zkw__watch_forget_zk_watches(w), 0);
	itest_put("/c11/off", "second");
	sleep_ms(1500); /* prove nothing notices without reconcile */
	pthread_mutex_lock(&r.lock);
	assert_string_equal(r.content, "first");
	pthread_mutex_unlock(&r.lock);
	close_session(s, &r);
	rec_destroy(&r);
}

/* Many watches on one session, added before and after connecting. */
static void test_session_many_watches(void **state)
{
	enum { N = 8 };
	zkw_session_options o;
	struct rec r[N];
	char path[64], text[32];
	zkw_session *s;

	(void)state;
	zkw_session_options_init(&o);
	o.session_timeout_ms = SESSION_MS;
	s = open_session_opt(hosts, &o); /* no valid_init: may not be connected yet */
	for (int i = 0; i < N; i++) {
		rec_init(&r[i]);
		snprintf(path, sizeof path, "/many/n%d", i);
		snprintf(text, sizeof text, "v%d", i);
		itest_put(path, text);
		watch(s, path, &r[i], false, 0);
	}
	for (int i = 0; i < N; i++) {
		snprintf(text, sizeof text, "v%d", i);
		WAIT_STATE(&r[i], WAIT_MS, .valid = YES, .content = text);
	}
	for (int i = 0; i < N; i++) {
		snprintf(path, sizeof path, "/many/n%d", i);
		snprintf(text, sizeof text, "w%d", i);
		itest_put(path, text);
	}
	for (int i = 0; i < N; i++) {
		snprintf(text, sizeof text, "w%d", i);
		WAIT_STATE(&r[i], WAIT_MS, .valid = YES, .content = text);
	}
	zkw_session_close(s);
	for (int i = 0; i < N; i++)
		rec_destroy(&r[i]);
}

/* An update storm always converges to ZooKeeper's last value. */
static void test_update_storm_converges(void **state)
{
	struct rec r;
	zkw_session *s;
	char text[32];

	(void)state;
	rec_init(&r);
	itest_put("/storm/node", "start");
	s = open_session();
	watch(s, "/storm/node", &r, false, 0);
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .content = "start");
	for (int i = 0; i < 100; i++) {
		snprintf(text, sizeof text, "update %d", i);
		itest_put("/storm/node", text);
	}
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .content = "update 99");
	close_session(s, &r);
	rec_destroy(&r);
}

/* No thread or descriptor leak across open/close cycles of both layers. */
static void test_no_leak_across_cycles(void **state)
{
	int threads = 0, fds = 0;

	(void)state;
	itest_put("/leak/node", "x");
	/* One warm-up cycle: libraries allocate lazily once. */
	for (int round = 0; round < 6; round++) {
		struct evlog l;
		struct rec r;
		zkw_session *s;
		zkw_watcher *w;

		if (round == 1) {
			threads = settled_threads();
			fds = count_fds();
		}
		ev_init(&l);
		rec_init(&r);
		w = open_watcher("/leak/node", &l, 0);
		s = open_session();
		watch(s, "/leak/node", &r, true, 0);
		EV_WAIT(&l, 0, 'V', NULL, 1);
		WAIT_STATE(&r, WAIT_MS, .valid = NO, .error = ZKW_ERR_POINTER);
		close_watcher(w, &l);
		close_session(s, &r);
		ev_destroy(&l);
		rec_destroy(&r);
	}
	ASSERT_THREADS(threads);
	assert_int_equal(count_fds(), fds);
}

/* Chroot in the connect string: paths are relative to it. */
static void test_chroot_hosts(void **state)
{
	char chrooted[512];
	struct rec r;
	zkw_session_options o;
	zkw_session *s;

	(void)state;
	rec_init(&r);
	itest_put("/app/conf/target", "in chroot");
	itest_put("/app/conf/ptr", "/conf/target");
	snprintf(chrooted, sizeof chrooted, "%s/app", hosts);
	zkw_session_options_init(&o);
	o.valid_init = true;
	o.session_timeout_ms = SESSION_MS;
	s = open_session_opt(chrooted, &o);
	watch(s, "/conf/ptr", &r, true, 0);
	WAIT_STATE(&r, WAIT_MS, .valid = YES, .content = "in chroot", .pointer = "/conf/target");
	assert_true(zkw_session_ping(s));
	close_session(s, &r);
	rec_destroy(&r);
}

/* The log sink gets our own events and, rate-limited, the client's. */
struct logrec {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int ours, client;
	char last[512];
};

static void log_sink(void *ctx, int level, const char *message)
{
	struct logrec *lr = ctx;

	assert_true(level >= ZKW_LOG_ERROR && level <= ZKW_LOG_DEBUG);
	pthread_mutex_lock(&lr->lock);
	if (strncmp(message, "zookeeper client: ", 18) == 0)
		lr->client++;
	else if (strstr(message, "connected to ZooKeeper"))
		lr->ours++;
	snprintf(lr->last, sizeof lr->last, "%s", message);
	pthread_cond_broadcast(&lr->cond);
	pthread_mutex_unlock(&lr->lock);
}

static void test_log_callback(void **state)
{
	struct logrec lr = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, ""};
	struct timespec ts;
	zkw_session_options o;
	zkw_session *s;

	(void)state;
	zkw_session_options_init(&o);
	o.session_timeout_ms = SESSION_MS;
	o.valid_init = true;
	o.log = log_sink;
	o.log_ctx = &lr;
	s = open_session_opt(hosts, &o);
	pthread_mutex_lock(&lr.lock);
	assert_int_equal(lr.ours, 1); /* connected before open returned */
	pthread_mutex_unlock(&lr.lock);
	zkw_session_close(s);

	/* A refused port: the client complains at every attempt; we forward
	 * a bounded burst of it, with its level. */
	o.valid_init = false;
	s = open_session_opt("127.0.0.1:1", &o);
	ts = deadline_after(WAIT_MS);
	pthread_mutex_lock(&lr.lock);
	while (lr.client == 0 && pthread_cond_timedwait(&lr.cond, &lr.lock, &ts) != ETIMEDOUT)
		;
	assert_true(lr.client > 0);
	assert_true(lr.client <= 21);
	pthread_mutex_unlock(&lr.lock);
	zkw_session_close(s);
}

/* 1 (remove): zkw_watch_remove under traffic - a writer keeps the nodes
 * changing, so the removed watches have reads in flight - and no on_state
 * of a watch once its remove returned. Half the recorders are freed right
 * after the remove, as the broker frees its ctx: under ASan a late call is
 * a use-after-free; the other half count late calls. */
static void test_remove_under_traffic(void **state)
{
	enum { ROUNDS = 120 };
	static const char *const paths[] = {"/rm/a", "/rm/b"};
	struct rec *kept[ROUNDS / 2];
	struct writer wr;
	struct counts c;
	zkw_session *s;
	int draining_seen = 0, nkept = 0, calls = 0;

	(void)state;
	writer_start(&wr, paths, 2);
	s = open_session_cleanup();
	for (int i = 0; i < ROUNDS; i++) {
		struct rec *r = malloc(sizeof *r);
		zkw_watch *w;

		assert_non_null(r);
		rec_init(r);
		w = watch(s, paths[i % 2], r, false, 0);
		/* Odd rounds remove at once (the first read in flight), even
		 * rounds once the watch re-reads under the writer's changes. */
		if (i % 2 == 0)
			WAIT_STATE(r, WAIT_MS, .valid = YES, .min_calls = 3);
		remove_watch(w, r);
		c = watch_counts(s);
		draining_seen += c.draining > 0;
		assert_int_equal(c.active, 0);
		calls += rec_calls(r);
		/* The removed watch's answers still come in, and retire it. */
		assert_true(zkh_eventually(nothing_draining, s, WAIT_MS));
		if (i % 4 < 2) {
			rec_destroy(r); /* the broker frees ctx right after the remove */
			free(r);
		} else {
			kept[nkept++] = r;
		}
	}
	/* Traffic goes on for the removed watches' ZooKeeper watchers. */
	sleep_ms(300); /* prove nothing reaches a removed watch meanwhile */
	writer_stop(&wr);
	assert_true(zkh_eventually(nothing_draining, s, WAIT_MS));
	c = watch_counts(s);
	close_session_cleanup(s);
	for (int i = 0; i < nkept; i++) {
		assert_int_equal(kept[i]->calls_after_close, 0);
		rec_destroy(kept[i]);
		free(kept[i]);
	}
	print_message("remove under traffic: %d removes with reads in flight, %d states, %lu writes, "
	              "%u structs\n",
	              draining_seen, calls, wr.writes, c.spare);
	assert_true(draining_seen > 0); /* the in-flight path was taken */
	assert_true(calls > 0);
	/* One watch at a time, retired before the next: one struct serves all. */
	assert_int_equal(c.active + c.draining, 0);
	assert_int_equal(c.spare, 1);
}

/* 1 (remove): a pointer watch whose target moved several times leaves
 * ZooKeeper watchers on every old target, registered with its node. Remove
 * it, recycle its struct for new watches (one on an old target, a pointer
 * to another), and keep changing the old targets: the stale watchers fire
 * into the recycled struct, which must neither crash (ASan) nor mislead
 * the new watches, and the removed watch's ctx (freed) is never called. */
static void test_remove_pointer_after_switches(void **state)
{
	struct rec *old = malloc(sizeof *old);
	struct rec r1, r2;
	char path[32], text[32];
	zkw_watch *w, *w1, *w2;
	zkw_session *s;

	(void)state;
	assert_non_null(old);
	rec_init(old);
	rec_init(&r1);
	rec_init(&r2);
	for (int i = 1; i <= 4; i++) {
		snprintf(path, sizeof path, "/rp/t%d", i);
		snprintf(text, sizeof text, "t%d", i);
		itest_put(path, text);
	}
	itest_put("/rp/ptr", "/rp/t1");
	itest_put("/rp/ptr2", "/rp/t3");
	s = open_session_cleanup();
	w = watch(s, "/rp/ptr", old, true, 0);
	WAIT_STATE(old, WAIT_MS, .valid = YES, .content = "t1", .pointer = "/rp/t1");
	for (int i = 2; i <= 4; i++) {
		snprintf(path, sizeof path, "/rp/t%d", i);
		snprintf(text, sizeof text, "t%d", i);
		itest_put("/rp/ptr", path);
		WAIT_STATE(old, WAIT_MS, .valid = YES, .content = text, .pointer = path);
	}
	zkw_watch_remove(w);
	rec_destroy(old);
	free(old); /* any later call into it: use-after-free */
	assert_true(zkh_eventually(nothing_draining, s, WAIT_MS));
	assert_int_equal(watch_counts(s).spare, 1);

	/* The struct comes back for the next watch. */
	w1 = watch(s, "/rp/t2", &r1, false, 0);
	assert_ptr_equal(w1, w);
	w2 = watch(s, "/rp/ptr2", &r2, true, 0);
	WAIT_STATE(&r1, WAIT_MS, .valid = YES, .content = "t2");
	WAIT_STATE(&r2, WAIT_MS, .valid = YES, .content = "t3", .pointer = "/rp/t3");
	for (int round = 0; round < 3; round++) {
		for (int i = 1; i <= 4; i++) {
			snprintf(path, sizeof path, "/rp/t%d", i);
			snprintf(text, sizeof text, "t%d.%d", i, round);
			itest_put(path, text);
		}
		itest_put("/rp/ptr", round % 2 ? "/rp/t1" : "/rp/t2");
		snprintf(text, sizeof text, "t2.%d", round);
		WAIT_STATE(&r1, WAIT_MS, .valid = YES, .content = text);
		snprintf(text, sizeof text, "t3.%d", round);
		WAIT_STATE(&r2, WAIT_MS, .valid = YES, .content = text, .pointer = "/rp/t3");
	}
	/* Each new watch saw its own node's bytes only: one serial per value. */
	assert_int_equal(rec_serial_changes(&r1), 4);
	assert_int_equal(rec_serial_changes(&r2), 4);
	zkw_watch_remove(w2);
	zkw_watch_remove(NULL); /* no-op */
	close_session_cleanup(s);
	assert_int_equal(r1.confirm_violations + r2.confirm_violations, 0);
	rec_destroy(&r1);
	rec_destroy(&r2);
}

/* 1 (remove): 2,000 watches added and removed over a few busy nodes, at
 * most K alive at once: structs are recycled, so their number stays at the
 * peak of live plus draining watches, not 2,000. Every removed recorder is
 * freed at once (ASan: no late call); the last K watches still converge. */
static void test_remove_churn_recycles(void **state)
{
	enum { N = 2000, K = 16, SETTLE_EVERY = 10 };
	static const char *const paths[] = {"/churn/n0", "/churn/n1", "/churn/n2", "/churn/n3"};
	static struct rec *recs[N];
	static zkw_watch *ws[N];
	struct writer wr;
	struct counts c;
	zkw_session *s;
	unsigned peak = 0;

	(void)state;
	writer_start(&wr, paths, 4);
	s = open_session_cleanup();
	for (int i = 0; i < N; i++) {
		recs[i] = malloc(sizeof *recs[i]);
		assert_non_null(recs[i]);
		rec_init(recs[i]);
		ws[i] = watch(s, paths[i % 4], recs[i], false, 0);
		if (i >= K) {
			zkw_watch_remove(ws[i - K]);
			rec_destroy(recs[i - K]);
			free(recs[i - K]);
			recs[i - K] = NULL;
		}
		c = watch_counts(s);
		if (c.active + c.draining + c.spare > peak)
			peak = c.active + c.draining + c.spare;
		/* Bound the draining backlog a slow completion thread could build. */
		if (i % SETTLE_EVERY == 0)
			assert_true(zkh_eventually(nothing_draining, s, WAIT_MS));
	}
	writer_stop(&wr);
	for (int i = N - K; i < N; i++)
		WAIT_STATE(recs[i], WAIT_MS, .valid = YES, .content = wr.last[i % 4]);
	for (int i = N - K; i < N; i++)
		zkw_watch_remove(ws[i]);
	assert_true(zkh_eventually(nothing_draining, s, WAIT_MS));
	c = watch_counts(s);
	print_message("churn: %d watches, %u structs (peak %u), %lu writes\n", N, c.spare, peak, wr.writes);
	assert_int_equal(c.active, 0);
	assert_true(c.spare == peak);
	assert_true(peak <= K + SETTLE_EVERY + 1);
	close_session_cleanup(s);
	for (int i = N - K; i < N; i++) {
		assert_int_equal(recs[i]->calls_after_close, 0);
		rec_destroy(recs[i]);
		free(recs[i]);
	}
}

/* 6 (ensure at run time): zkw_watch_ensure creates a missing node (and
 * parents) empty, at once or at the first read in flight; leaves an
 * existing node alone; acts once (a later deletion is not undone). */
static void test_c6_watch_ensure(void **state)
{
	struct rec r1, r2, r3;
	zkw_watch *w1, *w2, *w3;
	zkw_session *s;
	char buf[16];
	int len;

	(void)state;
	rec_init(&r1);
	rec_init(&r2);
	rec_init(&r3);
	itest_delete("/ens");
	itest_put("/ens/here", "keep");
	s = open_session_cleanup();
	w1 = watch(s, "/ens/a/b/node", &r1, false, 0);
	WAIT_STATE(&r1, WAIT_MS, .valid = NO, .error = ZKW_ERR_NO_NODE ": /ens/a/b/node");
	assert_int_equal(zkw_watch_ensure(w1), 0);
	WAIT_STATE(&r1, WAIT_MS, .valid = YES, .content = "");
	len = sizeof buf;
	assert_int_equal(zkh_get(hosts, "/ens/a/b/node", buf, &len), ZOK);
	assert_int_equal(len, 0);

	/* Asked before the first answer: that answer's ZNONODE creates it. */
	w2 = watch(s, "/ens/c", &r2, false, 0);
	assert_int_equal(zkw_watch_ensure(w2), 0);
	WAIT_STATE(&r2, WAIT_MS, .valid = YES, .content = "");

	/* An existing node is left alone. */
	w3 = watch(s, "/ens/here", &r3, false, 0);
	WAIT_STATE(&r3, WAIT_MS, .valid = YES, .content = "keep");
	assert_int_equal(zkw_watch_ensure(w3), 0);
	itest_put("/ens/here", "changed");
	WAIT_STATE(&r3, WAIT_MS, .valid = YES, .content = "changed");

	/* Ensure acts once: deleted later, the node stays missing. */
	itest_delete("/ens/a/b/node");
	WAIT_STATE(&r1, WAIT_MS, .valid = NO, .error = ZKW_ERR_NO_NODE ": /ens/a/b/node");
	sleep_ms(300); /* prove it is not re-created */
	len = sizeof buf;
	assert_int_equal(zkh_get(hosts, "/ens/a/b/node", buf, &len), ZNONODE);
	pthread_mutex_lock(&r1.lock);
	assert_false(r1.valid);
	pthread_mutex_unlock(&r1.lock);

	assert_int_equal(zkw_watch_ensure(NULL), -EINVAL);
	close_session_cleanup(s);
	rec_destroy(&r1);
	rec_destroy(&r2);
	rec_destroy(&r3);
}

/* 11 (spread and capped): 300 watches, reconcile_s 1, at most 100 exists
 * requests a second. A round needs 3 s, so it stretches (said once at
 * INFO); its requests are spread over it, no second sees more than the
 * cap (plus one tick's slack), every watch is checked once a round and
 * gets a confirmation within the stretched period. */
enum { SPREAD_N = 300, SPREAD_RATE = 100, SPREAD_MAX = 4096 };

struct spread {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int n;
	int64_t at[SPREAD_MAX];
	int watch[SPREAD_MAX];
	int stretch_logs;
};

static void spread_hook(void *ctx, const char *path)
{
	struct spread *sp = ctx;
	int i = -1;

	pthread_mutex_lock(&sp->lock);
	if (sp->n < SPREAD_MAX && sscanf(path, "/spread/n%d", &i) == 1) {
		sp->at[sp->n] = now_ms();
		sp->watch[sp->n++] = i;
		pthread_cond_broadcast(&sp->cond);
	}
	pthread_mutex_unlock(&sp->lock);
}

static void spread_log(void *ctx, int level, const char *message)
{
	struct spread *sp = ctx;

	if (level == ZKW_LOG_INFO && strstr(message, "reconcile:") && strstr(message, "rounds last")) {
		pthread_mutex_lock(&sp->lock);
		sp->stretch_logs++;
		pthread_mutex_unlock(&sp->lock);
	}
}

static bool all_confirmed(void *arg)
{
	struct rec *r = arg;

	for (int i = 0; i < SPREAD_N; i++)
		if (rec_int(&r[i], &r[i].confirm_only_calls) == 0)
			return false;
	return true;
}

static void test_c11_reconcile_spread_and_capped(void **state)
{
	static struct spread sp = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};
	static struct rec r[SPREAD_N];
	static bool seen[SPREAD_N];
	zkw_session_options o;
	struct timespec ts;
	zhandle_t *zh;
	zkw_session *s;
	char why[256], path[64];
	int worst = 0, first_round_ms, confirmed_late = 0;

	(void)state;
	assert_int_equal(zkw_zk_connect(&zh, hosts, WAIT_MS, SESSION_MS, why, sizeof why), 0);
	for (int i = 0; i < SPREAD_N; i++) {
		snprintf(path, sizeof path, "/spread/n%d", i);
		assert_int_equal(zkw_zk_put(zh, path, "v", 1, NULL, why, sizeof why), 0);
	}
	zkw_zk_close(zh);
	zkw_session_options_init(&o);
	o.session_timeout_ms = SESSION_MS;
	o.valid_init = true;
	o.reconcile_s = 1;
	o.reconcile_rate = SPREAD_RATE;
	o.log = spread_log;
	o.log_ctx = &sp;
	s = cleanup_session = open_session_opt(hosts, &o);
	zkw__session_set_reconcile_hook(s, spread_hook, &sp);
	/* All in before the first round (0.8 s at the earliest). */
	for (int i = 0; i < SPREAD_N; i++) {
		rec_init(&r[i]);
		snprintf(path, sizeof path, "/spread/n%d", i);
		watch(s, path, &r[i], false, 0);
	}
	/* One round and a bit: at 100/s at least 3 s. */
	ts = deadline_after(WAIT_MS);
	pthread_mutex_lock(&sp.lock);
	while (sp.n < SPREAD_N + 30 && pthread_cond_timedwait(&sp.cond, &sp.lock, &ts) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&sp.lock);
	zkw__session_set_reconcile_hook(s, NULL, NULL);
	if (sp.n < SPREAD_N + 30)
		fail_msg("only %d reconcile requests within %d ms", sp.n, WAIT_MS);

	/* The most requests in any one second. */
	for (int i = 0, j = 0; i < sp.n; i++) {
		while (sp.at[i] - sp.at[j] >= 1000)
			j++;
		if (i - j + 1 > worst)
			worst = i - j + 1;
	}
	/* The first round: every watch once, spread over the stretched period. */
	for (int i = 0; i < SPREAD_N; i++) {
		assert_true(sp.watch[i] >= 0 && sp.watch[i] < SPREAD_N);
		if (seen[sp.watch[i]])
			fail_msg("watch %d checked twice in the first round", sp.watch[i]);
		seen[sp.watch[i]] = true;
	}
	first_round_ms = (int)(sp.at[SPREAD_N] - sp.at[0]);
	/* Every watch was confirmed (a confirm_only call) within that round:
	 * the last answers are at most a round trip behind. */
	zkh_eventually(all_confirmed, r, 2000);
	for (int i = 0; i < SPREAD_N; i++) {
		confirmed_late += rec_int(&r[i], &r[i].confirm_only_calls) == 0;
		assert_int_equal(rec_int(&r[i], &r[i].confirm_violations), 0);
	}
	print_message("spread: %d requests, at most %d in a second, first round %d ms, %d stretch log(s)\n",
	              sp.n, worst, first_round_ms, sp.stretch_logs);
	assert_true(worst <= SPREAD_RATE + SPREAD_RATE / 10 + 2);
	/* N / rate = 3 s, + up to 20% jitter, + the scheduler's tick. */
	assert_true(first_round_ms >= SPREAD_N * 1000 / SPREAD_RATE - 200);
	assert_true(first_round_ms <= SPREAD_N * 1000 / SPREAD_RATE * 6 / 5 + 500);
	assert_int_equal(confirmed_late, 0);
	assert_int_equal(sp.stretch_logs, 1);
	close_session_cleanup(s);
	for (int i = 0; i < SPREAD_N; i++)
		rec_destroy(&r[i]);
}

static int each_setup(void **state)
{
	(void)state;
	if (getenv("ZKW_TEST_THREADS"))
		print_message("threads %d fds %d\n", count_threads(), count_fds());
	return 0;
}

/* A failed test may leave the server frozen: thaw it for the next one. */
static int each_teardown(void **state)
{
	(void)state;
	if (cleanup_writer)
		writer_join(cleanup_writer);
	if (cleanup_session)
		close_session_cleanup(cleanup_session);
	zkh_resume(zk);
	return 0;
}

static int group_setup(void **state)
{
	(void)state;
	zk = itest_zk_start(&(struct itest_config){.prefix = "zkwtw", .wait_ms = WAIT_MS});
	if (!zk)
		return -1;
	hosts = zkh_hosts(zk);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	itest_zk_stop();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_c1_valid_definition, each_setup, each_teardown),
	        cmocka_unit_test_setup_teardown(test_c2_last_good_content_kept, each_setup, each_teardown),
	        cmocka_unit_test_setup_teardown(test_c3_exactly_once_and_order, each_setup, each_teardown),
	        cmocka_unit_test_setup_teardown(test_c4_node_created_after_start, each_setup, each_teardown),
	        cmocka_unit_test_setup_teardown(test_c4_pointer_target_deleted_and_recreated, each_setup,
	                                        each_teardown),
	        cmocka_unit_test_setup_teardown(test_c5_short_outage, each_setup, each_teardown),
	        cmocka_unit_test_setup_teardown(test_c5_server_restart, each_setup, each_teardown),
	        cmocka_unit_test_setup_teardown(test_c5_session_expiry, each_setup, each_teardown),
	        cmocka_unit_test_setup_teardown(test_c6_ensure, each_setup, each_teardown),
	        cmocka_unit_test_setup_teardown(test_c6_valid_init_fails_fast, each_setup, each_teardown),
	        cmocka_unit_test_setup_teardown(test_c6_without_valid_init_connects_later, each_setup,
	                                        each_teardown),
	        cmocka_unit_test_setup_teardown(test_c6_unknown_host, each_setup, each_teardown),
	        cmocka_unit_test_setup_teardown(test_c7_watch_path_checked, each_setup, each_teardown),
	        cmocka_unit_test_setup_teardown(test_c8_null_data_and_binary, each_setup, each_teardown),
	        cmocka_unit_test_setup_teardown(test_c8_oversized_content, each_setup, each_teardown),
	        cmocka_unit_test_setup_teardown(test_acl_denied, each_setup, each_teardown),
	        cmocka_unit_test_setup_teardown(test_c9_ping, each_setup, each_teardown),
	        cmocka_unit_test_setup_teardown(test_c10_close, each_setup, each_teardown),
	        cmocka_unit_test_setup_teardown(test_c11_reconcile, each_setup, each_teardown),
	        cmocka_unit_test_setup_teardown(test_c11_reconcile_off_misses, each_setup, each_teardown),
	        cmocka_unit_test_setup_teardown(test_c11_reconcile_spread_and_capped, each_setup,
	                                        each_teardown),
	        cmocka_unit_test_setup_teardown(test_c6_watch_ensure, each_setup, each_teardown),
	        cmocka_unit_test_setup_teardown(test_remove_under_traffic, each_setup, each_teardown),
	        cmocka_unit_test_setup_teardown(test_remove_pointer_after_switches, each_setup,
	                                        each_teardown),
	        cmocka_unit_test_setup_teardown(test_remove_churn_recycles, each_setup, each_teardown),
	        cmocka_unit_test_setup_teardown(test_session_many_watches, each_setup, each_teardown),
	        cmocka_unit_test_setup_teardown(test_update_storm_converges, each_setup, each_teardown),
	        cmocka_unit_test_setup_teardown(test_no_leak_across_cycles, each_setup, each_teardown),
	        cmocka_unit_test_setup_teardown(test_chroot_hosts, each_setup, each_teardown),
	        cmocka_unit_test_setup_teardown(test_log_callback, each_setup, each_teardown),
	};

	if (getenv("ZKW_TEST_ONLY")) /* e.g. ZKW_TEST_ONLY='test_c5_*' */
		cmocka_set_test_filter(getenv("ZKW_TEST_ONLY"));
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
