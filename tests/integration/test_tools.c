/* SPDX-License-Identifier: Apache-2.0 */
/* test_tools.c - zkw-push and zkw-example, the real binaries against a real
 * ZooKeeper (zkh), run through proc. Nodes live under /zkwtt<pid>; the one
 * segment (zkw-example --shm) is named after the pid and unlinked.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <zookeeper/zookeeper.h>

#include <zkw/client.h>

#include "proc.h"
#include "zkh.h"
#include "zkw_clock.h"

#define WAIT_MS  20000
#define DATA_MAX 2000000

static zkh_cluster *zk;
static const char *hosts;
static char root[64];
static char tmpdir[256];
static char shm[64];

/* ---- helpers ---------------------------------------------------------- */

/* Fail with a message, freeing a and b first (fail_msg does not return, and
 * a leak would add noise to a failing run under LeakSanitizer). */
static void fail_free(char *a, char *b, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail_free(char *a, char *b, const char *fmt, ...)
{
	char msg[8192];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	free(a);
	free(b);
	fail_msg("%s", msg);
}

static const char *node(char *buf, size_t cap, const char *rel)
{
	snprintf(buf, cap, "%s/%s", root, rel);
	return buf;
}

/* A local file holding len bytes of data; its path in buf. */
static const char *local_file(char *buf, size_t cap, const char *name, const void *data, size_t len)
{
	FILE *f;

	snprintf(buf, cap, "%s/%s", tmpdir, name);
	f = fopen(buf, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	return buf;
}

/* The node's data: its length (-1 = null data, -2 = no node), into buf. */
static int node_data(const char *path, char *buf, int cap)
{
	int len = cap - 1;
	int rc = zkh_get(hosts, path, buf, &len);

	if (rc == ZNONODE)
		return -2;
	if (rc != ZOK)
		fail_msg("zkh_get %s: %s", path, zerror(rc));
	if (len >= 0)
		buf[len] = '\0';
	return len;
}

static void assert_node(const char *path, const char *content)
{
	char *buf = malloc(DATA_MAX);
	int len;

	assert_non_null(buf);
	len = node_data(path, buf, DATA_MAX);
	if (len != (int)strlen(content) || memcmp(buf, content, (size_t)len) != 0)
		fail_free(buf, NULL, "node %s: %d bytes \"%.100s\", want \"%.100s\"", path, len,
		          len > 0 ? buf : "", content);
	free(buf);
}

struct run {
	int status;
	char *out, *err;
};

static struct run run_tool(const char *tool, const proc_options *o, const char *arg, ...)
{
	const char *argv[32];
	struct run r;
	va_list ap;

	va_start(ap, arg);
	proc_collect_args(argv, sizeof(argv) / sizeof(argv[0]), arg, ap);
	va_end(ap);
	r.status = proc_run(tool, argv, o, WAIT_MS, &r.out, &r.err);
	assert_non_null(r.out);
	assert_non_null(r.err);
	return r;
}

static void run_free(struct run *r)
{
	free(r->out);
	free(r->err);
}

#define EXPECT_RUN(r, want_status)                                                                           \
	do {                                                                                                 \
		if ((r).status != (want_status))                                                             \
			fail_free((r).out, (r).err, "exit %d, want %d; stdout: \"%s\" stderr: \"%s\"",       \
			          (r).status, (want_status), (r).out, (r).err);                              \
	} while (0)

static int count(const char *haystack, const char *needle)
{
	int n = 0;

	for (const char *at = haystack; (at = strstr(at, needle)); at += strlen(needle))
		n++;
	return n;
}

/* ---- fixtures --------------------------------------------------------- */

static int group_setup(void **state)
{
	(void)state;
	snprintf(root, sizeof(root), "/zkwtt%d", (int)getpid());
	snprintf(shm, sizeof(shm), "zkwtt.%d.example", (int)getpid());
	snprintf(tmpdir, sizeof(tmpdir), "%s/zkwtt.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmpdir))
		return -1;
	zk = zkh_start(1);
	if (!zk)
		return -1;
	hosts = zkh_hosts(zk);
	return 0;
}

static int group_teardown(void **state)
{
	char cmd[512];

	(void)state;
	proc_kill_all();
	shm_unlink(shm);
	if (zk) {
		zkh_delete(hosts, root);
		zkh_stop(zk);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	return 0;
}

static int test_teardown(void **state)
{
	(void)state;
	proc_kill_all();
	return 0;
}

/* ---- zkw-push ---------------------------------------------------------- */

static void test_push_joins_path_and_id(void **state)
{
	char file[512], parent[128], parent_slash[160], path[160];
	struct run r;

	(void)state;
	local_file(file, sizeof(file), "join.txt", "joined", 6);
	node(parent, sizeof(parent), "join");
	snprintf(parent_slash, sizeof(parent_slash), "%s/", parent);
	snprintf(path, sizeof(path), "%s/slash", parent);

	/* "PATH/" + ID: created, exactly one slash between. */
	r = run_tool("zkw-push", NULL, "-f", file, "-i", "slash", "-p", parent_slash, "-z", hosts, NULL);
	EXPECT_RUN(r, 0);
	assert_non_null(strstr(r.out, "creating conf node"));
	run_free(&r);
	assert_node(path, "joined");

	/* "PATH" + ID: the same node; the second push updates. */
	local_file(file, sizeof(file), "join.txt", "joined again", 12);
	r = run_tool("zkw-push", NULL, "-f", file, "-i", "slash", "-p", parent, "-z", hosts, NULL);
	EXPECT_RUN(r, 0);
	assert_non_null(strstr(r.out, "updating conf file"));
	assert_null(strstr(r.out, "creating conf node"));
	run_free(&r);
	assert_node(path, "joined again");

	/* Long options, and no stray node named with a doubled slash. */
	r = run_tool("zkw-push", NULL, "--file", file, "--id", "long", "--path", parent_slash, "--zookeeper",
	             hosts, NULL);
	EXPECT_RUN(r, 0);
	run_free(&r);
	snprintf(path, sizeof(path), "%s/long", parent);
	assert_node(path, "joined again");
}

static void test_push_creates_nested_parents(void **state)
{
	char file[512], parent[128], path[160];
	struct run r;

	(void)state;
	local_file(file, sizeof(file), "nested.txt", "deep", 4);
	node(parent, sizeof(parent), "a/b/c/");
	snprintf(path, sizeof(path), "%s/a/b/c/leaf", root);
	r = run_tool("zkw-push", NULL, "-f", file, "-i", "leaf", "-p", parent, "-z", hosts, NULL);
	EXPECT_RUN(r, 0);
	assert_non_null(strstr(r.out, "creating conf node"));
	run_free(&r);
	assert_node(path, "deep");

	r = run_tool("zkw-push", NULL, "-f", file, "-i", "leaf", "-p", parent, "-z", hosts, NULL);
	EXPECT_RUN(r, 0);
	assert_non_null(strstr(r.out, "updating conf file"));
	run_free(&r);
}

static void test_push_from_stdin(void **state)
{
	static const char text[] = "from standard input\nline two\n";
	proc_options o = {.stdin_data = text, .stdin_len = sizeof(text) - 1};
	char parent[128], path[160];
	struct run r;

	(void)state;
	node(parent, sizeof(parent), "stdin");
	snprintf(path, sizeof(path), "%s/conf", parent);
	r = run_tool("zkw-push", &o, "-f", "-", "-i", "conf", "-p", parent, "-z", hosts, NULL);
	EXPECT_RUN(r, 0);
	run_free(&r);
	assert_node(path, text);
}

static void test_push_wipe(void **state)
{
	char file[512], parent[128], path[160], buf[64];
	struct run r;

	(void)state;
	local_file(file, sizeof(file), "wipe.txt", "to be wiped", 11);
	node(parent, sizeof(parent), "wipe");
	snprintf(path, sizeof(path), "%s/conf", parent);
	r = run_tool("zkw-push", NULL, "-f", file, "-i", "conf", "-p", parent, "-z", hosts, NULL);
	EXPECT_RUN(r, 0);
	run_free(&r);

	r = run_tool("zkw-push", NULL, "-w", "-i", "conf", "-p", parent, "-z", hosts, NULL);
	EXPECT_RUN(r, 0);
	if (!strstr(r.out, "wip") || !strstr(r.out, path))
		fail_free(r.out, r.err, "-w does not say what it wiped: \"%s\"", r.out);
	run_free(&r);
	assert_int_equal(node_data(path, buf, sizeof(buf)), -1); /* null data */

	/* Wiping a node that does not exist: says so, exit 1, creates nothing. */
	r = run_tool("zkw-push", NULL, "-w", "-i", "never", "-p", parent, "-z", hosts, NULL);
	EXPECT_RUN(r, 1);
	assert_non_null(strstr(r.err, "does not exist"));
	run_free(&r);
	snprintf(path, sizeof(path), "%s/never", parent);
	assert_int_equal(node_data(path, buf, sizeof(buf)), -2);
}

static void test_push_refuses_oversized(void **state)
{
	char file[512], parent[128], path[160], buf[64];
	size_t big = 1024 * 1024 + 1;
	char *data;
	struct run r;

	(void)state;
	node(parent, sizeof(parent), "big");
	snprintf(path, sizeof(path), "%s/conf", parent);
	local_file(file, sizeof(file), "eleven.txt", "eleven byte", 11);

	/* --max-bytes 10: refused, nothing written (not even the node). */
	r = run_tool("zkw-push", NULL, "-f", file, "-i", "conf", "-p", parent, "-z", hosts, "--max-bytes",
	             "10", NULL);
	EXPECT_RUN(r, 1);
	if (!strstr(r.err, "larger than 10 bytes") || !strstr(r.err, "nothing pushed"))
		fail_free(r.out, r.err, "unclear error: \"%s\"", r.err);
	run_free(&r);
	assert_int_equal(node_data(path, buf, sizeof(buf)), -2);

	/* At the limit it goes through. */
	r = run_tool("zkw-push", NULL, "-f", file, "-i", "conf", "-p", parent, "-z", hosts, "--max-bytes",
	             "11", NULL);
	EXPECT_RUN(r, 0);
	run_free(&r);
	assert_node(path, "eleven byte");

	/* A real 1 MiB + 1 file against the default limit: refused, the node
	 * keeps its content. */
	data = malloc(big);
	assert_non_null(data);
	memset(data, 'z', big);
	local_file(file, sizeof(file), "huge.bin", data, big);
	free(data);
	r = run_tool("zkw-push", NULL, "-f", file, "-i", "conf", "-p", parent, "-z", hosts, NULL);
	EXPECT_RUN(r, 1);
	assert_non_null(strstr(r.err, "larger than"));
	assert_non_null(strstr(r.err, "nothing pushed"));
	run_free(&r);
	assert_node(path, "eleven byte");
}

static void test_push_bad_usage(void **state)
{
	char file[512], parent[128];
	struct {
		const char *what;
		const char *argv[12];
		int status;
	} cases[] = {
	        {"relative -p", {"-f", file, "-i", "x", "-p", "tmp", "-z", hosts, NULL}, 2},
	        {"\"..\" as id", {"-f", file, "-i", "..", "-p", parent, "-z", hosts, NULL}, 2},
	        {"\".\" as id", {"-f", file, "-i", ".", "-p", parent, "-z", hosts, NULL}, 2},
	        {"id with ..", {"-f", file, "-i", "../escape", "-p", parent, "-z", hosts, NULL}, 2},
	        {"empty id", {"-f", file, "-i", "", "-p", parent, "-z", hosts, NULL}, 2},
	        {"no -i", {"-f", file, "-p", parent, "-z", hosts, NULL}, 2},
	        {"no -z", {"-f", file, "-i", "x", "-p", parent, NULL}, 2},
	        {"no -f nor -w", {"-i", "x", "-p", parent, "-z", hosts, NULL}, 2},
	        {"-f and -w", {"-f", file, "-w", "-i", "x", "-p", parent, "-z", hosts, NULL}, 2},
	        {"--timeout abc",
	         {"-f", file, "-i", "x", "-p", parent, "-z", hosts, "--timeout", "abc", NULL},
	         2},
	        {"positional", {"-f", file, "-i", "x", "-p", parent, "-z", hosts, "extra", NULL}, 2},
	        {"missing file",
	         {"-f", "/nonexistent/zkw/file", "-i", "x", "-p", parent, "-z", hosts, NULL},
	         1},
	};
	char path[160], buf[16];

	(void)state;
	local_file(file, sizeof(file), "usage.txt", "u", 1);
	node(parent, sizeof(parent), "usage");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *out, *err;
		int status = proc_run("zkw-push", cases[i].argv, NULL, WAIT_MS, &out, &err);

		if (status != cases[i].status || strncmp(err, "zkw-push: ", 10) != 0)
			fail_free(out, err, "%s: exit %d (want %d), stderr \"%s\"", cases[i].what, status,
			          cases[i].status, err);
		free(out);
		free(err);
	}
	snprintf(path, sizeof(path), "%s/x", parent);
	assert_int_equal(node_data(path, buf, sizeof(buf)), -2);
	assert_int_equal(node_data(parent, buf, sizeof(buf)), -2);

	/* The reason is the right one. */
	{
		struct run r =
		        run_tool("zkw-push", NULL, "-f", file, "-i", "", "-p", parent, "-z", hosts, NULL);

		EXPECT_RUN(r, 2);
		if (!strstr(r.err, "empty"))
			fail_free(r.out, r.err, "empty id, wrong reason: \"%s\"", r.err);
		run_free(&r);
		r = run_tool("zkw-push", NULL, "-f", file, "-i", "..", "-p", parent, "-z", hosts, NULL);
		EXPECT_RUN(r, 2);
		if (!strstr(r.err, "not a valid ZooKeeper path"))
			fail_free(r.out, r.err, "\"..\" id, unclear: \"%s\"", r.err);
		run_free(&r);
	}
}

static void test_push_unreachable_server(void **state)
{
	char file[512];
	struct run r;
	int64_t t0, ms;

	(void)state;
	local_file(file, sizeof(file), "unreachable.txt", "x", 1);
	t0 = zkw_clock_mono_ms();
	r = run_tool("zkw-push", NULL, "-f", file, "-i", "x", "-p", "/tmp", "-z", "127.0.0.1:1", "--timeout",
	             "500", NULL);
	ms = zkw_clock_mono_ms() - t0;
	EXPECT_RUN(r, 1);
	if (strncmp(r.err, "zkw-push: ", 10) != 0 || !strstr(r.err, "127.0.0.1:1"))
		fail_free(r.out, r.err, "unclear error: \"%s\"", r.err);
	assert_true(ms < 5000);
	run_free(&r);
}

/* ---- zkw-example -------------------------------------------------------- */

/* zkw-example with the given arguments (NULL-terminated). */
#define example(...) assert_spawned(proc_spawnl("zkw-example", __VA_ARGS__))

static proc *assert_spawned(proc *p)
{
	assert_non_null(p);
	return p;
}

static void stop_example(proc *p)
{
	assert_int_equal(proc_signal(p, SIGINT), 0);
	assert_int_equal(proc_wait(p, WAIT_MS), 0);
}

static void test_example_poll(void **state)
{
	char path[128];
	proc *p;

	(void)state;
	node(path, sizeof(path), "example/poll");
	assert_int_equal(zkh_set(hosts, path, "stuff here", 10), ZOK);
	p = example("-z", hosts, "-f", path, "--poll", NULL);
	assert_true(proc_wait_output(p, PROC_STDOUT, "Valid File? True\nContents: stuff here\n", WAIT_MS));
	stop_example(p);
	proc_free(p);

	/* --exit-after stops it by itself. */
	p = example("-z", hosts, "-f", path, "--poll", "--exit-after", "3", NULL);
	assert_int_equal(proc_wait(p, WAIT_MS), 0);
	assert_true(proc_count(p, PROC_STDOUT, "Contents: stuff here\n") >= 1);
	proc_free(p);
}

/* The seed's poll example prints "Valid File? True" from its first line: with
 * valid_init the watcher is open only once the node has been read. */
static void test_example_poll_first_line_valid(void **state)
{
	char path[128];
	char *out;
	proc *p;

	(void)state;
	node(path, sizeof(path), "example/poll-first");
	assert_int_equal(zkh_set(hosts, path, "stuff here", 10), ZOK);
	p = example("-z", hosts, "-f", path, "--poll", "-s", "1", NULL);
	assert_true(proc_wait_output(p, PROC_STDOUT, "Contents: ", WAIT_MS));
	stop_example(p);
	out = proc_output(p, PROC_STDOUT, NULL);
	if (!strstr(out, "Valid File? ") ||
	    strncmp(strstr(out, "Valid File? "), "Valid File? True\nContents: stuff here\n", 38))
		fail_free(out, NULL,
		          "first poll is not valid (zkw_watcher_open with valid_init returned before the "
		          "first read):\n%s",
		          out);
	free(out);
	proc_free(p);
}

/* The event lines: config before valid, each exactly once; one more config
 * line after an update. */
static void check_event_run(proc *p, const char *path, const char *first, const char *second)
{
	char line1[256], line2[256];
	char *out;

	snprintf(line1, sizeof(line1), "Your file contents: %s\n", first);
	snprintf(line2, sizeof(line2), "Your file contents: %s\n", second);
	assert_true(proc_wait_output(p, PROC_STDOUT, "The valid state is now True\n", WAIT_MS));
	assert_true(proc_wait_output(p, PROC_STDOUT, line1, WAIT_MS));
	assert_int_equal(zkh_set(hosts, path, second, (int)strlen(second)), ZOK);
	assert_true(proc_wait_output(p, PROC_STDOUT, line2, WAIT_MS));
	stop_example(p);

	out = proc_output(p, PROC_STDOUT, NULL);
	if (count(out, "Your file contents: ") != 2 || count(out, line1) != 1 || count(out, line2) != 1 ||
	    count(out, "The valid state is now True\n") != 1 ||
	    count(out, "The valid state is now False") != 0 ||
	    strstr(out, line1) > strstr(out, "The valid state is now True") ||
	    count(out, "An error was thrown") != 0)
		fail_free(out, NULL, "unexpected event lines:\n%s", out);
	free(out);
}

static void test_example_event_in_process(void **state)
{
	char path[128];
	proc *p;

	(void)state;
	node(path, sizeof(path), "example/event");
	assert_int_equal(zkh_set(hosts, path, "Some kind of config string here", 31), ZOK);
	p = example("-z", hosts, "-f", path, "--event", NULL);
	check_event_run(p, path, "Some kind of config string here", "changed by a push");
	proc_free(p);
}

static void test_example_event_shm(void **state)
{
	char path[128], line[160];
	proc *broker, *p;

	(void)state;
	node(path, sizeof(path), "example/shm");
	assert_int_equal(zkh_set(hosts, path, "through the broker", 18), ZOK);
	broker = proc_spawn("zkw-broker", (const char *[]){"-z", hosts, "-f", path, "--shm", shm, NULL});
	assert_non_null(broker);
	snprintf(line, sizeof(line), "into segment /%s ", shm);
	assert_true(proc_wait_output(broker, PROC_STDERR, line, WAIT_MS));

	p = example("--shm", shm, "--event", NULL);
	check_event_run(p, path, "through the broker", "pushed past the broker");
	proc_free(p);

	/* Polling the segment. */
	p = example("--shm", shm, "--poll", NULL);
	assert_true(proc_wait_output(p, PROC_STDOUT, "Valid File? True\nContents: pushed past the broker\n",
	                             WAIT_MS));
	stop_example(p);
	proc_free(p);

	assert_int_equal(proc_signal(broker, SIGTERM), 0);
	assert_int_equal(proc_wait(broker, WAIT_MS), 0);
	proc_free(broker);
	shm_unlink(shm);
}

static void test_example_bad_usage(void **state)
{
	struct {
		const char *what;
		const char *argv[10];
	} cases[] = {
	        {"--poll and --event", {"-z", hosts, "-f", "/x", "--poll", "--event", NULL}},
	        {"neither", {"-z", hosts, "-f", "/x", NULL}},
	        {"no -z", {"-f", "/x", "--poll", NULL}},
	        {"no -f", {"-z", hosts, "--event", NULL}},
	        {"unknown option", {"-z", hosts, "-f", "/x", "--poll", "--bogus", NULL}},
	        {"bad -s", {"-z", hosts, "-f", "/x", "--poll", "-s", "soon", NULL}},
	};
	char missing[96];
	struct run r;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *out, *err;
		int status = proc_run("zkw-example", cases[i].argv, NULL, WAIT_MS, &out, &err);

		if (status != 2 || !err[0])
			fail_free(out, err, "%s: exit %d (want 2), stderr \"%s\"", cases[i].what, status,
			          err);
		free(out);
		free(err);
	}

	/* No such segment: a failure (1), not a usage error, and it says why. */
	snprintf(missing, sizeof(missing), "zkwtt.%d.none", (int)getpid());
	r = run_tool("zkw-example", NULL, "--shm", missing, "--event", NULL);
	EXPECT_RUN(r, 1);
	if (!strstr(r.err, missing) || !strstr(r.err, "no such segment"))
		fail_free(r.out, r.err, "unclear error: \"%s\"", r.err);
	run_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_teardown(test_push_joins_path_and_id, test_teardown),
	        cmocka_unit_test_teardown(test_push_creates_nested_parents, test_teardown),
	        cmocka_unit_test_teardown(test_push_from_stdin, test_teardown),
	        cmocka_unit_test_teardown(test_push_wipe, test_teardown),
	        cmocka_unit_test_teardown(test_push_refuses_oversized, test_teardown),
	        cmocka_unit_test_teardown(test_push_bad_usage, test_teardown),
	        cmocka_unit_test_teardown(test_push_unreachable_server, test_teardown),
	        cmocka_unit_test_teardown(test_example_poll, test_teardown),
	        cmocka_unit_test_teardown(test_example_poll_first_line_valid, test_teardown),
	        cmocka_unit_test_teardown(test_example_event_in_process, test_teardown),
	        cmocka_unit_test_teardown(test_example_event_shm, test_teardown),
	        cmocka_unit_test_teardown(test_example_bad_usage, test_teardown),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
