#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""bench_python.py - the Python side of zkw's benchmarks.

Three modes, each started by a C benchmark (zkw.py is found through
PYTHONPATH=client/python and ZKW_LIBRARY=BUILD/libzkw-client.so):

  worker SOCKET HOSTS PATH IDX     (bench_latency) one worker of the seed's
      example in event mode, on zkw: zkw.ZookeeperWatcher(HOSTS, PATH,
      valid_handler, config_handler, error_handler, ensure=True) through the
      broker's control socket SOCKET, with the example's three handlers
      (their prints go to /dev/null). The config handler also writes
      "IDX SEQ MONOTONIC_NS" to stdout (a pipe shared by all workers, as
      kazoo_worker.py does), the time taken as the handler starts.
  wake IDX FD                      (bench_latency) the Python wake floor: a
      bare interpreter blocked on the futex word at offset 0 of the shared
      mapping FD (a memfd); once at start and on each wake it writes
      "IDX SEQ MONOTONIC_NS", SEQ read from offset 8.
  micro SHM CMD_FD ACK_FD [--quick]  (bench_python) the cost of the seed's
      polling calls on zkw, printed as a Markdown section: unchanged
      get_file_contents() against the seed's cached attribute and against
      is_valid(); get_file_contents() of a changed 1 MiB config against a
      memcpy plus decode of it. The C side publishes into segment SHM: one
      byte "n" on CMD_FD asks for the next 1 MiB content, it answers "k" on
      ACK_FD once published.

Every mode leaves when its parent is gone (re-parented) or on SIGTERM. With
a sanitizer build of libzkw-client.so, run.sh names its runtime in
$ZKW_BENCH_PY_PRELOAD: the script runs itself again with it preloaded.
"""
import codecs
import ctypes
import os
import platform
import signal
import statistics
import sys
import time


def _stop(_signum, _frame):
    os._exit(0)


def seq_of(data):
    """The number after "seq=" at the start of a config (str or bytes)."""
    if isinstance(data, str):
        data = data[:32].encode("ascii", "replace")
    if not data or not data.startswith(b"seq="):
        return 0
    try:
        return int(data[4:24])
    except ValueError:
        return 0


def _park(parent):
    # Bounded life: leave when the benchmark is gone (re-parented).
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline and os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


# ---- worker: the seed's example, event mode, on zkw -------------------------

def worker(socket_path, hosts, path, idx):
    import zkw

    parent = os.getppid()
    report = os.dup(1)
    sys.stdout = open(os.devnull, "w")  # the example's prints

    def valid_file(state):
        print("The valid state is now", state)

    def change_file(conf_string):
        now = time.monotonic_ns()
        print("Your file contents:", conf_string)
        os.write(report, b"%d %d %d\n" % (idx, seq_of(conf_string), now))

    def error_file(message):
        print("An error was thrown:", message)

    watcher = zkw.ZookeeperWatcher(hosts, path, valid_handler=valid_file, config_handler=change_file,
                                   error_handler=error_file, valid_init=True, ensure=True,
                                   socket_path=socket_path)
    try:
        _park(parent)
    finally:
        watcher.close()


# ---- wake: the Python wake floor ------------------------------------------------

_SYS_FUTEX = {"x86_64": 202, "aarch64": 98, "riscv64": 98, "ppc64le": 221, "s390x": 238}
_FUTEX_WAIT = 0


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def wake(idx, fd):
    import mmap

    parent = os.getppid()
    nr = _SYS_FUTEX.get(platform.machine())
    if nr is None:
        sys.stderr.write("bench_python.py: no futex syscall number for %s\n" % platform.machine())
        return 1
    libc = ctypes.CDLL(None, use_errno=True)
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    shared = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    word = ctypes.c_uint32.from_buffer(shared, 0)
    seq = ctypes.c_uint64.from_buffer(shared, 8)
    addr = ctypes.c_void_p(ctypes.addressof(word))
    one_second = _Timespec(1, 0)
    seen = word.value
    os.write(1, b"%d %d %d\n" % (idx, seq.value, time.monotonic_ns()))  # up and waiting
    while True:
        while word.value == seen:
            syscall(ctypes.c_long(nr), addr, ctypes.c_int(_FUTEX_WAIT), ctypes.c_uint32(seen),
                    ctypes.byref(one_second), None, ctypes.c_uint32(0))
            if os.getppid() != parent:
                os._exit(0)
        now = time.monotonic_ns()
        seen = word.value
        os.write(1, b"%d %d %d\n" % (idx, seq.value, now))


# ---- micro: the seed's polling calls ----------------------------------------------

class SeedWatcher(object):
    """The seed's polling API as it serves it: values its kazoo callbacks
    stored in attributes, returned by plain methods."""

    def __init__(self, data):
        self.pointer = False
        self.valid_file = True
        self.old_data = data
        self.old_pointed = ""

    def is_valid(self):
        return self.valid_file

    def get_file_contents(self, pointer=False):
        if self.pointer and pointer:
            return self.old_pointed
        return self.old_data


def _per_call_ns(fn, calls):
    """ns per call of fn over `calls` calls, 10 per loop turn (the loop's
    own cost is shared by every case alike)."""
    turns = calls // 10
    t0 = time.perf_counter_ns()
    for _ in range(turns):
        fn(); fn(); fn(); fn(); fn(); fn(); fn(); fn(); fn(); fn()
    return (time.perf_counter_ns() - t0) / (turns * 10)


def _stats(v):
    v = sorted(v)
    return v[0], statistics.median(v), v[min(len(v) - 1, (99 * len(v) + 99) // 100 - 1)]


def _verdict(ok):
    return "met" if ok else "**missed**"


def micro(shm, cmd_fd, ack_fd, quick):
    import zkw

    watcher = zkw.ZookeeperWatcher(None, "/zkwbench/python", shm=shm, valid_init=True)
    try:
        text = watcher.get_file_contents()
        if not text or not watcher.is_valid():
            raise SystemExit("bench_python.py: segment %s holds no valid content" % shm)
        seed = SeedWatcher(text)
        cases = [("seed: cached attribute (get_file_contents)", seed.get_file_contents),
                 ("zkw: get_file_contents(), unchanged", watcher.get_file_contents),
                 ("zkw: is_valid()", watcher.is_valid)]
        batches, calls = (11, 20000) if quick else (31, 400000)
        got = {name: [] for name, _ in cases}
        for b in range(batches):
            # Rotate the order so that drift hits every case alike.
            for k in range(len(cases)):
                name, fn = cases[(b + k) % len(cases)]
                got[name].append(_per_call_ns(fn, calls))
        unchanged = {name: _stats(v) for name, v in got.items()}

        # A changed 1 MiB config: the C side publishes, then one call.
        rounds = 21 if quick else 201
        zkw_ns, floor_ns = [], []
        size = 0
        src = dst = None
        for i in range(rounds):
            os.write(cmd_fd, b"n")
            if os.read(ack_fd, 1) != b"k":
                raise SystemExit("bench_python.py: the publisher did not answer")
            time.sleep(0.002)  # the watcher's thread takes its wake first
            pair = []
            for side in ((0, 1) if i % 2 == 0 else (1, 0)):
                if side == 0:
                    t0 = time.perf_counter_ns()
                    text = watcher.get_file_contents()
                    pair.append((0, time.perf_counter_ns() - t0))
                    if seq_of(text) != i + 1:
                        raise SystemExit("bench_python.py: round %d read config seq %d" % (i + 1, seq_of(text)))
                    if src is None:
                        size = len(text)
                        src = ctypes.create_string_buffer(text.encode(), size)
                        dst = ctypes.create_string_buffer(size)
                else:
                    if src is None:
                        continue
                    t0 = time.perf_counter_ns()
                    ctypes.memmove(dst, src, size)
                    with memoryview(dst) as view:
                        decoded = codecs.utf_8_decode(view[:size], "replace", True)[0]
                    pair.append((1, time.perf_counter_ns() - t0))
                    del decoded
            for side, ns in pair:
                (zkw_ns if side == 0 else floor_ns).append(ns)
        changed = _stats(zkw_ns)
        floor = _stats(floor_ns)
    finally:
        watcher.close()

    seed_s = unchanged[cases[0][0]]
    get_s = unchanged[cases[1][0]]
    valid_s = unchanged[cases[2][0]]
    print("## Python: the seed's polling calls on zkw (bench_python)\n")
    print("zkw.ZookeeperWatcher on a segment this benchmark publishes into (`shm=`; the calls are the "
          "same for a subscription through the socket), CPython %s. Unchanged: ns per call over %d "
          "batches of %d calls, the three cases rotated batch by batch; the seed's cached attribute is "
          "what its get_file_contents() costs (a method returning the string its kazoo callback "
          "stored). Changed: the C side publishes a new %d-byte ASCII config, then one "
          "get_file_contents() copies it out of the segment and decodes it; its floor is a memcpy of "
          "the same bytes (private to private) plus the same UTF-8 decode; %d rounds, the two "
          "interleaved.\n" % (platform.python_version(), batches, calls, size, rounds))
    print("| case | median ns | min ns | p99 ns | against | its median ns | ratio | target | verdict |")
    print("|---|---:|---:|---:|---|---:|---:|---|---|")
    r_seed = get_s[1] / seed_s[1]
    r_valid = get_s[1] / valid_s[1]
    r_changed = changed[1] / floor[1]
    print("| %s | %.1f | %.1f | %.1f | %s | %.1f | %.2fx | <= 10x | %s |"
          % (cases[1][0], get_s[1], get_s[0], get_s[2], "seed: cached attribute", seed_s[1], r_seed,
             _verdict(r_seed <= 10)))
    print("| %s | %.1f | %.1f | %.1f | %s | %.1f | %.2fx | <= 2x | %s |"
          % (cases[1][0], get_s[1], get_s[0], get_s[2], "zkw: is_valid()", valid_s[1], r_valid,
             _verdict(r_valid <= 2)))
    print("| zkw: get_file_contents(), changed 1 MiB | %.1f | %.1f | %.1f | memcpy + decode | %.1f | %.2fx "
          "| <= 3x | %s |" % (changed[1], changed[0], changed[2], floor[1], r_changed, _verdict(r_changed <= 3)))
    print()
    print("| case | median ns | min ns | p99 ns |")
    print("|---|---:|---:|---:|")
    for name, _ in cases:
        s = unchanged[name]
        print("| %s | %.1f | %.1f | %.1f |" % (name, s[1], s[0], s[2]))
    print("| memcpy + decode of 1 MiB | %.1f | %.1f | %.1f |" % (floor[1], floor[0], floor[2]))
    print()
    sys.stdout.flush()
    return 0


def _sanitizer_reexec(argv):
    """Load a sanitizer runtime first (leak detection off: CPython does not
    free everything at exit)."""
    runtimes = os.environ.get("ZKW_BENCH_PY_PRELOAD", "").split()
    preloaded = os.environ.get("LD_PRELOAD", "").split()
    if not runtimes or all(r in preloaded for r in runtimes):
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = " ".join(runtimes + preloaded)
    env["ASAN_OPTIONS"] = ":".join(x for x in (env.get("ASAN_OPTIONS", ""), "detect_leaks=0") if x)
    os.execve(sys.executable, [sys.executable] + argv, env)


def main(argv):
    _sanitizer_reexec(argv)
    signal.signal(signal.SIGTERM, _stop)
    if len(argv) == 6 and argv[1] == "worker":
        return worker(argv[2], argv[3], argv[4], int(argv[5]))
    if len(argv) == 4 and argv[1] == "wake":
        return wake(int(argv[2]), int(argv[3]))
    if len(argv) in (5, 6) and argv[1] == "micro":
        return micro(argv[2], int(argv[3]), int(argv[4]), len(argv) == 6 and argv[5] == "--quick")
    sys.stderr.write("usage: bench_python.py worker SOCKET HOSTS PATH IDX | wake IDX FD | "
                     "micro SHM CMD_FD ACK_FD [--quick]\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
