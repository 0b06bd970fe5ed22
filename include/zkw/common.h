/* SPDX-License-Identifier: Apache-2.0 */
/* common.h - what every zkw public header shares.
 *
 * ZKW_API marks the functions a zkw library exports; the libraries are
 * built with -fvisibility=hidden, so nothing else leaves them.
 *
 * Error convention - every zkw C function, public or internal:
 *
 *  - A function that can fail returns int: 0 on success or a negative errno
 *    (-EINVAL, -ENOMEM, -ETIMEDOUT, ...). Never a positive code, never
 *    errno, never NULL or false standing for "failed". Where a function
 *    says so, success is a count instead of 0 (a length, a number of
 *    handler calls, 1 for "changed" from a wait), as read(2) does; such a
 *    length is ssize_t.
 *  - Results go through out-parameters. A constructor is
 *        int zkw_<thing>_open(zkw_<thing> **out, what..., opt, char *errbuf, size_t errlen);
 *    setting *out on success and NULL on failure; a method that creates a
 *    child takes the parent first and the out-parameter last
 *    (zkw_session_watch).
 *  - The words: a one-line reason goes into the caller's buffer
 *    (errbuf/errlen, always NUL-terminated; NULL or 0 = not wanted), or,
 *    when it is a fixed text, a static string through `const char **why`
 *    or a `why` field (never freed).
 *  - A function that cannot fail returns void or its value; a yes/no
 *    question (is_valid, ping) returns bool. close() accepts NULL.
 *
 * Also here, one copy each: the text limits and the seed's handlers with
 * the rule of when each one is due (used by client.h's dispatcher, the
 * watcher library's zkw_watcher and the Python binding).
 */
#ifndef ZKW_COMMON_H
#define ZKW_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <pwd.h>
#include <sys/types.h>

#if defined(__GNUC__) || defined(__clang__)
#define ZKW_API           __attribute__((visibility("default")))
#define ZKW__PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define ZKW_API
#define ZKW__PRINTF(f, a)
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Longest pointer target, including the terminating NUL. */
#define ZKW_POINTER_MAX 1024
/* Longest error text, including the terminating NUL (longer ones are cut). */
/* The release this tree is (broker --version, the control socket's HELLO). */
#define ZKW_VERSION "0.12.0"

#define ZKW_ERROR_MAX 1280

/* The failure path of the convention, for zkw's own sources: the reason
 * into errbuf (when given, NUL-terminated, cut to errlen), and err back:
 *     return zkw__errorf(errbuf, errlen, -EINVAL, "bad host string '%s'", hosts); */
static inline int zkw__errorf(char *errbuf, size_t errlen, int err, const char *fmt, ...) ZKW__PRINTF(4, 5);
static inline int zkw__errorf(char *errbuf, size_t errlen, int err, const char *fmt, ...)
{
	va_list ap;

	if (errbuf && errlen) {
		va_start(ap, fmt);
		vsnprintf(errbuf, errlen, fmt, ap);
		va_end(ap);
	}
	return err;
}

/* An owner as people read it, for the messages of the reader's and the
 * writer's owner checks. */
/* "uid N (name)", or "uid N" when the name is unknown, into buf. */
static inline void zkw__uid_text(char *buf, size_t cap, uid_t uid)
{
	struct passwd pw, *found = NULL;
	char scratch[1024];

	if (getpwuid_r(uid, &pw, scratch, sizeof(scratch), &found) == 0 && found && found->pw_name)
		snprintf(buf, cap, "uid %u (%.32s)", (unsigned)uid, found->pw_name);
	else
		snprintf(buf, cap, "uid %u", (unsigned)uid);
}

/* ---- handlers --------------------------------------------------------- */

/* The seed's three handlers (each may be NULL), called once per change in
 * the contract's order (contract 3):
 *
 *   success: config(content) - only when the content changed -
 *            then valid(true) - only when it was false;
 *   failure: valid(false) - only when it was true -
 *            then error(message) - only when the message changed.
 *
 * zkw_delivery_next() decides which are due; zkw_delivery_call() calls
 * them. The order is the order of the ZKW_DELIVER_* bits. */
typedef struct zkw_handlers {
	void (*valid)(void *ctx, bool valid);
	void (*config)(void *ctx, const void *content, size_t len);
	void (*error)(void *ctx, const char *message);
	void *ctx;
} zkw_handlers;

#define ZKW_DELIVER_CONFIG 0x1u
#define ZKW_DELIVER_VALID  0x2u
#define ZKW_DELIVER_ERROR  0x4u

/* What the handlers were given last. Zero-initialised: nothing yet. */
typedef struct zkw_delivery {
	bool valid;                /* last passed to valid() */
	uint64_t content_id;       /* id of the content last passed to config() */
	char error[ZKW_ERROR_MAX]; /* last passed to error(); "" after a success */
} zkw_delivery;

/* Which handlers a new state calls, as ZKW_DELIVER_* bits; *d then records
 * them as delivered. content_id changes exactly when the content does (a
 * serial or generation; 0 = none yet); error may be NULL (no message).
 * Pure: no allocation, no global state, no call. */
static inline unsigned zkw_delivery_next(zkw_delivery *d, bool valid, uint64_t content_id, const char *error)
{
	unsigned bits = 0;
	size_t n = 0;

	if (valid) {
		if (content_id != d->content_id) {
			d->content_id = content_id;
			bits |= ZKW_DELIVER_CONFIG;
		}
		if (!d->valid) {
			d->valid = true;
			bits |= ZKW_DELIVER_VALID;
		}
		d->error[0] = '\0'; /* the same error after a recovery is news again */
		return bits;
	}
	if (d->valid) {
		d->valid = false;
		bits |= ZKW_DELIVER_VALID;
	}
	if (error && error[0] && strncmp(error, d->error, ZKW_ERROR_MAX - 1) != 0) {
		while (n < ZKW_ERROR_MAX - 1 && error[n]) {
			d->error[n] = error[n];
			n++;
		}
		d->error[n] = '\0';
		bits |= ZKW_DELIVER_ERROR;
	}
	return bits;
}

static inline bool zkw__delivery_stopped(const bool *stop)
{
	return stop && __atomic_load_n(stop, __ATOMIC_ACQUIRE);
}

/* Call h's handlers for bits in the fixed order: config(content, len),
 * valid(d->valid), error(d->error), where d is what zkw_delivery_next()
 * just updated. stop may be NULL, or a flag another thread sets: it is
 * loaded (acquire) before each call, and once set nothing more is called.
 * Returns the number of handlers called (NULL ones are skipped). */
static inline int zkw_delivery_call(const zkw_delivery *d, unsigned bits, const zkw_handlers *h,
                                    const void *content, size_t len, const bool *stop)
{
	int calls = 0;

	if ((bits & ZKW_DELIVER_CONFIG) && h->config && !zkw__delivery_stopped(stop)) {
		h->config(h->ctx, content ? content : "", len);
		calls++;
	}
	if ((bits & ZKW_DELIVER_VALID) && h->valid && !zkw__delivery_stopped(stop)) {
		h->valid(h->ctx, d->valid);
		calls++;
	}
	if ((bits & ZKW_DELIVER_ERROR) && h->error && !zkw__delivery_stopped(stop)) {
		h->error(h->ctx, d->error);
		calls++;
	}
	return calls;
}

#ifdef __cplusplus
}
#endif

#endif /* ZKW_COMMON_H */
