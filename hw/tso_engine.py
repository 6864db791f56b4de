"""The TSO/USO engine for ``nicsim rtl run tso``: golden reference and gateware on one contract.

Every frame of the capture is a super-frame sent with the same command: ``--mss N`` (default
1448), ``--udp`` (USO instead of TSO) and ``--fixed-id``, or ``mss``, ``udp``, ``fixed_id`` in
a ``[tso]`` table. Both backends give the segments in order with one record per output frame,
``{"input": i, "segment": k, "segments": n}``, the input frame each segment comes from
(``origin``, for the capture timestamp), and per input frame ``{"segments": n}`` or
``{"dropped": reason}`` (the reasons of :func:`nicsim.hw.ref.tso.tso_segment`).

The gateware's verdicts come from its own result stream (one word per super-frame: reason and
segment count), so the two backends are compared on what each decided.
"""

from __future__ import annotations

from dataclasses import dataclass

from nicsim.rtl.tso import REASONS, REGISTERS

from .engines import EngineRun
from .ref.tso import MAX_MSS, MAX_PAYLOAD, tso_segment

__all__ = ["TsoConfig", "load_config", "run_model", "run_rtl", "encode_command",
           "DEFAULT_MSS"]

#: MSS when none is given: a 1500-byte MTU, IPv4, TCP with timestamps (1500 - 20 - 32).
DEFAULT_MSS = 1448
_KNOWN = ("mss", "udp", "fixed_id")
_REG_READS = tuple(r.offset for r in REGISTERS)


@dataclass(frozen=True)
class TsoConfig:
    """The command every super-frame of a run carries.

    Members
    -------
    mss : int
        Payload bytes per segment (0 to 65535; the engine drops frames for 0 or over 9000).
    udp : bool
        UDP segmentation (USO) instead of TCP.
    fixed_id : bool
        Keep the IPv4 ID of the super-frame in every segment.
    """

    mss: int = DEFAULT_MSS
    udp: bool = False
    fixed_id: bool = False

    @property
    def kind(self) -> str:
        return "udp" if self.udp else "tcp"


def encode_command(mss: int, udp: bool = False, fixed_id: bool = False) -> int:
    """Return the ``user`` bits of a super-frame's first beat (:class:`TsoCommandLayout`)."""
    return mss | int(udp) << 16 | int(fixed_id) << 17


def load_config(section: dict, options: dict) -> TsoConfig:
    """Read the ``[tso]`` table and the command-line options (which win).

    Raises ``ValueError`` with one sentence on a bad value.
    """
    unknown = sorted(set(section) - set(_KNOWN))
    if unknown:
        raise ValueError(f"unknown tso setting(s) {unknown}; use {list(_KNOWN)}")
    values = {**section, **options}
    mss = values.get("mss", DEFAULT_MSS)
    if not isinstance(mss, int) or isinstance(mss, bool) or not 0 <= mss <= 0xFFFF:
        raise ValueError(f"tso mss must be an integer from 0 to 65535, not {mss!r}")
    flags = {}
    for name in ("udp", "fixed_id"):
        value = values.get(name, False)
        if not isinstance(value, bool):
            raise ValueError(f"tso.{name} must be true or false, not {value!r}")
        flags[name] = value
    return TsoConfig(mss, **flags)


def run_model(frames, config: TsoConfig) -> EngineRun:
    """Run a capture through the golden reference :func:`nicsim.hw.ref.tso.tso_segment`."""
    out, out_meta, origin, meta = [], [], [], []
    for index, frame in enumerate(frames):
        result = tso_segment(frame, config.mss, config.kind, config.fixed_id,
                             max_mss=MAX_MSS, max_payload=MAX_PAYLOAD)
        if result.drop_reason is not None:
            meta.append({"dropped": result.drop_reason})
            continue
        count = len(result.frames)
        meta.append({"segments": count})
        for k, segment in enumerate(result.frames):
            out.append(segment)
            out_meta.append({"input": index, "segment": k, "segments": count})
            origin.append(index)
    return EngineRun(out, meta, out_meta, origin)


def run_rtl(frames, config: TsoConfig, *, width=64, idle_pct=0, backpressure_pct=0, seed=1,
            waves=None, return_outcome=False):
    """Run a capture through the gateware on Verilator (C++ harness).

    With ``return_outcome`` the harness outcome (cycles, counters in ``reads``) comes back too,
    as ``(run, outcome)``. Raises ``RuntimeError`` if the gateware's frames and verdicts do not
    add up.
    """
    from .harness import build_harness, run_harness

    # An AXI4-Stream frame has at least one byte: empty records never reach the wire (the
    # reference calls them not_ip, as the gateware does any frame shorter than its ethertype).
    sent = [i for i, f in enumerate(frames) if f]
    build = build_harness("tso", {"width": width}, waves=waves is not None)
    user = encode_command(config.mss, config.udp, config.fixed_id)
    done = run_harness(build, [frames[i] for i in sent], [user] * len(sent), (), _REG_READS,
                       idle_pct=idle_pct, backpressure_pct=backpressure_pct, seed=seed,
                       waves=waves)
    if len(done.results) != len(sent):
        raise RuntimeError(f"tso gateware gave {len(done.results)} verdicts for "
                           f"{len(sent)} frames")
    meta = [{"dropped": "not_ip"} for _ in frames]
    out, out_meta, origin = [], [], []
    outputs = iter(done.frames)
    for index, word in zip(sent, done.results, strict=True):
        reason, count = word & 0xFF, (word >> 8) & 0xFFFFFF
        if reason:
            meta[index] = {"dropped": REASONS[reason] if reason < len(REASONS) else "unknown"}
            continue
        meta[index] = {"segments": count}
        for k in range(count):
            data, flags = next(outputs, (None, None))
            if data is None:
                raise RuntimeError(f"tso gateware sent fewer segments than it reported "
                                   f"(frame {index}, segment {k})")
            if flags != int(k == 0) | int(k == count - 1) << 1:
                raise RuntimeError(f"tso gateware marked segment {k} of {count} of frame "
                                   f"{index} with first/last bits {flags:02b}")
            out.append(bytes(data))
            out_meta.append({"input": index, "segment": k, "segments": count})
            origin.append(index)
    if next(outputs, None) is not None:
        raise RuntimeError("tso gateware sent more segments than it reported")
    run = EngineRun(out, meta, out_meta, origin)
    return (run, done) if return_outcome else run
