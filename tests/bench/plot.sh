#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# plot.sh - draw the benchmark pictures of BENCHMARKS.md with gnuplot.
#
#   tests/bench/plot.sh DATA_DIR OUT_DIR
#
# Reads the --data files the benchmarks wrote into DATA_DIR (tab-separated,
# first word the series: bench_latency.dat "latency" and "seed" lines,
# bench_watches.dat "watches" lines) and writes three small SVGs into
# OUT_DIR: latency.svg (change latency against the number of readers, with
# the ZooKeeper floor and the wake floor), seed.svg (zkw against the seed's
# design, C and Python: latency to the last worker and memory) and
# watches.svg (cost against the number of watches). A picture whose data is
# missing is not drawn. Exit status 1 when gnuplot fails or is missing.
set -euo pipefail

(($# == 2)) || { echo "usage: tests/bench/plot.sh DATA_DIR OUT_DIR" >&2; exit 2; }
data=$1
out=$2
command -v gnuplot >/dev/null || { echo "plot.sh: gnuplot not installed (tools/deps.sh installs gnuplot-nox)" >&2; exit 1; }
mkdir -p "$out"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/zkwplot.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# One look for all three: small, readable on a light page.
common='set terminal svg size 760,430 dynamic font "Helvetica,12" linewidth 1.5 background rgb "white"
set encoding utf8
set grid lc rgb "#dddddd"
set border lc rgb "#555555"
set key top left Left reverse noautotitle samplen 2 spacing 1.1 box lc rgb "#cccccc"
set style line 1 lc rgb "#1f77b4" pt 7 ps 0.8
set style line 2 lc rgb "#d62728" pt 5 ps 0.8
set style line 3 lc rgb "#2ca02c" pt 9 ps 0.9
set style line 4 lc rgb "#7f7f7f" pt 13 ps 0.9 dt 2
set style line 5 lc rgb "#ff7f0e" pt 11 ps 0.9
set style line 6 lc rgb "#9467bd" pt 3 ps 0.9'

drawn=0

# ---- 1. change latency against the number of readers ---------------------------
if grep -q '^latency' "$data/bench_latency.dat" 2>/dev/null; then
	grep '^latency' "$data/bench_latency.dat" | awk -F'\t' '{ print $2, $3, $4, $5, $4 + ($2 > 1 ? $5 : 0) }' \
		>"$tmp/latency.txt"
	gnuplot <<EOF
$common
set output "$out/latency.svg"
set title "Change latency: ZooKeeper write -> the last reader holds it (median)"
set xlabel "reader processes"
set ylabel "microseconds"
set logscale xy
set xtics (1, 4, 16, 64, 256)
set format y "%g"
set xrange [0.8:320]
plot "$tmp/latency.txt" using 1:2 with linespoints ls 1 title "zkw: broker + readers", \
     "" using 1:5 with linespoints ls 4 title "ZooKeeper floor + wake floor", \
     "" using 1:3 with linespoints ls 2 title "ZooKeeper floor (a bare C client)", \
     "" using 1:4 with linespoints ls 3 title "wake floor (bare processes, one futex)"
EOF
	drawn=$((drawn + 1))
fi

# ---- 2. zkw against the seed, C and Python -----------------------------------------
if grep -q '^seed' "$data/bench_latency.dat" 2>/dev/null; then
	designs=("zkw C readers" "bare C sessions" "zkw Python" "kazoo (seed)" "Python wake floor")
	# rows: N, then for each design its latency (us) and PSS (MiB)
	grep '^seed' "$data/bench_latency.dat" | awk -F'\t' -v list="$(IFS='|'; echo "${designs[*]}")" '
		BEGIN { n = split(list, d, "|") }
		{ us[$2, $3] = $4; pss[$2, $3] = $5; if (!($2 in seen)) { seen[$2] = 1; order[++rows] = $2 } }
		END {
			for (r = 1; r <= rows; r++) {
				line = order[r]
				for (i = 1; i <= n; i++) line = line " " (((order[r], d[i]) in us) ? us[order[r], d[i]] : "NaN")
				for (i = 1; i <= n; i++) line = line " " (((order[r], d[i]) in pss) ? pss[order[r], d[i]] : "NaN")
				print line
			}
		}' >"$tmp/seed.txt"
	gnuplot <<EOF
$common
set output "$out/seed.svg"
set terminal svg size 900,430 dynamic font "Helvetica,12" linewidth 1.5 background rgb "white"
set multiplot layout 1,2 title "zkw against the seed's design (a session per worker): N workers, one change"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y
set format y "%g"
set xlabel "workers"
set key top left Left reverse samplen 1.5 spacing 1 font ",10"
set title "latency to the last worker (median, us)"
set yrange [100:*]
plot "$tmp/seed.txt" using 2:xtic(1) lc rgb "#1f77b4" title "${designs[0]}", \
     "" using 3 lc rgb "#aec7e8" title "${designs[1]}", \
     "" using 4 lc rgb "#2ca02c" title "${designs[2]}", \
     "" using 5 lc rgb "#d62728" title "${designs[3]}", \
     "" using 6 lc rgb "#bbbbbb" title "${designs[4]}"
set title "memory of the N workers (PSS, MiB)"
set yrange [1:*]
unset key
plot "$tmp/seed.txt" using 7:xtic(1) lc rgb "#1f77b4", "" using 8 lc rgb "#aec7e8", \
     "" using 9 lc rgb "#2ca02c", "" using 10 lc rgb "#d62728", "" using 11 lc rgb "#bbbbbb"
unset multiplot
EOF
	drawn=$((drawn + 1))
fi

# ---- 3. cost against the number of watches ------------------------------------------
if grep -q '^watches' "$data/bench_watches.dat" 2>/dev/null; then
	# N, zkw s, bare s, RSS KiB/watch, PSS KiB/watch, shm KiB/watch, reconcile/s, latency many, none
	grep '^watches' "$data/bench_watches.dat" | cut -f2- | tr '\t' ' ' >"$tmp/watches.txt"
	gnuplot <<EOF
$common
set output "$out/watches.svg"
set terminal svg size 1000,400 dynamic font "Helvetica,12" linewidth 1.5 background rgb "white"
set multiplot layout 1,3 title "One broker, N watches added on demand through its socket"
set logscale x
set format x "%g"
set xrange [70:14000]
set xlabel "watches"
set key bottom right Left reverse samplen 1.5 spacing 1 font ",10" opaque
set title "time until all N are valid (s)"
set logscale y
set format y "%g"
plot "$tmp/watches.txt" using 1:2 with linespoints ls 1 title "zkw: N subscriptions", \
     "" using 1:3 with linespoints ls 2 title "bare client: N gets"
set title "memory (MiB)"
set key top left
plot "$tmp/watches.txt" using 1:(\$4 * \$1 / 1024) with linespoints ls 1 title "broker RSS (+ its segments)", \
     "" using 1:(\$6 * \$1 / 1024) with linespoints ls 5 title "/dev/shm"
set title "change latency of one more watch (median, us)"
set key bottom right
unset logscale y
set yrange [0:*]
plot "$tmp/watches.txt" using 1:8 with linespoints ls 1 title "with N idle watches", \
     "" using 1:9 with linespoints ls 4 title "broker without them"
unset multiplot
EOF
	drawn=$((drawn + 1))
fi

echo "plot.sh: $drawn picture(s) in $out"
((drawn > 0))
