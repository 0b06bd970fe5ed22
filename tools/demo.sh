#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# demo.sh BUILD_DIR - the seed's walkthrough, replayed on loopback by zkw.
#
# Starts a ZooKeeper on 127.0.0.1, pushes a settings file, starts one
# zkw-broker for two watches (a config file, and a pointer file), then runs
# zkw-example against the broker's shared memory in polling mode, in event
# mode and in pointer mode while it pushes the walkthrough's changes. Prints
# what a user would see, checks it, and stops everything it started.
set -euo pipefail

build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/$build
[[ -x $bin/zkw-broker ]] || bin=$build
work=$(mktemp -d /tmp/zkw-demo.XXXXXX)
tag=demo$$
shm_conf=zkw.$tag.myconfig
shm_pointer=zkw.$tag.pointer1
broker_pid=
example_pid=
failed=0

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { sed 's/^/    | /' "$1"; }

cleanup() {
	local rc=$?
	[[ -n $example_pid ]] && kill "$example_pid" 2>/dev/null && wait "$example_pid" 2>/dev/null
	if [[ -n $broker_pid ]] && kill "$broker_pid" 2>/dev/null; then
		wait "$broker_pid" 2>/dev/null || true
	fi
	"$root/tools/zk.sh" stop "$work/zk" >/dev/null 2>&1 || true
	if ((rc == 0 && failed == 0)); then
		rm -rf "$work"
	else
		echo "demo: kept $work for inspection" >&2
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Wait (bounded) until FILE has COUNT lines matching PATTERN.
wait_for() { # FILE PATTERN [COUNT] [TIMEOUT_S]
	local file=$1 pattern=$2 count=${3:-1} deadline=$((SECONDS + ${4:-15}))
	while (($(grep -cF -- "$pattern" "$file" 2>/dev/null || true) < count)); do
		if ((SECONDS >= deadline)); then
			echo "demo: timed out waiting for \"$pattern\" in $file:" >&2
			show "$file" >&2
			failed=1
			return 1
		fi
		sleep 0.05
	done
}

expect_count() { # FILE PATTERN COUNT
	local n
	n=$(grep -cF -- "$2" "$1" || true)
	if ((n != $3)); then
		echo "demo: expected \"$2\" $3 time(s), saw it $n time(s)" >&2
		failed=1
	fi
}

generation_of() { # SHM
	"$bin/zkw-inspect" "$1" --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["generation"])'
}

# The broker republishes on every ZooKeeper version, even for identical
# bytes: a rising generation proves it saw the push.
wait_generation_above() { # SHM GENERATION
	local deadline=$((SECONDS + 15))
	while (($(generation_of "$1") <= $2)); do
		if ((SECONDS >= deadline)); then
			echo "demo: segment $1 stayed at generation $2" >&2
			failed=1
			return 1
		fi
		sleep 0.05
	done
}

push() { # FILE ID PATH
	printf '    $ zkw-push -f %s -i %s -p %s -z %s\n' "$(basename "$1")" "$2" "$3" "$hosts"
	"$bin/zkw-push" -f "$1" -i "$2" -p "$3" -z "$hosts" | sed 's/^/    /'
}

start_example() { # LOG ARGS...
	local log=$1
	shift
	printf '    $ zkw-example %s\n' "$*"
	"$bin/zkw-example" "$@" --exit-after 60 >"$log" 2>&1 &
	example_pid=$!
}

stop_example() {
	kill -INT "$example_pid" 2>/dev/null || true
	wait "$example_pid" 2>/dev/null || true
	example_pid=
}

say "Starting ZooKeeper on 127.0.0.1"
hosts=$("$root/tools/zk.sh" start "$work/zk" --nodes 1)
echo "    ZooKeeper serving at $hosts"

say "Pushing a settings file"
echo "My configuration string here. Typically YAML or JSON" >"$work/settings.txt"
push "$work/settings.txt" myconfig /tmp/

say "Starting zkw-broker: one session, two watches, two segments"
echo "    $ zkw-broker -z $hosts -f /tmp/myconfig --shm $shm_conf -f /tmp_pointers/pointer1 -p --shm $shm_pointer --socket $work/broker.sock"
"$bin/zkw-broker" -z "$hosts" -f /tmp/myconfig --shm "$shm_conf" \
	-f /tmp_pointers/pointer1 -p --shm "$shm_pointer" --unlink-on-exit \
	--socket "$work/broker.sock" 2>"$work/broker.log" &
broker_pid=$!
wait_for "$work/broker.log" "publishing /tmp_pointers/pointer1"

say "Polling mode: the worker polls the segment once a second"
start_example "$work/poll.log" --shm "$shm_conf" --poll -s 1
wait_for "$work/poll.log" "Contents: My configuration string here"
echo "NEW My configuration string here. Typically YAML or JSON" >"$work/settings.txt"
push "$work/settings.txt" myconfig /tmp/
wait_for "$work/poll.log" "Contents: NEW My configuration string here"
stop_example
show "$work/poll.log"

say "Event mode: each handler fires once and only once"
start_example "$work/event.log" --shm "$shm_conf" --event
wait_for "$work/event.log" "Use a keyboard interrupt"
echo "EVENT TRIGGER My configuration string here. Typically YAML or JSON" >"$work/settings.txt"
push "$work/settings.txt" myconfig /tmp/
wait_for "$work/event.log" "Your file contents: EVENT TRIGGER"
echo "    (pushing the same bytes again: a new ZooKeeper version, but no event)"
before=$(generation_of "$shm_conf")
push "$work/settings.txt" myconfig /tmp/
wait_generation_above "$shm_conf" "$before"
stop_example
show "$work/event.log"
expect_count "$work/event.log" "Your file contents: NEW" 1
expect_count "$work/event.log" "Your file contents: EVENT TRIGGER" 1
expect_count "$work/event.log" "The valid state is now True" 1

say "Pointer mode: the pointer file names the real config file"
echo "/tmp/myconfig" >"$work/settings.txt"
push "$work/settings.txt" pointer1 /tmp_pointers/
echo "this is another config" >"$work/settings2.txt"
push "$work/settings2.txt" myconfig2 /tmp/
start_example "$work/pointer.log" --shm "$shm_pointer" --event
wait_for "$work/pointer.log" "Your file contents: EVENT TRIGGER"
wait_for "$work/pointer.log" "Use a keyboard interrupt"
echo "    (the pointer file ends with a newline from echo: zkw trims it)"
echo "    switching the pointer to /tmp/myconfig2"
echo "/tmp/myconfig2" >"$work/settings.txt"
push "$work/settings.txt" pointer1 /tmp_pointers/
wait_for "$work/pointer.log" "Your file contents: this is another config"
echo "    updating the pointed-at file"
echo "this is another config I ADDED NEW STUFF" >"$work/settings2.txt"
push "$work/settings2.txt" myconfig2 /tmp/
wait_for "$work/pointer.log" "Your file contents: this is another config I ADDED NEW STUFF"
stop_example
show "$work/pointer.log"
expect_count "$work/pointer.log" "The valid state is now True" 1

say "What the segment holds (zkw-inspect)"
"$bin/zkw-inspect" "$shm_pointer" | sed 's/^/    /'

say "On demand: a worker subscribes to a path no -f named, through the broker's socket"
echo "a config nobody configured the broker for" >"$work/settings3.txt"
push "$work/settings3.txt" ondemand /tmp/
start_example "$work/demand.log" -f /tmp/ondemand --broker --socket "$work/broker.sock" --event
wait_for "$work/demand.log" "Your file contents: a config nobody configured"
wait_for "$work/demand.log" "Use a keyboard interrupt"
echo "a config nobody configured the broker for, CHANGED" >"$work/settings3.txt"
push "$work/settings3.txt" ondemand /tmp/
wait_for "$work/demand.log" "Your file contents: a config nobody configured the broker for, CHANGED"
echo "    $ echo LIST | socat - UNIX-CONNECT:$work/broker.sock"
echo LIST | socat - "UNIX-CONNECT:$work/broker.sock" | sed 's/^/    /'
stop_example
show "$work/demand.log"
expect_count "$work/demand.log" "Your file contents: a config nobody configured the broker for, CHANGED" 1

say "Stopping the broker (SIGTERM)"
kill -TERM "$broker_pid"
wait "$broker_pid" || true
broker_pid=
show "$work/broker.log"

if ((failed)); then
	say "demo FAILED"
	exit 1
fi
say "demo finished: every change was delivered once, in order"
