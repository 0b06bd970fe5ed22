# SPDX-License-Identifier: Apache-2.0
"""zkw - read a zkw-broker's configuration from Python.

Standard library only (ctypes over build/libzkw-client.so, the exported
wrappers of include/zkw/client.h). Two classes:

``ZookeeperWatcher(hosts, filepath, ...)``
    the constructor and methods of the original scutils ZookeeperWatcher,
    so switching is an import change. It subscribes to ``filepath`` through
    the broker's control socket (``socket_path=``, else $ZKW_SOCKET, else
    /run/zkw/broker.sock), which adds the watch on demand: ``pointer`` and
    ``ensure`` are passed on, ``hosts`` must name the broker's ensemble
    (written any way: order, duplicates, names or addresses, the default
    port; the chroot exactly). ``valid_init=True`` raises when that fails;
    ``valid_init=False`` starts anyway, reports invalid with the reason
    (``get_error()``) and keeps trying in the background. The handlers are
    called once per change, in the seed's order: the first state before the
    constructor returns, later ones from the watcher's thread, which also
    follows a segment the broker retires (subscribes again). ``shm=NAME`` opens a segment by name instead (the broker's
    ``-f``/``--shm``; hosts, pointer and ensure then ignored).

``Reader(name, expected_uid=None)``, ``Reader.subscribe(zk_path, ...)``
    the segment itself: ``is_valid()``, ``get_file_contents()``,
    ``get_file_bytes()``, ``ping()``, ``generation``, ``wait(timeout)``,
    ``snapshot()``, ``close()``; a context manager. A bundle watch's
    snapshot (a znode's children as one content) has ``entries``, the
    children by name (``parse_bundle``).

Speed: ``is_valid()``, ``generation`` and, when nothing changed,
``get_file_contents()``/``get_file_bytes()`` are one load from the
segment's header (a read-only mapping of it held by the Reader) and no
call into C: the content is decoded once per generation and cached.

Threads: every method of both classes may be called from any thread,
``close()`` too: it wakes the ``wait()`` calls in flight (they raise
``ReaderClosed``), waits for the other calls in flight to return, then
unmaps; any call after it raises ``ReaderClosed`` (a call that began
before may still return the cached value).

``expected_uid`` (a uid or a user name) demands that owner of the segment
(and of the broker, when subscribing); None applies the C reader's default
policy (root, yourself, or $ZKW_SEGMENT_OWNER: see include/zkw/client.h).

The shared library is looked up in this order: ``$ZKW_LIBRARY``, next to
this module, ``../../build/`` from this module (a source tree), then the
system library path (``libzkw-client.so``).
"""

import codecs
import collections
import ctypes
import ctypes.util
import errno
import logging
import mmap
import os
import pwd
import re
import socket
import struct
import threading
import time
import weakref

__all__ = ["BadBundle", "BrokerUnavailable", "EnsembleMismatch", "Reader", "ReaderClosed", "Snapshot",
           "SubscriptionRefused", "ZookeeperWatcher", "broker_status", "default_segment_name", "parse_bundle",
           "same_ensemble", "ZkwError", "SOCKET_DEFAULT"]

_log = logging.getLogger("zkw")

_ABI = 5  # client/python/zkw_py.c ZKW_PY_ABI
# Handlers due, from zkw_py_delivery_next (ZKW_DELIVER_* of zkw/common.h);
# they are called in this, the bits', order.
_DELIVER_CONFIG, _DELIVER_VALID, _DELIVER_ERROR = 0x1, 0x2, 0x4
_EVENT_POLL_S = 1.0  # the watcher thread re-checks close() at least this often
_READ_ATTEMPTS = 64  # -EAGAIN retries (the broker kept overwriting the slot)
_BACKOFF_MIN_S = 0.01  # the event thread's wait after a failed read,
_BACKOFF_MAX_S = 1.0   # doubling up to this while reads keep failing
_WAIT_SLICE_MS = 1000  # wait() re-checks Ctrl-C at least this often
_RETRY_MIN_S = 0.1  # a watcher without a subscription tries again after this,
_RETRY_MAX_S = 5.0  # doubling up to this while it fails
SOCKET_DEFAULT = "/run/zkw/broker.sock"  # ZKW_SOCKET_DEFAULT of zkw/client.h
SOCKET_ENV = "ZKW_SOCKET"
_ZK_PORT = 2181  # ZooKeeper's client port when a connect string names none
_STATUS_TIMEOUT_S = 5.0


class ZkwError(OSError):
    """A zkw call failed; ``errno`` is set."""


class ReaderClosed(ValueError):
    """The Reader was closed (before the call, or during a wait())."""


class BrokerUnavailable(ZkwError, ConnectionError):
    """No broker answers on the control socket (none listening, it closed
    the connection, or it did not answer in time)."""


class SubscriptionRefused(ZkwError):
    """The broker refused the subscription (its policy, a cap, a bad path),
    or the broker or its segment is not trusted; the text says which."""


class BadBundle(ZkwError, ValueError):
    """A bundle snapshot's content is not a bundle this module reads:
    ``errno`` EBADMSG (corrupt; the text names the fault) or EPROTO
    (another version of the layout)."""


class EnsembleMismatch(ValueError):
    """``hosts`` names another ZooKeeper ensemble than the broker's."""


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
        ("cached", ctypes.c_uint32),
        ("rejected", ctypes.c_uint32),
        ("bundle", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
    ]


Snapshot = collections.namedtuple(
    "Snapshot",
    "generation content_gen content valid connected version mzxid "
    "confirmed_ns changed_ns pointer error cached rejected entries",
)
Snapshot.__doc__ = """One consistent snapshot of a segment (content is bytes). entries: for a
bundle watch's snapshot, its children as parse_bundle(content) gives them (an
OrderedDict name -> bytes); None for any other."""


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
        "zkw_py_subscribe": (ctypes.c_int, [ctypes.POINTER(h), ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint,
                                            ctypes.c_int, ctypes.c_int64, ctypes.c_char_p, ctypes.c_size_t]),
        "zkw_py_segment_name": (ctypes.c_int, [h, ctypes.c_char_p, ctypes.c_size_t]),
        "zkw_py_fd": (ctypes.c_int, [h]),
        "zkw_py_hot_layout": (None, [ctypes.POINTER(ctypes.c_uint32)]),
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


def _hot_layout():
    words = (ctypes.c_uint32 * 8)()
    _lib.zkw_py_hot_layout(words)
    size, gen_off, state_off, valid, retired, sub_pointer, sub_ensure, sub_bundle = words
    if gen_off % 8 or state_off % 4 or size % 8 or gen_off + 8 > size or state_off + 4 > size:
        raise ImportError("zkw binding: unexpected segment header layout %r" % (list(words),))
    return size, gen_off // 8, state_off // 4, valid, retired, sub_pointer, sub_ensure, sub_bundle


# The hot line of the segment header, as this module loads it from its own
# mapping: indexes of the generation (64-bit words) and the state (32-bit
# words), the state bits, and the subscribe flags.
(_HEADER_SIZE, _GEN, _STATE, _STATE_VALID, _STATE_RETIRED, _SUBSCRIBE_POINTER, _SUBSCRIBE_ENSURE,
 _SUBSCRIBE_BUNDLE) = _hot_layout()
_NO_TEXT = (-1, "", "")  # a cache entry no generation matches


def _raise(err, what):
    err = -err
    raise ZkwError(err, "%s: %s" % (what, os.strerror(err)))


# The bundle layout of include/zkw/bundle.h (docs/design.md, "Bundle layout"),
# in the host's byte order as the broker writes it.
_BUNDLE_MAGIC = 0x31424B5A  # ZKW_BUNDLE_MAGIC, the bytes "ZKB1"
_BUNDLE_VERSION = 1
_BUNDLE_HEADER = struct.Struct("=IHHIIqiI")  # magic version header_size count entry_size pzxid cversion reserved
_BUNDLE_ENTRY = struct.Struct("=IIIIqiI")  # name_off name_len data_off data_len mzxid version reserved


def parse_bundle(content):
    """The children in a bundle's content (bytes): an OrderedDict
    {name: data} in the bundle's order (names sorted bytewise), each name
    decoded from UTF-8 with errors="surrogateescape" (name.encode("utf-8",
    "surrogateescape") gives its bytes back), each data bytes. Checked as
    strictly as zkw_bundle_open() of include/zkw/bundle.h checks it: raises
    BadBundle naming the first fault."""
    content = bytes(content)
    size = len(content)

    def bad(what, err=errno.EBADMSG):
        return BadBundle(err, "bad bundle (%d bytes): %s" % (size, what))

    if size < 6:
        raise bad("shorter than a header")
    magic, version = struct.unpack_from("=IH", content, 0)
    if magic != _BUNDLE_MAGIC:
        raise bad("magic 0x%08x, not 0x%08x (\"ZKB1\")" % (magic, _BUNDLE_MAGIC))
    if version != _BUNDLE_VERSION:
        raise bad("layout version %d; this module reads version %d" % (version, _BUNDLE_VERSION), errno.EPROTO)
    if size < _BUNDLE_HEADER.size:
        raise bad("shorter than a header")
    _, _, header_size, count, entry_size, _, _, _ = _BUNDLE_HEADER.unpack_from(content, 0)
    if header_size < _BUNDLE_HEADER.size or header_size > size:
        raise bad("header_size %d" % header_size)
    if entry_size < _BUNDLE_ENTRY.size:
        raise bad("entry_size %d" % entry_size)
    if count * entry_size > size - header_size:
        raise bad("%d entries of %d bytes do not fit after the %d-byte header" % (count, entry_size, header_size))
    entries = collections.OrderedDict()
    prev = None
    for i in range(count):
        name_off, name_len, data_off, data_len, _, _, _ = _BUNDLE_ENTRY.unpack_from(content,
                                                                                   header_size + i * entry_size)
        if name_off >= size or name_len >= size - name_off:
            raise bad("entry %d: name at %d, %d bytes and a NUL, runs past the end" % (i, name_off, name_len))
        if data_off > size or data_len > size - data_off:
            raise bad("entry %d: data at %d, %d bytes, runs past the end" % (i, data_off, data_len))
        name = content[name_off:name_off + name_len]
        if content[name_off + name_len] != 0:
            raise bad("entry %d: name %r is not followed by a NUL" % (i, name))
        if not name or b"\0" in name or b"/" in name or name in (b".", b".."):
            raise bad("entry %d: %r is not a child's name" % (i, name))
        if prev is not None and name <= prev:
            raise bad("entry %d: name %r after %r (names must be sorted and unique)" % (i, name, prev))
        prev = name
        entries[name.decode("utf-8", "surrogateescape")] = content[data_off:data_off + data_len]
    return entries


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


def _socket_path(socket_path):
    """The control socket: the argument, else $ZKW_SOCKET, else the default."""
    return socket_path or os.environ.get(SOCKET_ENV) or SOCKET_DEFAULT


# ---- the control socket (docs/design.md, "The control socket") ----------

def _unescape(word):
    """A %XX-escaped protocol value as str (undecodable bytes replaced)."""
    if "%" not in word:
        return word
    raw = re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes((int(m.group(1), 16),)), word.encode())
    return raw.decode("utf-8", "replace")


def _request(socket_path, line, timeout=_STATUS_TIMEOUT_S):
    """One request line to the broker; its answer as a dict of its
    key=value words (unescaped). ERR answers raise SubscriptionRefused."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(socket_path)
        except OSError as e:
            raise BrokerUnavailable(e.errno or errno.ECONNREFUSED,
                                    "cannot connect to the broker at %s: %s (is zkw-broker running with its "
                                    "socket?)" % (socket_path, e.strerror or e)) from None
        try:
            sock.sendall(line.encode() + b"\n")
            answer = b""
            while b"\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    raise BrokerUnavailable(errno.ECONNRESET, "the broker at %s closed the connection"
                                            % socket_path)
                answer += chunk
                if len(answer) > 65536:
                    raise ZkwError(errno.EPROTO, "the broker at %s sent an answer line too long" % socket_path)
        except socket.timeout:
            raise BrokerUnavailable(errno.ETIMEDOUT, "the broker at %s did not answer %s within %g s"
                                    % (socket_path, line.split()[0], timeout)) from None
    finally:
        sock.close()
    text = answer.split(b"\n", 1)[0].rstrip(b"\r").decode("ascii", "replace")
    if text.startswith("ERR"):
        raise SubscriptionRefused(errno.EPROTO, "the broker at %s refused %s: %s"
                                  % (socket_path, line.split()[0], text[3:].strip()))
    if not text.startswith("OK"):
        raise ZkwError(errno.EPROTO, "the broker at %s answered %s with %r" % (socket_path, line.split()[0], text))
    values = {}
    for word in text.split()[1:]:
        key, sep, value = word.partition("=")
        if sep:
            values[key] = _unescape(value)
    return values


def broker_status(socket_path=None, timeout=_STATUS_TIMEOUT_S):
    """The broker's STATUS answer as a dict of str: proto, broker, pid,
    connected, hosts, watches, ... (docs/design.md)."""
    return _request(_socket_path(socket_path), "STATUS", timeout)


def _parse_hosts(hosts):
    """A ZooKeeper connect string -> ([(host, port)], chroot). Hosts are
    lower-cased, "[v6]:port" and bare IPv6 addresses understood, the port
    2181 when none is given."""
    text = hosts.strip()
    slash = text.find("/")
    chroot = text[slash:] if slash >= 0 else ""
    if slash >= 0:
        text = text[:slash]
    servers = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        port = ""
        if part.startswith("["):
            end = part.find("]")
            if end < 0:
                raise ValueError("connect string %r: unclosed [ in %r" % (hosts, part))
            host, rest = part[1:end], part[end + 1:]
            if rest:
                if not rest.startswith(":"):
                    raise ValueError("connect string %r: bad server %r" % (hosts, part))
                port = rest[1:]
        elif part.count(":") == 1:
            host, port = part.split(":")
        else:
            host = part  # a name, an IPv4 address or a bare IPv6 address
        if port and not port.isdigit():
            raise ValueError("connect string %r: bad port in %r" % (hosts, part))
        servers.append((host.lower(), int(port) if port else _ZK_PORT))
    if not servers:
        raise ValueError("connect string %r names no server" % (hosts,))
    return servers, chroot


def _addresses(host, port):
    """Where a server is: its resolved (address, port) pairs, plus its name
    (so that a name nobody resolves still matches itself)."""
    found = {("name", host, port)}
    try:
        for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            found.add((info[4][0], port))
    except (OSError, UnicodeError):
        pass
    return found


def same_ensemble(a, b):
    """Do connect strings a and b name the same ZooKeeper ensemble? The
    same servers in any order, repeated or not, by name or by any address
    it resolves to, with the port 2181 written or not; the chroot must be
    identical."""
    servers_a, chroot_a = _parse_hosts(a)
    servers_b, chroot_b = _parse_hosts(b)
    if chroot_a != chroot_b:
        return False
    where_a = [_addresses(*s) for s in set(servers_a)]
    where_b = [_addresses(*s) for s in set(servers_b)]
    return (all(any(x & y for y in where_b) for x in where_a)
            and all(any(y & x for x in where_a) for y in where_b))


class Reader(object):
    """A zkw segment, read-only. Safe to share between threads: every call
    holds the mapping open while it runs, and ``close()`` (from any thread)
    wakes the ``wait()`` calls in flight, waits for the others to return,
    then unmaps. ``snapshot()`` calls are serialised.

    ``Reader(name)`` opens a segment by name; ``Reader.subscribe(zk_path)``
    asks the broker's control socket for it (the subscription lasts until
    ``close()``).

    ``expected_uid`` (an int uid or a user name) demands that the segment
    be owned by that user; None (the default) applies the C reader's
    default owner policy."""

    def __init__(self, name, expected_uid=None):
        out = ctypes.c_void_p()
        why = ctypes.create_string_buffer(512)
        uid = _uid(expected_uid)
        self._init_state(name)
        err = _lib.zkw_py_open(ctypes.byref(out), name.encode(), uid, why, len(why))
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
        self._adopt(out.value)

    @classmethod
    def subscribe(cls, zk_path, socket_path=None, pointer=False, ensure=False, expected_uid=None, timeout=None,
                  bundle=False):
        """Subscribe to the ZooKeeper path zk_path through the broker's
        control socket (socket_path, else $ZKW_SOCKET, else SOCKET_DEFAULT):
        the broker adds the watch if it has none, waits for its first
        evaluation and hands over the segment. pointer: the node holds the
        path of the real one; ensure: create it (empty) when missing;
        bundle: its children as one snapshot (snapshot().entries).
        timeout in seconds (None: the C client's default). Raises
        BrokerUnavailable, SubscriptionRefused (the broker's reason, or a
        broker not trusted), ZkwError."""
        path = _socket_path(socket_path)
        flags = ((_SUBSCRIBE_POINTER if pointer else 0) | (_SUBSCRIBE_ENSURE if ensure else 0)
                 | (_SUBSCRIBE_BUNDLE if bundle else 0))
        ms = 0 if timeout is None else max(1, int(timeout * 1000))
        out = ctypes.c_void_p()
        why = ctypes.create_string_buffer(512)
        uid = _uid(expected_uid)
        self = cls.__new__(cls)
        self._init_state(zk_path)
        err = _lib.zkw_py_subscribe(ctypes.byref(out), path.encode(), zk_path.encode(), flags, ms, uid, why,
                                    len(why))
        if err < 0:
            reason = why.value.decode(errors="replace")
            code = -err
            msg = "zkw subscription of %s%s at %s: %s" % (zk_path, " (pointer)" if pointer else "", path, reason)
            if code in (errno.ENOENT, errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT, errno.ENOTSOCK):
                raise BrokerUnavailable(code, msg)
            if reason.startswith("broker refused") or code in (errno.EPERM, errno.EACCES):
                raise SubscriptionRefused(code, msg)
            raise ZkwError(code, msg)
        self._adopt(out.value)
        name = ctypes.create_string_buffer(512)
        if _lib.zkw_py_segment_name(out.value, name, len(name)) == 0:
            self.name = name.value.decode(errors="replace")
        return self

    def _init_state(self, name):
        self.name = name
        self._handle = None
        self._closing = False
        self._cond = threading.Condition(threading.Lock())  # _handle, _closing, _calls
        self._calls = {}  # thread ident -> calls of that thread in flight
        # The header's hot words, from a read-only mapping of our own (None
        # once closed): a thread that loaded the reference keeps the
        # mapping alive, so close() never unmaps under a lock-free load.
        self._hot64 = self._hot32 = None
        self._text = _NO_TEXT  # (generation, content as str, pointer): the last decoded
        self._bytes = _NO_TEXT  # (generation, content as bytes, pointer): the last read

    def _adopt(self, handle):
        try:
            header = mmap.mmap(_lib.zkw_py_fd(handle), _HEADER_SIZE, mmap.MAP_SHARED, mmap.PROT_READ)
        except (OSError, ValueError):
            _lib.zkw_py_close(handle)
            raise
        self._handle = handle
        self._lock = threading.Lock()  # the handle's last-read texts, the buffer and the caches
        self._buf = ctypes.create_string_buffer(4096)
        view = memoryview(header)
        # One word each, so that the lock-free loads index with a constant.
        self._hot64 = view[8 * _GEN:8 * _GEN + 8].cast("Q")
        self._hot32 = view[4 * _STATE:4 * _STATE + 4].cast("I")
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

    # -- one load, no call into C --

    @property
    def generation(self):
        """The last published generation (0: nothing published yet)."""
        hot = self._hot64
        if hot is None:
            return self._call(_lib.zkw_py_generation)  # raises ReaderClosed
        return hot[0]

    def is_valid(self):
        """True when the published snapshot is valid (one load)."""
        state = self._hot32
        if state is None:
            return bool(self._call(_lib.zkw_py_is_valid))  # raises ReaderClosed
        return state[0] & _STATE_VALID != 0

    @property
    def retired(self):
        """True once the broker replaced this segment (it grew, the watch
        was removed, or the broker unlinked it): nothing is published here
        any more; subscribe (or open the name) again."""
        state = self._hot32
        if state is None:
            self._call(_lib.zkw_py_generation)  # raises ReaderClosed
        return state[0] & _STATE_RETIRED != 0

    def ping(self):
        """True when the broker is alive and connected to ZooKeeper."""
        return bool(self._call(_lib.zkw_py_ping))

    def broker_alive(self):
        """True when a broker holds the segment (connected or not)."""
        return bool(self._call(_lib.zkw_py_broker_alive))

    def snapshot(self):
        """One consistent Snapshot (content as bytes; for a bundle watch,
        entries: its children by name, see parse_bundle, which raises
        BadBundle for a corrupt one)."""
        h = self._enter()
        try:
            with self._lock:
                return self._snapshot(h, entries=True)
        finally:
            self._leave()

    def _read(self, h, meta):
        """Read the current snapshot into self._buf (under self._lock):
        its length, meta filled."""
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
            return n
        _raise(-errno.EAGAIN, "zkw segment %s: no stable read" % self.name)

    def _snapshot(self, h, entries=False):
        # Under self._lock. Also refreshes the bytes cache. entries: parse
        # a bundle (else Snapshot.entries is None).
        meta = _Meta()
        n = self._read(h, meta)
        cached = self._bytes
        if cached[0] == meta.generation:
            content, pointer = cached[1], cached[2]  # no second copy of the same generation
        else:
            content = ctypes.string_at(self._buf, n)
            pointer = _lib.zkw_py_pointer(h).decode(errors="replace")
            self._bytes = (meta.generation, content, pointer)
        return Snapshot(
            generation=meta.generation,
            content_gen=meta.content_gen,
            content=content,
            valid=bool(meta.valid),
            connected=bool(meta.connected),
            version=meta.version,
            mzxid=meta.mzxid,
            confirmed_ns=meta.confirmed_ns,
            changed_ns=meta.changed_ns,
            pointer=pointer,
            error=_lib.zkw_py_error(h).decode(errors="replace"),
            cached=bool(meta.cached),
            rejected=bool(meta.rejected),
            entries=parse_bundle(content) if entries and meta.bundle else None,
        )

    def _content(self):
        """(generation, bytes, pointer) of the current generation: read only
        when the generation moved since the last read."""
        h = self._enter()
        try:
            with self._lock:
                cached = self._bytes
                if cached[0] != _lib.zkw_py_generation(h):
                    self._snapshot(h)
                    cached = self._bytes
                return cached
        finally:
            self._leave()

    def _text_now(self):
        """(generation, str, pointer) of the current generation: decoded
        once per generation, straight from the read buffer (one copy out of
        the segment, one decode: no bytes object in between)."""
        h = self._enter()
        try:
            with self._lock:
                text = self._text
                gen = _lib.zkw_py_generation(h)
                if text[0] == gen:
                    return text
                cached = self._bytes
                if cached[0] == gen:
                    text = (gen, cached[1].decode("utf-8", errors="replace"), cached[2])
                else:
                    meta = _Meta()
                    n = self._read(h, meta)
                    with memoryview(self._buf) as view:
                        decoded = codecs.utf_8_decode(view[:n], "replace", True)[0]
                    text = (meta.generation, decoded, _lib.zkw_py_pointer(h).decode(errors="replace"))
                self._text = text
                return text
        finally:
            self._leave()

    def get_file_bytes(self, pointer=False):
        """The content as bytes (pointer=True: the pointer path, encoded).
        One load when the generation did not move."""
        hot, cached = self._hot64, self._bytes
        if hot is None or hot[0] != cached[0]:
            cached = self._content()
        if pointer and cached[2]:
            return cached[2].encode()
        return cached[1]

    def get_file_contents(self, pointer=False, errors="replace"):
        """The content as str (UTF-8, undecodable bytes replaced), as the
        seed returns it. pointer=True returns the pointer path in pointer
        mode (the content otherwise, like the seed). When the generation
        did not move: one load, and the very same str as the last call."""
        hot, text = self._hot64, self._text
        if hot is not None and hot[0] == text[0] and errors == "replace":
            return text[2] if pointer and text[2] else text[1]
        return self._decode(pointer, errors)

    def _decode(self, pointer, errors):
        if errors != "replace":
            cached = self._content()
            if pointer and cached[2]:
                return cached[2]
            return cached[1].decode("utf-8", errors=errors)
        text = self._text_now()
        return text[2] if pointer and text[2] else text[1]

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
                raise ZkwError(errno.ESTALE, "zkw segment %s: retired by its broker: subscribe (or open the "
                                             "name) again" % self.name)
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
                # Lock-free loads see None from now on; one in progress
                # holds its own reference to the header mapping.
                self._hot64 = self._hot32 = None
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


def _reason(e):
    """An exception's message without Python's "[Errno N]" prefix."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or e.__class__.__name__


class ZookeeperWatcher(object):
    """The seed's ZookeeperWatcher, served by a zkw-broker.

    Same constructor, methods and handler semantics as
    scutils.zookeeper_watcher.ZookeeperWatcher. It subscribes to filepath
    through the broker's control socket: ``socket_path``, else $ZKW_SOCKET,
    else /run/zkw/broker.sock. The broker adds the watch if it has none:
    ``pointer`` (the node holds the path of the real config node) and
    ``ensure`` (create it, empty, when missing; the broker's policy must
    allow it) are passed on. ``hosts`` must name the broker's ensemble
    (STATUS): the same servers written in any order, repeated, by name or
    by address, with or without the default port 2181 are accepted; the
    chroot must be identical; another ensemble raises EnsembleMismatch
    naming both (None skips the check).

    valid_init=True (the default) fails fast, like the seed when ZooKeeper
    does not answer: BrokerUnavailable (no broker on the socket),
    SubscriptionRefused (the broker's policy or caps, with its reason),
    EnsembleMismatch. valid_init=False starts anyway: is_valid() is False,
    get_error() says why, the error handler is called with it, and the
    watcher's thread tries again after 0.1 s, doubling up to 5 s, until it
    subscribes; then it delivers as usual.

    Handlers: config_handler(str) first and then valid_handler(True) on
    success; valid_handler(False) and then error_handler(str) on failure;
    each once per change. As the seed's, the first state reaches them
    before the constructor returns (in the caller's thread); every later
    change, on the watcher's own thread. That thread
    follows a segment the broker retires (it grew, or the broker was
    replaced): it subscribes again, and nothing is delivered twice. A read
    that fails (a corrupt slot, a writer that never finishes) does not stop
    it: one warning per run of failures on the "zkw" logger, retries after
    10 ms doubling up to 1 s. close() the watcher when done: its thread and
    subscription live until then, as the seed's session did.

    ``bundle=True`` watches the node's children as one snapshot (the
    broker's bundle mode): get_entries() gives them, {name: bytes}, and
    config_handler gets that dict instead of a str; a multi-op (zkw-push
    --bundle) is seen whole or not at all.

    ``shm=NAME`` opens that segment by name instead (a broker's ``-f`` and
    ``--shm``), as zkw did before the control socket: hosts, pointer and
    ensure are then not used, and valid_init=True also demands that a
    broker holds the segment. ``expected_uid`` is Reader's (it names the
    broker's uid when subscribing); ``timeout`` (seconds) bounds one
    subscription request.
    """

    def __init__(self, hosts, filepath, valid_handler=None, config_handler=None,
                 error_handler=None, pointer=False, ensure=False, valid_init=True, shm=None,
                 expected_uid=None, socket_path=None, timeout=None, bundle=False):
        self.hosts = hosts
        self.filepath = filepath
        self.pointer = bool(pointer)
        self.bundle = bool(bundle)
        if self.pointer and self.bundle:
            raise ValueError("pointer and bundle do not go together")
        self.ensure = bool(ensure)
        self.valid_init = bool(valid_init)
        self.valid_handler = valid_handler
        self.config_handler = config_handler
        self.error_handler = error_handler
        self.socket_path = None if shm else _socket_path(socket_path)
        self.segment = shm  # the segment's name, once known
        self._shm = shm
        self._expected_uid = expected_uid
        self._timeout = timeout
        _uid(expected_uid)  # a bad owner is the caller's mistake: raise now
        if not shm and not (isinstance(filepath, str) and filepath.startswith("/")):
            raise ValueError("filepath %r: want an absolute ZooKeeper path" % (filepath,))
        if not shm and hosts is not None:
            _parse_hosts(hosts)  # so is a malformed connect string
        self._lock = threading.Lock()  # _reader and _problem, against close()
        self._reader = None  # None until subscribed
        self._problem = None  # why there is no (working) subscription, or None
        self._warned = None  # the reason logged last (once per distinct reason)
        self._read_failures = 0  # failed reads of the watcher's thread, in all
        self._content_id = 0  # the content's serial, for zkw_delivery_next
        self._content_of = (None, None, None)  # (reader, content_gen, content) it counts
        self._closing = threading.Event()
        self._thread = None
        # What the handlers were given last: a zeroed zkw_delivery (8-byte
        # aligned through its c_uint64 elements).
        self._delivery = (ctypes.c_uint64 * ((_lib.zkw_py_delivery_size() + 7) // 8))()
        try:
            reader = self._connect()
        except (OSError, ValueError) as e:
            if self.valid_init:
                raise
            reader = None
            # As the seed: the handlers hear of the first state before the
            # constructor returns (here, why there is none yet).
            self._unsubscribed(e, self._delivery)
        first = (None, None)  # the reader and generation delivered here
        if reader is not None:
            self._install(reader)
            if self._handlers():
                try:
                    snap = reader.snapshot()
                except Exception:  # the thread retries it, with backoff and a warning
                    pass
                else:
                    first = (reader, snap.generation)
                    if snap.generation:
                        self._dispatch(reader, snap, self._delivery)
        self._thread = threading.Thread(target=self._follow, args=(first, reader is None), daemon=True,
                                        name="zkw-watcher %s" % filepath)
        self._thread.start()

    def _handlers(self):
        return self.valid_handler or self.config_handler or self.error_handler

    # -- polling API (the seed's) --

    def _use(self, method, default, *args, **kw):
        # The watcher's thread may swap in a new Reader (a retired segment)
        # while another thread is here: then use the new one.
        while True:
            reader = self._reader
            if reader is None:
                if self._closing.is_set():
                    raise ReaderClosed("zkw watcher of %s is closed" % self.filepath)
                return default
            try:
                return getattr(reader, method)(*args, **kw)
            except ReaderClosed:
                if self._reader is reader:
                    raise

    def is_valid(self):
        """True when the watched file is valid (one load; False while not
        subscribed)."""
        reader = self._reader
        if reader is not None:
            state = reader._hot32  # Reader.is_valid's load, inlined
            if state is not None:
                return state[0] & _STATE_VALID != 0
        return self._use("is_valid", False)

    def get_file_contents(self, pointer=False):
        """The content (str); pointer=True: the pointer path in pointer
        mode. When nothing changed: one load, the same str as the last
        call. "" while not subscribed yet."""
        reader = self._reader
        if reader is not None:
            # Reader.get_file_contents' lock-free path, inlined: a call less.
            hot, text = reader._hot64, reader._text
            if hot is not None and hot[0] == text[0]:
                return text[2] if pointer and text[2] else text[1]
            try:
                return reader.get_file_contents(pointer)
            except ReaderClosed:
                pass
        return self._use("get_file_contents", "", pointer=pointer)

    def get_entries(self):
        """bundle=True: the children of the watched node, an ordered dict
        {name: bytes} of one consistent snapshot; None before the first
        one (or for a watcher not in bundle mode)."""
        snap = self._use("snapshot", None)
        return snap.entries if snap is not None else None

    def get_error(self):
        """Why the file is not valid: the broker's error text, or why there
        is no subscription; "" when all is well."""
        with self._lock:
            problem = self._problem
        if problem:
            return problem
        snap = self._use("snapshot", None)
        return snap.error if snap is not None else ""

    def ping(self):
        """True when the broker is alive and connected to ZooKeeper."""
        return self._use("ping", False)

    def close(self, kill_restart=True):
        """Stop the watcher's thread (no handler call after this returns,
        unless called from a handler) and end the subscription.
        kill_restart is accepted for compatibility."""
        del kill_restart
        self._closing.set()
        with self._lock:
            reader = self._reader
        if reader is not None:
            reader.close()  # its wait() in our thread returns at once
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join()

    # -- subscribing --

    def _connect(self):
        """A new Reader of filepath: subscribed (hosts checked first), or
        opened by name with shm=."""
        if self._shm:
            reader = Reader(self._shm, expected_uid=self._expected_uid)
            if self.valid_init and self._thread is None and not reader.broker_alive():
                reader.close()
                raise BrokerUnavailable(errno.ESRCH, "zkw segment %s for %s exists but no zkw-broker holds it "
                                                     "(is zkw-broker running?)" % (self._shm, self.filepath))
            return reader
        if self.hosts is not None:
            status = _request(self.socket_path, "STATUS", self._timeout or _STATUS_TIMEOUT_S)
            theirs = status.get("hosts")
            if theirs is not None and not same_ensemble(self.hosts, theirs):
                raise EnsembleMismatch("ZooKeeper hosts %r name another ensemble than %r, the one of the zkw-broker "
                                       "at %s: start a broker for %r, or use that broker's ensemble"
                                       % (self.hosts, theirs, self.socket_path, self.hosts))
        return Reader.subscribe(self.filepath, self.socket_path, pointer=self.pointer, ensure=self.ensure,
                                expected_uid=self._expected_uid, timeout=self._timeout, bundle=self.bundle)

    def _install(self, reader):
        """Make reader the current one (closing the one it replaces); False,
        and reader closed, when close() came first."""
        with self._lock:
            closing = self._closing.is_set()
            if not closing:
                old, self._reader = self._reader, reader
                self._problem = self._warned = None
                self.segment = reader.name
        if closing:
            reader.close()
            return False
        if old is not None:
            old.close()  # waits for other threads' calls on it
        return True

    # -- the watcher's thread: subscription, retirement, handlers --

    def _call(self, handler, arg):
        if handler is None or self._closing.is_set():
            return
        try:
            handler(arg)
        except Exception:  # a handler's bug must not stop the watcher
            _log.exception("zkw: %s handler raised", getattr(handler, "__name__", "event"))

    def _deliver(self, bits, valid, text, error):
        # Which handlers are due is zkw_delivery_next's decision (C, one
        # copy for every binding); here they are only called, in bit order.
        if bits & _DELIVER_CONFIG:
            self._call(self.config_handler, text())
        if bits & _DELIVER_VALID:
            self._call(self.valid_handler, valid)
        if bits & _DELIVER_ERROR:
            self._call(self.error_handler, error)

    def _dispatch(self, reader, snap, delivery):
        # The content's serial moves with content_gen within one segment;
        # across segments (a new subscription), only when the bytes differ.
        was_reader, was_gen, was_content = self._content_of
        if reader is not was_reader or snap.content_gen != was_gen:
            if reader is was_reader or snap.content != was_content:
                self._content_id += 1
            self._content_of = (reader, snap.content_gen, snap.content)
        bits = _lib.zkw_py_delivery_next(delivery, int(snap.valid), self._content_id, snap.error.encode())

        def text():
            if self.bundle:
                return snap.entries if snap.entries is not None else collections.OrderedDict()
            decoded = snap.content.decode("utf-8", errors="replace")
            # Pollers of this generation get the same str for free.
            reader._text = (snap.generation, decoded, snap.pointer)
            return decoded
        self._deliver(bits, snap.valid, text, snap.error)

    def _unsubscribed(self, failure, delivery):
        """Report why there is no subscription: get_error(), a warning when
        the reason changes, and the handlers (valid(False), error(why))."""
        why = _reason(failure)
        with self._lock:
            self._problem = why
        if why != self._warned:
            self._warned = why
            _log.warning("zkw: watching %s: %s; trying again (%g s doubling to %g s)", self.filepath, why,
                         _RETRY_MIN_S, _RETRY_MAX_S)
        bits = _lib.zkw_py_delivery_next(delivery, 0, self._content_id, why.encode())
        self._deliver(bits, False, None, why)

    def _follow(self, first, unsubscribed):
        delivery = self._delivery  # the constructor is done with it
        handlers = self._handlers()
        current, seen = first  # the reader followed, and the generation taken from it
        failed = 0  # failed reads of the current run of failures
        backoff = _BACKOFF_MIN_S
        retry = _RETRY_MIN_S
        stale = False  # the segment was retired: subscribe again
        if unsubscribed:  # the constructor tried once already
            self._closing.wait(retry)
            retry = min(2 * retry, _RETRY_MAX_S)
        try:
            while not self._closing.is_set():
                reader = self._reader
                if reader is None or stale:
                    try:
                        new = self._connect()
                    except (OSError, ValueError) as e:
                        self._unsubscribed(e, delivery)
                        self._closing.wait(retry)
                        retry = min(2 * retry, _RETRY_MAX_S)
                        continue
                    if not self._install(new):
                        break
                    if stale:
                        _log.info("zkw: %s was retired by its broker; %s (%s)", self.filepath,
                                  "reopened by name" if self._shm else "subscribed again", self.segment)
                    stale, retry = False, _RETRY_MIN_S
                    continue
                try:
                    if reader is not current:
                        current, seen = reader, None  # a new segment: read it once
                    if (seen is not None and not failed and reader.generation == seen
                            and not reader.wait_for(seen, _EVENT_POLL_S)):
                        continue
                    if not handlers:
                        seen = reader.generation  # only following retirement
                        continue
                    snap = reader.snapshot()
                except ReaderClosed:
                    if self._closing.is_set():
                        break
                    stale = True  # closed under us, not by close(): subscribe again
                    continue
                except Exception as e:  # a bad segment must not end the thread
                    if isinstance(e, OSError) and e.errno == errno.ESTALE:
                        stale = True  # the new segment continues the content
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
                    self._dispatch(reader, snap, delivery)
        except Exception:
            if not self._closing.is_set():
                _log.exception("zkw: the watcher thread of %s stopped", self.filepath)
        finally:
            if self._closing.is_set():
                # close() from a handler cannot join us, nor close a reader
                # installed after it looked: do it here (idempotent).
                with self._lock:
                    reader = self._reader
                if reader is not None:
                    reader.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
