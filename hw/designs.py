"""The exported RTL designs: name, Amaranth block and the AXI4-Stream top that wraps it.

Each design is built the same way for Verilator (:mod:`nicsim.hw.verilator`), for FPGA
synthesis (:mod:`nicsim.hw.synth`) and for the ``nicsim rtl`` commands.
"""

import importlib
from dataclasses import dataclass

__all__ = ["Design", "DESIGNS", "elaborate", "design_names"]


@dataclass(frozen=True)
class Design:
    """An exported design.

    Members
    -------
    module : str
        Module of the block, relative to ``nicsim``.
    block : str
        Class name of the block (a ``wiring.Component``).
    result_name : str or None
        Name of its per-frame result stream (``m_axis_<name>_*``), if it has one.
    summary : str
        One line for help texts and tables.
    top : str or None
        ``module:Class`` of an export top that takes the block, for blocks with ports beyond
        the packet streams and the register bus; ``None``: :class:`nicsim.rtl.stream.AxiStreamTop`.
    synth_params : dict or None
        Elaboration parameters that only FPGA synthesis adds (:func:`nicsim.hw.synth.synthesize`),
        by device family (``"ecp5"``, ``"ice40"``): primitives Verilator has no model of, built
        to behave as the default elaboration does.
    """

    module: str
    block: str
    result_name: str | None
    summary: str
    top: str | None = None
    synth_params: dict | None = None


DESIGNS = {
    "checksum-rx": Design("nicsim.rtl.checksum_rx", "ChecksumRx", "csum",
                          "RX checksum verification (IPv4 header, TCP/UDP over IPv4/IPv6)"),
    "checksum-tx": Design("nicsim.rtl.checksum_tx", "ChecksumTx", None,
                          "TX checksum insertion (CHECKSUM_PARTIAL and automatic)"),
    "rss": Design("nicsim.rtl.rss", "RssUnit", "hash",
                  "RSS: Toeplitz hash and indirection table"),
    "lro": Design("nicsim.rtl.lro", "LroEngine", None,
                  "LRO: coalesce in-order TCP segments with Linux GRO's rules",
                  synth_params={"ecp5": {"bram": "dp16kd"}}),
    "tso": Design("nicsim.rtl.tso", "Tso", "tso",
                  "TSO/USO: TCP and UDP super-frames cut into MSS-sized frames",
                  synth_params={"ecp5": {"bram": "dp16kd"}}),
    "match-action": Design("nicsim.rtl.match_action", "MatchAction", "result",
                           "Match-action pipeline: parser, table stages, deparser",
                           synth_params={"ecp5": {"bram": "dp16kd"}}),
    "toe": Design("nicsim.rtl.toe.engine", "ToeEngine", None,
                  "TCP offload engine front end: ARP, ICMP echo, IPv4 checks (64 bit)"),
    "toe-tcp": Design("nicsim.rtl.toe.engine", "ToeTcpEngine", None,
                      "TCP offload engine with 64 sessions, app streams and buffer-memory port",
                      top="nicsim.rtl.toe.top:ToeTcpTop"),
    "passthrough": Design("nicsim.rtl.passthrough", "Passthrough", None,
                          "A stream register slice with a scratch register (flow check)"),
}


def design_names(include_internal=False):
    """Return the names of the user-facing designs."""
    return [n for n in DESIGNS if include_internal or n != "passthrough"]


def elaborate(design, **params):
    """Return the exported top of ``design`` built with ``params``."""
    from nicsim.rtl.stream import AxiStreamTop

    try:
        spec = DESIGNS[design]
    except KeyError:
        raise ValueError(f"Unknown design {design!r}; choose one of "
                         f"{', '.join(design_names())}") from None
    block_cls = getattr(importlib.import_module(spec.module), spec.block)
    if spec.top is not None:
        top_module, top_cls = spec.top.split(":")
        return getattr(importlib.import_module(top_module), top_cls)(block_cls(**params))
    return AxiStreamTop(block_cls(**params), result_name=spec.result_name or "result")
