#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# tests/fault/soak.sh BUILD_DIR [--duration SECONDS] [--readers N] [--seed S]
#
# The long run of tests/fault/test_soak.c (`make soak`, SOAK_ARGS="--duration 600"):
# a real 3-node ensemble, a real zkw-broker (a plain and a pointer watch),
# N reader processes per segment checking every snapshot, and random faults
# (leader kill, follower stop, quorum loss, broker SIGKILL, broker session
# expiry) mixed with writes, pointer switches, deletes and recreates.
# Prints the counts (faults by kind, writes, snapshots checked, torn, lost,
# duplicates) and exits non-zero unless torn = lost = duplicates = 0.
# Bounded: the run is killed DURATION + 300 s after it starts.
set -uo pipefail

usage() { echo "usage: tests/fault/soak.sh BUILD_DIR [--duration SECONDS] [--readers N] [--seed S]" >&2; exit 2; }
[[ $# -ge 1 && -d $1 ]] || usage
build=$(cd "$1" && pwd)
shift
duration=180 readers=2 seed=
while [[ $# -gt 0 ]]; do
	case $1 in
	--duration) [[ ${2:-} =~ ^[0-9]+$ && $2 -gt 0 ]] || usage; duration=$2; shift 2 ;;
	--readers) [[ ${2:-} =~ ^[0-9]+$ && $2 -gt 0 && $2 -le 32 ]] || usage; readers=$2; shift 2 ;;
	--seed) [[ ${2:-} =~ ^[0-9]+$ ]] || usage; seed=$2; shift 2 ;;
	*) usage ;;
	esac
done
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=$build/tests/test_soak
[[ -x $bin ]] || { echo "soak: $bin not built (make all)" >&2; exit 1; }
rundir=$(mktemp -d "${TMPDIR:-/tmp}/zkw-soak.XXXXXX") || exit 1

echo "soak: ${duration}s, $readers readers per segment${seed:+, seed $seed}; log in $rundir/soak.log"
ZKW_BUILD=$build ZKW_ROOT=$root ZKW_ZK_SH=$root/tools/zk.sh ZKW_TEST_RUNDIR=$rundir \
	ZKW_SOAK_SECONDS=$duration ZKW_SOAK_READERS=$readers ZKW_SOAK_SEED=$seed \
	CMOCKA_MESSAGE_OUTPUT=stdout \
	timeout -k 10 $((duration + 300)) "$bin" >"$rundir/soak.log" 2>&1
rc=$?
grep -E '^soak|readers: readers=' "$rundir/soak.log"
if ((rc == 0)); then
	echo "soak: PASSED"
	rm -rf "$rundir"
else
	((rc == 124)) && echo "soak: timed out after $((duration + 300))s" >&2
	echo "soak: FAILED (exit $rc); last lines of $rundir/soak.log:" >&2
	grep -v -E '^\s+at |^java\.' "$rundir/soak.log" | tail -n 60 >&2
fi
exit $rc
