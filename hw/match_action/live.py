"""A running match-action pipeline whose tables change while it runs (``nicsim ma serve``).

A :class:`LiveServer` keeps one pipeline alive and listens on a Unix socket; the clients
(``nicsim ma add/modify/delete/show/counters/send/stop --live PATH``, or :func:`request`) change
its entries, read its counters and meters, and send frames through it, as the switch CLI of
bmv2 does with a running ``simple_switch``. Two backends hold the pipeline:

``rtl``
    The gateware on Verilator, in one :class:`~nicsim.hw.harness.HarnessSession` for the life
    of the server: every change is the AXI4-Lite writes of :class:`ControlPlane`, applied to
    the running design (its counters and meters stay), and counters are register reads.
``model``
    The golden :class:`~nicsim.hw.ref.match_action.Pipeline`, whose state (counters, meters)
    lasts as long as the server.

Protocol: one JSON object per line. A client connects, sends one request line and reads one
answer line; the server serves one client at a time. Every answer has ``"ok"``; a refused or
failed request answers ``{"ok": false, "error": "one sentence"}`` and the server goes on.

=============  ============================================================================
``cmd``        other members of the request, and of the answer
=============  ============================================================================
``status``     answer: ``program``, ``backend``, ``width``, ``entries``, ``frames`` (sent so far)
``add``        ``table``, ``key``, ``action``, ``args``, ``priority``, ``meter`` (the loose
               values of :func:`~nicsim.hw.match_action.program.make_entry`); answer:
               ``stage``, ``slot``, ``writes`` (``[addr, value]`` pairs applied)
``modify``     as ``add``; answer: ``writes``
``delete``     ``table``, ``key``, ``priority``; answer: ``writes``
``entries``    answer: ``entries`` (entry specs, as entries files hold them, with ``slot``)
``counters``   ``table`` (optional), ``key`` and ``priority`` (optional: without a key, the
               table's misses); answer: ``counters``, a list of ``{"table", "key", "packets",
               "bytes"}`` (``key`` ``null`` for misses; ``meter``: ``[committed, peak]``
               bucket bytes for metered entries). Without ``table``: every entry and every
               table's misses.
``send``       ``frames`` (hex strings), ``times_ns`` (optional capture times); answer:
               ``frames`` (output frames, hex), ``meta`` (one record per input frame, as
               ``nicsim rtl run match-action`` writes them)
``stop``       the server answers, then ends
=============  ============================================================================

Meters' time: the frames of a ``send`` are stamped as :func:`~nicsim.hw.match_action.engine.
frame_times` stamps a capture (capture times, or ``frame_interval_ns`` apart), counted from
the server's clock, which starts at 0 and after each send stands ``frame_interval_ns`` (default
100 ns) past its last frame: meters never see time run backwards, on either backend.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

from nicsim.rtl.match_action import limits

from ..verilator import VerilatorError
from .control import ControlPlane, entry_spec
from .engine import MaConfig, frame_times, harness_outputs, process_frames
from .program import ProgramError, load_entries, load_program, make_entry

__all__ = ["LiveError", "HarnessDevice", "LivePipeline", "LiveServer", "request"]

MAX_REQUEST = 1 << 28  # bytes of one request line (frames travel as hex)
READ_TIMEOUT_S = 30  # a client that connects and sends no full line is dropped


class LiveError(Exception):
    """A request the server refused, or a server that cannot be reached: one sentence."""


class HarnessDevice:
    """A register device on a running harness session: writes are queued and go to the
    gateware with the next read, frames or :meth:`flush`; a read is one job."""

    def __init__(self, session):
        self.session = session
        self.pending = []

    def write(self, addr, value):
        self.pending.append((addr, value & 0xFFFFFFFF))

    def read(self, addr):
        done = self.job(reads=[addr])
        value, resp = done.reads[0]
        if resp != 0:
            raise VerilatorError(f"register 0x{addr:03x} answered a read with response {resp}")
        return value

    def flush(self):
        """Apply the queued writes; return them."""
        writes = list(self.pending)
        if writes:
            self.job()
        return writes

    def job(self, frames=(), users=None, reads=()):
        writes, self.pending = self.pending, []
        return self.session.run(frames, users, writes, reads)


class LivePipeline:
    """A pipeline and its control plane on one backend (see the module docstring).

    Parameters
    ----------
    program_path : path
        The program TOML.
    entries_path : path, optional
        Entries installed at start.
    backend : str
        ``rtl`` or ``model``.
    width : int
        Data width of the gateware (rtl).
    stages : int
        Stages of the gateware.
    frame_interval_ns : int, optional
        Spacing of frames without capture times (and between sends), default 100 ns.
    """

    def __init__(self, program_path, entries_path=None, backend="model", width=64,
                 stages=limits.DEFAULT_STAGES, frame_interval_ns=None):
        if backend not in ("rtl", "model"):
            raise LiveError(f"backend must be rtl or model, not {backend!r}.")
        self.backend, self.width = backend, width
        self.cp = ControlPlane(load_program(Path(program_path)), stages=stages)
        self.config = MaConfig(self.cp.program, [], stages, frame_interval_ns,
                               str(program_path))
        self.interval = 100 if frame_interval_ns is None else frame_interval_ns
        self.clock_ns = 0
        self.frames = 0
        self.session = None
        if backend == "rtl":
            from ..harness import HarnessSession, build_harness

            build = build_harness("match-action", {"width": width, "program": self.cp.config})
            self.session = HarnessSession(build)
            self.cp.device = HarnessDevice(self.session)
        loaded = load_entries(Path(entries_path), self.cp.program) if entries_path else []
        for i, e in enumerate(loaded):
            try:
                self.cp.add(e)
            except ProgramError as exc:
                raise ProgramError(f"{entries_path}: entry {i}: {exc}") from None
        self._flush()

    def close(self):
        if self.session is not None:
            self.session.close()

    def _flush(self):
        """Apply the control plane's writes; return them as ``[addr, value]`` pairs."""
        device = self.cp.device
        if isinstance(device, HarnessDevice):
            return [list(w) for w in device.flush()]
        writes, device.writes = device.writes, []
        return [list(w) for w in writes]

    # Requests ---------------------------------------------------------------------------------

    def handle(self, req):
        """Answer one request (a dict); raise LiveError, ProgramError or VerilatorError."""
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            raise LiveError("a request is a JSON object with a \"cmd\".")
        cmd = req["cmd"]
        handler = getattr(self, f"_cmd_{cmd}", None)
        if handler is None:
            raise LiveError(f"unknown command {cmd!r}; use status, add, modify, delete, "
                            "entries, counters, send or stop.")
        return handler(req)

    def _cmd_status(self, req):
        return {"program": self.cp.program.name, "backend": self.backend, "width": self.width,
                "entries": len(self.cp.entries()), "frames": self.frames}

    def _entry(self, req):
        try:
            return make_entry(self.cp.program, req.get("table"), req.get("key"),
                              req.get("action"), req.get("args") or {}, req.get("priority"),
                              req.get("meter"))
        except ProgramError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise LiveError(f"bad entry: {exc}") from None

    def _cmd_add(self, req):
        stage, slot = self.cp.add(self._entry(req))
        return {"stage": stage, "slot": slot, "writes": self._flush()}

    def _cmd_modify(self, req):
        self.cp.modify(self._entry(req))
        return {"writes": self._flush()}

    def _find(self, req):
        table = self._table(req.get("table"))
        try:
            return self.cp.find(table, req.get("key"), req.get("priority"))
        except ProgramError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise LiveError(f"bad key {req.get('key')!r}: {exc}") from None

    def _cmd_delete(self, req):
        self.cp.delete(self._find(req))
        return {"writes": self._flush()}

    def _cmd_entries(self, req):
        return {"entries": [dict(entry_spec(self.cp.program, e), slot=[self.cp.stage[e.table], s])
                            for t in self.cp.program.tables
                            for s, e in enumerate(self.cp.slots[t.name]) if e is not None]}

    def _table(self, name):
        if not isinstance(name, str) or name not in self.cp.stage:
            raise LiveError(f"no table {name!r}; the program has "
                            f"{', '.join(self.cp.stage)}.")
        return name

    def _cmd_counters(self, req):
        table = req.get("table")
        if table is None:
            rows = [(e.table, e) for e in self.cp.entries()]
            rows += [(t.name, None) for t in self.cp.program.tables]
        else:
            self._table(table)
            rows = [(table, None if req.get("key") is None else self._find(req))]
        return {"counters": [self._counters(t, e) for t, e in rows]}

    def _counters(self, table, entry):
        metered = entry is not None and self.cp.program.table(table).meter is not None
        if self.backend == "rtl":
            c = self.cp.counters(entry) if entry is not None else self.cp.miss_counters(table)
            meter = list(self.cp.meter(entry)) if metered else None
        else:
            state = self.cp.shadow.tables[table]
            if entry is None:
                c, meter = state.miss, None
            else:
                i = self.cp.shadow._find(entry)
                c = state.counters[i]
                m = state.meters[i]
                frac = limits.METER_FRAC_BITS
                meter = [m.tc >> frac, m.tp >> frac] if metered else None
        row = {"table": table,
               "key": None if entry is None else entry_spec(self.cp.program, entry)["key"],
               "packets": c.packets, "bytes": c.bytes}
        if entry is not None and self.cp.program.table(table).kind == "ternary":
            row["priority"] = entry.priority
        if meter is not None:
            row["meter"] = meter
        return row

    def _cmd_send(self, req):
        try:
            frames = [bytes.fromhex(f) for f in req.get("frames", [])]
        except (TypeError, ValueError):
            raise LiveError("frames travel as hex strings.") from None
        times = req.get("times_ns")
        try:
            stamps = [self.clock_ns + t for t in frame_times(self.config, len(frames), times)]
        except (TypeError, ValueError) as exc:
            raise LiveError(f"bad capture times: {exc}") from None
        if self.backend == "model":
            out, meta = process_frames(self.cp.shadow, frames, stamps)
        else:
            sent = [i for i, f in enumerate(frames) if f]
            done = self.cp.device.job([frames[i] for i in sent], [stamps[i] for i in sent])
            out, meta = harness_outputs(frames, done, self.config)
        if stamps:
            self.clock_ns = stamps[-1] + self.interval
        self.frames += len(frames)
        return {"frames": [f.hex() for f in out], "meta": meta}


class LiveServer:
    """Serve a :class:`LivePipeline` on a Unix socket until a ``stop`` request or a signal.

    Parameters
    ----------
    pipeline : LivePipeline
    path : path
        The socket. A stale socket file is replaced; a path where a server answers is refused.
    """

    def __init__(self, pipeline: LivePipeline, path):
        self.pipeline = pipeline
        self.path = str(path)
        if os.path.exists(self.path):
            try:
                request(self.path, {"cmd": "status"}, timeout_s=2)
            except LiveError:
                if not Path(self.path).is_socket():
                    raise LiveError(f"{self.path} exists and is not a socket; choose another "
                                    "--socket path.") from None
                os.unlink(self.path)
            else:
                raise LiveError(f"a server already listens at {self.path}; stop it with "
                                f"'nicsim ma stop --live {self.path}'.")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.bind(self.path)
        except OSError as exc:
            self.sock.close()
            raise LiveError(f"cannot listen at {self.path}: {exc.strerror or exc}.") from None
        self.sock.listen(8)
        self.running = True

    def serve(self):
        """Answer requests until ``stop`` (or SIGTERM/SIGINT); then close everything."""
        def _stop(signum, frame):
            self.running = False
            raise KeyboardInterrupt
        old = {s: signal.signal(s, _stop) for s in (signal.SIGTERM,)}
        try:
            while self.running:
                conn, _ = self.sock.accept()
                with conn:
                    self._serve_one(conn)
        except KeyboardInterrupt:
            pass
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.close()

    def close(self):
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
        self.pipeline.close()

    def _serve_one(self, conn):
        conn.settimeout(READ_TIMEOUT_S)
        try:
            line = _read_line(conn)
        except (OSError, LiveError):
            return  # the client went away or sent garbage without a newline: nothing to answer
        try:
            req = json.loads(line)
            if isinstance(req, dict) and req.get("cmd") == "stop":
                self.running = False
                answer = {"ok": True, "stopped": True}
            else:
                answer = {"ok": True, **self.pipeline.handle(req)}
        except json.JSONDecodeError:
            answer = {"ok": False, "error": "a request is one JSON object on one line."}
        except (LiveError, ProgramError, VerilatorError, RuntimeError) as exc:
            answer = {"ok": False, "error": str(exc)}
        except Exception as exc:  # a server-side failure answers, and the server goes on
            answer = {"ok": False, "error": f"server-side failure: {type(exc).__name__}: "
                                            f"{exc}"}
        try:
            conn.sendall(json.dumps(answer).encode() + b"\n")
        except OSError:
            pass


def _read_line(conn):
    chunks, size = [], 0
    while True:
        chunk = conn.recv(1 << 20)
        if not chunk:
            raise LiveError("connection closed before a full line")
        if b"\n" in chunk:
            chunks.append(chunk[:chunk.index(b"\n")])
            return b"".join(chunks).decode(errors="replace")
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_REQUEST:
            raise LiveError("request too long")


def request(path, req, timeout_s=600):
    """Send one request to the server at ``path``; return its answer or raise LiveError."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
        sock.close()
        raise LiveError(f"no server at {path}; start one with 'nicsim ma serve --program "
                        f"P.toml --socket {path}'.") from None
    except OSError as exc:
        sock.close()
        raise LiveError(f"cannot reach a server at {path}: {exc.strerror or exc}.") from None
    try:
        with sock:
            sock.sendall(json.dumps(req).encode() + b"\n")
            line = _read_line(sock)
    except TimeoutError:
        raise LiveError(f"the server at {path} did not answer within {timeout_s} s.") from None
    except (OSError, LiveError):
        raise LiveError(f"the server at {path} closed the connection without an "
                        "answer.") from None
    try:
        answer = json.loads(line)
    except json.JSONDecodeError:
        raise LiveError(f"the server at {path} answered garbage.") from None
    if not answer.get("ok"):
        raise LiveError(str(answer.get("error", "the server refused the request.")))
    return answer

