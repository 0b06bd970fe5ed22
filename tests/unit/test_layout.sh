#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# test_layout.sh - the rules of the source tree (docs/design.md, "The source
# tree") hold: each part includes only what it may, the installed libraries
# export only what their public headers declare, `make` builds the product
# without the test framework and a second `make` rebuilds nothing, every
# source file carries its SPDX line, and every design reference resolves.
#
#   tests/unit/test_layout.sh          exit 0 pass, 1 fail
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root" || exit 1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/zkw-layout.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0

ok() { echo "ok   - $1"; }
bad() {
	echo "FAIL - $1"
	fail=1
}

# includes FILE...: the #include lines of the files, "file: header" each.
includes() {
	grep -HE '^[[:space:]]*#[[:space:]]*include' "$@" |
		sed -E 's/^([^:]+):[[:space:]]*#[[:space:]]*include[[:space:]]*([<"][^>"]+[>"]).*/\1: \2/'
}

# forbid DESCRIPTION REGEX FILE...: no include line of the files matches.
forbid() {
	local what=$1 re=$2 hits
	shift 2
	hits=$(includes "$@" | grep -E -- "$re")
	if [[ -n $hits ]]; then
		bad "$what:"$'\n'"$hits"
	else
		ok "$what"
	fi
}

shopt -s nullglob
forbid "the watch library includes nothing about shared memory" \
	'segment\.h|client\.h|cache\.h|publish/|sys/mman\.h' broker/zk/*.[ch] include/zkw/watcher.h
forbid "the segment writer includes nothing about ZooKeeper" \
	'zookeeper|watcher\.h|zk/|zkw_zk\.h' broker/publish/*.[ch] include/zkw/segment.h
forbid "the header-only client includes nothing but libc, the kernel and zkw's public headers" \
	'"|zookeeper|urcu|watcher\.h' include/zkw/client.h include/zkw/segment.h include/zkw/common.h include/zkw/bundle.h
forbid "tools include only public headers and lib/" \
	'"(zk|publish|daemon)/|"(proc|zkh|chaos|bench)\.h"' tools/*.c lib/*.[ch]
forbid "client libraries include only public headers" '"' client/*.c client/python/*.c

# Exported symbols against the ZKW_API declarations of the public header.
# declared HEADER: the function names a header marks ZKW_API.
declared() {
	grep -oE 'ZKW_API[^(]*[^a-z_(]zkw_[a-z0-9_]+\(' "$1" | grep -oE 'zkw_[a-z0-9_]+\($' | tr -d '(' | sort -u
}
exports() { # KIND FILE
	if [[ $1 == static ]]; then
		nm -g --defined-only "$2" 2>/dev/null | awk 'NF == 3 && $2 ~ /[TDBR]/ {print $3}'
	else
		nm -D --defined-only "$2" 2>/dev/null | awk 'NF == 3 && $2 ~ /[TDBR]/ {print $3}'
	fi | grep -v '^_' | sort -u
}

make -s -j2 all BUILD="$tmp/build" >"$tmp/make1.log" 2>&1 || {
	bad "make all failed:"
	tail -n 30 "$tmp/make1.log"
	exit 1
}
if make -n all BUILD="$tmp/build" -B 2>/dev/null | grep -q -- '-lcmocka'; then
	bad "make all links the test framework"
else
	ok "make all builds the product without cmocka"
fi
if make -q all BUILD="$tmp/build" >/dev/null 2>&1; then
	ok "a second make rebuilds nothing"
else
	bad "a second make would rebuild: $(make -n all BUILD="$tmp/build" 2>&1 | head -5)"
fi

check_exports() { # LIBRARY KIND EXPECTED-FILE
	local lib=$1 kind=$2 expected=$3 got extra missing
	got=$(exports "$kind" "$lib")
	extra=$(comm -13 "$expected" <(echo "$got"))
	missing=$(comm -23 "$expected" <(echo "$got"))
	if [[ -n $extra || -n $missing || -z $got ]]; then
		bad "$(basename "$lib") exports differ from its header: extra [${extra//$'\n'/ }] missing [${missing//$'\n'/ }]"
	else
		ok "$(basename "$lib") exports exactly its header's $(wc -l <"$expected") functions"
	fi
}
declared include/zkw/watcher.h >"$tmp/watcher.syms"
declared include/zkw/cache.h >"$tmp/cache.syms"
grep -ohE 'ZKW_API[^(]*[^a-z_(]zkw_py_[a-z0-9_]+\(' client/python/zkw_py.c | grep -oE 'zkw_py_[a-z0-9_]+\($' |
	tr -d '(' | sort -u >"$tmp/py.syms"
check_exports "$tmp/build/libzkw.a" static "$tmp/watcher.syms"
check_exports "$tmp/build/libzkw-cache.so" dynamic "$tmp/cache.syms"
check_exports "$tmp/build/libzkw-client.so" dynamic "$tmp/py.syms"

# Every tracked source file names its licence.
missing=()
while IFS= read -r f; do
	head -n 3 "$f" | grep -q 'SPDX-License-Identifier: Apache-2.0' || missing+=("$f")
done < <(git ls-files '*.c' '*.h' '*.sh' '*.py' '*.in' Makefile .ci/run)
if ((${#missing[@]})); then
	bad "files without an SPDX line: ${missing[*]}"
else
	ok "every source file has an SPDX line"
fi
[[ -f LICENSE ]] && grep -q 'Apache License' LICENSE && ok "LICENSE is Apache-2.0" || bad "no Apache-2.0 LICENSE"

# Design references resolve: no file cites a DESIGN.md that is not in the
# tree, and every "contract item N" exists in docs/design.md.
stray=$(git grep -nE '(^|[^/])DESIGN\.md' -- ':!docs/design.md' ':!tests/unit/test_layout.sh' || true)
[[ -z $stray ]] && ok "no reference to a DESIGN.md outside the tree" || bad "stale DESIGN.md references:"$'\n'"$stray"
if [[ -f docs/design.md ]]; then
	items=$(git grep -ohE 'contract (item )?[0-9]+' -- '*.c' '*.h' '*.py' '*.sh' | grep -oE '[0-9]+' | sort -un)
	unresolved=()
	section=$(awk '/^#+ .*[Ww]atch contract/ {on = 1; next} on && /^#+ / {exit} on' docs/design.md)
	for n in $items; do
		grep -qE "^$n\. " <<<"$section" || unresolved+=("$n")
	done
	((${#unresolved[@]} == 0)) && ok "every cited contract item is in docs/design.md" ||
		bad "contract items cited but not in docs/design.md: ${unresolved[*]}"
else
	bad "docs/design.md is missing"
fi

exit $fail
