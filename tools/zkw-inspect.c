/* SPDX-License-Identifier: Apache-2.0 */
/* zkw-inspect - show what a zkw shared-memory segment holds, or every
 * segment and broker of the host.
 *
 *     zkw-inspect NAME [--json] [--watch] [--content] [--owner USER|UID]
 *     zkw-inspect NAME --readers [--socket PATH] [--json]
 *     zkw-inspect --list [--json]                  every segment and broker, ipcs-style
 *     zkw-inspect --check NAME [--warn-age S] [--max-age S]   a monitoring plugin
 *     zkw-inspect --prometheus                     node_exporter textfile metrics
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
 * So is /dev/shm itself, where any user creates files: a segment is opened
 * O_NOFOLLOW | O_NONBLOCK (a FIFO or a lease cannot block us, a symbolic
 * link is not followed), must be a regular file, and is mapped only when
 * the reader's trust policy accepts its owner and mode (an owner could
 * shrink it under the mapping: SIGBUS). --list and --prometheus scan every
 * entry that way: a zkw segment or stats object of an owner not trusted is
 * listed as such (owner shown) after a pread(2) of its 8-byte magic, and
 * never mapped; an entry named zkw* that is no usable segment (a FIFO, a
 * symbolic link, a directory, a truncated or foreign file) is listed with
 * the reason; other entries are skipped.
 *
 * Output modes:
 *   (default)        human-readable report; strings escaped as zkw_text.h
 *                    says (\xNN for controls and invalid UTF-8)
 *   --json           one JSON object; UTF-8 as it is, controls and bytes
 *                    of invalid UTF-8 as \u00XX (zkw_text.h, ZKW_TEXT_JSON)
 *   --content        the content bytes, raw, nothing else on stdout; with
 *                    --json the report gains "content_base64" instead
 *   --watch          one line per change (generation or broker liveness)
 *                    until SIGINT/SIGTERM; with --json one object per line
 *   --list           a table of every segment and broker (--json: one object)
 *   --check          one status line with perfdata, monitoring-plugin exit codes
 *   --prometheus     the Prometheus text exposition format
 *
 * Exit: 0 success, 1 failure (one line on stderr naming the cause), 2 usage;
 * --check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (usage errors too).
 */
#include <dirent.h>
#include <limits.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <zkw/client.h>
#include <zkw/segment.h>

#include "zkw_clock.h"
#include "zkw_opt.h"
#include "zkw_stats.h"
#include "zkw_text.h"

#define PREVIEW_MAX   200
#define ENTRY_PREVIEW 40   /* bytes of each child shown in a bundle's list */
#define READ_ATTEMPTS 64   /* of zkw_reader_read, each already retrying */
#define WATCH_TICK_MS 1000 /* liveness re-check; also bounds a missed signal */

#define SHM_DIR "/dev/shm" /* where glibc's shm_open() puts "/name" */
/* The largest object --list maps: a segment of 16 slots of the largest
 * capacity (readers accept no more). */
#define SEGMENT_SIZE_MAX                                                                                     \
	((uint64_t)ZKW_HEADER_SIZE + ZKW_SLOT_COUNT_MAX * zkw_segment_slot_size(ZKW_CAPACITY_MAX))
#define WARN_AGE_DEFAULT 180 /* s: three default reconcile rounds (60 s +-20%) */
#define MAX_AGE_DEFAULT  600

/* Monitoring-plugin exit codes (--check). */
enum { CHECK_OK = 0, CHECK_WARNING = 1, CHECK_CRITICAL = 2, CHECK_UNKNOWN = 3 };

static const char usage_text[] =
        "Usage: zkw-inspect NAME [--json] [--watch] [--content] [--owner USER|UID]\n"
        "       zkw-inspect NAME --readers [--socket PATH] [--json]\n"
        "       zkw-inspect --list [--json] [--owner USER|UID]\n"
        "       zkw-inspect --check NAME [--warn-age S] [--max-age S] [--owner USER|UID]\n"
        "       zkw-inspect --prometheus [--owner USER|UID]\n"
        "Show the zkw shared-memory segment NAME (\"/zkw.tmp.myconfig\" or \"zkw.tmp.myconfig\"),\n"
        "or every segment and broker of the host.\n"
        "\n"
        "  -j, --json     one JSON object (with --watch: one per line)\n"
        "  -w, --watch    print one line per change until SIGINT/SIGTERM\n"
        "      --content  write the content bytes raw to stdout and nothing else\n"
        "                 (with --json: add \"content_base64\" to the object)\n"
        "  -r, --readers  ask the broker which processes subscribe to NAME and which\n"
        "                 generation each has taken (and when)\n"
        "      --socket PATH  the broker's control socket (default $ZKW_SOCKET, else\n"
        "                 " ZKW_SOCKET_DEFAULT ")\n"
        "  -l, --list     every zkw segment in " SHM_DIR ", one line each (name, watched\n"
        "                 path, valid, connected, generation, age of the last\n"
        "                 confirmation, broker pid, alive), then every broker's counters\n"
        "      --check    check NAME as a monitoring plugin: one status line with\n"
        "                 perfdata; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN\n"
        "      --warn-age S  --check: WARNING when the last confirmation by ZooKeeper\n"
        "                 is older than S seconds (default 180; 0 = never)\n"
        "      --max-age S   --check: CRITICAL when older than S seconds (default 600;\n"
        "                 0 = never)\n"
        "      --prometheus  every segment and every broker's counters in the\n"
        "                 Prometheus text format (node_exporter's textfile collector)\n"
        "      --owner USER|UID  accept segments only if this user owns them\n"
        "                 (default: root or yourself, or $ZKW_SEGMENT_OWNER)\n"
        "  -V, --version  print the version\n"
        "  -h, --help     this text\n"
        "\n"
        "Exit status: 0 success, 1 failure, 2 bad usage; with --check 0 OK, 1 WARNING,\n"
        "2 CRITICAL (also: no such segment), 3 UNKNOWN (also: bad usage).\n";

struct options {
	const char *name;
	const char *socket; /* --socket, NULL = $ZKW_SOCKET or the default */
	bool readers;
	bool json;
	bool watch;
	bool content;
	bool list;
	bool check;
	bool prometheus;
	bool version;
	long warn_age, max_age; /* --check, seconds; 0 = not checked */
	uid_t owner;            /* (uid_t)-1: the reader's default policy */
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
	snprintf(out, cap, "%s%s%s%s%s", state & ZKW_STATE_RUNNING ? "running " : "stopped ",
	         state & ZKW_STATE_CONNECTED ? "connected " : "disconnected ",
	         state & ZKW_STATE_VALID ? "valid" : "invalid", state & ZKW_STATE_CACHED ? " cached" : "",
	         state & ZKW_STATE_REJECTED ? " rejected" : "");
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

/* Why a bundle snapshot's content cannot be read, in words. */
static const char *bundle_fault(int err)
{
	return err == -EPROTO ? "another version of the bundle layout" : "corrupt bundle";
}

/* A bundle snapshot's children (zkw/bundle.h), one line each: the name
 * (escaped), length, version, mzxid and the first bytes. */
static void print_bundle_text(const unsigned char *content, size_t len)
{
	zkw_bundle b;
	zkw_bundle_entry e;
	int err = zkw_bundle_open(&b, content, len);

	if (err) {
		printf("entries          none: %s\n", bundle_fault(err));
		return;
	}
	printf("entries          %" PRIu32 " (parent pzxid 0x%" PRIx64 ", cversion %" PRId32 ")\n", b.count,
	       (uint64_t)b.pzxid, b.cversion);
	for (uint32_t i = 0; i < b.count; i++) {
		size_t preview;

		if (zkw_bundle_entry_at(&b, i, &e) != 0) /* open checked every entry */
			break;
		preview = e.len < ENTRY_PREVIEW ? e.len : ENTRY_PREVIEW;
		printf("  ");
		zkw_text_put(stdout, e.name, e.name_len, 0);
		printf("  %zu bytes, version %" PRId32 ", mzxid 0x%" PRIx64 ", ", e.len, e.version,
		       (uint64_t)e.mzxid);
		zkw_text_put(stdout, e.data, preview, ZKW_TEXT_QUOTE | ZKW_TEXT_ASCII);
		printf("%s\n", preview < e.len ? " ..." : "");
	}
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
	if (m->cached)
		printf("cached           true (loaded from the broker's state directory; not confirmed by ZooKeeper since)\n");
	if (m->rejected)
		printf("rejected         true (newer content failed validation; this is the last good)\n");
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
	if (m->bundle)
		print_bundle_text(content, rep->len);
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

/* A bundle snapshot's children: "entries":[{"name", "len", "version",
 * "mzxid"}, ...] with the parent's "pzxid" and "cversion"; "entries":null
 * and "bundle_error" when the content is no readable bundle. */
static void print_bundle_json(const unsigned char *content, size_t len)
{
	zkw_bundle b;
	zkw_bundle_entry e;
	int err = zkw_bundle_open(&b, content, len);

	if (err) {
		printf(",\"entries\":null,\"bundle_error\":");
		json_cstring(stdout, bundle_fault(err));
		return;
	}
	printf(",\"pzxid\":%" PRId64 ",\"cversion\":%" PRId32 ",\"entries\":[", b.pzxid, b.cversion);
	for (uint32_t i = 0; i < b.count && zkw_bundle_entry_at(&b, i, &e) == 0; i++) {
		printf("%s{\"name\":", i ? "," : "");
		zkw_text_put(stdout, e.name, e.name_len, ZKW_TEXT_JSON);
		printf(",\"len\":%zu,\"version\":%" PRId32 ",\"mzxid\":%" PRId64 "}", e.len, e.version,
		       e.mzxid);
	}
	printf("]");
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
	printf(",\"connected\":%s,\"valid\":%s,\"cached\":%s,\"rejected\":%s,\"bundle\":%s"
	       ",\"generation\":%" PRIu64,
	       m->connected ? "true" : "false", m->valid ? "true" : "false", m->cached ? "true" : "false",
	       m->rejected ? "true" : "false", m->bundle ? "true" : "false", m->generation);
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
	if (m->bundle)
		print_bundle_json(content, rep->len);
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

static char *escaped(const char *s, unsigned flags);

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
		/* The process chose its name (prctl(PR_SET_NAME)): escaped like
		 * what a segment says, invalid UTF-8 and controls included. */
		if (o->json) {
			printf("%s{\"pid\":%s,\"uid\":%s,\"process\":", i ? "," : "", pid, uid);
			json_cstring(stdout, comm);
			printf(",\"generation\":%llu,\"taken_ns\":%llu,\"current\":%s}", gen, at,
			       gen == now_gen ? "true" : "false");
		} else {
			char when[64] = "never", *shown = escaped(comm, 0);

			if (at) {
				time_t t = (time_t)(at / 1000000000ull);
				struct tm tm;

				gmtime_r(&t, &tm);
				strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
			}
			printf("%8s %6s %-16s %12llu  %s%s\n", pid, uid, shown ? shown : "?", gen, when,
			       gen == now_gen  ? ""
			       : gen < now_gen ? "  (behind)"
			                       : "");
			free(shown);
		}
	}
	if (o->json)
		printf("]}\n");
	close(fd);
	return 0;
}

/* ---- opening a segment: /dev/shm is hostile --------------------------------- */

/* What an entry that is not a regular file is, in words. */
static const char *file_kind(mode_t mode)
{
	if (S_ISLNK(mode))
		return "a symbolic link (not followed)";
	if (S_ISFIFO(mode))
		return "a FIFO";
	if (S_ISDIR(mode))
		return "a directory";
	if (S_ISSOCK(mode))
		return "a socket";
	if (S_ISCHR(mode) || S_ISBLK(mode))
		return "a device";
	return "not a regular file";
}

/* Open the entry name of dirfd for reading without ever blocking (a FIFO,
 * a file lease), following a symbolic link or taking a terminal. fd, or
 * -errno. */
static int open_entry(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);

	return fd < 0 ? -errno : fd;
}

/* Trust (the reader's policy), then map and validate: r->fd is open on a
 * regular file of stat st. 0, or -errno with r->why (r is closed). */
static int map_trusted(zkw_reader *r, const struct stat *st, const zkw_reader_options *opt)
{
	int err = zkw__reader_trust(r, st, opt);

	if (err)
		return zkw__reader_fail(r, err, r->why_buf);
	if ((uint64_t)st->st_size > SEGMENT_SIZE_MAX)
		return zkw__reader_fail(r, -EBADMSG, "too large for a segment");
	return zkw__reader_map(r, st);
}

/* zkw_reader_open_ex, with the open of open_entry: a FIFO named like a
 * segment fails at once instead of blocking the tool (shm_open(3) opens
 * without O_NONBLOCK). The same errors and words otherwise, and -EBADMSG
 * "not a shared-memory segment: a FIFO" for what is not a regular file. */
static int open_segment(zkw_reader *r, const char *shm_name, const zkw_reader_options *opt)
{
	char name[ZKW_SHM_NAME_MAX + 1], path[sizeof(SHM_DIR) + ZKW_SHM_NAME_MAX + 1];
	struct stat st;
	int fd, err;

	zkw__reader_init(r);
	err = zkw_shm_name(name, sizeof(name), shm_name);
	if (err)
		return zkw__reader_fail(r, err, "invalid segment name");
	snprintf(path, sizeof(path), SHM_DIR "%s", name);
	fd = open_entry(AT_FDCWD, path);
	if (fd < 0)
		return zkw__reader_fail(r, fd,
		                        fd == -ENOENT   ? "no such segment (is zkw-broker running?)"
		                        : fd == -EACCES ? "permission denied"
		                        : fd == -ELOOP  ? "a symbolic link, not followed"
		                                        : "cannot open segment");
	r->fd = fd;
	if (fstat(fd, &st) < 0)
		return zkw__reader_fail(r, -errno, "cannot stat segment");
	if (!S_ISREG(st.st_mode)) {
		snprintf(r->why_buf, sizeof(r->why_buf), "not a shared-memory segment: %s",
		         file_kind(st.st_mode));
		return zkw__reader_fail(r, -EBADMSG, r->why_buf);
	}
	return map_trusted(r, &st, opt);
}

/* s escaped as zkw_text.h says (flags), into a malloc'd string. */
static char *escaped(const char *s, unsigned flags)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return NULL;
	zkw_text_puts(f, s, flags);
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* ---- --list, --prometheus: every segment and broker ---------------------------- */

enum entry_status {
	ENTRY_OK,        /* trusted, mapped and valid */
	ENTRY_UNTRUSTED, /* a zkw object whose owner or mode the policy refuses: not read */
	ENTRY_DENIED,    /* named zkw*, we may not open it */
	ENTRY_BAD        /* named zkw* (or with a zkw magic), but no usable object */
};

static const char *const status_word[] = {"ok", "untrusted", "denied", "bad"};

struct entry {
	char *name; /* "/zkw.tmp.x", escaped for display */
	char *raw;  /* as in the directory, with its '/' */
	bool stats; /* a broker's stats object (else a segment) */
	enum entry_status status;
	char why[320]; /* when not ENTRY_OK */
	uid_t uid;
	mode_t mode;
	/* segment */
	char *path; /* escaped */
	char *path_raw;
	uint32_t state, pid;
	uint64_t generation, confirmed_ns;
	bool alive;
	/* stats */
	struct zkw_stats_view *view;
};

struct scan {
	struct entry *e;
	size_t n, cap;
};

static struct entry *scan_add(struct scan *sc, const char *d_name)
{
	struct entry *e;
	char raw[NAME_MAX + 2];

	if (sc->n == sc->cap) {
		size_t cap = sc->cap ? sc->cap * 2 : 32;
		struct entry *p = realloc(sc->e, cap * sizeof(*p));

		if (!p)
			return NULL;
		sc->e = p;
		sc->cap = cap;
	}
	e = &sc->e[sc->n];
	memset(e, 0, sizeof(*e));
	snprintf(raw, sizeof(raw), "/%s", d_name);
	e->raw = strdup(raw);
	e->name = escaped(raw, 0);
	if (!e->raw || !e->name) {
		free(e->raw);
		free(e->name);
		return NULL;
	}
	sc->n++;
	return e;
}

static void scan_free(struct scan *sc)
{
	for (size_t i = 0; i < sc->n; i++) {
		free(sc->e[i].name);
		free(sc->e[i].raw);
		free(sc->e[i].path);
		free(sc->e[i].path_raw);
		free(sc->e[i].view);
	}
	free(sc->e);
}

static void entry_fail(struct entry *e, enum entry_status status, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static void entry_fail(struct entry *e, enum entry_status status, const char *fmt, ...)
{
	va_list ap;

	e->status = status;
	va_start(ap, fmt);
	vsnprintf(e->why, sizeof(e->why), fmt, ap);
	va_end(ap);
}

/* A trusted segment: map, validate, load the hot line. fd is consumed. */
static void read_segment(struct entry *e, int fd, const struct stat *st, const zkw_reader_options *opt)
{
	struct ident_view id;
	zkw_reader r;

	zkw__reader_init(&r);
	r.fd = fd;
	if (map_trusted(&r, st, opt) != 0) {
		entry_fail(e, ENTRY_BAD, "%s", r.why ? r.why : "cannot open");
		return;
	}
	load_ident(&r, &id);
	e->path_raw = strdup(id.watch_path);
	e->path = escaped(id.watch_path, 0);
	e->pid = id.broker_pid;
	e->generation = zkw_reader_generation(&r);
	e->state = zkw_reader_state(&r);
	e->confirmed_ns = zkw_reader_confirmed_ns(&r); /* one load (ABI minor 2) */
	e->alive = zkw_reader_broker_alive(&r);
	zkw_reader_close(&r);
}

/* A trusted stats object: map its page read-only and copy it. fd is
 * consumed. */
static void read_stats(struct entry *e, int fd, const struct stat *st)
{
	zkw_reader probe;
	void *map;
	int err;

	if ((uint64_t)st->st_size < ZKW_STATS_SIZE || (uint64_t)st->st_size > SEGMENT_SIZE_MAX) {
		entry_fail(e, ENTRY_BAD, "not a stats object: %lld bytes", (long long)st->st_size);
		close(fd);
		return;
	}
	e->view = calloc(1, sizeof(*e->view));
	map = e->view ? mmap(NULL, ZKW_STATS_SIZE, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
	if (map == MAP_FAILED) {
		entry_fail(e, ENTRY_BAD, "cannot map: %s", strerror(e->view ? errno : ENOMEM));
		close(fd);
		return;
	}
	err = zkw_stats_load(map, ZKW_STATS_SIZE, e->view);
	munmap(map, ZKW_STATS_SIZE);
	if (err)
		entry_fail(e, ENTRY_BAD, "%s",
		           err == -EPROTO ? "stats ABI major version mismatch" : "corrupt stats object");
	/* The broker's write lock, probed as the segments' (client.h). */
	zkw__reader_init(&probe);
	probe.fd = fd;
	e->alive = zkw_reader_broker_alive(&probe);
	e->pid = e->view->broker_pid;
	close(fd);
}

/* Look at one entry of /dev/shm. */
static int scan_entry(struct scan *sc, int dirfd, const char *d_name, const zkw_reader_options *opt)
{
	bool zkw_named = strncmp(d_name, "zkw", 3) == 0;
	bool stats_named = strncmp(d_name, ZKW_STATS_PREFIX, strlen(ZKW_STATS_PREFIX)) == 0;
	uint64_t magic = 0;
	struct entry *e;
	struct stat st;
	zkw_reader policy;
	char owner[64];
	int fd;

	if (d_name[0] == '.') /* ., .., the brokers' .zkw-lock.* and .zkw-new.* */
		return 0;
	if (fstatat(dirfd, d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return 0; /* gone meanwhile */
	if (!S_ISREG(st.st_mode)) {
		if (!zkw_named)
			return 0;
		if (!(e = scan_add(sc, d_name)))
			return -ENOMEM;
		e->stats = stats_named;
		e->uid = st.st_uid;
		e->mode = st.st_mode;
		entry_fail(e, ENTRY_BAD, "not a segment: %s", file_kind(st.st_mode));
		return 0;
	}
	fd = open_entry(dirfd, d_name);
	if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))) {
		close(fd); /* replaced by something else since the lstat */
		fd = -EBADF;
	}
	if (fd >= 0 && pread(fd, &magic, sizeof(magic), 0) != (ssize_t)sizeof(magic))
		magic = 0; /* shorter than a magic: not one of ours */
	if (!zkw_named && magic != ZKW_SEGMENT_MAGIC && magic != ZKW_STATS_MAGIC) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	if (!(e = scan_add(sc, d_name))) {
		if (fd >= 0)
			close(fd);
		return -ENOMEM;
	}
	e->stats = magic == ZKW_STATS_MAGIC || (magic != ZKW_SEGMENT_MAGIC && stats_named);
	e->uid = st.st_uid;
	e->mode = st.st_mode;
	zkw__uid_text(owner, sizeof(owner), st.st_uid);
	if (fd < 0) {
		entry_fail(e, fd == -EACCES ? ENTRY_DENIED : ENTRY_BAD,
		           "cannot open: %s (owner %s, mode %04o)", strerror(-fd), owner,
		           (unsigned)(st.st_mode & 07777));
		return 0;
	}
	zkw__reader_init(&policy);
	if (zkw__reader_trust(&policy, &st, opt) != 0) {
		entry_fail(e, ENTRY_UNTRUSTED, "%s", policy.why_buf);
		close(fd);
		return 0;
	}
	if (magic == ZKW_SEGMENT_MAGIC)
		read_segment(e, fd, &st, opt);
	else if (magic == ZKW_STATS_MAGIC)
		read_stats(e, fd, &st);
	else {
		entry_fail(e, ENTRY_BAD, "not a zkw segment (no zkw magic; %lld bytes)",
		           (long long)st.st_size);
		close(fd);
	}
	return 0;
}

static int entry_cmp(const void *a, const void *b)
{
	return strcmp(((const struct entry *)a)->raw, ((const struct entry *)b)->raw);
}

/* Every zkw object of /dev/shm, sorted by name. 0 or -errno (reported). */
static int scan_shm(struct scan *sc, const struct options *o)
{
	zkw_reader_options ropt = {o->owner};
	DIR *d = opendir(SHM_DIR);
	struct dirent *de;
	int err = 0;

	memset(sc, 0, sizeof(*sc));
	if (!d) {
		fprintf(stderr, "zkw-inspect: cannot read " SHM_DIR ": %s\n", strerror(errno));
		return -errno;
	}
	while (!err && (errno = 0, de = readdir(d)))
		err = scan_entry(sc, dirfd(d), de->d_name, &ropt);
	if (!err && errno)
		err = -errno;
	closedir(d);
	if (err) {
		fprintf(stderr, "zkw-inspect: reading " SHM_DIR ": %s\n", strerror(-err));
		return err;
	}
	if (sc->n)
		qsort(sc->e, sc->n, sizeof(sc->e[0]), entry_cmp);
	return 0;
}

/* Shown connected: alive, running and connected (a dead broker's last
 * state may still say connected). */
static bool entry_connected(const struct entry *e)
{
	return e->alive && (e->state & ZKW_STATE_RUNNING) && (e->state & ZKW_STATE_CONNECTED);
}

/* The counters, in ABI order: how --list, --json and --prometheus name them. */
static const struct counter_name {
	enum zkw_stat index;
	const char *key;   /* JSON, and the metric: zkw_broker_<key>_total */
	const char *words; /* --list */
	const char *help;  /* --prometheus */
} counter_names[] = {
        {ZKW_STAT_ZK_EVENTS, "zookeeper_events", "ZooKeeper events",
         "Watch notifications from ZooKeeper (session and node events)."},
        {ZKW_STAT_ZK_READS, "zookeeper_reads", "reads",
         "Reads sent to ZooKeeper (get, or exists with a watch)."},
        {ZKW_STAT_RECONCILE_CHECKS, "reconcile_checks", "reconcile checks",
         "Reconcile exists requests sent."},
        {ZKW_STAT_RECONCILE_REPAIRS, "reconcile_repairs", "reconcile repairs",
         "Reconciles that found a node changed unnoticed, and re-read it."},
        {ZKW_STAT_RECONNECTS, "reconnects", "reconnects",
         "Connections to ZooKeeper made again after the connection or the session was lost."},
        {ZKW_STAT_SESSION_EXPIRIES, "session_expiries", "session expiries",
         "ZooKeeper sessions lost: expired, refused, or given up after a session timeout unconnected."},
        {ZKW_STAT_PUBLISHES, "publishes", "publishes", "Generations published into segments."},
        {ZKW_STAT_CONFIRMATIONS, "confirmations", "confirmations",
         "Reconcile confirmations that moved a segment's confirmed-at time alone."},
        {ZKW_STAT_SUBSCRIPTIONS, "subscriptions", "subscriptions",
         "Subscriptions accepted on the control socket."},
        {ZKW_STAT_SUBSCRIPTIONS_REFUSED, "subscriptions_refused", "refused subscriptions",
         "Subscriptions refused by the policy or a cap."},
        {ZKW_STAT_ERRORS, "errors", "errors", "Errors and warnings recorded as the last error."},
        {ZKW_STAT_REJECTIONS, "rejections", "rejections",
         "Contents refused by a watch's validation (the last good content stayed published)."},
        {ZKW_STAT_STATE_WRITES, "state_writes", "state writes",
         "Snapshots written to the state directory (the disk cache for a cold start)."},
        {ZKW_STAT_STATE_FAILURES, "state_failures", "state write failures",
         "Writes to the state directory that failed (a full disk, an I/O error)."},
        {ZKW_STAT_COLD_STARTS, "cold_starts", "cold starts",
         "Watches published from the state directory before ZooKeeper answered."},
};
_Static_assert(sizeof(counter_names) / sizeof(counter_names[0]) == ZKW_STAT_COUNT, "a name per counter");

static void print_list_text(const struct scan *sc)
{
	uint64_t now = zkw_clock_ns(CLOCK_REALTIME);
	int wname = 4, wpath = 4;
	size_t nstats = 0;

	for (size_t i = 0; i < sc->n; i++) {
		const struct entry *e = &sc->e[i];

		if (e->stats) {
			nstats++;
			continue;
		}
		if ((int)strlen(e->name) > wname)
			wname = strlen(e->name) > 48 ? 48 : (int)strlen(e->name);
		if (e->path && (int)strlen(e->path) > wpath)
			wpath = strlen(e->path) > 48 ? 48 : (int)strlen(e->path);
	}
	printf("%-*s %-*s %-5s %-9s %10s %-16s %7s %-5s %s\n", wname, "NAME", wpath, "PATH", "VALID",
	       "CONNECTED", "GENERATION", "CONFIRMED", "BROKER", "ALIVE", "STATUS");
	for (size_t i = 0; i < sc->n; i++) {
		const struct entry *e = &sc->e[i];
		char age[64];

		if (e->stats)
			continue;
		if (e->status != ENTRY_OK) {
			printf("%-*s %-*s %-5s %-9s %10s %-16s %7s %-5s %s: %s\n", wname, e->name, wpath, "-",
			       "-", "-", "-", "-", "-", "-", status_word[e->status], e->why);
			continue;
		}
		if (e->confirmed_ns == 0)
			snprintf(age, sizeof(age), "never");
		else
			format_age(age, sizeof(age), e->confirmed_ns, now);
		printf("%-*s %-*s %-5s %-9s %10" PRIu64 " %-16s %7" PRIu32 " %-5s %s\n", wname, e->name,
		       wpath, e->path[0] ? e->path : "-", e->state & ZKW_STATE_VALID ? "yes" : "no",
		       entry_connected(e) ? "yes" : "no", e->generation, age, e->pid, e->alive ? "yes" : "no",
		       e->state & ZKW_STATE_RETIRED ? "ok (retired)" : "ok");
	}
	if (!nstats)
		return;
	printf("\n");
	for (size_t i = 0; i < sc->n; i++) {
		const struct entry *e = &sc->e[i];
		const struct zkw_stats_view *v = e->view;
		char when[64], age[64], *text;

		if (!e->stats)
			continue;
		if (e->status != ENTRY_OK) {
			printf("broker %s: %s: %s\n", e->name, status_word[e->status], e->why);
			continue;
		}
		text = escaped(v->socket, 0);
		printf("broker %s: pid %" PRIu32 ", %s, zkw %s, started %s (%s), socket %s\n", e->name,
		       v->broker_pid, e->alive ? "alive" : "dead", v->version,
		       format_time(when, sizeof(when), v->broker_started_ns),
		       format_age(age, sizeof(age), v->broker_started_ns, now),
		       text && *text ? text : "none");
		free(text);
		printf("  ");
		for (size_t k = 0; k < ZKW_STAT_COUNT; k++)
			if (counter_names[k].index < v->counter_count)
				printf("%s%" PRIu64 " %s", k ? ", " : "", v->counter[counter_names[k].index],
				       counter_names[k].words);
		printf("\n  last error: ");
		if (v->error_torn) {
			printf("(being rewritten)\n");
		} else if (!v->error_ns) {
			printf("none\n");
		} else {
			printf("%s (%s): ", format_time(when, sizeof(when), v->error_ns),
			       format_age(age, sizeof(age), v->error_ns, now));
			zkw_text_puts(stdout, v->error, 0);
			printf("\n");
		}
	}
}

static void print_list_json(const struct scan *sc)
{
	uint64_t now = zkw_clock_ns(CLOCK_REALTIME);
	bool first = true;

	printf("{\"segments\":[");
	for (int pass = 0; pass < 2; pass++) {
		if (pass)
			printf("],\"brokers\":[");
		first = true;
		for (size_t i = 0; i < sc->n; i++) {
			const struct entry *e = &sc->e[i];
			char owner[64];

			if (e->stats != (pass == 1))
				continue;
			printf("%s{\"name\":", first ? "" : ",");
			first = false;
			json_cstring(stdout, e->raw);
			zkw__uid_text(owner, sizeof(owner), e->uid);
			printf(",\"status\":\"%s\",\"owner_uid\":%u,\"owner\":", status_word[e->status],
			       (unsigned)e->uid);
			json_cstring(stdout, owner);
			printf(",\"mode\":\"%04o\"", (unsigned)(e->mode & 07777));
			if (e->status != ENTRY_OK) {
				printf(",\"why\":");
				json_cstring(stdout, e->why);
				printf("}");
				continue;
			}
			if (!e->stats) {
				printf(",\"path\":");
				json_cstring(stdout, e->path_raw ? e->path_raw : "");
				printf(",\"valid\":%s,\"connected\":%s,\"retired\":%s,\"generation\":%" PRIu64
				       ",\"confirmed_ns\":%" PRIu64,
				       e->state & ZKW_STATE_VALID ? "true" : "false",
				       entry_connected(e) ? "true" : "false",
				       e->state & ZKW_STATE_RETIRED ? "true" : "false", e->generation,
				       e->confirmed_ns);
				json_age("age_confirmed_s", e->confirmed_ns, now);
				printf(",\"broker_pid\":%" PRIu32 ",\"broker_alive\":%s}", e->pid,
				       e->alive ? "true" : "false");
				continue;
			}
			const struct zkw_stats_view *v = e->view;

			printf(",\"broker_pid\":%" PRIu32 ",\"broker_alive\":%s,\"version\":", v->broker_pid,
			       e->alive ? "true" : "false");
			json_cstring(stdout, v->version);
			printf(",\"socket\":");
			json_cstring(stdout, v->socket);
			printf(",\"started_ns\":%" PRIu64 ",\"abi\":\"%u.%u\",\"counters\":{",
			       v->broker_started_ns, v->abi_major, v->abi_minor);
			for (size_t k = 0, n = 0; k < ZKW_STAT_COUNT; k++)
				if (counter_names[k].index < v->counter_count)
					printf("%s\"%s\":%" PRIu64, n++ ? "," : "", counter_names[k].key,
					       v->counter[counter_names[k].index]);
			printf("},\"last_error\":");
			if (!v->error_ns) {
				printf("null}");
				continue;
			}
			printf("{\"at_ns\":%" PRIu64, v->error_ns);
			json_age("age_s", v->error_ns, now);
			printf(",\"level\":\"%s\",\"text\":", v->error_level == 1 ? "error" : "warning");
			json_cstring(stdout, v->error);
			printf("}}");
		}
	}
	printf("]}\n");
}

/* A Prometheus label value: the text as zkw_text.h shows it (printable
 * UTF-8 kept, controls and invalid UTF-8 as \xNN, a backslash doubled),
 * then escaped as the exposition format wants (\\ and \"): any bytes make
 * a valid label, and the value reads back as the text report shows it. */
static void prom_label(const char *key, const char *value, bool last)
{
	char *shown = escaped(value, 0);

	printf("%s=\"", key);
	for (const char *p = shown ? shown : ""; *p; p++) {
		if (*p == '\\' || *p == '"')
			putchar('\\');
		putchar(*p);
	}
	printf("\"%s", last ? "" : ",");
	free(shown);
}

static void prom_family(const char *name, const char *type, const char *help)
{
	printf("# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void prom_segment_labels(const struct entry *e)
{
	char pid[16];

	snprintf(pid, sizeof(pid), "%" PRIu32, e->pid);
	printf("{");
	prom_label("name", e->raw, false);
	prom_label("path", e->path_raw ? e->path_raw : "", false);
	prom_label("broker_pid", pid, true);
	printf("}");
}

static void prom_broker_labels(const struct entry *e)
{
	char pid[16];

	snprintf(pid, sizeof(pid), "%" PRIu32, e->view->broker_pid);
	printf("{");
	prom_label("name", e->raw, false);
	prom_label("broker_pid", pid, false);
	prom_label("socket", e->view->socket, true);
	printf("}");
}

/* One gauge per segment: value() of each readable segment. */
static void prom_segments(const struct scan *sc, const char *name, const char *help,
                          void (*value)(const struct entry *e, uint64_t now), uint64_t now)
{
	prom_family(name, "gauge", help);
	for (size_t i = 0; i < sc->n; i++) {
		const struct entry *e = &sc->e[i];

		if (e->stats || e->status != ENTRY_OK)
			continue;
		printf("%s", name);
		prom_segment_labels(e);
		putchar(' ');
		value(e, now);
		putchar('\n');
	}
}

/* Unix time in seconds, to the millisecond, from CLOCK_REALTIME ns. */
static void prom_seconds(uint64_t ns)
{
	printf("%" PRIu64 ".%03u", ns / 1000000000u, (unsigned)(ns % 1000000000u / 1000000u));
}

static void seg_valid(const struct entry *e, uint64_t now)
{
	(void)now;
	putchar(e->state & ZKW_STATE_VALID ? '1' : '0');
}

static void seg_connected(const struct entry *e, uint64_t now)
{
	(void)now;
	putchar(entry_connected(e) ? '1' : '0');
}

static void seg_alive(const struct entry *e, uint64_t now)
{
	(void)now;
	putchar(e->alive ? '1' : '0');
}

static void seg_generation(const struct entry *e, uint64_t now)
{
	(void)now;
	printf("%" PRIu64, e->generation);
}

static void seg_confirmed(const struct entry *e, uint64_t now)
{
	(void)now;
	prom_seconds(e->confirmed_ns);
}

static void seg_age(const struct entry *e, uint64_t now)
{
	if (!e->confirmed_ns)
		printf("-1");
	else
		printf("%.3f", e->confirmed_ns > now ? 0.0 : age_seconds(e->confirmed_ns, now));
}

/* Every readable segment and broker, in the Prometheus text exposition
 * format (version 0.0.4), for node_exporter's textfile collector: no
 * timestamps, every family's samples together after its HELP and TYPE. */
static void print_prometheus(const struct scan *sc)
{
	uint64_t now = zkw_clock_ns(CLOCK_REALTIME);

	prom_segments(sc, "zkw_segment_valid",
	              "Whether the segment's published snapshot is valid (1) or not (0).", seg_valid, now);
	prom_segments(sc, "zkw_segment_connected",
	              "Whether the segment's broker is alive and connected to ZooKeeper (1) or not (0).",
	              seg_connected, now);
	prom_segments(sc, "zkw_segment_broker_up", "Whether a broker holds the segment (its write lock).",
	              seg_alive, now);
	prom_segments(sc, "zkw_segment_generation", "The segment's last published generation.",
	              seg_generation, now);
	prom_segments(sc, "zkw_segment_confirmed_timestamp_seconds",
	              "When ZooKeeper last confirmed the published content (Unix time; 0 = never).",
	              seg_confirmed, now);
	prom_segments(sc, "zkw_segment_confirmed_age_seconds",
	              "Seconds since ZooKeeper last confirmed the published content (-1 = never).", seg_age,
	              now);
	prom_family("zkw_segment_unreadable", "gauge",
	            "A zkw segment or stats object in /dev/shm that is not read: status untrusted, denied or "
	            "bad.");
	for (size_t i = 0; i < sc->n; i++) {
		const struct entry *e = &sc->e[i];
		char uid[16];

		if (e->status == ENTRY_OK)
			continue;
		snprintf(uid, sizeof(uid), "%u", (unsigned)e->uid);
		printf("zkw_segment_unreadable{");
		prom_label("name", e->raw, false);
		prom_label("status", status_word[e->status], false);
		prom_label("owner_uid", uid, true);
		printf("} 1\n");
	}
	prom_family("zkw_broker_up", "gauge",
	            "Whether the broker of this stats object is running (holds its lock).");
	for (size_t i = 0; i < sc->n; i++)
		if (sc->e[i].stats && sc->e[i].status == ENTRY_OK) {
			printf("zkw_broker_up");
			prom_broker_labels(&sc->e[i]);
			printf(" %d\n", sc->e[i].alive ? 1 : 0);
		}
	prom_family("zkw_broker_start_timestamp_seconds", "gauge", "When the broker started (Unix time).");
	for (size_t i = 0; i < sc->n; i++)
		if (sc->e[i].stats && sc->e[i].status == ENTRY_OK) {
			printf("zkw_broker_start_timestamp_seconds");
			prom_broker_labels(&sc->e[i]);
			putchar(' ');
			prom_seconds(sc->e[i].view->broker_started_ns);
			putchar('\n');
		}
	prom_family("zkw_broker_info", "gauge", "The broker's version (value 1).");
	for (size_t i = 0; i < sc->n; i++)
		if (sc->e[i].stats && sc->e[i].status == ENTRY_OK) {
			printf("zkw_broker_info{");
			prom_label("name", sc->e[i].raw, false);
			prom_label("version", sc->e[i].view->version, true);
			printf("} 1\n");
		}
	for (size_t k = 0; k < ZKW_STAT_COUNT; k++) {
		char metric[96];

		snprintf(metric, sizeof(metric), "zkw_broker_%s_total", counter_names[k].key);
		prom_family(metric, "counter", counter_names[k].help);
		for (size_t i = 0; i < sc->n; i++) {
			const struct entry *e = &sc->e[i];

			if (!e->stats || e->status != ENTRY_OK ||
			    counter_names[k].index >= e->view->counter_count)
				continue;
			printf("%s", metric);
			prom_broker_labels(e);
			printf(" %" PRIu64 "\n", e->view->counter[counter_names[k].index]);
		}
	}
	prom_family("zkw_broker_last_error_timestamp_seconds", "gauge",
	            "When the broker recorded its last error or warning (Unix time; 0 = none).");
	for (size_t i = 0; i < sc->n; i++)
		if (sc->e[i].stats && sc->e[i].status == ENTRY_OK) {
			printf("zkw_broker_last_error_timestamp_seconds");
			prom_broker_labels(&sc->e[i]);
			putchar(' ');
			prom_seconds(sc->e[i].view->error_ns);
			putchar('\n');
		}
	prom_family("zkw_broker_last_error_info", "gauge",
	            "The broker's last error or warning, as a label (value 1).");
	for (size_t i = 0; i < sc->n; i++) {
		const struct entry *e = &sc->e[i];

		if (!e->stats || e->status != ENTRY_OK || !e->view->error_ns)
			continue;
		printf("zkw_broker_last_error_info{");
		prom_label("name", e->raw, false);
		prom_label("level", e->view->error_level == 1 ? "error" : "warning", false);
		prom_label("error", e->view->error, true);
		printf("} 1\n");
	}
}

static int list_all(const struct options *o)
{
	struct scan sc;

	if (scan_shm(&sc, o) < 0)
		return 1;
	if (o->prometheus)
		print_prometheus(&sc);
	else if (o->json)
		print_list_json(&sc);
	else
		print_list_text(&sc);
	scan_free(&sc);
	return 0;
}

/* ---- --check: a monitoring plugin -------------------------------------------- */

/* Text from the segment on the status line: escaped (no control byte, one
 * line) and without '|', which would start the perfdata. */
static void check_text(const char *s)
{
	char *shown = escaped(s, 0);

	for (const char *p = shown ? shown : ""; *p; p++)
		if (*p == '|')
			fputs("\\x7c", stdout);
		else
			putchar(*p);
	free(shown);
}

static int check_status(int code, const char *name, const char *reason)
{
	static const char *const word[] = {"OK", "WARNING", "CRITICAL", "UNKNOWN"};

	printf("ZKW %s - ", word[code]);
	check_text(name);
	printf(": ");
	check_text(reason);
	printf("\n");
	return code;
}

/* Exit status as the monitoring-plugin guidelines say: the worst of
 *   CRITICAL  no such segment; no broker holds it (dead, or stopped);
 *             invalid while connected (node missing, no access, a bad
 *             pointer, too large); confirmed longer ago than --max-age
 *   WARNING   ZooKeeper unreachable (invalid only for that: the last good
 *             content is served); confirmed longer ago than --warn-age
 *   UNKNOWN   the segment cannot be read (permission, owner, corrupt)
 * with one status line and perfdata: age (s) and generation. */
static int check(const struct options *o)
{
	zkw_reader_options ropt = {o->owner};
	char name[ZKW_SHM_NAME_MAX + 1], perf[160], age_text[64], warn[24] = "", crit[24] = "";
	zkw_snapshot m;
	zkw_reader r;
	unsigned char *buf;
	uint64_t confirmed, now;
	size_t len = 0;
	double age;
	bool alive, running, connected;
	int err, code = CHECK_OK;

	if (zkw_shm_name(name, sizeof(name), o->name) != 0)
		snprintf(name, sizeof(name), "%s", o->name);
	err = open_segment(&r, o->name, &ropt);
	if (err)
		return check_status(err == -ENOENT ? CHECK_CRITICAL : CHECK_UNKNOWN, name,
		                    r.why ? r.why : "cannot open");
	buf = malloc(r.capacity ? r.capacity : 1);
	err = buf ? read_snapshot(&r, &m, buf, r.capacity, &len) : -ENOMEM;
	free(buf);
	if (err) {
		zkw_reader_close(&r);
		return check_status(CHECK_UNKNOWN, name,
		                    err == -EBADMSG  ? "corrupt slot (bad lengths)"
		                    : err == -EAGAIN ? "the writer kept overwriting it"
		                                     : strerror(-err));
	}
	confirmed = zkw_reader_confirmed_ns(&r); /* one load */
	alive = zkw_reader_broker_alive(&r);
	running = zkw_reader_state(&r) & ZKW_STATE_RUNNING;
	connected = m.connected && alive && running;
	now = zkw_clock_ns(CLOCK_REALTIME);
	age = confirmed ? age_seconds(confirmed, now) : -1;
	if (confirmed && age < 0)
		age = 0; /* a clock step back: fresh, not in the future */
	if (o->warn_age)
		snprintf(warn, sizeof(warn), "%ld", o->warn_age);
	if (o->max_age)
		snprintf(crit, sizeof(crit), "%ld", o->max_age);
	if (confirmed)
		snprintf(perf, sizeof(perf), "age=%.0fs;%s;%s;0 generation=%" PRIu64 "c", age, warn, crit,
		         m.generation);
	else
		snprintf(perf, sizeof(perf), "age=U;%s;%s;0 generation=%" PRIu64 "c", warn, crit,
		         m.generation);
	if (confirmed)
		format_age(age_text, sizeof(age_text), confirmed, now);
	else
		snprintf(age_text, sizeof(age_text), "never");

	printf("ZKW ");
	if (!alive || !running) {
		code = CHECK_CRITICAL;
		printf("CRITICAL - ");
		check_text(name);
		printf(" has no broker: the last one (pid %" PRIu32 ") %s, last generation %" PRIu64
		       ", confirmed %s",
		       zkw_reader_broker_pid(&r), alive ? "is stopping" : "stopped or died", m.generation,
		       age_text);
	} else if (!m.valid && m.connected) {
		code = CHECK_CRITICAL;
		printf("CRITICAL - ");
		check_text(name);
		printf(" invalid: ");
		check_text(m.error[0] ? m.error : "nothing published yet");
		printf(", generation %" PRIu64 ", confirmed %s", m.generation, age_text);
	} else {
		bool too_old = o->max_age && (!confirmed || age > (double)o->max_age);
		bool old = o->warn_age && (!confirmed || age > (double)o->warn_age);

		code = too_old ? CHECK_CRITICAL : old || !connected ? CHECK_WARNING : CHECK_OK;
		printf("%s - ", code == CHECK_CRITICAL  ? "CRITICAL"
		                : code == CHECK_WARNING ? "WARNING"
		                                        : "OK");
		check_text(name);
		if (!connected) {
			printf(" disconnected from ZooKeeper (");
			check_text(m.error[0] ? m.error : "not connected");
			printf("), last good content kept,");
		} else {
			printf(" valid,");
		}
		printf(" generation %" PRIu64 ", confirmed %s", m.generation, age_text);
		if (too_old)
			printf(" (more than --max-age %ld s)", o->max_age);
		else if (old)
			printf(" (more than --warn-age %ld s)", o->warn_age);
	}
	printf(" | %s\n", perf);
	zkw_reader_close(&r);
	return code;
}

/* ---- main ------------------------------------------------------------------ */

static void usage(FILE *out)
{
	fputs(usage_text, out);
}

/* Is --check (or an abbreviation only it has) among the options? Usage
 * errors then exit UNKNOWN, as a monitoring plugin must. */
static bool wants_check(int argc, char **argv)
{
	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
		if (strlen(argv[i]) >= 4 && strncmp(argv[i], "--check", strlen(argv[i])) == 0)
			return true;
	return false;
}

/* 0, or -1 once the reason and the usage are on stderr. */
static int parse_args(int argc, char **argv, struct options *o)
{
	struct zkw_opt opt;
	const char *bad = NULL;
	bool warn_given = false, max_given = false;
	int c, operands;

	memset(o, 0, sizeof(*o));
	o->owner = (uid_t)-1;
	o->warn_age = WARN_AGE_DEFAULT;
	o->max_age = MAX_AGE_DEFAULT;
	zkw_opt_init(
	        &opt, argc, argv, "zkw-inspect",
	        "j|json w|watch c=content r|readers S=socket: O=owner: l|list K=check W=warn-age: A=max-age: "
	        "P=prometheus V|version h|help",
	        usage);
	while ((c = zkw_opt_next(&opt)) != -1) {
		switch (c) {
		case 'j': o->json = true; break;
		case 'w': o->watch = true; break;
		case 'c': o->content = true; break;
		case 'r': o->readers = true; break;
		case 'S': o->socket = opt.arg; break;
		case 'l': o->list = true; break;
		case 'K': o->check = true; break;
		case 'P': o->prometheus = true; break;
		case 'V': o->version = true; break;
		case 'W':
		case 'A':
			warn_given |= c == 'W';
			max_given |= c == 'A';
			if (zkw_opt_long(&opt, "a number of seconds (0 = never)", 0, 100L * 365 * 86400,
			                 c == 'W' ? &o->warn_age : &o->max_age))
				return -1;
			break;
		case 'O':
			if (zkw_opt_uid(&opt, &o->owner))
				return -1;
			break;
		default: return -1; /* reported */
		}
	}
	if (o->version)
		return 0;
	operands = argc - opt.index;
	if ((o->list || o->prometheus) && operands)
		bad = "--list and --prometheus show every segment: no NAME";
	else if (!(o->list || o->prometheus) && operands != 1)
		bad = operands == 0 ? "missing segment NAME" : "too many arguments";
	else if (o->list + o->check + o->prometheus + o->readers + o->watch + o->content > 1)
		bad = "--list, --check, --prometheus, --readers, --watch and --content go one at a time";
	else if (o->json && (o->check || o->prometheus))
		bad = "--json goes with neither --check nor --prometheus";
	else if ((warn_given || max_given) && !o->check)
		bad = "--warn-age and --max-age are for --check";
	else if (warn_given && max_given && o->warn_age && o->max_age && o->warn_age > o->max_age)
		bad = "--warn-age is above --max-age";
	else if (o->socket && !o->readers)
		bad = "--socket is for --readers";
	if (bad) {
		fprintf(stderr, "zkw-inspect: %s\n", bad);
		usage(stderr);
		return -1;
	}
	o->name = operands ? argv[opt.index] : NULL;
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

	if (parse_args(argc, argv, &o) < 0) {
		if (!wants_check(argc, argv))
			return 2;
		printf("ZKW UNKNOWN - bad usage (the reason is on stderr; see zkw-inspect --help)\n");
		return CHECK_UNKNOWN;
	}
	if (o.version) {
		printf("zkw-inspect %s\n", ZKW_VERSION);
		return fflush(stdout) == 0 ? 0 : 1;
	}
	if (o.check) {
		status = check(&o);
		return fflush(stdout) == 0 ? status : CHECK_UNKNOWN;
	}
	if (o.list || o.prometheus) {
		status = list_all(&o);
	} else {
		memset(&ropt, 0, sizeof(ropt));
		ropt.expected_uid = o.owner;
		err = open_segment(&r, o.name, &ropt);
		if (err) {
			fprintf(stderr, "zkw-inspect: %s: %s (%s)\n", o.name, r.why ? r.why : "cannot open",
			        strerror(-err));
			return 1;
		}
		cap = (size_t)zkw_reader_capacity(&r);
		buf = malloc(cap ? cap : 1);
		if (!buf) {
			fprintf(stderr, "zkw-inspect: %s: cannot allocate %zu bytes for the content\n",
			        o.name, cap);
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
		free(buf);
		zkw_reader_close(&r);
	}
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "zkw-inspect: writing to stdout: %s\n", strerror(errno));
		status = 1;
	}
	return status;
}
