/* SPDX-License-Identifier: Apache-2.0 */
/* zkw_auth.c - credentials files and ACL text (see zkw_auth.h). */
#include "zkw_auth.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zkw/common.h>

#define LINE_MAX_BYTES 1024 /* of one line of a credentials file */

/* ---- the credentials file ----------------------------------------------- */

static const char *user_name(uid_t uid, char *buf, size_t cap)
{
	struct passwd pw, *res = NULL;
	char tmp[1024];

	if (getpwuid_r(uid, &pw, tmp, sizeof(tmp), &res) == 0 && res)
		snprintf(buf, cap, " (%s)", res->pw_name);
	else
		buf[0] = '\0';
	return buf;
}

/* Open path for reading as a credentials file may be: no symbolic link, a
 * regular file of ours, mode 0600 or less. The descriptor, or -errno. */
static int open_private(const char *path, struct stat *st, char *why, size_t whylen)
{
	/* O_NONBLOCK: a FIFO planted there must not hang the open. */
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK), err;
	char owner[300], me[300];

	if (fd < 0) {
		err = errno;
		if (err == ELOOP)
			return zkw__errorf(why, whylen, -ELOOP,
			                   "credentials file %s is a symbolic link: name the file itself",
			                   path);
		return zkw__errorf(why, whylen, -err, "cannot open the credentials file %s: %s", path,
		                   strerror(err));
	}
	if (fstat(fd, st) != 0) {
		err = errno;
		close(fd);
		return zkw__errorf(why, whylen, -err, "cannot stat the credentials file %s: %s", path,
		                   strerror(err));
	}
	if (!S_ISREG(st->st_mode)) {
		close(fd);
		return zkw__errorf(why, whylen, -EINVAL, "credentials file %s is not a regular file", path);
	}
	if (st->st_uid != geteuid()) {
		close(fd);
		return zkw__errorf(why, whylen, -EPERM,
		                   "credentials file %s is owned by uid %u%s, not by uid %u%s that reads it: "
		                   "whoever owns it can change the credentials (chown it)",
		                   path, (unsigned)st->st_uid, user_name(st->st_uid, owner, sizeof(owner)),
		                   (unsigned)geteuid(), user_name(geteuid(), me, sizeof(me)));
	}
	if (st->st_mode & 07177) {
		close(fd);
		return zkw__errorf(why, whylen, -EPERM,
		                   "credentials file %s has mode %04o: want 0600 or stricter, so that nobody "
		                   "else can read or change it (chmod 600 %s)",
		                   path, (unsigned)(st->st_mode & 07777), path);
	}
	if (st->st_size > ZKW_AUTH_FILE_MAX) {
		close(fd);
		return zkw__errorf(why, whylen, -EFBIG, "credentials file %s is larger than %d bytes", path,
		                   ZKW_AUTH_FILE_MAX);
	}
	return fd;
}

/* The whole file into buf (cap bytes, NUL-terminated); its length or -errno. */
static ssize_t read_all(int fd, const char *path, char *buf, size_t cap, char *why, size_t whylen)
{
	size_t n = 0;

	for (;;) {
		ssize_t got = read(fd, buf + n, cap - 1 - n);

		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return zkw__errorf(why, whylen, -errno, "cannot read the credentials file %s: %s",
			                   path, strerror(errno));
		if (got == 0)
			break;
		n += (size_t)got;
		if (n == cap - 1)
			return zkw__errorf(why, whylen, -EFBIG, "credentials file %s is larger than %d bytes",
			                   path, ZKW_AUTH_FILE_MAX);
	}
	buf[n] = '\0';
	return (ssize_t)n;
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static bool scheme_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
	       c == '_' || c == '.';
}

struct cred_line {
	const char *scheme, *secret;
	size_t scheme_len, secret_len;
};

/* One line (len bytes at s, no '\n'): 1 with the credential in *c, 0 for a
 * blank or comment line, or -EINVAL with the reason (never the content). */
static int parse_line(const char *s, size_t len, const char *path, int line, struct cred_line *c, char *why,
                      size_t whylen)
{
	const char *end = s + len, *p = s;

	while (end > p && (is_blank(end[-1]) || end[-1] == '\r'))
		end--;
	while (p < end && is_blank(*p))
		p++;
	if (p == end || *p == '#')
		return 0;
	if (len > LINE_MAX_BYTES)
		return zkw__errorf(why, whylen, -EINVAL, "credentials file %s, line %d: longer than %d bytes",
		                   path, line, LINE_MAX_BYTES);
	for (const char *q = p; q < end; q++)
		if ((unsigned char)*q < 0x20 && !is_blank(*q))
			return zkw__errorf(why, whylen, -EINVAL,
			                   "credentials file %s, line %d: a control character at byte %zu",
			                   path, line, (size_t)(q - s) + 1);
	c->scheme = p;
	while (p < end && scheme_char(*p))
		p++;
	c->scheme_len = (size_t)(p - c->scheme);
	if (!c->scheme_len || p == end || !is_blank(*p))
		return zkw__errorf(why, whylen, -EINVAL,
		                   "credentials file %s, line %d: want SCHEME SECRET (digest USER:PASSWORD)",
		                   path, line);
	while (p < end && is_blank(*p))
		p++;
	c->secret = p;
	c->secret_len = (size_t)(end - p);
	if ((c->scheme_len == 5 && strncmp(c->scheme, "world", 5) == 0) ||
	    (c->scheme_len == 4 && strncmp(c->scheme, "auth", 4) == 0))
		return zkw__errorf(why, whylen, -EINVAL,
		                   "credentials file %s, line %d: '%.*s' is an ACL scheme, not credentials "
		                   "(digest USER:PASSWORD)",
		                   path, line, (int)c->scheme_len, c->scheme);
	if (c->scheme_len == 6 && strncmp(c->scheme, "digest", 6) == 0) {
		const char *colon = memchr(c->secret, ':', c->secret_len);

		if (!colon || colon == c->secret || colon == end - 1)
			return zkw__errorf(
			        why, whylen, -EINVAL,
			        "credentials file %s, line %d: a digest credential is USER:PASSWORD, "
			        "both not empty",
			        path, line);
	}
	return 1;
}

int zkw_auth_file_read(const char *path, zkw_session_credential **out, size_t *n, char *why, size_t whylen)
{
	struct cred_line lines[ZKW_AUTH_CREDENTIALS_MAX];
	size_t count = 0, bytes = 0;
	char *text = NULL, *p;
	struct stat st;
	ssize_t len;
	int fd, line = 0, rc = 0;

	*out = NULL;
	*n = 0;
	if (!path || !path[0])
		return zkw__errorf(why, whylen, -EINVAL, "no credentials file named");
	if ((fd = open_private(path, &st, why, whylen)) < 0)
		return fd;
	text = malloc(ZKW_AUTH_FILE_MAX + 2);
	if (!text) {
		close(fd);
		return zkw__errorf(why, whylen, -ENOMEM, "no memory to read %s", path);
	}
	len = read_all(fd, path, text, ZKW_AUTH_FILE_MAX + 2, why, whylen);
	close(fd);
	if (len < 0) {
		rc = (int)len;
		goto out;
	}
	if (memchr(text, '\0', (size_t)len)) {
		rc = zkw__errorf(why, whylen, -EINVAL, "credentials file %s holds a NUL byte", path);
		goto out;
	}
	for (p = text; p < text + len && rc == 0;) {
		char *nl = memchr(p, '\n', (size_t)(text + len - p));
		size_t l = nl ? (size_t)(nl - p) : (size_t)(text + len - p);
		struct cred_line c;
		int got = parse_line(p, l, path, ++line, &c, why, whylen);

		if (got < 0) {
			rc = got;
		} else if (got > 0 && count == ZKW_AUTH_CREDENTIALS_MAX) {
			rc = zkw__errorf(why, whylen, -EINVAL,
			                 "credentials file %s holds more than %d credentials", path,
			                 ZKW_AUTH_CREDENTIALS_MAX);
		} else if (got > 0) {
			lines[count++] = c;
			bytes += c.scheme_len + c.secret_len + 2;
		}
		p += l + 1;
	}
	if (rc == 0 && count == 0)
		rc = zkw__errorf(
		        why, whylen, -EINVAL,
		        "credentials file %s holds no credential (want lines of digest USER:PASSWORD)", path);
	if (rc == 0) {
		zkw_session_credential *cred = malloc(count * sizeof(*cred) + bytes);
		char *s;

		if (!cred) {
			rc = zkw__errorf(why, whylen, -ENOMEM, "no memory for the credentials of %s", path);
			goto out;
		}
		s = (char *)(cred + count);
		for (size_t i = 0; i < count; i++) {
			cred[i].scheme = memcpy(s, lines[i].scheme, lines[i].scheme_len);
			s[lines[i].scheme_len] = '\0';
			s += lines[i].scheme_len + 1;
			cred[i].secret = memcpy(s, lines[i].secret, lines[i].secret_len);
			s[lines[i].secret_len] = '\0';
			s += lines[i].secret_len + 1;
		}
		*out = cred;
		*n = count;
	}
out:
	explicit_bzero(text, ZKW_AUTH_FILE_MAX + 2);
	explicit_bzero(lines, sizeof(lines));
	free(text);
	return rc;
}

void zkw_auth_credentials_free(zkw_session_credential *cred, size_t n)
{
	if (!cred)
		return;
	for (size_t i = 0; i < n; i++)
		explicit_bzero((char *)cred[i].secret, strlen(cred[i].secret));
	free(cred);
}

/* ---- ACLs ----------------------------------------------------------------- */

static const char perm_letters[] = "cdrwa";
static const unsigned perm_bits[] = {ZKW_PERM_CREATE, ZKW_PERM_DELETE, ZKW_PERM_READ, ZKW_PERM_WRITE,
                                     ZKW_PERM_ADMIN};

/* Base64 of a SHA-1, as ZooKeeper's DigestAuthenticationProvider writes it:
 * 27 characters of the alphabet, then '='. */
static bool digest_hash(const char *h, size_t len)
{
	if (len != 28 || h[27] != '=')
		return false;
	for (size_t i = 0; i < 27; i++) {
		char c = h[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '+' || c == '/'))
			return false;
	}
	return true;
}

/* ip:ADDRESS[/BITS], IPv4 or IPv6. */
static bool ip_id(const char *id, size_t len)
{
	char addr[64], in6[16];
	const char *slash = memchr(id, '/', len);
	size_t alen = slash ? (size_t)(slash - id) : len;
	long bits = -1;

	if (alen == 0 || alen >= sizeof(addr))
		return false;
	memcpy(addr, id, alen);
	addr[alen] = '\0';
	if (slash) {
		char *end;
		size_t blen = len - alen - 1;
		char b[8];

		if (blen == 0 || blen >= sizeof(b))
			return false;
		memcpy(b, slash + 1, blen);
		b[blen] = '\0';
		bits = strtol(b, &end, 10);
		if (*end || b[0] == '-' || b[0] == '+')
			return false;
	}
	if (inet_pton(AF_INET, addr, in6) == 1)
		return bits <= 32;
	if (inet_pton(AF_INET6, addr, in6) == 1)
		return bits <= 128;
	return false;
}

/* One entry (len bytes at e, blanks trimmed) into *a; its strings are
 * copied to *strings. 0 or -EINVAL with the reason, which quotes the entry
 * but never a digest id's secret part (a password pasted by mistake). */
static int parse_entry(const char *e, size_t len, zkw_session_acl *a, char **strings, char *why,
                       size_t whylen)
{
	const char *colon1 = memchr(e, ':', len), *colon2 = NULL, *id, *perms;
	size_t scheme_len, id_len, perms_len;
	unsigned bits = 0;
	char shown[160];

	for (size_t i = len; colon1 && i-- > 0;)
		if (e[i] == ':') {
			colon2 = e + i;
			break;
		}
	if (!colon1 || colon2 == colon1)
		return zkw__errorf(why, whylen, -EINVAL,
		                   "ACL entry '%.*s': want SCHEME:ID:PERMS (world:anyone:r, auth::cdrwa, "
		                   "digest:USER:HASH:cdrwa, ip:ADDRESS[/BITS]:r)",
		                   len > 8 && strncmp(e, "digest:", 7) == 0 ? 6 : (int)len, e);
	scheme_len = (size_t)(colon1 - e);
	id = colon1 + 1;
	id_len = (size_t)(colon2 - id);
	perms = colon2 + 1;
	perms_len = len - (size_t)(perms - e);
#define IS(name) (scheme_len == sizeof(name) - 1 && strncmp(e, name, scheme_len) == 0)
	if (IS("digest")) {
		const char *c = memchr(id, ':', id_len);
		int user = c ? (int)(c - id) : (int)id_len;

		snprintf(shown, sizeof(shown), "digest:%.*s:...:%.*s", user > 64 ? 64 : user, id,
		         (int)(perms_len > 16 ? 16 : perms_len), perms);
		if (!c || c == id || !digest_hash(c + 1, id_len - (size_t)(c + 1 - id)))
			return zkw__errorf(
			        why, whylen, -EINVAL,
			        "ACL entry '%s': the digest scheme's id is USER:HASH, HASH being "
			        "ZooKeeper's base64 SHA-1 of USER:PASSWORD (28 characters ending in '='), "
			        "never the password itself",
			        shown);
	} else {
		snprintf(shown, sizeof(shown), "%.*s", (int)len, e);
		if (IS("world")) {
			if (id_len != 6 || strncmp(id, "anyone", 6) != 0)
				return zkw__errorf(why, whylen, -EINVAL,
				                   "ACL entry '%s': the world scheme's id is anyone", shown);
		} else if (IS("auth")) {
			if (id_len != 0)
				return zkw__errorf(
				        why, whylen, -EINVAL,
				        "ACL entry '%s': the auth scheme takes no id (auth::PERMS): it "
				        "stands for the creator's authenticated identities",
				        shown);
		} else if (IS("ip")) {
			if (!ip_id(id, id_len))
				return zkw__errorf(
				        why, whylen, -EINVAL,
				        "ACL entry '%s': the ip scheme's id is an IPv4 or IPv6 address, "
				        "optionally /BITS",
				        shown);
		} else if (IS("x509") || IS("sasl")) {
			if (id_len == 0)
				return zkw__errorf(why, whylen, -EINVAL, "ACL entry '%s': no id", shown);
		} else {
			return zkw__errorf(
			        why, whylen, -EINVAL,
			        "ACL entry '%s': unknown scheme '%.*s' (world, auth, digest, ip, x509, "
			        "sasl)",
			        shown, (int)scheme_len, e);
		}
	}
#undef IS
	if (perms_len == 0)
		return zkw__errorf(why, whylen, -EINVAL, "ACL entry '%s': no permissions (letters of cdrwa)",
		                   shown);
	for (size_t i = 0; i < perms_len; i++) {
		const char *l = memchr(perm_letters, perms[i], sizeof(perm_letters) - 1);
		unsigned bit;

		if (!l)
			return zkw__errorf(
			        why, whylen, -EINVAL,
			        "ACL entry '%s': unknown permission '%c' (c create, d delete, r read, "
			        "w write, a admin)",
			        shown, perms[i]);
		bit = perm_bits[l - perm_letters];
		if (bits & bit)
			return zkw__errorf(why, whylen, -EINVAL, "ACL entry '%s': permission '%c' twice",
			                   shown, perms[i]);
		bits |= bit;
	}
	a->scheme = memcpy(*strings, e, scheme_len);
	(*strings)[scheme_len] = '\0';
	*strings += scheme_len + 1;
	a->id = memcpy(*strings, id, id_len);
	(*strings)[id_len] = '\0';
	*strings += id_len + 1;
	a->perms = bits;
	return 0;
}

int zkw_auth_acl_parse(const char *spec, zkw_session_acl **out, size_t *n, char *why, size_t whylen)
{
	size_t len, count = 1;
	zkw_session_acl *acl;
	const char *p;
	char *strings;
	int rc = 0;

	*out = NULL;
	*n = 0;
	if (!spec)
		return zkw__errorf(why, whylen, -EINVAL, "no ACL given");
	len = strlen(spec);
	for (p = spec; *p; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return zkw__errorf(why, whylen, -EINVAL, "ACL: a control character at byte %zu",
			                   (size_t)(p - spec) + 1);
		count += *p == ',';
	}
	if (count > ZKW_AUTH_ACL_MAX)
		return zkw__errorf(why, whylen, -EINVAL, "ACL: more than %d entries", ZKW_AUTH_ACL_MAX);
	/* The entries' strings are at most the spec's bytes, each NUL in
	 * place of a ':' or ','. */
	acl = malloc(count * sizeof(*acl) + len + 2 * count);
	if (!acl)
		return zkw__errorf(why, whylen, -ENOMEM, "no memory for the ACL");
	strings = (char *)(acl + count);
	p = spec;
	for (size_t i = 0; i < count && rc == 0; i++) {
		const char *end = strchr(p, ','), *s = p;

		if (!end)
			end = p + strlen(p);
		while (s < end && (*s == ' ' || *s == '\t'))
			s++;
		while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		if (s == end)
			rc = zkw__errorf(why, whylen, -EINVAL,
			                 "ACL: entry %zu is empty (want SCHEME:ID:PERMS%s)", i + 1,
			                 count > 1 ? ", separated by commas" : "");
		else
			rc = parse_entry(s, (size_t)(end - s), &acl[i], &strings, why, whylen);
		p = strchr(p, ',');
		p = p ? p + 1 : "";
	}
	if (rc < 0) {
		free(acl);
		return rc;
	}
	*out = acl;
	*n = count;
	return 0;
}

int zkw_auth_acl_format(const zkw_session_acl *acl, size_t n, char *out, size_t cap)
{
	size_t used = 0;

	if (cap)
		out[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		char perms[sizeof(perm_letters)];
		size_t k = 0;
		int w;

		for (size_t j = 0; j < sizeof(perm_bits) / sizeof(perm_bits[0]); j++)
			if (acl[i].perms & perm_bits[j])
				perms[k++] = perm_letters[j];
		perms[k] = '\0';
		w = snprintf(out + used, used < cap ? cap - used : 0, "%s%s:%s:%s", i ? "," : "",
		             acl[i].scheme, acl[i].id, perms);
		if (w < 0)
			return -EINVAL;
		used += (size_t)w;
	}
	return used < cap ? (int)used : -ENOBUFS;
}

bool zkw_auth_acl_needs_credentials(const zkw_session_acl *acl, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(acl[i].scheme, "auth") == 0)
			return true;
	return false;
}
