# SPDX-License-Identifier: Apache-2.0
"""zkw - read a zkw-broker's shared-memory segment from Python.

Standard library only (ctypes over build/libzkw-client.so, the exported
wrappers of include/zkw/client.h). Two classes:

``Reader(name)``
    the segment itself: ``is_valid()``, ``get_file_contents()``,
    ``get_file_bytes()``, ``ping()``, ``generation``, ``wait(timeout)``,
    ``snapshot()``, ``close()``; a context manager.

``ZookeeperWatcher(hosts, filepath, ...)``
    the constructor and methods of the original scutils ZookeeperWatcher,
    so switching is an import change. The broker owns the ZooKeeper session:
    ``hosts``, ``pointer`` and ``ensure`` are accepted and ignored (the
    broker's ``-p`` and ``--ensure`` decide); the handlers are called from an
    event thread, once per change, in the seed's order.

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
import threading
import time
import weakref

__all__ = ["Reader", "Snapshot", "ZookeeperWatcher", "default_segment_name", "ZkwError"]

_log = logging.getLogger("zkw")

_ABI = 2  # client/python/zkw_py.c ZKW_PY_ABI
# Handlers due, from zkw_py_delivery_next (ZKW_DELIVER_* of zkw/common.h);
# they are called in this, the bits', order.
_DELIVER_CONFIG, _DELIVER_VALID, _DELIVER_ERROR = 0x1, 0x2, 0x4
_EVENT_POLL_S = 0.1  # the event thread re-checks close() this often
_READ_ATTEMPTS = 64  # -EAGAIN retries (the broker kept overwriting the slot)


class ZkwError(OSError):
    """A zkw call failed; ``errno`` is set."""


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
        "zkw_py_open": (ctypes.c_int, [ctypes.POINTER(h), ctypes.c_char_p, ctypes.c_int64,
                                       ctypes.POINTER(ctypes.c_char_p)]),
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


class Reader(object):
    """A zkw segment, read-only. Not for concurrent use by several threads,
    except ``generation``, ``is_valid()``, ``ping()`` and ``wait()``."""

    def __init__(self, name, expected_uid=None):
        out = ctypes.c_void_p()
        why = ctypes.c_char_p()
        uid = -1 if expected_uid is None else int(expected_uid)
        err = _lib.zkw_py_open(ctypes.byref(out), name.encode(), uid, ctypes.byref(why))
        handle = out.value
        if err < 0:
            self._handle = None
            reason = (why.value or b"").decode(errors="replace")
            code = -err
            msg = "zkw segment %s: %s" % (name, reason)
            if code == errno.ENOENT:
                if "broker" not in reason:
                    msg += " (is zkw-broker running?)"
                raise FileNotFoundError(code, msg)
            if code in (errno.EACCES, errno.EPERM):
                raise PermissionError(code, msg)
            raise ZkwError(code, msg)
        self.name = name
        self._handle = handle
        self._lock = threading.Lock()  # the handle's last-read texts and the buffer
        self._buf = ctypes.create_string_buffer(4096)
        self._closer = weakref.finalize(self, _lib.zkw_py_close, handle)

    def _h(self):
        if self._handle is None:
            raise ValueError("zkw Reader is closed")
        return self._handle

    @property
    def generation(self):
        """The last published generation (0: nothing published yet)."""
        return _lib.zkw_py_generation(self._h())

    def is_valid(self):
        """True when the published snapshot is valid (one load)."""
        return bool(_lib.zkw_py_is_valid(self._h()))

    def ping(self):
        """True when the broker is alive and connected to ZooKeeper."""
        return bool(_lib.zkw_py_ping(self._h()))

    def broker_alive(self):
        """True when a broker holds the segment (connected or not)."""
        return bool(_lib.zkw_py_broker_alive(self._h()))

    def snapshot(self):
        """One consistent Snapshot (content as bytes)."""
        h = self._h()
        meta = _Meta()
        with self._lock:
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
        None = forever. True on a change, False on timeout."""
        return self.wait_for(self.generation, timeout)

    def wait_for(self, seen, timeout=None):
        """Block until the generation differs from ``seen``."""
        h = self._h()
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            # Bounded slices, so that Ctrl-C and close() are noticed.
            ms = 1000 if deadline is None else min(1000, _wait_ms(deadline))
            rc = _lib.zkw_py_wait(h, seen, ms)
            if rc == 1:
                return True
            if rc < 0 and rc != -errno.EINTR:
                _raise(rc, "zkw segment %s: wait" % self.name)
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def close(self):
        """Unmap the segment. Idempotent."""
        if self._handle is not None:
            self._handle = None
            self._closer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        state = "closed" if self._handle is None else "generation %d" % self.generation
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
    error_handler(str) on failure; each once per change.
    """

    def __init__(self, hosts, filepath, valid_handler=None, config_handler=None,
                 error_handler=None, pointer=False, ensure=False, valid_init=True, shm=None):
        self.hosts = hosts
        self.filepath = filepath
        self.pointer = pointer
        self.ensure = ensure
        self.valid_handler = valid_handler
        self.config_handler = config_handler
        self.error_handler = error_handler
        self.segment = shm or default_segment_name(filepath)
        self._reader = Reader(self.segment)
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

    def is_valid(self):
        return self._reader.is_valid()

    def get_file_contents(self, pointer=False):
        return self._reader.get_file_contents(pointer=pointer)

    def ping(self):
        return self._reader.ping()

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
        try:
            while not self._closing.is_set():
                if self._reader.generation == seen and not self._reader.wait_for(seen, _EVENT_POLL_S):
                    continue
                snap = self._reader.snapshot()
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
                # harmless (idempotent, and sequential).
                self._reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
