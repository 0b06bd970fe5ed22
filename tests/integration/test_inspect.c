/* SPDX-License-Identifier: Apache-2.0 */
/* test_inspect.c - zkw-inspect against segments made with the writer API.
 *
 * Runs the real binary ($ZKW_BUILD/zkw-inspect, ZKW_BUILD defaults to
 * "build", relative to the source root the tests run from) and checks its
 * text, JSON (parsed by /usr/bin/python3), raw content, watch mode and exit
 * statuses; against a hostile segment too (escape sequences in its strings,
 * a slot count flipped under it, an unexpected owner), and a bundle
 * snapshot's list of children. Also the escaper the tools share,
 * lib/zkw_text.h. Every child is waited for with a bound.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <zkw/client.h>

#include "proc.h"
#include "zkw_clock.h"
#include "zkw_text.h"

#include "publish/writer.h"
#include "segtest.h"

#define PYTHON         "/usr/bin/python3"
#define RUN_TIMEOUT_MS 10000

static char inspect_path[PATH_MAX];
static char names[16][64];
static int names_used;
static unsigned name_counter;

static const char *new_name(void)
{
	assert_true(names_used < 16);
	snprintf(names[names_used], sizeof(names[0]), "/zkw.test.inspect.%d.%u", (int)getpid(),
	         name_counter++);
	return names[names_used++];
}

/* /dev/shm entries of other kinds a test made (FIFOs, links, directories). */
static char entries[8][96];
static int entries_used;

static int unlink_names(void **state)
{
	char path[800];

	(void)state;
	for (int i = 0; i < names_used; i++)
		zkw_writer_remove(names[i]);
	names_used = 0;
	for (int i = 0; i < entries_used; i++) {
		snprintf(path, sizeof(path), "/dev/shm%s", entries[i]);
		if (unlink(path) < 0)
			rmdir(path);
	}
	entries_used = 0;
	return 0;
}

/* A name for a hostile entry of /dev/shm, removed by unlink_names. */
static const char *new_entry(const char *base, const char *kind)
{
	assert_true(entries_used < 8);
	snprintf(entries[entries_used], sizeof(entries[0]), "%s.%s", base, kind);
	return entries[entries_used++];
}

static int find_inspect(void **state)
{
	const char *build = getenv("ZKW_BUILD");

	(void)state;
	snprintf(inspect_path, sizeof(inspect_path), "%s/zkw-inspect", build && *build ? build : "build");
	if (access(inspect_path, X_OK) != 0) {
		fprintf(stderr,
		        "test_inspect: %s not found (build it, run from the source root, or set ZKW_BUILD)\n",
		        inspect_path);
		return -1;
	}
	return 0;
}

/* ---- running a program with a bound ----------------------------------------- */

struct output {
	char *data;
	size_t len;
};

struct run {
	struct output out, err;
	int status; /* wait status; -1 = timed out and killed */
};

static void run_free(struct run *r)
{
	free(r->out.data);
	free(r->err.data);
	memset(r, 0, sizeof(*r));
}

static void append(struct output *o, const char *data, size_t n)
{
	o->data = realloc(o->data, o->len + n + 1);
	assert_non_null(o->data);
	memcpy(o->data + o->len, data, n);
	o->len += n;
	o->data[o->len] = '\0';
}

/* Start argv with stdout and stderr on pipes (and stdin from a pipe when
 * in_fd is given); as_uid != -1 drops to that uid first (root only). */
static pid_t spawn(char *const argv[], int *out_fd, int *err_fd, int *in_fd, uid_t as_uid)
{
	int o[2], e[2], i[2] = {-1, -1};
	pid_t pid;

	assert_int_equal(pipe(o), 0);
	assert_int_equal(pipe(e), 0);
	if (in_fd)
		assert_int_equal(pipe(i), 0);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(o[1], 1);
		dup2(e[1], 2);
		if (in_fd)
			dup2(i[0], 0);
		else
			close(0);
		/* Only the dup2'ed copies may stay open: a stray write end of the
		 * stdin pipe would keep the child from ever seeing EOF. */
		close(o[0]);
		close(o[1]);
		close(e[0]);
		close(e[1]);
		if (in_fd) {
			close(i[0]);
			close(i[1]);
		}
		if (as_uid != (uid_t)-1 && (setgid(as_uid) < 0 || setuid(as_uid) < 0))
			_exit(126);
		execv(argv[0], argv);
		_exit(127);
	}
	close(o[1]);
	close(e[1]);
	*out_fd = o[0];
	*err_fd = e[0];
	if (in_fd) {
		close(i[0]);
		*in_fd = i[1];
	}
	return pid;
}

/* Run to completion (bounded), collecting stdout and stderr. */
static void run_as(struct run *r, const char *input, size_t input_len, uid_t as_uid, char *const argv[])
{
	int out, err, in = -1;
	pid_t pid = spawn(argv, &out, &err, input ? &in : NULL, as_uid);
	int64_t deadline = zkw_clock_mono_ms() + RUN_TIMEOUT_MS;
	int open_fds = 2;

	memset(r, 0, sizeof(*r));
	append(&r->out, "", 0);
	append(&r->err, "", 0);
	if (input) {
		/* Small inputs only: they fit the pipe buffer. */
		assert_true(input_len < 65536);
		assert_int_equal(write(in, input, input_len), (ssize_t)input_len);
		close(in);
	}
	while (open_fds > 0) {
		struct pollfd p[2] = {{.fd = out, .events = POLLIN}, {.fd = err, .events = POLLIN}};
		char buf[4096];
		int64_t left = zkw_clock_ms_left(deadline);

		if (left <= 0 || poll(p, 2, (int)left) == 0)
			break;
		for (int k = 0; k < 2; k++) {
			if (p[k].fd < 0 || !(p[k].revents & (POLLIN | POLLHUP)))
				continue;
			ssize_t n = read(p[k].fd, buf, sizeof(buf));

			if (n > 0) {
				append(k ? &r->err : &r->out, buf, (size_t)n);
			} else {
				close(p[k].fd);
				if (k)
					err = -1;
				else
					out = -1;
				open_fds--;
			}
		}
	}
	if (out >= 0)
		close(out);
	if (err >= 0)
		close(err);
	r->status = proc_reap_pid(pid, open_fds ? 0 : RUN_TIMEOUT_MS);
}

static void run_inspect(struct run *r, const char *a1, const char *a2, const char *a3)
{
	char *argv[] = {inspect_path, (char *)a1, (char *)a2, (char *)a3, NULL};

	run_as(r, NULL, 0, (uid_t)-1, argv);
}

static void run_inspect4(struct run *r, const char *a1, const char *a2, const char *a3, const char *a4)
{
	char *argv[] = {inspect_path, (char *)a1, (char *)a2, (char *)a3, (char *)a4, NULL};

	run_as(r, NULL, 0, (uid_t)-1, argv);
}

static void expect_exit(const struct run *r, int code, const char *what)
{
	if (r->status == -1)
		fail_msg("%s: timed out", what);
	if (!WIFEXITED(r->status) || WEXITSTATUS(r->status) != code)
		fail_msg("%s: status 0x%x, want exit %d\nstdout: %s\nstderr: %s", what, r->status, code,
		         r->out.data, r->err.data);
}

static void expect_contains(const char *haystack, const char *needle, const char *what)
{
	if (!strstr(haystack, needle))
		fail_msg("%s: output lacks \"%s\":\n%s", what, needle, haystack);
}

/* Check a JSON document with python: it must parse, and each key of the
 * JSON object `expect` must have that value ("content_hex": the base64
 * content decoded, in hex). */
static void expect_json(const char *doc, const char *expect)
{
	static const char script[] =
	        "import base64, json, sys\n"
	        "d = json.load(sys.stdin)\n"
	        "for k, v in json.loads(sys.argv[1]).items():\n"
	        "    got = base64.b64decode(d['content_base64']).hex() if k == 'content_hex' else d.get(k)\n"
	        "    if got != v: sys.exit('%s: got %r, want %r' % (k, got, v))\n";
	char *argv[] = {PYTHON, "-c", (char *)script, (char *)expect, NULL};
	struct run r;

	if (access(PYTHON, X_OK) != 0) {
		print_message("no %s: JSON not checked\n", PYTHON);
		return;
	}
	run_as(&r, doc, strlen(doc), (uid_t)-1, argv);
	if (r.status == -1 || !WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0)
		fail_msg("JSON check failed: %s\ndocument: %s", r.err.data, doc);
	run_free(&r);
}

/* ---- fixtures ------------------------------------------------------------------- */

static const char binary_content[] = "hello\0world\n\x01\xff\"quoted\"\\";
#define BINARY_LEN (sizeof(binary_content) - 1)

static zkw_writer *make_segment(const char *name, bool valid)
{
	zkw_writer_options opt = {.capacity = 8192, .group = (gid_t)-1, .watch_path = "/tmp/inspected"};
	zkw_publication p = {
	        .valid = valid,
	        .connected = true,
	        .content = binary_content,
	        .len = BINARY_LEN,
	        .content_serial = 1,
	        .version = 7,
	        .mzxid = 42,
	        .pointer = "/configs/current",
	        .error = valid ? NULL : "Invalid get on file path",
	        .confirmed_ns = (uint64_t)time(NULL) * 1000000000u,
	};
	zkw_writer *w;
	char why[256];

	if (zkw_writer_open(&w, name, &opt, why, sizeof(why)) != 0)
		fail_msg("writer: %s", why);
	assert_int_equal(zkw_writer_publish(w, &p), 0);
	assert_int_equal(zkw_writer_publish(w, &p), 0); /* generation 2 */
	return w;
}

/* Set ZKW_SLOT_BUNDLE in the published slot, as a broker's bundle watch
 * does: a raw edit of the flags word through a read-write mapping (the
 * writer of these tests publishes plain content). */
static void mark_published_slot_bundle(const char *name)
{
	int fd = shm_open(name, O_RDWR, 0);
	struct stat st;
	uint8_t *base;
	const struct zkw_segment_header *h;
	struct zkw_slot *slot;

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(base != MAP_FAILED);
	h = (const struct zkw_segment_header *)(const void *)base;
	slot = (struct zkw_slot *)(void *)(base + ZKW_HEADER_SIZE +
	                                   (h->hot.generation % h->ident.slot_count) * h->ident.slot_size);
	assert_int_equal(slot->generation, h->hot.generation);
	__atomic_fetch_or(&slot->flags, ZKW_SLOT_BUNDLE, __ATOMIC_RELAXED);
	munmap(base, (size_t)st.st_size);
	close(fd);
}

/* ---- tests ---------------------------------------------------------------------- */

static void test_text_report_shows_every_field(void **state)
{
	const char *name = new_name();
	zkw_writer *w = make_segment(name, true);
	char pid[32], abi[64];
	struct run r;

	(void)state;
	run_inspect(&r, name, NULL, NULL);
	expect_exit(&r, 0, "text report");
	snprintf(pid, sizeof(pid), "alive (pid %d)", (int)getpid());
	snprintf(abi, sizeof(abi), "abi              %u.%u", ZKW_ABI_MAJOR, ZKW_ABI_MINOR);
	const char *fields[] = {"magic            0x31474553574b5a7f",
	                        abi,
	                        "header size      2048",
	                        "slot count       2",
	                        "capacity         8192",
	                        "segment size",
	                        "slot size",
	                        "watched path     /tmp/inspected",
	                        pid,
	                        "broker epoch",
	                        "broker started",
	                        "zookeeper        connected",
	                        "valid            true",
	                        "generation       2",
	                        "confirmed        20",
	                        "content changed",
	                        "version          7",
	                        "error            (none)",
	                        "pointer          /configs/current",
	                        "content size     23 bytes",
	                        "preview          \"hello\\x00world\\n\\x01\\xff\\\"quoted\\\"\\\\\"",
	                        "slot 0  (raw)     seq",
	                        "[published]",
	                        "ping             ok"};
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		expect_contains(r.out.data, fields[i], "text report");
	assert_int_equal(r.err.len, 0);
	run_free(&r);

	/* Broker gone: dead, not connected, the error of an invalid state. */
	zkw_writer_close(w, false);
	run_inspect(&r, name, NULL, NULL);
	expect_exit(&r, 0, "text report, broker gone");
	expect_contains(r.out.data, "broker           dead", "dead broker");
	expect_contains(r.out.data, "zookeeper        disconnected", "dead broker");
	expect_contains(r.out.data, "ping             failed", "dead broker");
	run_free(&r);
	w = make_segment(name, false);
	run_inspect(&r, name, NULL, NULL);
	expect_contains(r.out.data, "error            Invalid get on file path", "invalid");
	expect_contains(r.out.data, "valid            false", "invalid");
	run_free(&r);
	zkw_writer_close(w, true);
}

static void test_json_report_parses_with_the_right_values(void **state)
{
	const char *name = new_name();
	zkw_writer *w = make_segment(name, true);
	char expect[512], hex[2 * BINARY_LEN + 1];
	struct run r;

	(void)state;
	for (size_t i = 0; i < BINARY_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", (unsigned char)binary_content[i]);
	run_inspect(&r, name, "--json", NULL);
	expect_exit(&r, 0, "--json");
	assert_int_equal(strchr(r.out.data, '\n') - r.out.data + 1, (long)r.out.len); /* one line */
	snprintf(expect, sizeof(expect),
	         "{\"generation\": 2, \"valid\": true, \"connected\": true, \"len\": %zu, \"capacity\": 8192,"
	         " \"version\": 7, \"mzxid\": 42, \"broker_pid\": %d, \"broker_alive\": true, \"ping\": true,"
	         " \"watch_path\": \"/tmp/inspected\", \"pointer\": \"/configs/current\", \"error\": \"\","
	         " \"slot_count\": 2, \"preview\": \"hello\\u0000world\\n\\u0001\\u00ff\\\"quoted\\\"\\\\\"}",
	         BINARY_LEN, (int)getpid());
	expect_json(r.out.data, expect);
	run_free(&r);

	/* --content --json: the content as base64, exactly. */
	run_inspect(&r, "-j", "--content", name);
	expect_exit(&r, 0, "--json --content");
	snprintf(expect, sizeof(expect), "{\"content_hex\": \"%s\"}", hex);
	expect_json(r.out.data, expect);
	run_free(&r);
	zkw_writer_close(w, true);
}

/* The hot line's confirmation time (ABI minor 2): a confirmation alone
 * moves it, and "confirmed" shows the newer of it and the slot's; on an
 * older broker's segment (minor 1) it is "not kept" and the slot's is
 * shown. 1700000000 s is 2023-11-14T22:13:20Z. */
static void test_confirmation_time_shown_from_the_hot_line(void **state)
{
	const char *name = new_name();
	zkw_writer *w = segtest_open_writer(name, 8192);
	zkw_publication p = {.valid = true,
	                     .connected = true,
	                     .content = "x",
	                     .len = 1,
	                     .content_serial = 1,
	                     .confirmed_ns = 1700000000ull * 1000000000u};
	struct zkw_segment_header *h;
	struct run r;
	int fd;

	(void)state;
	assert_int_equal(zkw_writer_publish(w, &p), 0);
	assert_int_equal(zkw_writer_confirm(w, 1700000100ull * 1000000000u + 500000000u), 0);
	run_inspect(&r, name, NULL, NULL);
	expect_exit(&r, 0, "text report after a confirmation");
	expect_contains(r.out.data, "confirmed        2023-11-14T22:15:00.500Z", "newest confirmation");
	expect_contains(r.out.data, "hot confirmed    2023-11-14T22:15:00.500Z", "hot line");
	run_free(&r);
	run_inspect(&r, name, "--json", NULL);
	expect_exit(&r, 0, "--json after a confirmation");
	expect_json(r.out.data, "{\"generation\": 1, \"confirmed_ns\": 1700000100500000000,"
	                        " \"hot_confirmed_ns\": 1700000100500000000}");
	run_free(&r);
	zkw_writer_close(w, false);

	/* What an older broker leaves: minor 1, a word it does not keep. */
	fd = shm_open(name, O_RDWR, 0);
	assert_true(fd >= 0);
	h = mmap(NULL, ZKW_HEADER_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(h != MAP_FAILED);
	h->ident.abi_minor = 1;
	h->hot.confirmed_ns = 1800000000ull * 1000000000u;
	munmap(h, ZKW_HEADER_SIZE);
	close(fd);
	run_inspect(&r, name, NULL, NULL);
	expect_exit(&r, 0, "text report, minor 1");
	expect_contains(r.out.data, "confirmed        2023-11-14T22:13:20.000Z", "slot's confirmation");
	expect_contains(r.out.data, "hot confirmed    not kept (a broker of ABI minor 1", "minor 1");
	run_free(&r);
	run_inspect(&r, name, "--json", NULL);
	expect_exit(&r, 0, "--json, minor 1");
	expect_json(r.out.data,
	            "{\"abi_minor\": 1, \"confirmed_ns\": 1700000000000000000, \"hot_confirmed_ns\": null}");
	run_free(&r);
}

static void test_content_is_written_raw_and_exact(void **state)
{
	const char *name = new_name();
	zkw_writer *w = make_segment(name, true);
	static unsigned char big[8192];
	struct run r;

	(void)state;
	run_inspect(&r, name, "--content", NULL);
	expect_exit(&r, 0, "--content");
	assert_int_equal(r.out.len, BINARY_LEN);
	assert_memory_equal(r.out.data, binary_content, BINARY_LEN);
	run_free(&r);

	/* Every byte value, up to the capacity. */
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (unsigned char)(i * 7 + i / 256);
	zkw_publication p = {.valid = true, .content = big, .len = sizeof(big), .content_serial = 2};
	assert_int_equal(zkw_writer_publish(w, &p), 0);
	run_inspect(&r, "--content", name, NULL);
	expect_exit(&r, 0, "--content at capacity");
	assert_int_equal(r.out.len, sizeof(big));
	assert_memory_equal(r.out.data, big, sizeof(big));
	run_free(&r);

	/* Empty content: nothing at all. */
	p.len = 0;
	p.content_serial = 3;
	assert_int_equal(zkw_writer_publish(w, &p), 0);
	run_inspect(&r, name, "--content", NULL);
	expect_exit(&r, 0, "--content, empty");
	assert_int_equal(r.out.len, 0);
	run_free(&r);
	zkw_writer_close(w, true);
}

static void test_missing_corrupt_and_forbidden_segments_fail(void **state)
{
	const char *missing = new_name(), *corrupt = new_name(), *truncated = new_name(), *good = new_name();
	struct run r;
	int fd;

	(void)state;
	run_inspect(&r, missing, NULL, NULL);
	expect_exit(&r, 1, "missing segment");
	expect_contains(r.err.data, missing, "missing segment");
	expect_contains(r.err.data, "no such segment", "missing segment");
	assert_int_equal(r.out.len, 0);
	assert_non_null(strchr(r.err.data, '\n'));
	assert_int_equal(strchr(r.err.data, '\n') - r.err.data + 1, (long)r.err.len); /* one line */
	run_free(&r);

	/* Not a zkw segment: big enough, wrong magic. */
	fd = shm_open(corrupt, O_RDWR | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 65536), 0);
	assert_int_equal(pwrite(fd,
	                        "\x7f"
	                        "ELF",
	                        4, 0),
	                 4);
	close(fd);
	run_inspect(&r, corrupt, "--json", NULL);
	expect_exit(&r, 1, "corrupt segment");
	expect_contains(r.err.data, "magic", "corrupt segment");
	assert_int_equal(r.out.len, 0);
	run_free(&r);

	fd = shm_open(truncated, O_RDWR | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 100), 0);
	close(fd);
	run_inspect(&r, truncated, NULL, NULL);
	expect_exit(&r, 1, "truncated segment");
	expect_contains(r.err.data, "truncated", "truncated segment");
	run_free(&r);

	/* Permission denied: a 0640 root segment seen by nobody. */
	if (geteuid() == 0) {
		zkw_writer *w = make_segment(good, true);
		char *argv[] = {inspect_path, (char *)good, NULL};

		run_as(&r, NULL, 0, 65534, argv);
		if (WIFEXITED(r.status) && WEXITSTATUS(r.status) == 126)
			print_message("cannot become uid 65534: permission case skipped\n");
		else {
			expect_exit(&r, 1, "permission denied");
			expect_contains(r.err.data, "permission denied", "permission denied");
		}
		run_free(&r);
		zkw_writer_close(w, true);
	}
}

static void test_bad_usage_exits_2_and_help_exits_0(void **state)
{
	struct run r;

	(void)state;
	run_inspect(&r, NULL, NULL, NULL);
	expect_exit(&r, 2, "no arguments");
	expect_contains(r.err.data, "Usage: zkw-inspect", "no arguments");
	run_free(&r);
	run_inspect(&r, "--bogus", "name", NULL);
	expect_exit(&r, 2, "unknown option");
	run_free(&r);
	run_inspect(&r, "one", "two", NULL);
	expect_exit(&r, 2, "two names");
	run_free(&r);
	run_inspect(&r, "--watch", "--content", "name");
	expect_exit(&r, 2, "--watch --content");
	run_free(&r);
	run_inspect(&r, "--help", NULL, NULL);
	expect_exit(&r, 0, "--help");
	expect_contains(r.out.data, "Usage: zkw-inspect", "--help");
	expect_contains(r.out.data, "--watch", "--help");
	run_free(&r);
}

/* Read one line from fd within timeout_ms into line (NUL-terminated). */
static bool read_line(int fd, char *line, size_t cap, int timeout_ms)
{
	size_t n = 0;

	while (n + 1 < cap) {
		struct pollfd p = {.fd = fd, .events = POLLIN};

		if (poll(&p, 1, timeout_ms) <= 0 || read(fd, line + n, 1) != 1)
			break;
		if (line[n++] == '\n') {
			line[n] = '\0';
			return true;
		}
	}
	line[n] = '\0';
	return false;
}

static void watch_case(bool json)
{
	const char *name = new_name();
	zkw_writer *w = make_segment(name, true);
	char *argv[] = {inspect_path, (char *)name, "--watch", json ? "--json" : NULL, NULL};
	char line[1024], want[64], lines[4096] = "";
	int out, err, status;
	pid_t pid = spawn(argv, &out, &err, NULL, (uid_t)-1);

	if (!read_line(out, line, sizeof(line), 5000)) {
		proc_reap_pid(pid, 0);
		fail_msg("--watch printed no first line: \"%s\"", line);
	}
	strcat(lines, line);
	snprintf(want, sizeof(want), json ? "\"generation\":2," : "generation=2 ");
	expect_contains(line, want, "--watch first line");

	/* A publication after the tool started: a line for it. */
	zkw_publication p = {.valid = false,
	                     .connected = false,
	                     .content = "new",
	                     .len = 3,
	                     .content_serial = 2,
	                     .error = "Connection interrupted with Zookeeper, re-establishing"};
	assert_int_equal(zkw_writer_publish(w, &p), 0);
	if (!read_line(out, line, sizeof(line), 5000)) {
		proc_reap_pid(pid, 0);
		fail_msg("--watch printed nothing for generation 3: \"%s\"", line);
	}
	strcat(lines, line);
	snprintf(want, sizeof(want), json ? "\"generation\":3," : "generation=3 ");
	expect_contains(line, want, "--watch change line");
	expect_contains(line, json ? "\"valid\":false" : "valid=false", "--watch change line");
	expect_contains(line, "Connection interrupted", "--watch change line");

	/* The broker going away moves no generation but is a change too. */
	zkw_writer_close(w, false);
	if (!read_line(out, line, sizeof(line), 5000)) {
		proc_reap_pid(pid, 0);
		fail_msg("--watch printed nothing when the broker went away");
	}
	strcat(lines, line);
	expect_contains(line, json ? "\"broker_alive\":false" : "broker=dead", "--watch liveness line");

	kill(pid, SIGINT);
	status = proc_reap_pid(pid, 5000);
	close(out);
	close(err);
	if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("--watch did not exit 0 on SIGINT (status 0x%x)", status);
	if (json && access(PYTHON, X_OK) == 0) {
		char *check[] = {PYTHON, "-c",
		                 "import json, sys\n"
		                 "n = sum(1 for line in sys.stdin if json.loads(line) is not None)\n"
		                 "sys.exit(0 if n == 3 else 'want 3 objects, got %d' % n)\n",
		                 NULL};
		struct run r;

		run_as(&r, lines, strlen(lines), (uid_t)-1, check);
		if (r.status == -1 || !WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0)
			fail_msg("--watch --json lines do not parse: %s\n%s", r.err.data, lines);
		run_free(&r);
	}
}

static void test_watch_prints_a_line_per_change(void **state)
{
	(void)state;
	watch_case(false);
}

static void test_watch_json_prints_an_object_per_change(void **state)
{
	(void)state;
	watch_case(true);
}

/* ---- hostile segments ----------------------------------------------------------- */

/* The first byte a terminal could act on in the n bytes of s (C0 controls
 * but newline, DEL, and any byte >= 0x80: the hostile strings below hold no
 * valid UTF-8 of their own), or -1. */
static long raw_control_at(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if ((c < 0x20 && c != '\n') || c >= 0x7f)
			return (long)i;
	}
	return -1;
}

static void expect_no_raw_control(const struct run *r, const char *what)
{
	long at = raw_control_at(r->out.data, r->out.len);

	if (at >= 0)
		fail_msg("%s: raw byte 0x%02x reaches the terminal at offset %ld:\n%s", what,
		         (unsigned char)r->out.data[at], at, r->out.data);
}

#define HOSTILE_PATH                                                                                         \
	"/tmp/\x1b[31mred\r\a\x9b"                                                                           \
	"2J"
#define HOSTILE_ERROR "Invalid get on file path\x1b]0;owned\a\r\x1b[2K"
#define HOSTILE_POINTER                                                                                      \
	"/p\x1b[H\x1b[2J\xc2\x9b"                                                                            \
	"31m\x7f"

static zkw_writer *make_hostile_segment(const char *name)
{
	zkw_writer_options opt = {.capacity = 8192, .group = (gid_t)-1, .watch_path = HOSTILE_PATH};
	zkw_publication p = {
	        .valid = false,
	        .connected = true,
	        .content = "\x1b[5mblink\r\a",
	        .len = 11,
	        .content_serial = 1,
	        .version = 3,
	        .pointer = HOSTILE_POINTER,
	        .error = HOSTILE_ERROR,
	};
	zkw_writer *w = segtest_open_writer_opt(name, &opt);

	assert_int_equal(zkw_writer_publish(w, &p), 0);
	return w;
}

/* A segment's path, error, pointer and content carry ESC, CR, BEL, DEL, a
 * C1 control and invalid UTF-8: the text report and the watch line show
 * them escaped, never raw (before, path, error and pointer went out raw). */
static void test_text_escapes_what_the_segment_says(void **state)
{
	const char *name = new_name();
	zkw_writer *w = make_hostile_segment(name);
	char *argv[] = {inspect_path, (char *)name, "--watch", NULL};
	char line[2048];
	int out, err;
	pid_t pid;
	struct run r;

	(void)state;
	run_inspect(&r, name, NULL, NULL);
	expect_exit(&r, 0, "hostile text report");
	expect_no_raw_control(&r, "hostile text report");
	expect_contains(r.out.data, "watched path     /tmp/\\x1b[31mred\\r\\x07\\x9b2J\n", "escaped path");
	expect_contains(r.out.data,
	                "error            Invalid get on file path\\x1b]0;owned\\x07\\r\\x1b[2K\n",
	                "escaped error");
	expect_contains(r.out.data, "pointer          /p\\x1b[H\\x1b[2J\\xc2\\x9b31m\\x7f\n",
	                "escaped pointer");
	expect_contains(r.out.data, "preview          \"\\x1b[5mblink\\r\\x07\"", "escaped preview");
	run_free(&r);

	/* JSON keeps its own escaping, and parses to the exact strings. */
	run_inspect(&r, name, "--json", NULL);
	expect_exit(&r, 0, "hostile --json");
	expect_no_raw_control(&r, "hostile --json");
	expect_json(r.out.data, "{\"error\": \"Invalid get on file path\\u001b]0;owned\\u0007\\r\\u001b[2K\","
	                        " \"watch_path\": \"/tmp/\\u001b[31mred\\r\\u0007\\u009b2J\"}");
	run_free(&r);

	/* The watch line. */
	pid = spawn(argv, &out, &err, NULL, (uid_t)-1);
	if (!read_line(out, line, sizeof(line), 5000)) {
		proc_reap_pid(pid, 0);
		fail_msg("--watch printed no line: \"%s\"", line);
	}
	kill(pid, SIGINT);
	proc_reap_pid(pid, 5000);
	close(out);
	close(err);
	if (raw_control_at(line, strlen(line) - 1) >= 0)
		fail_msg("--watch line carries a raw control byte: %s", line);
	expect_contains(line, "error=\"Invalid get on file path\\x1b]0;owned\\x07\\r\\x1b[2K\"",
	                "watch line");
	zkw_writer_close(w, true);
}

/* Flip the identity's slot_count between 2 and 16 as fast as possible until
 * killed (a child of proc_fork). */
static void flip_slot_count_forever(const char *name)
{
	int fd = shm_open(name, O_RDWR, 0);
	uint8_t *base;
	uint32_t *count;

	if (fd < 0)
		_exit(3);
	base = mmap(NULL, ZKW_HEADER_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED)
		_exit(4);
	count = (uint32_t *)(void *)(base + offsetof(struct zkw_segment_header, ident.slot_count));
	for (unsigned i = 0; !proc_parent_gone(); i++)
		for (int k = 0; k < 4096; k++)
			__atomic_store_n(count, (i + (unsigned)k) & 1 ? 16u : 2u, __ATOMIC_RELAXED);
	_exit(0);
}

static int count(const char *haystack, const char *needle)
{
	return proc_count_in(haystack, strlen(haystack), needle);
}

/* Another process flips the segment's slot_count while zkw-inspect prints.
 * The tool opens the segment when the field says 2 (else the open refuses
 * it: exit 1), and must then print exactly the 2 slots it validated and
 * read: before, the print loops re-read the field and printed up to 16
 * slots, 14 of them uninitialised stack bytes. */
static void test_flipped_slot_count_prints_only_validated_slots(void **state)
{
	enum { RUNS = 300, WANT_OPENED = 20 };
	const char *name = new_name();
	zkw_writer *w = make_segment(name, true);
	int opened = 0, refused = 0;
	pid_t flipper;

	(void)state;
	flipper = proc_fork();
	assert_true(flipper >= 0);
	if (flipper == 0)
		flip_slot_count_forever(name);
	for (int i = 0; i < RUNS; i++) {
		bool json = i % 2;
		struct run r;
		int slots;

		run_inspect(&r, name, json ? "--json" : NULL, NULL);
		if (r.status != -1 && WIFEXITED(r.status) && WEXITSTATUS(r.status) == 1) {
			/* The open saw 16: refused as it must be, and said so. */
			if (!strstr(r.err.data, "slot count") && !strstr(r.err.data, "segment size")) {
				proc_reap_pid(flipper, 0);
				fail_msg("run %d refused for another reason: %s", i, r.err.data);
			}
			refused++;
			run_free(&r);
			continue;
		}
		if (r.status == -1 || !WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0) {
			proc_reap_pid(flipper, 0);
			fail_msg("run %d: status 0x%x\nstdout: %s\nstderr: %s", i, r.status, r.out.data,
			         r.err.data);
		}
		opened++;
		slots = json ? count(r.out.data, "{\"index\":") : count(r.out.data, " (raw)     seq ");
		if (slots != 2) {
			proc_reap_pid(flipper, 0);
			fail_msg("run %d (%s) printed %d slots, the segment was opened with 2:\n%s", i,
			         json ? "--json" : "text", slots, r.out.data);
		}
		run_free(&r);
	}
	proc_reap_pid(flipper, 0);
	print_message("%d runs opened the segment, %d were refused (slot count seen as 16)\n", opened,
	              refused);
	/* The test proves something only if the tool printed often enough
	 * while the field was flipping. */
	assert_true(opened >= WANT_OPENED);
	zkw_writer_close(w, true);
}

/* --owner USER|UID: the owner is demanded; a segment of another owner is
 * refused by default (include/zkw/client.h's policy: root or yourself), and
 * accepted when that owner is named. */
static void test_owner_option(void **state)
{
	const char *name = new_name();
	zkw_writer *w = make_segment(name, true);
	char uid_text[32];
	struct run r;
	int fd;

	(void)state;
	snprintf(uid_text, sizeof(uid_text), "%u", (unsigned)geteuid());
	run_inspect(&r, name, "--owner", uid_text);
	expect_exit(&r, 0, "--owner <own uid>");
	expect_contains(r.out.data, "generation       2", "--owner <own uid>");
	run_free(&r);
	if (geteuid() == 0) {
		run_inspect(&r, "--owner", "root", name);
		expect_exit(&r, 0, "--owner root");
		run_free(&r);
	}
	run_inspect(&r, name, "--owner", "65534");
	expect_exit(&r, 1, "--owner 65534 on a segment that is not its");
	expect_contains(r.err.data, name, "--owner 65534");
	expect_contains(r.err.data, "owner", "--owner 65534");
	assert_int_equal(r.out.len, 0);
	run_free(&r);
	run_inspect(&r, name, "--owner", "no-such-user-zkw");
	expect_exit(&r, 2, "--owner no-such-user-zkw");
	expect_contains(r.err.data, "--owner wants a user name or uid, not \"no-such-user-zkw\"",
	                "bad --owner");
	run_free(&r);
	run_inspect(&r, name, "--owner", "-1");
	expect_exit(&r, 2, "--owner -1");
	run_free(&r);

	/* A segment someone else owns (a squatter on the name). */
	if (geteuid() == 0) {
		fd = shm_open(name, O_RDWR, 0);
		assert_true(fd >= 0);
		assert_int_equal(fchown(fd, 65534, 65534), 0);
		close(fd);
		run_inspect(&r, name, NULL, NULL);
		expect_exit(&r, 1, "a segment owned by uid 65534, by default");
		expect_contains(r.err.data, "65534", "default owner policy");
		run_free(&r);
		run_inspect4(&r, name, "--owner", "65534", "--json");
		expect_exit(&r, 0, "--owner 65534 on its segment");
		expect_json(r.out.data, "{\"generation\": 2}");
		run_free(&r);
	}
	zkw_writer_close(w, true);
}

/* ---- UTF-8 in --json (issue 13, item 8) ---------------------------------------- */

/* Every byte of doc outside printable ASCII and newline must belong to a
 * well-formed, printable UTF-8 character: no control, no DEL, no C1, no
 * stray byte. */
static void expect_json_bytes_printable(const char *doc, size_t len, const char *what)
{
	for (size_t i = 0; i < len;) {
		unsigned char c = (unsigned char)doc[i];
		size_t n = c < 0x80 ? ((c >= 0x20 && c < 0x7f) || c == '\n' ? 1 : 0)
		                    : zkw_text_shown((const unsigned char *)doc + i, len - i);

		if (!n)
			fail_msg("%s: raw byte 0x%02x at offset %zu:\n%s", what, c, i, doc);
		i += n;
	}
}

/* "café" (and a euro sign, an emoji) come out of --json as the same UTF-8,
 * not as Latin-1 mojibake ("\u00c3\u00a9"); a C1 control and a bidi
 * override are escaped with their own code point; invalid UTF-8 and
 * controls as \u00XX. */
static void test_json_passes_utf8_through(void **state)
{
	const char *name = new_name();
	zkw_writer_options opt = {.capacity = 8192, .group = (gid_t)-1, .watch_path = "/tmp/caf\xc3\xa9"};
	zkw_publication p = {
	        .valid = false,
	        .connected = true,
	        .content = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\xff\x01",
	        .len = 16,
	        .content_serial = 1,
	        .error = "Invalid get on file path: /tmp/caf\xc3\xa9 \xc2\x9b\xe2\x80\xae\x1b",
	};
	zkw_writer *w = segtest_open_writer_opt(name, &opt);
	struct run r;

	(void)state;
	assert_int_equal(zkw_writer_publish(w, &p), 0);
	run_inspect(&r, name, "--json", NULL);
	expect_exit(&r, 0, "--json with UTF-8");
	expect_contains(r.out.data, "\"watch_path\":\"/tmp/caf\xc3\xa9\"", "UTF-8 path kept");
	expect_contains(r.out.data, "\"preview\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\\u00ff\\u0001\"",
	                "UTF-8 content kept, invalid byte and control escaped");
	expect_contains(r.out.data, "caf\xc3\xa9 \\u009b\\u202e\\u001b\"", "C1, bidi and ESC escaped");
	expect_json_bytes_printable(r.out.data, r.out.len, "--json");
	expect_json(r.out.data,
	            "{\"watch_path\": \"/tmp/caf\\u00e9\","
	            " \"error\": \"Invalid get on file path: /tmp/caf\\u00e9 \\u009b\\u202e\\u001b\","
	            " \"preview\": \"caf\\u00e9 \\u20ac \\ud83d\\ude00\\u00ff\\u0001\"}");
	run_free(&r);
	zkw_writer_close(w, true);
}

/* ---- --version, --list, --check (issue 13, items 5 and 7) ----------------------- */

/* A bundle snapshot (ZKW_SLOT_BUNDLE, zkw/bundle.h): the children after
 * the preview, one line each (name escaped, length, version, mzxid, first
 * bytes), in --json an "entries" array; content that is no bundle is
 * said to be so; without the flag, no list. */
static void test_bundle_children_listed(void **state)
{
	static const char evil[] = "evil\x1b[31m";
	zkw_bundle_input in[] = {
	        {"beta", 4, "", 0, 0x100000002, 0},
	        {evil, sizeof(evil) - 1, "x\ny", 3, 0x100000003, 7},
	        {"alpha", 5, "1234", 4, 0x100000001, 3},
	};
	const char *name = new_name();
	zkw_writer *w = segtest_open_writer(name, 8192);
	unsigned char bundle[512];
	size_t len;
	zkw_publication p = {.valid = true, .connected = true, .content_serial = 1, .version = -1};
	struct run r;

	(void)state;
	zkw_bundle_sort_inputs(in, 3);
	len = zkw_bundle_encoded_size(in, 3);
	assert_int_equal(zkw_bundle_encode(bundle, sizeof(bundle), in, 3, 0x200000005, 9), 0);
	p.content = bundle;
	p.len = len;
	assert_int_equal(zkw_writer_publish(w, &p), 0);

	run_inspect(&r, name, NULL, NULL);
	expect_exit(&r, 0, "text report of a plain snapshot");
	if (strstr(r.out.data, "entries "))
		fail_msg("a snapshot without the bundle flag lists entries:\n%s", r.out.data);
	run_free(&r);
	run_inspect(&r, name, "--json", NULL);
	expect_json(r.out.data, "{\"bundle\": false, \"entries\": null}");
	run_free(&r);

	mark_published_slot_bundle(name);
	run_inspect(&r, name, NULL, NULL);
	expect_exit(&r, 0, "text report of a bundle");
	expect_contains(r.out.data, "entries          3 (parent pzxid 0x200000005, cversion 9)\n", "bundle");
	expect_contains(r.out.data,
	                "\n  alpha  4 bytes, version 3, mzxid 0x100000001, \"1234\"\n"
	                "  beta  0 bytes, version 0, mzxid 0x100000002, \"\"\n"
	                "  evil\\x1b[31m  3 bytes, version 7, mzxid 0x100000003, \"x\\ny\"\n",
	                "bundle entries");
	expect_no_raw_control(&r, "bundle entries");
	run_free(&r);
	run_inspect(&r, name, "--json", NULL);
	expect_exit(&r, 0, "--json of a bundle");
	expect_json(r.out.data,
	            "{\"bundle\": true, \"pzxid\": 8589934597, \"cversion\": 9, \"entries\": ["
	            "{\"name\": \"alpha\", \"len\": 4, \"version\": 3, \"mzxid\": 4294967297},"
	            "{\"name\": \"beta\", \"len\": 0, \"version\": 0, \"mzxid\": 4294967298},"
	            "{\"name\": \"evil\\u001b[31m\", \"len\": 3, \"version\": 7, \"mzxid\": 4294967299}]}");
	run_free(&r);

	/* The flag on content that is no bundle (a broker bug, or hostile). */
	p.content = "not a bundle";
	p.len = 12;
	p.content_serial = 2;
	assert_int_equal(zkw_writer_publish(w, &p), 0);
	mark_published_slot_bundle(name);
	run_inspect(&r, name, NULL, NULL);
	expect_exit(&r, 0, "text report of a corrupt bundle");
	expect_contains(r.out.data, "entries          none: corrupt bundle\n", "corrupt bundle");
	run_free(&r);
	run_inspect(&r, name, "--json", NULL);
	expect_json(r.out.data,
	            "{\"bundle\": true, \"entries\": null, \"bundle_error\": \"corrupt bundle\"}");
	run_free(&r);
	zkw_writer_close(w, true);
}

static void test_version_option(void **state)
{
	char want[64];
	struct run r;

	(void)state;
	snprintf(want, sizeof(want), "zkw-inspect %s\n", ZKW_VERSION);
	run_inspect(&r, "--version", NULL, NULL);
	expect_exit(&r, 0, "--version");
	assert_string_equal(r.out.data, want);
	run_free(&r);
	run_inspect(&r, "-V", NULL, NULL);
	expect_exit(&r, 0, "-V");
	assert_string_equal(r.out.data, want);
	run_free(&r);
}

/* The line of --list whose first column is name (NULL if none). */
static const char *list_line(const char *out, const char *name, char *line, size_t cap)
{
	size_t n = strlen(name);

	for (const char *p = out; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (strncmp(p, name, n) == 0 && p[n] == ' ') {
			const char *end = strchr(p, '\n');

			snprintf(line, cap, "%.*s", (int)(end ? end - p : (long)strlen(p)), p);
			return line;
		}
	return NULL;
}

static void expect_list_line(const char *out, const char *name, const char *needle)
{
	char line[1024];

	if (!list_line(out, name, line, sizeof(line)))
		fail_msg("--list has no line for %s:\n%s", name, out);
	if (!strstr(line, needle))
		fail_msg("--list line of %s lacks \"%s\": %s", name, needle, line);
}

/* Make one hostile entry of /dev/shm per kind, named after the segment
 * seg (a copy of whose first bytes they hold): a FIFO, a symbolic link, a
 * truncated segment, a segment of another owner, a directory and a
 * group-writable segment, in that order. */
static void make_hostile_entries(const char *seg, const char *out[6])
{
	static const char *const kinds[6] = {"fifo", "link", "trunc", "foreign", "dir", "groupw"};
	static char buf[4096];
	char path[800], src[128];
	int fd, in;

	snprintf(src, sizeof(src), "/dev/shm%s", seg);
	for (int i = 0; i < 6; i++)
		out[i] = new_entry(seg, kinds[i]);
	/* A FIFO: opening it for reading would block without O_NONBLOCK. */
	snprintf(path, sizeof(path), "/dev/shm%s", out[0]);
	assert_int_equal(mkfifo(path, 0644), 0);
	/* A symbolic link to a good segment: followed, it would read fine. */
	snprintf(path, sizeof(path), "/dev/shm%s", out[1]);
	assert_int_equal(symlink(src, path), 0);
	/* A segment cut short after its magic (a header's worth). */
	in = open(src, O_RDONLY);
	assert_true(in >= 0);
	assert_int_equal(read(in, buf, sizeof(buf)), (ssize_t)sizeof(buf));
	close(in);
	snprintf(path, sizeof(path), "/dev/shm%s", out[2]);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, 2100), 2100);
	close(fd);
	/* The start of a segment, of another owner (root can make one). */
	snprintf(path, sizeof(path), "/dev/shm%s", out[3]);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, sizeof(buf)), (ssize_t)sizeof(buf));
	if (geteuid() == 0)
		assert_int_equal(fchown(fd, 65534, 65534), 0);
	close(fd);
	/* A directory. */
	snprintf(path, sizeof(path), "/dev/shm%s", out[4]);
	assert_int_equal(mkdir(path, 0755), 0);
	/* The start of a segment that anyone may write. */
	snprintf(path, sizeof(path), "/dev/shm%s", out[5]);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, sizeof(buf)), (ssize_t)sizeof(buf));
	assert_int_equal(fchmod(fd, 0666), 0);
	close(fd);
}

/* --list scans /dev/shm, where anyone creates entries: a FIFO, a symbolic
 * link, a truncated segment, a segment of another owner, a directory and a
 * group-writable segment, all named like ours, are listed with the reason
 * they are not read, without blocking, following, mapping or crashing; the
 * good segment next to them is listed with its state. NAME on the FIFO
 * fails at once (shm_open() would block on it). */
static void test_list_shows_segments_and_resists_hostile_entries(void **state)
{
	const char *name = new_name();
	zkw_writer *w = make_segment(name, true);
	const char *hostile[6];
	char pid[32];

	struct run r;

	(void)state;
	make_hostile_entries(name, hostile);
	run_inspect(&r, "--list", NULL, NULL);
	expect_exit(&r, 0, "--list");
	expect_list_line(r.out.data, name, "/tmp/inspected");
	snprintf(pid, sizeof(pid), " %d yes ", (int)getpid());
	expect_list_line(r.out.data, name, pid);
	expect_list_line(r.out.data, name, " yes   yes ");
	expect_list_line(r.out.data, hostile[0], "bad: not a segment: a FIFO");
	expect_list_line(r.out.data, hostile[1], "bad: not a segment: a symbolic link (not followed)");
	expect_list_line(r.out.data, hostile[2], "bad: truncated segment");
	if (geteuid() == 0)
		expect_list_line(r.out.data, hostile[3], "untrusted: segment owner is uid 65534");
	expect_list_line(r.out.data, hostile[4], "bad: not a segment: a directory");
	expect_list_line(r.out.data, hostile[5], "untrusted: segment is writable by group or others");
	run_free(&r);

	/* The same as one JSON object. */
	run_inspect(&r, "--list", "--json", NULL);
	expect_exit(&r, 0, "--list --json");
	if (access(PYTHON, X_OK) == 0) {
		char pidnum[16], doc[] = "/tmp/zkw-test-inspect.XXXXXX";
		char *argv[] = {PYTHON,
		                "-c",
		                "import json, sys\n"
		                "d = json.load(open(sys.argv[1]))\n"
		                "s = {e['name']: e for e in d['segments']}\n"
		                "g = s[sys.argv[2]]\n"
		                "assert g['status'] == 'ok' and g['valid'] and g['connected'], g\n"
		                "assert g['generation'] == 2 and g['path'] == '/tmp/inspected', g\n"
		                "assert g['broker_alive'] and g['broker_pid'] == int(sys.argv[3]), g\n"
		                "want = ['bad', 'bad', 'bad', sys.argv[-1], 'bad', 'untrusted']\n"
		                "for k, w in zip(sys.argv[4:10], want):\n"
		                "    assert s[k]['status'] == w, (k, s[k])\n",
		                doc,
		                (char *)name,
		                pidnum,
		                (char *)hostile[0],
		                (char *)hostile[1],
		                (char *)hostile[2],
		                (char *)hostile[3],
		                (char *)hostile[4],
		                (char *)hostile[5],
		                geteuid() == 0 ? "untrusted" : "ok",
		                NULL};
		struct run j;
		int fd = mkstemp(doc);

		assert_true(fd >= 0);
		assert_int_equal(write(fd, r.out.data, r.out.len), (ssize_t)r.out.len);
		close(fd);
		snprintf(pidnum, sizeof(pidnum), "%d", (int)getpid());
		run_as(&j, NULL, 0, (uid_t)-1, argv);
		unlink(doc);
		if (j.status == -1 || !WIFEXITED(j.status) || WEXITSTATUS(j.status) != 0)
			fail_msg("--list --json: %s", j.err.data);
		run_free(&j);
	}
	run_free(&r);

	/* One entry by name: fails fast, never blocks. */
	run_inspect(&r, hostile[0], NULL, NULL);
	expect_exit(&r, 1, "NAME on a FIFO");
	expect_contains(r.err.data, "not a shared-memory segment: a FIFO", "NAME on a FIFO");
	run_free(&r);
	run_inspect(&r, hostile[1], NULL, NULL);
	expect_exit(&r, 1, "NAME on a symbolic link");
	expect_contains(r.err.data, "symbolic link", "NAME on a symbolic link");
	run_free(&r);
	zkw_writer_close(w, true);
}

/* A segment of one publication, confirmed age_s seconds ago. */
static zkw_writer *make_checked(const char *name, bool valid, bool connected, const char *error, int age_s)
{
	zkw_writer *w = segtest_open_writer(name, 8192);
	zkw_publication p = {.valid = valid,
	                     .connected = connected,
	                     .content = "x",
	                     .len = 1,
	                     .content_serial = 1,
	                     .error = error,
	                     .confirmed_ns = zkw_clock_ns(CLOCK_REALTIME) - (uint64_t)age_s * 1000000000u};

	assert_int_equal(zkw_writer_publish(w, &p), 0);
	return w;
}

static void expect_plugin(const char *name, const char *a1, const char *a2, int code, const char *line_start,
                          const char *needle)
{
	char *argv[] = {inspect_path, "--check", (char *)name, (char *)a1, (char *)a2, NULL};
	struct run r;

	run_as(&r, NULL, 0, (uid_t)-1, argv);
	expect_exit(&r, code, line_start);
	if (strncmp(r.out.data, line_start, strlen(line_start)) != 0)
		fail_msg("--check %s: want a line starting \"%s\", got: %s", name, line_start, r.out.data);
	if (count(r.out.data, "\n") != 1 || r.out.data[r.out.len - 1] != '\n')
		fail_msg("--check %s: want exactly one line, got: %s", name, r.out.data);
	expect_contains(r.out.data, needle, "--check");
	run_free(&r);
}

/* --check follows the monitoring-plugin conventions: one status line with
 * perfdata, exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. */
static void test_check_follows_plugin_conventions(void **state)
{
	const char *ok = new_name(), *invalid = new_name(), *down = new_name(), *old = new_name(),
	           *dead = new_name(), *missing = new_name(), *fifo = new_entry(ok, "fifo");
	zkw_writer *w_ok = make_checked(ok, true, true, NULL, 3);
	zkw_writer *w_invalid = make_checked(invalid, false, true, "Invalid get on file path: /a|b", 3);
	zkw_writer *w_down =
	        make_checked(down, false, false, "Connection interrupted with Zookeeper, re-establishing", 3);
	zkw_writer *w_old = make_checked(old, true, true, NULL, 1000);
	zkw_writer *w_dead = make_checked(dead, true, true, NULL, 3);
	char want[160], path[128];

	(void)state;
	zkw_writer_close(w_dead, false);
	/* Ages: 3 s or a little more on a loaded machine, never less. */
	snprintf(want, sizeof(want), "ZKW OK - %s valid, generation 1, confirmed ", ok);
	expect_plugin(ok, NULL, NULL, 0, want, "s;180;600;0 generation=1c\n");
	expect_plugin(ok, "--warn-age", "2", 1, "ZKW WARNING - ", "(more than --warn-age 2 s) | age=");
	expect_plugin(ok, "--max-age=1", NULL, 2, "ZKW CRITICAL - ", "(more than --max-age 1 s) | age=");
	/* Invalid while connected; the '|' of the error cannot start perfdata. */
	snprintf(want, sizeof(want), "ZKW CRITICAL - %s invalid: Invalid get on file path: /a\\x7cb",
	         invalid);
	expect_plugin(invalid, NULL, NULL, 2, want, " | age=3s;");
	/* Disconnected: the last good content is served - a warning. */
	snprintf(want, sizeof(want), "ZKW WARNING - %s disconnected from ZooKeeper (Connection interrupted",
	         down);
	expect_plugin(down, NULL, NULL, 1, want, "last good content kept");
	expect_plugin(old, NULL, NULL, 2, "ZKW CRITICAL - ", "(more than --max-age 600 s) | age=100");
	expect_plugin(old, "--max-age", "0", 1, "ZKW WARNING - ", "--warn-age 180 s");
	snprintf(want, sizeof(want), "ZKW CRITICAL - %s has no broker: the last one (pid %d) stopped or died",
	         dead, (int)getpid());
	expect_plugin(dead, NULL, NULL, 2, want, "generation=1c");
	snprintf(want, sizeof(want), "ZKW CRITICAL - %s: no such segment", missing);
	expect_plugin(missing, NULL, NULL, 2, want, "zkw-broker");
	snprintf(path, sizeof(path), "/dev/shm%s", fifo);
	assert_int_equal(mkfifo(path, 0600), 0);
	expect_plugin(fifo, NULL, NULL, 3, "ZKW UNKNOWN - ", "not a shared-memory segment: a FIFO");
	expect_plugin(ok, "--warn-age", "x", 3, "ZKW UNKNOWN - bad usage", "--help");
	expect_plugin(ok, "--json", NULL, 3, "ZKW UNKNOWN - bad usage", "--help");
	zkw_writer_close(w_ok, true);
	zkw_writer_close(w_invalid, true);
	zkw_writer_close(w_down, true);
	zkw_writer_close(w_old, true);
}

/* ---- lib/zkw_text.h ------------------------------------------------------------ */

static void expect_escaped(const char *in, size_t len, unsigned flags, const char *want)
{
	char *buf = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&buf, &n);

	assert_non_null(f);
	zkw_text_put(f, in, len, flags);
	assert_int_equal(fclose(f), 0);
	if (strcmp(buf, want) != 0) {
		char got[512];

		snprintf(got, sizeof(got), "%s", buf);
		free(buf);
		fail_msg("zkw_text_put(flags 0x%x): got [%s], want [%s]", flags, got, want);
	}
	free(buf);
}

#define ESCAPED(in, flags, want) expect_escaped(in, sizeof(in) - 1, flags, want)

static void test_text_escaper(void **state)
{
	(void)state;
	ESCAPED("plain /path-1.2", 0, "plain /path-1.2");
	ESCAPED("a\\b", 0, "a\\\\b");
	ESCAPED("\x1b[31m", 0, "\\x1b[31m");
	ESCAPED("\r\n\t", 0, "\\r\\n\\t");
	ESCAPED("\a\x7f\x00z", 0, "\\x07\\x7f\\x00z");
	ESCAPED("caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x82\xac", 0, "caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x82\xac");
	ESCAPED("\xc3", 0, "\\xc3");                            /* truncated sequence */
	ESCAPED("\xc3z", 0, "\\xc3z");                          /* missing continuation */
	ESCAPED("\xa9", 0, "\\xa9");                            /* stray continuation */
	ESCAPED("\xc0\xaf", 0, "\\xc0\\xaf");                   /* overlong '/' */
	ESCAPED("\xe0\x80\xaf", 0, "\\xe0\\x80\\xaf");          /* overlong, 3 bytes */
	ESCAPED("\xed\xa0\x80", 0, "\\xed\\xa0\\x80");          /* surrogate */
	ESCAPED("\xf4\x90\x80\x80", 0, "\\xf4\\x90\\x80\\x80"); /* above U+10FFFF */
	ESCAPED("\xf5\x80", 0, "\\xf5\\x80");
	ESCAPED("\xc2\x9b"
	        "2J",
	        0, "\\xc2\\x9b2J");         /* C1 CSI */
	ESCAPED("\xc2\xa0", 0, "\xc2\xa0"); /* U+00A0 is printable */
	ESCAPED("a\xe2\x80\xae"
	        "b",
	        0, "a\\xe2\\x80\\xaeb");               /* RIGHT-TO-LEFT OVERRIDE */
	ESCAPED("\xe2\x81\xa6", 0, "\\xe2\\x81\\xa6"); /* LEFT-TO-RIGHT ISOLATE */
	ESCAPED("\xe2\x80\xa8", 0, "\\xe2\\x80\\xa8"); /* LINE SEPARATOR */
	ESCAPED("caf\xc3\xa9", ZKW_TEXT_ASCII, "caf\\xc3\\xa9");
	ESCAPED("say \"hi\"", 0, "say \"hi\"");
	ESCAPED("say \"hi\"", ZKW_TEXT_QUOTE, "\"say \\\"hi\\\"\"");
	ESCAPED("a\\b\nc\td\r\x1b", ZKW_TEXT_LINES, "a\\b\nc\td\\r\\x1b");
	/* JSON: UTF-8 as it is, controls and bytes of invalid UTF-8 as \u00XX,
	 * characters a terminal acts on as \uXXXX of their code point. */
	ESCAPED("\x00\xff\"\\\n\xc3\xa9", ZKW_TEXT_JSON, "\"\\u0000\\u00ff\\\"\\\\\\n\xc3\xa9\"");
	ESCAPED("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", ZKW_TEXT_JSON,
	        "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
	ESCAPED("\x1b\x7f\xc2\x9b\xe2\x80\xae\xe2\x80\xa8", ZKW_TEXT_JSON,
	        "\"\\u001b\\u007f\\u009b\\u202e\\u2028\"");
	ESCAPED("\xc3\xc0\xaf\xed\xa0\x80", ZKW_TEXT_JSON, "\"\\u00c3\\u00c0\\u00af\\u00ed\\u00a0\\u0080\"");
	ESCAPED("", ZKW_TEXT_QUOTE, "\"\"");
	assert_int_equal(zkw_text_shown((const unsigned char *)"\xf0\x9f\x98\x80", 4), 4);
	assert_int_equal(zkw_text_shown((const unsigned char *)"\xf0\x9f\x98\x80", 3), 0);
	assert_int_equal(zkw_text_shown((const unsigned char *)"", 0), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_teardown(test_text_report_shows_every_field, unlink_names),
	        cmocka_unit_test_teardown(test_json_report_parses_with_the_right_values, unlink_names),
	        cmocka_unit_test_teardown(test_confirmation_time_shown_from_the_hot_line, unlink_names),
	        cmocka_unit_test_teardown(test_bundle_children_listed, unlink_names),
	        cmocka_unit_test_teardown(test_content_is_written_raw_and_exact, unlink_names),
	        cmocka_unit_test_teardown(test_missing_corrupt_and_forbidden_segments_fail, unlink_names),
	        cmocka_unit_test_teardown(test_bad_usage_exits_2_and_help_exits_0, unlink_names),
	        cmocka_unit_test_teardown(test_watch_prints_a_line_per_change, unlink_names),
	        cmocka_unit_test_teardown(test_watch_json_prints_an_object_per_change, unlink_names),
	        cmocka_unit_test_teardown(test_text_escapes_what_the_segment_says, unlink_names),
	        cmocka_unit_test_teardown(test_flipped_slot_count_prints_only_validated_slots, unlink_names),
	        cmocka_unit_test_teardown(test_owner_option, unlink_names),
	        cmocka_unit_test_teardown(test_json_passes_utf8_through, unlink_names),
	        cmocka_unit_test(test_version_option),
	        cmocka_unit_test_teardown(test_list_shows_segments_and_resists_hostile_entries, unlink_names),
	        cmocka_unit_test_teardown(test_check_follows_plugin_conventions, unlink_names),
	        cmocka_unit_test(test_text_escaper),
	};

	return cmocka_run_group_tests(tests, find_inspect, unlink_names);
}
