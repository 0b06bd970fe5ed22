#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# tests/fuzz/run.sh [SECONDS] [TARGET...] - build each libFuzzer target in
# tests/fuzz/fuzz_*.c with clang -fsanitize=fuzzer,address,undefined and
# run it for SECONDS (default 60) on a copy of its seed corpus
# tests/fuzz/corpus/<target>/ (new inputs go to build/fuzz/corpus/<target>,
# the checked-in seeds stay small). Prints per target: executions, coverage,
# features, corpus size and crashes. A crash's reproducer is left in
# build/fuzz/artifacts/<target>/: copy it into tests/fuzz/regress/<target>/
# once fixed, and tests/fuzz/test_fuzz_regress.c replays it in every `make test`.
# Exit status: 0 when no target crashed, 1 otherwise, 2 on bad usage.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root" || exit 2
secs=${1:-60}
[[ $secs =~ ^[0-9]+$ && $secs -gt 0 ]] || { echo "usage: tests/fuzz/run.sh [SECONDS] [TARGET...]" >&2; exit 2; }
shift $(($# ? 1 : 0))
CLANG=${CLANG:-clang}
command -v "$CLANG" >/dev/null || { echo "fuzz: $CLANG not found (apt-get install clang libclang-rt-dev)" >&2; exit 2; }

out=build/fuzz
mkdir -p "$out"
flags=(-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
	-D_GNU_SOURCE -DTHREADED -Iinclude -Ilib -Ibroker -Itests/fuzz -Itests/support
	-std=gnu11 -pthread -Wall -Wextra -Werror)
broker_lib=$(ls broker/zk/*.c broker/publish/*.c broker/daemon/*.c lib/*.c | grep -v -e '/main\.c$' -e '/control\.c$')

# What each target links besides itself.
deps() {
	case $1 in
	pointer) echo broker/zk/pointer.c ;;
	segment) ;;
	validate) echo broker/publish/validate.c ;;
	cli) echo "$broker_lib" ;;
	*) echo "$broker_lib" ;;
	esac
}
libs() {
	case $1 in
	pointer | segment) echo -lrt ;;
	validate) echo -ljson-c -lyaml ;; # json-c: the oracle fuzz_validate compares with
	*) echo -lzookeeper_mt -linih -lxxhash -lyaml -lrt ;;
	esac
}

targets=("$@")
if ((${#targets[@]} == 0)); then
	for f in tests/fuzz/fuzz_*.c; do
		t=${f#tests/fuzz/fuzz_}
		targets+=("${t%.c}")
	done
fi

failed=0
summary=()
for t in "${targets[@]}"; do
	src=tests/fuzz/fuzz_$t.c
	[[ -f $src ]] || { echo "fuzz: no $src" >&2; exit 2; }
	bin=$out/fuzz_$t
	echo "== fuzz_$t: build"
	# shellcheck disable=SC2046
	if ! "$CLANG" "${flags[@]}" -o "$bin" "$src" $(deps "$t") $(libs "$t"); then
		echo "fuzz: cannot build $bin" >&2
		exit 1
	fi
	corpus=$out/corpus/$t
	arts=$out/artifacts/$t
	mkdir -p "$corpus" "$arts"
	[[ -d tests/fuzz/corpus/$t ]] && cp -n tests/fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null
	before=$(find "$arts" -type f | wc -l)
	echo "== fuzz_$t: ${secs}s"
	# -fork would survive crashes but complicates stats; one process, and
	# a bounded wall clock around it in case a hang defeats -timeout.
	timeout -k 10 $((secs + 120)) "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
		-max_len=16384 -print_final_stats=1 -artifact_prefix="$arts/" "$corpus" \
		>"$out/fuzz_$t.log" 2>&1
	rc=$?
	execs=$(grep -oP 'stat::number_of_executed_units:\s*\K\d+' "$out/fuzz_$t.log" | tail -1)
	cov=$(grep -oP '#\d+\s+DONE\s+cov: \K\d+' "$out/fuzz_$t.log" | tail -1)
	[[ -z $cov ]] && cov=$(grep -oP 'cov: \K\d+' "$out/fuzz_$t.log" | tail -1)
	ft=$(grep -oP 'ft: \K\d+' "$out/fuzz_$t.log" | tail -1)
	after=$(find "$arts" -type f | wc -l)
	crashes=$((after - before))
	line="fuzz_$t: execs=${execs:-?} cov=${cov:-?} ft=${ft:-?} corpus=$(find "$corpus" -type f | wc -l) crashes=$crashes exit=$rc"
	summary+=("$line")
	echo "$line"
	if ((rc != 0 || crashes > 0)); then
		failed=1
		grep -E 'ERROR|SUMMARY|invariant|Test unit written' "$out/fuzz_$t.log" | head -20
	fi
done
echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
exit $failed
