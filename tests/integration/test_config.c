/* SPDX-License-Identifier: Apache-2.0 */
/* test_config.c - zkw-broker's configuration file and its reload on SIGHUP
 * (docs/design.md, "The configuration file"), with a real ZooKeeper and
 * the real broker binary. Waits are on the broker's log lines and on the
 * segments' futex words.
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <zookeeper/zookeeper.h>

#include <zkw/client.h>

#include "itest.h"
#include "proc.h"
#include "zkh.h"
#include "publish/writer.h"

#define WAIT_MS 20000

static zkh_cluster *zk;
static const char *hosts;
static char dir[64];   /* itest_dir_make */
static char conf[128]; /* the broker's configuration file, in dir */

static char *shm_of(char *buf, size_t cap, const char *tag)
{
	snprintf(buf, cap, "zkwtc.%d.%s", (int)getpid(), tag);
	return buf;
}

/* --check-config: the effective configuration, the command line over the
 * file; a bad file is refused with FILE:LINE and the reason, exit 2. */
static void test_check_config(void **state)
{
	char *out = NULL, *err = NULL, a[64];
	const char *argv[] = {"--config", conf, "--check-config", "--linger", "7", "-f", "/cli/w", NULL};
	const char *bad[] = {"--config", conf, "--check-config", NULL};
	const char *missing[] = {"--config", "/nonexistent/zkw.conf", "--check-config", NULL};

	(void)state;
	itest_write_file(conf,
	                 "# a comment\n[broker]\nzookeeper = %s\ncapacity = 64k\n\n"
	                 "[socket]\npath = none\nlinger = 60\nallow = any=/app\n\n"
	                 "[watch /a/b]\nshm = %s\nmode = 0600\n\n[watch p]\npath = /p/q\npointer = true\n",
	                 hosts, shm_of(a, sizeof(a), "ab"));
	assert_int_equal(proc_run("zkw-broker", argv, NULL, WAIT_MS, &out, &err), 0);
	itest_assert_contains(out, "zookeeper = ");
	itest_assert_contains(out, hosts);
	itest_assert_contains(out, "linger = 7\n"); /* the command line wins */
	itest_assert_contains(out, "allow = any=/app\n");
	itest_assert_contains(out, "[watch /a/b]\n");
	itest_assert_contains(out, a);
	itest_assert_contains(out, "capacity = 65536\nmode = 0600\n");
	itest_assert_contains(out, "path = /p/q\npointer = true\n");
	itest_assert_contains(out, "[watch /cli/w] ; -f\n");
	free(out);
	free(err);

	itest_write_file(conf, "[broker]\nzookeeper = %s\n\n[watch /a]\ncapcity = 3\n", hosts);
	assert_int_equal(proc_run("zkw-broker", bad, NULL, WAIT_MS, &out, &err), 2);
	itest_assert_contains(err, ":5: unknown key 'capcity' in [watch /a]");
	itest_assert_contains(err, conf);
	free(out);
	free(err);
	itest_write_file(conf, "[broker]\nzookeeper = %s\n[watch label]\npointer = true\n", hosts);
	assert_int_equal(proc_run("zkw-broker", bad, NULL, WAIT_MS, &out, &err), 2);
	itest_assert_contains(err, ":3: [watch label] has no path");
	free(out);
	free(err);
	itest_write_file(conf, "[broker]\nzookeeper = %s\n[watch /m]\nmode = 0666\n", hosts);
	assert_int_equal(proc_run("zkw-broker", bad, NULL, WAIT_MS, &out, &err), 2);
	itest_assert_contains(err, ":4: mode = 0666: group/other write permission refused");
	free(out);
	free(err);
	itest_write_file(conf, "[broker]\nzookeeper = %s\nsession-timeout = soon\n", hosts);
	assert_int_equal(proc_run("zkw-broker", bad, NULL, WAIT_MS, &out, &err), 2);
	itest_assert_contains(err, ":3: --session-timeout soon: want milliseconds");
	free(out);
	free(err);
	assert_int_equal(proc_run("zkw-broker", missing, NULL, WAIT_MS, &out, &err), 2);
	itest_assert_contains(err, "/nonexistent/zkw.conf: No such file or directory");
	free(out);
	free(err);
}

static void open_seg(zkw_reader *r, const char *name)
{
	int rc = zkw_reader_open(r, name);

	if (rc)
		fail_msg("open %s: %s", name, r->why);
}

static void await_valid(zkw_reader *r, const char *want)
{
	char buf[256];
	zkw_snapshot m;
	uint64_t seen = 0;

	for (int i = 0; i < 100; i++) {
		ssize_t n = zkw_reader_read(r, &m, buf, sizeof(buf) - 1);

		if (n >= 0) {
			buf[n] = '\0';
			if (m.valid && strcmp(buf, want) == 0)
				return;
			seen = m.generation;
		}
		if (zkw_reader_wait(r, seen, WAIT_MS) <= 0)
			break;
	}
	fail_msg("never valid with \"%s\"", want);
}

/* SIGHUP applies the difference: a new watch is added, a removed one is
 * retired, a changed one is re-created, an unchanged one keeps its segment
 * and generation and wakes nobody. A bad file changes nothing. */
static void test_reload(void **state)
{
	char pa[96], pb[96], pc[96], pd[96], sa[64], sb[64], sc[64], sd[64];
	zkw_reader ra, rb, rd;
	uint64_t gen_a;
	proc *b;
	const char *argv[] = {"--config", conf, NULL};

	(void)state;
	itest_node(pa, sizeof(pa), "a");
	itest_node(pb, sizeof(pb), "b");
	itest_node(pc, sizeof(pc), "c");
	itest_node(pd, sizeof(pd), "d");
	itest_put(pa, "A");
	itest_put(pb, "B");
	itest_put(pc, "C");
	itest_put(pd, "D");
	shm_of(sa, sizeof(sa), "a");
	shm_of(sb, sizeof(sb), "b");
	shm_of(sc, sizeof(sc), "c");
	shm_of(sd, sizeof(sd), "d");
	itest_write_file(conf,
	                 "[broker]\nzookeeper = %s\n[socket]\npath = none\n"
	                 "[watch %s]\nshm = %s\nmode = 0600\n[watch %s]\nshm = %s\n"
	                 "[watch %s]\nshm = %s\ncapacity = 16k\n",
	                 hosts, pa, sa, pb, sb, pd, sd);
	b = proc_spawn("zkw-broker", argv);
	assert_non_null(b);
	assert_true(proc_wait_output_count(b, PROC_STDERR, ": valid, version", 3, WAIT_MS));
	open_seg(&ra, sa);
	open_seg(&rb, sb);
	open_seg(&rd, sd);
	await_valid(&ra, "A");
	await_valid(&rb, "B");
	await_valid(&rd, "D");
	gen_a = zkw_reader_generation(&ra);

	/* b removed, c added, d changed (capacity), a unchanged. */
	{
		/* The watch's own mode, not the broker's 0640. */
		char dev[128];
		struct stat st;

		snprintf(dev, sizeof(dev), "/dev/shm/%s", sa);
		assert_int_equal(stat(dev, &st), 0);
		assert_int_equal(st.st_mode & 07777, 0600);
	}
	itest_write_file(conf,
	                 "[broker]\nzookeeper = %s\n[socket]\npath = none\n"
	                 "[watch %s]\nshm = %s\nmode = 0600\n[watch %s]\nshm = %s\n"
	                 "[watch %s]\nshm = %s\ncapacity = 32k\n",
	                 hosts, pa, sa, pc, sc, pd, sd);
	proc_signal(b, SIGHUP);
	assert_true(proc_wait_output(b, PROC_STDERR, "reloaded", WAIT_MS));
	if (proc_count(b, PROC_STDERR, "2 watches added, 2 removed or re-created, 1 unchanged") != 1) {
		proc_dump(b, "reload counts");
		fail_msg("reload did not say what it did");
	}
	/* The removed and the re-created: retired, their readers told. */
	assert_true(zkw_reader_retired(&rb));
	assert_int_equal(zkw_reader_wait(&rb, zkw_reader_generation(&rb), WAIT_MS), -ESTALE);
	assert_true(zkw_reader_retired(&rd));
	zkw_reader_close(&rb);
	assert_int_equal(zkw_reader_open(&rb, sb), -ENOENT); /* unlinked */
	zkw_reader_close(&rd);
	open_seg(&rd, sd);
	await_valid(&rd, "D");
	assert_int_equal(zkw_reader_capacity(&rd) <= 32 * 1024, 1);
	{
		zkw_reader rc;

		open_seg(&rc, sc);
		await_valid(&rc, "C");
		zkw_reader_close(&rc);
	}
	/* The unchanged one: same segment, same generation, nobody woken. */
	assert_false(zkw_reader_retired(&ra));
	assert_int_equal(zkw_reader_generation(&ra), gen_a);
	assert_int_equal(zkw_reader_wait(&ra, gen_a, 300), 0);

	/* A bad file: refused with its place, nothing changes. */
	itest_write_file(conf, "[broker]\nzookeeper = %s\n[watch %s]\nbogus = 1\n", hosts, pa);
	proc_signal(b, SIGHUP);
	assert_true(proc_wait_output(b, PROC_STDERR, "reload refused", WAIT_MS));
	assert_int_equal(proc_count(b, PROC_STDERR, ":4: unknown key 'bogus'"), 1);
	assert_false(zkw_reader_retired(&ra));
	assert_int_equal(zkw_reader_generation(&ra), gen_a);
	itest_put(pa, "A2");
	await_valid(&ra, "A2");
	{
		zkw_reader rc;

		open_seg(&rc, sc); /* still served */
		assert_true(zkw_reader_broker_alive(&rc));
		zkw_reader_close(&rc);
	}
	proc_signal(b, SIGTERM);
	assert_int_equal(proc_wait(b, WAIT_MS), 0);
	proc_free(b);
	zkw_reader_close(&ra);
	zkw_writer_remove(sa);
	zkw_writer_remove(sb);
	zkw_writer_remove(sc);
	zkw_writer_remove(sd);
}

/* After a reload the running values of what needs a restart stay, and
 * stay readable: STATUS still names the ensemble (a file's `zookeeper =`
 * was freed with the old configuration once: ASan saw it). A changed
 * ensemble is said to need a restart. */
static void test_reload_keeps_restart_settings(void **state)
{
	char sock[128], hostsq[512], *a;
	const char *argv[] = {"--config", conf, NULL};
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	proc *b;

	(void)state;
	snprintf(sock, sizeof(sock), "%s/s.sock", dir);
	itest_write_file(conf, "[broker]\nzookeeper = %s\n[socket]\npath = %s\n", hosts, sock);
	b = proc_spawn("zkw-broker", argv);
	assert_non_null(b);
	assert_true(proc_wait_output(b, PROC_STDERR, "listening", WAIT_MS));
	itest_write_file(conf, "[broker]\nzookeeper = 127.0.0.1:1\n[socket]\npath = %s\n", sock);
	proc_signal(b, SIGHUP);
	assert_true(proc_wait_output(b, PROC_STDERR, "reloaded", WAIT_MS));
	assert_int_equal(proc_count(b, PROC_STDERR, "reload: zookeeper changed: needs a restart"), 1);
	for (int round = 0; round < 2; round++) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		char buf[1024];
		ssize_t n;

		assert_true(strlen(sock) < sizeof(addr.sun_path));
		memcpy(addr.sun_path, sock, strlen(sock) + 1);
		assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
		assert_int_equal(send(fd, "STATUS\n", 7, 0), 7);
		/* One answer line: read up to its newline (the broker keeps an
		 * idle connection open for 10 s). */
		size_t len = 0;

		do {
			n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
			assert_true(n > 0);
			len += (size_t)n;
			buf[len] = '\0';
		} while (!strchr(buf, '\n') && len < sizeof(buf) - 1);
		close(fd);
		snprintf(hostsq, sizeof(hostsq), "hosts=%s ", hosts);
		a = strstr(buf, hostsq);
		if (!a)
			fail_msg("STATUS after a reload: %s (want %s)", buf, hostsq);
		if (round == 0) { /* and once more after a second reload */
			proc_signal(b, SIGHUP);
			assert_true(proc_wait_output_count(b, PROC_STDERR, "reloaded", 2, WAIT_MS));
		}
	}
	proc_signal(b, SIGTERM);
	assert_int_equal(proc_wait(b, WAIT_MS), 0);
	proc_free(b);
}

/* One version from one place (ZKW_VERSION): every tool says it. */
static void test_version(void **state)
{
	static const char *const tools[] = {"zkw-broker", "zkw-example"};
	char want[64];

	(void)state;
	for (size_t i = 0; i < sizeof(tools) / sizeof(tools[0]); i++) {
		const char *argv[] = {"--version", NULL};
		char *out = NULL;

		assert_int_equal(proc_run(tools[i], argv, NULL, WAIT_MS, &out, NULL), 0);
		snprintf(want, sizeof(want), "%s %s\n", tools[i], ZKW_VERSION);
		assert_string_equal(out, want);
		free(out);
	}
}

static int setup(void **state)
{
	(void)state;
	zk = itest_zk_start(&(struct itest_config){.prefix = "zkwtc", .wait_ms = WAIT_MS});
	if (!zk || !itest_dir_make(dir, sizeof(dir)))
		return -1;
	hosts = zkh_hosts(zk);
	snprintf(conf, sizeof(conf), "%s/broker.conf", dir);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	if (dir[0])
		itest_tree_remove(dir, false);
	itest_zk_stop();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_check_config),
	        cmocka_unit_test(test_reload),
	        cmocka_unit_test(test_version),
	        cmocka_unit_test(test_reload_keeps_restart_settings),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
