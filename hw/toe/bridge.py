# Ref: Linux Documentation/networking/tuntap.rst (IFF_TAP, IFF_NO_PI, TUNSETIFF),
#      setns(2), ip-netns(8), RFC 792 (ICMP echo)
"""Bridge between a TAP device in a network namespace and a TCP engine.

The Linux kernel's own TCP/IP stack is the engine's peer: :class:`TapBridge` creates a network
namespace, a TAP device ``tap0`` inside it with the host address (10.0.0.1/24 by default), and
moves Ethernet frames between the TAP device and an engine (the golden model
:class:`nicsim.hw.ref.tcp.TcpEngine`, or the RTL engine through the same methods), which owns
the engine address (10.0.0.2). Code that plays the Linux side runs in threads that entered the
namespace (:meth:`TapBridge.submit`), so ordinary sockets reach the engine; the engine and its
applications run in the thread that calls :meth:`TapBridge.run`.

Engine time follows the wall clock: cycle ``c`` is ``c / clock_hz`` seconds after the bridge
started, so the engine's timers and the kernel's agree about what a millisecond is.

Each direction may pass through an :class:`~nicsim.hw.toe.impair.Impairment` (drop, duplicate,
reorder); a frame held back for reordering is released after at most ``REORDER_HOLD_S``.

The namespace (and with it the TAP device) is deleted on :meth:`TapBridge.close`, when the
``with`` block ends however it ends, and at interpreter exit; a namespace left behind by a
process that was killed is deleted by the next bridge that starts. Names carry the process ID
and a counter, so bridges in parallel processes do not collide.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import ctypes
import errno
import fcntl
import itertools
import os
import select
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

from .impair import Impairment

__all__ = ["BridgeError", "REORDER_HOLD_S", "TapBridge", "missing_requirements", "ping"]

NETNS_DIR = Path("/run/netns")
NETNS_PREFIX = "nicsim-toe-"
TAP_NAME = "tap0"
REORDER_HOLD_S = 0.002

_TUNSETIFF = 0x400454CA  # _IOW('T', 202, int)
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000
_CLONE_NEWNET = 0x40000000
_MAX_FRAME = 65536

_counter = itertools.count()
_live: set[str] = set()


class BridgeError(Exception):
    """The bridge could not be set up or used; the message says why."""


def missing_requirements() -> str | None:
    """Return what the bridge needs and this machine lacks, or ``None`` when all is there."""
    missing = []
    if os.geteuid() != 0:
        missing.append(f"root (running as uid {os.geteuid()})")
    if not os.path.exists("/dev/net/tun"):
        missing.append("/dev/net/tun")
    elif os.geteuid() == 0:
        try:
            os.close(os.open("/dev/net/tun", os.O_RDWR))
        except OSError as e:
            missing.append(f"a usable /dev/net/tun ({e.strerror})")
    if shutil.which("ip") is None:
        missing.append("`ip netns` (iproute2 is not installed)")
    elif os.geteuid() == 0:
        probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        if probe.returncode != 0:
            missing.append(f"`ip netns` ({probe.stderr.strip() or 'it fails'})")
    return ", ".join(missing) if missing else None


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _enter_netns(name: str) -> None:
    """Move the calling thread into network namespace ``name`` (setns(2) is per thread)."""
    fd = os.open(NETNS_DIR / name, os.O_RDONLY)
    try:
        if _libc().setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise BridgeError(f"setns into {name} failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise BridgeError(f"'ip {' '.join(args)}' failed: {result.stderr.strip()}")


def _delete_netns(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    _live.discard(name)


def _sweep_stale() -> None:
    """Delete namespaces of this kind whose creating process is gone."""
    if not NETNS_DIR.is_dir():
        return
    for entry in NETNS_DIR.iterdir():
        if not entry.name.startswith(NETNS_PREFIX):
            continue
        pid = entry.name[len(NETNS_PREFIX):].split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _delete_netns(entry.name)


@atexit.register
def _cleanup_at_exit() -> None:
    for name in list(_live):
        _delete_netns(name)


def _write_sysctl(path: str, value: str) -> None:
    try:
        Path("/proc/sys", path).write_text(value)
    except OSError:
        pass  # e.g. IPv6 compiled out: nothing to switch off


def _open_tap() -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", TAP_NAME.encode(), _IFF_TAP | _IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


class TapBridge:
    """A TAP device in a fresh network namespace, wired to an engine.

    Parameters
    ----------
    engine
        The engine: ``receive(frame, now)``, ``advance(now)``, ``pop_tx()``,
        ``next_deadline()`` and ``config.clock_hz``.
    hosts : list
        Objects with ``step()`` (e.g. :class:`~nicsim.hw.toe.apps.AppHost`) run after every
        batch of frames and timers.
    host_ip : str
        Address of the Linux side on ``tap0``; the engine's address is ``engine.ip``.
    prefix_len : int
        Prefix length of the TAP device's address.
    to_engine, to_linux : Impairment or None
        Impairments of the two directions.
    name : str or None
        Namespace name; by default ``nicsim-toe-<pid>-<n>``.
    mtu : int
        MTU of ``tap0``.
    monitor : callable or None
        ``monitor(direction, frame)`` sees every frame that crosses the bridge after
        impairment, ``direction`` being ``"to_engine"`` or ``"to_linux"``.

    Members
    -------
    netns : str
        The namespace's name.
    frames_to_engine, frames_to_linux : int
        Frames moved in each direction (after impairment).
    frames_refused : int
        Frames for Linux that the TAP device did not take (its queue full, or down): lost
        on the wire as far as both ends can tell.
    """

    def __init__(self, engine, hosts=(), *, host_ip: str = "10.0.0.1", prefix_len: int = 24,
                 to_engine: Impairment | None = None, to_linux: Impairment | None = None,
                 name: str | None = None, mtu: int = 1500, monitor=None):
        self.engine = engine
        self.hosts = list(hosts)
        self.host_ip = host_ip
        self.prefix_len = prefix_len
        self.to_engine = to_engine or Impairment()
        self.to_linux = to_linux or Impairment()
        self.netns = name or f"{NETNS_PREFIX}{os.getpid()}-{next(_counter)}"
        self.mtu = mtu
        self.monitor = monitor
        self.clock_hz = engine.config.clock_hz
        self.frames_to_engine = 0
        self.frames_to_linux = 0
        self.frames_refused = 0
        self._fd: int | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._t0 = time.monotonic()
        self._held_since: dict[int, float] = {}
        self._lock = threading.Lock()

    # ---------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> TapBridge:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        """Create the namespace and TAP device and configure the Linux side."""
        missing = missing_requirements()
        if missing:
            raise BridgeError(f"The Linux bridge needs {missing}")
        _sweep_stale()
        if (NETNS_DIR / self.netns).exists():
            raise BridgeError(f"Network namespace {self.netns} exists already; delete it with "
                              f"'ip netns del {self.netns}' or pick another name")
        _ip("netns", "add", self.netns)
        _live.add(self.netns)
        try:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=40, thread_name_prefix=self.netns, initializer=_enter_netns,
                initargs=(self.netns,))
            self._fd = self.submit(self._setup_in_netns).result(timeout=30)
            _ip("-n", self.netns, "link", "set", TAP_NAME, "mtu", str(self.mtu), "up")
            _ip("-n", self.netns, "link", "set", "lo", "up")
            _ip("-n", self.netns, "addr", "add", f"{self.host_ip}/{self.prefix_len}", "dev",
                TAP_NAME)
        except BaseException:
            self.close()
            raise
        self._t0 = time.monotonic()

    @staticmethod
    def _setup_in_netns() -> int:
        _write_sysctl("net/ipv6/conf/all/disable_ipv6", "1")
        _write_sysctl("net/ipv6/conf/default/disable_ipv6", "1")
        return _open_tap()

    def close(self) -> None:
        """Stop the namespace threads, close the TAP device and delete the namespace."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.netns in _live:
            _delete_netns(self.netns)

    # ----------------------------------------------------------------------- the Linux side

    def submit(self, fn, *args, **kwargs) -> concurrent.futures.Future:
        """Run ``fn(*args, **kwargs)`` in a thread inside the namespace; return its future."""
        if self._pool is None:
            raise BridgeError("The bridge is not open")
        return self._pool.submit(fn, *args, **kwargs)

    def sysctl(self, path: str, value: str) -> None:
        """Set ``/proc/sys/<path>`` inside the namespace (e.g. ``net/ipv4/tcp_sack``)."""
        self.submit(Path("/proc/sys", path).write_text, value).result(timeout=10)

    # --------------------------------------------------------------------------- the engine

    def cycle(self) -> int:
        """Return the engine cycle that corresponds to now."""
        return int((time.monotonic() - self._t0) * self.clock_hz)

    def _to_linux(self, frames) -> None:
        for frame in frames:
            for out in self.to_linux.apply(frame):
                self._write(out)

    def _write(self, frame: bytes) -> None:
        if self.monitor is not None:
            self.monitor("to_linux", frame)
        try:
            os.write(self._fd, frame)
            self.frames_to_linux += 1
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EIO, errno.EINVAL):
                raise
            self.frames_refused += 1

    def _flush_held(self, now_s: float) -> None:
        for side, impair in ((0, self.to_engine), (1, self.to_linux)):
            if impair._held is None:
                self._held_since.pop(side, None)
                continue
            since = self._held_since.setdefault(side, now_s)
            if now_s - since >= REORDER_HOLD_S:
                self._held_since.pop(side)
                for frame in impair.flush():
                    if side == 0:
                        self._deliver(frame)
                    else:
                        self._write(frame)

    def _deliver(self, frame: bytes) -> None:
        if self.monitor is not None:
            self.monitor("to_engine", frame)
        self.frames_to_engine += 1
        self.engine.receive(frame, self.cycle())

    def pump(self, max_wait_s: float = 0.005) -> None:
        """Move frames and fire timers once, waiting at most ``max_wait_s`` for a frame."""
        engine = self.engine
        engine.advance(self.cycle())
        for host in self.hosts:
            host.step()
        self._to_linux(engine.pop_tx())
        wait = max_wait_s
        deadline = engine.next_deadline()
        if deadline is not None:
            wait = min(wait, max(0.0, (deadline - self.cycle()) / self.clock_hz))
        if self.to_engine._held is not None or self.to_linux._held is not None:
            wait = min(wait, REORDER_HOLD_S / 2)
        readable, _, _ = select.select([self._fd], [], [], wait)
        if readable:
            for _ in range(256):
                try:
                    frame = os.read(self._fd, _MAX_FRAME)
                except BlockingIOError:
                    break
                for out in self.to_engine.apply(frame):
                    self._deliver(out)
                self._to_linux(engine.pop_tx())
        self._flush_held(time.monotonic())
        for host in self.hosts:
            host.step()
        self._to_linux(engine.pop_tx())

    def run(self, until=None, timeout_s: float = 30.0) -> bool:
        """Pump until ``until()`` is true or ``timeout_s`` pass; return ``until()``.

        Without a predicate, run for ``timeout_s`` and return True.
        """
        if self._fd is None:
            raise BridgeError("The bridge is not open")
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if until is not None and until():
                return True
            self.pump()
        return until() if until is not None else True

    def wait(self, future: concurrent.futures.Future, timeout_s: float = 30.0):
        """Pump until a Linux-side future completes; return its result (or raise its error)."""
        if not self.run(future.done, timeout_s):
            raise BridgeError(f"The Linux side did not finish within {timeout_s} s")
        return future.result()


def ping(address: str, count: int = 3, timeout_s: float = 2.0, payload: bytes = b"") -> int:
    """Send ICMP echo requests from the calling thread's namespace; return replies that match.

    A reply counts when it comes from ``address`` with this call's identifier, the request's
    sequence number and the request's payload. Needs root (a raw socket).
    """
    ident = os.getpid() & 0xFFFF
    data = payload or bytes(range(48))
    replies = 0
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.settimeout(timeout_s)
        for seq in range(count):
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            check = _icmp_checksum(header + data)
            sock.sendto(struct.pack("!BBHHH", 8, 0, check, ident, seq) + data, (address, 0))
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                try:
                    packet, source = sock.recvfrom(_MAX_FRAME)
                except TimeoutError:
                    break
                ihl = (packet[0] & 0x0F) * 4
                message = packet[ihl:]
                if source[0] != address or len(message) < 8:
                    continue
                kind, _, _, rid, rseq = struct.unpack("!BBHHH", message[:8])
                if kind == 0 and rid == ident and rseq == seq:
                    if message[8:] == data and _icmp_checksum(message) == 0:
                        replies += 1
                    break
    return replies


def _icmp_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
