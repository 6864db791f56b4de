"""The LRO engine for ``nicsim rtl run lro``: golden reference and gateware on one contract.

A capture is one poll: every frame is pushed, then every held flow is flushed (the gateware is
told so by ``user`` bit 0 on the last frame). Both backends give one output frame per merged or
passed frame with the metadata ``{"segs", "gso_size"}``, and the index of the input frame
whose arrival delivered it (``origin``, for the capture timestamp).

Configuration (``[lro]`` table): ``flows`` (1 to 64, default 8), ``max_bytes`` (largest merged
frame after the Ethernet header, default 65535 as Linux), ``max_frame`` (longest frame taken,
default 16384; longer frames are dropped with the reason ``oversize``). The gateware gets
payload regions of the smallest power of two that holds ``max_bytes + 14`` bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from nicsim.rtl.lro import REGISTERS

from .engines import EngineRun
from .ref.lro import DEFAULT_MAX_BYTES, DEFAULT_MAX_FLOWS, LroEngine
from .ref.packet import ETH_HEADER_LEN

__all__ = ["LroConfig", "load_config", "run_model", "run_rtl", "DROP_EMPTY", "DROP_OVERSIZE"]

DROP_EMPTY = "empty"  # a capture record without bytes
DROP_OVERSIZE = "oversize"  # longer than max_frame: the gateware's staging limit
_KNOWN = ("flows", "max_bytes", "max_frame")
_REG_READS = tuple(r.offset for r in REGISTERS)


@dataclass(frozen=True)
class LroConfig:
    """Settings of one LRO run (see the module docstring).

    Members
    -------
    flows : int
    max_bytes : int
    max_frame : int
    """

    flows: int = DEFAULT_MAX_FLOWS
    max_bytes: int = DEFAULT_MAX_BYTES
    max_frame: int = 16384

    @property
    def buffer_bytes(self) -> int:
        """Payload memory per flow context in the gateware."""
        need = max(self.max_bytes + ETH_HEADER_LEN, self.max_frame, 2048)
        return 1 << (need - 1).bit_length()

    def rtl_params(self, width: int) -> dict:
        """Elaboration parameters of :class:`nicsim.rtl.lro.LroEngine`."""
        return {"width": width, "flows": self.flows, "buffer_bytes": self.buffer_bytes,
                "max_bytes": self.max_bytes, "max_frame": self.max_frame}


def load_config(section: dict, options: dict) -> LroConfig:
    """Read the ``[lro]`` table; raise ``ValueError`` with one sentence on a bad value."""
    unknown = sorted(set(section) - set(_KNOWN))
    if unknown:
        raise ValueError(f"unknown lro setting(s) {unknown}; use {list(_KNOWN)}")
    values = {}
    for name, low, high in (("flows", 1, 64), ("max_bytes", 1, 65535),
                            ("max_frame", 64, 65535)):
        if name in section:
            value = section[name]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"lro.{name} must be an integer from {low} to {high}, "
                                 f"not {value!r}")
            values[name] = value
    return LroConfig(**values)


def _drop_reason(frame: bytes, config: LroConfig) -> str | None:
    if not frame:
        return DROP_EMPTY
    if len(frame) > config.max_frame:
        return DROP_OVERSIZE
    return None


def run_model(frames, config: LroConfig) -> EngineRun:
    """Run a capture through the golden reference :class:`nicsim.hw.ref.lro.LroEngine`."""
    engine = LroEngine(max_flows=config.flows, max_bytes=config.max_bytes)
    out, out_meta, origin, meta = [], [], [], []
    for index, frame in enumerate(frames):
        reason = _drop_reason(frame, config)
        meta.append({"dropped": reason} if reason else {})
        if reason:
            continue
        for merged in engine.push(frame):
            out.append(merged.frame)
            out_meta.append({"segs": merged.segs, "gso_size": merged.gso_size})
            origin.append(index)
    for merged in engine.flush():
        out.append(merged.frame)
        out_meta.append({"segs": merged.segs, "gso_size": merged.gso_size})
        origin.append(len(frames) - 1)
    return EngineRun(out, meta, out_meta, origin)


def decode_user(user: int) -> tuple[dict, int]:
    """Split an output frame's ``user`` word into its metadata and the 16-bit input index."""
    segs = user & 0xFFFF
    gso_size = (user >> 16) & 0xFFFF
    return {"segs": segs, "gso_size": gso_size}, (user >> 32) & 0xFFFF


def run_rtl(frames, config: LroConfig, *, width=64, idle_pct=0, backpressure_pct=0, seed=1,
            waves=None, timeout_cycles=0, flush_at_end=True, return_outcome=False):
    """Run a capture through the gateware on Verilator (C++ harness).

    ``timeout_cycles`` is written to the ``TIMEOUT`` register; ``flush_at_end`` marks the last
    frame as the end of the poll. With ``return_outcome`` the harness outcome (cycles, counters)
    comes back too, as ``(run, outcome)``.
    """
    from .harness import build_harness, run_harness

    meta = []
    sent = []
    for index, frame in enumerate(frames):
        reason = _drop_reason(frame, config)
        meta.append({"dropped": reason} if reason == DROP_EMPTY else {})
        if reason != DROP_EMPTY:
            sent.append(index)
    users = [0] * len(sent)
    if sent and flush_at_end:
        users[-1] = 1
    build = build_harness("lro", config.rtl_params(width), waves=waves is not None)
    writes = [(_offset("TIMEOUT"), timeout_cycles)] if timeout_cycles else []
    done = run_harness(build, [frames[i] for i in sent], users, writes, _REG_READS,
                       idle_pct=idle_pct, backpressure_pct=backpressure_pct, seed=seed,
                       waves=waves)
    for index in sent:
        if len(frames[index]) > config.max_frame:
            meta[index] = {"dropped": DROP_OVERSIZE}
    out, out_meta, origin = [], [], []
    position = 0  # index into ``sent`` of the last origin, unwrapped from 16 bits
    for data, user in done.frames:
        record, low = decode_user(user)
        position += (low - position) & 0xFFFF
        out.append(bytes(data))
        out_meta.append(record)
        origin.append(sent[min(position, len(sent) - 1)])
    run = EngineRun(out, meta, out_meta, origin)
    return (run, done) if return_outcome else run


def _offset(name: str) -> int:
    return next(r.offset for r in REGISTERS if r.name == name)
