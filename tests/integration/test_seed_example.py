#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""test_seed_example.py - the seed's own example program runs on zkw with
only its import changed, against a broker started with no -f at all.

The seed's manual (../shared/seed/zookeeper_watcher.rst, section "Example")
holds example_zw.py. This test cuts the program out of the manual and
changes it with sed: its import line (scutils -> zkw), and, because the
manual prints with Python 2 statements and zkw is Python 3, each statement
`print a, b` into the call `print(a, b)` (the seed's published
example_zw.py is the same program with those calls). A check below proves
that no other line differs. Then it follows the manual's walkthrough: poll
mode, event mode, pointer mode (-p), and -v (valid_init=False) started
before its broker, with every change pushed by zkw-push, and checks what
the program prints, that each change is printed once, and that Ctrl-C
(SIGINT) ends it cleanly.

Run by tests/run.sh with /usr/bin/python3 (env ZKW_BUILD, ZKW_ROOT,
ZKW_TEST_RUNDIR); exits non-zero on any failure, 77 (skipped) when the
seed's manual is not there. Starts one standalone ZooKeeper with
tools/zk.sh and its own brokers, each with its control socket in the run
dir; stops every process it started by PID.
"""

import atexit
import os
import re
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
LIBRARY = os.path.join(BUILD, "libzkw-client.so")
ZK_SH = os.path.join(ROOT, "tools", "zk.sh")
SEED_MANUAL = os.path.join(os.environ.get("ZKW_SEED_DIR") or os.path.join(ROOT, "..", "shared", "seed"),
                           "zookeeper_watcher.rst")
WAIT_S = 30.0  # bound of every wait for the program's output

RUNDIR = os.environ.get("ZKW_TEST_RUNDIR") or tempfile.mkdtemp(prefix="zkw-seedtest.")
ZK_DIR = os.path.join(RUNDIR, "zk")
PREFIX = "/zkwseed%d" % os.getpid()  # the manual's /tmp/... under this: segment names of our own
HOSTS = None
EXAMPLE = None
_procs = []  # every Popen started, for the atexit backstop

# A shell runs a background job with SIGINT ignored, and an ignored signal
# stays ignored across exec: the example (and its `except: pass` around the
# loop) would never see Ctrl-C. A handler of ours is reset to the default
# in every child we start.
signal.signal(signal.SIGINT, signal.default_int_handler)


def _example_env(**extra):
    """The environment of an example: ours, extra, and, when
    libzkw-client.so is a sanitizer build (make check / make tsan), its
    runtime preloaded into the example's Python (leak detection off:
    CPython does not free everything at exit)."""
    env = dict(os.environ)
    env.update(extra)
    env.update(_sanitizer_env())
    return env


def _sanitizer_env():
    try:
        out = subprocess.run(["ldd", LIBRARY], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    runtimes = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>" and parts[0].startswith(("libasan", "libtsan", "libubsan")):
            runtimes.append(parts[2])
    if not runtimes:
        return {}
    runtimes.sort(key=lambda p: "libubsan" in p)  # ASan/TSan must come first
    preload = " ".join(runtimes + ([os.environ["LD_PRELOAD"]] if os.environ.get("LD_PRELOAD") else []))
    asan = ":".join(x for x in (os.environ.get("ASAN_OPTIONS", ""), "detect_leaks=0") if x)
    return {"LD_PRELOAD": preload, "ASAN_OPTIONS": asan}


def _stop(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _stop_all():
    for p in _procs:
        _stop(p, signal.SIGKILL)
    if HOSTS is not None:
        subprocess.run([ZK_SH, "stop", ZK_DIR], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    # On-demand segments and broker locks a killed broker left behind.
    mark = PREFIX[1:] + "."
    for name in os.listdir("/dev/shm"):
        if mark in name:
            os.unlink(os.path.join("/dev/shm", name))


# ---- the program under test: cut out of the manual, changed with sed ----

IMPORT_SEED = "from scutils.zookeeper_watcher import ZookeeperWatcher"
IMPORT_ZKW = "from zkw import ZookeeperWatcher"
SED_SCRIPT = [
    "-e", r"s/^from scutils\.zookeeper_watcher import ZookeeperWatcher$/from zkw import ZookeeperWatcher/",
    "-e", r"s/^\( *\)print \(.*\)$/\1print(\2)/",
]


def example_from_manual(text):
    """The literal block of the manual's "Example" section, dedented."""
    lines = text.splitlines()
    for i in range(len(lines) - 1):
        if lines[i].strip() == "Example" and re.fullmatch(r"-{3,}", lines[i + 1].strip()):
            break
    else:
        raise AssertionError("no Example section in %s" % SEED_MANUAL)
    i += 2
    while lines[i].strip() != "::":
        i += 1
    block = []
    for line in lines[i + 1:]:
        if line.strip() and not line.startswith("    "):
            break
        block.append(line[4:])
    while block and not block[-1].strip():
        block.pop()
    while block and not block[0].strip():
        block.pop(0)
    return "\n".join(block) + "\n"


def setUpModule():
    global HOSTS, EXAMPLE
    if not os.path.exists(SEED_MANUAL):
        print("skipped: the seed's manual %s is not there (set ZKW_SEED_DIR)" % SEED_MANUAL)
        sys.exit(77)
    for path in (BROKER, PUSH, LIBRARY):
        if not os.access(path, os.R_OK):
            raise RuntimeError("%s is missing: build it first (make)" % path)
    atexit.register(_stop_all)
    seed_dir = os.path.join(RUNDIR, "seed")
    os.makedirs(seed_dir, exist_ok=True)
    with open(SEED_MANUAL) as f:
        original = example_from_manual(f.read())
    with open(os.path.join(seed_dir, "example_zw.seed.py"), "w") as f:
        f.write(original)
    EXAMPLE = os.path.join(seed_dir, "example_zw.py")
    with open(EXAMPLE, "w") as out:
        subprocess.run(["sed"] + SED_SCRIPT + [os.path.join(seed_dir, "example_zw.seed.py")], stdout=out, check=True,
                       timeout=30)
    out = subprocess.run([ZK_SH, "start", ZK_DIR, "--nodes", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError("tools/zk.sh start failed:\n" + out.stderr)
    HOSTS = out.stdout.strip().splitlines()[-1]


def tearDownModule():
    _stop_all()


def push(node_id, parent, content):
    """The manual's file_pusher step: a settings file pushed as parent/node_id."""
    settings = os.path.join(RUNDIR, "settings.txt")
    with open(settings, "w") as f:
        f.write(content)
    out = subprocess.run([PUSH, "-f", settings, "-i", node_id, "-p", PREFIX + parent, "-z", HOSTS],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    if out.returncode != 0:
        raise AssertionError("zkw-push %s%s failed: %s" % (parent, node_id, out.stdout))


def broker_answers(sock):
    """True when a broker answers STATUS on sock (no zkw import here: this
    process may not load a sanitizer build of the library)."""
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(sock)
        s.sendall(b"STATUS\n")
        answer = b""
        while b"\n" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                return None
            answer += chunk
        return answer.decode(errors="replace").split("\n")[0]
    except OSError:
        return None
    finally:
        s.close()


class Broker(object):
    """zkw-broker -z HOSTS --socket SOCK: no -f at all."""

    def __init__(self, name):
        self.sock = os.path.join(RUNDIR, name + ".sock")
        self.proc = None
        self.log = None

    def start(self):
        self.log = open(self.sock + ".log", "w+")
        self.proc = subprocess.Popen([BROKER, "-z", HOSTS, "--socket", self.sock, "--unlink-on-exit"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        _procs.append(self.proc)
        deadline = time.monotonic() + WAIT_S
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("zkw-broker exited with %s:\n%s" % (self.proc.returncode, self.tail()))
            status = broker_answers(self.sock)
            if status:
                return status
            if time.monotonic() > deadline:
                raise AssertionError("zkw-broker did not answer on %s within %.0f s" % (self.sock, WAIT_S))
            time.sleep(0.02)  # the socket appearing announces nothing to wait on

    def tail(self):
        if not self.log:
            return ""
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-3000:]

    def stop(self):
        if self.proc is not None:
            _stop(self.proc)
        if self.log:
            self.log.close()
            self.log = None


class Example(object):
    """example_zw.py running, its output lines collected as they come."""

    def __init__(self, sock, *args):
        env = _example_env(PYTHONPATH=os.path.join(ROOT, "client", "python"), ZKW_LIBRARY=LIBRARY,
                           ZKW_SOCKET=sock, PYTHONUNBUFFERED="1")
        self.args = list(args)
        self.proc = subprocess.Popen([sys.executable, EXAMPLE] + self.args, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, text=True)
        _procs.append(self.proc)
        self.out, self.err = [], []
        self.cond = threading.Condition()
        self.readers = [threading.Thread(target=self._collect, args=(pipe, into), daemon=True)
                        for pipe, into in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self.readers:
            t.start()

    def _collect(self, pipe, into):
        for line in pipe:
            with self.cond:
                into.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def lines(self):
        with self.cond:
            return list(self.out)

    def expect(self, line):
        """Wait until line has been printed; the lines so far."""
        return self.expect_that(lambda out: line in out, repr(line))

    def expect_that(self, pred, what):
        """Wait until pred(lines printed so far) holds; those lines."""
        with self.cond:
            ok = self.cond.wait_for(lambda: pred(self.out) or self.proc.poll() is not None, WAIT_S)
            if not ok or not pred(self.out):
                raise AssertionError("example_zw.py %s: expected %s within %.0f s%s; it printed:\n%s\nstderr:\n%s"
                                     % (" ".join(self.args), what, WAIT_S,
                                        "" if self.proc.poll() is None else " (exited %d)" % self.proc.returncode,
                                        "\n".join(self.out[-40:]), "\n".join(self.err[-40:])))
            return list(self.out)

    def interrupt(self):
        """Ctrl-C: the example leaves its loop, closes the watcher, exits 0."""
        self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError("example_zw.py %s did not stop on SIGINT; stderr:\n%s"
                                 % (" ".join(self.args), "\n".join(self.err[-40:])))
        for t in self.readers:
            t.join(WAIT_S)
        if rc != 0 or any("Traceback" in line for line in self.err):
            raise AssertionError("example_zw.py %s exited with %d; stderr:\n%s"
                                 % (" ".join(self.args), rc, "\n".join(self.err[-40:])))
        return list(self.out)

    def kill(self):
        _stop(self.proc, signal.SIGKILL)


# The manual's settings files (each ends in a newline, as a file does).
MY = "My configuration string here. Typically YAML or JSON"
NEW = "NEW My configuration string here. Typically YAML or JSON"
EVENT = "EVENT TRIGGER My configuration string here. Typically YAML or JSON"
ANOTHER = "this is another config"
ADDED = "this is another config I ADDED NEW STUFF"
BANNER = "Use a keyboard interrupt to shut down the process."


class TestSeedExample(unittest.TestCase):
    broker = None

    @classmethod
    def setUpClass(cls):
        cls.broker = Broker("broker")
        status = cls.broker.start()
        if " watches=0 " not in status + " ":
            raise AssertionError("a broker without -f should start with no watch: %s" % status)

    @classmethod
    def tearDownClass(cls):
        cls.broker.stop()

    def setUp(self):
        self.examples = []

    def tearDown(self):
        for e in self.examples:
            e.kill()

    def run_example(self, *args, sock=None):
        e = Example(sock or self.broker.sock, "-z", HOSTS, *args)
        self.examples.append(e)
        return e

    def test_0_only_the_import_and_print_statements_differ(self):
        with open(os.path.join(os.path.dirname(EXAMPLE), "example_zw.seed.py")) as f:
            seed = f.read().splitlines()
        with open(EXAMPLE) as f:
            ours = f.read().splitlines()
        self.assertEqual(len(seed), len(ours))
        self.assertEqual(seed.count(IMPORT_SEED), 1)
        changed = [(a, b) for a, b in zip(seed, ours) if a != b]
        self.assertIn((IMPORT_SEED, IMPORT_ZKW), changed)
        for a, b in changed:
            if a == IMPORT_SEED:
                continue
            m = re.fullmatch(r"( *)print (.*)", a)
            self.assertTrue(m, "sed changed a line that is neither the import nor a print: %r" % a)
            self.assertEqual(b, "%sprint(%s)" % (m.group(1), m.group(2)))
        self.assertGreaterEqual(len(changed), 6)
        compile("\n".join(ours), EXAMPLE, "exec")

    def test_1_poll_mode(self):
        push("myconfig", "/tmp/", MY + "\n")
        e = self.run_example("-f", PREFIX + "/tmp/myconfig", "--poll")
        e.expect("Contents: " + MY)
        self.assertIn("Valid File? True", e.lines())
        self.assertNotIn("Valid File? False", e.lines())
        push("myconfig", "/tmp/", NEW + "\n")
        e.expect("Contents: " + NEW)
        out = e.interrupt()
        self.assertIn(BANNER, out)
        self.assertNotIn("Valid File? False", out)

    def test_2_event_mode_each_change_once(self):
        push("myconfig", "/tmp/", NEW + "\n")
        e = self.run_example("-f", PREFIX + "/tmp/myconfig", "--event")
        out = e.expect("The valid state is now True")
        e.expect(BANNER)
        self.assertLess(out.index("Your file contents: " + NEW), out.index("The valid state is now True"))
        push("myconfig", "/tmp/", EVENT + "\n")
        e.expect("Your file contents: " + EVENT)
        # One more change, so that a second print of the one before would
        # have come first: the handlers run in order on one thread.
        push("myconfig", "/tmp/", EVENT + " (again)\n")
        e.expect("Your file contents: " + EVENT + " (again)")
        out = e.interrupt()
        handler_lines = [line for line in out if line.startswith(("Your file", "The valid", "An error"))]
        self.assertEqual(handler_lines, ["Your file contents: " + NEW, "The valid state is now True",
                                         "Your file contents: " + EVENT, "Your file contents: " + EVENT + " (again)"])

    def test_3_pointer_mode(self):
        push("myconfig", "/tmp/", EVENT + "\n")
        push("pointer1", "/tmp_pointers/", PREFIX + "/tmp/myconfig\n")
        push("myconfig2", "/tmp/", ANOTHER + "\n")
        e = self.run_example("-f", PREFIX + "/tmp_pointers/pointer1", "--event", "-p")
        out = e.expect("The valid state is now True")
        self.assertLess(out.index("Your file contents: " + EVENT), out.index("The valid state is now True"))
        push("pointer1", "/tmp_pointers/", PREFIX + "/tmp/myconfig2\n")  # the pointer moves
        e.expect("Your file contents: " + ANOTHER)
        push("myconfig2", "/tmp/", ADDED + "\n")  # the file pointed at changes
        e.expect("Your file contents: " + ADDED)
        out = e.interrupt()
        handler_lines = [line for line in out if line.startswith(("Your file", "The valid", "An error"))]
        self.assertEqual(handler_lines, ["Your file contents: " + EVENT, "The valid state is now True",
                                         "Your file contents: " + ANOTHER, "Your file contents: " + ADDED])

        p = self.run_example("-f", PREFIX + "/tmp_pointers/pointer1", "--poll", "-p")
        p.expect("Contents: " + ADDED)
        self.assertIn("Valid File? True", p.lines())
        p.interrupt()

    def test_4_valid_init_off_before_the_broker(self):
        late = Broker("late")
        try:
            push("late", "/tmp/", "a broker came later\n")
            e = self.run_example("-f", PREFIX + "/tmp/late", "--event", "-v", sock=late.sock)
            e.expect(BANNER)  # started although no broker answers
            out = e.expect_that(lambda out: any(line.startswith("An error was thrown: ") for line in out),
                                "the error handler's line")
            errors = [line for line in out if line.startswith("An error was thrown: ")]
            self.assertIn(late.sock, errors[0])
            self.assertNotIn("The valid state is now True", out)
            late.start()
            out = e.expect("The valid state is now True")
            self.assertLess(out.index("Your file contents: a broker came later"),
                            out.index("The valid state is now True"))
            e.interrupt()
        finally:
            late.stop()


if __name__ == "__main__":
    result = unittest.main(verbosity=2, exit=False).result
    tearDownModule()
    sys.exit(0 if result.wasSuccessful() else 1)
