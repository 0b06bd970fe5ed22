# SPDX-License-Identifier: Apache-2.0
"""zkw - read a zkw-broker's shared-memory segment from Python.

Standard library only (ctypes over build/libzkw-client.so, the exported
wrappers of include/zkw/client.h). Two classes:

``Reader(name, expected_uid=None)``
    the segment itself: ``is_valid()``, ``get_file_contents()``,
    ``get_file_bytes()``, ``ping()``, ``generation``, ``wait(timeout)``,
    ``snapshot()``, ``close()``; a context manager. Every method may be
    called from any thread, ``close()`` too: it wakes the ``wait()`` calls
    in flight (they raise ``ReaderClosed``), waits for the other calls in
    flight to return, then unmaps; any call after it raises
    ``ReaderClosed``.

``ZookeeperWatcher(hosts, filepath, ...)``
    the constructor and methods of the original scutils ZookeeperWatcher,
    so switching is an import change. The broker owns the ZooKeeper session:
    ``hosts``, ``pointer`` and ``ensure`` are accepted and ignored (the
    broker's ``-p`` and ``--ensure`` decide); the handlers are called from an
    event thread, once per change, in the seed's order. The event thread
    outlives failed reads (a corrupt slot, a stuck writer): it retries with
    backoff, logs once per run of failures and carries on when reads work.

``expected_uid`` (a uid or a user name) demands that owner of the segment;
None applies the C reader's default policy (root, yourself, or
$ZKW_SEGMENT_OWNER: see include/zkw/client.h).

The shared library is looked up in this order: ``$ZKW_LIBRARY``, next to
this module, ``../../build/`` from this module (a source tree), then the
system library path (``libzkw-client.so``).
"""

import collections
import ctypes
import ctypes.util
import errno
import logging
import os
import pwd
import threading
import time
import weakref

__all__ = ["Reader", "ReaderClosed", "Snapshot", "ZookeeperWatcher", "default_segment_name", "ZkwError"]

_log = logging.getLogger("zkw")

_ABI = 3  # client/python/zkw_py.c ZKW_PY_ABI
# Handlers due, from zkw_py_delivery_next (ZKW_DELIVER_* of zkw/common.h);
# they are called in this, the bits', order.
_DELIVER_CONFIG, _DELIVER_VALID, _DELIVER_ERROR = 0x1, 0x2, 0x4
_EVENT_POLL_S = 0.1  # the event thread re-checks close() this often
_READ_ATTEMPTS = 64  # -EAGAIN retries (the broker kept overwriting the slot)
_BACKOFF_MIN_S = 0.01  # the event thread's wait after a failed read,
_BACKOFF_MAX_S = 1.0   # doubling up to this while reads keep failing
_WAIT_SLICE_MS = 1000  # wait() re-checks Ctrl-C at least this often


class ZkwError(OSError):
    """A zkw call failed; ``errno`` is set."""


class ReaderClosed(ValueError):
    """The Reader was closed (before the call, or during a wait())."""


class _Meta(ctypes.Structure):
    # Mirrors zkw_py_meta in client/python/zkw_py.c (checked at load time).
    _fields_ = [
        ("generation", ctypes.c_uint64),
        ("content_gen", ctypes.c_uint64),
        ("len", ctypes.c_uint64),
        ("version", ctypes.c_int64),
        ("mzxid", ctypes.c_int64),
        ("confirmed_ns", ctypes.c_uint64),
        ("changed_ns", ctypes.c_uint64),
        ("valid", ctypes.c_uint32),
        ("connected", ctypes.c_uint32),
    ]


Snapshot = collections.namedtuple(
    "Snapshot",
    "generation content_gen content valid connected version mzxid "
    "confirmed_ns changed_ns pointer error",
)
Snapshot.__doc__ = "One consistent snapshot of a segment (content is bytes)."


def _candidates():
    env = os.environ.get("ZKW_LIBRARY")
    if env:
        yield env
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, "libzkw-client.so")
    yield os.path.normpath(os.path.join(here, "..", "..", "build", "libzkw-client.so"))
    found = ctypes.util.find_library("zkw-client")
    if found:
        yield found
    yield "libzkw-client.so"


def _load():
    tried = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(path + " (missing)")
            continue
        try:
            lib = ctypes.CDLL(path)  # CDLL: the GIL is released during calls
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
            continue
        _declare(lib)
        if lib.zkw_py_abi() != _ABI or lib.zkw_py_meta_size() != ctypes.sizeof(_Meta):
            raise ImportError("%s: zkw binding ABI %d (meta %d bytes), this module wants %d (%d bytes)"
                              % (path, lib.zkw_py_abi(), lib.zkw_py_meta_size(), _ABI,
                                 ctypes.sizeof(_Meta)))
        return lib
    raise ImportError("libzkw-client.so not found (set ZKW_LIBRARY or build it with make); tried: "
                      + "; ".join(tried))


def _declare(lib):
    h = ctypes.c_void_p
    sig = {
        "zkw_py_abi": (ctypes.c_int, []),
        "zkw_py_meta_size": (ctypes.c_int, []),
        "zkw_py_open": (ctypes.c_int, [ctypes.POINTER(h), ctypes.c_char_p, ctypes.c_int64, ctypes.c_char_p,
                                       ctypes.c_size_t]),
        "zkw_py_shutdown": (None, [h]),
        "zkw_py_close": (None, [h]),
        "zkw_py_generation": (ctypes.c_uint64, [h]),
        "zkw_py_is_valid": (ctypes.c_int, [h]),
        "zkw_py_ping": (ctypes.c_int, [h]),
        "zkw_py_broker_alive": (ctypes.c_int, [h]),
        "zkw_py_capacity": (ctypes.c_uint64, [h]),
        "zkw_py_read": (ctypes.c_int64, [h, ctypes.POINTER(_Meta), ctypes.c_void_p, ctypes.c_size_t]),
        "zkw_py_error": (ctypes.c_char_p, [h]),
        "zkw_py_pointer": (ctypes.c_char_p, [h]),
        "zkw_py_wait": (ctypes.c_int, [h, ctypes.c_uint64, ctypes.c_int]),
        "zkw_py_default_name": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]),
        "zkw_py_delivery_size": (ctypes.c_int, []),
        "zkw_py_delivery_next": (ctypes.c_uint, [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64,
                                                 ctypes.c_char_p]),
    }
    for name, (restype, argtypes) in sig.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


_lib = _load()


def _raise(err, what):
    err = -err
    raise ZkwError(err, "%s: %s" % (what, os.strerror(err)))


def default_segment_name(filepath):
    """The broker's default segment for a ZooKeeper path:
    "/tmp/myconfig" -> "/zkw.tmp.myconfig"."""
    out = ctypes.create_string_buffer(512)
    rc = _lib.zkw_py_default_name(filepath.encode(), out, len(out))
    if rc:
        raise ValueError("no segment name for ZooKeeper path %r: %s" % (filepath, os.strerror(-rc)))
    return out.value.decode()


def _wait_ms(deadline):
    """Milliseconds left until deadline (monotonic), at least 0."""
    return max(0, int((deadline - time.monotonic()) * 1000 + 0.999))


def _uid(owner):
    """expected_uid as the C ABI takes it: -1 (the default policy) for None,
    a uid for an int or a user name."""
    if owner is None:
        return -1
    if isinstance(owner, str):
        if owner.isdigit():
            return int(owner)
        try:
            return pwd.getpwnam(owner).pw_uid
        except KeyError:
            raise ValueError("expected_uid %r: no such user" % owner) from None
    if isinstance(owner, bool) or not isinstance(owner, int):
        raise TypeError("expected_uid wants a uid (int) or a user name, not %r" % (owner,))
    if not 0 <= owner < 0xffffffff:
        raise ValueError("expected_uid %d: not a uid" % owner)
    return owner


class Reader(object):
    """A zkw segment, read-only. Safe to share between threads: every call
    holds the mapping open while it runs, and ``close()`` (from any thread)
    wakes the ``wait()`` calls in flight, waits for the others to return,
    then unmaps. ``snapshot()`` calls are serialised.

    ``expected_uid`` (an int uid or a user name) demands that the segment
    be owned by that user; None (the default) applies the C reader's
    default owner policy."""

    def __init__(self, name, expected_uid=None):
        out = ctypes.c_void_p()
        why = ctypes.create_string_buffer(512)
        uid = _uid(expected_uid)
        self.name = name
        self._handle = None
        self._closing = False
        self._cond = threading.Condition(threading.Lock())  # _handle, _closing, _calls
        self._calls = {}  # thread ident -> calls of that thread in flight
        err = _lib.zkw_py_open(ctypes.byref(out), name.encode(), uid, why, len(why))
        handle = out.value
        if err < 0:
            reason = why.value.decode(errors="replace")
            code = -err
            msg = "zkw segment %s: %s" % (name, reason)
            if code == errno.ENOENT:
                if "broker" not in reason:
                    msg += " (is zkw-broker running?)"
                raise FileNotFoundError(code, msg)
            if code in (errno.EACCES, errno.EPERM):
                raise PermissionError(code, msg)
            raise ZkwError(code, msg)
        self._handle = handle
        self._lock = threading.Lock()  # the handle's last-read texts and the buffer
        self._buf = ctypes.create_string_buffer(4096)
        self._closer = weakref.finalize(self, _lib.zkw_py_close, handle)
        # Not at interpreter exit: a daemon thread (an event thread never
        # closed) may still be in a call on the handle; exit unmaps anyway.
        self._closer.atexit = False

    # -- calls in flight: the handle is freed only when none is --

    def _enter(self):
        """Count a call in flight and return the handle; ReaderClosed once
        close() has begun."""
        with self._cond:
            if self._handle is None or self._closing:
                raise ReaderClosed("zkw Reader %s is closed" % self.name)
            me = threading.get_ident()
            self._calls[me] = self._calls.get(me, 0) + 1
            return self._handle

    def _leave(self):
        with self._cond:
            me = threading.get_ident()
            left = self._calls[me] - 1
            if left:
                self._calls[me] = left
            else:
                del self._calls[me]
            if self._closing:
                if not self._calls and self._handle is not None:
                    self._free()  # close() ran inside one of our own calls
                self._cond.notify_all()

    def _free(self):
        # Under self._cond, with no call in flight.
        self._handle = None
        self._closer()

    def _call(self, fn, *args):
        h = self._enter()
        try:
            return fn(h, *args)
        finally:
            self._leave()

    @property
    def generation(self):
        """The last published generation (0: nothing published yet)."""
        return self._call(_lib.zkw_py_generation)

    def is_valid(self):
        """True when the published snapshot is valid (one load)."""
        return bool(self._call(_lib.zkw_py_is_valid))

    def ping(self):
        """True when the broker is alive and connected to ZooKeeper."""
        return bool(self._call(_lib.zkw_py_ping))

    def broker_alive(self):
        """True when a broker holds the segment (connected or not)."""
        return bool(self._call(_lib.zkw_py_broker_alive))

    def snapshot(self):
        """One consistent Snapshot (content as bytes)."""
        h = self._enter()
        try:
            with self._lock:
                return self._snapshot(h)
        finally:
            self._leave()

    def _snapshot(self, h):
        meta = _Meta()
        for _ in range(_READ_ATTEMPTS):
            n = _lib.zkw_py_read(h, ctypes.byref(meta), self._buf, len(self._buf))
            if n == -errno.ENOBUFS:
                self._buf = ctypes.create_string_buffer(max(meta.len, 2 * len(self._buf)))
                continue
            if n == -errno.EAGAIN:
                time.sleep(0)  # yield: the broker is mid-publish
                continue
            if n < 0:
                _raise(n, "zkw segment %s: read" % self.name)
            return Snapshot(
                generation=meta.generation,
                content_gen=meta.content_gen,
                content=self._buf.raw[:n],
                valid=bool(meta.valid),
                connected=bool(meta.connected),
                version=meta.version,
                mzxid=meta.mzxid,
                confirmed_ns=meta.confirmed_ns,
                changed_ns=meta.changed_ns,
                pointer=_lib.zkw_py_pointer(h).decode(errors="replace"),
                error=_lib.zkw_py_error(h).decode(errors="replace"),
            )
        _raise(-errno.EAGAIN, "zkw segment %s: no stable read" % self.name)

    def get_file_bytes(self, pointer=False):
        """The content as bytes (pointer=True: the pointer path, encoded)."""
        snap = self.snapshot()
        if pointer and snap.pointer:
            return snap.pointer.encode()
        return snap.content

    def get_file_contents(self, pointer=False, errors="replace"):
        """The content as str (UTF-8, undecodable bytes replaced), as the
        seed returns it. pointer=True returns the pointer path in pointer
        mode (the content otherwise, like the seed)."""
        snap = self.snapshot()
        if pointer and snap.pointer:
            return snap.pointer
        return snap.content.decode("utf-8", errors=errors)

    def wait(self, timeout=None):
        """Block until the generation changes. timeout in seconds (float),
        None = forever. True on a change, False on timeout; ReaderClosed
        when close() is called meanwhile."""
        h = self._enter()
        try:
            return self._wait(h, _lib.zkw_py_generation(h), timeout)
        finally:
            self._leave()

    def wait_for(self, seen, timeout=None):
        """Block until the generation differs from ``seen``."""
        h = self._enter()
        try:
            return self._wait(h, seen, timeout)
        finally:
            self._leave()

    def _wait(self, h, seen, timeout):
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            # Slices, so that Ctrl-C is noticed; close() wakes the C wait
            # itself (zkw_py_shutdown), whatever the slice.
            ms = _WAIT_SLICE_MS if deadline is None else min(_WAIT_SLICE_MS, _wait_ms(deadline))
            rc = _lib.zkw_py_wait(h, seen, ms)
            if rc == 1:
                return True
            if rc == -errno.ECANCELED:
                raise ReaderClosed("zkw Reader %s was closed during wait()" % self.name)
            if rc == -errno.ESTALE:
                raise ZkwError(errno.ESTALE, "zkw segment %s: replaced by its broker (retired): open the "
                                             "name again" % self.name)
            if rc < 0 and rc != -errno.EINTR:
                _raise(rc, "zkw segment %s: wait" % self.name)
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def close(self):
        """Unmap the segment, from any thread; idempotent. Wakes the wait()
        calls in flight (they raise ReaderClosed) and returns once no call
        is in flight any more (a call of this very thread, e.g. a signal
        handler that closes during a wait(), frees the mapping when it
        returns)."""
        with self._cond:
            if self._handle is None:
                return
            if not self._closing:
                self._closing = True
                _lib.zkw_py_shutdown(self._handle)  # wait() calls return at once
            me = threading.get_ident()
            self._cond.wait_for(lambda: self._handle is None or set(self._calls) <= {me})
            if self._handle is not None and not self._calls:
                self._free()
                self._cond.notify_all()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        try:
            state = "generation %d" % self.generation
        except ReaderClosed:
            state = "closed"
        return "<zkw.Reader %s %s>" % (self.name, state)


class ZookeeperWatcher(object):
    """The seed's ZookeeperWatcher over a zkw-broker segment.

    Same constructor, methods and handler semantics as
    scutils.zookeeper_watcher.ZookeeperWatcher; ``hosts`` is ignored (the
    broker holds the one ZooKeeper session), and so are ``pointer`` and
    ``ensure`` (the broker's ``-p``/``--ensure`` apply). ``shm`` names the
    segment; by default "zkw" + filepath with '/' -> '.'.

    valid_init=True (the default) fails fast, like the seed when ZooKeeper
    does not answer: the segment must exist and a broker must hold it.
    Handlers run on one event thread: config_handler(str) first and then
    valid_handler(True) on success; valid_handler(False) and then
    error_handler(str) on failure; each once per change. A read that fails
    (a corrupt slot, a writer that never finishes) does not stop that
    thread: it logs one warning per run of failures on the "zkw" logger,
    retries after 10 ms, doubling up to 1 s, and resumes delivering when a
    read works again. ``expected_uid`` is Reader's.
    """

    def __init__(self, hosts, filepath, valid_handler=None, config_handler=None,
                 error_handler=None, pointer=False, ensure=False, valid_init=True, shm=None,
                 expected_uid=None):
        self.hosts = hosts
        self.filepath = filepath
        self.pointer = pointer
        self.ensure = ensure
        self.valid_handler = valid_handler
        self.config_handler = config_handler
        self.error_handler = error_handler
        self.segment = shm or default_segment_name(filepath)
        self._expected_uid = expected_uid
        self._reader = Reader(self.segment, expected_uid=expected_uid)
        self._read_failures = 0  # failed reads of the event thread, in all
        if valid_init and not self._reader.broker_alive():
            self._reader.close()
            raise ConnectionError("zkw segment %s for %s exists but no zkw-broker holds it "
                                  "(is zkw-broker running?)" % (self.segment, filepath))
        self._closing = threading.Event()
        self._thread = None
        if valid_handler or config_handler or error_handler:
            self._thread = threading.Thread(target=self._event_loop, daemon=True,
                                            name="zkw-watcher %s" % self.segment)
            self._thread.start()

    # -- polling API (the seed's) --

    def _use(self, method, *args, **kw):
        # The event thread may swap in a reopened Reader (a retired
        # segment) while another thread is here: then use the new one.
        while True:
            reader = self._reader
            try:
                return getattr(reader, method)(*args, **kw)
            except ReaderClosed:
                if self._reader is reader:
                    raise

    def is_valid(self):
        return self._use("is_valid")

    def get_file_contents(self, pointer=False):
        return self._use("get_file_contents", pointer=pointer)

    def ping(self):
        return self._use("ping")

    def close(self, kill_restart=True):
        """Stop the event thread (no handler call after this returns, unless
        called from a handler) and unmap the segment. kill_restart is
        accepted for compatibility."""
        del kill_restart
        self._closing.set()
        t = self._thread
        if t is threading.current_thread():
            return  # from a handler: the event thread unmaps on its way out
        if t is not None:
            t.join()  # prompt: the thread waits in slices of _EVENT_POLL_S
        self._reader.close()

    # -- event mode: the dispatcher of include/zkw/client.h; C decides --

    def _call(self, handler, arg):
        if handler is None or self._closing.is_set():
            return
        try:
            handler(arg)
        except Exception:  # a handler's bug must not stop the watcher
            _log.exception("zkw: %s handler raised", getattr(handler, "__name__", "event"))

    def _dispatch(self, snap, delivery):
        # Which handlers are due is zkw_delivery_next's decision (C, one
        # copy for every binding); here they are only called, in bit order.
        bits = _lib.zkw_py_delivery_next(delivery, int(snap.valid), snap.content_gen,
                                         snap.error.encode())
        if bits & _DELIVER_CONFIG:
            self._call(self.config_handler, snap.content.decode("utf-8", errors="replace"))
        if bits & _DELIVER_VALID:
            self._call(self.valid_handler, snap.valid)
        if bits & _DELIVER_ERROR:
            self._call(self.error_handler, snap.error)

    def _event_loop(self):
        # What the handlers were given last: a zeroed zkw_delivery (8-byte
        # aligned through its c_uint64 elements).
        delivery = (ctypes.c_uint64 * ((_lib.zkw_py_delivery_size() + 7) // 8))()
        seen = 0
        failed = 0  # failed attempts of the current run of failures
        backoff = _BACKOFF_MIN_S
        retired = False  # the broker replaced the segment: reopen its name
        try:
            while not self._closing.is_set():
                try:
                    if retired:
                        self._reopen()
                        retired = False
                    if (not failed and self._reader.generation == seen
                            and not self._reader.wait_for(seen, _EVENT_POLL_S)):
                        continue
                    snap = self._reader.snapshot()
                except ReaderClosed:
                    break  # close() from another thread, which joins us next
                except Exception as e:  # a bad segment must not end the thread
                    if isinstance(e, OSError) and e.errno == errno.ESTALE and not retired:
                        retired = True  # the new segment continues the generations
                        continue
                    failed += 1
                    self._read_failures += 1
                    if failed == 1:
                        _log.warning("zkw: reading %s failed: %s; retrying (%g s doubling to %g s) until "
                                     "it works", self.segment, e, _BACKOFF_MIN_S, _BACKOFF_MAX_S)
                    self._closing.wait(backoff)
                    backoff = min(2 * backoff, _BACKOFF_MAX_S)
                    continue
                if failed:
                    _log.info("zkw: reading %s works again after %d failed attempts", self.segment, failed)
                    failed = 0
                    backoff = _BACKOFF_MIN_S
                seen = snap.generation
                if seen:
                    self._dispatch(snap, delivery)
        except Exception:
            if not self._closing.is_set():
                _log.exception("zkw: event thread of %s stopped", self.segment)
        finally:
            if self._closing.is_set():
                # close() from a handler cannot join us: unmap here. From
                # another thread, close() joins first: unmapping twice is
                # harmless (idempotent).
                self._reader.close()

    def _reopen(self):
        """Open the segment's name again after its broker replaced it
        (retired). The new segment continues the generations and
        content_gen, so the delivery state carries over: nothing is
        delivered twice."""
        new = Reader(self.segment, expected_uid=self._expected_uid)
        old, self._reader = self._reader, new
        old.close()  # waits for other threads' calls on it
        _log.info("zkw: %s was replaced by its broker; reopened", self.segment)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
