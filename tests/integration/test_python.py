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
import collections
import errno
import logging
import mmap
import os
import pwd
import shutil
import signal
import struct
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
# A broker listens on no control socket (the default, /run/zkw/broker.sock,
# is one per host) unless a test gives it --socket.
CHILD_ENV["ZKW_SOCKET"] = "none"
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


def push_bundle(parent, node_id, directory):
    """zkw-push --bundle: directory's files as parent/node_id's children, in one transaction."""
    out = subprocess.run([PUSH, "--bundle", directory, "-i", node_id, "-p", parent, "-z", HOSTS],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60, env=CHILD_ENV)
    if out.returncode != 0:
        raise AssertionError("zkw-push --bundle %s/%s failed: %s" % (parent, node_id, out.stdout))


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

    def wait_for(self, pred, what, timeout=WAIT_S):
        with self.cond:
            if not self.cond.wait_for(lambda: pred(self.calls), timeout):
                raise AssertionError("expected %s within %.0f s, got %r" % (what, timeout, self.calls))
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
        # The segment, and the broker lock a killed broker leaves behind.
        for leftover in (self.shm, "/.zkw-lock." + self.shm[1:]):
            try:
                os.unlink("/dev/shm" + leftover)
            except FileNotFoundError:
                pass

    def start_broker(self, path, *extra, hosts=None):
        self.log = open(os.path.join(RUNDIR, "broker%s.log" % self.shm.replace("/", "_")), "w+")
        self.broker = subprocess.Popen([BROKER, "-z", hosts or HOSTS, "-f", path, "--shm", self.shm] + list(extra),
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
        """Wait (on the segment's futex) until r shows valid content want.
        A segment that grows is replaced (retired): then its name is
        opened again, and waited on."""
        deadline = time.monotonic() + timeout
        while True:
            seen = r.generation
            snap = r.snapshot()
            if snap.valid and snap.content == (want.encode() if isinstance(want, str) else want):
                return snap
            left = deadline - time.monotonic()
            try:
                changed = left > 0 and r.wait_for(seen, left)
            except zkw.ZkwError as e:
                if e.errno != errno.ESTALE:
                    raise
                r = zkw.Reader(r.name)
                self.closers.append(r.close)
                continue
            if not changed and time.monotonic() >= deadline:
                self.fail("segment %s never showed %r (last: %r)\nbroker log:\n%s"
                          % (self.shm, want, snap, self.broker_log()))


class TestOpen(unittest.TestCase):
    def test_missing_segment_names_it_and_the_broker(self):
        with self.assertRaises(FileNotFoundError) as cm:
            zkw.Reader("/zkw.pytest.does-not-exist")
        self.assertIn("/zkw.pytest.does-not-exist", str(cm.exception))
        self.assertIn("is zkw-broker running?", str(cm.exception))
        with self.assertRaises(FileNotFoundError) as cm:
            zkw.ZookeeperWatcher("ignored:2181", "/zkwpy/no/such/file",
                                 shm=zkw.default_segment_name("/zkwpy/no/such/file"))
        self.assertIn("/zkw.zkwpy.no.such.file", str(cm.exception))

    def test_default_segment_name(self):
        self.assertEqual(zkw.default_segment_name("/tmp/myconfig"), "/zkw.tmp.myconfig")
        with self.assertRaises(ValueError):
            zkw.default_segment_name("relative")


def bundle_bytes(children, pzxid=0, cversion=0, header_size=32, entry_size=32, count=None, fields=None):
    """A bundle laid out by hand at the offsets of docs/design.md, "Bundle
    layout": children is a list of (name bytes, data bytes, mzxid,
    version) in the order given (sorted or not); header and entry bytes
    beyond the 32 a version-1 reader knows are 0xAA. fields(i, entry) may
    change entry i's [name_off, name_len, data_off, data_len] before it is
    packed."""
    table = header_size + len(children) * entry_size
    names = sum(len(c[0]) + 1 for c in children)
    name_at, data_at = table, table + names
    header = struct.pack("=IHHIIqiI", 0x31424B5A, 1, header_size, len(children) if count is None else count,
                         entry_size, pzxid, cversion, 0)
    out = bytearray(header + b"\xaa" * (header_size - 32))
    tail_names, tail_data = bytearray(), bytearray()
    for i, (name, data, mzxid, version) in enumerate(children):
        entry = [name_at, len(name), data_at, len(data)]
        if fields:
            fields(i, entry)
        out += struct.pack("=IIIIqiI", *entry, mzxid, version, 0) + b"\xaa" * (entry_size - 32)
        tail_names += name + b"\0"
        tail_data += data
        name_at += len(name) + 1
        data_at += len(data)
    return bytes(out + tail_names + tail_data)


class TestBundle(unittest.TestCase):
    """Snapshot.entries of a bundle watch (zkw.parse_bundle), without a
    broker: bundles laid out by hand, and a segment written by hand in
    /dev/shm for the reader's bundle flag."""

    CHILDREN = [(b"alpha", b"1234", 0x100000001, 3), (b"beta", b"", 0x100000002, 0),
                (b"caf\xc3\xa9", b"\x00\xff", 3, 1), (b"x\xff", b"raw", 4, 2)]

    def test_entries_in_order_names_decoded(self):
        got = zkw.parse_bundle(bundle_bytes(self.CHILDREN, pzxid=7, cversion=9))
        self.assertIsInstance(got, collections.OrderedDict)
        self.assertEqual(list(got.items()), [("alpha", b"1234"), ("beta", b""), ("caf\u00e9", b"\x00\xff"),
                                             ("x\udcff", b"raw")])
        self.assertEqual(list(got)[3].encode("utf-8", "surrogateescape"), b"x\xff")
        self.assertEqual(zkw.parse_bundle(bundle_bytes([])), collections.OrderedDict())
        # A later writer's larger header and entries: what is not known is skipped.
        for header_size, entry_size in ((48, 32), (32, 40), (100, 64)):
            got = zkw.parse_bundle(bundle_bytes(self.CHILDREN, header_size=header_size, entry_size=entry_size))
            self.assertEqual(list(got.values()), [c[1] for c in self.CHILDREN], (header_size, entry_size))
        self.assertEqual(zkw.Snapshot._fields[-3:], ("cached", "rejected", "entries"))

    def expect_bad(self, content, words, err=errno.EBADMSG):
        with self.assertRaises(zkw.BadBundle) as cm:
            zkw.parse_bundle(content)
        self.assertEqual(cm.exception.errno, err, str(cm.exception))
        self.assertIn(words, str(cm.exception))
        self.assertIsInstance(cm.exception, ValueError)
        self.assertIsInstance(cm.exception, zkw.ZkwError)

    def test_malformed_bundles_refused_naming_the_fault(self):
        good = bundle_bytes(self.CHILDREN)
        for n in range(len(good)):
            with self.assertRaises(zkw.BadBundle, msg="cut to %d bytes" % n):
                zkw.parse_bundle(good[:n])
        self.expect_bad(b"ZKB2" + good[4:], "magic")
        self.expect_bad(good[:4] + struct.pack("=H", 2) + good[6:], "layout version 2", errno.EPROTO)
        self.expect_bad(bundle_bytes(self.CHILDREN, count=5), "5 entries of 32 bytes do not fit")
        self.expect_bad(bundle_bytes(self.CHILDREN, count=0x08000000), "entries of 32 bytes do not fit")
        self.expect_bad(bundle_bytes(self.CHILDREN, header_size=31), "header_size 31")
        self.expect_bad(good[:6] + struct.pack("=H", 0xffff) + good[8:], "header_size 65535")
        self.expect_bad(bundle_bytes([], entry_size=31), "entry_size 31")
        self.expect_bad(bundle_bytes(self.CHILDREN[::-1]), "entry 1: name b'caf\\xc3\\xa9' after b'x\\xff'")
        self.expect_bad(bundle_bytes([self.CHILDREN[0]] * 2), "entry 1: name b'alpha' after b'alpha'")
        for name in (b"", b"a/b", b".", b"..", b"a\0b"):
            self.expect_bad(bundle_bytes([(name, b"", 1, 1)]), "entry 0: %r is not a child's name" % name)

        def entry(i, field, value):
            def change(k, e):
                if k == i:
                    e[field] = value
            return bundle_bytes(self.CHILDREN, fields=change)
        size = len(good)
        self.expect_bad(entry(1, 0, 0xffffffff), "entry 1: name at 4294967295")  # name_off + 1 wraps
        self.expect_bad(entry(1, 1, 0xffffffff), "entry 1: name at")  # name_len wraps
        self.expect_bad(entry(0, 0, size - 1), "entry 0: name at")  # no room for the NUL
        self.expect_bad(entry(0, 1, 4), "entry 0: name b'alph' is not followed by a NUL")
        self.expect_bad(entry(2, 2, size + 1), "entry 2: data at")
        self.expect_bad(entry(2, 3, 0xfffffffe), "entry 2: data at")  # data_off + data_len wraps
        # At the very end with no bytes is fine; so is anywhere inside.
        self.assertEqual(zkw.parse_bundle(entry(1, 2, size))["beta"], b"")
        self.assertEqual(zkw.parse_bundle(entry(0, 2, 0))["alpha"], b"ZKB1")

    def forge_segment(self, content, flags):
        """A segment written by hand (the layout of docs/design.md, "The
        segment ABI"), generation 1 published with content and flags, owned
        by us and 0600 as the reader's trust policy wants."""
        _serial[0] += 1
        name = "/zkw.pytest.bundle.%d.%d" % (os.getpid(), _serial[0])
        capacity = 4096
        slot_size = (2432 + capacity + 63) & ~63
        seg = bytearray(2048 + 2 * slot_size)
        struct.pack_into("=QHHIQQQII", seg, 0, 0x31474553574b5a7f, 1, 3, 2048, len(seg), slot_size, capacity, 2,
                         os.getpid())
        struct.pack_into("=QII", seg, 64, 1, 1, 0x7)  # generation 1, futex, running connected valid
        slot = 2048 + slot_size  # generation 1 % 2 slots
        struct.pack_into("=QQIIQqq", seg, slot, 2, 1, flags, 0, len(content), 4, 5)
        struct.pack_into("=Q", seg, slot + 64, 1)  # content_gen
        seg[slot + 2432:slot + 2432 + len(content)] = content
        fd = os.open("/dev/shm" + name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        self.addCleanup(os.unlink, "/dev/shm" + name)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, bytes(seg))
        finally:
            os.close(fd)
        r = zkw.Reader(name)
        self.addCleanup(r.close)
        return r

    def test_snapshot_entries_follow_the_bundle_flag(self):
        valid_connected, bundle_flag = 0x3, 0x10  # ZKW_SLOT_VALID | ZKW_SLOT_CONNECTED, ZKW_SLOT_BUNDLE
        content = bundle_bytes(self.CHILDREN, pzxid=7, cversion=9)
        snap = self.forge_segment(content, valid_connected | bundle_flag).snapshot()
        self.assertEqual((snap.generation, snap.valid, snap.version, snap.mzxid), (1, True, 4, 5))
        self.assertEqual(snap.content, content)
        self.assertEqual(snap.entries, zkw.parse_bundle(content))
        self.assertEqual(snap.entries["caf\u00e9"], b"\x00\xff")
        # Without the flag the same bytes are just content.
        self.assertIsNone(self.forge_segment(content, valid_connected).snapshot().entries)
        # The flag on bytes that are no bundle: snapshot() says so; the
        # content itself can still be had.
        r = self.forge_segment(b"not a bundle", valid_connected | bundle_flag)
        with self.assertRaises(zkw.BadBundle):
            r.snapshot()
        self.assertEqual(r.get_file_bytes(), b"not a bundle")


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
        # As the seed's: the first state reaches the handlers before the
        # constructor returns.
        self.assertEqual(ev.snapshot(), [("config", "v1"), ("valid", True)])

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
        holder = {}

        def on_config(text):
            if text == "y":  # "x" comes first, before the constructor returns
                holder["w"].close()
                done.set()
        holder["w"] = zkw.ZookeeperWatcher(HOSTS, self.base + "/cfg", shm=self.shm, config_handler=on_config)
        push(self.base, "cfg", "y")
        self.assertTrue(done.wait(WAIT_S))
        holder["w"]._thread.join(WAIT_S)
        self.assertFalse(holder["w"]._thread.is_alive())


class LogRecords(logging.Handler):
    """The records of the "zkw" logger, awaitable."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []
        self.cond = threading.Condition()

    def emit(self, record):
        with self.cond:
            self.records.append(record)
            self.cond.notify_all()

    def at(self, level):
        with self.cond:
            return [r.getMessage() for r in self.records if r.levelno == level]

    def __enter__(self):
        log = logging.getLogger("zkw")
        self._level = log.level
        log.setLevel(logging.DEBUG)
        log.addHandler(self)
        return self

    def __exit__(self, *exc):
        log = logging.getLogger("zkw")
        log.removeHandler(self)
        log.setLevel(self._level)
        return False


def _call_in_thread(fn, what, timeout=WAIT_S):
    """Run fn() in a thread, bounded: a call that hangs fails the test
    instead of hanging it. Returns fn's result."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise AssertionError("%s did not return within %.0f s" % (what, timeout))
    return out[0] if out else None


class SegmentForger(object):
    """Writes a segment as a hostile (or broken) writer would, through a
    read-write mapping of /dev/shm (the tests run as root): the layout of
    include/zkw/segment.h, docs/design.md "The segment ABI"."""

    HEADER = 2048

    def __init__(self, shm):
        fd = os.open("/dev/shm" + shm, os.O_RDWR)
        try:
            self.map = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)

    def u64(self, off, value=None):
        if value is None:
            return struct.unpack_from("<Q", self.map, off)[0]
        struct.pack_into("<Q", self.map, off, value)

    def u32(self, off, value=None):
        if value is None:
            return struct.unpack_from("<I", self.map, off)[0]
        struct.pack_into("<I", self.map, off, value)

    def publish_corrupt(self):
        """Publish generation g + 1 as a stable slot whose content length
        exceeds the capacity: every read of it fails with -EBADMSG until
        the real writer publishes g + 1 itself (it overwrites that slot).
        Returns the forged generation."""
        slot_size, capacity, slots = self.u64(24), self.u64(32), self.u32(40)
        gen = self.u64(64) + 1
        slot = self.HEADER + (gen % slots) * slot_size
        seq = self.u64(slot) | 1
        self.u64(slot, seq)  # odd: being written
        self.u64(slot + 8, gen)
        self.u64(slot + 24, capacity + 1)  # len > capacity
        self.u64(slot, seq + 1)  # even: stable
        self.u64(64, gen)
        self.u32(72, (self.u32(72) + 1) & 0xffffffff)
        return gen

    def close(self):
        self.map.close()


class TestThreads(BrokerTest):
    """A Reader shared between threads: close() in one while others are in
    wait() or snapshot() (docs/design.md, "Threads and who may block
    where"). Before, close() freed the handle under them: heap-use-after-
    free, or a crash on the unmapped segment."""

    ITERATIONS = 60
    THREADS = 3

    def test_close_during_wait_in_other_threads(self):
        push(self.base, "cfg", "waited on")
        self.start_broker(self.base + "/cfg")
        self.wait_content(self.reader(), "waited on")
        for i in range(self.ITERATIONS):
            r = zkw.Reader(self.shm)
            entered = [threading.Event() for _ in range(self.THREADS)]
            results = [None] * self.THREADS

            def waiter(k):
                entered[k].set()  # holds the GIL until wait() releases it in C
                try:
                    results[k] = r.wait(None if k % 2 == 0 else 3600.0)  # forever, or long
                except ValueError as e:
                    results[k] = e
            threads = [threading.Thread(target=waiter, args=(k,), daemon=True) for k in range(self.THREADS)]
            for t in threads:
                t.start()
            for e in entered:
                self.assertTrue(e.wait(WAIT_S), "a waiter thread did not start")
            _call_in_thread(r.close, "iteration %d: close() with wait() in %d threads" % (i, self.THREADS))
            for k, t in enumerate(threads):
                t.join(WAIT_S)
                self.assertFalse(t.is_alive(), "iteration %d: wait() still blocked after close()" % i)
                self.assertIsInstance(results[k], ValueError, "iteration %d: wait() gave %r" % (i, results[k]))
                self.assertIn("closed", str(results[k]))
            # Every call after close(): a clear error, never a crash.
            for call in (lambda: r.generation, r.is_valid, r.ping, r.broker_alive, r.snapshot,
                         lambda: r.wait(0), lambda: r.wait_for(0, 0), r.get_file_bytes):
                with self.assertRaises(ValueError) as cm:
                    call()
                self.assertIn("is closed", str(cm.exception))
            r.close()  # idempotent
            self.assertIn("closed", repr(r))

    def test_close_during_snapshot_in_other_threads(self):
        content = ("snapshot " * 4000).encode()  # 36 KB: a copy takes a while
        push(self.base, "cfg", content)
        self.start_broker(self.base + "/cfg")
        self.wait_content(self.reader(), content)
        for i in range(self.ITERATIONS):
            r = zkw.Reader(self.shm)
            read_once = [threading.Event() for _ in range(self.THREADS)]
            results = [None] * self.THREADS

            def reader(k):
                try:
                    while True:
                        snap = r.snapshot()
                        if snap.content != content:
                            results[k] = AssertionError("torn or wrong snapshot: %r" % (snap.content[:60],))
                            return
                        read_once[k].set()
                except ValueError as e:
                    results[k] = e
                finally:
                    read_once[k].set()
            threads = [threading.Thread(target=reader, args=(k,), daemon=True) for k in range(self.THREADS)]
            for t in threads:
                t.start()
            for e in read_once:
                self.assertTrue(e.wait(WAIT_S), "a reader thread did not read")
            _call_in_thread(r.close, "iteration %d: close() with snapshot() in %d threads" % (i, self.THREADS))
            for k, t in enumerate(threads):
                t.join(WAIT_S)
                self.assertFalse(t.is_alive(), "iteration %d: snapshot() loop still running" % i)
                self.assertIsInstance(results[k], ValueError, "iteration %d: %r" % (i, results[k]))
                self.assertIn("is closed", str(results[k]))

    def test_close_of_a_watcher_while_its_reader_is_used(self):
        push(self.base, "cfg", "shared")
        self.start_broker(self.base + "/cfg")
        self.wait_content(self.reader(), "shared")
        ev = Events()
        for i in range(10):
            w = zkw.ZookeeperWatcher(HOSTS, self.base + "/cfg", shm=self.shm, config_handler=ev.handler("config"))
            stop = threading.Event()
            errors = []

            def poll():
                try:
                    while not stop.is_set():
                        w.get_file_contents()
                        w.is_valid()
                except ValueError as e:
                    errors.append(e)
            t = threading.Thread(target=poll, daemon=True)
            t.start()
            ev.wait_count(i + 1)
            _call_in_thread(w.close, "watcher close() while another thread polls")
            stop.set()
            t.join(WAIT_S)
            self.assertFalse(t.is_alive())
            self.assertTrue(all("closed" in str(e) for e in errors), errors)


class TestEventThreadSurvives(BrokerTest):
    """The event thread used to die for good on its first failed read."""

    def test_event_thread_survives_failed_reads_and_recovers(self):
        push(self.base, "cfg", "v1")
        self.start_broker(self.base + "/cfg")
        r = self.reader()
        self.wait_content(r, "v1")
        ev = Events()
        with LogRecords() as logs:
            w = self.watcher(self.base + "/cfg", config_handler=ev.handler("config"),
                             error_handler=ev.handler("error"))
            self.assertEqual(ev.wait_count(1), [("config", "v1")])
            forger = SegmentForger(self.shm)
            self.addCleanup(forger.close)
            for streak, content in enumerate(("v2", "v3"), start=1):
                # The broker paused (it would repair the slot at its next
                # publish), a corrupt generation published in its place.
                self.broker.send_signal(signal.SIGSTOP)
                try:
                    failures = getattr(w, "_read_failures", 0)
                    forger.publish_corrupt()
                    with self.assertRaises(zkw.ZkwError):
                        r.snapshot()  # the read really fails: -EBADMSG

                    def retried():
                        if not w._thread.is_alive():
                            raise AssertionError("the event thread died on a failed read; log: %r"
                                                 % logs.at(logging.ERROR))
                        return getattr(w, "_read_failures", 0) >= failures + 4
                    # Several attempts with backoff (10, 20, 40 ms ...),
                    # and one warning for the whole run of failures.
                    wait_until(retried, "4 failed reads in streak %d" % streak)
                    warnings = logs.at(logging.WARNING)
                    self.assertEqual(len(warnings), streak, warnings)
                    self.assertIn(self.shm, warnings[-1])
                    self.assertIn("retrying", warnings[-1])
                    self.assertEqual(logs.at(logging.ERROR), [])
                finally:
                    self.broker.send_signal(signal.SIGCONT)
                # Reads work again once the broker publishes: handlers resume.
                push(self.base, "cfg", content)
                self.assertEqual(ev.wait_count(streak + 1)[streak], ("config", content))
                self.assertTrue(any("works again" in m for m in logs.at(logging.INFO)), logs.at(logging.INFO))
            self.assertEqual(len(logs.at(logging.WARNING)), 2)
            self.assertEqual(ev.snapshot(), [("config", "v1"), ("config", "v2"), ("config", "v3")])
            t0 = time.monotonic()
            w.close()
            self.assertLess(time.monotonic() - t0, 5.0)
            self.assertFalse(w._thread.is_alive())


class TestOwner(BrokerTest):
    def test_expected_uid_as_uid_or_user_name(self):
        push(self.base, "cfg", "owned")
        self.start_broker(self.base + "/cfg")
        self.wait_content(self.reader(), "owned")
        owner = os.stat("/dev/shm" + self.shm).st_uid
        name = pwd.getpwuid(owner).pw_name
        for told in (owner, name, str(owner)):
            with zkw.Reader(self.shm, expected_uid=told) as r:
                self.assertEqual(r.get_file_contents(), "owned")
        w = zkw.ZookeeperWatcher(HOSTS, self.base + "/cfg", shm=self.shm, expected_uid=name)
        self.assertEqual(w.get_file_contents(), "owned")
        w.close()
        other = 65534 if owner != 65534 else 65533
        with self.assertRaises(PermissionError) as cm:
            zkw.Reader(self.shm, expected_uid=other)
        self.assertIn(self.shm, str(cm.exception))
        self.assertIn("owner", str(cm.exception))
        with self.assertRaises(PermissionError):
            zkw.ZookeeperWatcher(HOSTS, self.base + "/cfg", shm=self.shm, expected_uid=other)
        with self.assertRaises(ValueError) as cm:
            zkw.Reader(self.shm, expected_uid="no-such-user-zkw")
        self.assertIn("no such user", str(cm.exception))
        with self.assertRaises(TypeError):
            zkw.Reader(self.shm, expected_uid=1.5)


class TestRetired(BrokerTest):
    def test_event_thread_reopens_a_segment_its_broker_replaced(self):
        push(self.base, "cfg", "v1")
        self.start_broker(self.base + "/cfg")
        self.wait_content(self.reader(), "v1")
        ev = Events()
        with LogRecords() as logs:
            w = self.watcher(self.base + "/cfg", config_handler=ev.handler("config"))
            self.assertEqual(ev.wait_count(1), [("config", "v1")])
            first = w._reader
            path = "/dev/shm" + self.shm
            inode = os.stat(path).st_ino
            self.stop_broker()
            # Group-writable: the next broker does not adopt it but makes a
            # new segment under the name and retires this one.
            os.chmod(path, 0o660)
            self.start_broker(self.base + "/cfg")
            wait_until(lambda: os.stat(path).st_ino != inode, "the broker to replace %s" % path)
            wait_until(lambda: w._reader is not first, "the event thread to reopen %s" % self.shm)
            push(self.base, "cfg", "v2")
            self.assertEqual(ev.wait_count(2), [("config", "v1"), ("config", "v2")])
            self.assertEqual(w.get_file_contents(), "v2")
            self.assertTrue(w._thread.is_alive())
            self.assertTrue(any("reopened" in m for m in logs.at(logging.INFO)), logs.at(logging.INFO))
            self.assertEqual(logs.at(logging.ERROR), [])
            with self.assertRaises(ValueError):
                first.generation  # the old reader was closed


class TestValidation(BrokerTest):
    def wait_snapshot(self, r, pred, what, timeout=WAIT_S):
        """Wait (on the segment's futex) until pred(r.snapshot())."""
        deadline = time.monotonic() + timeout
        while True:
            seen = r.generation
            snap = r.snapshot()
            if snap.generation and pred(snap):
                return snap
            left = deadline - time.monotonic()
            if left <= 0 or (not r.wait_for(seen, left) and time.monotonic() >= deadline):
                self.fail("segment %s never showed %s (last: %r)\nbroker log:\n%s"
                          % (self.shm, what, snap, self.broker_log()))

    def test_snapshot_says_rejected_and_cached(self):
        """Content the watch's rules refuse never reaches the reader: the
        snapshot keeps the last good content, rejected=True while connected
        stays True, and the error says why. After a reboot with ZooKeeper
        out of reach the broker's disk cache is published: cached=True,
        the last good content, never the refused one."""
        state_dir = tempfile.mkdtemp(dir=RUNDIR, prefix="state.")
        self.closers.append(lambda: shutil.rmtree(state_dir, ignore_errors=True))
        good = '{"settings": {"a": 1}}'
        path = self.base + "/cfg"
        rules = ("--validate", "json", "--state-dir", state_dir)
        push(self.base, "cfg", good)
        self.start_broker(path, *rules)
        r = self.reader()
        snap = self.wait_content(r, good)
        self.assertEqual((snap.valid, snap.connected, snap.rejected, snap.cached), (True, True, False, False))
        seen = snap.generation
        push(self.base, "cfg", '{"settings": ')
        snap = self.wait_snapshot(r, lambda s: s.generation > seen and s.rejected, "the rejection")
        self.assertEqual(snap.content, good.encode())
        self.assertEqual((snap.valid, snap.connected, snap.rejected, snap.cached), (False, True, True, False))
        self.assertTrue(snap.error.startswith("Rejected version "), snap.error)
        self.assertIn("invalid JSON at line 1, column", snap.error)
        self.assertNotIn("settings", snap.error)  # the error never quotes the content

        # The reboot: segment gone, ZooKeeper unreachable.
        self.stop_broker()
        os.unlink("/dev/shm" + self.shm)
        self.start_broker(path, *rules, hosts="127.0.0.1:1")
        r = self.reader()
        snap = self.wait_snapshot(r, lambda s: s.cached, "the cached copy")
        self.assertEqual(snap.content, good.encode())
        self.assertEqual((snap.valid, snap.connected, snap.rejected, snap.cached), (False, False, False, True))
        self.assertTrue(snap.error.startswith("cached copy from "), snap.error)
        self.assertGreater(snap.generation, seen)
        self.stop_broker()


class TestEnsemble(unittest.TestCase):
    """zkw.same_ensemble: what ZookeeperWatcher's hosts check accepts."""

    def test_same_servers_written_differently(self):
        same = [
            ("127.0.0.1:2181,127.0.0.2:2181", "127.0.0.2,127.0.0.1:2181"),  # order, default port
            ("127.0.0.1:2181", "127.0.0.1:2181,127.0.0.1"),  # duplicates
            ("localhost:2181", "127.0.0.1:2181"),  # a name and its address
            ("LocalHost", "127.0.0.1"),
            ("[::1]:2181", "::1"),
            ("127.0.0.1:2181/app", "127.0.0.1/app"),
            (" 127.0.0.1:2181 , 127.0.0.2 ", "127.0.0.2:2181,127.0.0.1:2181"),
        ]
        for a, b in same:
            self.assertTrue(zkw.same_ensemble(a, b), (a, b))
            self.assertTrue(zkw.same_ensemble(b, a), (b, a))

    def test_another_ensemble(self):
        other = [
            ("127.0.0.1:2181", "127.0.0.1:2182"),  # another port
            ("127.0.0.1:2181", "127.0.0.2:2181"),
            ("127.0.0.1,127.0.0.2", "127.0.0.1"),  # a server more
            ("127.0.0.1/app", "127.0.0.1"),  # the chroot must match exactly
            ("127.0.0.1/app", "127.0.0.1/app/"),
            ("127.0.0.1/app", "127.0.0.1/App"),
        ]
        for a, b in other:
            self.assertFalse(zkw.same_ensemble(a, b), (a, b))
            self.assertFalse(zkw.same_ensemble(b, a), (b, a))
        for bad in ("", ",", "host:port", "[::1"):
            with self.assertRaises(ValueError):
                zkw.same_ensemble(bad, "127.0.0.1")


class SocketBroker(object):
    """A zkw-broker started with no -f at all: it serves what workers
    subscribe to through its control socket (in the run dir)."""

    def __init__(self, *extra):
        _serial[0] += 1
        self.sock = os.path.join(RUNDIR, "b%d.sock" % _serial[0])
        self.extra = list(extra)
        self.proc = None
        self.log = None

    def start(self):
        self.log = open(self.sock + ".log", "w+")
        self.proc = subprocess.Popen([BROKER, "-z", HOSTS, "--socket", self.sock, "--unlink-on-exit"] + self.extra,
                                     stdout=self.log, stderr=subprocess.STDOUT, env=CHILD_ENV)
        _brokers.append(self.proc)

        def answers():
            if self.proc.poll() is not None:
                raise AssertionError("zkw-broker exited with %s:\n%s" % (self.proc.returncode, self.tail()))
            try:
                return zkw.broker_status(self.sock, timeout=2)["proto"] == "1"
            except zkw.BrokerUnavailable:
                return False
        wait_until(answers, "zkw-broker to answer STATUS on %s" % self.sock)
        return self

    def tail(self):
        if not self.log:
            return ""
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-3000:]

    def stop(self, sig=signal.SIGTERM):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.log:
            self.log.close()
            self.log = None


class SocketTest(BrokerTest):
    """Watchers that subscribe through a broker's control socket."""

    def setUp(self):
        super().setUp()
        self.socket_brokers = []

    def tearDown(self):
        for close in reversed(self.closers):
            close()
        self.closers = []
        for b in self.socket_brokers:
            b.stop()
        super().tearDown()
        # On-demand segments (and broker locks) a killed broker left behind.
        mark = "zkwpy.%s." % self.base.split("/")[-1]
        for name in os.listdir("/dev/shm"):
            if mark in name:
                os.unlink(os.path.join("/dev/shm", name))

    def socket_broker(self, *extra, start=True):
        b = SocketBroker(*extra)
        self.socket_brokers.append(b)
        return b.start() if start else b

    def subscriber(self, broker, path, hosts=None, **kw):
        sock = broker.sock if isinstance(broker, SocketBroker) else broker
        w = zkw.ZookeeperWatcher(HOSTS if hosts is None else hosts, path, socket_path=sock, **kw)
        self.closers.append(w.close)
        return w

    def wait_watcher(self, w, want, timeout=WAIT_S):
        """Wait until the poll API of w shows valid content want: on the
        segment's futex, in slices (the watcher may move to a new one)."""
        deadline = time.monotonic() + timeout
        while not (w.is_valid() and w.get_file_contents() == want):
            reader = w._reader
            left = deadline - time.monotonic()
            if left <= 0:
                self.fail("watcher of %s never showed %r (last: valid=%r %r, error %r)"
                          % (w.filepath, want, w.is_valid(), w.get_file_contents()[:80], w.get_error()))
            if reader is None:
                w._closing.wait(min(left, 0.05))  # not subscribed yet: nothing to wait on
                continue
            try:
                reader.wait_for(reader.generation, min(left, 0.2))
            except (zkw.ReaderClosed, zkw.ZkwError):
                pass  # retired or replaced: look again


class TestSubscribe(SocketTest):
    def test_bundle_through_the_socket(self):
        """bundle=True: the children as one dict, to get_entries() and to
        config_handler, a transaction seen whole."""
        d = tempfile.mkdtemp(dir=RUNDIR)

        def files(**kv):
            for name in os.listdir(d):
                os.unlink(os.path.join(d, name))
            for name, body in kv.items():
                with open(os.path.join(d, name + ".json"), "w") as f:
                    f.write(body)

        files(a='{"a": 1}', b='{"b": 2}')
        push_bundle(self.base, "bun", d)
        b = self.socket_broker()
        seen = []
        w = self.subscriber(b, self.base + "/bun", bundle=True, config_handler=seen.append)
        first = {"a.json": b'{"a": 1}', "b.json": b'{"b": 2}'}
        self.assertTrue(w.is_valid())
        self.assertEqual(dict(w.get_entries()), first)
        self.assertEqual([dict(x) for x in seen], [first])  # delivered before the constructor returned
        # One transaction: b changed, a removed, c added.
        files(b='{"b": 3}', c='{"c": 4}')
        push_bundle(self.base, "bun", d)
        second = {"b.json": b'{"b": 3}', "c.json": b'{"c": 4}'}
        wait_until(lambda: len(seen) == 2, "the second bundle delivered")
        self.assertEqual(dict(seen[1]), second)
        self.assertEqual(dict(w.get_entries()), second)
        self.assertIn("bundle=1", subprocess.run(
            ["socat", "-", "UNIX-CONNECT:" + b.sock], input="LIST\n", stdout=subprocess.PIPE, text=True,
            timeout=30).stdout)
        with self.assertRaises(ValueError):
            zkw.ZookeeperWatcher(HOSTS, self.base + "/bun", socket_path=b.sock, pointer=True, bundle=True)

    def test_any_path_from_a_broker_without_f(self):
        path = self.base + "/cfg"
        push(self.base, "cfg", "stuff here")
        b = self.socket_broker()
        w = self.subscriber(b, path)
        self.assertTrue(w.is_valid())
        self.assertEqual(w.get_file_contents(), "stuff here")
        self.assertEqual(w.get_error(), "")
        self.assertTrue(w.ping())
        self.assertEqual(w.segment, zkw.default_segment_name(path))
        status = zkw.broker_status(b.sock)
        self.assertEqual((status["watches"], status["demand"], status["hosts"]), ("1", "1", HOSTS))
        push(self.base, "cfg", "NEW stuff here")
        self.wait_watcher(w, "NEW stuff here")
        # The direct API subscribes too, and shares the watch.
        with zkw.Reader.subscribe(path, socket_path=b.sock) as r:
            self.assertEqual(r.get_file_contents(), "NEW stuff here")
            self.assertEqual(r.name, w.segment)
        self.assertEqual(zkw.broker_status(b.sock)["watches"], "1")

    def test_socket_from_the_environment(self):
        push(self.base, "cfg", "found through $ZKW_SOCKET")
        b = self.socket_broker()
        old = os.environ.get("ZKW_SOCKET")
        os.environ["ZKW_SOCKET"] = b.sock
        try:
            w = zkw.ZookeeperWatcher(HOSTS, self.base + "/cfg")
            self.closers.append(w.close)
        finally:
            if old is None:
                del os.environ["ZKW_SOCKET"]
            else:
                os.environ["ZKW_SOCKET"] = old
        self.assertEqual(w.socket_path, b.sock)
        self.assertEqual(w.get_file_contents(), "found through $ZKW_SOCKET")

    def test_hosts_written_differently_accepted_another_ensemble_refused(self):
        path = self.base + "/cfg"
        push(self.base, "cfg", "one ensemble")
        port = int(HOSTS.rsplit(":", 1)[1])
        b = self.socket_broker()
        for hosts in ("localhost:%d" % port, "127.0.0.1:%d,localhost:%d,127.0.0.1:%d" % (port, port, port),
                      " 127.0.0.1:%d " % port):
            w = self.subscriber(b, path, hosts=hosts)
            self.assertEqual(w.get_file_contents(), "one ensemble", hosts)
            w.close()
        for other in ("127.0.0.1:%d" % (port + 1), "127.0.0.1:%d,127.0.0.2:%d" % (port, port),
                      "127.0.0.1:%d/chroot" % port):
            with self.assertRaises(zkw.EnsembleMismatch) as cm:
                self.subscriber(b, path, hosts=other)
            self.assertIn(repr(other), str(cm.exception))
            self.assertIn(repr(HOSTS), str(cm.exception))
            self.assertIn(b.sock, str(cm.exception))
        # valid_init=False: started, invalid, saying why.
        ev = Events()
        w = self.subscriber(b, path, hosts="127.0.0.1:%d" % (port + 1), valid_init=False,
                            error_handler=ev.handler("error"), config_handler=ev.handler("config"))
        self.assertFalse(w.is_valid())
        self.assertEqual(w.get_file_contents(), "")
        self.assertIn(repr(HOSTS), w.get_error())
        calls = ev.wait_count(1)
        self.assertEqual(calls[0][0], "error")
        self.assertIn("another ensemble", calls[0][1])

    def test_valid_init_false_before_the_broker_then_content(self):
        path = self.base + "/cfg"
        b = self.socket_broker(start=False)
        ev = Events()
        with LogRecords() as logs:
            w = self.subscriber(b, path, valid_init=False, valid_handler=ev.handler("valid"),
                                config_handler=ev.handler("config"), error_handler=ev.handler("error"))
            self.assertFalse(w.is_valid())
            self.assertFalse(w.ping())
            self.assertEqual(w.get_file_contents(), "")
            self.assertIn(b.sock, w.get_error())
            self.assertIn("is zkw-broker running", w.get_error())
            first = ev.snapshot()  # told before the constructor returned
            self.assertEqual(len(first), 1, first)
            self.assertEqual(first[0][0], "error")  # never valid yet: no valid(False)
            self.assertIn(b.sock, first[0][1])
            push(self.base, "cfg", "arrived")
            b.start()
            calls = ev.wait_for(lambda calls: ("valid", True) in calls, "valid(True)")
        # Only errors before (a broker starting may refuse a connection
        # before it listens: another reason, told once more), then the seed's
        # order, each once.
        self.assertEqual(calls[-2:], [("config", "arrived"), ("valid", True)])
        self.assertEqual([kind for kind, _ in calls[:-2]], ["error"] * (len(calls) - 2), calls)
        self.assertTrue(w.is_valid())
        self.assertEqual(w.get_file_contents(), "arrived")
        self.assertEqual(w.get_error(), "")
        warnings = [m for m in logs.at(logging.WARNING) if b.sock in m]
        self.assertTrue(warnings)
        self.assertEqual(len(warnings), len(set(warnings)), warnings)  # once per reason, not per attempt

    def test_valid_init_true_raises_without_broker_or_when_refused(self):
        sock = os.path.join(RUNDIR, "nobody-%d.sock" % _serial[0])
        with self.assertRaises(zkw.BrokerUnavailable) as cm:
            self.subscriber(sock, self.base + "/cfg")
        self.assertIsInstance(cm.exception, ConnectionError)
        self.assertIn(sock, str(cm.exception))
        self.assertIn("is zkw-broker running", str(cm.exception))
        push(self.base, "one", "1")
        push(self.base, "two", "2")
        b = self.socket_broker("--max-watches", "1")
        self.assertEqual(self.subscriber(b, self.base + "/one").get_file_contents(), "1")
        with self.assertRaises(zkw.SubscriptionRefused) as cm:
            self.subscriber(b, self.base + "/two")
        self.assertIn("--max-watches 1", str(cm.exception))
        self.assertIn(self.base + "/two", str(cm.exception))
        w = self.subscriber(b, self.base + "/two", valid_init=False)
        self.assertFalse(w.is_valid())
        self.assertIn("--max-watches 1", w.get_error())
        with self.assertRaises(ValueError):
            zkw.ZookeeperWatcher(HOSTS, "relative/path", socket_path=b.sock, valid_init=False)

    def test_node_missing_then_created(self):
        path = self.base + "/later"
        b = self.socket_broker()
        ev = Events()
        w = self.subscriber(b, path, valid_handler=ev.handler("valid"), config_handler=ev.handler("config"),
                            error_handler=ev.handler("error"))
        self.assertFalse(w.is_valid())
        self.assertTrue(w.get_error().startswith("Invalid get on file path"), w.get_error())
        self.assertEqual(ev.wait_count(1)[0][0], "error")
        push(self.base, "later", "now here")
        self.assertEqual(ev.wait_count(3)[1:], [("config", "now here"), ("valid", True)])

    def test_pointer_and_ensure_are_honoured(self):
        push(self.base, "cfg1", "first config")
        push(self.base, "cfg2", "second config")
        push(self.base, "ptr", self.base + "/cfg1")
        b = self.socket_broker()
        ev = Events()
        p = self.subscriber(b, self.base + "/ptr", pointer=True, config_handler=ev.handler("config"))
        self.assertEqual(p.get_file_contents(), "first config")
        self.assertEqual(p.get_file_contents(pointer=True), self.base + "/cfg1")
        plain = self.subscriber(b, self.base + "/ptr")  # the same node, not a pointer: another watch
        self.assertEqual(plain.get_file_contents(), self.base + "/cfg1")
        self.assertNotEqual(plain.segment, p.segment)
        push(self.base, "ptr", self.base + "/cfg2")
        self.assertEqual(ev.wait_count(2), [("config", "first config"), ("config", "second config")])
        self.wait_watcher(plain, self.base + "/cfg2")

        # ensure creates a missing node (empty); without it, it stays missing.
        missing = self.subscriber(b, self.base + "/made/not")
        self.assertFalse(missing.is_valid())
        made = self.subscriber(b, self.base + "/made/here", ensure=True)
        self.assertTrue(made.is_valid())
        self.assertEqual(made.get_file_contents(), "")
        # The node is in ZooKeeper, not only in that broker: a new broker
        # finds it without ensure.
        for w in (missing, made, p, plain):
            w.close()
        b.stop()
        again = self.socket_broker()
        self.assertTrue(self.subscriber(again, self.base + "/made/here").is_valid())
        self.assertFalse(self.subscriber(again, self.base + "/made/not").is_valid())

    def test_retired_segment_is_followed(self):
        path = self.base + "/cfg"
        push(self.base, "cfg", "small")
        b = self.socket_broker()
        ev = Events()
        with LogRecords() as logs:
            w = self.subscriber(b, path, valid_handler=ev.handler("valid"), config_handler=ev.handler("config"),
                                error_handler=ev.handler("error"))
            poller = self.subscriber(b, path)  # no handlers: its thread follows all the same
            self.assertEqual(ev.wait_count(2), [("config", "small"), ("valid", True)])
            first, first_poller = w._reader, poller._reader
            big = "grown " * 20000  # 120 kB: far past the 8 KiB a new segment holds
            push(self.base, "cfg", big)
            self.assertEqual(ev.wait_count(3)[2], ("config", big))
            self.wait_watcher(poller, big)
            self.assertIsNot(w._reader, first)
            self.assertIsNot(poller._reader, first_poller)
            with self.assertRaises(ValueError):
                first.generation  # the retired segment was let go
            push(self.base, "cfg", big + "again")
            self.assertEqual(ev.wait_count(4)[3], ("config", big + "again"))
            self.assertEqual(len(ev.snapshot()), 4)  # nothing delivered twice
            self.wait_watcher(poller, big + "again")
            self.assertTrue(any("subscribed again" in m for m in logs.at(logging.INFO)), logs.at(logging.INFO))
            self.assertEqual(logs.at(logging.ERROR), [])

    def test_get_file_contents_cached_per_generation(self):
        path = self.base + "/cfg"
        push(self.base, "cfg", "cached")
        b = self.socket_broker()
        w = self.subscriber(b, path)
        first = w.get_file_contents()
        self.assertEqual(first, "cached")
        self.assertIs(w.get_file_contents(), first)  # nothing changed: the same object
        r = zkw.Reader.subscribe(path, socket_path=b.sock)
        self.closers.append(r.close)
        text, raw = r.get_file_contents(), r.get_file_bytes()
        self.assertIs(r.get_file_contents(), text)
        self.assertIs(r.get_file_bytes(), raw)
        self.assertEqual(raw, b"cached")
        push(self.base, "cfg", "changed")
        self.wait_content(r, "changed")
        self.wait_watcher(w, "changed")
        changed = w.get_file_contents()
        self.assertEqual(changed, "changed")
        self.assertIs(w.get_file_contents(), changed)
        self.assertEqual(r.get_file_contents(), "changed")
        self.assertEqual(r.get_file_bytes(), b"changed")
        self.assertEqual(first, "cached")  # what a caller holds never changes under it


if __name__ == "__main__":
    result = unittest.main(verbosity=2, exit=False).result
    tearDownModule()
    sys.exit(0 if result.wasSuccessful() else 1)
