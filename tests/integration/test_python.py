#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""test_python.py - the Python binding (client/python/zkw.py) against a real
ZooKeeper server, the real zkw-broker and zkw-push.

Run by tests/run.sh with /usr/bin/python3 (env ZKW_BUILD, ZKW_ROOT); exits
non-zero on any failure. Starts one standalone ZooKeeper with tools/zk.sh
for the module and one broker per test, and stops every one of them by PID
(tearDown, and atexit as a backstop). A missing broker or zkw-push is a
failure, not a skip.
"""

import atexit
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

ROOT = os.environ.get("ZKW_ROOT") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("ZKW_BUILD") or os.path.join(ROOT, "build")
BROKER = os.path.join(BUILD, "zkw-broker")
PUSH = os.path.join(BUILD, "zkw-push")
ZK_SH = os.path.join(ROOT, "tools", "zk.sh")
WAIT_S = 20.0  # bound of every wait for an event

os.environ.setdefault("ZKW_LIBRARY", os.path.join(BUILD, "libzkw-client.so"))


def _sanitizer_reexec():
    """A sanitizer build's libzkw-client.so (make check / make tsan) needs
    its runtime loaded first: re-run this script with it in LD_PRELOAD
    (leak detection off: CPython itself does not free everything at exit).
    Children (zk.sh's JVM, zkw-push, zkw-broker) get the original env."""
    if os.environ.get("ZKW_PY_PRELOADED"):
        return
    try:
        out = subprocess.run(["ldd", os.environ["ZKW_LIBRARY"]], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return
    runtimes = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>" and parts[0].startswith(("libasan", "libtsan", "libubsan")):
            runtimes.append(parts[2])
    if not runtimes:
        return
    runtimes.sort(key=lambda p: "libubsan" in p)  # ASan/TSan must come first
    env = dict(os.environ)
    env["ZKW_PY_PRELOADED"] = "1"
    env["ZKW_PY_ORIG_LD_PRELOAD"] = env.get("LD_PRELOAD", "")
    env["LD_PRELOAD"] = " ".join(runtimes + ([env["LD_PRELOAD"]] if env.get("LD_PRELOAD") else []))
    env["ASAN_OPTIONS"] = ":".join(x for x in (env.get("ASAN_OPTIONS", ""), "detect_leaks=0") if x)
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


_sanitizer_reexec()
CHILD_ENV = dict(os.environ)
if "ZKW_PY_PRELOADED" in CHILD_ENV:
    CHILD_ENV["LD_PRELOAD"] = CHILD_ENV.pop("ZKW_PY_ORIG_LD_PRELOAD", "")
    if not CHILD_ENV["LD_PRELOAD"]:
        del CHILD_ENV["LD_PRELOAD"]
sys.path.insert(0, os.path.join(ROOT, "client", "python"))
import zkw  # noqa: E402

RUNDIR = os.environ.get("ZKW_TEST_RUNDIR") or tempfile.mkdtemp(prefix="zkw-pytest.")
ZK_DIR = os.path.join(RUNDIR, "zk")
HOSTS = None
_brokers = []  # every Popen started, for the atexit backstop
_serial = [0]


def _stop_zk():
    if HOSTS is not None:
        subprocess.run([ZK_SH, "stop", ZK_DIR], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=60, env=CHILD_ENV)


def _kill_brokers():
    for p in _brokers:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


def setUpModule():
    global HOSTS
    for path in (BROKER, PUSH):
        if not os.access(path, os.X_OK):
            raise RuntimeError("%s is missing: build it first (make)" % path)
    atexit.register(_stop_zk)
    atexit.register(_kill_brokers)
    out = subprocess.run([ZK_SH, "start", ZK_DIR, "--nodes", "1"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, timeout=120, env=CHILD_ENV)
    if out.returncode != 0:
        raise RuntimeError("tools/zk.sh start failed:\n" + out.stderr)
    HOSTS = out.stdout.strip().splitlines()[-1]


def tearDownModule():
    _kill_brokers()
    _stop_zk()


def push(parent, node_id, content):
    """zkw-push content (str or bytes) as parent/node_id."""
    data = content.encode() if isinstance(content, str) else content
    with tempfile.NamedTemporaryFile(dir=RUNDIR, delete=False) as f:
        f.write(data)
        name = f.name
    try:
        out = subprocess.run([PUSH, "-f", name, "-i", node_id, "-p", parent, "-z", HOSTS],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60,
                             env=CHILD_ENV)
    finally:
        os.unlink(name)
    if out.returncode != 0:
        raise AssertionError("zkw-push %s/%s failed: %s" % (parent, node_id, out.stdout))


def wait_until(pred, what, timeout=WAIT_S):
    """Poll pred (for conditions no event announces, e.g. a file appearing)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(0.02)


class Events(object):
    """Handler calls, in order, awaitable."""

    def __init__(self):
        self.calls = []
        self.cond = threading.Condition()

    def handler(self, kind):
        def record(arg):
            with self.cond:
                self.calls.append((kind, arg))
                self.cond.notify_all()
        record.__name__ = kind + "_handler"
        return record

    def wait_count(self, n, timeout=WAIT_S):
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.calls) >= n, timeout):
                raise AssertionError("expected %d handler calls within %.0f s, got %r"
                                     % (n, timeout, self.calls))
            return list(self.calls)

    def snapshot(self):
        with self.cond:
            return list(self.calls)


class BrokerTest(unittest.TestCase):
    """Each test: its own ZooKeeper subtree, segment and broker."""

    def setUp(self):
        _serial[0] += 1
        self.base = "/zkwpy/%d_%d" % (os.getpid(), _serial[0])
        self.shm = "/zkw.pytest.%d.%d" % (os.getpid(), _serial[0])
        self.broker = None
        self.log = None
        self.closers = []

    def tearDown(self):
        for close in reversed(self.closers):
            close()
        self.stop_broker()
        try:
            os.unlink("/dev/shm" + self.shm)
        except FileNotFoundError:
            pass

    def start_broker(self, path, *extra):
        self.log = open(os.path.join(RUNDIR, "broker%s.log" % self.shm.replace("/", "_")), "w+")
        self.broker = subprocess.Popen([BROKER, "-z", HOSTS, "-f", path, "--shm", self.shm] + list(extra),
                                       stdout=self.log, stderr=subprocess.STDOUT, env=CHILD_ENV)
        _brokers.append(self.broker)

        def started():
            if self.broker.poll() is not None:
                raise AssertionError("zkw-broker exited with %s:\n%s" % (self.broker.returncode, self.broker_log()))
            return os.path.exists("/dev/shm" + self.shm)
        wait_until(started, "zkw-broker to create %s" % self.shm)

    def broker_log(self):
        if not self.log:
            return ""
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-3000:]

    def stop_broker(self, sig=signal.SIGTERM):
        if self.broker is not None and self.broker.poll() is None:
            self.broker.send_signal(sig)
            try:
                self.broker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.broker.kill()
                self.broker.wait(timeout=10)
        if self.log:
            self.log.close()
            self.log = None

    def reader(self):
        r = zkw.Reader(self.shm)
        self.closers.append(r.close)
        return r

    def watcher(self, path, **kw):
        w = zkw.ZookeeperWatcher(HOSTS, path, shm=self.shm, **kw)
        self.closers.append(w.close)
        return w

    def wait_content(self, r, want, timeout=WAIT_S):
        """Wait (on the segment's futex) until r shows valid content want."""
        deadline = time.monotonic() + timeout
        while True:
            seen = r.generation
            snap = r.snapshot()
            if snap.valid and snap.content == (want.encode() if isinstance(want, str) else want):
                return snap
            left = deadline - time.monotonic()
            if left <= 0 or (not r.wait_for(seen, left) and time.monotonic() >= deadline):
                self.fail("segment %s never showed %r (last: %r)\nbroker log:\n%s"
                          % (self.shm, want, snap, self.broker_log()))


class TestOpen(unittest.TestCase):
    def test_missing_segment_names_it_and_the_broker(self):
        with self.assertRaises(FileNotFoundError) as cm:
            zkw.Reader("/zkw.pytest.does-not-exist")
        self.assertIn("/zkw.pytest.does-not-exist", str(cm.exception))
        self.assertIn("is zkw-broker running?", str(cm.exception))
        with self.assertRaises(FileNotFoundError) as cm:
            zkw.ZookeeperWatcher("ignored:2181", "/zkwpy/no/such/file")
        self.assertIn("/zkw.zkwpy.no.such.file", str(cm.exception))

    def test_default_segment_name(self):
        self.assertEqual(zkw.default_segment_name("/tmp/myconfig"), "/zkw.tmp.myconfig")
        with self.assertRaises(ValueError):
            zkw.default_segment_name("relative")


class TestPoll(BrokerTest):
    def test_poll_api_and_updates(self):
        push(self.base, "cfg", "stuff here")
        self.start_broker(self.base + "/cfg")
        r = self.reader()
        self.wait_content(r, "stuff here")
        w = self.watcher(self.base + "/cfg")
        self.assertTrue(w.is_valid())
        self.assertEqual(w.get_file_contents(), "stuff here")
        self.assertEqual(w.get_file_contents(pointer=True), "stuff here")  # not pointer mode: the file
        self.assertTrue(w.ping())
        snap = r.snapshot()
        self.assertTrue(snap.valid and snap.connected)
        self.assertGreater(snap.generation, 0)
        self.assertGreaterEqual(snap.version, 0)
        self.assertEqual(snap.error, "")

        push(self.base, "cfg", "NEW stuff here")
        self.wait_content(r, "NEW stuff here")
        self.assertEqual(w.get_file_contents(), "NEW stuff here")

    def test_wait_true_on_change_false_on_timeout(self):
        push(self.base, "cfg", "one")
        self.start_broker(self.base + "/cfg")
        r = self.reader()
        self.wait_content(r, "one")
        t0 = time.monotonic()
        self.assertFalse(r.wait(0.2))
        self.assertGreaterEqual(time.monotonic() - t0, 0.19)
        g = r.generation
        result = []
        t = threading.Thread(target=lambda: result.append(r.wait(WAIT_S)))
        t.start()
        push(self.base, "cfg", "two")
        t.join(WAIT_S + 5)
        self.assertEqual(result, [True])
        self.assertGreater(r.generation, g)
        self.wait_content(r, "two")

    def test_bytes_and_undecodable_content(self):
        raw = b"caf\xc3\xa9 \xff\x00end"
        push(self.base, "cfg", raw)
        self.start_broker(self.base + "/cfg")
        with zkw.Reader(self.shm) as r:
            self.wait_content(r, raw)
            self.assertEqual(r.get_file_bytes(), raw)
            self.assertEqual(r.get_file_contents(), raw.decode("utf-8", errors="replace"))
        with self.assertRaises(ValueError):
            r.generation  # closed

    def test_ping_false_after_broker_killed(self):
        push(self.base, "cfg", "alive")
        self.start_broker(self.base + "/cfg")
        r = self.reader()
        self.wait_content(r, "alive")
        w = self.watcher(self.base + "/cfg")
        self.assertTrue(w.ping())
        self.stop_broker(signal.SIGKILL)  # reaped: its lock is gone
        self.assertFalse(w.ping())
        self.assertFalse(r.ping())
        # The circuit breaker: the last content stays readable.
        self.assertEqual(w.get_file_contents(), "alive")
        # valid_init refuses a segment no broker holds.
        with self.assertRaises(ConnectionError):
            zkw.ZookeeperWatcher(HOSTS, self.base + "/cfg", shm=self.shm)
        zkw.ZookeeperWatcher(HOSTS, self.base + "/cfg", shm=self.shm, valid_init=False).close()


class TestEvents(BrokerTest):
    def test_handlers_once_per_change_in_seed_order(self):
        push(self.base, "cfg", "v1")
        self.start_broker(self.base + "/cfg")
        r = self.reader()
        self.wait_content(r, "v1")
        ev = Events()
        self.watcher(self.base + "/cfg", valid_handler=ev.handler("valid"),
                     config_handler=ev.handler("config"), error_handler=ev.handler("error"))
        self.assertEqual(ev.wait_count(2), [("config", "v1"), ("valid", True)])

        push(self.base, "cfg", "v2")
        self.assertEqual(ev.wait_count(3)[2:], [("config", "v2")])
        # Identical bytes again, then v3: no duplicate v2 in between.
        push(self.base, "cfg", "v2")
        push(self.base, "cfg", "v3")
        calls = ev.wait_count(4)
        self.wait_content(r, "v3")
        self.assertEqual(calls[3:], [("config", "v3")])
        self.assertEqual(ev.snapshot()[3:], [("config", "v3")])

    def test_pointer_mode_and_failure_order(self):
        push(self.base, "cfg1", "first config")
        push(self.base, "cfg2", "second config")
        push(self.base, "ptr", self.base + "/cfg1\n")  # an editor's trailing newline
        self.start_broker(self.base + "/ptr", "-p")
        r = self.reader()
        self.wait_content(r, "first config")
        ev = Events()
        w = self.watcher(self.base + "/ptr", pointer=True, valid_handler=ev.handler("valid"),
                         config_handler=ev.handler("config"), error_handler=ev.handler("error"))
        self.assertEqual(ev.wait_count(2), [("config", "first config"), ("valid", True)])
        self.assertEqual(w.get_file_contents(), "first config")
        self.assertEqual(w.get_file_contents(pointer=True), self.base + "/cfg1")

        # A bad pointer: valid(False) then the seed's error text.
        push(self.base, "ptr", "not a path")
        calls = ev.wait_count(4)[2:]
        self.assertEqual(calls[0], ("valid", False))
        self.assertEqual(calls[1][0], "error")
        self.assertTrue(calls[1][1].startswith("Invalid pointer path"), calls[1][1])
        self.assertFalse(w.is_valid())
        self.assertEqual(w.get_file_contents(), "first config")  # last good value kept

        # Re-pointed at another file: its content first, then valid(True).
        push(self.base, "ptr", self.base + "/cfg2")
        self.assertEqual(ev.wait_count(6)[4:], [("config", "second config"), ("valid", True)])
        # A change of the pointed-at file is seen too.
        push(self.base, "cfg2", "second config, edited")
        self.assertEqual(ev.wait_count(7)[6:], [("config", "second config, edited")])
        self.assertEqual(w.get_file_contents(pointer=True), self.base + "/cfg2")

    def test_close_stops_event_thread_promptly(self):
        push(self.base, "cfg", "a")
        self.start_broker(self.base + "/cfg")
        r = self.reader()
        self.wait_content(r, "a")
        ev = Events()
        w = zkw.ZookeeperWatcher(HOSTS, self.base + "/cfg", shm=self.shm, config_handler=ev.handler("config"))
        ev.wait_count(1)
        thread = w._thread
        t0 = time.monotonic()
        w.close()
        self.assertLess(time.monotonic() - t0, 1.0)
        self.assertFalse(thread.is_alive())
        w.close()  # idempotent
        # No handler call after close, although the content changes.
        push(self.base, "cfg", "b")
        self.wait_content(r, "b")
        self.assertEqual(ev.snapshot(), [("config", "a")])

    def test_close_from_a_handler(self):
        push(self.base, "cfg", "x")
        self.start_broker(self.base + "/cfg")
        self.wait_content(self.reader(), "x")
        done = threading.Event()
        assigned = threading.Event()
        holder = {}

        def on_config(text):
            assigned.wait(WAIT_S)  # the handler may run before the assignment below
            holder["w"].close()
            done.set()
        holder["w"] = zkw.ZookeeperWatcher(HOSTS, self.base + "/cfg", shm=self.shm, config_handler=on_config)
        assigned.set()
        self.assertTrue(done.wait(WAIT_S))
        holder["w"]._thread.join(WAIT_S)
        self.assertFalse(holder["w"]._thread.is_alive())


if __name__ == "__main__":
    result = unittest.main(verbosity=2, exit=False).result
    tearDownModule()
    sys.exit(0 if result.wasSuccessful() else 1)
