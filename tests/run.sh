#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# tests/run.sh BUILD_DIR - run the whole suite: BUILD_DIR/tests/test_* (cmocka
# binaries), tests/*/test_*.sh and tests/*/test_*.py, each under a timeout, each
# with its own ZKW_TEST_RUNDIR.  Prints every test's result line, the output
# of whatever failed, and exactly one closing line `N passed, N failed[, N
# skipped]`; exits non-zero on any failure.  Leaves no ZooKeeper behind: any
# JVM whose pid file lies under the run dir is killed, after each test and at
# exit.
#
# Environment: ZKW_TEST_TIMEOUT (seconds per test binary/script, default 300),
# ZKW_TEST_FILTER (regex on the test file name), ZKW_TEST_VERBOSE=1 (print
# every test's whole output), ZKW_TEST_KEEP=1 (keep the run dir).
set -uo pipefail

if [[ $# -ne 1 || ! -d $1 ]]; then
	echo "usage: tests/run.sh BUILD_DIR" >&2
	exit 2
fi
build=$(cd "$1" && pwd)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 2

timeout_s=${ZKW_TEST_TIMEOUT:-300}
filter=${ZKW_TEST_FILTER:-}
rundir=$(mktemp -d "${TMPDIR:-/tmp}/zkw-test.XXXXXX") || exit 2
export ZKW_BUILD=$build ZKW_ROOT=$root ZKW_ZK_SH=$root/tools/zk.sh
export CMOCKA_MESSAGE_OUTPUT=stdout
# Brokers the tests start keep no disk cache unless a test gives them a
# state directory of its own: the default, /var/lib/zkw, is the host's.
export ZKW_STATE_DIR=none

passed=0 failed=0 skipped=0 done=0 child=
failures=()

# Kill every JVM of ours still alive: a pid from a pid file under DIR that is
# not a zombie, is a java process, and names DIR on its command line (so a
# recycled pid is never hit).  Prints the pids it had to kill.
sweep() { # DIR
	local dir=$1 f pid stat state comm killed=()
	[[ -d $dir ]] || return 0
	while IFS= read -r -d '' f; do
		pid=$(<"$f") || continue
		[[ $pid =~ ^[0-9]+$ ]] || continue
		stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
		state=${stat##*) }
		state=${state%% *}
		[[ $state != Z && $state != X ]] || continue
		comm=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
		[[ $comm == java ]] || continue
		tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir" || continue
		kill -KILL "$pid" 2>/dev/null && killed+=("$pid")
	done < <(find "$dir" -name pid -type f -print0 2>/dev/null)
	# Wait (bounded) until they are really gone.
	for pid in "${killed[@]}"; do
		for _ in $(seq 100); do
			stat=$(cat "/proc/$pid/stat" 2>/dev/null) || break
			state=${stat##*) }
			[[ ${state%% *} == Z ]] && break
			sleep 0.02
		done
	done
	((${#killed[@]} == 0)) || echo "${killed[*]}"
}

on_exit() {
	local rc=$?
	((done)) && return
	trap - EXIT INT TERM
	if [[ -n $child ]]; then
		kill -TERM "$child" 2>/dev/null # timeout passes it on to the test
		for _ in $(seq 50); do kill -0 "$child" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$child" 2>/dev/null
		wait "$child" 2>/dev/null
	fi
	[[ -n $(sweep "$rundir") ]] && echo "run.sh: killed leftover ZooKeeper servers" >&2
	echo "run.sh: interrupted; run dir kept: $rundir" >&2
	exit $((rc ? rc : 1))
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

result() { # STATUS NAME
	case $1 in
	OK) printf '[       OK ] %s\n' "$2"; passed=$((passed + 1)) ;;
	FAILED) printf '[  FAILED  ] %s\n' "$2"; failed=$((failed + 1)); failures+=("$2") ;;
	SKIPPED) printf '[  SKIPPED ] %s\n' "$2"; skipped=$((skipped + 1)) ;;
	esac
}

show_log() { # LOG
	echo "---- output of the failed test (last 150 lines of $1) ----"
	tail -n 150 "$1"
	echo "----"
}

# How a non-zero exit reads.
describe_exit() { # STATUS
	case $1 in
	124) echo "timed out after ${timeout_s}s" ;;
	126 | 127) echo "could not be run (exit $1)" ;;
	*) (($1 > 128)) && echo "killed by signal $(($1 - 128)) ($(kill -l $(($1 - 128)) 2>/dev/null))" ||
		echo "exited with status $1" ;;
	esac
}

# One test file: run it, count its results, sweep its servers.
run_one() { # NAME KIND CMD...
	local name=$1 kind=$2 dir=$rundir/$1 log=$rundir/$1.log rc leaked
	shift 2
	mkdir -p "$dir"
	echo "==== $name"
	# In the background and waited for, so that a signal to this script is
	# acted on at once (on_exit stops the test and sweeps).
	ZKW_TEST_RUNDIR=$dir timeout -k 10 "$timeout_s" "$@" >"$log" 2>&1 </dev/null &
	child=$!
	local started=$SECONDS
	wait "$child" 2>/dev/null # no "Killed" job notice: we report it
	rc=$?
	child=
	# timeout says 124 (or 137 after -k); a test that killed itself with
	# SIGKILL also ends with 137: only the clock tells them apart.
	if ((rc == 124 || (rc == 137 && SECONDS - started >= timeout_s))); then
		rc=124
	fi
	[[ ${ZKW_TEST_VERBOSE:-} == 1 ]] && cat "$log"

	local before=$failed
	if [[ $kind == cmocka ]]; then
		local ran=0 line status test
		# A test is what a `[ RUN ]` line names; its result is the next
		# OK/FAILED/SKIPPED line for that name (cmocka repeats FAILED
		# names in its summary: those are not counted twice).
		local current=
		while IFS= read -r line; do
			if [[ $line =~ ^\[\ RUN\ +\]\ (.+)$ ]]; then
				[[ -n $current ]] && result FAILED "$name: $current (no result: crashed?)"
				current=${BASH_REMATCH[1]}
				ran=$((ran + 1))
			elif [[ -n $current && $line =~ ^\[\ *(OK|FAILED|SKIPPED)\ *\]\ (.+)$ ]]; then
				status=${BASH_REMATCH[1]}
				test=${BASH_REMATCH[2]}
				[[ $test == "$current" ]] || continue
				result "$status" "$name: $test"
				current=
			fi
		done <"$log"
		[[ -n $current ]] && result FAILED "$name: $current (no result: $(describe_exit "$rc"))"
		if ((rc == 77 && ran == 0 && failed == before)); then
			result SKIPPED "$name" # a binary that skips itself whole
		elif ((rc != 0 && failed == before)); then
			result FAILED "$name ($(describe_exit "$rc"))"
		elif ((ran == 0 && rc == 0)); then
			result OK "$name"
		fi
	else
		case $rc in
		0) result OK "$name" ;;
		77) result SKIPPED "$name" ;;
		*) result FAILED "$name ($(describe_exit "$rc"))" ;;
		esac
	fi

	echo "     ($name: $((SECONDS - started)) s)"
	leaked=$(sweep "$dir")
	if [[ -n $leaked ]]; then
		result FAILED "$name (left ZooKeeper running: pid $leaked, killed)"
	fi
	((failed > before)) && show_log "$log"
}

shopt -s nullglob
for bin in "$build"/tests/test_*; do
	[[ -f $bin && -x $bin && $bin != *.o && $bin != *.d ]] || continue
	name=$(basename "$bin")
	[[ -z $filter || $name =~ $filter ]] || continue
	run_one "$name" cmocka "$bin"
done
for script in tests/*/test_*.sh; do
	name=$(basename "$script")
	[[ -z $filter || $name =~ $filter ]] || continue
	run_one "$name" script bash "$script"
done
for script in tests/*/test_*.py; do
	name=$(basename "$script")
	[[ -z $filter || $name =~ $filter ]] || continue
	run_one "$name" script /usr/bin/python3 "$script"
done

[[ -n $(sweep "$rundir") ]] && echo "run.sh: killed leftover ZooKeeper servers" >&2
done=1
trap - EXIT INT TERM
if ((failed == 0)) && [[ -z ${ZKW_TEST_KEEP:-} ]]; then
	rm -rf "$rundir"
else
	echo "run dir kept: $rundir"
	((failed)) && printf 'failed: %s\n' "${failures[@]}"
fi
summary="$passed passed, $failed failed"
((skipped)) && summary+=", $skipped skipped"
echo "$summary"
((failed == 0))
