#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""kazoo_worker.py - one worker of the seed's design, for bench_latency.

The seed's ZookeeperWatcher gave every worker process its own ZooKeeper
session and a kazoo DataWatch on the config node. This is that worker,
stripped to what the benchmark needs: it holds a session, watches PATH with
kazoo's DataWatch recipe, and for every change writes one line

    IDX SEQ MONOTONIC_NS

to stdout (a pipe shared by all workers; a line is far below PIPE_BUF, so
lines never interleave). SEQ is the number after "seq=" at the start of the
content; MONOTONIC_NS is time.monotonic_ns() (CLOCK_MONOTONIC on Linux, the
clock the C benchmark uses) taken as the callback starts.

usage: /usr/bin/python3 kazoo_worker.py HOSTS PATH IDX
"""
import os
import signal
import sys
import time

from kazoo.client import KazooClient
from kazoo.recipe.watchers import DataWatch


def seq_of(data):
    if not data or not data.startswith(b"seq="):
        return 0
    digits = data[4:24]
    try:
        return int(digits)
    except ValueError:
        return 0


def main():
    if len(sys.argv) != 4:
        sys.stderr.write("usage: kazoo_worker.py HOSTS PATH IDX\n")
        return 2
    hosts, path, idx = sys.argv[1], sys.argv[2], int(sys.argv[3])
    parent = os.getppid()

    def stop(_signum, _frame):
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    client = KazooClient(hosts=hosts, timeout=10.0)
    client.start(timeout=30)

    def on_change(data, _stat):
        now = time.monotonic_ns()
        os.write(1, b"%d %d %d\n" % (idx, seq_of(data), now))

    DataWatch(client, path, on_change)
    # Bounded life: leave when the benchmark is gone (re-parented).
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline and os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
