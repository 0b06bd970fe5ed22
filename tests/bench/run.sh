#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# run.sh - zkw's benchmarks side by side, written to BENCHMARKS.md.
#
#   tests/bench/run.sh BUILD_DIR [--quick] [--out FILE]
#
# Starts its own loopback ZooKeeper (tools/zk.sh, forceSync=no), runs every
# benchmark in BUILD_DIR/bench (bench_read, bench_cache and bench_python
# when built, then bench_latency, which warms ZooKeeper up with >= 2,000
# operations before any timing, bench_broker, bench_watches and
# bench_coldstart, whose state directories are on the file system of the
# work directory (${TMPDIR:-/tmp}: a disk, not tmpfs, for its fsync
# figures), and bench_bundle (a bundle of 100 children and a 20 MiB chunked
# configuration against bare clients doing the same reads); last
# bench_fleet, against a 3-member ensemble started for it), draws the
# pictures (tests/bench/plot.sh, gnuplot: docs/bench/*.svg next to the
# report), prints the tables and writes the report (default: BENCHMARKS.md
# at the repository root). --quick is a smoke run (about a minute) with the
# same figures from fewer samples and smaller sizes; it is what
# tests/bench/test_bench_quick.sh runs. Every step is bounded by `timeout`;
# the ZooKeeper servers and every process the benches start are stopped on
# any exit (trap here, atexit/signal paths and PDEATHSIG in the C benches).
# The Python benches import client/python/zkw.py with BUILD_DIR's
# libzkw-client.so (PYTHONPATH and ZKW_LIBRARY are set here).
#
# Exit status: 0 when every benchmark completed (targets may still be
# missed: they are figures, reported as met/missed, not test verdicts),
# 1 when a benchmark failed or timed out, 2 on bad usage.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

usage() {
	echo "usage: tests/bench/run.sh BUILD_DIR [--quick] [--out FILE]" >&2
	exit 2
}

(($# >= 1)) || usage
build=$1
shift
quick=0
out=$root/BENCHMARKS.md
while (($#)); do
	case $1 in
	--quick) quick=1; shift ;;
	--out) out=${2:?--out needs a file}; shift 2 ;;
	-h | --help) usage ;;
	*) usage ;;
	esac
done
[[ -d $build ]] || { echo "run.sh: $build: no such build directory (run make first)" >&2; exit 2; }
build=$(cd "$build" && pwd)
mkdir -p "$(dirname "$out")"
for f in "$build/zkw-broker" "$build/libzkw-client.so" "$build/bench/bench_latency" "$build/bench/bench_broker" \
	"$build/bench/bench_watches" "$build/bench/bench_coldstart" "$build/bench/bench_bundle" \
	"$build/bench/bench_fleet"; do
	[[ -x $f ]] || { echo "run.sh: $f missing: build it with make" >&2; exit 1; }
done

qflag=()
((quick)) && qflag=(--quick)
if ((quick)); then
	t_read=60 t_cache=60 t_py=60 t_lat=120 t_brk=90 t_watch=120 t_cold=90 t_bundle=90 t_fleet=90
	fleet_args=(--brokers 5 --watches 20 --reconcile 3)
else
	t_read=120 t_cache=120 t_py=180 t_lat=600 t_brk=240 t_watch=600 t_cold=180 t_bundle=240 t_fleet=400
	fleet_args=(--brokers 50 --watches 200 --reconcile 20)
fi
export PYTHONPATH=$root/client/python${PYTHONPATH:+:$PYTHONPATH} ZKW_LIBRARY=$build/libzkw-client.so
# A sanitizer build's libzkw-client.so (make check, make tsan) needs its
# runtime loaded before Python's: bench_python.py preloads these into itself.
ZKW_BENCH_PY_PRELOAD=$(ldd "$ZKW_LIBRARY" 2>/dev/null |
	awk '$1 ~ /^lib(asan|tsan)/ && $2 == "=>" { first = first " " $3 } $1 ~ /^libubsan/ && $2 == "=>" { last = last " " $3 }
	     END { print first last }' | sed 's/^ *//')
export ZKW_BENCH_PY_PRELOAD
export ZKW_ZK_SH=$root/tools/zk.sh

work=$(mktemp -d "${TMPDIR:-/tmp}/zkwbench.XXXXXX")
zkdir=$work/zk
fleetdir=$work/fleet
zk_started=0 fleet_started=0
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if ((zk_started)); then
		"$root/tools/zk.sh" stop "$zkdir" >/dev/null 2>&1 || true
	fi
	if ((fleet_started)); then
		"$root/tools/zk.sh" stop "$fleetdir" >/dev/null 2>&1 || true
	fi
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

started_at=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
t0=$SECONDS
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

echo "== zkw benchmarks$( ((quick)) && echo ' (--quick)') - $(date)"
echo "== starting a loopback ZooKeeper in $zkdir"
zk_started=1
hosts=$("$root/tools/zk.sh" start "$zkdir" --nodes 1 --tick 200)
grep -q '^forceSync=no' "$zkdir/1/zoo.cfg" || { echo "run.sh: zoo.cfg lacks forceSync=no" >&2; exit 1; }
zk_version=$("$root/tools/zk.sh" 4lw "$zkdir" 1 srvr | sed -n 's/^Zookeeper version: *//p' | cut -d, -f1)
echo "== ZooKeeper ${zk_version:-?} at $hosts"

failed=()
sections=()
# run NAME TIMEOUT CMD... : stdout (markdown) into $work/NAME.md, progress
# on the terminal; a failure or timeout is recorded, the run goes on.
run() {
	local name=$1 limit=$2 rc=0 t=$SECONDS
	shift 2
	echo "== $name: $*"
	# stderr through tee in a pipeline (not a process substitution): its
	# log is complete when the failure report below reads it.
	set +e
	timeout --kill-after=10 "$limit" "$@" 2>&1 >"$work/$name.md" | tee "$work/$name.log" >&2
	rc=${PIPESTATUS[0]}
	set -e
	if ((rc != 0)); then
		failed+=("$name")
		{
			echo "## $name: FAILED"
			echo
			((rc == 124)) && echo "Timed out after $limit s." || echo "Exit status $rc."
			echo
			echo '```'
			tail -n 20 "$work/$name.log" 2>/dev/null || true
			echo '```'
			echo
		} >>"$work/$name.md"
	fi
	# Give a section without its own heading one.
	if ! head -n1 "$work/$name.md" | grep -q '^#'; then
		local title
		case $name in
		bench_read) title="Read path: poll and read against a plain load and memcpy (bench_read)" ;;
		bench_cache) title="Multi-threaded reader cache (bench_cache)" ;;
		plots) title="Pictures (tests/bench/plot.sh)" ;;
		*) title=$name ;;
		esac
		{ printf '## %s\n\n' "$title"; cat "$work/$name.md"; } >"$work/$name.md.h"
		mv "$work/$name.md.h" "$work/$name.md"
	fi
	sections+=("$name")
	echo "== $name: $( ((rc == 0)) && echo done || echo "FAILED ($rc)") in $((SECONDS - t)) s"
	cat "$work/$name.md"
}

if [[ -x $build/bench/bench_read ]]; then
	run bench_read "$t_read" "$build/bench/bench_read" "${qflag[@]}" --markdown
else
	echo "== bench_read not built: skipped"
fi
if [[ -x $build/bench/bench_cache ]]; then
	run bench_cache "$t_cache" "$build/bench/bench_cache" "${qflag[@]}" --markdown
else
	echo "== bench_cache not built: skipped"
fi
if [[ -x $build/bench/bench_python ]]; then
	run bench_python "$t_py" "$build/bench/bench_python" --script "$here/bench_python.py" --python /usr/bin/python3 \
		"${qflag[@]}"
else
	echo "== bench_python not built: skipped"
fi
run bench_latency "$t_lat" "$build/bench/bench_latency" -z "$hosts" --broker "$build/zkw-broker" \
	--kazoo-worker "$here/kazoo_worker.py" --py-worker "$here/bench_python.py" --python /usr/bin/python3 \
	--warmup 2500 --data "$work/bench_latency.dat" "${qflag[@]}"
run bench_broker "$t_brk" "$build/bench/bench_broker" -z "$hosts" --broker "$build/zkw-broker" "${qflag[@]}"
run bench_watches "$t_watch" "$build/bench/bench_watches" -z "$hosts" --broker "$build/zkw-broker" \
	--data "$work/bench_watches.dat" "${qflag[@]}"
# The state directory: cold starts with ZooKeeper unreachable (a closed
# port, not this server stopped), save cost, saving during a storm.
run bench_coldstart "$t_cold" "$build/bench/bench_coldstart" -z "$hosts" --broker "$build/zkw-broker" \
	--dir "$work" "${qflag[@]}"
# Bundles and chunked content (issue 15): change -> every reader, against a
# bare client's gets of the same children or chunks.
run bench_bundle "$t_bundle" "$build/bench/bench_bundle" -z "$hosts" --broker "$build/zkw-broker" "${qflag[@]}"

# The fleet gets an ensemble of its own, started only now so that its JVMs
# do not disturb the other benchmarks; it restarts every member.
"$root/tools/zk.sh" stop "$zkdir" >/dev/null 2>&1 || true
zk_started=0
echo "== starting a 3-member ZooKeeper ensemble in $fleetdir"
fleet_started=1
fleet_hosts=$("$root/tools/zk.sh" start "$fleetdir" --nodes 3 --tick 200)
echo "== ensemble at $fleet_hosts"
run bench_fleet "$t_fleet" "$build/bench/bench_fleet" --zk-dir "$fleetdir" --zk-sh "$root/tools/zk.sh" \
	--broker "$build/zkw-broker" "${fleet_args[@]}" --data "$work/bench_fleet.dat" "${qflag[@]}"
"$root/tools/zk.sh" stop "$fleetdir" >/dev/null 2>&1 || true
fleet_started=0

# The pictures, next to the report: docs/bench/*.svg.
plotdir=$(cd "$(dirname "$out")" && pwd)/docs/bench
run plots 60 "$here/plot.sh" "$work" "$plotdir"
# Its section is a log, not a table: only a failure is reported.
grep -q '^## plots: FAILED' "$work/plots.md" || : >"$work/plots.md"

elapsed=$((SECONDS - t0))

# ---- the report ----------------------------------------------------------------
cpu_model=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n1)
virt=$(systemd-detect-virt 2>/dev/null || true)
kazoo_version=$(/usr/bin/python3 -c 'import importlib.metadata as m; print(m.version("kazoo"))' 2>/dev/null || echo '?')
{
	echo "# zkw benchmarks"
	echo
	echo "Generated by \`make bench\` (\`tests/bench/run.sh BUILD$( ((quick)) && echo ' --quick')\`)"
	echo "on $started_at in $elapsed s. Every figure below comes from this one run, against one"
	echo "loopback ZooKeeper server started for it (tools/zk.sh, tickTime 200 ms, forceSync=no),"
	echo "warmed up with 2,500 operations before any timing; the fleet simulation has a 3-member"
	echo "ensemble of its own (same settings)."
	((quick)) && echo "**This is a --quick smoke run: few samples, figures are indicative only.**"
	echo
	echo "| machine | |"
	echo "|---|---|"
	echo "| CPU | ${cpu_model:-?} |"
	echo "| cores | $(nproc) online$([[ -n $virt && $virt != none ]] && echo ", virtualised ($virt)") |"
	echo "| memory | $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) |"
	echo "| kernel | $(uname -sr) |"
	echo "| gcc | $(gcc --version | head -n1) |"
	echo "| ZooKeeper | ${zk_version%%-\$*} (Debian package $(dpkg-query -W -f='${Version}' zookeeper 2>/dev/null || echo '?')) |"
	echo "| Java | $(java -version 2>&1 | head -n1) |"
	echo "| Python / kazoo | $(/usr/bin/python3 --version 2>&1) / kazoo $kazoo_version |"
	echo "| load average before the run | $load_before |"
	echo
	if ((${#failed[@]})); then
		echo "**Failed benchmarks: ${failed[*]}** (see their sections)."
		echo
	fi
	echo "## Targets at a glance"
	echo
	echo "Every row of the sections below that carries a verdict (docs/design.md, \"Performance targets\")."
	echo "Ratios use medians."
	echo
	echo "| bench | row (columns as in its section) |"
	echo "|---|---|"
	for s in "${sections[@]}"; do
		grep -E '\| *(met|\*\*missed\*\*|PASS|MISS|FAIL) *\|' "$work/$s.md" 2>/dev/null |
			sed -e 's/^| *//' -e 's/ *| *$//' -e 's/ *| */ · /g' -e "s/^/| $s | /" -e 's/$/ |/' || true
	done
	echo
	if ls "$plotdir"/*.svg >/dev/null 2>&1; then
		echo "## Pictures"
		echo
		echo "Drawn by \`make bench\` from the figures below (tests/bench/plot.sh, gnuplot)."
		echo
		[[ -f $plotdir/latency.svg ]] && printf '%s\n\n' \
			"![Change latency against the number of readers, with the ZooKeeper floor and the wake floor](docs/bench/latency.svg)"
		[[ -f $plotdir/seed.svg ]] && printf '%s\n\n' \
			"![zkw against the seed's design, C and Python: latency to the last worker and memory](docs/bench/seed.svg)"
		[[ -f $plotdir/watches.svg ]] && printf '%s\n\n' \
			"![Cost against the number of watches: start-up, memory, change latency](docs/bench/watches.svg)"
	fi
	for s in "${sections[@]}"; do
		cat "$work/$s.md"
		echo
	done
} >"$out.tmp"
mv "$out.tmp" "$out"
echo "== wrote $out ($elapsed s)"

if ((${#failed[@]})); then
	echo "== FAILED: ${failed[*]}" >&2
	exit 1
fi
echo "== all benchmarks completed"
