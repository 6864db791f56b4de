"""Fast RTL runs: the design on Verilator driven by a C++ harness, no Python per cycle.

cocotb with the Python bus models moves about 20k beats per second; this harness streams frames
through the same Verilated design at millions of cycles per second, so whole captures and
benchmarks run through the gateware. It speaks the same AXI4-Stream and AXI4-Lite rules as the
cocotbext-axi models (see ``cpp/stream_harness.cpp``).
"""

from __future__ import annotations

import os
import select
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .verilator import VERILATOR_FLAGS, VerilatorError, locked, prepare, verilator_root

__all__ = ["HarnessBuild", "HarnessOutcome", "HarnessSession", "build_harness", "run_harness"]

_SOURCE = Path(__file__).parent / "cpp" / "stream_harness.cpp"
_JOB_MAGIC = 0x314A534E
_OUT_MAGIC = 0x314F534E


@dataclass
class HarnessBuild:
    """A design compiled with the C++ stream harness.

    Members
    -------
    binary : Path
        The executable.
    ports : set of str
        Top-level port names of the design.
    lanes : int
        Bytes per beat.
    """

    binary: Path
    ports: set
    lanes: int


@dataclass
class HarnessOutcome:
    """What a harness run returned.

    Members
    -------
    frames : list of (bytes, int)
        Output frames with the ``tuser`` of their last beat.
    results : list of int
        Words of the result stream, in order.
    reads : list of (int, int)
        Register values and AXI responses of the requested reads, after the run.
    cycles : int
        Clock cycles simulated (including reset and register access).
    in_beats : int
        Beats accepted on ``s_axis``.
    in_span : int
        Cycles from the first accepted input beat to the last, inclusive: ``in_beats ==
        in_span`` means the design took a beat every cycle.
    """

    frames: list = field(default_factory=list)
    results: list = field(default_factory=list)
    reads: list = field(default_factory=list)
    cycles: int = 0
    in_beats: int = 0
    in_span: int = 0


def build_harness(design: str, params: dict | None = None, waves: bool = False) -> HarnessBuild:
    """Build (or reuse) ``design`` with ``params`` compiled against the C++ harness.

    With ``waves`` the build can record FST waveforms (slower; see :func:`run_harness`).
    """
    params = dict(params or {})
    source_text = _SOURCE.read_text()
    trace = ["--trace-fst", "--trace-structs"] if waves else []
    flags = list(VERILATOR_FLAGS) + trace + [source_text]  # harness changes invalidate the cache
    toplevel, text, folder, top = prepare(design, params, "harness-waves" if waves else "harness",
                                          flags)
    ports = set(top.signature.members.keys())
    lanes = top.signature.members["s_axis_tdata"].shape.width // 8
    binary = folder / "harness"
    with locked(folder / ".lock"):
        if not binary.exists():
            (folder / f"{toplevel}.v").write_text(text)
            defines = [f"#define BYTES {lanes}"]
            if "m_axis_tdata" in ports:
                defines.append("#define HAS_M_AXIS 1")
            if "m_axis_tuser" in ports:
                defines.append("#define HAS_M_TUSER 1")
            if "s_axis_tuser" in ports:
                defines.append("#define HAS_S_TUSER 1")
            if waves:
                defines.append("#define TRACE_FST 1")
            if "s_axil_awaddr" in ports:
                defines.append("#define HAS_AXIL 1")
            result = [p[:-len("_tdata")] for p in ports
                      if p.startswith("m_axis_") and p.endswith("_tdata") and p != "m_axis_tdata"]
            if result:
                defines.append(f"#define RESULT top->{result[0]}")
            (folder / "harness_main.cpp").write_text(
                "\n".join(defines) + f'\n#include "{_SOURCE}"\n')
            cmd = [str(verilator_root() / "bin" / "verilator"), "--cc", "--exe", "--build",
                   "-j", "2", *VERILATOR_FLAGS, *trace, "--top-module", toplevel,
                   "--prefix", "Vtop",
                   "-Mdir", str(folder / "obj"), "-o", str(binary),
                   f"{toplevel}.v", "harness_main.cpp"]
            with open(folder / "build.log", "w") as log:
                proc = subprocess.run(cmd, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
            if proc.returncode != 0 or not binary.exists():
                raise VerilatorError(f"the C++ harness for {design} {params} did not build: "
                                     f"see {folder / 'build.log'}")
    return HarnessBuild(binary, ports, lanes)


def run_harness(build: HarnessBuild, frames, users=None, writes=(), reads=(), idle_pct=0,
                backpressure_pct=0, seed=1, drain_cycles=None, timeout_s=600,
                waves=None) -> HarnessOutcome:
    """Stream ``frames`` through a harness build and return what came out.

    Parameters
    ----------
    frames : list of bytes
        Frames to send (each at least one byte).
    users : list of int, optional
        ``s_axis_tuser`` of each frame.
    writes : list of (addr, value)
        Register writes before the first frame; a rejected write raises.
    reads : list of addr
        Registers read after the last output.
    idle_pct, backpressure_pct : int
        Percent of cycles the source idles and the sinks refuse (seeded by ``seed``).
    drain_cycles : int, optional
        Quiet cycles after the last input that end the run (default: enough for a
        store-and-forward of the largest frame).
    waves : path, optional
        Record the run as an FST waveform there (the build needs ``waves=True``).
    """
    job = _encode_job(build, frames, users, writes, reads, idle_pct, backpressure_pct, seed,
                      drain_cycles)
    argv = [str(build.binary)] + ([str(waves)] if waves else [])
    proc = subprocess.run(argv, input=job, capture_output=True,
                          timeout=timeout_s)
    if proc.returncode != 0:
        raise VerilatorError(f"the RTL harness failed: {proc.stderr.decode(errors='replace')}")
    return _parse_outcome(proc.stdout, proc.stderr.decode(errors="replace").strip())


def _encode_job(build, frames, users, writes, reads, idle_pct, backpressure_pct, seed,
                drain_cycles):
    if any(len(f) == 0 for f in frames):
        raise ValueError("an AXI4-Stream frame has at least one byte")
    users = list(users) if users is not None else [0] * len(frames)
    if drain_cycles is None:
        longest = max((len(f) for f in frames), default=0)
        drain_cycles = 4 * (longest // build.lanes + 1) + 2000
    job = bytearray(struct.pack("<II", _JOB_MAGIC, len(writes)))
    for addr, value in writes:
        job += struct.pack("<II", addr, value & 0xFFFFFFFF)
    job += struct.pack("<I", len(reads))
    for addr in reads:
        job += struct.pack("<I", addr)
    job += struct.pack("<IIQQI", idle_pct, backpressure_pct, seed, drain_cycles, len(frames))
    for data, user in zip(frames, users, strict=True):
        job += struct.pack("<IQ", len(data), user) + bytes(data)
    return bytes(job)


class HarnessSession:
    """One harness process that serves a sequence of jobs, the design keeping its state.

    The design is reset once, when the first job starts; every later job finds the registers,
    tables, counters and meters as the job before left them. A job may be register writes
    only, frames, reads, or all three (:meth:`run`; writes first, then frames, then reads).

    Parameters
    ----------
    build : HarnessBuild
        The design (see :func:`build_harness`).
    timeout_s : float
        Seconds a job may take before the session counts the design as hung.
    waves : path, optional
        Record the whole session as one FST waveform (the build needs ``waves=True``).

    Errors (the process died, a job took longer than ``timeout_s``, a register write was
    rejected, the design stopped) raise :class:`~nicsim.hw.verilator.VerilatorError` with one
    line; after a death or a timeout the session is closed and every later job raises too.
    """

    def __init__(self, build: HarnessBuild, timeout_s: float = 120, waves=None):
        self.build = build
        self.timeout_s = timeout_s
        self.jobs = 0
        self._stderr = tempfile.TemporaryFile()
        self._seen = 0
        self._ended = None  # why the process ended, once it has
        argv = [str(build.binary)] + ([str(waves)] if waves else [])
        try:
            self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=self._stderr)
        except OSError as exc:
            raise VerilatorError(f"cannot start the RTL harness {build.binary}: "
                                 f"{exc.strerror}") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def alive(self) -> bool:
        """Whether the process still takes jobs."""
        return self._proc is not None and self._proc.poll() is None

    def _new_stderr(self):
        self._stderr.seek(self._seen)
        text = self._stderr.read().decode(errors="replace").strip()
        self._seen = self._stderr.tell()
        return " ".join(text.splitlines())

    def _dead(self, what):
        self._kill()
        detail = self._new_stderr()
        self._ended = f"the RTL harness {what}" + (f": {detail}" if detail else "")
        raise VerilatorError(self._ended)

    def _read(self, n, deadline):
        fd = self._proc.stdout.fileno()
        chunks, got = [], 0
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self._dead(f"took longer than {self.timeout_s} s on a job and was stopped")
            chunk = os.read(fd, n - got)
            if not chunk:
                code = self._proc.wait()
                self._dead(f"exited (status {code}) in the middle of a job")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def run(self, frames=(), users=None, writes=(), reads=(), idle_pct=0, backpressure_pct=0,
            seed=1, drain_cycles=None) -> HarnessOutcome:
        """Run one job; the arguments are those of :func:`run_harness`.

        ``cycles`` of the outcome counts from the reset; the other figures are this job's.
        """
        if self._ended is not None:
            raise VerilatorError(f"the RTL harness session has ended ({self._ended})")
        if self._proc is None:
            raise VerilatorError("the RTL harness session is closed")
        if self._proc.poll() is not None:
            self._dead(f"exited (status {self._proc.returncode}) before it took the job")
        job = _encode_job(self.build, list(frames), users, writes, reads, idle_pct,
                          backpressure_pct, seed, drain_cycles)
        try:
            self._proc.stdin.write(job)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            code = self._proc.wait()
            self._dead(f"exited (status {code}) before it took the job")
        deadline = time.monotonic() + self.timeout_s
        blob = bytearray(self._read(32, deadline))
        (n_out,) = struct.unpack("<I", self._read(4, deadline))
        blob += struct.pack("<I", n_out)
        for _ in range(n_out):
            head = self._read(12, deadline)
            blob += head + self._read(struct.unpack_from("<I", head)[0], deadline)
        n_res = self._read(4, deadline)
        blob += n_res + self._read(8 * struct.unpack("<I", n_res)[0], deadline)
        n_reads = self._read(4, deadline)
        blob += n_reads + self._read(8 * struct.unpack("<I", n_reads)[0], deadline)
        self.jobs += 1
        return _parse_outcome(bytes(blob), self._new_stderr())

    def _kill(self):
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def close(self):
        """End the process (end of file on its input, then a kill if it does not exit)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._kill()
        for pipe in (self._proc.stdin, self._proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        self._stderr.close()
        self._proc = None


def _parse_outcome(blob, stderr):
    magic, status, cycles, in_beats, in_span = struct.unpack_from("<IIQQQ", blob)
    if magic != _OUT_MAGIC:
        raise VerilatorError("the RTL harness returned garbage")
    if status == 1:
        raise VerilatorError(stderr or "a register write was rejected")
    out = HarnessOutcome(cycles=cycles, in_beats=in_beats, in_span=in_span)
    off = 32
    (n_out,) = struct.unpack_from("<I", blob, off)
    off += 4
    for _ in range(n_out):
        length, user = struct.unpack_from("<IQ", blob, off)
        off += 12
        out.frames.append((blob[off:off + length], user))
        off += length
    (n_res,) = struct.unpack_from("<I", blob, off)
    off += 4
    out.results = list(struct.unpack_from(f"<{n_res}Q", blob, off))
    off += 8 * n_res
    (n_reads,) = struct.unpack_from("<I", blob, off)
    off += 4
    out.reads = [struct.unpack_from("<II", blob, off + 8 * i) for i in range(n_reads)]
    if status == 2:
        raise VerilatorError(f"the design stopped: {len(out.results)} results and "
                             f"{len(out.frames)} frames came out before it went quiet")
    return out
