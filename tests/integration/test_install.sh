#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# test_install.sh - `make install` delivers a usable product (docs/design.md,
# "Build targets"; README, "Install"): the tree under DESTDIR file by file,
# versioned shared libraries with their SONAME, every .pc file usable by
# pkg-config and a program built through it, the Python module importable by
# /usr/bin/python3 with its library, the systemd unit clean under
# `systemd-analyze verify` and its ExecStart line accepting the shipped
# configuration, the sysusers.d file, man pages that render and list exactly
# the options of each program's --help, one version everywhere, and
# `make uninstall` removing all of it but an edited configuration.
#
# Builds in a directory of its own (no sanitizer flags), ~15 s.
#   tests/integration/test_install.sh          exit 0 pass, 1 fail
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
tmp=$(mktemp -d "${TMPDIR:-/tmp}/zkw-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0

ok() { echo "ok   - $1"; }
bad() {
	echo "FAIL - $1"
	fail=1
}
check() { # DESCRIPTION COMMAND...: ok when the command succeeds
	local what=$1
	shift
	if "$@" >"$tmp/check.log" 2>&1; then
		ok "$what"
	else
		bad "$what:"$'\n'"$(tail -n 20 "$tmp/check.log")"
	fi
}

for tool in scdoc pkg-config readelf man systemd-analyze systemd-sysusers; do
	command -v "$tool" >/dev/null || {
		bad "$tool is missing (tools/deps.sh installs it)"
		exit 1
	}
done

version=$(sed -n 's/^#define ZKW_VERSION "\([^"]*\)".*/\1/p' include/zkw/common.h)
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || {
	bad "no ZKW_VERSION in include/zkw/common.h (got '$version')"
	exit 1
}
multiarch=$(cc -print-multiarch)
libdir=/usr/lib/$multiarch
pydir=/usr/lib/python3/dist-packages

# ---- one version: common.h, debian/changelog
changelog=$(sed -n '1s/^zkw (\([^)]*\)).*/\1/p' debian/changelog 2>/dev/null)
changelog=${changelog#*:}   # epoch
changelog=${changelog%%-*}  # Debian revision, if not native
[[ $changelog == "$version" ]] && ok "debian/changelog says $version, as common.h" ||
	bad "debian/changelog says '$changelog', include/zkw/common.h says $version"

# ---- build once, install as the package does and as an operator does
build=$tmp/build dest=$tmp/root local=$tmp/local
if ! make -s -j2 all man BUILD="$build" >"$tmp/make.log" 2>&1; then
	bad "make all man failed:"$'\n'"$(tail -n 30 "$tmp/make.log")"
	exit 1
fi
if ! make -s install BUILD="$build" DESTDIR="$dest" PREFIX=/usr >"$tmp/install.log" 2>&1 ||
	! make -s install BUILD="$build" DESTDIR="$local" >>"$tmp/install.log" 2>&1; then
	bad "make install failed:"$'\n'"$(tail -n 30 "$tmp/install.log")"
	exit 1
fi

# tree_links DIR: every file and link under DIR, "MODE TYPE PATH[ -> TARGET]".
tree_links() {
	(cd "$1" && find . \( -type f -o -type l \) -printf '%m %y %P -> %l\n' | sed -e 's/ -> $//' | sort -k3)
}
cat >"$tmp/expected" <<EOF
644 f etc/zkw/broker.conf
644 f lib/systemd/system/zkw-broker.service
755 f usr/bin/zkw-example
755 f usr/bin/zkw-inspect
755 f usr/bin/zkw-push
644 f usr/include/zkw/bundle.h
644 f usr/include/zkw/cache.h
644 f usr/include/zkw/client.h
644 f usr/include/zkw/common.h
644 f usr/include/zkw/segment.h
644 f usr/include/zkw/watcher.h
644 f ${pydir#/}/libzkw-client.so
644 f ${pydir#/}/zkw.py
644 f usr/lib/sysusers.d/zkw.conf
644 f ${libdir#/}/libzkw-cache.a
777 l ${libdir#/}/libzkw-cache.so -> libzkw-cache.so.0
777 l ${libdir#/}/libzkw-cache.so.0 -> libzkw-cache.so.$version
644 f ${libdir#/}/libzkw-cache.so.$version
644 f ${libdir#/}/libzkw.a
644 f ${libdir#/}/pkgconfig/zkw-cache.pc
644 f ${libdir#/}/pkgconfig/zkw-client.pc
644 f ${libdir#/}/pkgconfig/zkw-watcher.pc
755 f usr/sbin/zkw-broker
644 f usr/share/man/man1/zkw-example.1
644 f usr/share/man/man1/zkw-inspect.1
644 f usr/share/man/man1/zkw-push.1
644 f usr/share/man/man5/zkw-broker.conf.5
644 f usr/share/man/man7/zkw-protocol.7
644 f usr/share/man/man7/zkw.7
644 f usr/share/man/man8/zkw-broker.8
EOF
sort -k3 "$tmp/expected" -o "$tmp/expected"
tree_links "$dest" >"$tmp/got"
if diff -u "$tmp/expected" "$tmp/got" >"$tmp/tree.diff"; then
	ok "make install PREFIX=/usr DESTDIR=...: exactly the expected $(wc -l <"$tmp/expected") files, modes and links"
else
	bad "the installed tree differs (- expected, + installed):"$'\n'"$(tail -n +3 "$tmp/tree.diff")"
fi
# The default prefix: /usr/local, the daemon in sbin, the unit and the
# configuration where systemd and the unit look.
ulp=$(/usr/bin/python3 -c 'import sys; print("usr/local/lib/python%d.%d/dist-packages" % sys.version_info[:2])')
missing=()
for f in usr/local/sbin/zkw-broker usr/local/bin/zkw-inspect "usr/local/lib/$multiarch/libzkw-cache.so.0" \
	usr/local/lib/systemd/system/zkw-broker.service usr/local/lib/sysusers.d/zkw.conf \
	usr/local/etc/zkw/broker.conf "$ulp/zkw.py" "$ulp/libzkw-client.so" usr/local/share/man/man8/zkw-broker.8; do
	[[ -e $local/$f || -L $local/$f ]] || missing+=("$f")
done
((${#missing[@]} == 0)) && ok "make install (default PREFIX): /usr/local layout" ||
	bad "make install (default PREFIX) lacks: ${missing[*]}"
grep -qx 'ExecStart=/usr/local/sbin/zkw-broker --config /usr/local/etc/zkw/broker.conf' \
	"$local/usr/local/lib/systemd/system/zkw-broker.service" &&
	ok "the /usr/local unit starts /usr/local/sbin/zkw-broker with /usr/local/etc/zkw/broker.conf" ||
	bad "the /usr/local unit's ExecStart: $(grep ExecStart= "$local/usr/local/lib/systemd/system/zkw-broker.service")"
# Both Python directories are where /usr/bin/python3 imports from.
syspath=$(/usr/bin/python3 -c 'import sys; print("\n".join(sys.path))')
for d in "$pydir" "/$ulp"; do
	grep -qx -- "$d" <<<"$syspath" && ok "/usr/bin/python3 imports from $d" ||
		bad "$d is not on /usr/bin/python3's sys.path: $(tr '\n' ' ' <<<"$syspath")"
done

# ---- shared libraries: SONAME, no RPATH
so=$dest$libdir/libzkw-cache.so.$version
soname=$(readelf -d "$so" 2>/dev/null | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[[ $soname == libzkw-cache.so.0 ]] && ok "libzkw-cache.so.$version has SONAME libzkw-cache.so.0" ||
	bad "libzkw-cache.so.$version: SONAME '$soname', want libzkw-cache.so.0"
rpath=()
for f in "$so" "$dest$pydir/libzkw-client.so" "$dest/usr/sbin/zkw-broker" "$dest"/usr/bin/zkw-*; do
	readelf -d "$f" | grep -qE '\((RPATH|RUNPATH)\)' && rpath+=("${f#"$dest"}")
done
((${#rpath[@]} == 0)) && ok "no installed binary carries an RPATH" || bad "RPATH/RUNPATH in ${rpath[*]}"

# ---- pkg-config: every .pc into the DESTDIR
export PKG_CONFIG_SYSROOT_DIR=$dest PKG_CONFIG_PATH=$dest$libdir/pkgconfig
export PKG_CONFIG_ALLOW_SYSTEM_CFLAGS=1 PKG_CONFIG_ALLOW_SYSTEM_LIBS=1
pcs=$(cd "$dest$libdir/pkgconfig" && ls ./*.pc | sed 's|^\./||; s|\.pc$||' | sort | tr '\n' ' ')
[[ $pcs == "zkw-cache zkw-client zkw-watcher " ]] && ok "a .pc for each library: $pcs" ||
	bad "pkg-config files: '$pcs', want zkw-cache zkw-client zkw-watcher"
for pc in $pcs; do
	if ! pkg-config --validate "$pc" >"$tmp/pc.log" 2>&1; then
		bad "$pc.pc does not validate: $(cat "$tmp/pc.log")"
		continue
	fi
	v=$(pkg-config --modversion "$pc")
	flags=$(pkg-config --cflags --libs "$pc" 2>&1) || {
		bad "pkg-config --cflags --libs $pc: $flags"
		continue
	}
	[[ $v == "$version" ]] && ok "$pc.pc: version $v, flags: $flags" || bad "$pc.pc says version $v, not $version"
done
[[ -z $(pkg-config --libs zkw-client) ]] && ok "zkw-client (header-only) links nothing" ||
	bad "zkw-client.pc has Libs: $(pkg-config --libs zkw-client)"

# A program per library, built only through pkg-config against the DESTDIR.
cat >"$tmp/client.c" <<'EOF'
#include <zkw/client.h>
#include <errno.h>
int main(int argc, char **argv)
{
	zkw_reader r;
	zkw_bundle b;
	unsigned char empty[ZKW_BUNDLE_HEADER_SIZE];
	(void)argc;
	if (zkw_bundle_encode(empty, sizeof(empty), NULL, 0, 0, 0) != 0 || zkw_bundle_open(&b, empty, sizeof(empty)) != 0)
		return 1;
	return zkw_reader_open(&r, argv[1]) == -ENOENT ? 0 : 1;
}
EOF
cat >"$tmp/cache.c" <<'EOF'
#include <zkw/cache.h>
#include <errno.h>
int main(int argc, char **argv)
{
	zkw_cache *c;
	(void)argc;
	return zkw_cache_open(&c, argv[1], NULL) == -ENOENT && !c ? 0 : 1;
}
EOF
cat >"$tmp/watcher.c" <<'EOF'
#include <zkw/watcher.h>
#include <string.h>
int main(void)
{
	char out[64];
	return zkw_pointer_parse(" /a/b\n", 6, out, sizeof(out), NULL) == 4 && strcmp(out, "/a/b") == 0 ? 0 : 1;
}
EOF
missing_shm=zkw.install-test-none-$$
# shellcheck disable=SC2046 # word splitting of the flags is wanted
check "a C program built with \`pkg-config zkw-client\` against the installed client.h runs" \
	sh -c 'cc -Wall -Werror -o "$1/client" "$1/client.c" $(pkg-config --cflags --libs zkw-client) && "$1/client" "$2"' \
	sh "$tmp" "$missing_shm"
check "the same client.h compiles as C++" \
	sh -c 'c++ -Wall -Werror -x c++ -o "$1/client++" "$1/client.c" $(pkg-config --cflags --libs zkw-client) && "$1/client++" "$2"' \
	sh "$tmp" "$missing_shm"
check "a program linked with \`pkg-config zkw-cache\` runs on the installed libzkw-cache.so.0" \
	sh -c 'cc -Wall -Werror -o "$1/cache" "$1/cache.c" $(pkg-config --cflags --libs zkw-cache) &&
	       readelf -d "$1/cache" | grep -q "NEEDED.*\[libzkw-cache.so.0\]" &&
	       LD_LIBRARY_PATH="$3" "$1/cache" "$2"' sh "$tmp" "$missing_shm" "$dest$libdir"
check "a program linked with \`pkg-config zkw-watcher\` (static libzkw.a) runs" \
	sh -c 'cc -Wall -Werror -o "$1/watcher" "$1/watcher.c" $(pkg-config --cflags --libs zkw-watcher) && "$1/watcher"' \
	sh "$tmp"
unset PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_PATH PKG_CONFIG_ALLOW_SYSTEM_CFLAGS PKG_CONFIG_ALLOW_SYSTEM_LIBS

# ---- Python: the installed module finds its own library
got=$(cd / && env -u ZKW_LIBRARY PYTHONPATH="$dest$pydir" /usr/bin/python3 -c \
	'import zkw; print(zkw.__file__); print(zkw._lib._name)' 2>&1)
[[ $got == "$dest$pydir/zkw.py"$'\n'"$dest$pydir/libzkw-client.so" ]] &&
	ok "/usr/bin/python3 imports the installed zkw, which loads the libzkw-client.so next to it" ||
	bad "import zkw from $dest$pydir: $got"

# ---- the unit
unit=$dest/lib/systemd/system/zkw-broker.service
grep -qx 'ExecStart=/usr/sbin/zkw-broker --config /etc/zkw/broker.conf' "$unit" &&
	ok "the unit starts /usr/sbin/zkw-broker --config /etc/zkw/broker.conf" ||
	bad "the unit's ExecStart: $(grep ExecStart= "$unit")"
for want in Type=notify User=zkw RuntimeDirectory=zkw StateDirectory=zkw NoNewPrivileges=yes \
	ProtectSystem=strict LimitNOFILE=65536 RemoveIPC=no 'ExecReload=/bin/kill -HUP $MAINPID'; do
	grep -qxF -- "$want" "$unit" || bad "the unit lacks $want"
done
# Settings that would hide the host's /dev/shm, delete segments or change
# the owner readers trust.
if grep -qE '^(PrivateDevices|PrivateIPC|DynamicUser|RemoveIPC|PrivateUsers)=(yes|true|1|on)' "$unit"; then
	bad "the unit hides /dev/shm or changes the owner: $(grep -E '^(PrivateDevices|PrivateIPC|DynamicUser|RemoveIPC|PrivateUsers)=' "$unit")"
else
	ok "the unit keeps the host's /dev/shm and a fixed user"
fi
# systemd-analyze verify needs the ExecStart binary and the man pages of
# Documentation=: a copy of the unit pointing into the DESTDIR.
sed -e "s|^ExecStart=/usr/sbin/|ExecStart=$dest/usr/sbin/|" -e "s| /etc/zkw/| $dest/etc/zkw/|" "$unit" \
	>"$tmp/zkw-broker.service"
if MANPATH=$dest/usr/share/man systemd-analyze verify "$tmp/zkw-broker.service" >"$tmp/verify.log" 2>&1 &&
	[[ ! -s $tmp/verify.log ]]; then
	ok "systemd-analyze verify: clean"
else
	bad "systemd-analyze verify:"$'\n'"$(cat "$tmp/verify.log")"
fi
exposure=$(systemd-analyze security --offline=yes "$tmp/zkw-broker.service" 2>/dev/null |
	sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
if [[ -n $exposure ]] && awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }'; then
	ok "systemd-analyze security: exposure $exposure (at most 2.0)"
else
	bad "systemd-analyze security: exposure '${exposure:-?}', want at most 2.0"
fi
# The unit's ExecStart line, run as --check-config, accepts the shipped file.
exec_start=$(sed -n 's/^ExecStart=//p' "$tmp/zkw-broker.service")
# shellcheck disable=SC2086 # the unit's words
if out=$($exec_start --check-config 2>&1) && grep -q '^zookeeper = ' <<<"$out"; then
	ok "the unit's ExecStart line accepts the shipped broker.conf (--check-config)"
else
	bad "$exec_start --check-config:"$'\n'"$out"
fi

# ---- sysusers.d: a system user zkw, no login
mkdir -p "$tmp/sysroot/etc"
if systemd-sysusers --root="$tmp/sysroot" "$dest/usr/lib/sysusers.d/zkw.conf" >"$tmp/sysusers.log" 2>&1 &&
	pw=$(grep '^zkw:' "$tmp/sysroot/etc/passwd") && grep -q '^zkw:' "$tmp/sysroot/etc/group"; then
	IFS=: read -r _ _ uid _ _ home shell <<<"$pw"
	((uid < 1000)) && [[ $home == /var/lib/zkw && $shell == */nologin ]] &&
		ok "sysusers.d/zkw.conf makes the system user zkw (uid $uid, home $home, shell $shell)" ||
		bad "sysusers.d/zkw.conf made: $pw"
else
	bad "systemd-sysusers on zkw.conf:"$'\n'"$(cat "$tmp/sysusers.log")"
fi

# ---- man pages: render cleanly, one per program, options = --help
for page in "$dest"/usr/share/man/man*/*; do
	name=$(basename "$page")
	if ! MANWIDTH=80 man --warnings -l "$page" >"$tmp/man.out" 2>"$tmp/man.err" || [[ -s $tmp/man.err ]]; then
		bad "man -l $name:"$'\n'"$(head -n 10 "$tmp/man.err")"
	elif ! grep -q "^ *${name%.*} - " "$tmp/man.out"; then
		bad "man -l $name: no NAME line '${name%.*} - ...'"
	elif ! grep -qF "zkw $version" "$tmp/man.out"; then
		bad "man -l $name: does not say zkw $version"
	else
		ok "man -l $name renders without warnings"
	fi
done
# options TEXT-FILE: "-x --long" or "--long" for each option the lines
# introduce, help (two-space indent) or scdoc (a line opening with *-).
help_options() {
	sed -nE 's/^  (-[A-Za-z]), (--[a-z0-9-]+).*/\1 \2/p; s/^      (--[a-z0-9-]+).*/\1/p' "$1" | sort -u
}
man_options() {
	sed -nE 's/^\*(-[A-Za-z])\*, \*(--[a-z0-9-]+)\*.*/\1 \2/p; s/^\*(--[a-z0-9-]+)\*.*/\1/p' "$1" | sort -u
}
for prog in "$dest"/usr/bin/zkw-* "$dest"/usr/sbin/zkw-*; do
	name=$(basename "$prog")
	section=1
	[[ $prog == */sbin/* ]] && section=8
	src=man/$name.$section.scd
	if [[ ! -f $dest/usr/share/man/man$section/$name.$section ]]; then
		bad "$name has no man page in section $section"
		continue
	fi
	"$prog" --help >"$tmp/help" 2>&1
	help_options "$tmp/help" >"$tmp/help.opts"
	man_options "$src" >"$tmp/man.opts"
	if [[ ! -s $tmp/help.opts ]]; then
		bad "$name --help lists no options"
	elif diff "$tmp/help.opts" "$tmp/man.opts" >"$tmp/opts.diff"; then
		ok "$name($section) documents exactly the $(wc -l <"$tmp/help.opts") options of $name --help"
	else
		bad "$name($section) and $name --help disagree (< help only, > man only):"$'\n'"$(grep '^[<>]' "$tmp/opts.diff")"
	fi
done

# ---- one version: every program says it
for prog in "$dest"/usr/sbin/zkw-broker "$dest"/usr/bin/zkw-*; do
	name=$(basename "$prog")
	out=$("$prog" --version 2>&1)
	[[ $out == "$name $version" ]] && ok "$name --version: $out" || bad "$name --version says '$out', want '$name $version'"
done

# ---- make uninstall: nothing left but an edited configuration
echo "key-of-an-operator = 1" >>"$dest/etc/zkw/broker.conf"
make -s install BUILD="$build" DESTDIR="$dest" PREFIX=/usr >/dev/null 2>&1
grep -q key-of-an-operator "$dest/etc/zkw/broker.conf" && ok "make install keeps an edited broker.conf" ||
	bad "make install overwrote an edited broker.conf"
if make -s uninstall BUILD="$build" DESTDIR="$dest" PREFIX=/usr >"$tmp/uninstall.log" 2>&1 &&
	make -s uninstall BUILD="$build" DESTDIR="$local" >>"$tmp/uninstall.log" 2>&1; then
	left=$( (cd "$dest" && find . \( -type f -o -type l \) -printf '%P\n'; cd "$local" && find . \( -type f -o -type l \) -printf '%P\n') | sort)
	[[ $left == etc/zkw/broker.conf ]] && ok "make uninstall removes everything but the edited broker.conf" ||
		bad "make uninstall left: $(tr '\n' ' ' <<<"$left")"
else
	bad "make uninstall failed:"$'\n'"$(cat "$tmp/uninstall.log")"
fi

exit $fail
