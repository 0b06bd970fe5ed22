/* SPDX-License-Identifier: Apache-2.0 */
/* segtest.c - the small steps the segment tests share (see segtest.h). */
#include "segtest.h"

#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "proc.h"

zkw_writer *segtest_open_writer_opt(const char *name, const zkw_writer_options *opt)
{
	zkw_writer *w = NULL;
	char why[512] = "";
	int err = zkw_writer_open(&w, name, opt, why, sizeof(why));

	if (err)
		fail_msg("zkw_writer_open(%s): %d (%s)", name, err, why);
	return w;
}

zkw_writer *segtest_open_writer(const char *name, uint64_t capacity)
{
	zkw_writer_options opt = {.capacity = capacity, .group = (gid_t)-1, .watch_path = "/tmp/test"};

	return segtest_open_writer_opt(name, &opt);
}

void segtest_open_reader(zkw_reader *r, const char *name)
{
	int err = zkw_reader_open(r, name);

	if (err)
		fail_msg("zkw_reader_open(%s): %d (%s)", name, err, r->why ? r->why : "?");
}

ssize_t segtest_read_text(const zkw_reader *r, zkw_snapshot *m, char *buf, size_t cap)
{
	ssize_t n = zkw_reader_read(r, m, buf, cap - 1);

	if (n >= 0)
		buf[n] = '\0';
	return n;
}

pid_t segtest_fork(void)
{
	pid_t pid = proc_fork();

	if (pid < 0)
		fail_msg("fork: %s", strerror((int)-pid));
	return pid;
}

void segtest_expect_exit_ok(pid_t pid, int timeout_ms, const char *what)
{
	int status = proc_reap_pid(pid, timeout_ms);

	if (status == -1)
		fail_msg("%s: child %d did not end within %d ms (killed)", what, (int)pid, timeout_ms);
	if (WIFSIGNALED(status))
		fail_msg("%s: child %d died of signal %d (%s)", what, (int)pid, WTERMSIG(status),
		         strsignal(WTERMSIG(status)));
	if (WEXITSTATUS(status) != 0)
		fail_msg("%s: child %d exited with %d", what, (int)pid, WEXITSTATUS(status));
}

void segtest_send_byte(int fd, char c)
{
	while (write(fd, &c, 1) < 0 && errno == EINTR)
		;
}

int segtest_recv_byte(int fd, int timeout_ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	char c;
	int n;

	do
		n = poll(&p, 1, timeout_ms);
	while (n < 0 && errno == EINTR);
	if (n <= 0 || read(fd, &c, 1) != 1)
		return -1;
	return (unsigned char)c;
}

static void calls_add(struct segtest_calls *calls, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void calls_add(struct segtest_calls *calls, const char *fmt, ...)
{
	size_t used = strlen(calls->text);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(calls->text + used, sizeof(calls->text) - used, fmt, ap);
	va_end(ap);
}

static void on_valid(void *ctx, bool valid)
{
	calls_add(ctx, "valid(%s) ", valid ? "true" : "false");
}

static void on_config(void *ctx, const void *content, size_t len)
{
	calls_add(ctx, "config(%.*s) ", (int)len, (const char *)content);
}

static void on_error(void *ctx, const char *message)
{
	calls_add(ctx, "error(%s) ", message);
}

zkw_handlers segtest_calls_handlers(struct segtest_calls *calls)
{
	zkw_handlers h = {.valid = on_valid, .config = on_config, .error = on_error, .ctx = calls};

	return h;
}
