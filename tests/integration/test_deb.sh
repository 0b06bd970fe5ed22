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
# The packages and the installed tree are built here, from the sources,
# whatever build the suite runs on: once per CI run is enough (make test),
# not again under the sanitizer builds of make check / make tsan.
case ${ZKW_BUILD:-} in */asan | */tsan)
	echo "skipped: checked in the plain build (make test)"
	exit 77
	;;
esac
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

# ---- the packaged service, end to end ----------------------------------
# What "installed and running" means, without changing the machine's
# packages and without systemd as PID 1: the zkw package is unpacked, and
# its unit's own ExecStart line runs (paths mapped into the unpacked tree)
# with the packaged configuration file, pointed at a loopback ZooKeeper,
# under a NOTIFY_SOCKET this test reads. Then a reload on SIGHUP must not
# wake the reader of an unchanged watch, zkw-inspect --list must show the
# segments, and --prometheus must pass promtool.
# until_true SECONDS CONDITION: poll CONDITION (a shell test, eval'd) every
# 0.1 s for at most SECONDS; what is awaited here (a datagram written to a
# file by socat, a line of a child's output) gives no event to wait on.
until_true() {
	local end=$((SECONDS + $1))
	while ((SECONDS < end)); do
		eval "$2" && return 0
		sleep 0.1
	done
	return 1
}

bpid= spid=
service() {
	local rootfs=$tmp/rootfs hosts conf=$tmp/broker.conf sock=$tmp/broker.sock unit exec ipid
	local notify=$tmp/notify.log shm_a=zkwdeb.$$.a shm_b=zkwdeb.$$.b
	dpkg-deb -x "$deb" "$rootfs" || { bad "dpkg-deb -x $deb"; return; }
	hosts=$("$root/tools/zk.sh" start "$tmp/zk" --nodes 1) || { bad "no ZooKeeper for the service test"; return; }
	trap 'kill -9 ${bpid:-} ${spid:-} 2>/dev/null; "$root/tools/zk.sh" stop "$tmp/zk" >/dev/null 2>&1; rm -rf "$tmp"' EXIT
	"$rootfs/usr/bin/zkw-push" -z "$hosts" --parent /zkwdeb -i a -f - <<<"alpha" >/dev/null &&
		"$rootfs/usr/bin/zkw-push" -z "$hosts" --parent /zkwdeb -i b -f - <<<"beta" >/dev/null ||
		{ bad "zkw-push from the package"; return; }
	# The packaged file, with this test's ensemble, socket and watches.
	sed -e "s|^zookeeper = .*|zookeeper = $hosts|" "$rootfs/etc/zkw/broker.conf" >"$conf"
	printf '\n[socket]\npath = %s\n\n[watch /zkwdeb/a]\nshm = %s\n' "$sock" "$shm_a" >>"$conf"
	unit=$rootfs/lib/systemd/system/zkw-broker.service
	exec=$(sed -n 's/^ExecStart=//p' "$unit")
	exec=${exec//\/usr\/sbin\/zkw-broker/$rootfs\/usr\/sbin\/zkw-broker}
	exec=${exec//\/etc\/zkw\/broker.conf/$conf}
	socat -u UNIX-RECV:"$tmp/notify.sock" OPEN:"$notify",creat,append &
	spid=$!
	until_true 5 '[[ -S $tmp/notify.sock ]]'
	NOTIFY_SOCKET=$tmp/notify.sock $exec 2>"$tmp/service.err" &
	bpid=$!
	until_true 20 'grep -q READY=1 "$notify" 2>/dev/null'
	grep -q READY=1 "$notify" 2>/dev/null && [[ -S $sock ]] &&
		ok "the unit's ExecStart line runs with the packaged configuration: READY=1, socket $sock" ||
		{ bad "no READY=1 from: $exec"$'\n'"$(cat "$tmp/service.err")"; return; }
	# A reader of the unchanged watch: one line at start, then one per change.
	"$rootfs/usr/bin/zkw-inspect" "$shm_a" --watch >"$tmp/watch.log" 2>&1 &
	ipid=$!
	until_true 10 '[[ -s $tmp/watch.log ]]'
	printf '\n[watch /zkwdeb/b]\nshm = %s\n' "$shm_b" >>"$conf"
	kill -HUP $bpid
	until_true 20 '(( $(grep -c READY=1 "$notify") >= 2 ))'
	if [[ $(grep -c READY=1 "$notify") -ge 2 ]] && grep -q RELOADING=1 "$notify" &&
		grep -q "1 watch added, 0 removed or re-created, 1 unchanged" "$tmp/service.err"; then
		ok "SIGHUP reloads: RELOADING=1, READY=1, one watch added, one unchanged"
	else
		bad "reload: $(tr '\n' ' ' <"$notify")"$'\n'"$(tail -5 "$tmp/service.err")"
	fi
	# The unchanged watch's reader saw nothing after its first line (a
	# change of the other node proves the reader still runs).
	"$rootfs/usr/bin/zkw-push" -z "$hosts" --parent /zkwdeb -i a -f - <<<"alpha2" >/dev/null
	until_true 10 'grep -q "len=7 " "$tmp/watch.log"' # "alpha2\n": the change, after the reload
	if [[ $(wc -l <"$tmp/watch.log") -eq 2 ]]; then
		ok "the reader of the unchanged watch was not woken by the reload (then saw the next change)"
	else
		bad "the unchanged watch's reader: $(cat "$tmp/watch.log")"
	fi
	kill $ipid 2>/dev/null
	wait $ipid 2>/dev/null
	"$rootfs/usr/bin/zkw-inspect" --list >"$tmp/list" 2>&1
	grep -q "$shm_a" "$tmp/list" && grep -q "$shm_b" "$tmp/list" && ok "zkw-inspect --list shows the service's segments" ||
		bad "zkw-inspect --list: $(cat "$tmp/list")"
	"$rootfs/usr/bin/zkw-inspect" --prometheus >"$tmp/metrics.prom" 2>"$tmp/metrics.err"
	if grep -q "$shm_a" "$tmp/metrics.prom" && promtool check metrics <"$tmp/metrics.prom" >"$tmp/promtool" 2>&1; then
		ok "zkw-inspect --prometheus passes promtool check metrics"
	else
		bad "metrics: $(cat "$tmp/promtool" "$tmp/metrics.err")"
	fi
	kill -TERM $bpid
	timeout 20 tail --pid=$bpid -f /dev/null
	wait $bpid
	local rc=$?
	until_true 5 'grep -q STOPPING=1 "$notify"'
	grep -q STOPPING=1 "$notify" && ((rc == 0)) && ok "SIGTERM: STOPPING=1, exit 0" || bad "stop: exit $rc, $(tr '\n' ' ' <"$notify")"
	bpid=
	kill $spid 2>/dev/null
	wait $spid 2>/dev/null
	spid=
	"$rootfs/usr/bin/zkw-push" -z "$hosts" --parent /zkwdeb -i a --wipe >/dev/null 2>&1
	rm -f "/dev/shm/$shm_a" "/dev/shm/$shm_b" "/dev/shm/.zkw-lock.$shm_a" "/dev/shm/.zkw-lock.$shm_b"
}
[[ -f $deb ]] && service

exit $fail
