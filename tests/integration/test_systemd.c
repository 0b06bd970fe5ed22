/* SPDX-License-Identifier: Apache-2.0 */
/* test_systemd.c - zkw-broker under systemd's eyes, without systemd: a real
 * NOTIFY_SOCKET (a datagram socket this test binds, as the service manager
 * does) receives READY=1, STATUS=, RELOADING=1, WATCHDOG=1 and STOPPING=1;
 * a real JOURNAL_STREAM (the device:inode of the broker's own stderr) makes
 * it log with sd-daemon priority prefixes and no timestamp of its own.
 */
#include <errno.h>
#include <poll.h>
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

#include "proc.h"
#include "zkh.h"
#include "publish/writer.h"

#define WAIT_MS 20000

static zkh_cluster *zk;
static const char *hosts;
static char root[64], dir[64];

static void put(const char *path, const char *content)
{
	int rc = zkh_set(hosts, path, content, (int)strlen(content));

	if (rc != ZOK)
		fail_msg("zkh_set %s: %s", path, zerror(rc));
}

/* The service manager's end: a bound datagram socket. */
static int notify_socket(char *path, size_t cap)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	snprintf(path, cap, "%s/notify", dir);
	assert_true(strlen(path) < sizeof(a.sun_path));
	memcpy(a.sun_path, path, strlen(path) + 1);
	unlink(path);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

/* The next datagram that holds `want`; the ones before it go into seen
 * (appended). Fails after WAIT_MS. */
static void await_notify(int fd, const char *want, char *seen, size_t cap)
{
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		char msg[1024];
		ssize_t n;

		if (poll(&p, 1, WAIT_MS) != 1)
			fail_msg("no notification with \"%s\" (had: %s)", want, seen);
		n = recv(fd, msg, sizeof(msg) - 1, 0);
		assert_true(n >= 0);
		msg[n] = '\0';
		if (strlen(seen) + (size_t)n + 2 < cap) {
			strcat(seen, msg);
			strcat(seen, "|");
		}
		if (strstr(msg, want))
			return;
	}
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

static void test_notify_ready_reload_watchdog_stopping(void **state)
{
	char sock[128], env_notify[160], conf[128], path[96], shm[64], text[512], seen[8192] = "";
	const char *env[] = {env_notify, "WATCHDOG_USEC=400000", NULL};
	proc_options o = {.env = env};
	const char *argv[] = {"--config", conf, NULL};
	zkw_reader r;
	zkw_snapshot m;
	char buf[64];
	int fd;
	proc *b;

	(void)state;
	snprintf(path, sizeof(path), "%s/ready", root);
	snprintf(shm, sizeof(shm), "zkwtsd.%d.ready", (int)getpid());
	put(path, "ready content");
	fd = notify_socket(sock, sizeof(sock));
	snprintf(env_notify, sizeof(env_notify), "NOTIFY_SOCKET=%s", sock);
	snprintf(conf, sizeof(conf), "%s/broker.conf", dir);
	snprintf(text, sizeof(text), "[broker]\nzookeeper = %s\n[socket]\npath = none\n[watch %s]\nshm = %s\n", hosts,
	         path, shm);
	write_file(conf, text);
	b = proc_spawn_opts("zkw-broker", argv, &o);
	assert_non_null(b);
	await_notify(fd, "READY=1", seen, sizeof(seen));
	/* Ready means evaluated: the segment is there and valid already. */
	assert_int_equal(zkw_reader_open(&r, shm), 0);
	assert_true(zkw_reader_read(&r, &m, buf, sizeof(buf)) >= 0);
	assert_true(m.valid);
	assert_non_null(strstr(seen, "STATUS=serving: 1 watch (1 valid"));
	/* The watchdog: pinged every half WatchdogSec. */
	await_notify(fd, "WATCHDOG=1", seen, sizeof(seen));
	await_notify(fd, "WATCHDOG=1", seen, sizeof(seen));
	/* A reload: RELOADING=1, then READY=1 again. */
	seen[0] = '\0';
	assert_int_equal(proc_signal(b, SIGHUP), 0);
	await_notify(fd, "RELOADING=1", seen, sizeof(seen));
	assert_non_null(strstr(seen, "MONOTONIC_USEC="));
	await_notify(fd, "READY=1", seen, sizeof(seen));
	seen[0] = '\0';
	assert_int_equal(proc_signal(b, SIGTERM), 0);
	await_notify(fd, "STOPPING=1", seen, sizeof(seen));
	assert_int_equal(proc_wait(b, WAIT_MS), 0);
	proc_free(b);
	zkw_reader_close(&r);
	close(fd);
	unlink(sock);
	unlink(conf);
	zkw_writer_remove(shm);
}

/* With JOURNAL_STREAM naming its stderr, every line starts with the
 * sd-daemon priority and carries no timestamp; otherwise the full line. */
static void test_journal_stream_priorities(void **state)
{
	char script[1024], path[96], missing[96], shm[64], shm2[64], broker[256];
	const char *argv[] = {"-c", script, NULL};
	proc_options o = {.literal_path = true};
	char *err;
	size_t len;
	proc *b;

	(void)state;
	snprintf(path, sizeof(path), "%s/journal", root);
	snprintf(missing, sizeof(missing), "%s/journal-missing", root);
	snprintf(shm, sizeof(shm), "zkwtsd.%d.journal", (int)getpid());
	snprintf(shm2, sizeof(shm2), "zkwtsd.%d.journal2", (int)getpid());
	put(path, "x");
	proc_tool_path("zkw-broker", broker, sizeof(broker));
	snprintf(script, sizeof(script),
	         "JOURNAL_STREAM=$(stat -L -c %%d:%%i /proc/self/fd/2) exec %s -z %s --socket none "
	         "-f %s --shm %s -f %s --shm %s",
	         broker, hosts, path, shm, missing, shm2);
	b = proc_spawn_opts("/bin/sh", argv, &o);
	assert_non_null(b);
	assert_true(proc_wait_output(b, PROC_STDERR, "<4>warning: ", WAIT_MS)); /* the missing node */
	assert_true(proc_wait_output(b, PROC_STDERR, "<6>info: ", WAIT_MS));
	proc_signal(b, SIGTERM);
	assert_int_equal(proc_wait(b, WAIT_MS), 0);
	err = proc_output(b, PROC_STDERR, &len);
	for (char *line = err; line && *line;) {
		char *nl = strchr(line, '\n');

		/* A sanitizer's trailer (LeakSanitizer's "Suppressions used"
		 * block, in the ASan build) is not the broker's log. */
		if (strncmp(line, "-----", 5) == 0 || strncmp(line, "==", 2) == 0)
			break;
		if (line[0] != '<' || line[2] != '>')
			fail_msg("a line without a priority prefix: %.*s", (int)(nl ? nl - line : 80), line);
		if (strstr(line, "zkw-broker[") && strstr(line, "zkw-broker[") < (nl ? nl : line + strlen(line)))
			fail_msg("a journal line with our own timestamp and pid: %.*s", (int)(nl ? nl - line : 80), line);
		line = nl ? nl + 1 : NULL;
	}
	free(err);
	proc_free(b);
	zkw_writer_remove(shm);
	zkw_writer_remove(shm2);
}

static int setup(void **state)
{
	(void)state;
	zk = zkh_start(1);
	if (!zk)
		return -1;
	hosts = zkh_hosts(zk);
	snprintf(root, sizeof(root), "/zkwtsd%d", (int)getpid());
	snprintf(dir, sizeof(dir), "/tmp/zkwtsd.%d", (int)getpid());
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	rmdir(dir);
	zkh_delete(hosts, root);
	zkh_stop(zk);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_notify_ready_reload_watchdog_stopping),
	        cmocka_unit_test(test_journal_stream_priorities),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
