#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# test_deb.sh - `make deb-check` builds the Debian packages (debian/) and
# lintian passes them without an error or a warning; each package holds
# what it should, at the version of include/zkw/common.h, and the maintainer
# scripts create the user zkw and start the unit only where systemd runs.
# About 30 s (the build, then lintian). Installing with dpkg is left to a
# human (README, "Install"): a test does not change the machine's packages.
#   tests/integration/test_deb.sh          exit 0 pass, 1 fail
set -uo pipefail
unset MAKEFLAGS MFLAGS MAKELEVEL # run from `make test`: no variables of that make

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root" || exit 1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/zkw-deb.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0

ok() { echo "ok   - $1"; }
bad() {
	echo "FAIL - $1"
	fail=1
}

version=$(sed -n 's/^#define ZKW_VERSION "\([^"]*\)".*/\1/p' include/zkw/common.h)
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
debs=$tmp/build/deb

started=$SECONDS
if ! make deb-check BUILD="$tmp/build" >"$tmp/deb.log" 2>&1; then
	bad "make deb-check failed:"$'\n'"$(grep -E '^[EW]: |error|warning' "$tmp/deb.log" | tail -n 30)"$'\n'"$(tail -n 15 "$tmp/deb.log")"
	exit 1
fi
ok "make deb-check: built, and lintian has no error or warning ($((SECONDS - started)) s)"
tags=$(grep -E '^[EWIPX]: ' "$tmp/deb.log" | sort -u)
[[ -n $tags ]] && echo "note - lintian: ${tags//$'\n'/; }"

# contains PACKAGE PATH...: the package is built and holds each path.
contains() {
	local pkg=$1 deb=$debs/${1}_${version}_$arch.deb list missing=()
	shift
	if [[ ! -f $deb ]]; then
		bad "no package $pkg ${version} ($(cd "$debs" && ls ./*.deb 2>/dev/null | tr '\n' ' '))"
		return
	fi
	list=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|')
	for p in "$@"; do
		grep -qxF -- "$p" <<<"$list" || missing+=("$p")
	done
	((${#missing[@]} == 0)) && ok "$pkg $version holds $*" || bad "$pkg lacks ${missing[*]}"
}
contains zkw /usr/sbin/zkw-broker /usr/bin/zkw-inspect /usr/bin/zkw-push /usr/bin/zkw-example \
	/lib/systemd/system/zkw-broker.service /usr/lib/sysusers.d/zkw.conf /etc/zkw/broker.conf \
	/usr/share/man/man8/zkw-broker.8.gz /usr/share/man/man5/zkw-broker.conf.5.gz \
	/usr/share/man/man7/zkw-protocol.7.gz /usr/share/man/man7/zkw.7.gz /usr/share/man/man1/zkw-inspect.1.gz
contains "libzkw-cache0" "/usr/lib/$multiarch/libzkw-cache.so.$version" "/usr/lib/$multiarch/libzkw-cache.so.0"
contains libzkw-dev /usr/include/zkw/client.h /usr/include/zkw/cache.h /usr/include/zkw/watcher.h \
	"/usr/lib/$multiarch/libzkw.a" "/usr/lib/$multiarch/libzkw-cache.so" \
	"/usr/lib/$multiarch/pkgconfig/zkw-client.pc" "/usr/lib/$multiarch/pkgconfig/zkw-cache.pc" \
	"/usr/lib/$multiarch/pkgconfig/zkw-watcher.pc"
contains python3-zkw /usr/lib/python3/dist-packages/zkw.py /usr/lib/python3/dist-packages/libzkw-client.so

deb=$debs/zkw_${version}_$arch.deb
if [[ -f $deb ]]; then
	dpkg-deb -e "$deb" "$tmp/control"
	grep -qx /etc/zkw/broker.conf "$tmp/control/conffiles" && ok "/etc/zkw/broker.conf is a conffile" ||
		bad "/etc/zkw/broker.conf is not a conffile: $(cat "$tmp/control/conffiles" 2>/dev/null)"
	grep -q 'systemd-sysusers .*zkw.conf' "$tmp/control/postinst" && ok "postinst creates the user zkw (systemd-sysusers)" ||
		bad "postinst does not run systemd-sysusers"
	# The start is guarded, so dpkg -i works where systemd is not PID 1.
	if grep -q 'deb-systemd-invoke .*zkw-broker.service' "$tmp/control/postinst" &&
		grep -q 'if \[ -d /run/systemd/system \]' "$tmp/control/postinst"; then
		ok "postinst starts zkw-broker.service only where systemd runs"
	else
		bad "postinst does not start the unit, or not only under systemd"
	fi
	depends=$(dpkg-deb -f "$deb" Depends)
	grep -q 'systemd-sysusers' <<<"$depends" && ok "zkw depends on a systemd-sysusers: $depends" ||
		bad "zkw's Depends lack systemd-sysusers: $depends"
fi

exit $fail
