/* SPDX-License-Identifier: Apache-2.0 */
/* test_auth.c - ZooKeeper authentication and ACLs (docs/design.md,
 * "Authentication and ACLs") against a real server (zkh): a digest-protected
 * node read by zkw-broker with, without and with wrong credentials; the
 * credentials file refused unless private; credentials the server refuses
 * backing off instead of hammering it; the ACLs of what --ensure and
 * zkw-push create, read back with zoo_get_acl; the watch library
 * authenticating every new session before its first read; and no secret in
 * any output.
 *
 * Waits are on events (a broker's stderr line, a segment's futex, a child's
 * exit, an on_state call); the one sleep shows that a broker whose
 * credentials are refused stays quiet for a while. Nodes live under
 * /zkwta<pid>, files in a private directory, segments are named after the
 * pid and unlinked.
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <zookeeper/zookeeper.h>

#include <zkw/client.h>
#include <zkw/watcher.h>

#include "proc.h"
#include "zkh.h"
#include "zkw_clock.h"
#include "zkw_zk.h"
#include "publish/writer.h"
#include "zk/internal.h"

#define WAIT_MS 20000
#define USER    "zkwta"
/* Secrets no output may ever show. */
#define PASSWORD "pw-Zq7-right-secret"
#define WRONG    "pw-Xk2-wrong-secret"
#define REFUSED  "pw-Rv9-refused-secret"

static zkh_cluster *zk;
static const char *hosts;
static char root[64];
static char dir[256];
static zhandle_t *admin; /* authenticated as USER:PASSWORD */
static char right_file[512], wrong_file[512], refused_file[512];

#define MAX_SEGMENTS 16
static char segments[MAX_SEGMENTS][64];
static int nsegments;

/* ---- helpers ------------------------------------------------------------ */

static const char *seg_name(const char *tag)
{
	assert_true(nsegments < MAX_SEGMENTS);
	snprintf(segments[nsegments], sizeof(segments[0]), "zkwta.%d.%s", (int)getpid(), tag);
	zkw_writer_remove(segments[nsegments]);
	return segments[nsegments++];
}

static const char *node(char *buf, size_t cap, const char *rel)
{
	snprintf(buf, cap, "%s/%s", root, rel);
	return buf;
}

/* A file of ours in dir with the given content and mode; its path in buf. */
static const char *write_file(char *buf, size_t cap, const char *name, const char *content, mode_t mode)
{
	FILE *f;

	snprintf(buf, cap, "%s/%s", dir, name);
	unlink(buf);
	f = fopen(buf, "w");
	assert_non_null(f);
	assert_int_equal(fputs(content, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(buf, mode), 0);
	return buf;
}

/* No secret of this test in text (an output of a tool). */
static void assert_no_secret(const char *what, const char *text)
{
	static const char *const secrets[] = {PASSWORD, WRONG, REFUSED};

	for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
		if (strstr(text, secrets[i]))
			fail_msg("%s shows a secret (%s):\n%s", what, secrets[i], text);
}

static void assert_proc_no_secret(proc *p, const char *what)
{
	char *err = proc_output(p, PROC_STDERR, NULL), *out = proc_output(p, PROC_STDOUT, NULL);
	char text[65536];

	snprintf(text, sizeof(text), "%s\n%s", err ? err : "", out ? out : "");
	free(err);
	free(out);
	assert_no_secret(what, text);
}

static zhandle_t *connect_as(const char *secret)
{
	zkw_session_credential cred = {"digest", secret};
	char why[256];
	zhandle_t *zh;

	if (zkw_zk_connect(&zh, hosts, WAIT_MS, 10000, why, sizeof(why)))
		fail_msg("%s", why);
	if (zkw_zk_auth(zh, &cred, 1, WAIT_MS, why, sizeof(why)))
		fail_msg("%s", why);
	return zh;
}

/* A node only USER may touch (creator all), holding content. */
static void create_protected(const char *path, const char *content)
{
	char why[256];

	zkw_zk_delete_tree(admin, path, NULL, 0);
	if (zkw_zk_put_acl(admin, path, content, (int)strlen(content), &ZOO_CREATOR_ALL_ACL, NULL, why,
	                   sizeof(why)))
		fail_msg("create %s: %s", path, why);
}

/* The ACL of path as text, entries sorted: "digest:zkwta:HASH:cdrwa world:anyone:r". */
static void acl_text(const char *path, char *out, size_t cap)
{
	struct ACL_vector acl = {0};
	struct Stat st;
	char entries[8][256];
	int rc = zoo_get_acl(admin, path, &acl, &st);

	if (rc != ZOK)
		fail_msg("zoo_get_acl %s: %s", path, zerror(rc));
	assert_true(acl.count <= 8);
	for (int i = 0; i < acl.count; i++) {
		char perms[6];
		int k = 0;

		if (acl.data[i].perms & ZOO_PERM_CREATE)
			perms[k++] = 'c';
		if (acl.data[i].perms & ZOO_PERM_DELETE)
			perms[k++] = 'd';
		if (acl.data[i].perms & ZOO_PERM_READ)
			perms[k++] = 'r';
		if (acl.data[i].perms & ZOO_PERM_WRITE)
			perms[k++] = 'w';
		if (acl.data[i].perms & ZOO_PERM_ADMIN)
			perms[k++] = 'a';
		perms[k] = '\0';
		snprintf(entries[i], sizeof(entries[i]), "%s:%s:%s", acl.data[i].id.scheme, acl.data[i].id.id,
		         perms);
	}
	qsort(entries, (size_t)acl.count, sizeof(entries[0]), (int (*)(const void *, const void *))strcmp);
	out[0] = '\0';
	for (int i = 0; i < acl.count; i++)
		snprintf(out + strlen(out), cap - strlen(out), "%s%s", i ? " " : "", entries[i]);
	deallocate_ACL_vector(&acl);
}

/* What ZooKeeper stores for "auth::cdrwa" when USER:PASSWORD creates a
 * node: "digest:zkwta:HASH:cdrwa" (the server computes HASH). */
static void creator_entry(char *out, size_t cap)
{
	char path[128];

	node(path, sizeof(path), "reference");
	create_protected(path, "");
	acl_text(path, out, cap);
	assert_non_null(strstr(out, "digest:" USER ":"));
}

/* The ACL ZKW_ACL_DEFAULT_AUTH gives, as acl_text writes it. */
static void default_auth_acl(char *out, size_t cap)
{
	char creator[256];

	creator_entry(creator, sizeof(creator));
	snprintf(out, cap, "%s world:anyone:r", creator);
}

#define broker_spawn(...) assert_spawned(proc_spawnl("zkw-broker", __VA_ARGS__))

static proc *assert_spawned(proc *p)
{
	assert_non_null(p);
	return p;
}

static void stop_broker(proc *b, const char *what)
{
	assert_int_equal(proc_signal(b, SIGTERM), 0);
	assert_int_equal(proc_wait(b, WAIT_MS), 0);
	assert_proc_no_secret(b, what);
	proc_free(b);
}

/* Wait until segment shm (of broker b) is valid with exactly content
 * (valid) or invalid with an error starting with text. */
static void await_segment(const char *shm, proc *b, bool valid, const char *text)
{
	char line[128], buf[4096];
	int64_t deadline = zkw_clock_mono_ms() + WAIT_MS;
	zkw_snapshot m = {0};
	ssize_t len = -1;
	zkw_reader r;
	int rc;

	snprintf(line, sizeof(line), "into segment /%s ", shm);
	assert_true(proc_wait_output(b, PROC_STDERR, line, WAIT_MS));
	rc = zkw_reader_open(&r, shm);
	if (rc)
		fail_msg("zkw_reader_open(%s): %s", shm, r.why);
	for (;;) {
		int64_t left;

		do
			len = zkw_reader_read(&r, &m, buf, sizeof(buf) - 1);
		while (len == -EAGAIN);
		if (len >= 0 && m.generation) {
			buf[len] = '\0';
			if (valid && m.valid && strcmp(buf, text) == 0)
				break;
			if (!valid && !m.valid && strncmp(m.error, text, strlen(text)) == 0)
				break;
		}
		left = deadline - zkw_clock_mono_ms();
		if (left <= 0) {
			proc_dump(b, "broker");
			zkw_reader_close(&r);
			fail_msg("segment %s never %s \"%s\"; last: valid=%d error=\"%s\" content=\"%s\"",
			         shm, valid ? "held" : "failed with", text, m.valid, m.error,
			         len >= 0 ? buf : "");
		}
		zkw_reader_wait(&r, len >= 0 ? m.generation : 0, (int)left);
	}
	assert_no_secret("the segment's error", m.error);
	zkw_reader_close(&r);
}

struct run {
	int status;
	char *out, *err;
};

static struct run run_tool(const char *tool, const char *arg, ...) __attribute__((sentinel));
static struct run run_tool(const char *tool, const char *arg, ...)
{
	const char *argv[32];
	struct run r;
	va_list ap;

	va_start(ap, arg);
	proc_collect_args(argv, sizeof(argv) / sizeof(argv[0]), arg, ap);
	va_end(ap);
	r.status = proc_run(tool, argv, NULL, WAIT_MS, &r.out, &r.err);
	assert_non_null(r.out);
	assert_non_null(r.err);
	assert_no_secret(tool, r.out);
	assert_no_secret(tool, r.err);
	return r;
}

/* The run exited with status and its stderr holds every needle. */
static void expect_run(struct run *r, int status, const char *needle1, const char *needle2)
{
	if (r->status != status || (needle1 && !strstr(r->err, needle1)) ||
	    (needle2 && !strstr(r->err, needle2))) {
		char msg[8192];

		snprintf(msg, sizeof(msg), "exit %d (want %d), want \"%s\" and \"%s\" in stderr:\n%s%s",
		         r->status, status, needle1 ? needle1 : "", needle2 ? needle2 : "", r->err, r->out);
		free(r->out);
		free(r->err);
		fail_msg("%s", msg);
	}
	free(r->out);
	free(r->err);
}

/* ---- fixtures ------------------------------------------------------------- */

static int group_setup(void **state)
{
	(void)state;
	snprintf(root, sizeof(root), "/zkwta%d", (int)getpid());
	snprintf(dir, sizeof(dir), "%s/zkwta.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(dir))
		return -1;
	zk = zkh_start(1);
	if (!zk)
		return -1;
	hosts = zkh_hosts(zk);
	admin = connect_as(USER ":" PASSWORD);
	if (zkh_set(hosts, root, "", 0) != ZOK)
		return -1;
	write_file(right_file, sizeof(right_file), "right.auth",
	           "# the test's user\n\ndigest " USER ":" PASSWORD "  \n", 0600);
	write_file(wrong_file, sizeof(wrong_file), "wrong.auth", "digest " USER ":" WRONG "\n", 0600);
	/* A scheme the server has no provider for: refused as a wrong
	 * password is by a provider that checks one. */
	write_file(refused_file, sizeof(refused_file), "refused.auth", "nosuchscheme " USER ":" REFUSED "\n",
	           0600);
	return 0;
}

static int group_teardown(void **state)
{
	char cmd[512];

	(void)state;
	proc_kill_all();
	for (int i = 0; i < nsegments; i++)
		zkw_writer_remove(segments[i]);
	if (admin) {
		zkw_zk_delete_tree(admin, root, NULL, 0);
		zkw_zk_close(admin);
	}
	zkh_stop(zk);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return 0;
}

static int test_teardown(void **state)
{
	(void)state;
	proc_kill_all();
	for (int i = 0; i < nsegments; i++)
		zkw_writer_remove(segments[i]);
	nsegments = 0;
	return 0;
}

/* ---- the broker reads a protected node with the right credentials only ------ */

static void test_broker_reads_protected_node_with_credentials(void **state)
{
	const char *shm_none = seg_name("none"), *shm_right = seg_name("right"),
	           *shm_wrong = seg_name("wrong");
	char path[128], want[256];
	proc *none, *right, *wrong;

	(void)state;
	node(path, sizeof(path), "protected");
	create_protected(path, "for " USER " only");
	none = broker_spawn("-z", hosts, "-f", path, "--shm", shm_none, NULL);
	right = broker_spawn("-z", hosts, "-f", path, "--shm", shm_right, "--auth-file", right_file, NULL);
	wrong = broker_spawn("-z", hosts, "-f", path, "--shm", shm_wrong, "--auth-file", wrong_file, NULL);

	snprintf(want, sizeof(want), ZKW_ERR_NO_AUTH ": %s", path);
	await_segment(shm_none, none, false, want);
	await_segment(shm_right, right, true, "for " USER " only");
	/* Digest credentials are never refused: a wrong password is just
	 * another identity, which the ACL does not name. */
	await_segment(shm_wrong, wrong, false, want);

	/* Changes reach the authenticated broker. */
	assert_int_equal(zoo_set(admin, path, "changed", 7, -1), ZOK);
	await_segment(shm_right, right, true, "changed");

	stop_broker(none, "broker without credentials");
	stop_broker(right, "broker with the right credentials");
	stop_broker(wrong, "broker with a wrong password");
}

/* ---- the credentials file must be private ------------------------------- */

/* The broker (checking its configuration) and zkw-push refuse file with a
 * reason holding every needle; neither shows a secret. */
static void expect_refused(const char *file, const char *needle1, const char *needle2)
{
	struct run r =
	        run_tool("zkw-broker", "-z", hosts, "-f", "/x", "--auth-file", file, "--check-config", NULL);

	expect_run(&r, 2, needle1, needle2);
	r = run_tool("zkw-push", "-z", hosts, "--wipe", "--parent", root, "-i", "x", "--auth-file", file,
	             NULL);
	expect_run(&r, 1, needle1, needle2);
}

static void test_credentials_file_must_be_private(void **state)
{
	char file[512], link[600], config[512], text[2048];
	struct run r;

	(void)state;
	write_file(file, sizeof(file), "open.auth", "digest " USER ":" PASSWORD "\n", 0644);
	expect_refused(file, file, "mode 0644");
	assert_int_equal(chmod(file, 0640), 0);
	expect_refused(file, file, "mode 0640");
	assert_int_equal(chmod(file, 0700), 0);
	expect_refused(file, file, "mode 0700");

	/* 0600 and 0400 are fine: --check-config prints the file, never what it holds. */
	assert_int_equal(chmod(file, 0400), 0);
	r = run_tool("zkw-broker", "-z", hosts, "-f", "/x", "--auth-file", file, "--check-config", NULL);
	snprintf(text, sizeof(text), "auth-file = %s\n", file);
	if (r.status != 0 || !strstr(r.out, text) || !strstr(r.out, ZKW_ACL_DEFAULT_AUTH))
		fail_msg("a 0400 file: exit %d\n%s%s", r.status, r.out, r.err);
	free(r.out);
	free(r.err);

	/* Another owner: whoever owns it could change the credentials. */
	if (geteuid() == 0) {
		write_file(file, sizeof(file), "theirs.auth", "digest " USER ":" PASSWORD "\n", 0600);
		assert_int_equal(chown(file, 65534, 65534), 0);
		expect_refused(file, file, "owned by uid 65534");
	} else {
		/* A root-owned file: the owner is checked before the mode. */
		expect_refused("/etc/hostname", "/etc/hostname", "owned by uid 0");
	}

	/* A symbolic link (even to a good file), a directory. */
	snprintf(link, sizeof(link), "%s/link.auth", dir);
	unlink(link);
	assert_int_equal(symlink(right_file, link), 0);
	expect_refused(link, link, "symbolic link");
	expect_refused(dir, dir, "not a regular file");

	/* What the file holds: a line is refused by number, never quoted. */
	write_file(file, sizeof(file), "bad.auth",
	           "# ok\ndigest " USER ":" PASSWORD "\ndigest " PASSWORD "\n", 0600);
	expect_refused(file, "line 3", "USER:PASSWORD");
	write_file(file, sizeof(file), "blank.auth", "# nothing\n\n", 0600);
	expect_refused(file, file, "no credential");
	write_file(file, sizeof(file), "acl.auth", "world anyone:" PASSWORD "\n", 0600);
	expect_refused(file, "line 1", "ACL scheme");

	/* In the configuration file too, with its FILE:LINE. */
	write_file(file, sizeof(file), "open2.auth", "digest " USER ":" PASSWORD "\n", 0644);
	snprintf(text, sizeof(text), "[broker]\nzookeeper = %s\nauth-file = %s\n", hosts, file);
	write_file(config, sizeof(config), "broker.conf", text, 0644);
	r = run_tool("zkw-broker", "-c", config, "-f", "/x", "--check-config", NULL);
	snprintf(text, sizeof(text), "%s:3: --auth-file: credentials file %s has mode 0644", config, file);
	expect_run(&r, 2, text, NULL);
}

/* ---- credentials the server refuses: a bounded retry, said once ---------- */

static long connection_requests(void)
{
	char reply[8192];
	const char *p;

	if (zkh_4lw(zk, 0, "mntr", reply, sizeof(reply)) <= 0)
		fail_msg("mntr: no answer");
	p = strstr(reply, "zk_connection_request_count");
	if (!p)
		fail_msg("mntr has no zk_connection_request_count:\n%s", reply);
	return strtol(p + strlen("zk_connection_request_count"), NULL, 10);
}

static void test_refused_credentials_back_off(void **state)
{
	const int window_ms = 5000;
	const char *shm = seg_name("refused");
	char path[128];
	long before, after;
	int64_t t0;
	struct run r;
	proc *b;

	(void)state;
	node(path, sizeof(path), "refused");
	assert_int_equal(zkh_set(hosts, path, "x", 1), ZOK);

	/* With valid init (the default) the broker fails at once, saying why. */
	t0 = zkw_clock_mono_ms();
	r = run_tool("zkw-broker", "-z", hosts, "-f", path, "--shm", shm, "--auth-file", refused_file, NULL);
	assert_true(zkw_clock_mono_ms() - t0 < 8000); /* well within the 10 s init timeout */
	expect_run(&r, 1, "refused the session's credentials (nosuchscheme credentials from ",
	           "authentication failed");

	/* Without, it retries: a new session after waits of at least half the
	 * session timeout (1 s here) doubling to --reconnect-max (2 s), not at
	 * once (the client's AUTH_FAILED used to be taken for an expiry: a new
	 * session as fast as the server refused it). */
	b = broker_spawn("-z", hosts, "-f", path, "--shm", shm, "--auth-file", refused_file,
	                 "--no-valid-init", "--session-timeout", "1000", "--reconnect-max", "2000", NULL);
	assert_true(proc_wait_output(b, PROC_STDERR, "refused the session's credentials", WAIT_MS));
	await_segment(shm, b, false, ZKW_ERR_CONNECTING ": ZooKeeper refused the credentials");
	before = connection_requests();
	usleep((useconds_t)window_ms * 1000); /* shows what does not happen: a storm */
	after = connection_requests();
	/* Waits of >= 500 ms, then >= 1000 ms: at most 1 + 5 in 5 s; a storm
	 * is hundreds. */
	if (after - before > 7) {
		proc_dump(b, "broker");
		fail_msg("%ld sessions in %d ms with refused credentials", after - before, window_ms);
	}
	if (after - before < 2) {
		proc_dump(b, "broker");
		fail_msg("only %ld sessions in %d ms: the broker stopped trying", after - before, window_ms);
	}
	/* Said once, with its cause; the client's own line is not repeated. */
	assert_int_equal(proc_count(b, PROC_STDERR, "refused the session's credentials"), 1);
	assert_int_equal(proc_count(b, PROC_STDERR, "Authentication scheme"), 0);
	assert_false(proc_exited(b, NULL));
	stop_broker(b, "broker with refused credentials");
}

/* ---- the ACL of what --ensure creates ----------------------------------- */

static void test_ensure_acl(void **state)
{
	const char *shm = seg_name("ensure");
	char path[128], parent[128], want[512], got[512], creator[256], acl[512];
	struct run r;
	proc *b;

	(void)state;
	default_auth_acl(want, sizeof(want));

	/* With credentials and no --acl: creator all, world read - the node
	 * and the parents it created. */
	node(parent, sizeof(parent), "ens1");
	node(path, sizeof(path), "ens1/deep/conf");
	b = broker_spawn("-z", hosts, "-f", path, "--ensure", "--shm", shm, "--auth-file", right_file, NULL);
	await_segment(shm, b, true, "");
	stop_broker(b, "broker --ensure with credentials");
	acl_text(path, got, sizeof(got));
	assert_string_equal(got, want);
	acl_text(parent, got, sizeof(got));
	assert_string_equal(got, want);

	/* A chosen ACL, exactly. */
	creator_entry(creator, sizeof(creator)); /* digest:zkwta:HASH:cdrwa */
	*strrchr(creator, ':') = '\0';
	snprintf(acl, sizeof(acl), "%s:cdra, ip:127.0.0.1:r", creator);
	node(path, sizeof(path), "ens2/conf");
	b = broker_spawn("-z", hosts, "-f", path, "--ensure", "--shm", shm, "--auth-file", right_file,
	                 "--acl", acl, NULL);
	await_segment(shm, b, true, "");
	stop_broker(b, "broker --ensure --acl");
	acl_text(path, got, sizeof(got));
	snprintf(want, sizeof(want), "%s:cdra ip:127.0.0.1:r", creator);
	assert_string_equal(got, want);

	/* No credentials, no --acl: the open ACL, and a warning once. */
	node(path, sizeof(path), "ens3/a/conf");
	b = broker_spawn("-z", hosts, "-f", path, "--ensure", "--shm", shm, NULL);
	await_segment(shm, b, true, "");
	assert_int_equal(proc_count(b, PROC_STDERR, "open ACL " ZKW_ACL_DEFAULT_OPEN), 1);
	stop_broker(b, "broker --ensure without credentials");
	acl_text(path, got, sizeof(got));
	assert_string_equal(got, "world:anyone:cdrwa");

	/* Refused at the start: auth without credentials, a bad entry (named,
	 * a digest id's secret part not shown). */
	r = run_tool("zkw-broker", "-z", hosts, "-f", path, "--acl", "auth::cdrwa", NULL);
	expect_run(&r, 2, "--acl", "without --auth-file");
	r = run_tool("zkw-broker", "-z", hosts, "-f", path, "--acl", "world:anyone:rx", NULL);
	expect_run(&r, 2, "world:anyone:rx", "unknown permission 'x'");
	r = run_tool("zkw-broker", "-z", hosts, "-f", path, "--acl", "digest:" USER ":" PASSWORD ":r", NULL);
	expect_run(&r, 2, "base64 SHA-1", "never the password");
	r = run_tool("zkw-broker", "-z", hosts, "-f", path, "--acl", "wrold:anyone:r", NULL);
	expect_run(&r, 2, "unknown scheme 'wrold'", NULL);
}

/* ---- zkw-push: credentials and the ACL of what it creates ---------------- */

static void test_push_credentials_and_acl(void **state)
{
	char file[512], parent[128], path[128], want[512], got[512], creator[256], buf[64];
	int len = sizeof(buf);
	struct run r;

	(void)state;
	default_auth_acl(want, sizeof(want));
	creator_entry(creator, sizeof(creator));
	write_file(file, sizeof(file), "push.txt", "pushed", 0644);

	/* With credentials: creator all + world read, parents too. */
	node(parent, sizeof(parent), "push1/a");
	node(path, sizeof(path), "push1/a/conf");
	r = run_tool("zkw-push", "-z", hosts, "-f", file, "--parent", parent, "-i", "conf", "--auth-file",
	             right_file, NULL);
	expect_run(&r, 0, NULL, NULL);
	acl_text(path, got, sizeof(got));
	assert_string_equal(got, want);
	acl_text(parent, got, sizeof(got));
	assert_string_equal(got, want);
	assert_int_equal(zkh_get(hosts, path, buf, &len), ZOK); /* world read */

	/* Nobody else may write it; the wrong password neither, saying why. */
	r = run_tool("zkw-push", "-z", hosts, "-f", file, "--parent", parent, "-i", "conf", NULL);
	expect_run(&r, 1, "cannot write", "not authenticated");
	r = run_tool("zkw-push", "-z", hosts, "-f", file, "--parent", parent, "-i", "conf", "--auth-file",
	             wrong_file, NULL);
	expect_run(&r, 1, "cannot write", "not authenticated");
	r = run_tool("zkw-push", "-z", hosts, "--wipe", "--parent", parent, "-i", "conf", "--auth-file",
	             right_file, NULL);
	expect_run(&r, 0, NULL, NULL);

	/* A chosen ACL: only the creator, not even reading for the world. */
	node(parent, sizeof(parent), "push2");
	node(path, sizeof(path), "push2/conf");
	r = run_tool("zkw-push", "-z", hosts, "-f", file, "--parent", parent, "-i", "conf", "--auth-file",
	             right_file, "--acl", "auth::cdrwa", NULL);
	expect_run(&r, 0, NULL, NULL);
	acl_text(path, got, sizeof(got));
	assert_string_equal(got, creator);
	len = sizeof(buf);
	assert_int_equal(zkh_get(hosts, path, buf, &len), ZNOAUTH);

	/* No credentials: the open ACL, with a warning. */
	node(parent, sizeof(parent), "push3");
	node(path, sizeof(path), "push3/conf");
	r = run_tool("zkw-push", "-z", hosts, "-f", file, "--parent", parent, "-i", "conf", NULL);
	expect_run(&r, 0, "warning: created", "open ACL " ZKW_ACL_DEFAULT_OPEN);
	acl_text(path, got, sizeof(got));
	assert_string_equal(got, "world:anyone:cdrwa");

	/* Refused credentials: nothing pushed, the cause named. */
	r = run_tool("zkw-push", "-z", hosts, "-f", file, "--parent", parent, "-i", "refused", "--auth-file",
	             refused_file, NULL);
	expect_run(&r, 1, "refused the nosuchscheme credentials", refused_file);
	node(path, sizeof(path), "push3/refused");
	len = sizeof(buf);
	assert_int_equal(zkh_get(hosts, path, buf, &len), ZNONODE);

	/* Refused before connecting: an auth entry without credentials. */
	r = run_tool("zkw-push", "-z", hosts, "-f", file, "--parent", parent, "-i", "x", "--acl",
	             "auth::cdrwa", NULL);
	expect_run(&r, 2, "without --auth-file", NULL);
}

/* ---- the library: every new session authenticates before it reads --------- */

struct recorder {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int states, noauth;
	bool valid;
	char content[64];
};

static void record(void *ctx, const zkw_watch_state *st)
{
	struct recorder *r = ctx;

	pthread_mutex_lock(&r->lock);
	r->states++;
	r->noauth += strncmp(st->error, ZKW_ERR_NO_AUTH, strlen(ZKW_ERR_NO_AUTH)) == 0;
	r->valid = st->valid;
	snprintf(r->content, sizeof(r->content), "%.*s", (int)st->len, (const char *)st->content);
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

static bool await_valid(struct recorder *r, const char *content)
{
	struct timespec ts;
	bool ok;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += WAIT_MS / 1000;
	pthread_mutex_lock(&r->lock);
	while (!(r->valid && strcmp(r->content, content) == 0) &&
	       pthread_cond_timedwait(&r->cond, &r->lock, &ts) == 0)
		;
	ok = r->valid && strcmp(r->content, content) == 0;
	pthread_mutex_unlock(&r->lock);
	return ok;
}

/* The session's auth hook: let the new handle's handshake finish before
 * the session hands it the credentials, then give a read that went out
 * too early the time to come back refused (it would, at once; without one
 * the wait shows that none did). */
static void handshake_first(void *ctx, zhandle_t *zh)
{
	struct recorder *r = ctx;
	int64_t deadline = zkw_clock_mono_ms() + WAIT_MS;
	struct timespec ts;

	/* The client has no event for its own state to the outside: poll it (bounded). */
	while (zoo_state(zh) != ZOO_CONNECTED_STATE && zkw_clock_mono_ms() < deadline)
		usleep(2000);
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += 500 * 1000000L;
	ts.tv_sec += ts.tv_nsec / 1000000000L;
	ts.tv_nsec %= 1000000000L;
	pthread_mutex_lock(&r->lock);
	while (!r->noauth && pthread_cond_timedwait(&r->cond, &r->lock, &ts) == 0)
		;
	pthread_mutex_unlock(&r->lock);
}

static void on_attach(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
	(void)zh, (void)path;
	if (type == ZOO_SESSION_EVENT && state == ZOO_CONNECTED_STATE)
		sem_post(ctx);
}

static int64_t expired_from;

static bool new_session(void *s)
{
	int64_t id;

	return zkw_session_identity(s, &id, NULL) == 0 && id != expired_from;
}

/* End s's session for real: a second handle attaches to it and closes it.
 * s's client may win the session back before the close goes out, so try
 * again, a bounded number of times. */
static void expire(zkw_session *s)
{
	clientid_t cid;
	sem_t connected;

	assert_int_equal(zkw_session_identity(s, &cid.client_id, cid.passwd), 0);
	expired_from = cid.client_id;
	sem_init(&connected, 0, 0);
	for (int attempt = 0; attempt < 5; attempt++) {
		struct timespec ts;
		zhandle_t *zh =
		        zookeeper_init2(hosts, on_attach, 2000, &cid, &connected, 0, zkw_zk_quiet_log);

		assert_non_null(zh);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 5;
		(void)sem_timedwait(&connected, &ts);
		zookeeper_close(zh);
		/* No event carries the session id: poll it (bounded). */
		if (zkh_eventually(new_session, s, 3000)) {
			sem_destroy(&connected);
			return;
		}
	}
	sem_destroy(&connected);
	fail_msg("the session 0x%llx was never replaced", (unsigned long long)cid.client_id);
}

static void test_library_authenticates_every_session(void **state)
{
	zkw_session_credential cred = {"digest", USER ":" PASSWORD};
	zkw_session_options so;
	struct recorder rec = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, false, ""};
	zkw_watch_options wo = {.on_state = record, .ctx = &rec};
	char path[128], why[256], content[32];
	zkw_session *s;

	(void)state;
	node(path, sizeof(path), "library");
	create_protected(path, "v0");
	zkw_session_options_init(&so);
	so.credentials = &cred;
	so.ncredentials = 1;
	so.session_timeout_ms = 2000;

	/* A watch added before the first connection reads at the connection,
	 * after the credentials. */
	for (int i = 0; i < 5; i++) {
		assert_int_equal(zkw_session_open(&s, hosts, &so, why, sizeof(why)), 0);
		assert_int_equal(zkw_session_watch(s, path, &wo, NULL), 0);
		if (!await_valid(&rec, "v0"))
			fail_msg("session %d: never valid (states %d, ZNOAUTH %d)", i, rec.states,
			         rec.noauth);
		zkw_session_close(s);
		if (rec.noauth)
			fail_msg("session %d: a read went out before the credentials (%d ZNOAUTH states)", i,
			         rec.noauth);
		rec.valid = false;
	}

	/* Every new session after an expiry authenticates again, and reads
	 * only once the credentials are answered even when the handshake is
	 * over before the session could hand them to the client. */
	assert_int_equal(zkw_session_open(&s, hosts, &so, why, sizeof(why)), 0);
	assert_int_equal(zkw_session_watch(s, path, &wo, NULL), 0);
	assert_true(await_valid(&rec, "v0"));
	zkw__session_set_auth_hook(s, handshake_first, &rec);
	for (int round = 1; round <= 2; round++) {
		expire(s);
		snprintf(content, sizeof(content), "v%d", round);
		assert_int_equal(zoo_set(admin, path, content, (int)strlen(content), -1), ZOK);
		if (!await_valid(&rec, content))
			fail_msg("round %d: never valid with %s after the expiry (ZNOAUTH states %d)", round,
			         content, rec.noauth);
	}
	zkw_session_close(s);
	assert_int_equal(rec.noauth, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_teardown(test_broker_reads_protected_node_with_credentials, test_teardown),
	        cmocka_unit_test_teardown(test_credentials_file_must_be_private, test_teardown),
	        cmocka_unit_test_teardown(test_refused_credentials_back_off, test_teardown),
	        cmocka_unit_test_teardown(test_ensure_acl, test_teardown),
	        cmocka_unit_test_teardown(test_push_credentials_and_acl, test_teardown),
	        cmocka_unit_test_teardown(test_library_authenticates_every_session, test_teardown),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
