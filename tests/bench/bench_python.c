/* SPDX-License-Identifier: Apache-2.0 */
/* bench_python.c - the seed's polling calls, in Python, on zkw.
 *
 *     bench_python --script tests/bench/bench_python.py [--python PATH] [--quick]
 *
 * The publishing side of `bench_python.py micro`: this program owns a
 * segment (the writer of broker/publish, no ZooKeeper: what is measured is
 * the Python read path, as bench_read measures the C one), publishes a
 * 4 KiB config, and runs the script, which opens the segment through
 * zkw.ZookeeperWatcher(shm=) and times unchanged get_file_contents() and
 * is_valid() against the seed's cached attribute, then asks for changed
 * 1 MiB configs one at a time ("n" on a pipe; "k" back once published) and
 * times get_file_contents() against a memcpy plus decode. The script
 * prints the Markdown section; zkw.py comes from PYTHONPATH and ZKW_LIBRARY
 * (run.sh sets both).
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/wait.h>

#include "bench.h"
#include "publish/writer.h"

#define SMALL (4u * 1024u)
#define LARGE (1024u * 1024u)

static char segment_name[64];

/* An ASCII config of len bytes that starts with "seq=<seq>\n": what the
 * Python side checks it reads. */
static void make_config(char *buf, size_t len, uint64_t seq)
{
	size_t at = (size_t)snprintf(buf, len, "seq=%020" PRIu64 "\n", seq);

	while (at < len) {
		int n = snprintf(buf + at, len - at, "key_%07zu = value of the setting %" PRIu64 "\n", at,
		                 seq);

		if (n < 0 || (size_t)n >= len - at) {
			memset(buf + at, 'x', len - at - 1);
			buf[len - 1] = '\n';
			break;
		}
		at += (size_t)n;
	}
}

static void publish(zkw_writer *w, const char *content, size_t len, uint64_t serial)
{
	zkw_publication p = {.valid = true,
	                     .connected = true,
	                     .content = content,
	                     .len = len,
	                     .content_serial = serial,
	                     .version = (int64_t)serial};
	int err = zkw_writer_publish(w, &p);

	if (err)
		bench_die("publish %zu bytes: %s", len, strerror(-err));
}

static void usage(FILE *f)
{
	fprintf(f, "usage: bench_python --script bench_python.py [--python PATH] [--quick]\n");
}

int main(int argc, char **argv)
{
	const char *script = NULL, *python = "/usr/bin/python3";
	zkw_writer_options opt = {
	        .capacity = LARGE, .mode = 0600, .group = (gid_t)-1, .watch_path = "/zkwbench/python"};
	char why[256], cmd_arg[16], ack_arg[16], *content;
	int cmd[2], ack[2], c, st;
	bool quick = false;
	uint64_t seq = 0;
	struct zkw_opt o;
	zkw_writer *w;
	pid_t pid;

	bench_init("bench_python");
	zkw_opt_init(&o, argc, argv, "bench_python", "s=script: P=python: q|quick m=markdown h|help", usage);
	while ((c = zkw_opt_next(&o)) != -1) {
		switch (c) {
		case 's': script = o.arg; break;
		case 'P': python = o.arg; break;
		case 'q': quick = true; break;
		case 'm': break; /* the report is markdown either way */
		default: return 2;
		}
	}
	if (!script || zkw_opt_no_operands(&o)) {
		usage(stderr);
		return 2;
	}
	content = malloc(LARGE);
	if (!content)
		bench_die("out of memory");
	snprintf(segment_name, sizeof(segment_name), "/zkwbench.py.%d", (int)getpid());
	bench_unlink_on_exit(segment_name);
	if (zkw_writer_open(&w, segment_name, &opt, why, sizeof(why)))
		bench_die("%s", why);
	make_config(content, SMALL, seq);
	publish(w, content, SMALL, ++seq);

	/* Only the child's ends cross the exec. */
	if (pipe2(cmd, O_CLOEXEC) < 0 || pipe2(ack, O_CLOEXEC) < 0)
		bench_die("pipe: %s", strerror(errno));
	pid = bench_fork();
	if (pid == 0) {
		fcntl(cmd[1], F_SETFD, 0);
		fcntl(ack[0], F_SETFD, 0);
		snprintf(cmd_arg, sizeof(cmd_arg), "%d", cmd[1]);
		snprintf(ack_arg, sizeof(ack_arg), "%d", ack[0]);
		execl(python, python, script, "micro", segment_name + 1, cmd_arg, ack_arg,
		      quick ? "--quick" : NULL, (char *)NULL);
		fprintf(stderr, "exec %s: %s\n", python, strerror(errno));
		_exit(127);
	}
	close(cmd[1]);
	close(ack[0]);
	/* Serve "n" until the script closes its end. The seq of the k-th
	 * changed config is k: the script checks it. */
	for (uint64_t k = 1;; k++) {
		char b;
		ssize_t n = read(cmd[0], &b, 1);

		if (n < 0 && errno == EINTR) {
			k--;
			continue;
		}
		if (n <= 0)
			break;
		make_config(content, LARGE, k);
		publish(w, content, LARGE, ++seq);
		if (write(ack[1], "k", 1) != 1)
			break;
	}
	close(cmd[0]);
	close(ack[1]);
	st = proc_reap_pid(pid, 60000);
	zkw_writer_close(w, true);
	free(content);
	if (st < 0)
		bench_die("%s micro did not exit within 60 s of its last request", script);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		bench_die("%s micro failed (wait status %d); is zkw.py on PYTHONPATH and ZKW_LIBRARY set?",
		          script, st);
	return 0;
}
