"""The RTL TCP engine on Verilator: the session engine fast enough for megabytes against Linux.

:class:`VerilatorEngine` is :class:`nicsim.hw.toe.rtl_engine.RtlEngine` (the golden model's
interface over the gateware's application streams) with the simulation in a shared library:
the design ``toe-tcp`` (:class:`nicsim.rtl.toe.top.ToeTcpTop`) built by Verilator and compiled
with ``cpp/toe_shim.cpp``, which holds the buffer memory (the NIC's DRAM stand-in), drives the
streams with the same rules as the Amaranth driver and runs the clock until the engine is idle.
Python acts once per frame, command, tick batch or register read, never per cycle.

Builds are cached like every Verilator build (:func:`nicsim.hw.verilator.build_root`), one per
parameter set: the first run with new parameters (address, sessions, timers) compiles for a few
minutes, later ones load the library.
"""
from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

from nicsim.hw.ref.tcp import TcpError
from nicsim.hw.toe.rtl_engine import RtlEngine
from nicsim.hw.verilator import VERILATOR_FLAGS, VerilatorError, locked, prepare, verilator_root

__all__ = ["VerilatorEngine", "build_library"]

_SOURCE = Path(__file__).resolve().parent.parent / "cpp" / "toe_shim.cpp"
DESIGN = "toe-tcp"
# cycles one run may take before the engine counts as stuck (a 64 KiB RECV is 8192 cycles)
MAX_RUN_CYCLES = 50_000_000


def _design_defaults() -> dict:
    import inspect

    from nicsim.rtl.toe.engine import ToeEngine, ToeTcpEngine

    defaults = {k: p.default for k, p in inspect.signature(ToeEngine).parameters.items()
                if p.default is not inspect.Parameter.empty}
    defaults["sessions"] = inspect.signature(ToeTcpEngine).parameters["sessions"].default
    return defaults


_BUILT: dict = {}  # parameters -> library, for this process (elaboration takes seconds)


def build_library(params: dict) -> Path:
    """Build (or reuse) the design ``toe-tcp`` with ``params`` as a shared library with the
    C API of ``cpp/toe_shim.cpp``; return its path.

    Parameters equal to the design's defaults are left out of the cache key, so the same
    gateware is built once whichever way it was asked for.
    """
    defaults = _design_defaults()
    params = {k: v for k, v in params.items() if defaults.get(k, object()) != v}
    key = repr(sorted(params.items()))
    if key in _BUILT and _BUILT[key].exists():
        return _BUILT[key]
    _BUILT[key] = library = _build(params)
    return library


def _build(params: dict) -> Path:
    if params.get("width", 64) != 64:
        raise VerilatorError("the Verilator TCP engine runs the 64-bit design only")
    params["width"] = 64
    flags = list(VERILATOR_FLAGS) + [_SOURCE.read_text()]  # shim changes invalidate the cache
    toplevel, text, folder, _ = prepare(DESIGN, params, "toe-shim", flags)
    library = folder / "libtoe_shim.so"
    with locked(folder / ".lock"):
        if not library.exists():
            (folder / f"{toplevel}.v").write_text(text)
            (folder / "shim_main.cpp").write_text(f'#include "{_SOURCE}"\n')
            cmd = [str(verilator_root() / "bin" / "verilator"), "--cc", "--exe", "--build",
                   "-j", "2", *VERILATOR_FLAGS, "--top-module", toplevel, "--prefix", "Vtop",
                   "-Mdir", str(folder / "obj"), "-CFLAGS", "-fPIC", "-LDFLAGS", "-shared",
                   "-o", str(library), f"{toplevel}.v", "shim_main.cpp"]
            with open(folder / "build.log", "w") as log:
                proc = subprocess.run(cmd, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
            if proc.returncode != 0 or not library.exists():
                raise VerilatorError(f"the Verilator TCP engine {params} did not build: "
                                     f"see {folder / 'build.log'}")
    return library


def _load(path: Path):
    lib = ctypes.CDLL(str(path))
    u8p, u32p, vp = ctypes.POINTER(ctypes.c_uint8), ctypes.POINTER(ctypes.c_uint32), \
        ctypes.c_void_p
    u32, u64 = ctypes.c_uint32, ctypes.c_uint64
    signatures = {
        "toe_new": ([u64], vp), "toe_free": ([vp], None),
        "toe_push_frame": ([vp, ctypes.c_char_p, u32], None),
        "toe_push_cmd": ([vp, u32, u32, u32, u32, u32, ctypes.c_char_p, u32, ctypes.c_int,
                          ctypes.c_int], None),
        "toe_add_ticks": ([vp, u64], None), "toe_push_read": ([vp, u32], None),
        "toe_run": ([vp, u64], ctypes.c_int), "toe_cycles": ([vp], u64),
        "toe_out_of_range": ([vp], u64), "toe_state": ([vp, ctypes.POINTER(u64)], None),
        "toe_peek_frame": ([vp], ctypes.c_int64),
        "toe_pop_frame": ([vp, u8p], None), "toe_peek_frame_cycle": ([vp], u64),
        "toe_pop_resp": ([vp, u32p], ctypes.c_int),
        "toe_pop_note": ([vp, u32p, u32p], ctypes.c_int), "toe_rx_len": ([vp], u64),
        "toe_rx_owed": ([vp], u64),
        "toe_take_rx": ([vp, u8p], None), "toe_pop_read": ([vp, u32p], ctypes.c_int),
        "toe_auto_recv": ([vp, ctypes.c_int], None), "toe_auto_len": ([vp, u32], u64),
        "toe_take_auto": ([vp, u32, u8p], None),
        "toe_auto_send": ([vp, u32, ctypes.c_char_p, u32], None),
        "toe_auto_pending": ([vp, u32], u64),
    }
    for name, (args, res) in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = res
    return lib


_RESP_FIELDS = ("ok", "sid", "value", "state", "port", "peer_ip", "peer_port", "eof", "align")


class VerilatorEngine(RtlEngine):
    """The RTL TCP engine (front end and session engine) on Verilator.

    Same parameters, methods and behaviour as :class:`~nicsim.hw.toe.rtl_engine.RtlEngine`
    (whose driving rules the C++ side follows), about a thousand times faster. The first use
    of a parameter set builds the library (minutes); see :func:`build_library`.

    The auto modes (:meth:`RtlEngine.auto_receive`, :meth:`RtlEngine.auto_send`) run on the
    C++ side: it issues the ``RECV`` and ``SEND`` commands and keeps the bytes read and the
    bytes waiting to be written.

    Members
    -------
    cycles : int
        Clock cycles simulated.
    library : Path
        The shared library in use.
    """

    def _start(self) -> None:
        from nicsim.rtl.toe.sessions import CMD_OPS  # noqa: F401 - fail early if missing

        self._dut._MustUse__silence = True  # built for its checks; Verilator gets the params
        self.library = build_library(dict(self.params, width=64))
        self._lib = _load(self.library)
        self._words = self.params["sessions"] << (self.params["buf_bits"] + 1 - 3)
        self._handle = self._lib.toe_new(self._words)

    def reset(self) -> None:
        """Back to the state after construction: a fresh model and memory, the auto modes
        off."""
        self._lib.toe_free(self._handle)
        self._handle = self._lib.toe_new(self._words)
        self._clear()

    def auto_receive(self, on: bool = True) -> None:
        """Read received data as it is notified, inside the simulation (the C++ side issues
        the ``RECV``s; see :meth:`RtlEngine.auto_receive`)."""
        super().auto_receive(on)
        self._lib.toe_auto_recv(self._handle, int(self._auto_recv))

    def _auto_hand(self, sid: int, data: bytes) -> None:
        if not 0 <= sid < self.params["sessions"]:
            return
        self._lib.toe_auto_send(self._handle, sid, data, len(data))

    def _auto_waiting(self, sid: int) -> int:
        if not 0 <= sid < self.params["sessions"]:
            return 0
        return self._lib.toe_auto_pending(self._handle, sid)

    def free(self) -> None:
        """Free the model now (also done when the object goes away)."""
        if getattr(self, "_handle", None):
            self._lib.toe_free(self._handle)
            self._handle = None

    def __del__(self):
        try:
            self.free()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _run(self) -> None:
        self._push()
        lib, h = self._lib, self._handle
        if lib.toe_run(h, MAX_RUN_CYCLES):
            state = (ctypes.c_uint64 * 9)()
            lib.toe_state(h, state)
            names = ("frame_in_flight", "frames", "commands", "awaiting_response",
                     "send_beats", "ticks", "reads", "output_bytes", "idle")
            raise TcpError(f"the Verilator TCP engine did not go idle within "
                           f"{MAX_RUN_CYCLES} cycles ({dict(zip(names, state, strict=True))})")
        self._take()

    def _slice(self, limit: int) -> bool:
        """Run at most ``limit`` cycles, less if the engine goes idle with nothing queued;
        return whether it did."""
        self._push()
        idle = not self._lib.toe_run(self._handle, limit)
        self._take()
        return idle

    def _owed(self) -> int:
        return self._lib.toe_rx_owed(self._handle)

    def _push(self) -> None:
        """Hand what Python queued to the C++ side."""
        lib, h = self._lib, self._handle
        while self._frames:
            frame = self._frames.popleft()
            lib.toe_push_frame(h, frame, len(frame))
        while self._cmds:
            c = self._cmds.popleft()
            data = self._pending_send.popleft() if self._pending_send else None
            lib.toe_push_cmd(h, c["op"], c["sid"], c["ip"], c["port"], c["length"],
                             data or b"", len(data or b""), int(data is not None),
                             int(self.clocked))
        if self._ticks_owed:
            lib.toe_add_ticks(h, self._ticks_owed)
            self._ticks_owed = 0
        while self._reads:
            lib.toe_push_read(h, self._reads.popleft())

    def _take(self) -> None:
        """Take the outputs of the run."""
        lib, h = self._lib, self._handle
        self.cycles = lib.toe_cycles(h)
        while (n := lib.toe_peek_frame(h)) >= 0:
            buf = (ctypes.c_uint8 * max(n, 1))()
            self._out_at.append(lib.toe_peek_frame_cycle(h) + self._offset)
            lib.toe_pop_frame(h, buf)
            self._out.append(bytes(buf)[:n])
        fields = (ctypes.c_uint32 * 9)()
        while lib.toe_pop_resp(h, fields):
            if self._detached:  # the answer to a close nobody waits for (clocked)
                self._detached -= 1
                continue
            self._resps.append(dict(zip(_RESP_FIELDS, fields, strict=True)))
        kind, sid = ctypes.c_uint32(), ctypes.c_uint32()
        while lib.toe_pop_note(h, ctypes.byref(kind), ctypes.byref(sid)):
            self._note(kind.value, sid.value)
        n = lib.toe_rx_len(h)
        if n:
            buf = (ctypes.c_uint8 * n)()
            lib.toe_take_rx(h, buf)
            self._rx += bytes(buf)
        value = ctypes.c_uint32()
        while lib.toe_pop_read(h, ctypes.byref(value)):
            self._read_values.append(value.value)
        if self._auto_recv:
            for sid in range(self.params["sessions"]):
                if n := lib.toe_auto_len(h, sid):
                    buf = (ctypes.c_uint8 * n)()
                    lib.toe_take_auto(h, sid, buf)
                    self._auto_rx.setdefault(sid, bytearray()).extend(bytes(buf))
