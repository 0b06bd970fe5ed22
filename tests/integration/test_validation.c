/* SPDX-License-Identifier: Apache-2.0 */
/* test_validation.c - content validation before publish (issue 14, item 3;
 * docs/design.md, "Validation before publish") end to end: a real
 * ZooKeeper (zkh), the real zkw-broker (proc), readers through
 * zkw/client.h, the broker's counters (lib/zkw_stats.h) and zkw-inspect.
 *
 * Refused content must never reach a reader: the last good content stays
 * published, valid false, connected as it is, the slot and hot-line flags
 * say "rejected" and the error says why; the next good content is
 * published as usual. The rules come from the command line (a default
 * before any -f, a watch's own after it) or the configuration file
 * ([broker], [watch ...]), and a reload re-creates a watch whose rules
 * change.
 *
 * Every wait is on an event: a broker's stderr line, the segment's futex
 * (zkw_reader_wait), a child's exit. Segment names, nodes and files carry
 * the test's pid and are removed by the teardowns.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <zookeeper/zookeeper.h>

#include <zkw/client.h>
#include <zkw/watcher.h>

#include "itest.h"
#include "proc.h"
#include "zkh.h"
#include "zkw_clock.h"
#include "publish/writer.h"

#define WAIT_MS     20000 /* any single expected change */
#define CONTENT_CAP (64u * 1024)
/* Short enough that a stopped ZooKeeper is noticed and a restarted one
 * found again within a second or two. */
#define SESSION_MS    "4000"
#define RECONNECT_MAX "500"

static zkh_cluster *zk;
static const char *hosts;
static char dir[64]; /* configuration files, state directories (itest_dir_make) */

/* Nodes live below "/zkwtv<pid>", segments are "zkwtv.<pid>.<tag>" (itest.h). */
enum { ANY = ITEST_ANY, YES = ITEST_YES, NO = ITEST_NO };
#define WAIT_FOR ITEST_WAIT_FOR

/* ---- contents, files -------------------------------------------------------- */

/* Exactly size bytes (size >= 64) of valid JSON, told apart by tag. */
static char *json_sized(char *buf, size_t size, const char *tag)
{
	int head = snprintf(buf, size, "{\"name\": \"%s\", \"list\": [1, 2.5, true, null], \"pad\": \"", tag);

	assert_true(head > 0 && (size_t)head + 2 < size);
	memset(buf + head, 'x', size - (size_t)head - 2);
	memcpy(buf + size - 2, "\"}", 3);
	assert_int_equal(strlen(buf), size);
	return buf;
}

static const char *conf_path(char *buf, size_t cap, const char *tag)
{
	snprintf(buf, cap, "%s/%s.conf", dir, tag);
	return buf;
}

/* ---- the broker ------------------------------------------------------------ */

/* Exactly `count` lines of the broker's stderr hold needle. */
static void assert_logged(proc *b, const char *needle, int count)
{
	int n = proc_count(b, PROC_STDERR, needle);

	if (n != count) {
		proc_dump(b, "log lines");
		fail_msg("\"%s\" logged %d times, want %d", needle, n, count);
	}
}

/* The value of metric{...broker_pid="pid"...} in --prometheus output; -1
 * (reported) when there is none. */
static long long prometheus_counter(const char *text, const char *metric, pid_t pid)
{
	char label[48];
	size_t mlen = strlen(metric);
	const char *line = text, *end;

	snprintf(label, sizeof(label), "broker_pid=\"%d\"", (int)pid);
	for (; (end = strchr(line, '\n')); line = end + 1) {
		const char *close = strstr(line, "} "), *at = strstr(line, label);

		if (strncmp(line, metric, mlen) == 0 && line[mlen] == '{' && close && close < end && at &&
		    at < close)
			return strtoll(close + 2, NULL, 10);
	}
	fprintf(stderr, "no %s for broker %d in:\n%s\n", metric, (int)pid, text);
	return -1;
}

/* The hot line's ZKW_STATE_* bits under mask are exactly want. */
static void assert_state_bits(const struct itest_seg *s, uint32_t mask, uint32_t want)
{
	uint32_t st = zkw_reader_state(&s->r);

	if ((st & mask) != want)
		fail_msg("hot state 0x%x: bits 0x%x are 0x%x, want 0x%x", st, mask, st & mask, want);
}

#define STATE_BITS (ZKW_STATE_VALID | ZKW_STATE_CONNECTED | ZKW_STATE_REJECTED | ZKW_STATE_CACHED)

/* ---- a dispatcher that counts deliveries ------------------------------------ */

struct counts {
	int config;
	char last_config[64];
};

static void count_config(void *ctx, const void *content, size_t len)
{
	struct counts *c = ctx;

	c->config++;
	snprintf(c->last_config, sizeof(c->last_config), "%.*s", (int)len, (const char *)content);
}

static char dispatch_buf[CONTENT_CAP];

/* ---- tests ---------------------------------------------------------------- */

/* The options and keys: before any -f (or in [broker]) every watch's
 * default, after a -f (or in [watch ...]) that watch's own, the command
 * line over the file; --check-config prints the broker's rules and every
 * watch's that differ; bad values are refused, naming the option. */
static void test_rules_configured(void **state)
{
	char file[128], *out = NULL, *err = NULL;
	const char *cli[] = {"-z",   "127.0.0.1:1",  "--validate", "json",           "--reject-empty",
	                     "-f",   "/v/a",         "-f",         "/v/b",           "--validate",
	                     "none", "--max-shrink", "30%",        "--check-config", NULL};
	const char *with_file[] = {"--config", file, "--check-config", NULL};
	const char *file_and_cli[] = {"--config", file,           "--validate", "yaml",           "-f",
	                              "/v/c",     "--max-shrink", "10",         "--check-config", NULL};
	static const struct {
		const char *args[8];
		const char *why;
	} bad[] = {
	        {{"--validate", "xml"}, "validate xml: want json, yaml or none"},
	        {{"--validate", "JSON"}, "validate JSON: want json, yaml or none"},
	        {{"--max-shrink", "101"}, "max-shrink 101: want a percentage from 0 (off) to 100"},
	        {{"--max-shrink", "-5"}, "max-shrink -5: want a percentage from 0 (off) to 100"},
	        {{"--max-shrink", "5x"}, "max-shrink 5x: want a percentage"},
	        {{"--max-shrink", ""}, "max-shrink : want a percentage"},
	        {{"--reject-empty=yes"}, "--reject-empty=yes"},
	};

	(void)state;
	/* Command line: --validate json and --reject-empty before any -f are
	 * the broker's; /v/b overrides the format and adds a shrink limit. */
	assert_int_equal(proc_run("zkw-broker", cli, NULL, WAIT_MS, &out, &err), 0);
	itest_assert_contains(out,
	                      "state-dir = none\nvalidate = json\nreject-empty = true\nmax-shrink = 0\n");
	itest_assert_contains(out,
	                      "[watch /v/a] ; -f\nshm = zkw.v.a\ncapacity = 1048576\n\n"); /* the defaults */
	itest_assert_contains(out, "[watch /v/b] ; -f\nshm = zkw.v.b\ncapacity = 1048576\n"
	                           "validate = none\nreject-empty = true\nmax-shrink = 30\n");
	free(out);
	free(err);

	/* The file: [broker] for every watch, [watch ...] its own. */
	conf_path(file, sizeof(file), "rules");
	itest_write_file(file, "[broker]\nzookeeper = 127.0.0.1:1\nvalidate = json\nmax-shrink = "
	                       "50%%\n[socket]\npath = none\n"
	                       "[watch /v/a]\n[watch /v/b]\nvalidate = none\nreject-empty = true\n"
	                       "[watch y]\npath = /v/y\nvalidate = yaml\nmax-shrink = 0\n");
	assert_int_equal(proc_run("zkw-broker", with_file, NULL, WAIT_MS, &out, &err), 0);
	itest_assert_contains(out, "validate = json\nreject-empty = false\nmax-shrink = 50\n");
	itest_assert_contains(out, "[watch /v/a]\nshm = zkw.v.a\ncapacity = 1048576\n\n");
	itest_assert_contains(out, "[watch /v/b]\nshm = zkw.v.b\ncapacity = 1048576\n"
	                           "validate = none\nreject-empty = true\nmax-shrink = 50\n");
	itest_assert_contains(out, "[watch /v/y]\nshm = zkw.v.y\ncapacity = 1048576\n"
	                           "validate = yaml\nreject-empty = false\nmax-shrink = 0\n");
	free(out);
	free(err);

	/* The command line's defaults over the file's [broker]; a watch's own
	 * rules over both; a -f gets the command line's defaults. */
	assert_int_equal(proc_run("zkw-broker", file_and_cli, NULL, WAIT_MS, &out, &err), 0);
	itest_assert_contains(out, "validate = yaml\nreject-empty = false\nmax-shrink = 50\n");
	itest_assert_contains(out, "[watch /v/a]\nshm = zkw.v.a\ncapacity = 1048576\n\n");
	itest_assert_contains(out, "[watch /v/b]\nshm = zkw.v.b\ncapacity = 1048576\n"
	                           "validate = none\nreject-empty = true\nmax-shrink = 50\n");
	itest_assert_contains(out, "[watch /v/c] ; -f\nshm = zkw.v.c\ncapacity = 1048576\n"
	                           "validate = yaml\nreject-empty = false\nmax-shrink = 10\n");
	free(out);
	free(err);

	/* Bad values: exit 2, the option and the value named; before a -f
	 * and after one alike. */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		for (int after_f = 0; after_f < 2; after_f++) {
			const char *argv[16] = {"-z", "127.0.0.1:1"};
			size_t n = 2;

			if (after_f) {
				argv[n++] = "-f";
				argv[n++] = "/v/a";
			}
			for (size_t k = 0; bad[i].args[k]; k++)
				argv[n++] = bad[i].args[k];
			if (!after_f) {
				argv[n++] = "-f";
				argv[n++] = "/v/a";
			}
			argv[n++] = "--check-config";
			argv[n] = NULL;
			assert_int_equal(proc_run("zkw-broker", argv, NULL, WAIT_MS, &out, &err), 2);
			if (!strstr(err, bad[i].why))
				fail_msg("%s %s: want \"%s\" in:\n%s", bad[i].args[0],
				         bad[i].args[1] ? bad[i].args[1] : "", bad[i].why, err);
			itest_assert_lacks(out ? out : "", "[broker]"); /* nothing printed as if accepted */
			free(out);
			free(err);
		}
	}

	{
		const char *argv[] = {"-z", "127.0.0.1:1", "-f", "/v/a", "--max-shrink", NULL};

		assert_int_equal(proc_run("zkw-broker", argv, NULL, WAIT_MS, &out, &err), 2);
		itest_assert_contains(err, "option --max-shrink needs a value");
		free(out);
		free(err);
	}

	/* And in the file: FILE:LINE and the key. */
	itest_write_file(file, "[broker]\nzookeeper = 127.0.0.1:1\n[watch /v/a]\nvalidate = toml\n");
	assert_int_equal(proc_run("zkw-broker", with_file, NULL, WAIT_MS, &out, &err), 2);
	itest_assert_contains(err, ":4: --validate toml: want json, yaml or none");
	itest_assert_contains(err, file);
	free(out);
	free(err);
	itest_write_file(file, "[broker]\nzookeeper = 127.0.0.1:1\nmax-shrink = 200\n[watch /v/a]\n");
	assert_int_equal(proc_run("zkw-broker", with_file, NULL, WAIT_MS, &out, &err), 2);
	itest_assert_contains(err, ":3: --max-shrink 200: want a percentage from 0 (off) to 100");
	free(out);
	free(err);
	itest_write_file(file, "[broker]\nzookeeper = 127.0.0.1:1\n[watch /v/a]\nreject-empty = maybe\n");
	assert_int_equal(proc_run("zkw-broker", with_file, NULL, WAIT_MS, &out, &err), 2);
	itest_assert_contains(err, ":4: reject-empty = maybe: want true or false");
	free(out);
	free(err);
	itest_write_file(file, "[broker]\nzookeeper = 127.0.0.1:1\n[watch /v/a]\nvalidation = json\n");
	assert_int_equal(proc_run("zkw-broker", with_file, NULL, WAIT_MS, &out, &err), 2);
	itest_assert_contains(err, ":4: unknown key 'validation' in [watch /v/a]");
	itest_assert_contains(err, "validate, reject-empty, max-shrink)"); /* the keys a watch takes */
	free(out);
	free(err);
	unlink(file);
}

/* JSON with reject-empty and max-shrink 50 on one watch: an empty node,
 * invalid JSON and a 90% shrink are each refused - the reader keeps the
 * last good content, sees why, and no worker gets a delivery - counted
 * and logged once each; the next good version is published as usual. */
static void test_json_rejections(void **state)
{
	char path[128], v1[1001], small[101], v2[981], want[512], *out;
	const char *shm = itest_seg_name("json");
	const char *bad = "{\"rejected-marker\": [1, 2"; /* 26 bytes, unterminated */
	struct counts counts = {0};
	zkw_handlers h = {.config = count_config, .ctx = &counts};
	zkw_dispatcher d;
	uint64_t gen, content_gen;
	int64_t version;
	struct itest_seg *s;
	proc *b;

	(void)state;
	itest_node(path, sizeof(path), "json");
	json_sized(v1, sizeof(v1) - 1, "v1");
	json_sized(small, sizeof(small) - 1, "small");
	json_sized(v2, sizeof(v2) - 1, "v2");
	itest_put(path, v1);
	b = itest_broker_start("-z", hosts, "-f", path, "--shm", shm, "--validate", "json", "--reject-empty",
	                       "--max-shrink", "50", NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "v1 valid", .valid = YES, .connected = YES, .rejected = NO, .cached = NO, .content = v1);
	assert_string_equal(s->snap.error, "");
	assert_state_bits(s, STATE_BITS, ZKW_STATE_VALID | ZKW_STATE_CONNECTED);
	zkw_dispatcher_init(&d, &s->r, &h, dispatch_buf, sizeof(dispatch_buf));
	itest_dispatch_all(&d);
	assert_int_equal(counts.config, 1);
	gen = s->snap.generation;
	content_gen = s->snap.content_gen;
	version = s->snap.version;

	/* Empty. */
	itest_put(path, "");
	WAIT_FOR(s, "empty refused", .valid = NO, .connected = YES, .rejected = YES, .cached = NO,
	         .content = v1, .error_has = "empty", .after_gen = gen);
	snprintf(want, sizeof(want),
	         "Rejected version %lld (0 bytes): empty content (reject-empty); the last good content stays "
	         "published",
	         (long long)version + 1);
	assert_string_equal(s->snap.error, want);
	assert_int_equal(s->snap.content_gen, content_gen); /* the content did not change */
	assert_int_equal(s->snap.version, version);         /* nor its version */
	assert_state_bits(s, STATE_BITS, ZKW_STATE_CONNECTED | ZKW_STATE_REJECTED);
	assert_false(zkw_reader_is_valid(&s->r));
	assert_true(zkw_reader_ping(&s->r));

	/* What zkw-inspect makes of it. */
	itest_inspect(&out, shm, NULL);
	itest_assert_contains(out, "valid            false\n");
	itest_assert_contains(out, "rejected         true");
	itest_assert_contains(out, " rejected"); /* the hot state's words */
	itest_assert_contains(out, "Rejected version ");
	free(out);
	itest_inspect(&out, shm, "--json", NULL);
	itest_assert_contains(out, "\"connected\":true,\"valid\":false,\"cached\":false,\"rejected\":true,");
	free(out);

	/* Invalid JSON. */
	gen = s->snap.generation;
	itest_put(path, bad);
	WAIT_FOR(s, "invalid JSON refused", .valid = NO, .connected = YES, .rejected = YES, .content = v1,
	         .error_has = "invalid JSON at line 1, column", .after_gen = gen);
	snprintf(want, sizeof(want), "Rejected version %lld (%zu bytes): invalid JSON at line 1, column ",
	         (long long)version + 2, strlen(bad));
	if (strncmp(s->snap.error, want, strlen(want)) != 0)
		fail_msg("error \"%s\", want it to start with \"%s\"", s->snap.error, want);
	itest_assert_lacks(s->snap.error, "rejected-marker"); /* the error never quotes the content */
	assert_int_equal(s->snap.content_gen, content_gen);
	assert_state_bits(s, STATE_BITS, ZKW_STATE_CONNECTED | ZKW_STATE_REJECTED);

	/* Valid JSON, 10% of v1's size. */
	gen = s->snap.generation;
	itest_put(path, small);
	WAIT_FOR(s, "90% shrink refused", .valid = NO, .connected = YES, .rejected = YES, .content = v1,
	         .error_has = "shrunk by", .after_gen = gen);
	snprintf(want, sizeof(want),
	         "Rejected version %lld (100 bytes): shrunk by 90%% (1000 -> 100 bytes; max-shrink 50%%); "
	         "the last "
	         "good content stays published",
	         (long long)version + 3);
	assert_string_equal(s->snap.error, want);
	assert_int_equal(s->snap.content_gen, content_gen);
	assert_state_bits(s, STATE_BITS, ZKW_STATE_CONNECTED | ZKW_STATE_REJECTED);

	/* No worker got any of it. */
	itest_dispatch_all(&d);
	assert_int_equal(counts.config, 1);

	/* The next good version: published, a change. */
	gen = s->snap.generation;
	itest_put(path, v2);
	WAIT_FOR(s, "v2 valid", .valid = YES, .connected = YES, .rejected = NO, .content = v2,
	         .after_gen = gen);
	assert_string_equal(s->snap.error, "");
	assert_true(s->snap.content_gen > content_gen);
	assert_int_equal(s->snap.content_gen, s->snap.generation);
	assert_int_equal(s->snap.version, version + 4);
	assert_state_bits(s, STATE_BITS, ZKW_STATE_VALID | ZKW_STATE_CONNECTED);
	itest_dispatch_all(&d);
	assert_int_equal(counts.config, 2);
	assert_int_equal(strncmp(counts.last_config, "{\"name\": \"v2\"", 13), 0);

	/* Counted, three; logged once each, as warnings. */
	assert_int_equal(itest_stat(proc_pid(b), ZKW_STAT_REJECTIONS), 3);
	assert_true(proc_wait_output_count(b, PROC_STDERR, ": valid, version", 2, WAIT_MS));
	snprintf(want, sizeof(want), "warning: %s: invalid: Rejected version ", path);
	assert_logged(b, want, 3);
	assert_logged(b, "Rejected version", 3);
	assert_logged(b, "(0 bytes): empty content (reject-empty)", 1);
	assert_logged(b, "bytes): invalid JSON at line 1, column", 1);
	assert_logged(b, "(100 bytes): shrunk by 90% (1000 -> 100 bytes; max-shrink 50%)", 1);
	assert_logged(b, "rejected-marker", 0);
	itest_inspect(&out, "--prometheus", NULL);
	assert_true(prometheus_counter(out, "zkw_broker_rejections_total", proc_pid(b)) == 3);
	free(out);

	itest_seg_close(s);
	itest_broker_stop(b);
}

/* YAML: any number of documents is content; a tab where indentation is
 * expected, or a quote never closed, is refused with the line. */
static void test_yaml(void **state)
{
	char path[128];
	const char *shm = itest_seg_name("yaml");
	const char *multi = "a: 1\nlist: [x, y]\n---\nb:\n  c: d\n  e: [1, 2]\n...\n--- |\n  text\n";
	const char *again = "---\nk: v\n---\n- 1\n- 2\n";
	uint64_t gen;
	struct itest_seg *s;
	proc *b;

	(void)state;
	itest_node(path, sizeof(path), "yaml");
	itest_put(path, multi);
	b = itest_broker_start("-z", hosts, "--validate", "yaml", "-f", path, "--shm", shm, NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "three documents valid", .valid = YES, .rejected = NO, .content = multi);

	gen = s->snap.generation;
	itest_put(path, "a:\n\tb: 1\n");
	WAIT_FOR(s, "tab-indented mapping refused", .valid = NO, .connected = YES, .rejected = YES,
	         .content = multi, .error_has = "(9 bytes): invalid YAML at line 2, column",
	         .after_gen = gen);
	assert_state_bits(s, STATE_BITS, ZKW_STATE_CONNECTED | ZKW_STATE_REJECTED);

	gen = s->snap.generation;
	itest_put(path, again);
	WAIT_FOR(s, "valid again", .valid = YES, .rejected = NO, .content = again, .after_gen = gen);

	gen = s->snap.generation;
	itest_put(path, "a: \"open\nb: 1\n");
	WAIT_FOR(s, "unclosed quote refused", .valid = NO, .connected = YES, .rejected = YES,
	         .content = again, .error_has = "invalid YAML at line ", .after_gen = gen);
	assert_int_equal(itest_stat(proc_pid(b), ZKW_STAT_REJECTIONS), 2);

	itest_seg_close(s);
	itest_broker_stop(b);
}

/* A configuration file: [broker] validate = json is every watch's rule,
 * [watch ...] validate = none lifts it for one. */
static void test_file_rules_per_watch(void **state)
{
	char file[128], pa[128], pb[128];
	const char *sa = itest_seg_name("file-a"), *sb = itest_seg_name("file-b");
	const char *json = "{\"ok\": true}";
	struct itest_seg *a, *b;
	uint64_t gen_a, gen_b;
	proc *br;

	(void)state;
	itest_node(pa, sizeof(pa), "file/a");
	itest_node(pb, sizeof(pb), "file/b");
	itest_put(pa, "plain text");
	itest_put(pb, "plain text");
	conf_path(file, sizeof(file), "per-watch");
	itest_write_file(file,
	                 "[broker]\nzookeeper = %s\nvalidate = json\n[socket]\npath = none\n"
	                 "[watch %s]\nshm = %s\n[watch %s]\nshm = %s\nvalidate = none\n",
	                 hosts, pa, sa, pb, sb);
	br = itest_broker_start("-c", file, NULL);
	itest_broker_wait_segment(br, sa);
	itest_broker_wait_segment(br, sb);
	a = itest_seg_open(sa, br);
	b = itest_seg_open(sb, br);

	/* Refused from the start: nothing good was ever published, so the
	 * segment has no content, only the reason. */
	WAIT_FOR(a, "/a refuses its first content", .valid = NO, .connected = YES, .rejected = YES,
	         .content = "", .error_has = "(10 bytes): invalid JSON at line 1, column 1");
	WAIT_FOR(b, "/b publishes it", .valid = YES, .rejected = NO, .content = "plain text");

	itest_put(pa, json);
	WAIT_FOR(a, "/a valid with JSON", .valid = YES, .rejected = NO, .content = json);
	gen_a = a->snap.generation;
	gen_b = b->snap.generation;
	itest_put(pa, "more text");
	itest_put(pb, "more text");
	WAIT_FOR(a, "/a refuses text", .valid = NO, .connected = YES, .rejected = YES, .content = json,
	         .error_has = "invalid JSON", .after_gen = gen_a);
	WAIT_FOR(b, "/b publishes text", .valid = YES, .rejected = NO, .content = "more text",
	         .after_gen = gen_b);
	assert_int_equal(itest_stat(proc_pid(br), ZKW_STAT_REJECTIONS), 2);

	itest_seg_close(a);
	itest_seg_close(b);
	itest_broker_stop(br);
	unlink(file);
}

/* The way to let an intended shrink through: clear max-shrink and reload.
 * The watch is re-created (its segment retired, its readers reopen) and
 * the new one checks the current content against the new rules. */
static void test_reload_lifts_max_shrink(void **state)
{
	char file[128], path[128], big[1001], small[101];
	const char *shm = itest_seg_name("reload");
	struct itest_seg *s;
	uint64_t gen;
	proc *b;

	(void)state;
	itest_node(path, sizeof(path), "reload");
	memset(big, 'B', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	memset(small, 's', sizeof(small) - 1);
	small[sizeof(small) - 1] = '\0';
	itest_put(path, big);
	conf_path(file, sizeof(file), "reload");
	itest_write_file(
	        file,
	        "[broker]\nzookeeper = %s\n[socket]\npath = none\n[watch %s]\nshm = %s\nmax-shrink = 50\n",
	        hosts, path, shm);
	b = itest_broker_start("-c", file, NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "1000 bytes valid", .valid = YES, .content = big);
	gen = s->snap.generation;
	itest_put(path, small);
	WAIT_FOR(s, "90% shrink refused", .valid = NO, .connected = YES, .rejected = YES, .content = big,
	         .error_has = "shrunk by 90% (1000 -> 100 bytes; max-shrink 50%)", .after_gen = gen);

	itest_write_file(file, "[broker]\nzookeeper = %s\n[socket]\npath = none\n[watch %s]\nshm = %s\n",
	                 hosts, path, shm);
	assert_int_equal(proc_signal(b, SIGHUP), 0);
	assert_true(proc_wait_output(b, PROC_STDERR, "reloaded", WAIT_MS));
	assert_logged(b, "1 watch added, 1 removed or re-created, 0 unchanged", 1);
	/* The old segment: retired, its waiters told. */
	assert_true(zkw_reader_retired(&s->r));
	assert_int_equal(zkw_reader_wait(&s->r, zkw_reader_generation(&s->r), WAIT_MS), -ESTALE);
	itest_seg_close(s);
	/* The new one, under the same name: the small content, valid. */
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "the small content published", .valid = YES, .connected = YES, .rejected = NO,
	         .content = small);
	assert_false(zkw_reader_retired(&s->r));
	assert_state_bits(s, STATE_BITS, ZKW_STATE_VALID | ZKW_STATE_CONNECTED);
	assert_int_equal(itest_stat(proc_pid(b), ZKW_STAT_REJECTIONS), 1);

	itest_seg_close(s);
	itest_broker_stop(b);
	unlink(file);
}

/* A reader tells a rejection from ZooKeeper trouble: while the newest
 * content is refused, ZooKeeper going away clears connected and its own
 * error takes the text, but the rejected flag stays; back, the rejection's
 * reason is the error again. */
static void test_rejection_and_zookeeper_down(void **state)
{
	char path[128];
	const char *shm = itest_seg_name("zkdown");
	const char *good = "{\"good\": 1}";
	uint64_t gen;
	struct itest_seg *s;
	proc *b;

	(void)state;
	itest_node(path, sizeof(path), "zkdown");
	itest_put(path, good);
	b = itest_broker_start("-z", hosts, "--session-timeout", SESSION_MS, "--reconnect-max", RECONNECT_MAX,
	                       "-f", path, "--shm", shm, "--validate", "json", NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "valid", .valid = YES, .content = good);
	gen = s->snap.generation;
	itest_put(path, "{bad");
	WAIT_FOR(s, "refused", .valid = NO, .connected = YES, .rejected = YES, .content = good,
	         .error_has = "invalid JSON", .after_gen = gen);

	gen = s->snap.generation;
	assert_int_equal(zkh_member_stop(zk, 0), 0);
	WAIT_FOR(s, "ZooKeeper gone: disconnected, still rejected", .valid = NO, .connected = NO,
	         .rejected = YES, .content = good, .after_gen = gen);
	if (!s->snap.error[0] || strstr(s->snap.error, "Rejected"))
		fail_msg("while disconnected the error should be ZooKeeper's, not \"%s\"", s->snap.error);
	assert_state_bits(s, STATE_BITS, ZKW_STATE_REJECTED);
	assert_false(zkw_reader_ping(&s->r));

	gen = s->snap.generation;
	assert_int_equal(zkh_member_start(zk, 0), 0);
	WAIT_FOR(s, "ZooKeeper back: connected, rejected", .valid = NO, .connected = YES, .rejected = YES,
	         .content = good, .error_has = "Rejected version ", .after_gen = gen);
	assert_state_bits(s, STATE_BITS, ZKW_STATE_CONNECTED | ZKW_STATE_REJECTED);
	/* The same bytes again: not a second rejection. */
	assert_int_equal(itest_stat(proc_pid(b), ZKW_STAT_REJECTIONS), 1);

	itest_seg_close(s);
	itest_broker_stop(b);
}

/* Does any file of dir hold the len bytes at needle? */
static bool dir_holds(const char *path, const char *needle, size_t len)
{
	DIR *d = opendir(path);
	struct dirent *e;
	bool found = false;
	int files = 0;

	if (!d)
		fail_msg("%s: %s", path, strerror(errno));
	while (!found && (e = readdir(d))) {
		char file[512], *data;
		struct stat st;
		int fd;

		snprintf(file, sizeof(file), "%s/%s", path, e->d_name);
		if (stat(file, &st) < 0 || !S_ISREG(st.st_mode))
			continue;
		files++;
		fd = open(file, O_RDONLY | O_CLOEXEC);
		assert_true(fd >= 0);
		data = malloc((size_t)st.st_size + 1);
		assert_non_null(data);
		assert_int_equal(read(fd, data, (size_t)st.st_size), st.st_size);
		close(fd);
		found = memmem(data, (size_t)st.st_size, needle, len) != NULL;
		free(data);
	}
	closedir(d);
	assert_true(files > 0); /* something was saved */
	return found;
}

/* Refused content never reaches the state directory: after a rejection,
 * a reboot (segment gone, ZooKeeper down) brings back the last good
 * content, marked cached and not rejected. */
static void test_rejected_never_saved(void **state)
{
	char path[128], statedir[96], v1[301], v2[301];
	const char *shm = itest_seg_name("saved");
	const char *bad = "{\"rejected-marker\": ";
	uint64_t gen;
	struct itest_seg *s;
	proc *b;

	(void)state;
	itest_node(path, sizeof(path), "saved");
	snprintf(statedir, sizeof(statedir), "%s/state", dir);
	json_sized(v1, sizeof(v1) - 1, "v1");
	json_sized(v2, sizeof(v2) - 1, "v2");
	itest_put(path, v1);
#define SAVED_BROKER                                                                                         \
	"-z", hosts, "--session-timeout", SESSION_MS, "--reconnect-max", RECONNECT_MAX, "--state-dir",       \
	        statedir, "-f", path, "--shm", shm, "--validate", "json"
	b = itest_broker_start(SAVED_BROKER, NULL);
	itest_broker_wait_segment(b, shm);
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "v1", .valid = YES, .content = v1);
	itest_put(path, v2);
	WAIT_FOR(s, "v2", .valid = YES, .content = v2);
	gen = s->snap.generation;
	itest_put(path, bad);
	WAIT_FOR(s, "refused", .valid = NO, .connected = YES, .rejected = YES, .content = v2,
	         .error_has = "invalid JSON", .after_gen = gen);
	gen = s->snap.generation;
	itest_seg_close(s);
	itest_broker_stop(b); /* writes what is pending */
	assert_false(dir_holds(statedir, bad, strlen(bad)));
	assert_true(dir_holds(statedir, v2, strlen(v2)));

	/* The reboot. */
	zkw_writer_remove(shm);
	assert_int_equal(zkh_member_stop(zk, 0), 0);
	b = itest_broker_start(SAVED_BROKER, NULL);
#undef SAVED_BROKER
	itest_broker_wait_segment(b, shm);
	assert_true(proc_wait_output(b, PROC_STDERR, "published the cached copy from", WAIT_MS));
	s = itest_seg_open(shm, b);
	WAIT_FOR(s, "the cached copy: the last good content", .valid = NO, .connected = NO, .cached = YES,
	         .rejected = NO, .content = v2, .error_has = "cached copy from ");
	assert_true(s->snap.generation > gen); /* never backwards across a reboot */
	assert_state_bits(s, STATE_BITS, ZKW_STATE_CACHED);

	/* ZooKeeper back: the node still holds what the rules refuse. */
	gen = s->snap.generation;
	assert_int_equal(zkh_member_start(zk, 0), 0);
	WAIT_FOR(s, "refused again, the cached content kept", .valid = NO, .connected = YES, .rejected = YES,
	         .content = v2, .error_has = "invalid JSON", .after_gen = gen);
	itest_seg_close(s);
	itest_broker_stop(b);
	assert_false(dir_holds(statedir, bad, strlen(bad)));
}

/* ---- fixtures ------------------------------------------------------------- */

static int group_setup(void **state)
{
	(void)state;
	zk = itest_zk_start(
	        &(struct itest_config){.prefix = "zkwtv", .wait_ms = WAIT_MS, .read_cap = CONTENT_CAP});
	if (!zk || !itest_dir_make(dir, sizeof(dir)))
		return -1;
	hosts = zkh_hosts(zk);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	itest_group_cleanup();
	if (dir[0])
		itest_tree_remove(dir, false);
	return 0;
}

static int test_teardown(void **state)
{
	(void)state;
	itest_test_cleanup();
	itest_tree_remove(dir, true);
	/* A test that failed with ZooKeeper stopped leaves it for the next. */
	return itest_zk_up() < 0 ? -1 : 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_teardown(test_rules_configured, test_teardown),
	        cmocka_unit_test_teardown(test_json_rejections, test_teardown),
	        cmocka_unit_test_teardown(test_yaml, test_teardown),
	        cmocka_unit_test_teardown(test_file_rules_per_watch, test_teardown),
	        cmocka_unit_test_teardown(test_reload_lifts_max_shrink, test_teardown),
	        cmocka_unit_test_teardown(test_rejection_and_zookeeper_down, test_teardown),
	        cmocka_unit_test_teardown(test_rejected_never_saved, test_teardown),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
