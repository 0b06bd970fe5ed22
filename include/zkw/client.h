/* SPDX-License-Identifier: Apache-2.0 */
/* client.h - header-only, lock-free reader of a zkw shared-memory segment.
 *
 * A worker process reads the configuration a zkw-broker publishes, with no
 * ZooKeeper session, no lock and no syscall on the read path. Depends on
 * libc and the futex syscall only; never allocates; compiles as C and C++.
 *
 *     zkw_reader r;
 *     if (zkw_reader_open(&r, "/zkw.tmp.myconfig") == 0) {
 *             uint64_t seen = 0;
 *             while (zkw_reader_wait(&r, seen, -1) == 1) {
 *                     zkw_snapshot meta;
 *                     ssize_t n = zkw_reader_read(&r, &meta, buf, sizeof(buf));
 *                     if (n >= 0) { seen = meta.generation; use(buf, n); }
 *             }
 *             zkw_reader_close(&r);
 *     }
 *
 * Poll: zkw_reader_generation() is one acquire load; compare it with the
 * generation you last consumed. Read: zkw_reader_read() copies a consistent
 * snapshot (seqlock, bounded retries). Wait: zkw_reader_wait() blocks on the
 * segment's futex word until the generation moves or a deadline passes.
 * The protocol's steps (seqlock, slot accessor, payload copy, hot line)
 * are in zkw/segment.h, shared with the writer.
 *
 * Trust: a segment's owner decides what readers see and could shrink the
 * object under their mapping (every access would then fault with SIGBUS),
 * so zkw_reader_open() accepts a segment only from a known owner - root,
 * the caller's effective uid, or the one uid it was told (the environment
 * variable ZKW_SEGMENT_OWNER, a uid or a user name, for every reader of a
 * process; zkw_reader_options.expected_uid for one open, which takes
 * precedence) - and never one that group or others may write. r->why then
 * names the owner and how to trust it.
 *
 * Replacement: a broker that cannot take over a segment in place (a reader
 * holds a lock on it, or it was writable by others) replaces it under the
 * same name and marks the old one ZKW_STATE_RETIRED: zkw_reader_retired()
 * turns true, zkw_reader_wait() and zkw_dispatch() return -ESTALE. Close
 * the reader and open the name again; the new segment continues the
 * generations and content_gen, so a dispatcher carries on without
 * delivering anything twice.
 *
 * Caveats, as with libc: zkw_reader_wait() returns -EINTR when a signal
 * arrives.
 */
#ifndef ZKW_CLIENT_H
#define ZKW_CLIENT_H

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <zkw/segment.h> /* the ABI, the seqlock, the futex and clock calls */
#include <zkw/bundle.h>  /* the content of a bundle snapshot (zkw_snapshot.bundle) */

#ifdef __cplusplus
extern "C" {
#endif


/* The environment variable naming the one owner (a uid or a user name) that
 * every reader of the process trusts, instead of root or itself. */
#define ZKW_OWNER_ENV "ZKW_SEGMENT_OWNER"

#ifndef ZKW_READ_RETRIES
#define ZKW_READ_RETRIES 4096 /* seqlock retries before -EAGAIN */
#endif

typedef struct zkw_reader {
	const uint8_t *base; /* PROT_READ mapping */
	size_t map_size;
	int fd;              /* kept for ping's lock probe */
	uint32_t slot_count; /* cached at open: never re-read from the */
	uint64_t slot_size;  /* segment, so a hostile writer cannot */
	uint64_t capacity;   /* steer a reader out of bounds */
	uint16_t abi_minor;  /* cached at open: which hot-line words to believe */
	/* The last open error in words: a static text, or why_buf for a
	 * refused owner or mode. It may point into r itself: copy the text,
	 * not the pointer, before freeing or moving r. */
	const char *why;
	char why_buf[256];
	/* A reader from zkw_reader_subscribe: the connection that holds the
	 * subscription (has_sock) and the acknowledgement page (ack, NULL
	 * otherwise). Both are released by zkw_reader_close. */
	bool has_sock;
	int sock;
	struct zkw_ack *ack;
} zkw_reader;

/* The acknowledgement page of a subscription (docs/design.md, "The control
 * socket"): the subscriber's own 4 KiB page, which the broker only reads.
 * zkw_reader_read stores each new generation it returns: taken_ns first,
 * then the generation with a release store. */
struct zkw_ack {
	uint64_t generation; /* the last generation this subscriber took */
	uint64_t taken_ns;   /* CLOCK_REALTIME when it took it */
};
#define ZKW_ACK_PAGE_SIZE 4096u

typedef struct zkw_snapshot {
	uint64_t generation;
	bool valid;
	bool connected;
	size_t len;      /* content length (needed size on -ENOBUFS) */
	int64_t version; /* ZooKeeper data version, -1 if none */
	int64_t mzxid;
	uint64_t confirmed_ns; /* CLOCK_REALTIME of the last confirmation */
	uint64_t changed_ns;   /* CLOCK_REALTIME the content last changed */
	uint64_t content_gen;  /* generation at which this content appeared */
	/* The content came from the broker's disk cache at a cold start and
	 * ZooKeeper has not confirmed it since (valid is false; the error names
	 * the save time, or, with rejected, why ZooKeeper's content was
	 * refused). */
	bool cached;
	/* ZooKeeper holds newer content that failed the watch's validation
	 * (error says why); this content is the last good one. */
	bool rejected;
	/* The content is a bundle of a znode's children: read it with
	 * zkw_bundle_open() (zkw/bundle.h). */
	bool bundle;
	char error[ZKW_ERROR_MAX];
	char pointer[ZKW_POINTER_MAX];
} zkw_snapshot;

typedef struct zkw_reader_options {
	/* The one owner to trust: the segment must be owned by exactly this
	 * uid (ZKW_SEGMENT_OWNER is then not consulted). (uid_t)-1 = not
	 * told: ZKW_SEGMENT_OWNER if set (exactly that uid), else root or the
	 * caller's effective uid. Group- or other-writable segments are
	 * refused whatever the owner. */
	uid_t expected_uid;
} zkw_reader_options;

/* ---- segment access --------------------------------------------------- */

/* Spin hint between two seqlock attempts. */
static inline void zkw__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#endif
}

static inline const struct zkw_segment_header *zkw__header(const zkw_reader *r)
{
	return (const struct zkw_segment_header *)(const void *)r->base;
}

/* ---- open / close ----------------------------------------------------- */

static inline void zkw_reader_close(zkw_reader *r)
{
	if (r->base)
		munmap((void *)r->base, r->map_size);
	if (r->fd >= 0)
		close(r->fd);
	if (r->ack)
		munmap(r->ack, ZKW_ACK_PAGE_SIZE);
	if (r->has_sock)
		close(r->sock);
	r->base = NULL;
	r->fd = -1;
	r->ack = NULL;
	r->has_sock = false;
}

/* An empty reader (what zkw_reader_close leaves behind). */
static inline void zkw__reader_init(zkw_reader *r)
{
	memset(r, 0, sizeof(*r));
	r->fd = -1;
}

static inline int zkw__reader_fail(zkw_reader *r, int err, const char *why)
{
	zkw_reader_close(r);
	r->why = why;
	return err;
}

/* Check the identity block against the real object size. Every value that
 * later bounds an access is cached in r. */
static inline int zkw__reader_validate(zkw_reader *r, const struct stat *st)
{
	const struct zkw_segment_ident *id = &zkw__header(r)->ident;
	uint64_t capacity, slot_size, seg_size;
	uint32_t slots, header_size;

	/* The acquire load pairs with the release store of the magic in the
	 * writer's init_segment() (broker/publish/writer.c): once the magic is
	 * seen, every other identity field below is there too. */
	if (__atomic_load_n(&id->magic, __ATOMIC_ACQUIRE) != ZKW_SEGMENT_MAGIC)
		return zkw__reader_fail(r, -EBADMSG, "bad magic: not a zkw segment");
	if (__atomic_load_n(&id->abi_major, __ATOMIC_RELAXED) != ZKW_ABI_MAJOR)
		return zkw__reader_fail(r, -EPROTO, "ABI major version mismatch");
	header_size = zkw__load32(&id->header_size);
	capacity = zkw__load64(&id->capacity);
	slot_size = zkw__load64(&id->slot_size);
	slots = zkw__load32(&id->slot_count);
	seg_size = zkw__load64(&id->segment_size);
	if (header_size != ZKW_HEADER_SIZE)
		return zkw__reader_fail(r, -EBADMSG, "corrupt segment: bad header size");
	if (slots < 2 || slots > ZKW_SLOT_COUNT_MAX)
		return zkw__reader_fail(r, -EBADMSG, "corrupt segment: bad slot count");
	if (capacity > ZKW_CAPACITY_MAX)
		return zkw__reader_fail(r, -EBADMSG, "corrupt segment: bad capacity");
	if (slot_size < zkw_segment_slot_size(capacity) || slot_size % ZKW_CACHELINE ||
	    slot_size > zkw_segment_slot_size(ZKW_CAPACITY_MAX))
		return zkw__reader_fail(r, -EBADMSG, "corrupt segment: bad slot size");
	if (seg_size != ZKW_HEADER_SIZE + slots * slot_size)
		return zkw__reader_fail(r, -EBADMSG, "corrupt segment: bad segment size");
	if ((uint64_t)st->st_size < seg_size)
		return zkw__reader_fail(r, -EBADMSG, "truncated segment: smaller than its header says");
	r->capacity = capacity;
	r->slot_size = slot_size;
	r->slot_count = slots;
	/* Pairs with the release store of the minor in the writer's
	 * stamp_broker(): a writer raising the minor stored the hot line's
	 * words of that minor first. */
	r->abi_minor = __atomic_load_n(&id->abi_minor, __ATOMIC_ACQUIRE);
	return 0;
}

/* The owner ZKW_SEGMENT_OWNER names, a uid or a user name: 0 with *uid
 * set; 1 when it is unset or empty, or the process is set-id (whoever
 * started it must not widen its trust, as secure_getenv(3)); -EINVAL when
 * it names no user. */
static inline int zkw__owner_from_env(uid_t *uid)
{
	struct passwd pw, *found = NULL;
	char scratch[1024], *end;
	const char *v;
	unsigned long n;

	if (getuid() != geteuid() || getgid() != getegid())
		return 1;
	v = getenv(ZKW_OWNER_ENV);
	if (!v || !*v)
		return 1;
	if (*v >= '0' && *v <= '9') {
		errno = 0;
		n = strtoul(v, &end, 10);
		if (*end || errno || n >= (unsigned long)(uid_t)-1)
			return -EINVAL;
		*uid = (uid_t)n;
		return 0;
	}
	if (getpwnam_r(v, &pw, scratch, sizeof(scratch), &found) != 0 || !found)
		return -EINVAL;
	*uid = found->pw_uid;
	return 0;
}

/* Is uid (the owner of what we are about to read: "segment owner" or
 * "broker" in `what`) trusted? The policy of the top of this file: 0, or
 * -EPERM / -EINVAL with the reason in r->why_buf. */
static inline int zkw__reader_trust_uid(zkw_reader *r, uid_t uid, const zkw_reader_options *opt, const char *what)
{
	uid_t told = opt ? opt->expected_uid : (uid_t)-1;
	bool from_env = false;
	char owner[64];
	bool trusted;

	if (told == (uid_t)-1) {
		int rc = zkw__owner_from_env(&told);

		if (rc < 0) {
			snprintf(r->why_buf, sizeof(r->why_buf),
			         ZKW_OWNER_ENV "=%.64s names no user (want a uid or a user name)",
			         getenv(ZKW_OWNER_ENV));
			return -EINVAL;
		}
		if (rc > 0)
			told = (uid_t)-1;
		from_env = rc == 0;
	}
	trusted = told == (uid_t)-1 ? uid == 0 || uid == geteuid() : uid == told;
	if (trusted)
		return 0;
	zkw__uid_text(owner, sizeof(owner), uid);
	if (told == (uid_t)-1)
		snprintf(r->why_buf, sizeof(r->why_buf),
		         "%s is %s, not root or you (uid %u): to trust it, "
		         "set " ZKW_OWNER_ENV "=%u or pass expected_uid",
		         what, owner, (unsigned)geteuid(), (unsigned)uid);
	else if (from_env)
		snprintf(r->why_buf, sizeof(r->why_buf), "%s is %s, not uid %u named by " ZKW_OWNER_ENV, what,
		         owner, (unsigned)told);
	else
		snprintf(r->why_buf, sizeof(r->why_buf), "%s is %s, not the expected uid %u", what, owner,
		         (unsigned)told);
	return -EPERM;
}

/* A segment no one but its owner may write. 0, or -EPERM with the reason
 * in r->why_buf. */
static inline int zkw__reader_trust_mode(zkw_reader *r, const struct stat *st)
{
	char owner[64];

	if (!(st->st_mode & (S_IWGRP | S_IWOTH)))
		return 0;
	zkw__uid_text(owner, sizeof(owner), st->st_uid);
	snprintf(r->why_buf, sizeof(r->why_buf),
	         "segment is writable by group or others (mode %04o, owner %s): whoever may write it "
	         "could change what you read; refused",
	         (unsigned)(st->st_mode & 07777), owner);
	return -EPERM;
}

/* The trust policy (see the top of this file), on the open segment's
 * stat. 0, or -EPERM / -EINVAL with the reason in r->why_buf. */
static inline int zkw__reader_trust(zkw_reader *r, const struct stat *st, const zkw_reader_options *opt)
{
	int err = zkw__reader_trust_uid(r, st->st_uid, opt, "segment owner");

	return err ? err : zkw__reader_trust_mode(r, st);
}

/* Map r->fd (trusted already, st its stat) read-only and validate it. */
static inline int zkw__reader_map(zkw_reader *r, const struct stat *st)
{
	void *map;

	if (!S_ISREG(st->st_mode))
		return zkw__reader_fail(r, -EBADMSG, "not a shared-memory segment");
	if ((uint64_t)st->st_size < ZKW_HEADER_SIZE + 2 * (uint64_t)ZKW_SLOT_CONTENT_OFFSET)
		return zkw__reader_fail(r, -EBADMSG, "truncated segment: smaller than a header");
	map = mmap(NULL, (size_t)st->st_size, PROT_READ, MAP_SHARED, r->fd, 0);
	if (map == MAP_FAILED)
		return zkw__reader_fail(r, -errno, "cannot map segment");
	r->base = (const uint8_t *)map;
	r->map_size = (size_t)st->st_size;
	return zkw__reader_validate(r, st);
}

/* Open and validate a segment by name ("name" or "/name"). 0 or -errno:
 * -ENOENT no such segment, -EACCES no permission, -EPERM owner not trusted
 * or segment writable by group or others, -EBADMSG truncated or corrupt,
 * -EPROTO incompatible ABI, -EINVAL bad name or a ZKW_SEGMENT_OWNER that
 * names no user. r->why names the cause in words (for a refused owner: the
 * owner, and how to trust it). */
static inline int zkw_reader_open_ex(zkw_reader *r, const char *shm_name, const zkw_reader_options *opt)
{
	char name[ZKW_SHM_NAME_MAX + 1];
	struct stat st;
	int err;

	zkw__reader_init(r);
	err = zkw_shm_name(name, sizeof(name), shm_name);
	if (err)
		return zkw__reader_fail(r, err, "invalid segment name");
	/* O_NONBLOCK: a FIFO planted under the name must not hang the open
	 * (zkw__reader_map then refuses anything but a regular file). */
	r->fd = shm_open(name, O_RDONLY | O_NONBLOCK | O_CLOEXEC, 0);
	if (r->fd < 0) {
		err = -errno;
		return zkw__reader_fail(r, err,
		                        err == -ENOENT   ? "no such segment (is zkw-broker running?)"
		                        : err == -EACCES ? "permission denied"
		                                         : "cannot open segment");
	}
	if (fstat(r->fd, &st) < 0)
		return zkw__reader_fail(r, -errno, "cannot stat segment");
	err = zkw__reader_trust(r, &st, opt);
	if (err)
		return zkw__reader_fail(r, err, r->why_buf);
	return zkw__reader_map(r, &st);
}

static inline int zkw_reader_open(zkw_reader *r, const char *shm_name)
{
	return zkw_reader_open_ex(r, shm_name, NULL);
}

/* ---- subscribe through the broker's control socket --------------------
 *
 * The broker's protocol is in docs/design.md ("The control socket"). A
 * subscription asks the broker for a ZooKeeper path: it adds the watch if
 * it has none, and hands over the segment as a read-only descriptor, so
 * the reader never looks the name up in /dev/shm (which a container may not
 * even see). The subscription lives as long as the reader: its connection
 * is kept in r and closed by zkw_reader_close. */

#define ZKW_SOCKET_DEFAULT    "/run/zkw/broker.sock"
#define ZKW_SOCKET_ENV        "ZKW_SOCKET" /* overrides the default path */
#define ZKW_SUBSCRIBE_POINTER 0x1u         /* the node holds the path of the real one */
#define ZKW_SUBSCRIBE_ENSURE  0x2u         /* create it (empty) if missing; needs a policy rule */
#define ZKW_SUBSCRIBE_BUNDLE  0x4u         /* its children as one snapshot (zkw/bundle.h); not with POINTER */
#define ZKW_SUBSCRIBE_TIMEOUT_MS_DEFAULT 15000
#define ZKW_PROTO_LINE_MAX    4096 /* a request or an answer line, '\n' included */

typedef struct zkw_subscribe_options {
	/* The whole request, connect to answer; 0 = the default above (the
	 * broker answers within its own --subscribe-timeout, 5 s unless set). */
	int timeout_ms;
	/* The broker's uid must be this one; (uid_t)-1 = the reader's policy:
	 * ZKW_SEGMENT_OWNER if set, else root or yourself. The segment handed
	 * over must belong to the broker's uid. */
	uid_t expected_uid;
} zkw_subscribe_options;

/* %XX-escape src into dst (cap bytes, NUL-terminated): every byte outside
 * '!'..'~' and '%' itself. -ENAMETOOLONG when it does not fit. */
static inline int zkw__proto_escape(char *dst, size_t cap, const char *src)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (; *src; src++) {
		unsigned char c = (unsigned char)*src;

		if (o + 4 > cap)
			return -ENAMETOOLONG;
		if (c <= ' ' || c >= 0x7f || c == '%') {
			dst[o++] = '%';
			dst[o++] = hex[c >> 4];
			dst[o++] = hex[c & 15];
		} else {
			dst[o++] = (char)c;
		}
	}
	if (o + 1 > cap)
		return -ENAMETOOLONG;
	dst[o] = '\0';
	return 0;
}

/* Undo zkw__proto_escape on the word at src (up to a space or the end)
 * into dst (cap bytes, NUL-terminated, truncated to fit; a NUL byte is
 * kept out). Returns the number of bytes of src consumed. */
static inline size_t zkw__proto_unescape(char *dst, size_t cap, const char *src)
{
	size_t i = 0, o = 0;

	while (src[i] && src[i] != ' ' && src[i] != '\n') {
		char c = src[i++];
		int hi, lo;

		if (c == '%' && src[i] && src[i + 1]) {
			hi = src[i] >= 'A' ? (src[i] | 0x20) - 'a' + 10 : src[i] - '0';
			lo = src[i + 1] >= 'A' ? (src[i + 1] | 0x20) - 'a' + 10 : src[i + 1] - '0';
			if (hi >= 0 && hi < 16 && lo >= 0 && lo < 16 && (hi || lo)) {
				c = (char)(hi << 4 | lo);
				i += 2;
			}
		}
		if (o + 1 < cap)
			dst[o++] = c;
	}
	if (cap)
		dst[o] = '\0';
	return i;
}

/* The value of "key=" among the words of line (escaped), into dst; false
 * when the key is absent. */
static inline bool zkw__proto_value(const char *line, const char *key, char *dst, size_t cap)
{
	size_t klen = strlen(key);
	const char *p = line;

	while (*p) {
		while (*p == ' ')
			p++;
		if (strncmp(p, key, klen) == 0 && p[klen] == '=') {
			zkw__proto_unescape(dst, cap, p + klen + 1);
			return true;
		}
		while (*p && *p != ' ')
			p++;
	}
	return false;
}

static inline int zkw__ms_left(const struct timespec *deadline)
{
	int64_t ms = ((int64_t)deadline->tv_sec * 1000000000 + deadline->tv_nsec -
	              (int64_t)zkw__now_ns(CLOCK_MONOTONIC)) / 1000000;

	return ms < 0 ? 0 : ms > INT32_MAX ? INT32_MAX : (int)ms;
}

/* Read one answer line (NUL-terminated, '\n' dropped) and the descriptors
 * that came with it (at most fds_max; others are closed). 0, -ETIMEDOUT,
 * -ECONNRESET (the broker closed), -EPROTO (a line too long) or -errno. */
static inline int zkw__proto_answer(int sock, char *line, size_t cap, int *fds, int fds_max, int *nfds,
                                    const struct timespec *deadline)
{
	size_t len = 0;

	*nfds = 0;
	for (;;) {
		union {
			struct cmsghdr align;
			char buf[CMSG_SPACE(4 * sizeof(int))];
		} control;
		struct iovec iov;
		struct msghdr msg;
		struct cmsghdr *c;
		struct pollfd pfd;
		ssize_t n;
		char *nl;
		int rc;

		pfd.fd = sock;
		pfd.events = POLLIN;
		pfd.revents = 0;
		rc = poll(&pfd, 1, zkw__ms_left(deadline));
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc < 0)
			return -errno;
		if (rc == 0)
			return -ETIMEDOUT;
		if (len + 1 >= cap)
			return -EPROTO;
		/* Byte by byte up to the newline would cost a syscall each: the
		 * broker writes one answer per request and waits for the next
		 * request, so nothing after the newline is ours to lose. */
		iov.iov_base = line + len;
		iov.iov_len = cap - 1 - len;
		memset(&msg, 0, sizeof(msg));
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		msg.msg_control = control.buf;
		msg.msg_controllen = sizeof(control.buf);
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
			const unsigned char *data;
			size_t count, i;

			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			data = CMSG_DATA(c);
			count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (i = 0; i < count; i++) {
				int fd;

				memcpy(&fd, data + i * sizeof(int), sizeof(int));
				if (*nfds < fds_max)
					fds[(*nfds)++] = fd;
				else
					close(fd);
			}
		}
		if (n == 0)
			return -ECONNRESET;
		len += (size_t)n;
		line[len] = '\0';
		nl = (char *)memchr(line, '\n', len);
		if (nl) {
			*nl = '\0';
			if (nl > line && nl[-1] == '\r')
				nl[-1] = '\0';
			return 0;
		}
	}
}

/* The errno an ERR answer's reason word stands for. */
static inline int zkw__proto_errno(const char *reason)
{
	if (strncmp(reason, "policy", 6) == 0)
		return -EACCES;
	if (strncmp(reason, "limit", 5) == 0)
		return -ENOSPC;
	if (strncmp(reason, "usage", 5) == 0 || strncmp(reason, "path", 4) == 0)
		return -EINVAL;
	if (strncmp(reason, "busy", 4) == 0)
		return -EAGAIN;
	return -EPROTO;
}

/* Subscribe to zk_path through the broker at socket_path (NULL: $ZKW_SOCKET,
 * else ZKW_SOCKET_DEFAULT) and open the segment it hands over into r.
 * flags: ZKW_SUBSCRIBE_POINTER, ZKW_SUBSCRIBE_ENSURE, ZKW_SUBSCRIBE_BUNDLE. opt may be NULL.
 * Once it returns 0, r reads as after zkw_reader_open (the broker answered
 * after the watch's first evaluation: valid, or invalid with its reason),
 * and acknowledges each generation zkw_reader_read returns (see struct
 * zkw_ack). When a wait says -ESTALE, zkw_reader_close and subscribe again.
 *
 * 0 or -errno, with r->why in words: -ENOENT / -ECONNREFUSED no broker on
 * that socket, -EPERM a broker or segment owner not trusted (as
 * zkw_reader_open), -EACCES refused by the broker's policy, -ENOSPC a
 * broker's cap reached, -EINVAL a bad path or flags (also refused by the
 * broker), -ETIMEDOUT no answer in time, -EPROTO an answer not understood,
 * and the errors of zkw_reader_open for the segment itself. Blocks for at
 * most opt->timeout_ms. */
static inline int zkw_reader_subscribe_ex(zkw_reader *r, const char *socket_path, const char *zk_path,
                                          unsigned flags, const zkw_subscribe_options *opt)
{
	char request[ZKW_PROTO_LINE_MAX], answer[ZKW_PROTO_LINE_MAX], path[ZKW_PROTO_LINE_MAX];
	zkw_reader_options ropt = {opt ? opt->expected_uid : (uid_t)-1};
	struct sockaddr_un addr;
	struct timespec deadline;
	/* struct ucred's layout (the kernel's ABI), which glibc only names
	 * under _GNU_SOURCE: this header asks for _DEFAULT_SOURCE at least. */
	struct {
		pid_t pid;
		uid_t uid;
		gid_t gid;
	} cred;
	socklen_t credlen = sizeof(cred);
	struct stat st;
	int fds[2], nfds = 0, sock, err, timeout_ms;
	const char *env;
	size_t plen, rlen;

	zkw__reader_init(r);
	timeout_ms = opt && opt->timeout_ms > 0 ? opt->timeout_ms : ZKW_SUBSCRIBE_TIMEOUT_MS_DEFAULT;
	zkw__deadline(&deadline, timeout_ms);
	if (!socket_path || !*socket_path) {
		env = getuid() == geteuid() && getgid() == getegid() ? getenv(ZKW_SOCKET_ENV) : NULL;
		socket_path = env && *env ? env : ZKW_SOCKET_DEFAULT;
	}
	if (!zk_path || zk_path[0] != '/' ||
	    (flags & ~(ZKW_SUBSCRIBE_POINTER | ZKW_SUBSCRIBE_ENSURE | ZKW_SUBSCRIBE_BUNDLE)) ||
	    ((flags & ZKW_SUBSCRIBE_POINTER) && (flags & ZKW_SUBSCRIBE_BUNDLE)))
		return zkw__reader_fail(r, -EINVAL, "bad subscription: want an absolute ZooKeeper path and "
		                                    "ZKW_SUBSCRIBE_* flags");
	plen = strlen(socket_path);
	if (plen >= sizeof(addr.sun_path))
		return zkw__reader_fail(r, -ENAMETOOLONG, "socket path too long");
	if (zkw__proto_escape(path, sizeof(path) - 64, zk_path) < 0)
		return zkw__reader_fail(r, -ENAMETOOLONG, "ZooKeeper path too long");
	rlen = (size_t)snprintf(request, sizeof(request), "SUBSCRIBE %s%s%s%s\n", path,
	                        flags & ZKW_SUBSCRIBE_POINTER ? " pointer" : "",
	                        flags & ZKW_SUBSCRIBE_ENSURE ? " ensure" : "",
	                        flags & ZKW_SUBSCRIBE_BUNDLE ? " bundle" : "");

	sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return zkw__reader_fail(r, -errno, "cannot create a socket");
	r->sock = sock;
	r->has_sock = true;
	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	memcpy(addr.sun_path, socket_path, plen + 1);
	if (connect(sock, (const struct sockaddr *)&addr, sizeof(addr)) < 0) {
		err = -errno;
		snprintf(r->why_buf, sizeof(r->why_buf), "cannot connect to the broker at %.120s: %.40s%s",
		         socket_path, strerror(-err),
		         err == -ENOENT || err == -ECONNREFUSED ? " (is zkw-broker running with its socket?)" : "");
		return zkw__reader_fail(r, err, r->why_buf);
	}
	/* The kernel says who listens; the segment must be theirs. */
	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &credlen) < 0)
		return zkw__reader_fail(r, -errno, "cannot identify the broker (SO_PEERCRED)");
	err = zkw__reader_trust_uid(r, cred.uid, &ropt, "broker");
	if (err)
		return zkw__reader_fail(r, err, r->why_buf);
	if (send(sock, request, rlen, MSG_NOSIGNAL) != (ssize_t)rlen)
		return zkw__reader_fail(r, errno ? -errno : -EIO, "cannot send the request to the broker");
	err = zkw__proto_answer(sock, answer, sizeof(answer), fds, 2, &nfds, &deadline);
	if (err) {
		while (nfds > 0)
			close(fds[--nfds]);
		return zkw__reader_fail(r, err,
		                        err == -ETIMEDOUT    ? "the broker did not answer in time"
		                        : err == -ECONNRESET ? "the broker closed the connection"
		                                             : "cannot read the broker's answer");
	}
	if (strncmp(answer, "ERR ", 4) == 0) {
		while (nfds > 0)
			close(fds[--nfds]);
		snprintf(r->why_buf, sizeof(r->why_buf), "broker refused: %.200s", answer + 4);
		return zkw__reader_fail(r, zkw__proto_errno(answer + 4), r->why_buf);
	}
	if (strncmp(answer, "OK", 2) != 0 || nfds < 1) {
		while (nfds > 0)
			close(fds[--nfds]);
		return zkw__reader_fail(r, -EPROTO, "the broker's answer carries no segment");
	}
	r->fd = fds[0];
	if (fstat(r->fd, &st) < 0) {
		err = -errno;
		if (nfds > 1)
			close(fds[1]);
		return zkw__reader_fail(r, err, "cannot stat segment");
	}
	if (st.st_uid != cred.uid) {
		snprintf(r->why_buf, sizeof(r->why_buf), "segment owner uid %u is not the broker's uid %u",
		         (unsigned)st.st_uid, (unsigned)cred.uid);
		err = -EPERM;
	} else {
		err = zkw__reader_trust_mode(r, &st);
	}
	if (err) {
		if (nfds > 1)
			close(fds[1]);
		return zkw__reader_fail(r, err, r->why_buf);
	}
	/* The acknowledgement page is optional: without one, nothing is acked. */
	if (nfds > 1) {
		struct stat ast;

		if (fstat(fds[1], &ast) == 0 && S_ISREG(ast.st_mode) && ast.st_size >= (off_t)ZKW_ACK_PAGE_SIZE) {
			void *page = mmap(NULL, ZKW_ACK_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fds[1], 0);

			if (page != MAP_FAILED)
				r->ack = (struct zkw_ack *)page;
		}
		close(fds[1]);
	}
	return zkw__reader_map(r, &st);
}

static inline int zkw_reader_subscribe(zkw_reader *r, const char *socket_path, const char *zk_path, unsigned flags)
{
	return zkw_reader_subscribe_ex(r, socket_path, zk_path, flags, NULL);
}

/* Report that this subscriber took generation gen (zkw_reader_read does it
 * for you): one store into its own page, read by the broker for
 * `zkw-inspect --readers`. A reader without a subscription has no page:
 * nothing happens. */
static inline void zkw_reader_ack(const zkw_reader *r, uint64_t gen)
{
	struct timespec now;

	if (!r->ack || __atomic_load_n(&r->ack->generation, __ATOMIC_RELAXED) == gen)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	__atomic_store_n(&r->ack->taken_ns, (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec,
	                 __ATOMIC_RELAXED);
	__atomic_store_n(&r->ack->generation, gen, __ATOMIC_RELEASE);
}

/* ---- poll ------------------------------------------------------------- */

/* The last published generation: one acquire load (zkw_segment_generation,
 * paired with the release store in zkw_segment_announce()). 0 = nothing
 * published yet. */
static inline uint64_t zkw_reader_generation(const zkw_reader *r)
{
	return zkw_segment_generation(&zkw__header(r)->hot);
}

/* ZKW_STATE_* bits: one acquire load (zkw_segment_state). */
static inline uint32_t zkw_reader_state(const zkw_reader *r)
{
	return zkw_segment_state(&zkw__header(r)->hot);
}

/* Is the published snapshot valid? One load. A broker that crashed leaves
 * its last state behind: ask zkw_reader_ping() for liveness. */
static inline bool zkw_reader_is_valid(const zkw_reader *r)
{
	return (zkw_reader_state(r) & ZKW_STATE_VALID) != 0;
}

/* Has a broker replaced this segment by a new one under the same name
 * (ZKW_STATE_RETIRED)? One load. Nothing is published here any more:
 * close the reader and open the name again. */
static inline bool zkw_reader_retired(const zkw_reader *r)
{
	return (zkw_reader_state(r) & ZKW_STATE_RETIRED) != 0;
}

/* Is a broker holding the segment? The running broker holds a write lock
 * on it. The probe asks F_OFD_GETLK whether a READ lock could be taken,
 * which only a write lock prevents: a read lock (all that a read-only
 * descriptor can take) never counts, so nobody but the broker can make
 * this true. The probe takes no lock itself. */
static inline bool zkw_reader_broker_alive(const zkw_reader *r)
{
	return zkw__ofd_write_locked(r->fd);
}

/* True when the broker is alive and its ZooKeeper session is connected. */
static inline bool zkw_reader_ping(const zkw_reader *r)
{
	uint32_t want = ZKW_STATE_RUNNING | ZKW_STATE_CONNECTED;

	return (zkw_reader_state(r) & want) == want && zkw_reader_broker_alive(r);
}

static inline uint32_t zkw_reader_broker_pid(const zkw_reader *r)
{
	return zkw__load32(&zkw__header(r)->ident.broker_pid);
}

static inline uint64_t zkw_reader_broker_epoch(const zkw_reader *r)
{
	return zkw__load64(&zkw__header(r)->ident.broker_epoch);
}

static inline uint64_t zkw_reader_capacity(const zkw_reader *r)
{
	return r->capacity;
}

/* The published slot's confirmation time, through the seqlock: for
 * segments of writers before ABI minor 2. After ZKW_READ_RETRIES laps,
 * the last value loaded (a real confirmation, of a neighbouring
 * generation). */
static inline uint64_t zkw__slot_confirmed_ns(const zkw_reader *r)
{
	uint64_t confirmed = 0;
	int tries;

	for (tries = 0; tries < ZKW_READ_RETRIES; tries++) {
		uint64_t gen = zkw_reader_generation(r);
		const struct zkw_slot *s = zkw_segment_slot(r->base, r->slot_size, r->slot_count, gen);
		uint64_t seq0 = zkw_slot_read_begin(s), slot_gen;

		if (!(seq0 & 1)) {
			slot_gen = zkw__load64(&s->generation);
			confirmed = zkw__load64(&s->confirmed_ns);
			if (!zkw_slot_read_retry(s, seq0) && slot_gen == gen)
				break;
		}
		zkw__cpu_relax();
	}
	return confirmed;
}

/* CLOCK_REALTIME ns of the last confirmation by ZooKeeper that what is
 * published is current (0 = never). One load of the hot line on a segment
 * of ABI minor 2 or later, whose broker stores it at every publish and
 * also when a reconcile finds nothing changed - that moves no generation
 * and wakes nobody, so poll this for freshness. On an older broker's
 * segment, the published slot's value, through the seqlock. The minor is
 * the one seen at open: reopen to follow a broker upgrade (until then the
 * slot is read, still right) or a downgrade (until then the value stays
 * at the newer broker's last confirmation). */
static inline uint64_t zkw_reader_confirmed_ns(const zkw_reader *r)
{
	if (r->abi_minor >= ZKW_ABI_MINOR_HOT_CONFIRMED)
		return zkw_segment_confirmed_ns(&zkw__header(r)->hot);
	return zkw__slot_confirmed_ns(r);
}

/* ---- read ------------------------------------------------------------- */

static inline void zkw__copy_text(char *dst, const char *src, uint32_t len, uint32_t max)
{
	if (len >= max) /* torn or hostile: the re-check or the bound catches it */
		len = max - 1;
	if (len) /* usually empty; a zero-length rep movsb still costs ~8 ns */
		zkw_payload_load(dst, src, len);
	dst[len] = '\0';
}

/* Copy the current snapshot: content into buf (up to cap bytes), the rest
 * into *meta (may be NULL). Returns the content length; -ENOBUFS when cap
 * is too small (meta->len says how much is needed; nothing copied into
 * buf); -EAGAIN when the writer kept overwriting the slot for
 * ZKW_READ_RETRIES attempts; -EBADMSG when a stable slot is corrupt. */
static inline ssize_t zkw_reader_read(const zkw_reader *r, zkw_snapshot *meta, void *buf, size_t cap)
{
	zkw_snapshot local;
	zkw_snapshot *m = meta ? meta : &local;
	int tries;

	for (tries = 0; tries < ZKW_READ_RETRIES; tries++) {
		uint64_t gen = zkw_reader_generation(r);
		const struct zkw_slot *s = zkw_segment_slot(r->base, r->slot_size, r->slot_count, gen);
		uint64_t seq0, len, slot_gen;
		uint32_t flags, error_len, pointer_len;
		size_t copy;

		/* The seqlock's read side (zkw/segment.h): begin, relaxed
		 * payload loads, retry. */
		seq0 = zkw_slot_read_begin(s);
		if (seq0 & 1) { /* the writer lapped us onto this slot */
			zkw__cpu_relax();
			continue;
		}
		slot_gen = zkw__load64(&s->generation);
		flags = zkw__load32(&s->flags);
		error_len = zkw__load32(&s->error_len);
		len = zkw__load64(&s->len);
		m->version = (int64_t)zkw__load64(&s->version);
		m->mzxid = (int64_t)zkw__load64(&s->mzxid);
		m->confirmed_ns = zkw__load64(&s->confirmed_ns);
		m->changed_ns = zkw__load64(&s->changed_ns);
		m->content_gen = zkw__load64(&s->content_gen);
		pointer_len = zkw__load32(&s->pointer_len);
		if (meta) {
			zkw__copy_text(m->error, s->error, error_len, ZKW_ERROR_MAX);
			zkw__copy_text(m->pointer, s->pointer, pointer_len, ZKW_POINTER_MAX);
		}
		copy = len <= cap && len <= r->capacity ? (size_t)len : 0;
		if (copy)
			zkw_payload_load(buf, (const uint8_t *)s + ZKW_SLOT_CONTENT_OFFSET, copy);

		if (zkw_slot_read_retry(s, seq0) || slot_gen != gen) {
			zkw__cpu_relax();
			continue;
		}
		if (len > r->capacity || error_len >= ZKW_ERROR_MAX || pointer_len >= ZKW_POINTER_MAX)
			return -EBADMSG;
		m->generation = gen;
		m->valid = (flags & ZKW_SLOT_VALID) != 0;
		m->connected = (flags & ZKW_SLOT_CONNECTED) != 0;
		m->cached = (flags & ZKW_SLOT_CACHED) != 0;
		m->rejected = (flags & ZKW_SLOT_REJECTED) != 0;
		m->bundle = (flags & ZKW_SLOT_BUNDLE) != 0;
		if (r->abi_minor >= ZKW_ABI_MINOR_HOT_CONFIRMED) {
			/* A confirmation alone moves only the hot line:
			 * report the newer. */
			uint64_t confirmed = zkw_segment_confirmed_ns(&zkw__header(r)->hot);

			if (confirmed > m->confirmed_ns)
				m->confirmed_ns = confirmed;
		}
		m->len = (size_t)len;
		if (len > cap)
			return -ENOBUFS;
		if (r->ack)
			zkw_reader_ack(r, gen);
		return (ssize_t)len;
	}
	return -EAGAIN;
}

/* ---- wait ------------------------------------------------------------- */

/* Block until the published generation differs from `seen`. Returns 1 when
 * it does, 0 on timeout, -EINTR on a signal, -ESTALE when the segment is
 * retired (zkw_reader_retired(): reopen the name; a new generation is still
 * reported first). timeout_ms < 0 waits forever.
 * Never misses a wakeup: the futex word is loaded before the generation,
 * and the kernel compares it again before sleeping; the writer stores the
 * generation before bumping the word (zkw_segment_announce()). */
static inline int zkw_reader_wait(const zkw_reader *r, uint64_t seen, int timeout_ms)
{
	const struct zkw_segment_hot *hot = &zkw__header(r)->hot;
	struct timespec deadline;
	const struct timespec *dl = zkw__deadline(&deadline, timeout_ms);

	for (;;) {
		uint32_t word_seen = zkw_segment_futex_word(hot);
		int rc;

		if (zkw_reader_generation(r) != seen)
			return 1;
		/* The retiring broker stores the state, then bumps the word
		 * and wakes: seeing the new word means seeing the bit. */
		if (zkw_reader_retired(r))
			return -ESTALE;
		/* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline,
		 * so spurious wakeups and EAGAIN do not stretch the timeout. */
		rc = zkw_segment_futex_wait(hot, word_seen, dl);
		if (rc == -ETIMEDOUT)
			return zkw_reader_generation(r) != seen;
		if (rc && rc != -EAGAIN)
			return rc; /* -EINTR on a signal */
	}
}

/* ---- event dispatcher ------------------------------------------------- */

/* The seed's event mode over shared memory: the handlers (zkw_handlers of
 * zkw/common.h) are called once per change, in the order and under the
 * rule zkw/common.h states (zkw_delivery_next, zkw_delivery_call). */
typedef struct zkw_dispatcher {
	const zkw_reader *reader;
	zkw_handlers handlers;
	void *buf; /* caller's content buffer */
	size_t cap;
	uint64_t seen;          /* last generation dispatched */
	zkw_delivery delivered; /* what the handlers were given last */
	zkw_snapshot snap;      /* the snapshot last read */
} zkw_dispatcher;

static inline void zkw_dispatcher_init(zkw_dispatcher *d, const zkw_reader *r, const zkw_handlers *h,
                                       void *buf, size_t cap)
{
	memset(d, 0, sizeof(*d));
	d->reader = r;
	if (h)
		d->handlers = *h;
	d->buf = buf;
	d->cap = cap;
}

/* Wait up to timeout_ms for a new generation and deliver it. Returns the
 * number of handler calls (0 also on timeout), or -errno from read/wait
 * (-ENOBUFS: d->snap.len is the size needed; -ESTALE: the segment was
 * replaced - zkw_reader_close() the reader, zkw_reader_open() the name
 * into the same zkw_reader and go on dispatching with this dispatcher:
 * generations and content_gen continue, nothing is delivered twice). */
static inline int zkw_dispatch(zkw_dispatcher *d, int timeout_ms)
{
	ssize_t n;
	unsigned bits;
	int rc;

	if (zkw_reader_generation(d->reader) == d->seen) {
		rc = zkw_reader_wait(d->reader, d->seen, timeout_ms);
		if (rc <= 0)
			return rc;
	}
	n = zkw_reader_read(d->reader, &d->snap, d->buf, d->cap);
	if (n < 0)
		return (int)n;
	d->seen = d->snap.generation;
	if (d->seen == 0)
		return 0;
	bits = zkw_delivery_next(&d->delivered, d->snap.valid, d->snap.content_gen, d->snap.error);
	return zkw_delivery_call(&d->delivered, bits, &d->handlers, d->buf, (size_t)n, NULL);
}

#ifdef __cplusplus
}
#endif
#endif /* ZKW_CLIENT_H */
