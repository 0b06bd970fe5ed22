/* SPDX-License-Identifier: Apache-2.0 */
/* control.c - the broker's control socket (docs/design.md, "The control
 * socket"): workers subscribe to paths on demand and get their segment as a
 * read-only descriptor; operators LIST, STATUS and READERS by hand.
 *
 * One thread (zkw-socket) runs an epoll loop over the listening socket,
 * the connections, an eventfd that publish_state writes when a watch is
 * first evaluated, and one that control_stop writes. It owns the watch
 * table from control_start to control_stop (broker.h): it adds watches,
 * counts their subscribers and removes those added on demand once their
 * linger is over. It never blocks but in epoll_wait: sockets are
 * non-blocking, answers are queued and flushed as the peer reads them, and
 * a connection whose answer is pending reads no further request.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <zkw/client.h>
#include <zkw/watcher.h>

#include <zkw_clock.h>

#include "daemon/broker.h"
#include "daemon/stats.h"

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59 /* Linux >= 4.13 */
#endif

#define PROTO_VERSION   1
#define IDLE_MS         10000 /* a connection without subscription must ask within this */
#define SWEEP_MS        1000  /* lingering watches are checked this often */
#define PEER_GROUPS_MAX 256
#define ACK_NAME        "zkw-ack"

/* One subscription of a connection. */
typedef struct sub {
	broker_watch *w;
	/* The subscriber's page, mapped read-only: sealed against shrinking
	 * before it was handed over, so no peer can make a read of it fault. */
	const struct zkw_ack *page;
	struct sub *next;
} sub;

typedef struct conn {
	int fd;
	pid_t pid;
	uid_t uid;
	gid_t gid;
	gid_t groups[PEER_GROUPS_MAX];
	int ngroups;
	char comm[64];
	char in[ZKW_PROTO_LINE_MAX + 1];
	size_t inlen;
	char *out; /* queued answer */
	size_t outlen, outoff, outcap;
	int out_fds[2]; /* sent with the first byte of out */
	int n_out_fds;
	sub *subs;
	sub *pending;            /* a SUBSCRIBE waiting for the first evaluation */
	int pending_ack_fd;      /* its page's descriptor, to send with the answer */
	int64_t pending_deadline; /* CLOCK_MONOTONIC ms */
	int64_t idle_deadline;    /* 0 while it holds a subscription */
	bool closing;             /* close once out is flushed */
	struct conn *prev, *next;
} conn;

typedef struct uid_count {
	uid_t uid;
	unsigned subs;
} uid_count;

static struct control {
	broker *b;
	int listen_fd, epoll_fd, stop_fd;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	dev_t dev;
	ino_t ino;
	pthread_t thread;
	bool running;
	conn *conns;
	int nconns;
	unsigned nsubs;
	uid_count *uids;
	size_t nuids, uids_cap;
	int64_t sweep_at;
} ctl = {.listen_fd = -1, .epoll_fd = -1, .stop_fd = -1};

/* epoll tags for the descriptors that are not connections. */
static char tag_listen, tag_evaluated, tag_stop, tag_call;

/* control_call's one request at a time: posted by the caller, run by the
 * control thread, done signalled back. */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t done_cond;
	int fd; /* eventfd */
	void (*fn)(void *);
	void *arg;
	bool done;
} call = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, -1, NULL, NULL, false};

void control_call(void (*fn)(void *), void *arg)
{
	uint64_t one = 1;

	if (!ctl.running) {
		fn(arg);
		return;
	}
	pthread_mutex_lock(&call.lock);
	call.fn = fn;
	call.arg = arg;
	call.done = false;
	if (write(call.fd, &one, sizeof(one)) < 0) {
		/* an eventfd far from its maximum: cannot fail */
	}
	while (!call.done)
		pthread_cond_wait(&call.done_cond, &call.lock);
	call.fn = NULL;
	pthread_mutex_unlock(&call.lock);
}

/* On the control thread: run the posted call, if any. */
static void run_call(void)
{
	uint64_t count;

	if (read(call.fd, &count, sizeof(count)) < 0) {
		/* EAGAIN: nothing posted */
	}
	pthread_mutex_lock(&call.lock);
	if (call.fn && !call.done) {
		call.fn(call.arg);
		call.done = true;
		pthread_cond_broadcast(&call.done_cond);
	}
	pthread_mutex_unlock(&call.lock);
}

/* ---- answers ---------------------------------------------------------- */

static int out_reserve(conn *c, size_t more)
{
	size_t need = c->outlen + more + 1;

	if (need > c->outcap) {
		size_t cap = c->outcap ? c->outcap : 1024;
		char *p;

		while (cap < need)
			cap *= 2;
		p = realloc(c->out, cap);
		if (!p)
			return -ENOMEM;
		c->out = p;
		c->outcap = cap;
	}
	return 0;
}

static void out_printf(conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_printf(conn *c, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || out_reserve(c, (size_t)n) < 0) {
		c->closing = true;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(c->out + c->outlen, (size_t)n + 1, fmt, ap);
	va_end(ap);
	c->outlen += (size_t)n;
}

/* %XX-escaped copy of text (the protocol's rule), truncated to fit. */
static const char *esc(char *buf, size_t cap, const char *text)
{
	char part[ZKW_PROTO_LINE_MAX];
	size_t n = strlen(text);

	if (zkw__proto_escape(buf, cap, text) == 0)
		return buf;
	/* Too long: escape what fits (an error text; paths always fit). */
	if (n > cap / 3 - 1)
		n = cap / 3 - 1;
	memcpy(part, text, n);
	part[n] = '\0';
	zkw__proto_escape(buf, cap, part);
	return buf;
}

/* Words for a person (an ERR text): no control byte reaches the peer's
 * terminal or breaks the line. In place. */
static const char *tame(char *text)
{
	for (char *p = text; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	return text;
}

static void update_events(conn *c)
{
	struct epoll_event ev = {.data.ptr = c};

	/* Read only while nothing is queued or pending: one request at a time. */
	ev.events = c->outoff < c->outlen ? EPOLLOUT : c->pending || c->closing ? 0 : EPOLLIN;
	epoll_ctl(ctl.epoll_fd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Send what is queued (with its descriptors on the first byte). */
static void flush_out(conn *c)
{
	while (c->outoff < c->outlen) {
		struct iovec iov = {c->out + c->outoff, c->outlen - c->outoff};
		union {
			struct cmsghdr align;
			char buf[CMSG_SPACE(2 * sizeof(int))];
		} control;
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
		ssize_t n;

		if (c->n_out_fds) {
			struct cmsghdr *cm;

			memset(&control, 0, sizeof(control));
			msg.msg_control = control.buf;
			msg.msg_controllen = CMSG_SPACE((size_t)c->n_out_fds * sizeof(int));
			cm = CMSG_FIRSTHDR(&msg);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN((size_t)c->n_out_fds * sizeof(int));
			memcpy(CMSG_DATA(cm), c->out_fds, (size_t)c->n_out_fds * sizeof(int));
		}
		n = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n < 0) {
			c->closing = true;
			c->outoff = c->outlen;
			break;
		}
		/* The descriptors were ours only to send. */
		while (c->n_out_fds)
			close(c->out_fds[--c->n_out_fds]);
		c->outoff += (size_t)n;
	}
	if (c->outoff == c->outlen)
		c->outoff = c->outlen = 0;
	update_events(c);
}

/* ---- peers and policy ------------------------------------------------- */

static uid_count *uid_slot(uid_t uid, bool create)
{
	for (size_t i = 0; i < ctl.nuids; i++)
		if (ctl.uids[i].uid == uid)
			return &ctl.uids[i];
	if (!create)
		return NULL;
	if (ctl.nuids == ctl.uids_cap) {
		size_t cap = ctl.uids_cap ? ctl.uids_cap * 2 : 16;
		uid_count *p = realloc(ctl.uids, cap * sizeof(*p));

		if (!p)
			return NULL;
		ctl.uids = p;
		ctl.uids_cap = cap;
	}
	ctl.uids[ctl.nuids].uid = uid;
	ctl.uids[ctl.nuids].subs = 0;
	return &ctl.uids[ctl.nuids++];
}

static bool subject_matches(const zkw_cli_rule *r, const conn *c)
{
	if (r->kind == ZKW_RULE_ANY)
		return true;
	if (r->kind == ZKW_RULE_UID)
		return r->id == (uint32_t)c->uid;
	if (r->id == (uint32_t)c->gid)
		return true;
	for (int i = 0; i < c->ngroups; i++)
		if (r->id == (uint32_t)c->groups[i])
			return true;
	return false;
}

static bool prefix_matches(const char *prefix, const char *path)
{
	size_t n = strlen(prefix);

	if (strcmp(prefix, "/") == 0)
		return true;
	return strncmp(path, prefix, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* 0, or -EACCES with the refusal (after "ERR ") in why. */
static int policy_check(const broker *b, const conn *c, const char *path, bool ensure, char *why, size_t cap)
{
	const zkw_cli_rule *read_rule = NULL;
	char epath[ZKW_PROTO_LINE_MAX];
	bool ensure_ok = false;

	if (c->uid == 0 || c->uid == geteuid())
		return 0;
	esc(epath, sizeof(epath), path);
	if (!b->cli.nrules) {
		if (!ensure)
			return 0;
		snprintf(why, cap,
		         "policy uid %u may read %.2000s but not ensure it: with no --allow-ensure rule only root and "
		         "the broker's uid %u may",
		         (unsigned)c->uid, epath, (unsigned)geteuid());
		return -EACCES;
	}
	for (int i = 0; i < b->cli.nrules; i++) {
		const zkw_cli_rule *r = &b->cli.rules[i];

		if (!subject_matches(r, c) || !prefix_matches(r->prefix, path))
			continue;
		if (!read_rule)
			read_rule = r;
		if (r->ensure)
			ensure_ok = true;
	}
	if (!read_rule) {
		snprintf(why, cap, "policy uid %u (gid %u) may not read %.2000s: no --allow rule matches",
		         (unsigned)c->uid, (unsigned)c->gid, epath);
		return -EACCES;
	}
	if (ensure && !ensure_ok) {
		snprintf(why, cap, "policy uid %u may read %.1500s (--allow%s %.1000s) but not ensure it: no --allow-ensure rule matches",
		         (unsigned)c->uid, epath, read_rule->ensure ? "-ensure" : "", read_rule->text);
		return -EACCES;
	}
	return 0;
}

/* ---- subscriptions ---------------------------------------------------- */

static void watch_unsubscribed(broker *b, broker_watch *w)
{
	if (--w->subscribers || w->permanent)
		return;
	w->linger_until = zkw_clock_mono_ms() + (int64_t)b->cli.linger_s * 1000;
	if (b->cli.linger_s == 0)
		broker_watch_remove(b, w, "Watch removed: no subscriber left");
}

static void sub_free(broker *b, conn *c, sub *s)
{
	uid_count *u = uid_slot(c->uid, false);

	if (u && u->subs)
		u->subs--;
	ctl.nsubs--;
	munmap((void *)s->page, ZKW_ACK_PAGE_SIZE);
	watch_unsubscribed(b, s->w);
	free(s);
}

/* The subscriber's page: a sealed memfd it may write and the broker maps
 * read-only into *page. The descriptor, or -errno. */
static int ack_page(const struct zkw_ack **page)
{
	int fd = memfd_create(ACK_NAME, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	void *map;
	int e;

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, ZKW_ACK_PAGE_SIZE) < 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		goto fail;
	map = mmap(NULL, ZKW_ACK_PAGE_SIZE, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		goto fail;
	*page = map;
	return fd;
fail:
	e = -errno;
	close(fd);
	return e;
}

/* Our own segment, opened read-only by name for the subscriber: the name
 * always leads to the current segment (a growth renames the new one over
 * it); a segment that is not ours or that others may write is refused. */
static int segment_fd(const broker_watch *w)
{
	struct stat st;
	int fd = shm_open(w->shm, O_RDONLY | O_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || st.st_uid != geteuid() || (st.st_mode & 022)) {
		close(fd);
		return -EPERM;
	}
	return fd;
}

/* Answer the pending SUBSCRIBE of c with the watch's state now. */
static void answer_subscribe(broker *b, conn *c)
{
	sub *s = c->pending;
	broker_watch *w = s->w;
	int ack_fd = c->pending_ack_fd;
	char error[ZKW_ERROR_MAX], e1[ZKW_PROTO_LINE_MAX / 2], e2[ZKW_PROTO_LINE_MAX / 2];
	int fd;

	(void)b;
	c->pending = NULL;
	c->pending_ack_fd = -1;
	fd = segment_fd(w);
	if (fd < 0) {
		out_printf(c, "ERR internal cannot open segment %s: %s\n", esc(e1, sizeof(e1), w->shm),
		           strerror(-fd));
		close(ack_fd);
		/* The subscription stays: the watch lives, a retry may work. */
	} else {
		broker_watch_error(w, error, sizeof(error));
		if (!__atomic_load_n(&w->pub_evaluated, __ATOMIC_ACQUIRE))
			snprintf(error, sizeof(error), "%s: no answer from ZooKeeper within %d ms", ZKW_ERR_CONNECTING,
			         b->cli.subscribe_timeout_ms);
		out_printf(c, "OK shm=%s valid=%u generation=%llu error=%s\n", esc(e1, sizeof(e1), w->shm),
		           __atomic_load_n(&w->pub_valid, __ATOMIC_RELAXED),
		           (unsigned long long)__atomic_load_n(&w->pub_generation, __ATOMIC_RELAXED),
		           esc(e2, sizeof(e2), error));
		c->out_fds[0] = fd;
		c->out_fds[1] = ack_fd;
		c->n_out_fds = 2;
	}
	flush_out(c);
}

/* The request words after SUBSCRIBE/UNSUBSCRIBE: path [pointer|bundle]
 * [ensure]. 0, or -EINVAL with the refusal in why. */
static int parse_target(char *args, char *path, size_t cap, bool *pointer, bool *bundle, bool *ensure, char *why,
                        size_t whylen)
{
	char check[ZKW_POINTER_MAX], *word, *save = NULL;

	*pointer = *bundle = *ensure = false;
	word = strtok_r(args, " ", &save);
	if (!word) {
		snprintf(why, whylen, "usage want: SUBSCRIBE <path> [pointer|bundle] [ensure]");
		return -EINVAL;
	}
	zkw__proto_unescape(path, cap, word);
	while ((word = strtok_r(NULL, " ", &save))) {
		if (strcmp(word, "pointer") == 0)
			*pointer = true;
		else if (strcmp(word, "bundle") == 0)
			*bundle = true;
		else if (strcmp(word, "ensure") == 0)
			*ensure = true;
		else {
			char e[64];

			snprintf(why, whylen, "usage unknown word %s (want pointer, bundle or ensure)",
			         esc(e, sizeof(e), word));
			return -EINVAL;
		}
	}
	if (*pointer && *bundle) {
		snprintf(why, whylen, "usage pointer and bundle do not go together");
		return -EINVAL;
	}
	/* What zkw_session_watch takes: the pointer rules, untrimmed. */
	if (path[0] != '/' || zkw_pointer_parse(path, strlen(path), check, sizeof(check), NULL) < 0 ||
	    strcmp(check, path) != 0) {
		char e[ZKW_PROTO_LINE_MAX];

		snprintf(why, whylen, "path %s is not a valid absolute ZooKeeper path", esc(e, sizeof(e), path));
		return -EINVAL;
	}
	return 0;
}

static void do_subscribe(broker *b, conn *c, char *args)
{
	char path[ZKW_PROTO_LINE_MAX], why[ZKW_PROTO_LINE_MAX];
	broker_watch *w;
	uid_count *u;
	bool pointer, bundle, ensure;
	sub *s;
	int rc, ack;

	if (parse_target(args, path, sizeof(path), &pointer, &bundle, &ensure, why, sizeof(why)) < 0) {
		out_printf(c, "ERR %s\n", why);
		return;
	}
	if (policy_check(b, c, path, ensure, why, sizeof(why)) < 0) {
		zkw__stats_add(ZKW_STAT_SUBSCRIPTIONS_REFUSED);
		out_printf(c, "ERR %s\n", why);
		return;
	}
	u = uid_slot(c->uid, true);
	if (!u) {
		out_printf(c, "ERR internal out of memory\n");
		return;
	}
	if (u->subs >= (unsigned)b->cli.max_peer_subscriptions) {
		zkw__stats_add(ZKW_STAT_SUBSCRIPTIONS_REFUSED);
		out_printf(c, "ERR limit uid %u holds %u subscriptions (--max-peer-subscriptions %d)\n",
		           (unsigned)c->uid, u->subs, b->cli.max_peer_subscriptions);
		return;
	}
	if (ctl.nsubs >= (unsigned)(b->cli.max_connections + b->cli.max_watches)) {
		zkw__stats_add(ZKW_STAT_SUBSCRIPTIONS_REFUSED);
		out_printf(c, "ERR limit the broker holds %u subscriptions (--max-connections + --max-watches)\n",
		           ctl.nsubs);
		return;
	}
	w = broker_watch_find(b, path, pointer, bundle);
	if (!w) {
		if (b->nwatches >= (size_t)b->cli.max_watches) {
			zkw__stats_add(ZKW_STAT_SUBSCRIPTIONS_REFUSED);
			out_printf(c, "ERR limit the broker holds %zu watches (--max-watches %d)\n", b->nwatches,
			           b->cli.max_watches);
			return;
		}
		if (b->nwatches >= b->fd_watch_cap) {
			zkw__stats_add(ZKW_STAT_SUBSCRIPTIONS_REFUSED);
			out_printf(c, "ERR limit the broker holds %zu watches, all its open file limit (%llu) allows: "
			              "raise LimitNOFILE= / ulimit -n\n",
			           b->nwatches, b->fd_limit);
			return;
		}
		rc = broker_watch_add(b, path, pointer, bundle, ensure, false, NULL, b->cli.demand.capacity, &w, why,
		                      sizeof(why));
		if (rc == 0 && (rc = broker_watch_start(b, w)) < 0) {
			broker_watch_remove(b, w, "Watch could not start");
			snprintf(why, sizeof(why), "cannot watch %.2000s: %s", path, strerror(-rc));
		}
		if (rc < 0) {
			zkw__log_printf(ZKW_LOG_ERROR, "subscription of pid %ld uid %u to %s refused: %s", (long)c->pid,
			                (unsigned)c->uid, path, why);
			out_printf(c, "ERR internal %s\n", tame(why));
			return;
		}
		zkw__log_printf(ZKW_LOG_INFO, "%s%s added on demand for pid %ld (%s, uid %u)", path,
		                pointer ? " (pointer)" : bundle ? " (bundle)" : "", (long)c->pid, c->comm, (unsigned)c->uid);
	} else if (ensure && !w->ensure) {
		w->ensure = true;
		zkw_watch_ensure(w->watch);
	}
	s = calloc(1, sizeof(*s));
	ack = s ? ack_page(&s->page) : -ENOMEM;
	if (ack < 0) {
		free(s);
		out_printf(c, "ERR internal cannot create the acknowledgement page: %s\n",
		           strerror(ack < 0 ? -ack : ENOMEM));
		if (!w->subscribers && !w->permanent) { /* a watch just added for nobody */
			w->subscribers = 1;
			watch_unsubscribed(b, w);
		}
		return;
	}
	s->w = w;
	c->pending_ack_fd = ack;
	s->next = c->subs;
	c->subs = s;
	w->subscribers++;
	zkw__stats_add(ZKW_STAT_SUBSCRIPTIONS);
	w->linger_until = 0;
	u->subs++;
	ctl.nsubs++;
	c->idle_deadline = 0;
	c->pending = s;
	c->pending_deadline = zkw_clock_mono_ms() + b->cli.subscribe_timeout_ms;
	if (__atomic_load_n(&w->pub_evaluated, __ATOMIC_ACQUIRE))
		answer_subscribe(b, c);
}

static void do_unsubscribe(broker *b, conn *c, char *args)
{
	char path[ZKW_PROTO_LINE_MAX], why[ZKW_PROTO_LINE_MAX];
	bool pointer, bundle, ensure;
	sub **p;

	if (parse_target(args, path, sizeof(path), &pointer, &bundle, &ensure, why, sizeof(why)) < 0) {
		out_printf(c, "ERR %s\n", why);
		return;
	}
	for (p = &c->subs; *p; p = &(*p)->next) {
		sub *s = *p;

		if (s->w->pointer == pointer && s->w->bundle == bundle && strcmp(s->w->path, path) == 0) {
			*p = s->next;
			sub_free(b, c, s);
			if (!c->subs)
				c->idle_deadline = zkw_clock_mono_ms() + IDLE_MS;
			out_printf(c, "OK\n");
			return;
		}
	}
	out_printf(c, "ERR usage not subscribed\n");
}

static void do_list(broker *b, conn *c)
{
	int64_t now = zkw_clock_mono_ms();

	out_printf(c, "OK count=%zu\n", b->nwatches);
	for (size_t i = 0; i < b->nwatches && !c->closing; i++) {
		broker_watch *w = b->watches[i];
		char e1[ZKW_SHM_NAME_MAX * 3 + 1], e2[ZKW_PROTO_LINE_MAX], linger[32] = "-";

		if (!w->permanent && !w->subscribers && w->linger_until)
			snprintf(linger, sizeof(linger), "%lld",
			         (long long)((w->linger_until - now) > 0 ? (w->linger_until - now + 999) / 1000 : 0));
		out_printf(c,
		           "%s path=%s pointer=%d origin=%s subscribers=%u valid=%u generation=%llu bytes=%llu "
		           "capacity=%llu linger=%s bundle=%d\n",
		           esc(e1, sizeof(e1), w->shm), esc(e2, sizeof(e2), w->path), w->pointer,
		           w->permanent ? "config" : "demand", w->subscribers,
		           __atomic_load_n(&w->pub_valid, __ATOMIC_RELAXED),
		           (unsigned long long)__atomic_load_n(&w->pub_generation, __ATOMIC_RELAXED),
		           (unsigned long long)__atomic_load_n(&w->pub_len, __ATOMIC_RELAXED),
		           (unsigned long long)__atomic_load_n(&w->pub_capacity, __ATOMIC_RELAXED), linger, w->bundle);
	}
}

static void do_status(broker *b, conn *c)
{
	char hosts[ZKW_PROTO_LINE_MAX];
	int64_t id = 0;
	bool connected = zkw_session_identity(b->session, &id, NULL) == 0;

	out_printf(c,
	           "OK proto=%d broker=%s pid=%ld connected=%d session=0x%llx hosts=%s watches=%zu demand=%zu "
	           "connections=%d subscribers=%u uptime=%lld\n",
	           PROTO_VERSION, ZKW_VERSION, (long)getpid(), connected, (unsigned long long)id,
	           esc(hosts, sizeof(hosts), b->cli.hosts), b->nwatches, b->ndemand, ctl.nconns, ctl.nsubs,
	           (long long)((zkw_clock_mono_ms() - b->started_ms) / 1000));
}

static void do_readers(broker *b, conn *c, char *args)
{
	char name[ZKW_SHM_NAME_MAX + 2], e[ZKW_PROTO_LINE_MAX];
	broker_watch *w;
	unsigned count = 0;

	while (*args == ' ')
		args++;
	zkw__proto_unescape(name + 1, sizeof(name) - 1, args);
	name[0] = '/';
	w = broker_watch_by_name(b, name[1] == '/' ? name + 1 : name);
	if (!w) {
		out_printf(c, "ERR usage no segment %s in this broker (see LIST)\n", esc(e, sizeof(e), name));
		return;
	}
	for (conn *k = ctl.conns; k; k = k->next)
		for (sub *s = k->subs; s; s = s->next)
			count += s->w == w;
	out_printf(c, "OK count=%u\n", count);
	for (conn *k = ctl.conns; k; k = k->next)
		for (sub *s = k->subs; s; s = s->next) {
			struct zkw_ack ack;

			if (s->w != w)
				continue;
			/* The generation pairs with the subscriber's release store:
			 * the time it stored first is there. */
			ack.generation = __atomic_load_n(&s->page->generation, __ATOMIC_ACQUIRE);
			ack.taken_ns = __atomic_load_n(&s->page->taken_ns, __ATOMIC_RELAXED);
			out_printf(c, "pid=%ld uid=%u comm=%s generation=%llu at=%llu\n", (long)k->pid,
			           (unsigned)k->uid, esc(e, sizeof(e), k->comm), (unsigned long long)ack.generation,
			           (unsigned long long)ack.taken_ns);
		}
}

/* One request line (NUL-terminated, without its newline). */
static void handle_line(broker *b, conn *c, char *line)
{
	char *args = line, *cmd;
	size_t n = strlen(line);

	if (n && line[n - 1] == '\r')
		line[--n] = '\0';
	while (*args == ' ')
		args++;
	cmd = args;
	while (*args && *args != ' ')
		args++;
	if (*args)
		*args++ = '\0';
	if (!*cmd)
		return; /* an empty line asks nothing */
	if (strcmp(cmd, "SUBSCRIBE") == 0)
		do_subscribe(b, c, args);
	else if (strcmp(cmd, "UNSUBSCRIBE") == 0)
		do_unsubscribe(b, c, args);
	else if (strcmp(cmd, "LIST") == 0)
		do_list(b, c);
	else if (strcmp(cmd, "STATUS") == 0)
		do_status(b, c);
	else if (strcmp(cmd, "READERS") == 0)
		do_readers(b, c, args);
	else if (strcmp(cmd, "HELLO") == 0) {
		long v = strtol(args, NULL, 10);

		if (v == PROTO_VERSION || !*args)
			out_printf(c, "OK proto=%d broker=%s\n", PROTO_VERSION, ZKW_VERSION);
		else
			out_printf(c, "ERR usage protocol %ld not supported (this broker speaks %d)\n", v,
			           PROTO_VERSION);
	} else {
		char e[64];

		out_printf(c, "ERR usage unknown request %s (want SUBSCRIBE, UNSUBSCRIBE, LIST, STATUS, READERS "
		              "or HELLO)\n",
		           esc(e, sizeof(e), cmd));
	}
	if (!c->subs && !c->pending)
		c->idle_deadline = zkw_clock_mono_ms() + IDLE_MS;
}

/* Handle the complete lines buffered, one at a time: stop at the first
 * whose answer is not sent yet. */
static void process_input(broker *b, conn *c)
{
	while (!c->pending && !c->closing && c->outoff == c->outlen) {
		char *nl = memchr(c->in, '\n', c->inlen);
		size_t used;

		if (!nl) {
			if (c->inlen >= ZKW_PROTO_LINE_MAX) {
				out_printf(c, "ERR usage request longer than %d bytes\n", ZKW_PROTO_LINE_MAX);
				c->closing = true;
			}
			break;
		}
		*nl = '\0';
		used = (size_t)(nl - c->in) + 1;
		handle_line(b, c, c->in);
		memmove(c->in, c->in + used, c->inlen - used);
		c->inlen -= used;
		if (c->outlen)
			flush_out(c);
	}
	update_events(c);
}

/* ---- connections ------------------------------------------------------ */

static void conn_close(broker *b, conn *c)
{
	epoll_ctl(ctl.epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	while (c->n_out_fds)
		close(c->out_fds[--c->n_out_fds]);
	if (c->pending && c->pending_ack_fd >= 0)
		close(c->pending_ack_fd);
	while (c->subs) {
		sub *s = c->subs;

		c->subs = s->next;
		sub_free(b, c, s);
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		ctl.conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	ctl.nconns--;
	free(c->out);
	free(c);
}

static void peer_identity(conn *c)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	char path[64];
	int fd;

	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
		c->pid = cred.pid;
		c->uid = cred.uid;
		c->gid = cred.gid;
	} else {
		c->uid = (uid_t)-1; /* nobody: matches no rule */
		c->gid = (gid_t)-1;
	}
	len = sizeof(c->groups);
	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERGROUPS, c->groups, &len) == 0)
		c->ngroups = (int)(len / sizeof(gid_t));
	snprintf(c->comm, sizeof(c->comm), "?");
	snprintf(path, sizeof(path), "/proc/%ld/comm", (long)c->pid);
	fd = c->pid > 0 ? open(path, O_RDONLY | O_CLOEXEC) : -1;
	if (fd >= 0) {
		ssize_t n = read(fd, c->comm, sizeof(c->comm) - 1);

		if (n > 0) {
			c->comm[n] = '\0';
			c->comm[strcspn(c->comm, "\n")] = '\0';
		}
		close(fd);
	}
}

static void accept_all(broker *b)
{
	for (;;) {
		int fd = accept4(ctl.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct epoll_event ev = {.events = EPOLLIN};
		conn *c;

		if (fd < 0) {
			static zkw__log_limit lim = {.burst = 1};
			unsigned missed;

			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK &&
			    zkw__log_limit_event(&lim, zkw_clock_mono_ms(), &missed))
				zkw__log_printf(ZKW_LOG_WARN, "control socket: accept: %s", strerror(errno));
			return;
		}
		if (ctl.nconns >= b->cli.max_connections) {
			char line[128];
			int n = snprintf(line, sizeof(line), "ERR limit %d connections open (--max-connections %d)\n",
			                 ctl.nconns, b->cli.max_connections);

			if (send(fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
				/* it is closed anyway */
			}
			close(fd);
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->pending_ack_fd = -1;
		peer_identity(c);
		c->idle_deadline = zkw_clock_mono_ms() + IDLE_MS;
		ev.data.ptr = c;
		if (epoll_ctl(ctl.epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			close(fd);
			free(c);
			continue;
		}
		c->next = ctl.conns;
		if (ctl.conns)
			ctl.conns->prev = c;
		ctl.conns = c;
		ctl.nconns++;
	}
}

static void conn_readable(broker *b, conn *c)
{
	for (;;) {
		ssize_t n = recv(c->fd, c->in + c->inlen, ZKW_PROTO_LINE_MAX - c->inlen, MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0) {
			conn_close(b, c);
			return;
		}
		c->inlen += (size_t)n;
		if (c->inlen >= ZKW_PROTO_LINE_MAX || memchr(c->in + c->inlen - (size_t)n, '\n', (size_t)n))
			break;
	}
	process_input(b, c);
	if (c->closing && c->outoff == c->outlen)
		conn_close(b, c);
}

/* ---- the loop --------------------------------------------------------- */

static void answer_evaluated(broker *b)
{
	for (conn *c = ctl.conns, *next; c; c = next) {
		next = c->next;
		if (c->pending && __atomic_load_n(&c->pending->w->pub_evaluated, __ATOMIC_ACQUIRE)) {
			answer_subscribe(b, c);
			process_input(b, c);
		}
	}
}

/* Deadlines: pending answers, idle connections, lingering watches. Returns
 * the next one (CLOCK_MONOTONIC ms). */
static int64_t run_timers(broker *b, int64_t now)
{
	int64_t next = ctl.sweep_at;

	for (conn *c = ctl.conns, *nx; c; c = nx) {
		nx = c->next;
		if (c->pending && now >= c->pending_deadline) {
			answer_subscribe(b, c);
			process_input(b, c);
		}
		if (!c->subs && !c->pending && c->idle_deadline && now >= c->idle_deadline) {
			conn_close(b, c);
			continue;
		}
		if (c->pending && c->pending_deadline < next)
			next = c->pending_deadline;
		if (!c->subs && !c->pending && c->idle_deadline && c->idle_deadline < next)
			next = c->idle_deadline;
	}
	if (now >= ctl.sweep_at) {
		for (size_t i = 0; i < b->nwatches;) {
			broker_watch *w = b->watches[i];

			if (!w->permanent && !w->subscribers && w->linger_until && now >= w->linger_until)
				broker_watch_remove(b, w, "Watch removed: no subscriber for --linger"); /* i now holds another */
			else
				i++;
		}
		ctl.sweep_at = now + SWEEP_MS;
		if (ctl.sweep_at < next)
			next = ctl.sweep_at;
	}
	return next;
}

static void *control_main(void *arg)
{
	broker *b = arg;
	struct epoll_event events[64];

	ctl.sweep_at = zkw_clock_mono_ms() + SWEEP_MS;
	for (;;) {
		int64_t now = zkw_clock_mono_ms(), next = run_timers(b, now);
		int64_t wait = next - zkw_clock_mono_ms();
		int n = epoll_wait(ctl.epoll_fd, events, 64, wait < 0 ? 0 : wait > 60000 ? 60000 : (int)wait);

		for (int i = 0; i < n; i++) {
			void *p = events[i].data.ptr;

			if (p == &tag_stop)
				return NULL;
			if (p == &tag_call) {
				run_call();
			} else if (p == &tag_listen) {
				accept_all(b);
			} else if (p == &tag_evaluated) {
				uint64_t count;

				if (read(broker_evaluated_fd, &count, sizeof(count)) < 0) {
					/* EAGAIN: another wake took it */
				}
				answer_evaluated(b);
			} else {
				conn *c = p;

				/* A connection closed earlier in this batch is not
				 * in the list any more: look it up. */
				bool live = false;

				for (conn *k = ctl.conns; k && !live; k = k->next)
					live = k == c;
				if (!live)
					continue;
				if (events[i].events & (EPOLLOUT)) {
					flush_out(c);
					process_input(b, c);
					if (c->closing && c->outoff == c->outlen)
						conn_close(b, c);
				} else if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
					conn_readable(b, c);
				}
			}
		}
	}
}

/* ---- start and stop --------------------------------------------------- */

/* A socket file left by a broker that died is removed; one a live broker
 * listens on is an error, and so is anything that is not a socket. */
static int clear_stale(const char *path, const struct sockaddr_un *addr)
{
	struct stat st;
	int fd, rc;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode)) {
		zkw__log_printf(ZKW_LOG_ERROR, "control socket %s: the path exists and is not a socket", path);
		return -EEXIST;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	rc = connect(fd, (const struct sockaddr *)addr, sizeof(*addr));
	close(fd);
	if (rc == 0) {
		zkw__log_printf(ZKW_LOG_ERROR, "control socket %s: another broker listens there (give --socket)", path);
		return -EADDRINUSE;
	}
	if (errno != ECONNREFUSED) {
		zkw__log_printf(ZKW_LOG_ERROR, "control socket %s: %s", path, strerror(errno));
		return -errno;
	}
	unlink(path);
	return 0;
}

static int add_fd(int fd, void *tag)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = tag};

	return epoll_ctl(ctl.epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

int control_start(broker *b)
{
	const char *path = b->cli.socket_path;
	struct sockaddr_un addr;
	char dir[sizeof(addr.sun_path)], *slash;
	struct stat st;
	mode_t old_umask;
	int rc;

	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	snprintf(ctl.path, sizeof(ctl.path), "%s", path);
	/* The directory (/run/zkw): created if missing, one level. */
	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
			zkw__log_printf(ZKW_LOG_ERROR, "control socket %s: cannot create %s: %s (give --socket PATH or "
			                               "--socket none)",
			                path, dir, strerror(errno));
			return -errno;
		}
	}
	if ((rc = clear_stale(path, &addr)) < 0)
		return rc;
	ctl.b = b;
	ctl.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	ctl.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	ctl.stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	broker_evaluated_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	call.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ctl.listen_fd < 0 || ctl.epoll_fd < 0 || ctl.stop_fd < 0 || broker_evaluated_fd < 0 || call.fd < 0) {
		zkw__log_printf(ZKW_LOG_ERROR, "control socket: %s", strerror(errno));
		return -errno;
	}
	/* Nobody may connect before the mode and group are right. */
	old_umask = umask(0177);
	rc = bind(ctl.listen_fd, (const struct sockaddr *)&addr, sizeof(addr));
	umask(old_umask);
	if (rc < 0) {
		rc = -errno;
		zkw__log_printf(ZKW_LOG_ERROR, "control socket %s: cannot bind: %s (give --socket PATH or --socket none)",
		                path, strerror(-rc));
		return rc;
	}
	if ((b->cli.socket_group != (gid_t)-1 && chown(path, (uid_t)-1, b->cli.socket_group) < 0) ||
	    chmod(path, b->cli.socket_mode) < 0 || stat(path, &st) < 0) {
		rc = -errno;
		zkw__log_printf(ZKW_LOG_ERROR, "control socket %s: cannot set its mode or group: %s", path,
		                strerror(-rc));
		unlink(path);
		return rc;
	}
	ctl.dev = st.st_dev;
	ctl.ino = st.st_ino;
	if (listen(ctl.listen_fd, 128) < 0 || (rc = add_fd(ctl.listen_fd, &tag_listen)) < 0 ||
	    (rc = add_fd(ctl.stop_fd, &tag_stop)) < 0 || (rc = add_fd(broker_evaluated_fd, &tag_evaluated)) < 0 ||
	    (rc = add_fd(call.fd, &tag_call)) < 0) {
		rc = rc ? rc : -errno;
		zkw__log_printf(ZKW_LOG_ERROR, "control socket %s: %s", path, strerror(-rc));
		unlink(path);
		return rc;
	}
	rc = pthread_create(&ctl.thread, NULL, control_main, b);
	if (rc) {
		zkw__log_printf(ZKW_LOG_ERROR, "control socket: cannot start its thread: %s", strerror(rc));
		unlink(path);
		return -rc;
	}
	pthread_setname_np(ctl.thread, "zkw-socket");
	ctl.running = true;
	zkw__log_printf(ZKW_LOG_INFO, "control socket %s (mode %04o) listening", path, (unsigned)b->cli.socket_mode);
	return 0;
}

void control_stop(void)
{
	struct stat st;
	uint64_t one = 1;

	if (ctl.running) {
		if (write(ctl.stop_fd, &one, sizeof(one)) < 0) {
			/* an eventfd far from its maximum: cannot fail */
		}
		pthread_join(ctl.thread, NULL);
		ctl.running = false;
		while (ctl.conns)
			conn_close(ctl.b, ctl.conns);
	}
	/* Remove the socket file only while it is still the one we bound. */
	if (ctl.listen_fd >= 0 && stat(ctl.path, &st) == 0 && st.st_dev == ctl.dev && st.st_ino == ctl.ino)
		unlink(ctl.path);
	if (ctl.listen_fd >= 0)
		close(ctl.listen_fd);
	if (ctl.epoll_fd >= 0)
		close(ctl.epoll_fd);
	if (ctl.stop_fd >= 0)
		close(ctl.stop_fd);
	/* broker_evaluated_fd stays open: publish_state may still write to it
	 * until the session is closed, and a closed number could be reused. */
	ctl.listen_fd = ctl.epoll_fd = ctl.stop_fd = -1;
	free(ctl.uids);
	ctl.uids = NULL;
}
