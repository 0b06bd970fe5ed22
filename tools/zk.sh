#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# zk.sh - local Apache ZooKeeper servers on 127.0.0.1 for tests, the demo and
# the benchmarks.  One directory holds one cluster: DIR/N/{zoo.cfg,data/myid,
# zk.log,pid,port} for members N = 1..nodes, and DIR/hosts (connect string).
#
#   hosts=$(tools/zk.sh start /tmp/zk --nodes 3 --tick 200)
#   tools/zk.sh member-kill /tmp/zk "$(tools/zk.sh leader /tmp/zk)"
#   tools/zk.sh stop /tmp/zk
#
# Members are numbered from 1 here (they are ZooKeeper's myid); the C harness
# (tests/support/zkh.c) numbers them from 0 and maps member i to DIR/(i+1).
#
# Servers started by `start` outlive this script (the demo needs that); use
# `run` to keep them tied to a foreground zk.sh (they die with it, even on
# SIGKILL, through setpriv --pdeathsig), and `exec` to turn the calling
# process into one member's JVM (what the C harness does after setting its own
# parent-death signal).
set -euo pipefail

readonly JAVA_CP=/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar
readonly START_TIMEOUT_S=${ZKW_ZK_START_TIMEOUT:-30}
readonly STOP_TIMEOUT_S=${ZKW_ZK_STOP_TIMEOUT:-5}
# Small, fast-starting JVM (the heap may grow to 512 MiB: chunked tests push
# 20 MiB configurations, which the server keeps in its log cache).  C1 only and
# the serial collector halve start-up on 2 cores; no perf-data file in /tmp.
readonly JVM_FLAGS=(-Xms16m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1
	-Xshare:auto -XX:-UsePerfData -Xss512k -Djava.net.preferIPv4Stack=true
	-Dzookeeper.admin.enableServer=false -Dzookeeper.jmx.log4j.disable=true
	-Dzookeeper.snapshot.trust.empty=true -Dzookeeper.fastleader.minNotificationInterval=50
	-Dorg.slf4j.simpleLogger.showDateTime=true
	-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS)

usage() {
	cat <<'EOF'
usage: zk.sh COMMAND DIR [ARGS]
  start DIR [--nodes 1|3] [--tick MS]   start servers in the background, wait
                                        until they serve, print connect string
  run DIR [--nodes 1|3] [--tick MS]     like start, then stay in the foreground
                                        until SIGINT/SIGTERM; servers die with it
  prepare DIR [--nodes N] [--tick MS]   only pick ports and write the configs
  exec DIR N                            exec member N's JVM in this process
  stop DIR                              stop every member (TERM, KILL after 5 s)
  member-stop|member-kill DIR N         SIGTERM|SIGKILL one member, wait until gone
  member-start DIR N                    start one member, wait until it serves
  member-wipe DIR N                     empty a stopped member's data dir (keeps
                                        myid): a reset or rebuilt server
  wait DIR [N]                          wait until N (default: all) serve
  leader DIR                            print the member number of the leader
  hosts DIR                             print the connect string
  status DIR                            one line per member: N port pid mode
  log DIR N [LINES]                     tail of member N's log (default 50)
  4lw DIR N WORD                        send a four-letter word to member N
EOF
}

die() {
	echo "zk.sh: $*" >&2
	exit 1
}

# ---- helpers ---------------------------------------------------------------

nodes_of() { # DIR
	local n=0
	while [[ -f $1/$((n + 1))/zoo.cfg ]]; do n=$((n + 1)); done
	((n > 0)) || die "$1: no cluster here (no $1/1/zoo.cfg)"
	echo "$n"
}

port_of() { cat "$1/$2/port"; }

# Alive and really our JVM: not a zombie, and its command line names this
# member's zoo.cfg (guards against a recycled pid).
pid_alive() { # PID CFG
	local pid=$1 cfg=$2 stat state
	[[ -n $pid && -r /proc/$pid/stat ]] || return 1
	stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
	state=${stat##*) }
	state=${state%% *}
	[[ $state != Z && $state != X ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$cfg"
}

member_pid() { # DIR N -> pid if alive, else nothing (and status 1)
	local pid
	pid=$(cat "$1/$2/pid" 2>/dev/null) || return 1
	pid_alive "$pid" "$1/$2/zoo.cfg" || return 1
	echo "$pid"
}

# Four-letter word over bash's /dev/tcp: no nc needed, and bounded even when
# the server is stopped (connect completes in the kernel, reads time out).
fourlw() { # PORT WORD -> reply on stdout
	local port=$1 word=$2 line
	{ exec {fd}<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
	printf '%s' "$word" >&"$fd" || { exec {fd}>&-; return 1; }
	while IFS= read -r -t 2 line <&"$fd"; do
		printf '%s\n' "$line"
	done
	[[ -n ${line:-} ]] && printf '%s\n' "$line"
	exec {fd}>&-
	return 0
}

member_mode() { # DIR N -> leader|follower|standalone|... or nothing
	local out
	out=$(fourlw "$(port_of "$1" "$2")" srvr 2>/dev/null) || return 1
	out=$(sed -n 's/^Mode: *//p' <<<"$out")
	[[ -n $out ]] || return 1
	echo "$out"
}

used_ports() {
	# Local ports of every TCP socket (any state), hex -> decimal.
	local _ local_addr _rest
	cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | while read -r _ local_addr _rest; do
		[[ $local_addr == *:* ]] || continue
		echo $((16#${local_addr##*:}))
	done
}

# Free ports below the kernel's ephemeral range, so that outgoing client
# connections can never be handed one of them between now and the bind.
pick_ports() { # COUNT -> ports on stdout
	local count=$1 lo=20000 hi=32000 used p tries=0
	local -A taken=()
	read -r eph_lo _ </proc/sys/net/ipv4/ip_local_port_range || eph_lo=32768
	((hi < eph_lo)) || hi=$((eph_lo - 1))
	((hi > lo + 1000)) || { lo=10000; hi=$((eph_lo - 1)); }
	used=$(used_ports 2>/dev/null || true)
	for p in $used; do taken[$p]=1; done
	while ((count > 0)); do
		((++tries < 10000)) || die "no free port found"
		p=$((lo + (RANDOM * 32768 + RANDOM) % (hi - lo)))
		[[ -z ${taken[$p]:-} ]] || continue
		taken[$p]=1
		echo "$p"
		count=$((count - 1))
	done
}

log_tail() { # DIR N [LINES]
	local f=$1/$2/zk.log
	echo "---- tail of $f ----" >&2
	tail -n "${3:-30}" "$f" >&2 2>/dev/null || echo "(no log)" >&2
	echo "----" >&2
}

# ---- commands --------------------------------------------------------------

cmd_prepare() { # DIR NODES TICK
	local dir=$1 nodes=$2 tick=$3 n ports hosts="" i
	[[ $nodes == 1 || $nodes == 3 || $nodes == 5 ]] || die "--nodes must be 1, 3 or 5"
	if ! [[ $tick =~ ^[0-9]+$ ]] || ((tick < 10)); then die "--tick must be a number of ms >= 10"; fi
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	if [[ -f $dir/1/zoo.cfg ]]; then
		for ((n = 1; n <= $(nodes_of "$dir"); n++)); do
			! member_pid "$dir" "$n" >/dev/null || die "$dir: member $n is running; stop it first"
		done
		rm -rf "${dir:?}"/[0-9]* "$dir/hosts"
	fi
	mapfile -t ports < <(pick_ports $((nodes * 3)))
	for ((n = 1; n <= nodes; n++)); do
		mkdir -p "$dir/$n/data"
		echo "$n" >"$dir/$n/data/myid"
		echo "${ports[(n - 1) * 3]}" >"$dir/$n/port"
		{
			echo "# written by tools/zk.sh"
			echo "tickTime=$tick"
			echo "initLimit=10"
			echo "syncLimit=5"
			echo "dataDir=$dir/$n/data"
			echo "clientPort=${ports[(n - 1) * 3]}"
			echo "clientPortAddress=127.0.0.1"
			echo "maxClientCnxns=0"
			echo "admin.enableServer=false"
			echo "forceSync=no"
			echo "preAllocSize=1024"
			echo "4lw.commands.whitelist=srvr,stat,cons,mntr,ruok"
			if ((nodes > 1)); then
				echo "reconfigEnabled=false"
				echo "standaloneEnabled=false"
				echo "cnxTimeout=500"
				for ((i = 1; i <= nodes; i++)); do
					echo "server.$i=127.0.0.1:${ports[(i - 1) * 3 + 1]}:${ports[(i - 1) * 3 + 2]}"
				done
			fi
		} >"$dir/$n/zoo.cfg"
		hosts+="${hosts:+,}127.0.0.1:${ports[(n - 1) * 3]}"
	done
	echo "$hosts" >"$dir/hosts"
	echo "$hosts"
}

cmd_exec() { # DIR N
	local dir=$1 n=$2 main=org.apache.zookeeper.server.ZooKeeperServerMain
	[[ -f $dir/$n/zoo.cfg ]] || die "$dir/$n/zoo.cfg: no such member"
	dir=$(cd "$dir" && pwd)
	grep -q '^server\.' "$dir/$n/zoo.cfg" && main=org.apache.zookeeper.server.quorum.QuorumPeerMain
	echo "$$" >"$dir/$n/pid"
	local flags=("${JVM_FLAGS[@]}")
	[[ -z ${ZKW_ZK_JVM_FLAGS+x} ]] || read -ra flags <<<"$ZKW_ZK_JVM_FLAGS"
	exec java "${flags[@]}" -cp "$JAVA_CP" "$main" "$dir/$n/zoo.cfg"
}

spawn_member() { # DIR N PDEATHSIG(0|1)
	local dir=$1 n=$2 tie=$3 self
	self=$(readlink -f "${BASH_SOURCE[0]}")
	echo "==== $(date '+%F %T') start" >>"$dir/$n/zk.log"
	if ((tie)); then
		setpriv --pdeathsig KILL -- bash "$self" exec "$dir" "$n" </dev/null >>"$dir/$n/zk.log" 2>&1 &
	else
		# setsid: not in our process group, so a ^C to the caller's
		# terminal does not reach a server that must outlive it.
		setsid bash "$self" exec "$dir" "$n" </dev/null >>"$dir/$n/zk.log" 2>&1 &
	fi
	echo "$!" >"$dir/$n/pid"
}

# Wait until member N serves; on timeout print why and fail.
wait_member() { # DIR N TIMEOUT_S
	local dir=$1 n=$2 deadline=$((SECONDS + $3)) pid
	pid=$(cat "$dir/$n/pid" 2>/dev/null || true)
	while ((SECONDS < deadline)); do
		member_mode "$dir" "$n" >/dev/null && return 0
		if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
			echo "zk.sh: member $n (pid $pid) exited during start-up" >&2
			log_tail "$dir" "$n"
			return 1
		fi
		sleep 0.05
	done
	echo "zk.sh: member $n (port $(port_of "$dir" "$n")) not serving after $3 s" >&2
	log_tail "$dir" "$n"
	return 1
}

wait_leader() { # DIR TIMEOUT_S -> member number
	local dir=$1 deadline=$((SECONDS + $2)) n nodes
	nodes=$(nodes_of "$dir")
	while ((SECONDS < deadline)); do
		for ((n = 1; n <= nodes; n++)); do
			[[ $(member_mode "$dir" "$n" 2>/dev/null) =~ ^(leader|standalone)$ ]] && {
				echo "$n"
				return 0
			}
		done
		sleep 0.05
	done
	echo "zk.sh: no leader after $2 s" >&2
	return 1
}

cmd_start() { # DIR NODES TICK TIE
	local dir=$1 nodes=$2 tick=$3 tie=$4 hosts n attempt ok
	for attempt in 1 2 3; do
		hosts=$(cmd_prepare "$dir" "$nodes" "$tick")
		dir=$(cd "$dir" && pwd)
		for ((n = 1; n <= nodes; n++)); do spawn_member "$dir" "$n" "$tie"; done
		ok=1
		for ((n = 1; n <= nodes; n++)); do
			wait_member "$dir" "$n" "$START_TIMEOUT_S" || { ok=0; break; }
		done
		((ok)) && wait_leader "$dir" "$START_TIMEOUT_S" >/dev/null && {
			echo "$hosts"
			return 0
		}
		cmd_stop "$dir"
		# A port taken between picking and binding: pick again.
		grep -qs 'Address already in use' "$dir"/*/zk.log || break
		echo "zk.sh: port clash, retrying ($attempt)" >&2
	done
	die "could not start ZooKeeper in $dir"
}

stop_member() { # DIR N SIGNAL
	local dir=$1 n=$2 sig=$3 pid deadline
	pid=$(member_pid "$dir" "$n") || { rm -f "$dir/$n/pid"; return 0; }
	kill "-$sig" "$pid" 2>/dev/null || true
	kill -CONT "$pid" 2>/dev/null || true # a paused JVM cannot act on TERM
	deadline=$((SECONDS + STOP_TIMEOUT_S))
	while pid_alive "$pid" "$dir/$n/zoo.cfg"; do
		if ((SECONDS >= deadline)) && [[ $sig != KILL ]]; then
			echo "zk.sh: member $n (pid $pid) ignored SIG$sig for ${STOP_TIMEOUT_S}s, killing" >&2
			sig=KILL
			kill -KILL "$pid" 2>/dev/null || true
			deadline=$((SECONDS + STOP_TIMEOUT_S))
		elif ((SECONDS >= deadline)); then
			die "member $n (pid $pid) survives SIGKILL"
		fi
		sleep 0.02
	done
	wait "$pid" 2>/dev/null || true
	rm -f "$dir/$n/pid"
}

cmd_stop() { # DIR
	local dir=$1 n nodes
	nodes=$(nodes_of "$dir")
	# TERM everyone first, then wait: members shut down in parallel.
	for ((n = 1; n <= nodes; n++)); do
		local pid
		pid=$(member_pid "$dir" "$n") && kill -TERM "$pid" 2>/dev/null && kill -CONT "$pid" 2>/dev/null
	done
	for ((n = 1; n <= nodes; n++)); do stop_member "$dir" "$n" TERM; done
}

cmd_status() {
	local dir=$1 n nodes pid mode
	nodes=$(nodes_of "$dir")
	for ((n = 1; n <= nodes; n++)); do
		pid=$(member_pid "$dir" "$n") || pid=-
		mode=$(member_mode "$dir" "$n" 2>/dev/null) || mode=$([[ $pid == - ]] && echo stopped || echo not-serving)
		echo "$n $(port_of "$dir" "$n") $pid $mode"
	done
}

need_member() { # DIR N
	[[ $2 =~ ^[0-9]+$ && -f $1/$2/zoo.cfg ]] || die "$1: no member '$2'"
}

main() {
	local cmd=${1:-} dir=${2:-} nodes=1 tick=200
	case $cmd in -h | --help | help | "") usage; exit 0 ;; esac
	[[ -n $dir ]] || { usage >&2; exit 2; }
	shift 2
	case $cmd in
	start | run | prepare)
		while (($#)); do
			case $1 in
			--nodes) nodes=${2:?}; shift 2 ;;
			--tick) tick=${2:?}; shift 2 ;;
			*) usage >&2; exit 2 ;;
			esac
		done
		case $cmd in
		prepare) cmd_prepare "$dir" "$nodes" "$tick" ;;
		start) cmd_start "$dir" "$nodes" "$tick" 0 ;;
		run)
			trap 'cmd_stop "$dir"; exit 0' INT TERM
			cmd_start "$dir" "$nodes" "$tick" 1
			dir=$(cd "$dir" && pwd)
			# The members are our children: wait on them (no sleeper
			# process to orphan), until the last one is gone.
			while :; do
				wait -n 2>/dev/null || true
				local n alive=0
				for ((n = 1; n <= nodes; n++)); do
					member_pid "$dir" "$n" >/dev/null && alive=1
				done
				((alive)) || die "every member has exited"
			done
			;;
		esac
		;;
	exec) need_member "$dir" "${1:-}"; cmd_exec "$dir" "$1" ;;
	stop) cmd_stop "$dir" ;;
	member-stop) need_member "$dir" "${1:-}"; stop_member "$dir" "$1" TERM ;;
	member-kill) need_member "$dir" "${1:-}"; stop_member "$dir" "$1" KILL ;;
	member-wipe)
		need_member "$dir" "${1:-}"
		! member_pid "$dir" "$1" >/dev/null || die "member $1 is running; stop it first"
		find "$dir/$1/data" -mindepth 1 -maxdepth 1 ! -name myid -exec rm -rf -- {} +
		;;
	member-start)
		need_member "$dir" "${1:-}"
		dir=$(cd "$dir" && pwd)
		member_pid "$dir" "$1" >/dev/null && die "member $1 is already running"
		spawn_member "$dir" "$1" 0
		wait_member "$dir" "$1" "$START_TIMEOUT_S" || exit 1
		;;
	wait)
		if (($#)); then
			need_member "$dir" "$1"
			wait_member "$dir" "$1" "$START_TIMEOUT_S"
		else
			for ((n = 1; n <= $(nodes_of "$dir"); n++)); do
				wait_member "$dir" "$n" "$START_TIMEOUT_S" || exit 1
			done
			wait_leader "$dir" "$START_TIMEOUT_S" >/dev/null
		fi
		;;
	leader) nodes_of "$dir" >/dev/null; wait_leader "$dir" "${1:-5}" ;;
	hosts) cat "$dir/hosts" 2>/dev/null || die "$dir: no hosts file" ;;
	status) cmd_status "$dir" ;;
	log) need_member "$dir" "${1:-}"; tail -n "${2:-50}" "$dir/$1/zk.log" ;;
	4lw) need_member "$dir" "${1:-}"; fourlw "$(port_of "$dir" "$1")" "${2:?word}" ;;
	*) usage >&2; exit 2 ;;
	esac
}

main "$@"
