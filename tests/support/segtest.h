/* SPDX-License-Identifier: Apache-2.0 */
/* segtest.h - the small steps the segment tests share: a writer and a reader
 * opened or the test fails, a snapshot read as text, one-byte handshakes
 * between a test and the processes it forks, and a recorder of the handler
 * calls a dispatcher makes.
 *
 *     zkw_writer *w = segtest_open_writer(name, 4096);
 *     zkw_reader r;
 *     segtest_open_reader(&r, name);
 *     struct segtest_calls calls = {""};
 *     zkw_handlers h = segtest_calls_handlers(&calls);   // "config(x) valid(true) "
 */
#ifndef ZKW_TESTS_SEGTEST_H
#define ZKW_TESTS_SEGTEST_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <zkw/client.h>

#include "publish/writer.h"

/* zkw_writer_open with capacity (watched path "/tmp/test"); fails the test
 * with the writer's reason. */
zkw_writer *segtest_open_writer(const char *name, uint64_t capacity);
/* The same with the caller's options. */
zkw_writer *segtest_open_writer_opt(const char *name, const zkw_writer_options *opt);
/* zkw_reader_open; fails the test with r->why. */
void segtest_open_reader(zkw_reader *r, const char *name);
/* zkw_reader_read into buf (cap - 1 bytes of content), NUL-terminated. */
ssize_t segtest_read_text(const zkw_reader *r, zkw_snapshot *m, char *buf, size_t cap);

/* proc_fork(), or the test fails. */
pid_t segtest_fork(void);
/* Reap pid within timeout_ms; the test fails unless it exited with 0. */
void segtest_expect_exit_ok(pid_t pid, int timeout_ms, const char *what);

/* One byte through a pipe: a handshake with a forked process. recv gives
 * the byte, or -1 on timeout, EOF or error. */
void segtest_send_byte(int fd, char c);
int segtest_recv_byte(int fd, int timeout_ms);

/* The handler calls a dispatcher made, in order, as text:
 * "valid(true) config(CONTENT) error(MESSAGE) ". */
struct segtest_calls {
	char text[1024];
};
zkw_handlers segtest_calls_handlers(struct segtest_calls *calls);

#endif
