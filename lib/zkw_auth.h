/* SPDX-License-Identifier: Apache-2.0 */
/* zkw_auth.h - ZooKeeper credentials from a file, and ACLs from text: what
 * zkw-broker's and zkw-push's --auth-file and --acl read.
 *
 * The credentials file (docs/design.md, "Authentication and ACLs"): one
 * credential a line, "SCHEME SECRET" - for ZooKeeper's digest scheme
 * "digest USER:PASSWORD"; blank lines and lines starting with '#' are
 * skipped; blanks around the secret are not part of it. The file must be a
 * regular file (not a symbolic link), owned by the effective uid that reads
 * it, with no permission beyond 0600: anything else is refused, naming the
 * file and the fix. No message ever quotes a line of it.
 *
 * An ACL is "SCHEME:ID:PERMS" entries separated by commas:
 * "auth::cdrwa,world:anyone:r", "digest:app:HASH:cdrwa" (HASH: ZooKeeper's
 * base64 SHA-1 of "app:PASSWORD"), "ip:10.0.0.0/8:r". PERMS are letters of
 * cdrwa (create, delete, read, write, admin), each at most once.
 *
 *     zkw_session_credential *cred;
 *     size_t n;
 *     char why[512];
 *     if (zkw_auth_file_read("/etc/zkw/zookeeper.auth", &cred, &n, why, sizeof(why)) < 0)
 *             die(why);
 *     ... opt.credentials = cred; opt.ncredentials = n; ...
 *     zkw_auth_credentials_free(cred, n);   // zeroes the secrets
 *
 * Errors: 0 or a negative errno, the reason in the caller's buffer
 * (zkw/common.h).
 */
#ifndef ZKW_LIB_AUTH_H
#define ZKW_LIB_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include <zkw/watcher.h>

#define ZKW_AUTH_FILE_MAX        65536 /* bytes of a credentials file */
#define ZKW_AUTH_CREDENTIALS_MAX 16    /* credentials in one file */
#define ZKW_AUTH_ACL_MAX         32    /* entries of one ACL */

/* Read the credentials file at path into *out (n entries, one allocation
 * holding the strings too; free it with zkw_auth_credentials_free). 0, or
 * -ELOOP (a symbolic link), -EPERM (another owner, or a mode beyond
 * 0600), -EINVAL (not a regular file, a line that is not a credential, no
 * credential at all), -EFBIG, an open/read errno, -ENOMEM; the reason
 * names the file (and the line), never a secret. */
int zkw_auth_file_read(const char *path, zkw_session_credential **out, size_t *n, char *why, size_t whylen);
/* Zero the secrets and free. NULL is fine. */
void zkw_auth_credentials_free(zkw_session_credential *cred, size_t n);

/* Parse an ACL into *out (n entries, one allocation: free() it). 0, or
 * -EINVAL with the reason naming the entry; -ENOMEM. */
int zkw_auth_acl_parse(const char *spec, zkw_session_acl **out, size_t *n, char *why, size_t whylen);
/* The ACL as text again ("scheme:id:perms,...", perms in cdrwa order).
 * The length, or -ENOBUFS when cap is too small (out then truncated). */
int zkw_auth_acl_format(const zkw_session_acl *acl, size_t n, char *out, size_t cap);
/* Does the ACL hold an "auth" entry (which needs credentials)? */
bool zkw_auth_acl_needs_credentials(const zkw_session_acl *acl, size_t n);

#endif
