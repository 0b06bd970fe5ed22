/* SPDX-License-Identifier: Apache-2.0 */
/* test_socket.c - the broker's control socket end to end: a real ZooKeeper
 * (zkh), the real zkw-broker binary started with no -f, and subscribers
 * through zkw_reader_subscribe (zkw/client.h) or a raw socket speaking the
 * text protocol (docs/design.md, "The control socket").
 *
 * Waits are on events: the broker's log lines, the segment's futex, a
 * child's exit, the socket's answers. Peers of other uids are forked
 * children that drop to that uid before they connect.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <zookeeper/zookeeper.h>

#include <zkw/client.h>

#include "itest.h"
#include "proc.h"
#include "zkh.h"
#include "publish/writer.h"

#define WAIT_MS 20000
#define NOBODY  65534

static zkh_cluster *zk;
static const char *hosts;
static const char *root; /* "/zkwts<pid>" (itest_root) */
static char sockdir[64]; /* a private directory for the sockets */
static char sock[100];    /* the current broker's socket */
static proc *broker;

/* A broker with no -f, listening on a fresh socket, plus extra args. */
static void start_broker(const char *first, ...)
{
	const char *fixed[] = {"-z",   hosts,      "--socket", sock, "--socket-mode",
	                       "0666", "--linger", "600",      NULL};
	va_list ap;

	va_start(ap, first);
	broker = itest_broker_listening(sock, fixed, first, ap);
	va_end(ap);
}

static void stop_broker(void)
{
	if (!broker)
		return;
	itest_broker_stop(broker);
	broker = NULL;
}

/* ---- a subscriber that reads what it got -------------------------------- */

static ssize_t read_now(zkw_reader *r, zkw_snapshot *m, char *buf, size_t cap)
{
	ssize_t n = zkw_reader_read(r, m, buf, cap - 1);

	if (n >= 0)
		buf[n] = '\0';
	return n;
}

/* Wait until the reader's content is `want` (valid). */
static void await_content(zkw_reader *r, const char *want)
{
	char buf[4096];
	zkw_snapshot m;
	uint64_t seen = 0;

	for (int i = 0; i < 200; i++) {
		ssize_t n = read_now(r, &m, buf, sizeof(buf));

		if (n >= 0 && m.valid && strcmp(buf, want) == 0)
			return;
		if (n >= 0)
			seen = m.generation;
		if (zkw_reader_wait(r, seen, WAIT_MS) <= 0)
			break;
	}
	read_now(r, &m, buf, sizeof(buf));
	fail_msg("content never became \"%s\" (have \"%s\", valid %d, error %s)", want, buf, m.valid, m.error);
}

/* ---- tests ------------------------------------------------------------- */

/* The seed's promise: any path, on demand, with no -f. A change arrives;
 * LIST and STATUS tell what the broker holds; READERS shows the ack. */
static void test_subscribe_on_demand(void **state)
{
	char path[128], buf[256], *a;
	zkw_reader r;
	int rc;

	(void)state;
	itest_node(path, sizeof(path), "demand");
	itest_put(path, "one");
	start_broker(NULL);
	rc = zkw_reader_subscribe(&r, sock, path, 0);
	if (rc)
		fail_msg("subscribe: %s (%s)", strerror(-rc), r.why);
	await_content(&r, "one");
	itest_put(path, "two");
	await_content(&r, "two");

	a = itest_ask_at(sock, "LIST\n", 2);
	itest_assert_contains(a, "OK count=1");
	snprintf(buf, sizeof(buf), "path=%s pointer=0 origin=demand subscribers=1 valid=1", path);
	itest_assert_contains(a, buf);
	free(a);
	a = itest_ask_at(sock, "STATUS\n", 1);
	itest_assert_contains(a, "OK proto=1");
	itest_assert_contains(a, "connected=1");
	itest_assert_contains(a, "watches=1 demand=1");
	free(a);
	{
		char name[300], req[400];
		const char *shm;

		a = itest_ask_at(sock, "LIST\n", 2);
		shm = strchr(a, '\n') + 1;
		snprintf(name, sizeof(name), "%.*s", (int)strcspn(shm, " "), shm);
		free(a);
		snprintf(req, sizeof(req), "READERS %s\n", name);
		a = itest_ask_at(sock, req, 2);
		itest_assert_contains(a, "OK count=1");
		snprintf(buf, sizeof(buf), "pid=%d uid=%u", (int)getpid(), (unsigned)geteuid());
		itest_assert_contains(a, buf);
		snprintf(buf, sizeof(buf), "generation=%llu", (unsigned long long)zkw_reader_generation(&r));
		itest_assert_contains(a, buf);
		free(a);
	}
	zkw_reader_close(&r);
	stop_broker();
}

/* A path given with -f is shared, not duplicated: same segment name. */
static void test_subscribe_shares_a_configured_watch(void **state)
{
	char path[128], shm[64], *a;
	zkw_reader r;
	int rc;

	(void)state;
	itest_node(path, sizeof(path), "shared");
	itest_put(path, "cfg");
	snprintf(shm, sizeof(shm), "zkwts.%d.shared", (int)getpid());
	start_broker("-f", path, "--shm", shm, NULL);
	rc = zkw_reader_subscribe(&r, sock, path, 0);
	if (rc)
		fail_msg("subscribe: %s (%s)", strerror(-rc), r.why);
	await_content(&r, "cfg");
	a = itest_ask_at(sock, "LIST\n", 2);
	itest_assert_contains(a, "OK count=1");
	itest_assert_contains(a, "origin=config subscribers=1");
	itest_assert_contains(a, shm);
	free(a);
	zkw_reader_close(&r);
	stop_broker();
	zkw_writer_remove(shm);
}

/* A missing node answers at once as invalid with the seed's text, and
 * becomes valid when created; pointer mode follows the target. */
static void test_subscribe_missing_then_created_and_pointer(void **state)
{
	char path[128], ptr[128], target[128], buf[256];
	zkw_reader r, p;
	zkw_snapshot m;
	int rc;

	(void)state;
	itest_node(path, sizeof(path), "late");
	itest_node(ptr, sizeof(ptr), "ptr");
	itest_node(target, sizeof(target), "target");
	itest_put(target, "pointed");
	itest_put(ptr, target);
	start_broker(NULL);
	rc = zkw_reader_subscribe(&r, sock, path, 0);
	if (rc)
		fail_msg("subscribe: %s (%s)", strerror(-rc), r.why);
	assert_true(read_now(&r, &m, buf, sizeof(buf)) >= 0);
	assert_false(m.valid);
	assert_non_null(strstr(m.error, "Invalid get on file path"));
	itest_put(path, "now");
	await_content(&r, "now");

	rc = zkw_reader_subscribe(&p, sock, ptr, ZKW_SUBSCRIBE_POINTER);
	if (rc)
		fail_msg("subscribe pointer: %s (%s)", strerror(-rc), p.why);
	await_content(&p, "pointed");
	assert_true(read_now(&p, &m, buf, sizeof(buf)) >= 0);
	assert_string_equal(m.pointer, target);
	zkw_reader_close(&r);
	zkw_reader_close(&p);
	stop_broker();
}

/* Run fn in a child that has become uid/gid `id` (groups dropped);
 * returns its exit status. */
static int as_user(uid_t id, int (*fn)(void *), void *arg)
{
	pid_t pid = proc_fork();
	int status = -1;

	assert_true(pid >= 0);
	if (pid == 0) {
		if (setgroups(0, NULL) < 0 || setgid(id) < 0 || setuid(id) < 0)
			_exit(99);
		_exit(fn(arg));
	}
	status = proc_reap_pid(pid, WAIT_MS);
	if (status == -1)
		fail_msg("child %d (uid %u) did not finish", (int)pid, (unsigned)id);
	return status;
}

struct try_sub {
	const char *path;
	unsigned flags;
	int want;           /* the errno expected, 0 for success */
	const char *needle; /* in r.why when refused */
};

static int child_subscribe(void *arg)
{
	const struct try_sub *t = arg;
	zkw_subscribe_options o = {.timeout_ms = WAIT_MS, .expected_uid = 0};
	zkw_reader r;
	int rc = zkw_reader_subscribe_ex(&r, sock, t->path, t->flags, &o);

	if (rc != t->want) {
		fprintf(stderr, "subscribe %s as uid %u: got %d (%s), want %d\n", t->path, (unsigned)getuid(), rc,
		        r.why ? r.why : "", t->want);
		return 1;
	}
	if (rc && t->needle && !strstr(r.why, t->needle)) {
		fprintf(stderr, "refusal \"%s\" lacks \"%s\"\n", r.why, t->needle);
		return 2;
	}
	zkw_reader_close(&r);
	return 0;
}

static int status_of(uid_t id, const char *path, unsigned flags, int want, const char *needle)
{
	struct try_sub t = {path, flags, want, needle};
	int status = as_user(id, child_subscribe, &t);

	return WIFEXITED(status) ? WEXITSTATUS(status) : 100;
}

/* SO_PEERCRED policy: a uid may read what a rule grants, nothing else, and
 * ensure only with --allow-ensure; refusals name the rule. */
static void test_policy_by_uid(void **state)
{
	char app[128], secret[128], fresh[128], rule[160], erule[160];

	(void)state;
	itest_node(app, sizeof(app), "app/x");
	itest_node(secret, sizeof(secret), "secret");
	itest_node(fresh, sizeof(fresh), "app/ensured");
	itest_put(app, "ok");
	itest_put(secret, "hidden");
	snprintf(rule, sizeof(rule), "uid:%d=%s/app", NOBODY, root);
	snprintf(erule, sizeof(erule), "uid:%d=%s/app/ensured", NOBODY, root);
	start_broker("--allow", rule, "--allow-ensure", erule, NULL);
	assert_int_equal(status_of(NOBODY, app, 0, 0, NULL), 0);
	assert_int_equal(status_of(NOBODY, secret, 0, -EACCES, "no --allow rule matches"), 0);
	assert_int_equal(status_of(NOBODY, app, ZKW_SUBSCRIBE_ENSURE, -EACCES, "but not ensure it"), 0);
	assert_int_equal(status_of(NOBODY, fresh, ZKW_SUBSCRIBE_ENSURE, 0, NULL), 0);
	/* The ensured node exists now. */
	{
		char buf[16];
		int len = sizeof(buf);

		assert_int_equal(zkh_get(hosts, fresh, buf, &len), ZOK);
	}
	stop_broker();
}

/* Without rules anyone who can connect may read, but only root and the
 * broker's uid may ensure; caps name their flag. */
static void test_default_policy_and_caps(void **state)
{
	char a1[128], a2[128], a3[128], missing[128];

	(void)state;
	itest_node(a1, sizeof(a1), "cap1");
	itest_node(a2, sizeof(a2), "cap2");
	itest_node(a3, sizeof(a3), "cap3");
	itest_node(missing, sizeof(missing), "nobody-ensures");
	itest_put(a1, "1");
	itest_put(a2, "2");
	itest_put(a3, "3");
	start_broker("--max-watches", "2", NULL);
	assert_int_equal(status_of(NOBODY, a1, 0, 0, NULL), 0);
	assert_int_equal(status_of(NOBODY, missing, ZKW_SUBSCRIBE_ENSURE, -EACCES, "only root"), 0);
	{
		zkw_reader r1, r2, r3;

		assert_int_equal(zkw_reader_subscribe(&r1, sock, a1, 0), 0);
		assert_int_equal(zkw_reader_subscribe(&r2, sock, a2, 0), 0);
		assert_int_equal(zkw_reader_subscribe(&r3, sock, a3, 0), -ENOSPC);
		assert_non_null(strstr(r3.why, "--max-watches 2"));
		zkw_reader_close(&r1);
		zkw_reader_close(&r2);
	}
	stop_broker();
	start_broker("--max-peer-subscriptions", "1", NULL);
	{
		zkw_reader r1, r2;

		assert_int_equal(zkw_reader_subscribe(&r1, sock, a1, 0), 0);
		assert_int_equal(zkw_reader_subscribe(&r2, sock, a2, 0), -ENOSPC);
		assert_non_null(strstr(r2.why, "--max-peer-subscriptions 1"));
		zkw_reader_close(&r1);
		/* The connection is gone: its subscription with it. */
		assert_int_equal(zkw_reader_subscribe(&r2, sock, a2, 0), 0);
		zkw_reader_close(&r2);
	}
	stop_broker();
}

/* A watch added on demand outlives its last subscriber by --linger, then
 * its segment is retired (a reader still holding it sees -ESTALE) and its
 * name removed. */
static void test_linger_then_retired(void **state)
{
	char path[128], *a, name[300];
	zkw_reader r, byname;
	const char *line;
	int rc;

	(void)state;
	itest_node(path, sizeof(path), "linger");
	itest_put(path, "brief");
	start_broker("--linger", "1", NULL);
	assert_int_equal(zkw_reader_subscribe(&r, sock, path, 0), 0);
	await_content(&r, "brief");
	a = itest_ask_at(sock, "LIST\n", 2);
	line = strchr(a, '\n') + 1;
	snprintf(name, sizeof(name), "%.*s", (int)strcspn(line, " "), line);
	free(a);
	assert_int_equal(zkw_reader_open(&byname, name), 0);
	zkw_reader_close(&r);
	/* Wait for the retirement: the futex gets its last wake. */
	rc = zkw_reader_wait(&byname, zkw_reader_generation(&byname), WAIT_MS);
	while (rc == 1)
		rc = zkw_reader_wait(&byname, zkw_reader_generation(&byname), WAIT_MS);
	assert_int_equal(rc, -ESTALE);
	assert_true(proc_wait_output(broker, PROC_STDERR, "watch removed", WAIT_MS));
	{
		zkw_reader again;

		assert_int_equal(zkw_reader_open(&again, name), -ENOENT);
	}
	zkw_reader_close(&byname);
	a = itest_ask_at(sock, "LIST\n", 1);
	itest_assert_contains(a, "OK count=0");
	free(a);
	stop_broker();
}

/* Hostile and clumsy peers: unknown words, bad paths, an over-long line
 * (the connection is closed), a peer that sends half a line and stalls
 * while another is served. */
static void test_protocol_errors(void **state)
{
	char *a;
	int slow, fd;
	char big[ZKW_PROTO_LINE_MAX + 64];

	(void)state;
	start_broker(NULL);
	a = itest_ask_at(sock, "FROB\n", 1);
	itest_assert_contains(a, "ERR usage unknown request FROB");
	free(a);
	a = itest_ask_at(sock, "SUBSCRIBE relative/path\n", 1);
	itest_assert_contains(a, "ERR path");
	free(a);
	a = itest_ask_at(sock, "SUBSCRIBE /a/../b\n", 1);
	itest_assert_contains(a, "ERR path");
	free(a);
	a = itest_ask_at(sock, "SUBSCRIBE /x wobble\n", 1);
	itest_assert_contains(a, "ERR usage unknown word wobble");
	free(a);
	a = itest_ask_at(sock, "HELLO 9\n", 1);
	itest_assert_contains(a, "ERR usage protocol 9 not supported");
	free(a);
	a = itest_ask_at(sock, "HELLO 1\n", 1);
	itest_assert_contains(a, "OK proto=1");
	free(a);
	slow = itest_connect(sock);
	assert_true(slow >= 0);
	assert_int_equal(send(slow, "STAT", 4, 0), 4);
	a = itest_ask_at(sock, "STATUS\n", 1); /* served while the other stalls */
	itest_assert_contains(a, "OK proto=1");
	free(a);
	close(slow);
	memset(big, 'a', sizeof(big));
	fd = itest_connect(sock);
	assert_true(fd >= 0);
	if (send(fd, big, sizeof(big), MSG_NOSIGNAL) < 0) {
		/* the broker may close first */
	}
	a = itest_ask(fd, NULL, 1);
	itest_assert_contains(a, "ERR usage request longer than");
	free(a);
	close(fd);
	stop_broker();
}

/* A worker in another mount and IPC namespace, with its own empty
 * /dev/shm, sees only the socket file: the descriptor brings the segment. */
static int child_in_container(void *arg)
{
	const char *path = arg;
	zkw_reader r, byname;
	char buf[ZKW_SHM_NAME_MAX + 1];
	zkw_snapshot m;
	ssize_t n;
	int rc;

	if (unshare(CLONE_NEWNS | CLONE_NEWIPC) < 0)
		return 77;
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=1m") < 0)
		return 78;
	rc = zkw_reader_subscribe(&r, sock, path, 0);
	if (rc) {
		fprintf(stderr, "subscribe in the container: %s (%s)\n", strerror(-rc), r.why);
		return 1;
	}
	n = zkw_reader_read(&r, &m, buf, sizeof(buf) - 1);
	if (n < 0 || !m.valid)
		return 2;
	buf[n] = '\0';
	if (strcmp(buf, "boxed") != 0)
		return 3;
	/* By name there is nothing here. */
	if (zkw_shm_default_name(buf, sizeof(buf), path) < 0 || zkw_reader_open(&byname, buf) != -ENOENT)
		return 4;
	zkw_reader_close(&r);
	return 0;
}

static void test_other_namespace_gets_the_descriptor(void **state)
{
	char path[128];
	int status;

	(void)state;
	itest_node(path, sizeof(path), "boxed");
	itest_put(path, "boxed");
	start_broker(NULL);
	status = as_user(0, child_in_container, path);
	if (WIFEXITED(status) && (WEXITSTATUS(status) == 77 || WEXITSTATUS(status) == 78)) {
		stop_broker();
		skip();
	}
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	stop_broker();
}

/* A socket file left by a killed broker is taken over; one a live broker
 * listens on is refused with a clear error. */
static void test_stale_and_busy_socket(void **state)
{
	char *err = NULL;
	const char *argv[] = {"-z", hosts, "--socket", sock, NULL};
	proc_options o = {.env = (const char *[]){"ZKW_SOCKET=none", NULL}};
	int rc;

	(void)state;
	start_broker(NULL);
	rc = proc_run("zkw-broker", argv, &o, WAIT_MS, NULL, &err);
	assert_int_equal(rc, 1);
	assert_non_null(strstr(err, "another broker listens there"));
	free(err);
	proc_signal(broker, SIGKILL);
	proc_wait(broker, WAIT_MS);
	proc_free(broker);
	broker = NULL;
	assert_int_equal(access(sock, F_OK), 0); /* left behind */
	start_broker(NULL);
	stop_broker();
	assert_int_equal(access(sock, F_OK), -1); /* removed at a clean stop */
}

/* Receive one answer line with its descriptors from a raw connection. */
static int recv_with_fds(int fd, char *line, size_t cap, int fds[2])
{
	int n = 0, rc;
	struct timespec dl;

	zkw__deadline(&dl, WAIT_MS);
	rc = zkw__proto_answer(fd, line, cap, fds, 2, &n, &dl);
	if (rc)
		fail_msg("no answer: %s", strerror(-rc));
	return n;
}

/* A subscriber is an attacker too: the segment it gets is read-only, its
 * acknowledgement page cannot be shrunk or grown under the broker, garbage
 * in it is only reported, and a peer that never reads its answers stalls
 * nobody else. */
static void test_hostile_subscriber(void **state)
{
	char path[128], line[ZKW_PROTO_LINE_MAX], req[400], name[300], *a;
	int fd, fds[2], n, flood;
	struct zkw_ack *page;

	(void)state;
	itest_node(path, sizeof(path), "hostile");
	itest_put(path, "data");
	start_broker(NULL);
	fd = itest_connect(sock);
	assert_true(fd >= 0);
	snprintf(req, sizeof(req), "SUBSCRIBE %s\n", path);
	assert_int_equal(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
	n = recv_with_fds(fd, line, sizeof(line), fds);
	assert_int_equal(n, 2);
	assert_true(zkw__proto_value(line, "shm", name, sizeof(name)));
	/* The segment: read-only, for good. */
	assert_int_equal(fcntl(fds[0], F_GETFL) & O_ACCMODE, O_RDONLY);
	assert_int_equal(write(fds[0], "x", 1), -1);
	assert_int_equal(ftruncate(fds[0], 0), -1);
	/* The page: sealed against shrinking and growing. */
	assert_int_equal(ftruncate(fds[1], 0), -1);
	assert_int_equal(errno, EPERM);
	assert_int_equal(ftruncate(fds[1], 1 << 20), -1);
	assert_int_equal(errno, EPERM);
	page = mmap(NULL, ZKW_ACK_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fds[1], 0);
	assert_true(page != MAP_FAILED);
	page->generation = 0xdeadbeefcafef00dull; /* garbage: reported, never trusted */
	page->taken_ns = UINT64_MAX;
	snprintf(req, sizeof(req), "READERS %s\n", name);
	a = itest_ask_at(sock, req, 2);
	snprintf(line, sizeof(line), "generation=%llu at=%llu", 0xdeadbeefcafef00dull, (unsigned long long)UINT64_MAX);
	itest_assert_contains(a, line);
	free(a);
	munmap(page, ZKW_ACK_PAGE_SIZE);
	close(fds[0]);
	close(fds[1]);

	/* A peer that asks and never reads: the broker queues, the others go on. */
	flood = itest_connect(sock);
	assert_true(flood >= 0);
	for (int i = 0; i < 2000; i++)
		if (send(flood, "STATUS\n", 7, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
			break;
	a = itest_ask_at(sock, "STATUS\n", 1);
	itest_assert_contains(a, "OK proto=1");
	free(a);
	close(flood);
	close(fd);
	a = itest_ask_at(sock, "STATUS\n", 1);
	itest_assert_contains(a, "connections=1 "); /* only this one */
	free(a);
	stop_broker();
}

/* --max-connections: one more is told why and closed. */
static void test_connection_cap(void **state)
{
	int fds[3];
	char *a;

	(void)state;
	start_broker("--max-connections", "2", NULL);
	fds[0] = itest_connect(sock);
	fds[1] = itest_connect(sock);
	assert_true(fds[0] >= 0 && fds[1] >= 0);
	a = itest_ask(fds[0], "HELLO\n", 1); /* both accepted by now */
	free(a);
	a = itest_ask(fds[1], "HELLO\n", 1);
	free(a);
	fds[2] = itest_connect(sock);
	assert_true(fds[2] >= 0);
	a = itest_ask(fds[2], NULL, 1);
	itest_assert_contains(a, "ERR limit 2 connections open (--max-connections 2)");
	free(a);
	for (int i = 0; i < 3; i++)
		close(fds[i]);
	stop_broker();
}

/* An operator's way in: socat, by hand, one line each way. */
static void test_by_hand_with_socat(void **state)
{
	char path[128], addr[160], *out = NULL, *a;
	const char *argv[] = {"-t", "5", "-", addr, NULL};
	proc_options o = {.stdin_data = "LIST\n", .stdin_len = 5, .literal_path = true};
	zkw_reader r;

	(void)state;
	if (access("/usr/bin/socat", X_OK) != 0)
		fail_msg("socat is missing: tools/deps.sh installs it");
	itest_node(path, sizeof(path), "byhand");
	itest_put(path, "v");
	start_broker(NULL);
	assert_int_equal(zkw_reader_subscribe(&r, sock, path, 0), 0);
	snprintf(addr, sizeof(addr), "UNIX-CONNECT:%s", sock);
	assert_int_equal(proc_run("/usr/bin/socat", argv, &o, WAIT_MS, &out, NULL), 0);
	itest_assert_contains(out, "OK count=1\n");
	a = strstr(out, "path=");
	assert_non_null(a);
	itest_assert_contains(a, path);
	free(out);
	zkw_reader_close(&r);
	stop_broker();
}

/* "Has every process taken version N?": zkw-inspect NAME --readers lists
 * each subscriber with the generation it took; one that has not read the
 * newest yet shows as behind. */
static void test_inspect_readers(void **state)
{
	char path[128], shm[64], pidtxt[32], want[96], *out = NULL;
	const char *argv[] = {shm, "--readers", "--socket", sock, NULL};
	const char *jargv[] = {shm, "--readers", "--json", "--socket", sock, NULL};
	zkw_reader r;
	zkw_snapshot m;
	char buf[64];

	(void)state;
	itest_node(path, sizeof(path), "acked");
	itest_put(path, "v1");
	snprintf(shm, sizeof(shm), "zkwts.%d.acked", (int)getpid());
	start_broker("-f", path, "--shm", shm, NULL);
	assert_int_equal(zkw_reader_subscribe(&r, sock, path, 0), 0);
	await_content(&r, "v1");
	snprintf(pidtxt, sizeof(pidtxt), "%d", (int)getpid());
	assert_int_equal(proc_run("zkw-inspect", argv, NULL, WAIT_MS, &out, NULL), 0);
	itest_assert_contains(out, "1 subscriber");
	itest_assert_contains(out, pidtxt);
	itest_assert_contains(out, "test_socket");
	assert_true(strstr(out, "never") == NULL);
	assert_true(strstr(out, "(behind)") == NULL);
	free(out);
	/* A new generation not read yet: behind. */
	m.generation = zkw_reader_generation(&r);
	itest_put(path, "v2");
	assert_int_equal(zkw_reader_wait(&r, m.generation, WAIT_MS), 1);
	assert_int_equal(proc_run("zkw-inspect", argv, NULL, WAIT_MS, &out, NULL), 0);
	itest_assert_contains(out, "(behind)");
	free(out);
	assert_true(zkw_reader_read(&r, &m, buf, sizeof(buf)) >= 0);
	assert_int_equal(proc_run("zkw-inspect", jargv, NULL, WAIT_MS, &out, NULL), 0);
	snprintf(want, sizeof(want), "\"pid\":%s,", pidtxt);
	itest_assert_contains(out, want);
	snprintf(want, sizeof(want), "\"generation\":%llu,", (unsigned long long)m.generation);
	itest_assert_contains(out, want);
	itest_assert_contains(out, "\"current\":true");
	free(out);
	zkw_reader_close(&r);
	stop_broker();
	zkw_writer_remove(shm);
}

/* A reconcile that finds nothing changed publishes no generation and wakes
 * nobody, but the confirmation time moves, for one load. There is no event
 * for it (that is the point): polled, bounded. */
static void test_reconcile_confirms_without_a_generation(void **state)
{
	char path[128];
	zkw_reader r;
	uint64_t gen, confirmed;
	bool moved = false;

	(void)state;
	itest_node(path, sizeof(path), "quiet");
	itest_put(path, "still");
	start_broker("--reconcile", "1", NULL);
	assert_int_equal(zkw_reader_subscribe(&r, sock, path, 0), 0);
	await_content(&r, "still");
	gen = zkw_reader_generation(&r);
	confirmed = zkw_reader_confirmed_ns(&r);
	assert_true(confirmed > 0);
	for (int i = 0; i < 200 && !moved; i++) {
		usleep(50 * 1000);
		moved = zkw_reader_confirmed_ns(&r) > confirmed;
	}
	if (!moved)
		fail_msg("confirmed-at never moved in 10 s with --reconcile 1");
	assert_int_equal(zkw_reader_generation(&r), gen);
	/* Nobody was woken: a wait on the generation times out. */
	assert_int_equal(zkw_reader_wait(&r, gen, 300), 0);
	zkw_reader_close(&r);
	stop_broker();
}

/* The open file limit: a broker that may not raise it says at start how
 * many watches it leaves room for and refuses the next subscription by
 * name; -f watches that cannot fit stop it at start. Run as nobody (root
 * may raise its hard limit) under prlimit. */
static void test_open_file_limit(void **state)
{
	char dir[128], nsock[160], broker_path[256], path[128], line[ZKW_PROTO_LINE_MAX], req[300];
	const char *argv[300];
	proc_options o = {.literal_path = true};
	int n = 0, fd, fds[2], got, refused = -1;
	char *err = NULL;
	proc *p;

	(void)state;
	if (access("/usr/bin/setpriv", X_OK) || access("/usr/bin/prlimit", X_OK))
		fail_msg("setpriv and prlimit (util-linux) are needed");
	snprintf(dir, sizeof(dir), "%s/nobody", sockdir);
	assert_int_equal(mkdir(dir, 0700) == 0 || errno == EEXIST, 1);
	assert_int_equal(chown(dir, NOBODY, NOBODY), 0);
	snprintf(nsock, sizeof(nsock), "%s/b.sock", dir);
	proc_tool_path("zkw-broker", broker_path, sizeof(broker_path));
	argv[n++] = "--reuid=65534";
	argv[n++] = "--regid=65534";
	argv[n++] = "--clear-groups";
	argv[n++] = "/usr/bin/prlimit";
	argv[n++] = "--nofile=200:200";
	argv[n++] = broker_path;
	argv[n++] = "-z";
	argv[n++] = hosts;
	argv[n++] = "--socket";
	argv[n++] = nsock;
	argv[n++] = "--max-connections";
	argv[n++] = "8";
	argv[n] = NULL;
	/* 200 descriptors, 8 connections and 64 spare: room for 64 watches. */
	p = proc_spawn_opts("/usr/bin/setpriv", argv, &o);
	assert_non_null(p);
	if (!proc_wait_output(p, PROC_STDERR, "listening", WAIT_MS)) {
		proc_dump(p, "no 'listening' line");
		fail_msg("broker as nobody did not start");
	}
	assert_true(proc_count(p, PROC_STDERR, "leaves room for 64 watches") == 1);
	fd = itest_connect(nsock);
	assert_true(fd >= 0);
	for (int i = 0; i < 70 && refused < 0; i++) {
		snprintf(path, sizeof(path), "%s/fd/n%d", root, i);
		snprintf(req, sizeof(req), "SUBSCRIBE %s\n", path);
		assert_int_equal(send(fd, req, strlen(req), 0), (ssize_t)strlen(req));
		got = recv_with_fds(fd, line, sizeof(line), fds);
		for (int k = 0; k < got; k++)
			close(fds[k]);
		if (strncmp(line, "ERR", 3) == 0)
			refused = i;
	}
	if (refused != 64)
		fail_msg("watch %d refused (want the 65th, index 64): %s", refused, line);
	itest_assert_contains(line, "ERR limit");
	itest_assert_contains(line, "open file limit (200)");
	close(fd);
	proc_signal(p, SIGTERM);
	assert_int_equal(proc_wait(p, WAIT_MS), 0);
	proc_free(p);

	/* 100 -f watches need 200 + 72 descriptors: no start, and why. */
	n = 12;
	for (int i = 0; i < 100; i++) {
		static char paths[100][96];

		snprintf(paths[i], sizeof(paths[i]), "%s/fd/f%d", root, i);
		argv[n++] = "-f";
		argv[n++] = paths[i];
	}
	argv[n++] = "--no-valid-init";
	argv[n] = NULL;
	assert_int_equal(proc_run("/usr/bin/setpriv", argv, &o, WAIT_MS, NULL, &err), 1);
	itest_assert_contains(err, "too low for 100 watches");
	itest_assert_contains(err, "LimitNOFILE=");
	free(err);
	unlink(nsock);
	rmdir(dir);
}

/* The C example as a subscriber: -f PATH --broker, event mode, each change
 * once, and it follows the segment when it grows and moves (a retirement:
 * it subscribes again). */
static void test_example_subscribes(void **state)
{
	char path[128], big[40000];
	const char *argv[] = {"-f", path, "--broker", "--socket", sock, "--event", NULL};
	proc *ex;

	(void)state;
	itest_node(path, sizeof(path), "example");
	itest_put(path, "first");
	start_broker(NULL);
	ex = proc_spawn("zkw-example", argv);
	assert_non_null(ex);
	assert_true(proc_wait_output(ex, PROC_STDOUT, "Your file contents: first", WAIT_MS));
	assert_true(proc_wait_output(ex, PROC_STDOUT, "Use a keyboard interrupt", WAIT_MS));
	itest_put(path, "second");
	assert_true(proc_wait_output(ex, PROC_STDOUT, "Your file contents: second", WAIT_MS));
	memset(big, 'g', sizeof(big) - 1); /* more than the 8 KiB a segment starts with */
	big[sizeof(big) - 1] = '\0';
	itest_put(path, big);
	assert_true(proc_wait_output(ex, PROC_STDOUT, "Your file contents: ggggg", WAIT_MS));
	itest_put(path, "third");
	assert_true(proc_wait_output(ex, PROC_STDOUT, "Your file contents: third", WAIT_MS));
	assert_int_equal(proc_count(ex, PROC_STDOUT, "Your file contents: second"), 1);
	assert_int_equal(proc_count(ex, PROC_STDOUT, "Your file contents: ggggg"), 1);
	proc_signal(ex, SIGINT);
	assert_int_equal(proc_wait(ex, WAIT_MS), 0);
	proc_free(ex);
	stop_broker();
}

static int setup_each(void **state)
{
	static int n;

	(void)state;
	snprintf(sock, sizeof(sock), "%s/b%d.sock", sockdir, n++);
	return 0;
}

static int teardown_each(void **state)
{
	(void)state;
	if (broker) {
		proc_signal(broker, SIGKILL);
		proc_wait(broker, WAIT_MS);
		proc_free(broker);
		broker = NULL;
	}
	unlink(sock);
	return 0;
}

static int setup(void **state)
{
	(void)state;
	zk = itest_zk_start(&(struct itest_config){.prefix = "zkwts", .wait_ms = WAIT_MS});
	if (!zk)
		return -1;
	hosts = zkh_hosts(zk);
	root = itest_root();
	/* Not below the run dir: subscribers of another uid reach the sockets. */
	snprintf(sockdir, sizeof(sockdir), "/tmp/zkwts.%d", (int)getpid());
	if (mkdir(sockdir, 0755) < 0 && errno != EEXIST)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	itest_zk_stop();
	rmdir(sockdir);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_subscribe_on_demand, setup_each, teardown_each),
	        cmocka_unit_test_setup_teardown(test_subscribe_shares_a_configured_watch, setup_each, teardown_each),
	        cmocka_unit_test_setup_teardown(test_subscribe_missing_then_created_and_pointer, setup_each,
	                                        teardown_each),
	        cmocka_unit_test_setup_teardown(test_policy_by_uid, setup_each, teardown_each),
	        cmocka_unit_test_setup_teardown(test_default_policy_and_caps, setup_each, teardown_each),
	        cmocka_unit_test_setup_teardown(test_linger_then_retired, setup_each, teardown_each),
	        cmocka_unit_test_setup_teardown(test_protocol_errors, setup_each, teardown_each),
	        cmocka_unit_test_setup_teardown(test_other_namespace_gets_the_descriptor, setup_each, teardown_each),
	        cmocka_unit_test_setup_teardown(test_stale_and_busy_socket, setup_each, teardown_each),
	        cmocka_unit_test_setup_teardown(test_hostile_subscriber, setup_each, teardown_each),
	        cmocka_unit_test_setup_teardown(test_connection_cap, setup_each, teardown_each),
	        cmocka_unit_test_setup_teardown(test_by_hand_with_socat, setup_each, teardown_each),
	        cmocka_unit_test_setup_teardown(test_inspect_readers, setup_each, teardown_each),
	        cmocka_unit_test_setup_teardown(test_reconcile_confirms_without_a_generation, setup_each,
	                                        teardown_each),
	        cmocka_unit_test_setup_teardown(test_open_file_limit, setup_each, teardown_each),
	        cmocka_unit_test_setup_teardown(test_example_subscribes, setup_each, teardown_each),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
