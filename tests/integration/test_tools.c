/* SPDX-License-Identifier: Apache-2.0 */
/* test_tools.c - zkw-push and zkw-example, the real binaries against a real
 * ZooKeeper (zkh), run through proc. Nodes live under /zkwtt<pid>; the
 * segments (zkw-example --shm) are named after the pid and unlinked.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <zookeeper/zookeeper.h>

#include <zkw/client.h>

#include "itest.h"
#include "proc.h"
#include "zkh.h"
#include "zkw_clock.h"

#include "publish/writer.h"
#include "segtest.h"

#define WAIT_MS  20000
#define DATA_MAX 2000000

static zkh_cluster *zk;
static const char *hosts;
static char tmpdir[256]; /* local files (itest_dir_make); nodes live below "/zkwtt<pid>" */
static char shm[64];
static char hostile_shm[64];
static char owned_shm[64];
static char replaced_shm[64];

/* ---- helpers ---------------------------------------------------------- */

/* A local file holding len bytes of data; its path in buf. */
static const char *local_file(char *buf, size_t cap, const char *name, const void *data, size_t len)
{
	return itest_local_file(buf, cap, tmpdir, name, data, len);
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
		itest_fail_free(buf, NULL, "node %s: %d bytes \"%.100s\", want \"%.100s\"", path, len,
		                len > 0 ? buf : "", content);
	free(buf);
}

static int count(const char *haystack, const char *needle)
{
	return proc_count_in(haystack, strlen(haystack), needle);
}

/* ---- fixtures --------------------------------------------------------- */

static int group_setup(void **state)
{
	(void)state;
	snprintf(shm, sizeof(shm), "zkwtt.%d.example", (int)getpid());
	snprintf(hostile_shm, sizeof(hostile_shm), "zkwtt.%d.hostile", (int)getpid());
	snprintf(owned_shm, sizeof(owned_shm), "zkwtt.%d.owned", (int)getpid());
	snprintf(replaced_shm, sizeof(replaced_shm), "zkwtt.%d.replaced", (int)getpid());
	zk = itest_zk_start(&(struct itest_config){.prefix = "zkwtt", .wait_ms = WAIT_MS});
	if (!zk || !itest_dir_make(tmpdir, sizeof(tmpdir)))
		return -1;
	hosts = zkh_hosts(zk);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	proc_kill_all();
	zkw_writer_remove(shm);
	zkw_writer_remove(hostile_shm);
	zkw_writer_remove(owned_shm);
	zkw_writer_remove(replaced_shm);
	itest_zk_stop();
	if (tmpdir[0])
		itest_tree_remove(tmpdir, false);
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
	struct itest_run r;

	(void)state;
	local_file(file, sizeof(file), "join.txt", "joined", 6);
	itest_node(parent, sizeof(parent), "join");
	snprintf(parent_slash, sizeof(parent_slash), "%s/", parent);
	snprintf(path, sizeof(path), "%s/slash", parent);

	/* "PATH/" + ID: created, exactly one slash between. */
	r = itest_run_tool("zkw-push", NULL, "-f", file, "-i", "slash", "-p", parent_slash, "-z", hosts,
	                   NULL);
	ITEST_EXPECT_RUN(r, 0);
	assert_non_null(strstr(r.out, "creating conf node"));
	itest_run_free(&r);
	assert_node(path, "joined");

	/* "PATH" + ID: the same node; the second push updates. */
	local_file(file, sizeof(file), "join.txt", "joined again", 12);
	r = itest_run_tool("zkw-push", NULL, "-f", file, "-i", "slash", "-p", parent, "-z", hosts, NULL);
	ITEST_EXPECT_RUN(r, 0);
	assert_non_null(strstr(r.out, "updating conf file"));
	assert_null(strstr(r.out, "creating conf node"));
	itest_run_free(&r);
	assert_node(path, "joined again");

	/* Long options, and no stray node named with a doubled slash. */
	r = itest_run_tool("zkw-push", NULL, "--file", file, "--id", "long", "--path", parent_slash,
	                   "--zookeeper", hosts, NULL);
	ITEST_EXPECT_RUN(r, 0);
	itest_run_free(&r);
	snprintf(path, sizeof(path), "%s/long", parent);
	assert_node(path, "joined again");
}

static void test_push_creates_nested_parents(void **state)
{
	char file[512], parent[128], path[160];
	struct itest_run r;

	(void)state;
	local_file(file, sizeof(file), "nested.txt", "deep", 4);
	itest_node(parent, sizeof(parent), "a/b/c/");
	snprintf(path, sizeof(path), "%s/a/b/c/leaf", itest_root());
	r = itest_run_tool("zkw-push", NULL, "-f", file, "-i", "leaf", "-p", parent, "-z", hosts, NULL);
	ITEST_EXPECT_RUN(r, 0);
	assert_non_null(strstr(r.out, "creating conf node"));
	itest_run_free(&r);
	assert_node(path, "deep");

	r = itest_run_tool("zkw-push", NULL, "-f", file, "-i", "leaf", "-p", parent, "-z", hosts, NULL);
	ITEST_EXPECT_RUN(r, 0);
	assert_non_null(strstr(r.out, "updating conf file"));
	itest_run_free(&r);
}

static void test_push_from_stdin(void **state)
{
	static const char text[] = "from standard input\nline two\n";
	proc_options o = {.stdin_data = text, .stdin_len = sizeof(text) - 1};
	char parent[128], path[160];
	struct itest_run r;

	(void)state;
	itest_node(parent, sizeof(parent), "stdin");
	snprintf(path, sizeof(path), "%s/conf", parent);
	r = itest_run_tool("zkw-push", &o, "-f", "-", "-i", "conf", "-p", parent, "-z", hosts, NULL);
	ITEST_EXPECT_RUN(r, 0);
	itest_run_free(&r);
	assert_node(path, text);
}

static void test_push_wipe(void **state)
{
	char file[512], parent[128], path[160], buf[64];
	struct itest_run r;

	(void)state;
	local_file(file, sizeof(file), "wipe.txt", "to be wiped", 11);
	itest_node(parent, sizeof(parent), "wipe");
	snprintf(path, sizeof(path), "%s/conf", parent);
	r = itest_run_tool("zkw-push", NULL, "-f", file, "-i", "conf", "-p", parent, "-z", hosts, NULL);
	ITEST_EXPECT_RUN(r, 0);
	itest_run_free(&r);

	r = itest_run_tool("zkw-push", NULL, "-w", "-i", "conf", "-p", parent, "-z", hosts, NULL);
	ITEST_EXPECT_RUN(r, 0);
	if (!strstr(r.out, "wip") || !strstr(r.out, path))
		itest_fail_free(r.out, r.err, "-w does not say what it wiped: \"%s\"", r.out);
	itest_run_free(&r);
	assert_int_equal(node_data(path, buf, sizeof(buf)), -1); /* null data */

	/* Wiping a node that does not exist: says so, exit 1, creates nothing. */
	r = itest_run_tool("zkw-push", NULL, "-w", "-i", "never", "-p", parent, "-z", hosts, NULL);
	ITEST_EXPECT_RUN(r, 1);
	assert_non_null(strstr(r.err, "does not exist"));
	itest_run_free(&r);
	snprintf(path, sizeof(path), "%s/never", parent);
	assert_int_equal(node_data(path, buf, sizeof(buf)), -2);
}

/* Content above --max-bytes is chunked (issue 15; test_push.c checks the
 * chunks and the manifest line by line); only content above the largest
 * chunked content, 256 MiB, is refused, and nothing is written. */
static void test_push_refuses_oversized(void **state)
{
	const off_t too_big = 256 * 1024 * 1024 + 1;
	char file[512], parent[128], path[160], buf[1024];
	struct itest_run r;
	int fd;

	(void)state;
	itest_node(parent, sizeof(parent), "big");
	snprintf(path, sizeof(path), "%s/conf", parent);
	local_file(file, sizeof(file), "eleven.txt", "eleven byte", 11);

	/* --max-bytes 10: chunked, not refused. */
	r = itest_run_tool("zkw-push", NULL, "-f", file, "-i", "conf", "-p", parent, "-z", hosts,
	                   "--max-bytes", "10", NULL);
	ITEST_EXPECT_RUN(r, 0);
	if (!strstr(r.out, "(chunked): 11 bytes in 1 chunks"))
		itest_fail_free(r.out, r.err, "not chunked: \"%s\"", r.out);
	itest_run_free(&r);
	assert_true(node_data(path, buf, sizeof(buf)) > 0);
	assert_int_equal(strncmp(buf, "zkw-chunked 1\n", 14), 0);

	/* At the limit: the node's own data again. */
	r = itest_run_tool("zkw-push", NULL, "-f", file, "-i", "conf", "-p", parent, "-z", hosts,
	                   "--max-bytes", "11", NULL);
	ITEST_EXPECT_RUN(r, 0);
	itest_run_free(&r);
	assert_node(path, "eleven byte");

	/* 256 MiB + 1 (a sparse file): refused, the node keeps its content. */
	snprintf(file, sizeof(file), "%s/huge.bin", tmpdir);
	fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, too_big), 0);
	assert_int_equal(close(fd), 0);
	r = itest_run_tool("zkw-push", NULL, "-f", file, "-i", "conf", "-p", parent, "-z", hosts, NULL);
	assert_int_equal(unlink(file), 0);
	ITEST_EXPECT_RUN(r, 1);
	if (!strstr(r.err, "larger than 268435456 bytes") || !strstr(r.err, "nothing pushed"))
		itest_fail_free(r.out, r.err, "unclear error: \"%s\"", r.err);
	itest_run_free(&r);
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
	itest_node(parent, sizeof(parent), "usage");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *out, *err;
		int status = proc_run("zkw-push", cases[i].argv, NULL, WAIT_MS, &out, &err);

		if (status != cases[i].status || strncmp(err, "zkw-push: ", 10) != 0)
			itest_fail_free(out, err, "%s: exit %d (want %d), stderr \"%s\"", cases[i].what,
			                status, cases[i].status, err);
		free(out);
		free(err);
	}
	snprintf(path, sizeof(path), "%s/x", parent);
	assert_int_equal(node_data(path, buf, sizeof(buf)), -2);
	assert_int_equal(node_data(parent, buf, sizeof(buf)), -2);

	/* The reason is the right one. */
	{
		struct itest_run r = itest_run_tool("zkw-push", NULL, "-f", file, "-i", "", "-p", parent,
		                                    "-z", hosts, NULL);

		ITEST_EXPECT_RUN(r, 2);
		if (!strstr(r.err, "empty"))
			itest_fail_free(r.out, r.err, "empty id, wrong reason: \"%s\"", r.err);
		itest_run_free(&r);
		r = itest_run_tool("zkw-push", NULL, "-f", file, "-i", "..", "-p", parent, "-z", hosts, NULL);
		ITEST_EXPECT_RUN(r, 2);
		if (!strstr(r.err, "not a valid ZooKeeper path"))
			itest_fail_free(r.out, r.err, "\"..\" id, unclear: \"%s\"", r.err);
		itest_run_free(&r);
	}
}

static void test_push_unreachable_server(void **state)
{
	char file[512];
	struct itest_run r;
	int64_t t0, ms;

	(void)state;
	local_file(file, sizeof(file), "unreachable.txt", "x", 1);
	t0 = zkw_clock_mono_ms();
	r = itest_run_tool("zkw-push", NULL, "-f", file, "-i", "x", "-p", "/tmp", "-z", "127.0.0.1:1",
	                   "--timeout", "500", NULL);
	ms = zkw_clock_mono_ms() - t0;
	ITEST_EXPECT_RUN(r, 1);
	if (strncmp(r.err, "zkw-push: ", 10) != 0 || !strstr(r.err, "127.0.0.1:1"))
		itest_fail_free(r.out, r.err, "unclear error: \"%s\"", r.err);
	assert_true(ms < 5000);
	itest_run_free(&r);
}

/* The read buffer cannot grow (the allocator really refuses: an address
 * space limit, or the sanitizer's allocation cap in a sanitizer build):
 * a clear error, exit 1, nothing pushed. Before, the loop stopped at the
 * failed realloc and went on to push the part read so far. */
static void test_push_out_of_memory_pushes_nothing(void **state)
{
	const size_t size = 24u << 20; /* the buffer doubles 64 KiB .. 16 MiB: 16 MiB fails */
	char file[512], parent[128], path[160], buf[16], push_path[512];
	char *data = malloc(size);
	const char *line;
	struct itest_run r;

	(void)state;
	assert_non_null(data);
	memset(data, 'm', size);
	local_file(file, sizeof(file), "nomem.bin", data, size);
	free(data);
	itest_node(parent, sizeof(parent), "nomem");
	snprintf(path, sizeof(path), "%s/conf", parent);
	proc_tool_path("zkw-push", push_path, sizeof(push_path));
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	{
		/* A sanitizer needs an unlimited address space: its allocator
		 * refuses allocations above 8 MiB instead. */
#if defined(__SANITIZE_ADDRESS__)
		const char *var = "ASAN_OPTIONS";
#else
		const char *var = "TSAN_OPTIONS";
#endif
		char opts[1024];
		const char *env[] = {opts, NULL};
		proc_options o = {.env = env};

		snprintf(opts, sizeof(opts), "%s=%s%sallocator_may_return_null=1:max_allocation_size_mb=8",
		         var, getenv(var) ? getenv(var) : "", getenv(var) && *getenv(var) ? ":" : "");
		r = itest_run_tool("zkw-push", &o, "-f", file, "-i", "conf", "-p", parent, "-z", hosts,
		                   "--max-bytes", "33554432", NULL);
	}
#else
	{
		/* 16 MiB of address space: the process needs about 3 MiB before
		 * its buffer, which can then grow to 8 MiB but not to 16. */
		proc_options o = {.literal_path = true};

		if (access("/usr/bin/prlimit", X_OK) != 0)
			fail_msg("/usr/bin/prlimit (util-linux) is needed to limit zkw-push's memory");
		r = itest_run_tool("/usr/bin/prlimit", &o, "--as=16777216", "--", push_path, "-f", file, "-i",
		                   "conf", "-p", parent, "-z", hosts, "--max-bytes", "33554432", NULL);
	}
#endif
	ITEST_EXPECT_RUN(r, 1);
	/* One line of ours (a sanitizer may add its own warning before it). */
	line = strstr(r.err, "zkw-push: ");
	if (!line || (line != r.err && line[-1] != '\n') || count(r.err, "zkw-push: ") != 1 ||
	    !strstr(line, "out of memory") || !strstr(line, "nothing pushed") ||
	    strchr(line, '\n') != line + strlen(line) - 1)
		itest_fail_free(r.out, r.err, "want one line naming the memory shortage: \"%s\"", r.err);
	itest_run_free(&r);
	assert_int_equal(node_data(path, buf, sizeof(buf)), -2);
	assert_int_equal(node_data(parent, buf, sizeof(buf)), -2);
}

/* --max-bytes is capped at INT_MAX, the largest length the ZooKeeper client
 * takes: a larger value is refused by name instead of wrapping. */
static void test_push_max_bytes_is_capped(void **state)
{
	char file[512], parent[128], path[160];
	struct itest_run r;

	(void)state;
	local_file(file, sizeof(file), "capped.txt", "capped", 6);
	itest_node(parent, sizeof(parent), "capped");
	snprintf(path, sizeof(path), "%s/conf", parent);
	const char *too_big[] = {"2147483648", "4294967302", "9223372036854775807", "-1"};
	for (size_t i = 0; i < sizeof(too_big) / sizeof(too_big[0]); i++) {
		r = itest_run_tool("zkw-push", NULL, "-f", file, "-i", "conf", "-p", parent, "-z", hosts,
		                   "--max-bytes", too_big[i], NULL);
		ITEST_EXPECT_RUN(r, 2);
		if (!strstr(r.err, "--max-bytes wants a byte count from 0 to 2147483647") ||
		    !strstr(r.err, too_big[i]))
			itest_fail_free(r.out, r.err, "--max-bytes %s: unclear error \"%s\"", too_big[i],
			                r.err);
		itest_run_free(&r);
	}
	r = itest_run_tool("zkw-push", NULL, "-f", file, "-i", "conf", "-p", parent, "-z", hosts,
	                   "--max-bytes", "2147483647", NULL);
	ITEST_EXPECT_RUN(r, 0);
	itest_run_free(&r);
	assert_node(path, "capped");
}

/* One command-line language (README.md): --version; the letters that mean
 * something else in the other tools (-p pointer, -w watch) are gone from
 * the help, their long forms take over, and the seed pusher's spellings
 * still work (the tests above use -p, --path, -w and --timeout). */
static void test_push_one_language(void **state)
{
	char file[512], parent[128], path[160], want[64], buf[16];
	struct itest_run r;

	(void)state;
	snprintf(want, sizeof(want), "zkw-push %s\n", ZKW_VERSION);
	r = itest_run_tool("zkw-push", NULL, "--version", NULL);
	ITEST_EXPECT_RUN(r, 0);
	assert_string_equal(r.out, want);
	itest_run_free(&r);
	r = itest_run_tool("zkw-push", NULL, "-V", NULL);
	ITEST_EXPECT_RUN(r, 0);
	assert_string_equal(r.out, want);
	itest_run_free(&r);

	r = itest_run_tool("zkw-push", NULL, "--help", NULL);
	ITEST_EXPECT_RUN(r, 0);
	if (strstr(r.out, "-p,") || strstr(r.out, "-w,") || strstr(r.out, "--zoo-keeper") ||
	    !strstr(r.out, "--parent PATH") || !strstr(r.out, "--wipe") ||
	    !strstr(r.out, "-z, --zookeeper") || !strstr(r.out, "-V, --version") ||
	    !strstr(r.out, "--init-timeout MS"))
		itest_fail_free(r.out, r.err, "help not in the common language:\n%s", r.out);
	itest_run_free(&r);

	local_file(file, sizeof(file), "language.txt", "spoken", 6);
	itest_node(parent, sizeof(parent), "language");
	snprintf(path, sizeof(path), "%s/conf", parent);
	r = itest_run_tool("zkw-push", NULL, "--zookeeper", hosts, "--file", file, "--parent", parent, "--id",
	                   "conf", "--init-timeout", "10000", NULL);
	ITEST_EXPECT_RUN(r, 0);
	itest_run_free(&r);
	assert_node(path, "spoken");
	r = itest_run_tool("zkw-push", NULL, "--zoo-keeper", hosts, "--wipe", "--parent", parent, "-i",
	                   "conf", NULL);
	ITEST_EXPECT_RUN(r, 0);
	itest_run_free(&r);
	assert_int_equal(node_data(path, buf, sizeof(buf)), -1);
}

/* An error names its cause once, in one line: a connect string that cannot
 * be one is bad usage (before it was "invalid ZooKeeper host string ...:
 * Invalid argument"), a name that does not resolve says so with the
 * resolver's reason (before: "No such file or directory"). */
static void test_push_error_names_cause_once(void **state)
{
	char file[512];
	struct itest_run r;

	(void)state;
	local_file(file, sizeof(file), "cause.txt", "x", 1);
	r = itest_run_tool("zkw-push", NULL, "-z", "garbage", "-f", file, "-p", "/tmp", "-i", "x", NULL);
	ITEST_EXPECT_RUN(r, 2);
	if (count(r.err, "\n") != 1 || count(r.err, "garbage") != 2 || !strstr(r.err, "has no port") ||
	    strstr(r.err, "Invalid argument") || strstr(r.err, "invalid"))
		itest_fail_free(r.out, r.err, "-z garbage: want one line naming the missing port: \"%s\"",
		                r.err);
	itest_run_free(&r);

	r = itest_run_tool("zkw-push", NULL, "-z", "127.0.0.1:0", "-f", file, "-p", "/tmp", "-i", "x", NULL);
	ITEST_EXPECT_RUN(r, 2);
	if (count(r.err, "\n") != 1 || !strstr(r.err, "port must be"))
		itest_fail_free(r.out, r.err, "-z 127.0.0.1:0: \"%s\"", r.err);
	itest_run_free(&r);

	r = itest_run_tool("zkw-push", NULL, "-z", "zkw-no-such-host.invalid:2181", "-f", file, "-p", "/tmp",
	                   "-i", "x", "--init-timeout", "2000", NULL);
	ITEST_EXPECT_RUN(r, 1);
	if (count(r.err, "\n") != 1 || !strstr(r.err, "'zkw-no-such-host.invalid'") ||
	    !strstr(r.err, "resolve") || strstr(r.err, "No such file or directory"))
		itest_fail_free(r.out, r.err, "unresolvable host: want one line naming it: \"%s\"", r.err);
	itest_run_free(&r);
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
	itest_node(path, sizeof(path), "example/poll");
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
	itest_node(path, sizeof(path), "example/poll-first");
	assert_int_equal(zkh_set(hosts, path, "stuff here", 10), ZOK);
	p = example("-z", hosts, "-f", path, "--poll", "-s", "1", NULL);
	assert_true(proc_wait_output(p, PROC_STDOUT, "Contents: ", WAIT_MS));
	stop_example(p);
	out = proc_output(p, PROC_STDOUT, NULL);
	if (!strstr(out, "Valid File? ") ||
	    strncmp(strstr(out, "Valid File? "), "Valid File? True\nContents: stuff here\n", 38))
		itest_fail_free(
		        out, NULL,
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
		itest_fail_free(out, NULL, "unexpected event lines:\n%s", out);
	free(out);
}

static void test_example_event_in_process(void **state)
{
	char path[128];
	proc *p;

	(void)state;
	itest_node(path, sizeof(path), "example/event");
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
	itest_node(path, sizeof(path), "example/shm");
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
	zkw_writer_remove(shm);
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
	struct itest_run r;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *out, *err;
		int status = proc_run("zkw-example", cases[i].argv, NULL, WAIT_MS, &out, &err);

		if (status != 2 || !err[0])
			itest_fail_free(out, err, "%s: exit %d (want 2), stderr \"%s\"", cases[i].what,
			                status, err);
		free(out);
		free(err);
	}

	/* No such segment: a failure (1), not a usage error, and it says why. */
	snprintf(missing, sizeof(missing), "zkwtt.%d.none", (int)getpid());
	r = itest_run_tool("zkw-example", NULL, "--shm", missing, "--event", NULL);
	ITEST_EXPECT_RUN(r, 1);
	if (!strstr(r.err, missing) || !strstr(r.err, "no such segment"))
		itest_fail_free(r.out, r.err, "unclear error: \"%s\"", r.err);
	itest_run_free(&r);
}

/* Content and error texts as a hostile segment (or ZooKeeper node) may hold
 * them: escape sequences, CR, BEL, DEL, a C1 control, invalid UTF-8. */
#define HOSTILE_CONTENT                                                                                      \
	"red \x1b[31mALERT\x1b[0m\r\a\nline two\t\xff\x7f\xc2\x9b"                                           \
	"2J"
#define SHOWN_CONTENT "red \\x1b[31mALERT\\x1b[0m\\r\\x07\nline two\t\\xff\\x7f\\xc2\\x9b2J"
#define HOSTILE_ERROR "Invalid get on file path: /x\x1b]0;owned\a\r\x1b[2K"
#define SHOWN_ERROR   "Invalid get on file path: /x\\x1b]0;owned\\x07\\r\\x1b[2K"

/* The first byte a terminal could act on (a control but newline and tab,
 * DEL, anything >= 0x80: the texts above hold no valid UTF-8), or -1. */
static long raw_control_at(const char *s)
{
	for (size_t i = 0; s[i]; i++) {
		unsigned char c = (unsigned char)s[i];

		if ((c < 0x20 && c != '\n' && c != '\t') || c >= 0x7f)
			return (long)i;
	}
	return -1;
}

static zkw_writer *hostile_segment(const char *name)
{
	zkw_writer_options opt = {.capacity = 4096, .group = (gid_t)-1, .watch_path = "/hostile"};
	zkw_publication p = {.valid = true,
	                     .connected = true,
	                     .content = HOSTILE_CONTENT,
	                     .len = sizeof(HOSTILE_CONTENT) - 1,
	                     .content_serial = 1,
	                     .version = 1};
	zkw_writer *w = segtest_open_writer_opt(name, &opt);

	assert_int_equal(zkw_writer_publish(w, &p), 0);
	return w;
}

/* zkw-example prints the content and the error escaped, lines kept as the
 * seed prints them. Before, every byte went to the terminal raw. */
static void test_example_escapes_what_it_prints(void **state)
{
	zkw_writer *w = hostile_segment(hostile_shm);
	zkw_publication bad = {.valid = false,
	                       .connected = true,
	                       .content = HOSTILE_CONTENT,
	                       .len = sizeof(HOSTILE_CONTENT) - 1,
	                       .content_serial = 1,
	                       .version = 1,
	                       .error = HOSTILE_ERROR};
	char *out;
	long at;
	proc *p;

	(void)state;
	p = example("--shm", hostile_shm, "--event", NULL);
	assert_true(proc_wait_output(p, PROC_STDOUT, "The valid state is now True\n", WAIT_MS));
	assert_int_equal(zkw_writer_publish(w, &bad), 0);
	assert_true(proc_wait_output(p, PROC_STDOUT, "An error was thrown: " SHOWN_ERROR "\n", WAIT_MS));
	stop_example(p);
	out = proc_output(p, PROC_STDOUT, NULL);
	if ((at = raw_control_at(out)) >= 0 || !strstr(out, "Your file contents: " SHOWN_CONTENT "\n"))
		itest_fail_free(out, NULL, "--event: raw byte at %ld, or content not shown escaped:\n%s", at,
		                out);
	free(out);
	proc_free(p);

	p = example("--shm", hostile_shm, "--poll", NULL);
	assert_true(proc_wait_output(p, PROC_STDOUT, "Valid File? False\nContents: " SHOWN_CONTENT "\n",
	                             WAIT_MS));
	stop_example(p);
	out = proc_output(p, PROC_STDOUT, NULL);
	if ((at = raw_control_at(out)) >= 0)
		itest_fail_free(out, NULL, "--poll: raw byte at %ld:\n%s", at, out);
	free(out);
	proc_free(p);
	zkw_writer_close(w, true);
}

/* --owner USER|UID with --shm: the segment must be that user's. */
static void test_example_owner(void **state)
{
	zkw_writer *w = hostile_segment(owned_shm);
	char uid_text[32];
	struct itest_run r;
	proc *p;
	int fd;

	(void)state;
	snprintf(uid_text, sizeof(uid_text), "%u", (unsigned)geteuid());
	p = example("--shm", owned_shm, "--owner", uid_text, "--poll", NULL);
	assert_true(proc_wait_output(p, PROC_STDOUT, "Valid File? True\n", WAIT_MS));
	stop_example(p);
	proc_free(p);

	r = itest_run_tool("zkw-example", NULL, "--shm", owned_shm, "--owner", "65534", "--poll", NULL);
	ITEST_EXPECT_RUN(r, 1);
	if (!strstr(r.err, owned_shm) || !strstr(r.err, "owner"))
		itest_fail_free(r.out, r.err, "--owner 65534: unclear refusal \"%s\"", r.err);
	itest_run_free(&r);
	r = itest_run_tool("zkw-example", NULL, "--shm", owned_shm, "--owner", "no-such-user-zkw", "--poll",
	                   NULL);
	ITEST_EXPECT_RUN(r, 2);
	if (!strstr(r.err, "--owner wants a user name or uid, not \"no-such-user-zkw\""))
		itest_fail_free(r.out, r.err, "bad --owner: unclear error \"%s\"", r.err);
	itest_run_free(&r);
	r = itest_run_tool("zkw-example", NULL, "-z", hosts, "-f", "/x", "--owner", "0", "--poll", NULL);
	ITEST_EXPECT_RUN(r, 2);
	if (!strstr(r.err, "--owner goes with --shm"))
		itest_fail_free(r.out, r.err, "--owner without --shm: unclear error \"%s\"", r.err);
	itest_run_free(&r);

	/* Another user's segment: refused by default, accepted when named. */
	if (geteuid() == 0) {
		fd = shm_open(owned_shm, O_RDWR, 0);
		assert_true(fd >= 0);
		assert_int_equal(fchown(fd, 65534, 65534), 0);
		close(fd);
		r = itest_run_tool("zkw-example", NULL, "--shm", owned_shm, "--poll", NULL);
		ITEST_EXPECT_RUN(r, 1);
		if (!strstr(r.err, "65534"))
			itest_fail_free(r.out, r.err,
			                "another owner's segment: refusal does not name it \"%s\"", r.err);
		itest_run_free(&r);
		p = example("--shm", owned_shm, "--owner", "65534", "--poll", NULL);
		assert_true(proc_wait_output(p, PROC_STDOUT, "Valid File? True\n", WAIT_MS));
		stop_example(p);
		proc_free(p);
	}
	zkw_writer_close(w, true);
}

static proc *start_broker_on(const char *path, const char *name)
{
	char line[160];
	proc *broker =
	        proc_spawn("zkw-broker", (const char *[]){"-z", hosts, "-f", path, "--shm", name, NULL});

	assert_non_null(broker);
	snprintf(line, sizeof(line), "into segment /%s ", name);
	assert_true(proc_wait_output(broker, PROC_STDERR, line, WAIT_MS));
	return broker;
}

/* A broker that cannot adopt a segment (here: made group-writable while it
 * was down) replaces it and retires the old one: zkw-example --event opens
 * the name again and goes on, without delivering anything twice. */
static void test_example_follows_a_replaced_segment(void **state)
{
	char path[128], dev[128];
	struct stat before, after;
	proc *broker, *p;
	char *out;

	(void)state;
	itest_node(path, sizeof(path), "example/replaced");
	snprintf(dev, sizeof(dev), "/dev/shm/%s", replaced_shm);
	assert_int_equal(zkh_set(hosts, path, "before the restart", 18), ZOK);
	broker = start_broker_on(path, replaced_shm);
	p = example("--shm", replaced_shm, "--event", NULL);
	assert_true(proc_wait_output(p, PROC_STDOUT, "Your file contents: before the restart\n", WAIT_MS));

	assert_int_equal(proc_signal(broker, SIGTERM), 0);
	assert_int_equal(proc_wait(broker, WAIT_MS), 0);
	proc_free(broker);
	assert_int_equal(stat(dev, &before), 0);
	assert_int_equal(chmod(dev, 0660), 0);
	broker = start_broker_on(path, replaced_shm);
	assert_int_equal(stat(dev, &after), 0);
	assert_true(after.st_ino != before.st_ino); /* replaced, not adopted */

	assert_int_equal(zkh_set(hosts, path, "after the restart", 17), ZOK);
	assert_true(proc_wait_output(p, PROC_STDOUT, "Your file contents: after the restart\n", WAIT_MS));
	stop_example(p);
	out = proc_output(p, PROC_STDOUT, NULL);
	if (count(out, "Your file contents: before the restart\n") != 1)
		itest_fail_free(out, NULL, "content delivered again after the reopen:\n%s", out);
	free(out);
	proc_free(p);
	assert_int_equal(proc_signal(broker, SIGTERM), 0);
	assert_int_equal(proc_wait(broker, WAIT_MS), 0);
	proc_free(broker);
	zkw_writer_remove(replaced_shm);
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
	        cmocka_unit_test_teardown(test_push_out_of_memory_pushes_nothing, test_teardown),
	        cmocka_unit_test_teardown(test_push_max_bytes_is_capped, test_teardown),
	        cmocka_unit_test_teardown(test_push_one_language, test_teardown),
	        cmocka_unit_test_teardown(test_push_error_names_cause_once, test_teardown),
	        cmocka_unit_test_teardown(test_example_poll, test_teardown),
	        cmocka_unit_test_teardown(test_example_poll_first_line_valid, test_teardown),
	        cmocka_unit_test_teardown(test_example_event_in_process, test_teardown),
	        cmocka_unit_test_teardown(test_example_event_shm, test_teardown),
	        cmocka_unit_test_teardown(test_example_bad_usage, test_teardown),
	        cmocka_unit_test_teardown(test_example_escapes_what_it_prints, test_teardown),
	        cmocka_unit_test_teardown(test_example_owner, test_teardown),
	        cmocka_unit_test_teardown(test_example_follows_a_replaced_segment, test_teardown),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
