/* SPDX-License-Identifier: Apache-2.0 */
/* zkw-inspect - show what a zkw shared-memory segment holds.
 *
 *     zkw-inspect NAME [--json] [--watch] [--content] [--owner USER|UID]
 *
 * A reader like any worker: it uses zkw/client.h only, maps the segment
 * read-only and never takes the broker's lock, so inspecting a live broker
 * cannot disturb it. The published snapshot is read through the seqlock
 * (zkw_reader_read: its confirmation time is the newer of the slot's and
 * the hot line's); the identity block, the hot line's confirmation time
 * and the per-slot fixed fields are shown as raw relaxed loads, labelled
 * "raw": a slot may be mid-write.
 *
 * Everything the segment says is untrusted: every string from it (watched
 * path, error, pointer, content preview) goes through lib/zkw_text.h, so
 * no control byte, escape sequence or invalid UTF-8 reaches the terminal,
 * and every loop bound is a value zkw_reader_open() validated and cached
 * (r->slot_count), never one read from the segment again.
 *
 * Output modes:
 *   (default)        human-readable report; strings escaped as zkw_text.h
 *                    says (\xNN for controls and invalid UTF-8)
 *   --json           one JSON object; bytes outside printable ASCII in
 *                    strings are written as \u00XX (each byte as the code
 *                    point of the same value, i.e. read as Latin-1)
 *   --content        the content bytes, raw, nothing else on stdout; with
 *                    --json the report gains "content_base64" instead
 *   --watch          one line per change (generation or broker liveness)
 *                    until SIGINT/SIGTERM; with --json one object per line
 *
 * Exit: 0 success, 1 failure (one line on stderr naming the cause), 2 usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zkw/client.h>
#include <zkw/segment.h>

#include "zkw_clock.h"
#include "zkw_opt.h"
#include "zkw_text.h"

#define PREVIEW_MAX   200
#define READ_ATTEMPTS 64   /* of zkw_reader_read, each already retrying */
#define WATCH_TICK_MS 1000 /* liveness re-check; also bounds a missed signal */

static const char usage_text[] =
        "Usage: zkw-inspect NAME [--json] [--watch] [--content] [--readers [--socket PATH]] [--owner USER|UID]\n"
        "Show the zkw shared-memory segment NAME (\"/zkw.tmp.myconfig\" or \"zkw.tmp.myconfig\").\n"
        "\n"
        "  -j, --json     one JSON object (with --watch: one per line)\n"
        "  -w, --watch    print one line per change until SIGINT/SIGTERM\n"
        "  -c, --content  write the content bytes raw to stdout and nothing else\n"
        "                 (with --json: add \"content_base64\" to the object)\n"
        "  -r, --readers  ask the broker which processes subscribe to NAME and which\n"
        "                 generation each has taken (and when)\n"
        "      --socket PATH  the broker's control socket (default $ZKW_SOCKET, else\n"
        "                 " ZKW_SOCKET_DEFAULT ")\n"
        "      --owner USER|UID  accept the segment only if this user owns it\n"
        "                 (default: root or yourself, or $ZKW_SEGMENT_OWNER)\n"
        "  -h, --help     this text\n"
        "\n"
        "Exit status: 0 success, 1 failure, 2 bad usage.\n";

struct options {
	const char *name;
	const char *socket; /* --socket, NULL = $ZKW_SOCKET or the default */
	bool readers;
	bool json;
	bool watch;
	bool content;
	uid_t owner; /* (uid_t)-1: the reader's default policy */
};

/* The identity block, loaded field by field (relaxed: the broker restamps
 * pid, epoch and start time on restart). */
struct ident_view {
	uint64_t magic;
	unsigned abi_major, abi_minor;
	uint32_t header_size;
	uint64_t segment_size, slot_size, capacity;
	uint32_t slot_count, broker_pid;
	uint64_t broker_epoch, broker_started_ns;
	char watch_path[ZKW_WATCH_PATH_MAX];
};

/* One slot's fixed fields, raw. */
struct slot_view {
	uint64_t seq, generation, len, confirmed_ns, changed_ns, content_gen;
	int64_t version, mzxid;
	uint32_t flags, error_len, pointer_len;
};

/* What one look at the segment shows. */
struct report {
	struct ident_view id;
	uint32_t slot_count; /* the reader's, cached at open: bounds slots[] */
	struct slot_view slots[ZKW_SLOT_COUNT_MAX];
	uint32_t state;
	bool alive;
	/* ABI minor 2: the hot line's confirmation time (raw), which a
	 * confirmation alone moves; hot_confirmed_kept false when the
	 * segment's writer is older and does not keep it. */
	uint64_t hot_confirmed_ns;
	bool hot_confirmed_kept;
	zkw_snapshot snap;
	size_t len;
};

static volatile sig_atomic_t stop_requested;

/* ---- raw loads from the read-only mapping --------------------------------- */

#define RAW(p) __atomic_load_n(&(p), __ATOMIC_RELAXED)

static void load_ident(const zkw_reader *r, struct ident_view *v)
{
	const struct zkw_segment_header *h = (const struct zkw_segment_header *)(const void *)r->base;
	uint64_t len;

	v->magic = RAW(h->ident.magic);
	v->abi_major = RAW(h->ident.abi_major);
	v->abi_minor = RAW(h->ident.abi_minor);
	v->header_size = RAW(h->ident.header_size);
	v->segment_size = RAW(h->ident.segment_size);
	v->slot_size = RAW(h->ident.slot_size);
	v->capacity = RAW(h->ident.capacity);
	v->slot_count = RAW(h->ident.slot_count);
	v->broker_pid = RAW(h->ident.broker_pid);
	v->broker_epoch = RAW(h->ident.broker_epoch);
	v->broker_started_ns = RAW(h->ident.broker_started_ns);
	/* Informational, written at broker start without a seqlock: bound the
	 * length, copy byte by byte, stop at a NUL. */
	len = RAW(h->watch_path_len);
	if (len >= ZKW_WATCH_PATH_MAX)
		len = ZKW_WATCH_PATH_MAX - 1;
	for (uint64_t i = 0; i < len; i++)
		v->watch_path[i] = RAW(h->watch_path[i]);
	v->watch_path[len] = '\0';
}

static void load_slot(const zkw_reader *r, uint32_t index, struct slot_view *v)
{
	/* slot_count and slot_size as validated and cached at open */
	const struct zkw_slot *s = zkw_segment_slot(r->base, r->slot_size, r->slot_count, index);

	v->seq = RAW(s->seq);
	v->generation = RAW(s->generation);
	v->flags = RAW(s->flags);
	v->error_len = RAW(s->error_len);
	v->len = RAW(s->len);
	v->version = RAW(s->version);
	v->mzxid = RAW(s->mzxid);
	v->confirmed_ns = RAW(s->confirmed_ns);
	v->changed_ns = RAW(s->changed_ns);
	v->content_gen = RAW(s->content_gen);
	v->pointer_len = RAW(s->pointer_len);
}

/* The published snapshot through the seqlock. 0 or -errno. */
static int read_snapshot(const zkw_reader *r, zkw_snapshot *m, void *buf, size_t cap, size_t *len)
{
	ssize_t n = -EAGAIN;

	for (int i = 0; i < READ_ATTEMPTS && n == -EAGAIN; i++)
		n = zkw_reader_read(r, m, buf, cap);
	if (n < 0)
		return (int)n;
	*len = (size_t)n;
	return 0;
}

static int take_report(const zkw_reader *r, struct report *rep, void *buf, size_t cap)
{
	memset(rep, 0, sizeof(*rep));
	load_ident(r, &rep->id);
	/* The count validated at open, not id.slot_count: the segment's own
	 * field may have changed since (a hostile or broken writer). */
	rep->slot_count = r->slot_count < ZKW_SLOT_COUNT_MAX ? r->slot_count : ZKW_SLOT_COUNT_MAX;
	for (uint32_t i = 0; i < rep->slot_count; i++)
		load_slot(r, i, &rep->slots[i]);
	rep->state = zkw_reader_state(r);
	rep->alive = zkw_reader_broker_alive(r);
	rep->hot_confirmed_kept = r->abi_minor >= ZKW_ABI_MINOR_HOT_CONFIRMED;
	if (rep->hot_confirmed_kept)
		rep->hot_confirmed_ns = zkw_reader_confirmed_ns(r); /* one raw load */
	return read_snapshot(r, &rep->snap, buf, cap, &rep->len);
}

/* ---- formatting ------------------------------------------------------------ */

/* "2024-05-01T12:00:00.123Z", or "never" for 0. */
static const char *format_time(char *out, size_t cap, uint64_t ns)
{
	time_t secs = (time_t)(ns / 1000000000u);
	struct tm tm;

	if (ns == 0 || !gmtime_r(&secs, &tm)) {
		snprintf(out, cap, "never");
		return out;
	}
	snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1,
	         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(ns % 1000000000u / 1000000u));
	return out;
}

/* Seconds since ns (negative if the clock went back), NAN-free: callers
 * check ns != 0 first. */
static double age_seconds(uint64_t ns, uint64_t now)
{
	return ((double)now - (double)ns) / 1e9;
}

static const char *format_age(char *out, size_t cap, uint64_t ns, uint64_t now)
{
	double s = age_seconds(ns, now);
	unsigned long whole;

	if (ns == 0)
		snprintf(out, cap, "never");
	else if (s < 0)
		snprintf(out, cap, "in the future (%.1f s; clock skew?)", -s);
	else if (s < 60)
		snprintf(out, cap, "%.1f s ago", s);
	else if ((whole = (unsigned long)s) < 3600)
		snprintf(out, cap, "%lu min %02lu s ago", whole / 60, whole % 60);
	else if (whole < 86400)
		snprintf(out, cap, "%lu h %02lu min ago", whole / 3600, whole % 3600 / 60);
	else
		snprintf(out, cap, "%lu d %02lu h ago", whole / 86400, whole % 86400 / 3600);
	return out;
}

/* A string from the segment in the text report: escaped, unquoted. */
static void print_text_string(const char *s, const char *none)
{
	if (s[0])
		zkw_text_puts(stdout, s, 0);
	else
		fputs(none, stdout);
}

static void json_cstring(FILE *f, const char *s)
{
	zkw_text_puts(f, s, ZKW_TEXT_JSON);
}

static void json_base64(FILE *f, const unsigned char *p, size_t len)
{
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

	fputc('"', f);
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		size_t left = len - i;

		if (left > 1)
			v |= (uint32_t)p[i + 1] << 8;
		if (left > 2)
			v |= p[i + 2];
		fputc(alphabet[v >> 18 & 63], f);
		fputc(alphabet[v >> 12 & 63], f);
		fputc(left > 1 ? alphabet[v >> 6 & 63] : '=', f);
		fputc(left > 2 ? alphabet[v & 63] : '=', f);
	}
	fputc('"', f);
}

static const char *state_words(char *out, size_t cap, uint32_t state)
{
	snprintf(out, cap, "%s%s%s", state & ZKW_STATE_RUNNING ? "running " : "stopped ",
	         state & ZKW_STATE_CONNECTED ? "connected " : "disconnected ",
	         state & ZKW_STATE_VALID ? "valid" : "invalid");
	return out;
}

/* ---- the report ------------------------------------------------------------ */

static void print_when(const char *label, uint64_t ns, uint64_t now)
{
	char t[64], a[64];

	if (ns == 0)
		printf("%-17snever", label);
	else
		printf("%-17s%s (%s)", label, format_time(t, sizeof(t), ns),
		       format_age(a, sizeof(a), ns, now));
}

static void print_text(const char *name, const struct report *rep, const unsigned char *content)
{
	const struct ident_view *id = &rep->id;
	const zkw_snapshot *m = &rep->snap;
	uint64_t now = zkw_clock_ns(CLOCK_REALTIME);
	char words[64];
	size_t preview = rep->len < PREVIEW_MAX ? rep->len : PREVIEW_MAX;

	printf("segment          %s\n", name);
	printf("magic            0x%016" PRIx64 " (%s)\n", id->magic,
	       id->magic == ZKW_SEGMENT_MAGIC ? "zkw segment" : "unexpected");
	printf("abi              %u.%u\n", id->abi_major, id->abi_minor);
	printf("header size      %" PRIu32 " bytes\n", id->header_size);
	printf("segment size     %" PRIu64 " bytes\n", id->segment_size);
	printf("slot count       %" PRIu32 "\n", id->slot_count);
	printf("slot size        %" PRIu64 " bytes\n", id->slot_size);
	printf("capacity         %" PRIu64 " bytes\n", id->capacity);
	printf("watched path     ");
	print_text_string(id->watch_path, "(not set)");
	printf("\n");
	printf("broker           %s (pid %" PRIu32 ")\n", rep->alive ? "alive" : "dead", id->broker_pid);
	printf("broker epoch     0x%016" PRIx64 "\n", id->broker_epoch);
	print_when("broker started", id->broker_started_ns, now);
	printf("\n");
	printf("state            0x%" PRIx32 " (%s)\n", rep->state,
	       state_words(words, sizeof(words), rep->state));
	/* The state word is the broker's live view; a dead broker's last
	 * snapshot may still say connected. */
	bool zk_up = rep->alive && (rep->state & ZKW_STATE_RUNNING) && (rep->state & ZKW_STATE_CONNECTED);
	printf("zookeeper        %s%s\n", zk_up ? "connected" : "disconnected",
	       !zk_up && m->connected ? " (the last snapshot says connected: broker gone)" : "");
	printf("ping             %s\n", zk_up ? "ok" : "failed");
	printf("valid            %s\n", m->valid ? "true" : "false");
	printf("generation       %" PRIu64 "%s\n", m->generation,
	       m->generation ? "" : " (nothing published yet)");
	print_when("confirmed", m->confirmed_ns, now);
	printf("\n");
	if (rep->hot_confirmed_kept) {
		print_when("hot confirmed", rep->hot_confirmed_ns, now);
		printf(" (raw)\n");
	} else {
		printf("%-17snot kept (a broker of ABI minor %u: confirmed above is the slot's)\n",
		       "hot confirmed", id->abi_minor);
	}
	print_when("content changed", m->changed_ns, now);
	printf(" at generation %" PRIu64 "\n", m->content_gen);
	printf("version          %" PRId64 "\n", m->version);
	printf("mzxid            0x%" PRIx64 "\n", (uint64_t)m->mzxid);
	printf("error            ");
	print_text_string(m->error, "(none)");
	printf("\npointer          ");
	print_text_string(m->pointer, "(none)");
	printf("\n");
	printf("content size     %zu bytes\n", rep->len);
	printf("preview          ");
	zkw_text_put(stdout, content, preview, ZKW_TEXT_QUOTE | ZKW_TEXT_ASCII);
	printf("%s\n", preview < rep->len ? " ..." : "");
	for (uint32_t i = 0; i < rep->slot_count; i++) {
		const struct slot_view *s = &rep->slots[i];

		printf("slot %-2" PRIu32 " (raw)     seq %" PRIu64 "%s generation %" PRIu64
		       " flags 0x%" PRIx32 " len %" PRIu64 " error_len %" PRIu32 " pointer_len %" PRIu32
		       " version %" PRId64 " content_gen %" PRIu64 "%s\n",
		       i, s->seq, s->seq & 1 ? " (odd: being written or abandoned)" : "", s->generation,
		       s->flags, s->len, s->error_len, s->pointer_len, s->version, s->content_gen,
		       s->generation == m->generation && m->generation ? " [published]" : "");
	}
}

static void json_age(const char *key, uint64_t ns, uint64_t now)
{
	if (ns)
		printf(",\"%s\":%.3f", key, age_seconds(ns, now));
	else
		printf(",\"%s\":null", key);
}

static void print_json(const char *name, const struct report *rep, const unsigned char *content,
                       bool with_content)
{
	const struct ident_view *id = &rep->id;
	const zkw_snapshot *m = &rep->snap;
	uint64_t now = zkw_clock_ns(CLOCK_REALTIME);
	size_t preview = rep->len < PREVIEW_MAX ? rep->len : PREVIEW_MAX;
	char t[64];

	printf("{\"segment\":");
	json_cstring(stdout, name);
	printf(",\"magic\":\"0x%016" PRIx64 "\",\"abi_major\":%u,\"abi_minor\":%u", id->magic, id->abi_major,
	       id->abi_minor);
	printf(",\"header_size\":%" PRIu32 ",\"segment_size\":%" PRIu64 ",\"slot_count\":%" PRIu32
	       ",\"slot_size\":%" PRIu64 ",\"capacity\":%" PRIu64,
	       id->header_size, id->segment_size, id->slot_count, id->slot_size, id->capacity);
	printf(",\"watch_path\":");
	json_cstring(stdout, id->watch_path);
	printf(",\"broker_pid\":%" PRIu32 ",\"broker_alive\":%s,\"broker_epoch\":\"0x%016" PRIx64 "\"",
	       id->broker_pid, rep->alive ? "true" : "false", id->broker_epoch);
	printf(",\"broker_started_ns\":%" PRIu64 ",\"broker_started\":\"%s\"", id->broker_started_ns,
	       format_time(t, sizeof(t), id->broker_started_ns));
	printf(",\"state\":%" PRIu32 ",\"running\":%s", rep->state,
	       rep->state & ZKW_STATE_RUNNING ? "true" : "false");
	printf(",\"ping\":%s",
	       rep->alive && (rep->state & ZKW_STATE_RUNNING) && (rep->state & ZKW_STATE_CONNECTED)
	               ? "true"
	               : "false");
	printf(",\"connected\":%s,\"valid\":%s,\"generation\":%" PRIu64, m->connected ? "true" : "false",
	       m->valid ? "true" : "false", m->generation);
	printf(",\"confirmed_ns\":%" PRIu64, m->confirmed_ns);
	json_age("age_confirmed_s", m->confirmed_ns, now);
	if (rep->hot_confirmed_kept)
		printf(",\"hot_confirmed_ns\":%" PRIu64, rep->hot_confirmed_ns);
	else
		printf(",\"hot_confirmed_ns\":null");
	printf(",\"changed_ns\":%" PRIu64, m->changed_ns);
	json_age("age_changed_s", m->changed_ns, now);
	printf(",\"content_gen\":%" PRIu64 ",\"version\":%" PRId64 ",\"mzxid\":%" PRId64, m->content_gen,
	       m->version, m->mzxid);
	printf(",\"error\":");
	json_cstring(stdout, m->error);
	printf(",\"pointer\":");
	json_cstring(stdout, m->pointer);
	printf(",\"len\":%zu,\"preview\":", rep->len);
	zkw_text_put(stdout, content, preview, ZKW_TEXT_JSON);
	printf(",\"preview_truncated\":%s", preview < rep->len ? "true" : "false");
	if (with_content) {
		printf(",\"content_base64\":");
		json_base64(stdout, content, rep->len);
	}
	printf(",\"slots\":[");
	for (uint32_t i = 0; i < rep->slot_count; i++) {
		const struct slot_view *s = &rep->slots[i];

		printf("%s{\"index\":%" PRIu32 ",\"raw\":true,\"seq\":%" PRIu64 ",\"generation\":%" PRIu64
		       ",\"flags\":%" PRIu32 ",\"len\":%" PRIu64 ",\"error_len\":%" PRIu32
		       ",\"pointer_len\":%" PRIu32 ",\"version\":%" PRId64 ",\"mzxid\":%" PRId64
		       ",\"confirmed_ns\":%" PRIu64 ",\"changed_ns\":%" PRIu64 ",\"content_gen\":%" PRIu64
		       "}",
		       i ? "," : "", i, s->seq, s->generation, s->flags, s->len, s->error_len, s->pointer_len,
		       s->version, s->mzxid, s->confirmed_ns, s->changed_ns, s->content_gen);
	}
	printf("]}\n");
}

/* ---- watch ----------------------------------------------------------------- */

static void on_stop(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static int install_stop_handlers(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop; /* no SA_RESTART: the futex wait returns EINTR */
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0)
		return -errno;
	return 0;
}

static void print_watch_line(const zkw_snapshot *m, size_t len, bool alive, bool json)
{
	char t[64];

	format_time(t, sizeof(t), zkw_clock_ns(CLOCK_REALTIME));
	if (json) {
		printf("{\"time\":\"%s\",\"generation\":%" PRIu64 ",\"valid\":%s,\"connected\":%s"
		       ",\"broker_alive\":%s,\"len\":%zu,\"content_gen\":%" PRIu64 ",\"error\":",
		       t, m->generation, m->valid ? "true" : "false", m->connected ? "true" : "false",
		       alive ? "true" : "false", len, m->content_gen);
		json_cstring(stdout, m->error);
		printf("}\n");
	} else {
		printf("%s generation=%" PRIu64 " valid=%s connected=%s broker=%s len=%zu error=", t,
		       m->generation, m->valid ? "true" : "false", m->connected ? "true" : "false",
		       alive ? "alive" : "dead", len);
		zkw_text_put(stdout, m->error, strlen(m->error), ZKW_TEXT_QUOTE | ZKW_TEXT_ASCII);
		printf("\n");
	}
	fflush(stdout); /* a line per change, also through a pipe */
}

/* Follow the segment until SIGINT/SIGTERM: a line for every new generation
 * (intermediate ones may be skipped when they come faster than we print)
 * and for every change of broker liveness, which moves no generation. A
 * signal landing just before the futex wait is seen at the next tick. */
static int watch(const char *name, const zkw_reader *r, void *buf, size_t cap, bool json)
{
	zkw_snapshot m;
	size_t len = 0;
	bool alive;
	int err;

	err = install_stop_handlers();
	if (!err)
		err = read_snapshot(r, &m, buf, cap, &len);
	if (err) {
		fprintf(stderr, "zkw-inspect: %s: %s\n", name, strerror(-err));
		return 1;
	}
	alive = zkw_reader_broker_alive(r);
	print_watch_line(&m, len, alive, json);
	while (!stop_requested) {
		int rc = zkw_reader_wait(r, m.generation, WATCH_TICK_MS);
		bool alive_now;

		if (stop_requested)
			break;
		if (rc == -ESTALE) {
			fprintf(stderr,
			        "zkw-inspect: %s: replaced by its broker (the segment watched is retired); "
			        "run zkw-inspect again to follow the new one\n",
			        name);
			return 1;
		}
		if (rc < 0 && rc != -EINTR) {
			fprintf(stderr, "zkw-inspect: %s: wait failed: %s\n", name, strerror(-rc));
			return 1;
		}
		alive_now = zkw_reader_broker_alive(r);
		if (rc != 1 && alive_now == alive)
			continue;
		alive = alive_now;
		err = read_snapshot(r, &m, buf, cap, &len);
		if (err) {
			fprintf(stderr, "zkw-inspect: %s: read failed: %s\n", name,
			        err == -EBADMSG ? "corrupt slot (bad lengths)" : strerror(-err));
			return 1;
		}
		print_watch_line(&m, len, alive, json);
	}
	return 0;
}

/* ---- --readers ------------------------------------------------------------ */

/* One line from the broker into line (NUL-terminated, no newline); the
 * bytes after it stay in *pend (pending, *plen). 0, or -1 on EOF/error. */
static int broker_line(int fd, char *pend, size_t *plen, size_t cap, char *line, size_t linecap)
{
	for (;;) {
		char *nl = memchr(pend, '\n', *plen);
		ssize_t n;

		if (nl) {
			size_t len = (size_t)(nl - pend);

			snprintf(line, linecap, "%.*s", (int)len, pend);
			memmove(pend, nl + 1, *plen - len - 1);
			*plen -= len + 1;
			return 0;
		}
		if (*plen == cap)
			return -1;
		n = recv(fd, pend + *plen, cap - *plen, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		*plen += (size_t)n;
	}
}

/* Ask the broker serving NAME who subscribes to it (READERS, docs/design.md
 * "The control socket"), and print it next to the segment's generation. */
static int readers(const struct options *o, const zkw_reader *r)
{
	const char *path = o->socket;
	char pend[2 * ZKW_PROTO_LINE_MAX], line[ZKW_PROTO_LINE_MAX], req[ZKW_PROTO_LINE_MAX], name[ZKW_SHM_NAME_MAX + 1];
	char comm[64], pid[32], uid[32], gen_s[32], at_s[32], count_s[32];
	zkw_reader_options ropt = {o->owner};
	zkw_reader probe;
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct ucred cred;
	socklen_t credlen = sizeof(cred);
	uint64_t now_gen = zkw_reader_generation(r);
	size_t plen = 0;
	unsigned long count;
	int fd, err;

	if (!path) {
		const char *env = getenv(ZKW_SOCKET_ENV);

		path = env && *env ? env : ZKW_SOCKET_DEFAULT;
	}
	zkw_shm_name(name, sizeof(name), o->name);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		fprintf(stderr, "zkw-inspect: cannot reach the broker's socket %s: %s (give --socket)\n", path,
		        strerror(errno));
		if (fd >= 0)
			close(fd);
		return 1;
	}
	/* The same trust as the segment's: the broker must be root, you, or
	 * the owner named. */
	memset(&probe, 0, sizeof(probe));
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &credlen) < 0 ||
	    (err = zkw__reader_trust_uid(&probe, cred.uid, &ropt, "broker")) != 0) {
		fprintf(stderr, "zkw-inspect: %s: %s\n", path, probe.why_buf);
		close(fd);
		return 1;
	}
	snprintf(req, sizeof(req), "READERS ");
	zkw__proto_escape(req + 8, sizeof(req) - 9, name);
	strcat(req, "\n");
	if (send(fd, req, strlen(req), MSG_NOSIGNAL) < 0 || broker_line(fd, pend, &plen, sizeof(pend), line, sizeof(line)) < 0) {
		fprintf(stderr, "zkw-inspect: %s: no answer from the broker\n", path);
		close(fd);
		return 1;
	}
	if (strncmp(line, "OK", 2) != 0 || !zkw__proto_value(line, "count", count_s, sizeof(count_s))) {
		fprintf(stderr, "zkw-inspect: %s: the broker says: %s\n", name, line);
		close(fd);
		return 1;
	}
	count = strtoul(count_s, NULL, 10);
	if (o->json)
		printf("{\"segment\":\"%s\",\"generation\":%llu,\"readers\":[", name, (unsigned long long)now_gen);
	else
		printf("%s: generation %llu, %lu subscriber%s\n%8s %6s %-16s %12s  %s\n", name,
		       (unsigned long long)now_gen, count, count == 1 ? "" : "s", "PID", "UID", "PROCESS", "GENERATION",
		       "TAKEN");
	for (unsigned long i = 0; i < count; i++) {
		unsigned long long gen, at;

		if (broker_line(fd, pend, &plen, sizeof(pend), line, sizeof(line)) < 0) {
			fprintf(stderr, "zkw-inspect: %s: the broker's answer ends early\n", path);
			close(fd);
			return 1;
		}
		if (!zkw__proto_value(line, "pid", pid, sizeof(pid)) || !zkw__proto_value(line, "uid", uid, sizeof(uid)) ||
		    !zkw__proto_value(line, "comm", comm, sizeof(comm)) ||
		    !zkw__proto_value(line, "generation", gen_s, sizeof(gen_s)) ||
		    !zkw__proto_value(line, "at", at_s, sizeof(at_s)))
			continue;
		gen = strtoull(gen_s, NULL, 10);
		at = strtoull(at_s, NULL, 10);
		for (char *p = comm; *p; p++) /* the process chose its name: show it tame */
			if ((unsigned char)*p < 0x20 || *p == 0x7f || *p == '"' || *p == '\\')
				*p = '?';
		if (o->json) {
			printf("%s{\"pid\":%s,\"uid\":%s,\"process\":\"%s\",\"generation\":%llu,\"taken_ns\":%llu,\"current\":%s}",
			       i ? "," : "", pid, uid, comm, gen, at, gen == now_gen ? "true" : "false");
		} else {
			char when[64] = "never";

			if (at) {
				time_t t = (time_t)(at / 1000000000ull);
				struct tm tm;

				gmtime_r(&t, &tm);
				strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
			}
			printf("%8s %6s %-16s %12llu  %s%s\n", pid, uid, comm, gen, when,
			       gen == now_gen ? "" : gen < now_gen ? "  (behind)" : "");
		}
	}
	if (o->json)
		printf("]}\n");
	close(fd);
	return 0;
}

/* ---- main ------------------------------------------------------------------ */

static void usage(FILE *out)
{
	fputs(usage_text, out);
}

/* 0, or -1 once the reason and the usage are on stderr. */
static int parse_args(int argc, char **argv, struct options *o)
{
	struct zkw_opt opt;
	const char *bad = NULL;
	int c;

	memset(o, 0, sizeof(*o));
	o->owner = (uid_t)-1;
	zkw_opt_init(&opt, argc, argv, "zkw-inspect", "j|json w|watch c|content r|readers S=socket: O=owner: h|help", usage);
	while ((c = zkw_opt_next(&opt)) != -1) {
		switch (c) {
		case 'j': o->json = true; break;
		case 'w': o->watch = true; break;
		case 'c': o->content = true; break;
		case 'r': o->readers = true; break;
		case 'S': o->socket = opt.arg; break;
		case 'O':
			if (zkw_opt_uid(&opt, &o->owner))
				return -1;
			break;
		default: return -1; /* reported */
		}
	}
	if (opt.index + 1 != argc)
		bad = opt.index == argc ? "missing segment NAME" : "too many arguments";
	else if (o->watch && o->content)
		bad = "--content and --watch do not go together";
	else if (o->readers && (o->watch || o->content))
		bad = "--readers goes with neither --watch nor --content";
	else if (o->socket && !o->readers)
		bad = "--socket is for --readers";
	if (bad) {
		fprintf(stderr, "zkw-inspect: %s\n", bad);
		usage(stderr);
		return -1;
	}
	o->name = argv[opt.index];
	return 0;
}

int main(int argc, char **argv)
{
	struct options o;
	struct report rep;
	zkw_reader_options ropt;
	zkw_reader r;
	unsigned char *buf;
	size_t cap;
	int err, status = 0;

	if (parse_args(argc, argv, &o) < 0)
		return 2;
	memset(&ropt, 0, sizeof(ropt));
	ropt.expected_uid = o.owner;
	err = zkw_reader_open_ex(&r, o.name, &ropt);
	if (err) {
		fprintf(stderr, "zkw-inspect: %s: %s (%s)\n", o.name, r.why ? r.why : "cannot open",
		        strerror(-err));
		return 1;
	}
	cap = (size_t)zkw_reader_capacity(&r);
	buf = malloc(cap ? cap : 1);
	if (!buf) {
		fprintf(stderr, "zkw-inspect: %s: cannot allocate %zu bytes for the content\n", o.name, cap);
		zkw_reader_close(&r);
		return 1;
	}
	if (o.readers) {
		status = readers(&o, &r);
	} else if (o.watch) {
		status = watch(o.name, &r, buf, cap, o.json);
	} else if ((err = take_report(&r, &rep, buf, cap)) != 0) {
		fprintf(stderr, "zkw-inspect: %s: cannot read the published snapshot: %s\n", o.name,
		        err == -EBADMSG  ? "corrupt slot (bad lengths)"
		        : err == -EAGAIN ? "the writer kept overwriting it"
		                         : strerror(-err));
		status = 1;
	} else if (o.json) {
		print_json(o.name, &rep, buf, o.content);
	} else if (o.content) {
		if (rep.len && fwrite(buf, 1, rep.len, stdout) != rep.len)
			status = 1;
	} else {
		print_text(o.name, &rep, buf);
	}
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "zkw-inspect: writing to stdout: %s\n", strerror(errno));
		status = 1;
	}
	free(buf);
	zkw_reader_close(&r);
	return status;
}
