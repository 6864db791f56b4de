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
