#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# tools/deps.sh - install the Debian packages zkw needs to build and test,
# only those that are missing.  A no-op (a single dpkg-query) when all are
# present; otherwise one `apt-get update` and one `apt-get install`.  Exits 1
# naming what is missing when it cannot install (not root and no sudo, no
# network, ...).
set -euo pipefail

packages=(
	# build
	make gcc g++ clang pkg-config libc6-dev
	# libFuzzer and the sanitizer runtimes clang needs for `make fuzz`
	libclang-rt-14-dev
	libzookeeper-mt-dev liburcu-dev libcmocka-dev
	# the broker's configuration file; libsystemd0 (for sd_notify under its
	# unit, loaded on demand) comes with systemd below
	libinih-dev
	# the checksum of the broker's state files (xxHash); a watch's content
	# validation (libyaml; JSON is zkw's own, json-c is the tests' oracle)
	libxxhash-dev libjson-c-dev libyaml-dev
	# ZooKeeper server for the tests (it needs a Java runtime; the harness
	# uses slf4j-simple from libslf4j-java for its log)
	zookeeper default-jre-headless libslf4j-java
	# the harness and the runner: setpriv (util-linux), timeout (coreutils),
	# pgrep (procps), nc for humans and benchmarks, socat to talk to the
	# broker's control socket by hand (and the test that shows it works)
	util-linux coreutils procps findutils netcat-openbsd socat
	# benchmark baseline (run with /usr/bin/python3); gnuplot draws the
	# benchmark plots (gnuplot-nox: no X, its svg terminal is built in)
	python3 python3-kazoo gnuplot-nox
	# install and packaging: man pages (scdoc, man-db renders them in the
	# test), the unit's checks (systemd-analyze, systemd-sysusers), `make
	# deb` (dpkg-buildpackage, debhelper, dh_python3) and `make deb-check`
	scdoc man-db systemd dpkg-dev debhelper dh-python lintian
	# promtool checks zkw-inspect --prometheus (tests/integration/test_metrics.c)
	prometheus
)

missing=()
status=$(dpkg-query -W -f='${Package} ${Status}\n' "${packages[@]}" 2>/dev/null || true)
for p in "${packages[@]}"; do
	grep -qx "$p install ok installed" <<<"$status" || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0

echo "deps.sh: installing missing packages: ${missing[*]}" >&2
if ((EUID == 0)); then
	sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
	sudo=(sudo -n)
else
	echo "deps.sh: cannot install (not root and no password-less sudo); missing: ${missing[*]}" >&2
	echo "deps.sh: run as root: apt-get install ${missing[*]}" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get update -q >&2; then
	echo "deps.sh: apt-get update failed; missing: ${missing[*]}" >&2
	exit 1
fi
if ! "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
	echo "deps.sh: apt-get install failed; missing: ${missing[*]}" >&2
	exit 1
fi
# Check again: apt can succeed without installing what was asked for.
status=$(dpkg-query -W -f='${Package} ${Status}\n' "${missing[@]}" 2>/dev/null || true)
still=()
for p in "${missing[@]}"; do
	grep -qx "$p install ok installed" <<<"$status" || still+=("$p")
done
if ((${#still[@]})); then
	echo "deps.sh: still missing after install: ${still[*]}" >&2
	exit 1
fi
command -v java >/dev/null || { echo "deps.sh: no java on PATH after install" >&2; exit 1; }
echo "deps.sh: done" >&2
