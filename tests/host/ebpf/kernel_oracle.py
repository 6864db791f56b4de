"""The running Linux kernel as the oracle of eBPF tests: its verifier and BPF_PROG_TEST_RUN.

Objects are loaded with ``bpftool prog loadall`` into a bpffs folder of their own (process id,
a counter and a random part in the name, so parallel pytest workers never meet) and removed
afterwards. Programs run with ``bpftool prog run`` (the BPF_PROG_TEST_RUN command of bpf(2)):
the kernel runs the program once over the given bytes and returns its verdict and the packet.
Maps are pinned next to the programs and filled or read with ``bpftool map``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

__all__ = ["kernel_available", "kernel_load", "kernel_run", "KernelProgram", "KernelError",
           "NetNs"]

BPFFS = Path("/sys/fs/bpf")
_counter = itertools.count()
_available: tuple[bool, str] | None = None


class KernelError(RuntimeError):
    """bpftool refused an operation (the message has its error)."""


def _bpftool():
    return shutil.which("bpftool") or ("/usr/sbin/bpftool" if Path("/usr/sbin/bpftool").exists()
                                       else None)


def _bpffs_mounted():
    try:
        with open("/proc/mounts") as fh:
            return any(line.split()[1:3] == [str(BPFFS), "bpf"] for line in fh)
    except OSError:
        return False


def kernel_available() -> tuple[bool, str]:
    """Return ``(True, "")`` when programs can be loaded and run here, else ``(False, why)``."""
    global _available
    if _available is not None:
        return _available
    why = ""
    if os.geteuid() != 0:
        why = "not root: loading eBPF programs needs CAP_BPF and CAP_NET_ADMIN"
    elif _bpftool() is None:
        why = "bpftool not installed (apt-get install bpftool)"
    elif not _bpffs_mounted():
        subprocess.run(["mount", "-t", "bpf", "bpf", str(BPFFS)], capture_output=True)
        if not _bpffs_mounted():
            why = f"no bpffs at {BPFFS} and mounting one failed"
    if not why:
        # A program that only returns XDP_PASS: if the kernel refuses it, nothing will load.
        try:
            _probe()
        except KernelError as exc:
            why = f"the kernel does not run XDP test programs: {exc}"
    _available = (not why, why)
    return _available


def _probe():
    src = Path(tempfile.mkdtemp(prefix="nicsim-probe-"))
    try:
        c_file = src / "probe.c"
        c_file.write_text('#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n'
                          'SEC("xdp") int probe(struct xdp_md *ctx) { return XDP_PASS; }\n'
                          'char _license[] SEC("license") = "GPL";\n')
        from nicsim.host.ebpf.build import BuildError, compile_c
        try:
            obj = compile_c(c_file)
        except BuildError as exc:
            raise KernelError(str(exc)) from None
        with KernelProgram(obj, "probe") as prog:
            retval, _ = prog.run(bytes(64))
        if retval != 2:
            raise KernelError(f"probe returned {retval}, not XDP_PASS")
    finally:
        shutil.rmtree(src, ignore_errors=True)


def _run(args, check=True, netns=None):
    prefix = ["nsenter", f"--net=/run/netns/{netns}"] if netns else []
    proc = subprocess.run([*prefix, _bpftool(), *args], capture_output=True, text=True,
                          timeout=120)
    if check and proc.returncode != 0:
        msg = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise KernelError(msg[-1] if msg else f"bpftool {args[0]} failed")
    return proc


class KernelProgram:
    """One object loaded into the kernel, its programs and maps pinned; a context manager.

    Parameters
    ----------
    obj_path : str or Path
        The eBPF object.
    prog_name : str
        The program to run (its function name).
    netns : str, optional
        A network namespace (``ip netns`` name) to run the program in: its loopback device
        is the one the program sees, and its routes and neighbours the ones
        ``bpf_fib_lookup`` consults.
    """

    def __init__(self, obj_path, prog_name, netns=None):
        self.obj_path = Path(obj_path)
        self.prog_name = prog_name
        self.netns = netns
        self.dir = BPFFS / f"nicsim-{os.getpid()}-{next(_counter)}-{uuid.uuid4().hex[:8]}"
        self.log = ""
        self.accepted = False
        self._tmp = Path(tempfile.mkdtemp(prefix="nicsim-kr-"))

    def load(self):
        """Load the object; return ``(accepted, log)``."""
        self.dir.mkdir()
        try:
            proc = _run(["-d", "prog", "loadall", str(self.obj_path), str(self.dir / "prog"),
                         "type", "xdp", "pinmaps", str(self.dir / "maps")], check=False)
        except subprocess.TimeoutExpired:
            self.accepted, self.log = False, "bpftool prog loadall timed out"
            return self.accepted, self.log
        self.accepted = proc.returncode == 0
        self.log = "\n".join(ln for ln in proc.stderr.splitlines()
                             if "libbpf strict mode" not in ln and "--legacy option" not in ln)
        return self.accepted, self.log

    def __enter__(self):
        accepted, log = self.load()
        if not accepted:
            self.close()
            lines = [ln for ln in log.splitlines() if ln.strip()]
            raise KernelError(f"kernel rejected {self.obj_path.name}: "
                              f"{lines[-1] if lines else '?'}")
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Unpin everything (the kernel frees programs and maps with their last reference)."""
        if self.dir.exists():
            for sub in ("prog", "maps"):
                folder = self.dir / sub
                if folder.exists():
                    for pin in folder.iterdir():
                        pin.unlink(missing_ok=True)
                    folder.rmdir()
            self.dir.rmdir()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def _map_pin(self, name):
        pin = self.dir / "maps" / name
        if not pin.exists():
            raise KernelError(f"no pinned map {name!r} (have "
                              f"{sorted(p.name for p in (self.dir / 'maps').iterdir())})")
        return pin

    def map_update(self, name, key: bytes, value: bytes):
        """Write one entry of map ``name``."""
        _run(["map", "update", "pinned", str(self._map_pin(name)), "key", "hex", *_hex(key),
              "value", "hex", *_hex(value)])

    def map_dump(self, name) -> dict:
        """Return map ``name`` as ``{key bytes: value bytes}``; per-CPU maps give a list of
        values, one per CPU."""
        proc = _run(["-j", "map", "dump", "pinned", str(self._map_pin(name))])
        out = {}
        for entry in json.loads(proc.stdout or "[]"):
            key = _unhex(entry["key"])
            if "values" in entry:  # per-CPU
                value = [_unhex(v["value"]) for v in entry["values"]]
            else:
                value = _unhex(entry["value"])
            out[key] = value
        return out

    def run(self, data: bytes, ctx: bytes | None = None):
        """Run the program once over ``data``; return ``(retval, data_out)``."""
        n = next(_counter)
        din, dout = self._tmp / f"in{n}", self._tmp / f"out{n}"
        din.write_bytes(data)
        args = ["prog", "run", "pinned", str(self.dir / "prog" / self.prog_name),
                "data_in", str(din), "data_out", str(dout),
                "data_size_out", str(len(data) + 4096)]
        if ctx is not None:
            cin = self._tmp / f"ctx{n}"
            cin.write_bytes(ctx)
            args += ["ctx_in", str(cin)]
        proc = _run(args, netns=self.netns)
        match = re.search(r"Return value:\s*(\d+)", proc.stdout + proc.stderr)
        if match is None:
            raise KernelError(f"bpftool prog run printed no return value: {proc.stdout!r}")
        out = dout.read_bytes() if dout.exists() else b""
        din.unlink(missing_ok=True)
        dout.unlink(missing_ok=True)
        return int(match[1]), out


def _hex(data):
    return [f"{b:02x}" for b in data]


def _unhex(items):
    return bytes(int(x, 16) for x in items)


def kernel_load(obj_path, prog_name=None) -> tuple[bool, str]:
    """Load ``obj_path`` into the kernel and unload it; return ``(accepted, verifier log)``.

    bpftool loads every program of the object, so the answer is for all of them together;
    ``prog_name`` is accepted for symmetry with :func:`kernel_run`.
    """
    prog = KernelProgram(obj_path, prog_name or "")
    try:
        return prog.load()
    finally:
        prog.close()


def kernel_run(obj_path, prog_name, data: bytes, maps_init=None):
    """Run ``prog_name`` of ``obj_path`` in the kernel once; return ``(retval, data_out)``.

    ``maps_init`` is ``{map name: {key bytes: value bytes}}`` written before the run.
    """
    with KernelProgram(obj_path, prog_name) as prog:
        for name, entries in (maps_init or {}).items():
            for key, value in entries.items():
                prog.map_update(name, key, value)
        return prog.run(data)


class NetNs:
    """A network namespace of its own (``ip netns``) for programs whose helpers read the
    kernel's network state (``bpf_fib_lookup``); a context manager that deletes it.

    :meth:`ip` runs ``ip -n NAME ARGS...``, :meth:`sysctl` sets a sysctl inside it. A command
    that fails raises :class:`KernelError` with its message (the caller skips, saying why).
    """

    def __init__(self):
        for tool in ("ip", "nsenter"):
            if shutil.which(tool) is None:
                raise KernelError(f"{tool} is not installed (iproute2, util-linux)")
        self.name = f"nicsim-{os.getpid()}-{next(_counter)}-{uuid.uuid4().hex[:8]}"
        self._cmd(["ip", "netns", "add", self.name])

    @staticmethod
    def _cmd(args):
        proc = subprocess.run(args, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise KernelError(f"{' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
        return proc.stdout

    def ip(self, *args):
        """Run ``ip -n NAME ARGS...``; return its output."""
        return self._cmd(["ip", "-n", self.name, *map(str, args)])

    def ifindex(self, dev):
        """Return the interface index of ``dev`` in the namespace."""
        return json.loads(self.ip("-j", "link", "show", dev))[0]["ifindex"]

    def sysctl(self, key, value):
        """Set ``key`` (``net.ipv4.conf.all.forwarding``) inside the namespace."""
        self._cmd(["nsenter", f"--net=/run/netns/{self.name}", "sysctl", "-qw",
                   f"{key}={value}"])

    def close(self):
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- raw instruction sequences through bpf(2) ------------------------------------------------

_BPF_PROG_LOAD = 5
_BPF_PROG_TEST_RUN = 10
_BPF_PROG_TYPE_XDP = 6
_SYS_BPF = {"x86_64": 321, "aarch64": 280}


def _sys_bpf(cmd, attr):
    import ctypes
    import platform

    libc = ctypes.CDLL(None, use_errno=True)
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        raise KernelError(f"bpf(2) number unknown on {platform.machine()}")
    ret = libc.syscall(number, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        return -ctypes.get_errno()
    return ret


class RawProgram:
    """An XDP program loaded from raw instructions with bpf(BPF_PROG_LOAD); a context manager.

    ``accepted``/``log`` say what the verifier thought; :meth:`run` uses BPF_PROG_TEST_RUN.
    """

    def __init__(self, code: bytes):
        import ctypes

        self._ct = ctypes
        self.code = ctypes.create_string_buffer(code, len(code))
        self.license = ctypes.create_string_buffer(b"GPL")
        self.logbuf = ctypes.create_string_buffer(1 << 16)
        attr = (ctypes.c_uint8 * 128)()
        struct_ = __import__("struct")
        struct_.pack_into("<IIQQIIQ", attr, 0, _BPF_PROG_TYPE_XDP, len(code) // 8,
                          ctypes.addressof(self.code), ctypes.addressof(self.license), 1,
                          len(self.logbuf), ctypes.addressof(self.logbuf))
        fd = _sys_bpf(_BPF_PROG_LOAD, attr)
        if fd < 0:
            # Retry without a log in case the log itself failed (ENOSPC).
            self.fd = None
            self.accepted = False
            self.log = self.logbuf.value.decode(errors="replace") or os.strerror(-fd)
        else:
            self.fd = fd
            self.accepted = True
            self.log = self.logbuf.value.decode(errors="replace")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def run(self, data: bytes, repeat=1):
        """Return ``(retval, data_out, ns per run)``."""
        ct = self._ct
        if self.fd is None:
            raise KernelError(f"program was not loaded: {self.log.strip().splitlines()[-1:]}")
        din = ct.create_string_buffer(data, len(data))
        dout = ct.create_string_buffer(len(data) + 4096)
        attr = (ct.c_uint8 * 128)()
        __import__("struct").pack_into("<IIIIQQII", attr, 0, self.fd, 0, len(data),
                                       len(dout), ct.addressof(din), ct.addressof(dout),
                                       repeat, 0)
        ret = _sys_bpf(_BPF_PROG_TEST_RUN, attr)
        if ret < 0:
            raise KernelError(f"BPF_PROG_TEST_RUN failed: {os.strerror(-ret)}")
        import struct as st
        retval, = st.unpack_from("<I", attr, 4)
        size_out, = st.unpack_from("<I", attr, 12)
        duration, = st.unpack_from("<I", attr, 36)
        return retval, dout.raw[:size_out], duration


def kernel_run_insns(insns, data: bytes):
    """Load raw instructions (``Insn`` list) as an XDP program and run it once over ``data``;
    return ``(accepted, retval, data_out, log)``."""
    from nicsim.host.ebpf.insn import encode

    with RawProgram(encode(insns)) as prog:
        if not prog.accepted:
            return False, None, None, prog.log
        retval, out, _ = prog.run(data)
        return True, retval, out, prog.log


class RawMap:
    """A kernel map made with bpf(BPF_MAP_CREATE), for comparing map semantics; closes itself.

    Per-CPU maps: :meth:`lookup` returns the first CPU's value.
    """

    def __init__(self, map_type, key_size, value_size, max_entries, flags=0):
        import ctypes
        import struct as st

        self._ct, self._st = ctypes, st
        attr = (ctypes.c_uint8 * 128)()
        st.pack_into("<IIIII", attr, 0, map_type, key_size, value_size, max_entries, flags)
        fd = _sys_bpf(0, attr)
        if fd < 0:
            raise KernelError(f"BPF_MAP_CREATE failed: {os.strerror(-fd)}")
        self.fd = fd
        self.key_size, self.value_size = key_size, value_size
        self.percpu = map_type in (5, 6, 10)
        self.ncpus = os.cpu_count() if self.percpu else 1
        self.slot = (value_size + 7) // 8 * 8 if self.percpu else value_size

    def _elem(self, cmd, key, value=None, flags=0, out=False):
        ct = self._ct
        kbuf = ct.create_string_buffer(bytes(key), max(1, len(key)))
        size = self.slot * self.ncpus
        if value is not None and self.percpu:
            value = b"".join(bytes(value).ljust(self.slot, b"\0") for _ in range(self.ncpus))
        vbuf = ct.create_string_buffer(bytes(value) if value is not None else bytes(size),
                                       size)
        attr = (ct.c_uint8 * 128)()
        # BPF_MAP_DELETE_ELEM takes the key only: the rest of the attribute must be zero.
        self._st.pack_into("<IIQQQ", attr, 0, self.fd, 0, ct.addressof(kbuf),
                           0 if cmd == 3 else ct.addressof(vbuf), flags)
        ret = _sys_bpf(cmd, attr)
        if out:
            return None if ret < 0 else vbuf.raw[:self.value_size]
        return min(ret, 0)

    @classmethod
    def open_fd(cls, fd):
        """Wrap an existing map ``fd`` (sizes from BPF_OBJ_GET_INFO_BY_FD); the map closes it."""
        import ctypes
        import struct as st

        info = (ctypes.c_uint8 * 88)()
        attr = (ctypes.c_uint8 * 128)()
        st.pack_into("<IIQ", attr, 0, fd, len(info), ctypes.addressof(info))
        ret = _sys_bpf(_BPF_OBJ_GET_INFO_BY_FD, attr)
        if ret < 0:
            os.close(fd)
            raise KernelError(f"BPF_OBJ_GET_INFO_BY_FD: {os.strerror(-ret)}")
        map_type, _id, key_size, value_size = st.unpack_from("<IIII", info, 0)
        self = cls.__new__(cls)
        self._ct, self._st = ctypes, st
        self.fd = fd
        self.key_size, self.value_size = key_size, value_size
        self.percpu = map_type in (5, 6, 10)
        self.ncpus = os.cpu_count() if self.percpu else 1
        self.slot = (value_size + 7) // 8 * 8 if self.percpu else value_size
        return self

    def lookup_errno(self, key):
        """Return ``(0, value bytes)`` or ``(-errno, None)`` for a lookup from user space."""
        ct = self._ct
        kbuf = ct.create_string_buffer(bytes(key), max(1, len(key)))
        vbuf = ct.create_string_buffer(self.slot * self.ncpus)
        attr = (ct.c_uint8 * 128)()
        self._st.pack_into("<IIQQQ", attr, 0, self.fd, 0, ct.addressof(kbuf),
                           ct.addressof(vbuf), 0)
        ret = _sys_bpf(1, attr)
        return (min(ret, 0), None) if ret < 0 else (0, vbuf.raw[:self.value_size])

    def lookup(self, key):
        return self._elem(1, key, out=True)

    def update(self, key, value, flags=0):
        return self._elem(2, key, value, flags)

    def delete(self, key):
        return self._elem(3, key)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- AF_XDP sockets, pinned objects and live test runs (xskmap against the kernel) ----------
# Ref: include/uapi/linux/if_xdp.h (struct sockaddr_xdp, xdp_umem_reg, xdp_mmap_offsets,
#      xdp_desc; XDP_COPY, the XDP_* socket options and XDP_PGOFF_* ring offsets),
#      include/uapi/linux/bpf.h (BPF_OBJ_GET, BPF_F_TEST_XDP_LIVE_FRAMES, struct xdp_md),
#      Documentation/networking/af_xdp.rst

AF_XDP = 44
SOL_XDP = 283
XDP_COPY = 1 << 1
XDP_MMAP_OFFSETS, XDP_RX_RING, XDP_TX_RING, XDP_UMEM_REG = 1, 2, 3, 4
XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING = 5, 6
XDP_PGOFF_RX_RING = 0
XDP_UMEM_PGOFF_FILL_RING = 0x100000000
_BPF_OBJ_GET = 7
_BPF_OBJ_GET_INFO_BY_FD = 15
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
_CLONE_NEWNET = 0x40000000


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def obj_get(path) -> int:
    """Return a new fd for the object pinned at ``path`` (bpf(BPF_OBJ_GET))."""
    import ctypes
    import struct as st

    name = ctypes.create_string_buffer(str(path).encode())
    attr = (ctypes.c_uint8 * 128)()
    st.pack_into("<Q", attr, 0, ctypes.addressof(name))
    fd = _sys_bpf(_BPF_OBJ_GET, attr)
    if fd < 0:
        raise KernelError(f"BPF_OBJ_GET {path}: {os.strerror(-fd)}")
    return fd




def pinned_map(prog: KernelProgram, name) -> RawMap:
    """Return map ``name`` of a loaded :class:`KernelProgram` as a :class:`RawMap` (its own
    fd, so that values such as socket fds can be written from this process)."""
    return RawMap.open_fd(obj_get(prog._map_pin(name)))


class InNetNs:
    """Move the calling thread into network namespace ``name`` (``ip netns``) and back; a
    context manager. Sockets made inside belong to that namespace, and BPF_PROG_TEST_RUN
    finds its ``ingress_ifindex`` there."""

    def __init__(self, name):
        self.path = f"/run/netns/{name}"

    def __enter__(self):
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(self.path, os.O_RDONLY)
        try:
            self._setns(target)
        except KernelError:
            os.close(self._home)
            raise
        finally:
            os.close(target)
        return self

    @staticmethod
    def _setns(fd):
        import ctypes

        if _libc().setns(fd, _CLONE_NEWNET) != 0:
            raise KernelError(f"setns: {os.strerror(ctypes.get_errno())}")

    def __exit__(self, *exc):
        try:
            self._setns(self._home)
        finally:
            os.close(self._home)


class XdpSocket:
    """An AF_XDP socket with a UMEM of ``frames`` chunks, its fill, completion, RX and TX
    rings registered (``ring`` entries each) and the fill and RX rings mapped; closes itself.

    Parameters
    ----------
    frames : int
        UMEM chunks (page-aligned anonymous memory).
    chunk : int
        Bytes of a chunk (a power of two from 2048 to the page size).
    ring : int
        Entries of each ring (a power of two).
    """

    def __init__(self, frames=16, chunk=4096, ring=16):
        import ctypes
        import mmap
        import socket
        import struct as st

        self._st = st
        self.chunk, self.ring = chunk, ring
        self._maps = []
        self.free = [i * chunk for i in reversed(range(frames))]  # chunks user space holds
        try:
            self.sock = socket.socket(AF_XDP, socket.SOCK_RAW, 0)
        except OSError as exc:
            raise KernelError(f"no AF_XDP socket: {exc.strerror}") from None
        try:
            self.umem = mmap.mmap(-1, frames * chunk, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            self._umem_view = (ctypes.c_char * len(self.umem)).from_buffer(self.umem)
            # struct xdp_umem_reg: addr, len, chunk_size, headroom, flags, tx_metadata_len
            reg = st.pack("<QQIIII", ctypes.addressof(self._umem_view), len(self.umem), chunk,
                          0, 0, 0)
            self.sock.setsockopt(SOL_XDP, XDP_UMEM_REG, reg)
            for opt in (XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING, XDP_RX_RING,
                        XDP_TX_RING):
                self.sock.setsockopt(SOL_XDP, opt, ring)
            # struct xdp_mmap_offsets: rx, tx, fr, cr, each producer, consumer, desc, flags
            offs = st.unpack("<16Q", self.sock.getsockopt(SOL_XDP, XDP_MMAP_OFFSETS, 128))
            self.rx_off, self.fr_off = offs[0:3], offs[8:11]
            self.rx_map = self._map(self.rx_off[2] + ring * 16, XDP_PGOFF_RX_RING)
            self.fr_map = self._map(self.fr_off[2] + ring * 8, XDP_UMEM_PGOFF_FILL_RING)
        except OSError as exc:
            self.close()
            raise KernelError(f"AF_XDP socket setup: {exc.strerror or exc}") from None

    def _map(self, length, offset):
        import mmap

        m = mmap.mmap(self.sock.fileno(), length, mmap.MAP_SHARED | mmap.MAP_POPULATE,
                      mmap.PROT_READ | mmap.PROT_WRITE, offset=offset)
        self._maps.append(m)
        return m

    def fileno(self):
        return self.sock.fileno()

    def bind(self, ifindex, queue_id=0, flags=XDP_COPY):
        """Bind to ``ifindex``/``queue_id`` (struct sockaddr_xdp); raise KernelError."""
        import ctypes

        addr = self._st.pack("<HHIII", AF_XDP, flags, ifindex, queue_id, 0)
        buf = ctypes.create_string_buffer(addr, len(addr))
        if _libc().bind(self.sock.fileno(), buf, len(addr)) != 0:
            raise KernelError(f"bind AF_XDP to ifindex {ifindex} queue {queue_id}: "
                              f"{os.strerror(ctypes.get_errno())}")

    def fill(self):
        """Give the kernel every free UMEM chunk the fill ring has room for."""
        st, off = self._st, self.fr_off
        prod = st.unpack_from("<I", self.fr_map, off[0])[0]
        cons = st.unpack_from("<I", self.fr_map, off[1])[0]
        count = min(self.ring - ((prod - cons) & 0xFFFFFFFF), len(self.free))
        for i in range(count):
            st.pack_into("<Q", self.fr_map, off[2] + ((prod + i) % self.ring) * 8,
                         self.free.pop())
        st.pack_into("<I", self.fr_map, off[0], (prod + count) & 0xFFFFFFFF)

    def receive(self) -> list[bytes]:
        """Return the frames waiting in the RX ring (consumed, their chunks free again)."""
        st, off = self._st, self.rx_off
        prod = st.unpack_from("<I", self.rx_map, off[0])[0]
        cons = st.unpack_from("<I", self.rx_map, off[1])[0]
        frames = []
        while cons != prod:
            addr, length, _opts = st.unpack_from("<QII", self.rx_map,
                                                 off[2] + (cons % self.ring) * 16)
            frames.append(bytes(self.umem[addr:addr + length]))
            self.free.append(addr - addr % self.chunk)
            cons = (cons + 1) & 0xFFFFFFFF
        st.pack_into("<I", self.rx_map, off[1], cons)
        return frames

    def close(self):
        for m in self._maps:
            m.close()
        self._maps = []
        self.sock.close()
        self._umem_view = None  # the last export of the UMEM: it may close now
        if getattr(self, "umem", None) is not None:
            self.umem.close()
            self.umem = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_live(prog_fd, data: bytes, ifindex, rx_queue=0):
    """Run an XDP program once over ``data`` with BPF_F_TEST_XDP_LIVE_FRAMES: the verdict is
    carried out (a redirect reaches its target). ``ifindex``/``rx_queue`` are the context's
    ingress device and queue (in the calling thread's namespace). Return 0 or -errno."""
    import ctypes
    import struct as st

    din = ctypes.create_string_buffer(data, len(data))
    ctx = ctypes.create_string_buffer(st.pack("<6I", 0, len(data), 0, ifindex, rx_queue, 0),
                                      24)
    attr = (ctypes.c_uint8 * 128)()
    st.pack_into("<IIIIQQIIIIQQIII", attr, 0, prog_fd, 0, len(data), 0, ctypes.addressof(din),
                 0, 1, 0, 24, 0, ctypes.addressof(ctx), 0, BPF_F_TEST_XDP_LIVE_FRAMES, 0, 0)
    return min(_sys_bpf(_BPF_PROG_TEST_RUN, attr), 0)


def prog_run(prog_fd, data: bytes, ifindex=None, rx_queue=0):
    """Run an XDP program (its fd) once over ``data`` with BPF_PROG_TEST_RUN; with
    ``ifindex``, the context's ingress device (in the calling thread's namespace) and queue.
    Return ``(retval, data_out)``."""
    import ctypes
    import struct as st

    din = ctypes.create_string_buffer(data, len(data))
    dout = ctypes.create_string_buffer(len(data) + 4096)
    attr = (ctypes.c_uint8 * 128)()
    st.pack_into("<IIIIQQI", attr, 0, prog_fd, 0, len(data), len(dout),
                 ctypes.addressof(din), ctypes.addressof(dout), 1)
    if ifindex is not None:
        ctx = ctypes.create_string_buffer(
            st.pack("<6I", 0, len(data), 0, ifindex, rx_queue, 0), 24)
        st.pack_into("<IIQ", attr, 40, 24, 0, ctypes.addressof(ctx))
    ret = _sys_bpf(_BPF_PROG_TEST_RUN, attr)
    if ret < 0:
        raise KernelError(f"BPF_PROG_TEST_RUN failed: {os.strerror(-ret)}")
    retval, = st.unpack_from("<I", attr, 4)
    size_out, = st.unpack_from("<I", attr, 12)
    return retval, dout.raw[:size_out]
