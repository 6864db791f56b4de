# Ref: R. Neugebauer et al., "Understanding PCIe performance for end host networking",
#      SIGCOMM 2018 ("pcie-bench"), and its model (github.com/pcie-bench/pcie-model).
# Ref: PCI Express Base Specification rev 5.0 (sections cited at each constant).
"""PCIe link: TLP accounting after pcie-bench and a calendar model of the link for SimPy.

Two layers share one set of constants:

* Analytic functions (:func:`raw_bandwidth`, :func:`tlp_bandwidth`, :func:`transfer_cost`,
  :func:`effective_bandwidth`, :func:`window_bandwidth`) give what pcie-bench gives: the payload
  bandwidth of back-to-back DMA transfers once framing, headers, ACK and flow-control DLLPs and
  SKIP ordered sets are paid for.
* :class:`PcieLink` is a *calendar* model of one link: each direction keeps the time it is free
  again and serializes TLPs back to back arithmetically. Its methods schedule a transfer and
  return when it completes; they create no SimPy events, so a caller yields
  ``env.timeout(t - env.now)`` only when it has to wait. Posted and non-posted flow-control
  credits of the root complex and the device's read tags are tracked, and a sender without
  them stalls.

All times are integer picoseconds at the interface; inside, each direction keeps a float clock
so that TLPs shorter than a picosecond-rounding step do not accumulate rounding.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from .units import S

__all__ = [
    "PcieConfig", "PcieDirection", "PcieLink", "TransferCost", "SimulatedBandwidth",
    "raw_bandwidth", "tlp_bandwidth", "request_overhead_bytes", "completion_overhead_bytes",
    "split_payload", "completion_count", "transfer_cost", "effective_bandwidth",
    "window_bandwidth", "simulate_bandwidth",
    "GTS_BY_GEN", "ENCODING_BY_GEN", "PCIE_LATENCY_PS", "RC_PROCESSING_PS",
    "TLP_FRAMING_BYTES", "HEADER_3DW_BYTES", "HEADER_4DW_BYTES", "CPL_HEADER_BYTES",
    "ECRC_BYTES", "DLLP_BYTES", "SKIP_BYTES", "SKIP_INTERVAL_BYTES", "BOUNDARY_BYTES",
    "DATA_CREDIT_BYTES", "MSI_BYTES",
]

# --- Physical layer --------------------------------------------------------------------------
# Transfers per second per lane (PCIe Base Spec rev 5.0 §4.2; pcie-bench model/pcie.py "GTs").
GTS_BY_GEN = {1: 2.5e9, 2: 5.0e9, 3: 8.0e9, 4: 16.0e9, 5: 32.0e9}
# Line encoding: 8b/10b for 2.5 and 5 GT/s, 128b/130b from 8 GT/s (PCIe Base Spec §4.2.1;
# pcie-bench "Gbs").
ENCODING_BY_GEN = {1: 8 / 10, 2: 8 / 10, 3: 128 / 130, 4: 128 / 130, 5: 128 / 130}
LANE_CHOICES = (1, 2, 4, 8, 16)
SIZE_CHOICES = (128, 256, 512, 1024, 2048, 4096)  # MPS and MRRS encodings (Base Spec §7.5.3.4)
# SKIP ordered sets for clock compensation: 4 B every 1538 B on every lane (pcie-bench
# "SKIP_Length", "SKIP_Interval").
SKIP_BYTES = 4
SKIP_INTERVAL_BYTES = 1538

# --- Data link layer ---------------------------------------------------------------------------
# A TLP costs 2 B sequence number + 4 B LCRC + start and end framing = 8 B beyond its header
# (pcie-bench "DLLP_Hdr").
TLP_FRAMING_BYTES = 8
# An ACK or UpdateFC DLLP: 6 B + 2 B framing on the wire (pcie-bench "Ack_Size", "FC_Size").
DLLP_BYTES = 8
# Bytes of link traffic between ACK DLLPs and between UpdateFC DLLPs, by generation, lanes and
# MPS: the spec's Ack latency limits (Base Spec rev 5.0 Tables 3-7..3-9) and UpdateFC
# guidelines (Tables 2-46..2-48), as pcie-bench uses them ("Ack_Limits", "FC_Guide"; the two
# tables agree for x1..x16). 16 and 32 GT/s use the 8 GT/s values, as pcie-bench does.
_UPDATE_INTERVAL_GEN1 = {
    1: (237, 416, 559, 1071, 2095, 4143),
    2: (128, 217, 289, 545, 1057, 2081),
    4: (73, 118, 154, 282, 538, 1050),
    8: (67, 107, 86, 150, 278, 534),
    16: (48, 72, 86, 150, 278, 534),
}
_UPDATE_INTERVAL_GEN2 = {
    1: (288, 467, 610, 1122, 2146, 4194),
    2: (179, 268, 340, 596, 1108, 2132),
    4: (124, 169, 205, 333, 589, 1101),
    8: (118, 158, 137, 201, 329, 585),
    16: (99, 123, 137, 201, 329, 585),
}
_UPDATE_INTERVAL_GEN3 = {
    1: (333, 512, 655, 1167, 2191, 4239),
    2: (224, 313, 385, 641, 1153, 2177),
    4: (169, 214, 250, 378, 634, 1146),
    8: (163, 203, 182, 246, 374, 630),
    16: (144, 168, 182, 246, 374, 630),
}
UPDATE_INTERVAL_BYTES = {1: _UPDATE_INTERVAL_GEN1, 2: _UPDATE_INTERVAL_GEN2,
                         3: _UPDATE_INTERVAL_GEN3, 4: _UPDATE_INTERVAL_GEN3,
                         5: _UPDATE_INTERVAL_GEN3}

# --- Transaction layer -------------------------------------------------------------------------
# Memory request headers: 3 DW with a 32-bit address, 4 DW with a 64-bit address; completion
# header 3 DW; optional ECRC digest 1 DW (Base Spec §2.2.1, §2.2.3; pcie-bench "TLP_MWr_32_Hdr"
# + "TLP_Hdr" = 12, "TLP_MWr_64_Hdr" + "TLP_Hdr" = 16, "TLP_CplD_Hdr" + "TLP_Hdr" = 12,
# "TLP_Dig" = 4).
HEADER_3DW_BYTES = 12
HEADER_4DW_BYTES = 16
CPL_HEADER_BYTES = 12
ECRC_BYTES = 4
# Addresses below 4 GiB must use the 3-DW format (Base Spec §2.2.4.1).
FOUR_GIB = 1 << 32
# Requests must not cross a 4 KiB boundary (Base Spec §2.2.7), so TLPs split there.
BOUNDARY_BYTES = 4096
# One flow-control data credit is 4 DW of payload (Base Spec §2.6.1).
DATA_CREDIT_BYTES = 16
# An MSI-X message is a 1-DW posted memory write (Base Spec §6.1.4; pcie-bench "MSI_SIZE").
MSI_BYTES = 4

# --- Defaults of the timing model ------------------------------------------------------------
PCIE_LATENCY_PS = 500_000  # one-way link latency, the SimBricks default
# Root-complex processing per TLP, a pipelined delay (not an occupancy): ASSUMPTION, a few
# cycles of a ~1 GHz root-complex pipeline; host memory access time belongs to the memory model.
RC_PROCESSING_PS = 10_000
# Posted header / data and non-posted header credits the root complex advertises: the largest
# finite values PCIe 4.0 scaled flow control allows (scale 16: 127 x 16 headers, 2047 x 16 data
# credits; Base Spec rev 5.0 §3.4.2). Enough that Gen5 x16 at 500 ns is not credit-limited for
# transfers of 8 B and more.
POSTED_HEADER_CREDITS = 127 * 16
POSTED_DATA_CREDITS = 2047 * 16
NONPOSTED_HEADER_CREDITS = 127 * 16
# Outstanding non-posted requests of the device: 10-bit tags give 768 (tags 256..1023; Base Spec
# rev 4.0 §2.2.6.2; e.g. Intel R-Tile PCIe hard IP user guide, "Tag Allocation"). 5-bit tags
# (the pre-2.0 default) give 32, 8-bit extended tags 256.
READ_TAGS = 768

OPS = ("read", "write")


def _check_choice(name, value, choices):
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"pcie.{name} must be one of {', '.join(map(str, choices))}, "
                         f"not {value!r}.")


def _check_int(name, value, low, what):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"pcie.{name} must be {what}, not {value!r}.")


@dataclass(frozen=True)
class PcieConfig:
    """Configuration of one PCIe link and its two ends.

    Parameters
    ----------
    gen : int
        PCIe generation, 1 to 5.
    lanes : int
        Link width: 1, 2, 4, 8 or 16.
    mps : int
        Maximum payload size in bytes, 128 to 4096 (power of two).
    mrrs : int
        Maximum read request size in bytes, 128 to 4096 (power of two).
    rcb : int
        Read completion boundary of the root complex in bytes, 64 or 128.
    rcb_chunks : bool
        Completions are cut at every RCB boundary (seen on older chipsets, pcie-bench's
        ``rcb_chunks``) instead of at MPS.
    addr64 : bool
        Requests carry 4-DW headers (64-bit addresses) as in pcie-bench's default. When false,
        requests to addresses below 4 GiB use 3-DW headers; above 4 GiB a request needs 4 DW
        anyway.
    ecrc : bool
        Every TLP carries an end-to-end CRC (4 B).
    latency_ps : int
        One-way latency of the link in picoseconds (SimBricks default 500 ns).
    ack_interval_bytes, fc_update_interval_bytes : int or None
        Bytes of link traffic between ACK DLLPs and between UpdateFC DLLPs; ``None`` takes the
        spec's value for the generation, width and MPS as pcie-bench does.
    posted_header_credits, posted_data_credits, nonposted_header_credits : int
        Flow-control credits the root complex advertises to the device; data credits are
        16-byte units.
    read_tags : int
        Non-posted requests the device may have outstanding.
    rc_processing_ps : int
        Root-complex processing per TLP the device sends (a delay, not a throughput limit).
    """

    gen: int = 3
    lanes: int = 8
    mps: int = 256
    mrrs: int = 512
    rcb: int = 64
    rcb_chunks: bool = False
    addr64: bool = True
    ecrc: bool = False
    latency_ps: int = PCIE_LATENCY_PS
    ack_interval_bytes: int | None = None
    fc_update_interval_bytes: int | None = None
    posted_header_credits: int = POSTED_HEADER_CREDITS
    posted_data_credits: int = POSTED_DATA_CREDITS
    nonposted_header_credits: int = NONPOSTED_HEADER_CREDITS
    read_tags: int = READ_TAGS
    rc_processing_ps: int = RC_PROCESSING_PS

    def __post_init__(self):
        _check_choice("gen", self.gen, tuple(GTS_BY_GEN))
        _check_choice("lanes", self.lanes, LANE_CHOICES)
        _check_choice("mps", self.mps, SIZE_CHOICES)
        _check_choice("mrrs", self.mrrs, SIZE_CHOICES)
        _check_choice("rcb", self.rcb, (64, 128))
        for name in ("rcb_chunks", "addr64", "ecrc"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"pcie.{name} must be true or false, "
                                 f"not {getattr(self, name)!r}.")
        _check_int("latency_ps", self.latency_ps, 0, "a whole number of picoseconds >= 0")
        for name in ("ack_interval_bytes", "fc_update_interval_bytes"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 64, "a whole number of bytes >= 64 "
                           "(or unset for the spec's value)")
        _check_int("posted_header_credits", self.posted_header_credits, 1,
                   "at least 1 header credit")
        need = self.mps // DATA_CREDIT_BYTES
        _check_int("posted_data_credits", self.posted_data_credits, need,
                   f"at least mps/16 = {need} (one maximum-size write)")
        _check_int("nonposted_header_credits", self.nonposted_header_credits, 1,
                   "at least 1 header credit")
        _check_int("read_tags", self.read_tags, 1, "at least 1 outstanding read")
        _check_int("rc_processing_ps", self.rc_processing_ps, 0,
                   "a whole number of picoseconds >= 0")

    @property
    def ack_interval(self):
        """Bytes between ACK DLLPs: the configured value or the spec's (pcie-bench)."""
        if self.ack_interval_bytes is not None:
            return self.ack_interval_bytes
        return UPDATE_INTERVAL_BYTES[self.gen][self.lanes][SIZE_CHOICES.index(self.mps)]

    @property
    def fc_update_interval(self):
        """Bytes between UpdateFC DLLPs: the configured value or the spec's (pcie-bench)."""
        if self.fc_update_interval_bytes is not None:
            return self.fc_update_interval_bytes
        return UPDATE_INTERVAL_BYTES[self.gen][self.lanes][SIZE_CHOICES.index(self.mps)]


# --- Analytic accounting -----------------------------------------------------------------------

def raw_bandwidth(config):
    """Return the link's raw bandwidth per direction in bytes/s (GT/s x encoding x lanes)."""
    return GTS_BY_GEN[config.gen] * ENCODING_BY_GEN[config.gen] * config.lanes / 8


def tlp_bandwidth(config):
    """Return the bandwidth per direction left for TLPs in bytes/s.

    ``raw x (1 - 8/ack_interval - 8/fc_update_interval - 4/1538)``: ACK and UpdateFC DLLPs at
    the spec's intervals and SKIP ordered sets, as in pcie-bench.
    """
    overhead = (DLLP_BYTES / config.ack_interval + DLLP_BYTES / config.fc_update_interval
                + SKIP_BYTES / SKIP_INTERVAL_BYTES)
    return raw_bandwidth(config) * (1 - overhead)


def request_overhead_bytes(config, addr=0):
    """Return the wire bytes of a memory request TLP beyond its payload.

    Framing, sequence number and LCRC (8 B), a 3-DW (32-bit address) or 4-DW header, and ECRC
    if enabled: 24 B for a 64-bit address, 20 B for a 32-bit one.
    """
    header = HEADER_3DW_BYTES if not config.addr64 and addr < FOUR_GIB else HEADER_4DW_BYTES
    return TLP_FRAMING_BYTES + header + (ECRC_BYTES if config.ecrc else 0)


def completion_overhead_bytes(config):
    """Return the wire bytes of a completion TLP beyond its data (20 B, 24 B with ECRC)."""
    return TLP_FRAMING_BYTES + CPL_HEADER_BYTES + (ECRC_BYTES if config.ecrc else 0)


def split_payload(addr, size, max_bytes):
    """Return the payload sizes of the TLPs that carry ``size`` bytes from ``addr``.

    Each TLP carries at most ``max_bytes`` (MPS for writes, MRRS for read requests) and none
    crosses a 4 KiB boundary.
    """
    sizes = []
    end = addr + size
    while addr < end:
        n = min(max_bytes, end - addr, BOUNDARY_BYTES - (addr & (BOUNDARY_BYTES - 1)))
        sizes.append(n)
        addr += n
    return sizes


def completion_count(config, addr, size):
    """Return the completions that answer one read request of ``size`` bytes at ``addr``.

    Completions are at most MPS and a split happens only at RCB boundaries, so a request that
    starts ``o`` bytes past an RCB boundary needs ``ceil((size + o) / MPS)`` of them (one if it
    fits in MPS). With ``rcb_chunks`` they are cut at every RCB boundary.
    """
    offset = addr & (config.rcb - 1)
    if config.rcb_chunks:
        return -(-(size + offset) // config.rcb)
    if size <= config.mps:
        return 1
    return -(-(size + offset) // config.mps)


class TransferCost(NamedTuple):
    """TLPs and wire bytes one device-initiated DMA transfer puts on each direction."""

    up_tlps: int
    up_wire_bytes: int
    down_tlps: int
    down_wire_bytes: int
    payload_bytes: int


def _check_op(op, size):
    if op not in OPS:
        raise ValueError(f"op must be read or write, not {op!r}.")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a whole number of bytes >= 1, not {size!r}.")


def transfer_cost(config, op, size, addr=0):
    """Return the :class:`TransferCost` of one DMA ``op`` ("read" or "write") of ``size`` bytes.

    A write is posted TLPs upstream, split at MPS and 4 KiB boundaries. A read is requests
    upstream, split at MRRS and 4 KiB boundaries, and completions downstream (see
    :func:`completion_count`). For aligned transfers this is pcie-bench's accounting; pcie-bench
    counts ``ceil(size / MPS)`` completions, which is the same unless MRRS < MPS.
    """
    _check_op(op, size)
    if op == "write":
        tlps = split_payload(addr, size, config.mps)
        wire = size + sum(request_overhead_bytes(config, a)
                          for a in _starts(addr, tlps))
        return TransferCost(len(tlps), wire, 0, 0, size)
    requests = split_payload(addr, size, config.mrrs)
    starts = list(_starts(addr, requests))
    up_wire = sum(request_overhead_bytes(config, a) for a in starts)
    cpls = sum(completion_count(config, a, n) for a, n in zip(starts, requests, strict=True))
    down_wire = size + cpls * completion_overhead_bytes(config)
    return TransferCost(len(requests), up_wire, cpls, down_wire, size)


def _starts(addr, sizes):
    for n in sizes:
        yield addr
        addr += n


def effective_bandwidth(config, op, size, addr=0):
    """Return the payload bytes/s of back-to-back DMA transfers of ``size`` bytes (pcie-bench).

    Transfers are device-initiated: writes use the upstream direction only; reads send requests
    upstream and completions downstream, and the busier direction sets the rate. Latency,
    credits and tags are not considered here (see :func:`window_bandwidth`).
    """
    cost = transfer_cost(config, op, size, addr)
    busiest = max(cost.up_wire_bytes, cost.down_wire_bytes)
    return tlp_bandwidth(config) * size / busiest


def window_bandwidth(config, op, size, addr=0):
    """Return the payload bytes/s that credits and tags allow, and what binds.

    Every posted TLP holds its header and data credits for its serialization, a latency to the
    root complex, the root complex's processing and a latency for the UpdateFC DLLP to come
    back; a read holds a non-posted header credit likewise and a tag until its last completion
    is at the device. By Little's law a window of ``W`` credits held ``h`` seconds each allows
    ``W / h`` per second. Returns ``(bytes_per_s, name)``, ``name`` naming the binding window
    ("posted header credits", "posted data credits", "non-posted header credits", "read tags").
    """
    _check_op(op, size)
    bw = tlp_bandwidth(config)
    latency_s = config.latency_ps / S
    credit_return_s = 2 * latency_s + config.rc_processing_ps / S
    limits = []
    if op == "write":
        tlps = split_payload(addr, size, config.mps)
        hold = [credit_return_s + (n + request_overhead_bytes(config, a)) / bw
                for a, n in zip(_starts(addr, tlps), tlps, strict=True)]
        data = [-(-n // DATA_CREDIT_BYTES) for n in tlps]
        limits.append((config.posted_header_credits / sum(hold), "posted header credits"))
        limits.append((config.posted_data_credits / sum(d * h for d, h in zip(data, hold,
                                                                                strict=True)),
                       "posted data credits"))
    else:
        requests = split_payload(addr, size, config.mrrs)
        starts = list(_starts(addr, requests))
        req_s = [request_overhead_bytes(config, a) / bw for a in starts]
        cpl_s = [(n + completion_count(config, a, n) * completion_overhead_bytes(config)) / bw
                 for a, n in zip(starts, requests, strict=True)]
        limits.append((config.nonposted_header_credits / sum(r + credit_return_s for r in req_s),
                       "non-posted header credits"))
        limits.append((config.read_tags / sum(r + c + credit_return_s
                                              for r, c in zip(req_s, cpl_s, strict=True)),
                       "read tags"))
    rate, name = min(limits)
    return rate * size, name


# --- The calendar model ----------------------------------------------------------------------

class PcieDirection:
    """One direction of a link: when it is free again, and what it carried.

    Members
    -------
    name : str
        "up" (device to host) or "down" (host to device).
    free_at : float
        Picoseconds at which the last scheduled TLP has left the sender.
    ps_per_byte : float
        Serialization time of one byte at the TLP-layer bandwidth.
    tlps, wire_bytes, payload_bytes : int
        TLPs sent, their bytes on the wire (headers and framing included) and their payload.
    busy_ps : float
        Time spent serializing TLPs.
    credit_stalls, credit_stall_ps : int, float
        TLPs that waited for flow-control credits, and the total wait.
    tag_stalls, tag_stall_ps : int, float
        Read requests that waited for a free tag, and the total wait (upstream only).
    """

    __slots__ = ("name", "free_at", "ps_per_byte", "tlps", "wire_bytes", "payload_bytes",
                 "busy_ps", "credit_stalls", "credit_stall_ps", "tag_stalls", "tag_stall_ps")

    def __init__(self, name, ps_per_byte, start_ps=0):
        self.name = name
        self.free_at = float(start_ps)
        self.ps_per_byte = ps_per_byte
        self.tlps = 0
        self.wire_bytes = 0
        self.payload_bytes = 0
        self.busy_ps = 0.0
        self.credit_stalls = 0
        self.credit_stall_ps = 0.0
        self.tag_stalls = 0
        self.tag_stall_ps = 0.0

    def __repr__(self):
        return (f"PcieDirection({self.name}, {self.tlps} TLPs, {self.wire_bytes} B, "
                f"free_at={self.free_at:.0f} ps)")


class PcieLink:
    """A PCIe link between a device and the root complex, as a calendar.

    TLPs in one direction are sent in the order of the calls, back to back at the TLP-layer
    bandwidth; a TLP that must wait (for its ready time, credits or a tag) holds back the TLPs
    of later calls in that direction, as one in-order DMA queue would. A ``ready_ps`` earlier
    than ``env.now`` counts as ``env.now``. Sizes are whole bytes >= 1.

    Parameters
    ----------
    env : simpy.Environment
        The simulation; only ``env.now`` is read.
    config : PcieConfig, optional
        The link; defaults to Gen3 x8 with pcie-bench's defaults.

    Members
    -------
    up, down : PcieDirection
        Device to host, host to device.
    dma_writes, dma_reads, mmio_writes, mmio_reads, msis : int
        Calls of each kind.
    """

    def __init__(self, env, config=None):
        self.env = env
        self.config = config = config if config is not None else PcieConfig()
        ps_per_byte = S / tlp_bandwidth(config)
        self.start_ps = env.now
        self.up = PcieDirection("up", ps_per_byte, env.now)
        self.down = PcieDirection("down", ps_per_byte, env.now)
        self.dma_writes = self.dma_reads = self.mmio_writes = self.mmio_reads = self.msis = 0
        ecrc = ECRC_BYTES if config.ecrc else 0
        self._hdr64 = TLP_FRAMING_BYTES + HEADER_4DW_BYTES + ecrc
        # Header for addresses below 4 GiB.
        self._hdr_low = TLP_FRAMING_BYTES + ecrc + (HEADER_4DW_BYTES if config.addr64
                                                    else HEADER_3DW_BYTES)
        self._cpl = completion_overhead_bytes(config)
        self._latency = config.latency_ps
        # A credit comes back when the root complex has processed the TLP and an UpdateFC
        # DLLP has crossed the link: 2 latencies + processing after the TLP's last byte.
        self._credit_return = 2 * config.latency_ps + config.rc_processing_ps
        self._proc = config.rc_processing_ps
        self._ph_free = config.posted_header_credits
        self._pd_free = config.posted_data_credits
        self._posted = deque()  # (release_ps, data credits) per TLP in flight, release order
        self._nph_free = config.nonposted_header_credits
        self._nonposted = deque()  # release_ps per read request in flight
        self._tags = []  # heap of tag release times, at most read_tags long
        self._max_tags = config.read_tags
        self._mps = config.mps

    # -- posted writes upstream --

    def _posted_up(self, addr, size, ready_ps):
        """Schedule posted writes upstream; return when the last TLP left (float ps)."""
        up = self.up
        now = self.env.now
        t = up.free_at
        if ready_ps is None:
            ready_ps = now
        if ready_ps > t:
            t = ready_ps
        posted = self._posted
        ph = self._ph_free
        pd = self._pd_free
        hold = self._credit_return
        if 0 < size <= self._mps and (addr & (BOUNDARY_BYTES - 1)) + size <= BOUNDARY_BYTES:
            # One TLP (the common case on the per-packet path): the loop below, unrolled.
            need = (size + DATA_CREDIT_BYTES - 1) >> 4
            if ph < 1 or pd < need or len(posted) > 1024:
                # Credits come back lazily: only when short of them (or to bound the queue).
                while posted and posted[0][0] <= t:
                    pd += posted.popleft()[1]
                    ph += 1
            if ph >= 1 and pd >= need:
                wire = size + (self._hdr_low if addr < FOUR_GIB else self._hdr64)
                busy = wire * up.ps_per_byte
                t += busy
                posted.append((t + hold, need))
                self._ph_free = ph - 1
                self._pd_free = pd - need
                up.free_at = t
                up.tlps += 1
                up.wire_bytes += wire
                up.payload_bytes += size
                up.busy_ps += busy
                return t
        mps = self.config.mps
        ppb = up.ps_per_byte
        end = addr + size
        overhead = 0
        tlps = 0
        start = t
        while addr < end:
            n = end - addr
            room = BOUNDARY_BYTES - (addr & (BOUNDARY_BYTES - 1))
            if n > room:
                n = room
            if n > mps:
                n = mps
            need = (n + DATA_CREDIT_BYTES - 1) >> 4
            while posted and posted[0][0] <= t:
                pd += posted.popleft()[1]
                ph += 1
            if ph < 1 or pd < need:
                wait_from = t
                while ph < 1 or pd < need:
                    t, credits = posted.popleft()
                    pd += credits
                    ph += 1
                up.credit_stalls += 1
                up.credit_stall_ps += t - wait_from
            ph -= 1
            pd -= need
            hdr = self._hdr_low if addr < FOUR_GIB else self._hdr64
            overhead += hdr
            t += (n + hdr) * ppb
            posted.append((t + hold, need))
            tlps += 1
            addr += n
        self._ph_free = ph
        self._pd_free = pd
        up.free_at = t
        up.tlps += tlps
        up.wire_bytes += size + overhead
        up.payload_bytes += size
        up.busy_ps += (size + overhead) * ppb
        return t if tlps else start

    def dma_write(self, addr, size, ready_ps=None):
        """Write ``size`` bytes from the device to host memory at ``addr`` (posted).

        The TLPs start no earlier than ``ready_ps`` (default ``env.now``), after earlier
        upstream traffic and once the root complex has posted credits for them.

        Returns
        -------
        int
            Picoseconds at which the last byte is in host memory: serialization, latency and
            root-complex processing.
        """
        if size < 1:
            raise ValueError(f"size must be at least 1 byte, not {size!r}.")
        self.dma_writes += 1
        t = self._posted_up(addr, size, ready_ps)
        return math.ceil(t + self._latency + self._proc)

    def dma_write_pair(self, addr, size, addr2, size2, ready_ps=None):
        """Two posted writes back to back (a frame and its completion): as two
        :meth:`dma_write` calls, in one. Return both landing times."""
        if size < 1 or size2 < 1:
            raise ValueError(f"sizes must be at least 1 byte, not {size!r} and {size2!r}.")
        self.dma_writes += 2
        after = self._latency + self._proc
        up = self.up
        t = up.free_at
        if ready_ps is None:
            ready_ps = self.env.now
        if ready_ps > t:
            t = ready_ps
        posted = self._posted
        ph = self._ph_free
        pd = self._pd_free
        need = (size + DATA_CREDIT_BYTES - 1) >> 4
        need2 = (size2 + DATA_CREDIT_BYTES - 1) >> 4
        if (size <= self._mps and size2 <= self._mps and (addr & 4095) + size <= 4096
                and (addr2 & 4095) + size2 <= 4096 and ph >= 2 and pd >= need + need2
                and len(posted) < 1024):
            # Two single-TLP writes with credits in hand (the per-frame case), inlined.
            ppb = up.ps_per_byte
            wire = size + (self._hdr_low if addr < FOUR_GIB else self._hdr64)
            wire2 = size2 + (self._hdr_low if addr2 < FOUR_GIB else self._hdr64)
            busy = wire * ppb
            busy2 = wire2 * ppb
            t1 = t + busy
            t2 = t1 + busy2
            hold = self._credit_return
            posted.append((t1 + hold, need))
            posted.append((t2 + hold, need2))
            self._ph_free = ph - 2
            self._pd_free = pd - need - need2
            up.free_at = t2
            up.tlps += 2
            up.wire_bytes += wire + wire2
            up.payload_bytes += size + size2
            up.busy_ps += busy + busy2
            return math.ceil(t1 + after), math.ceil(t2 + after)
        t = self._posted_up(addr, size, ready_ps)
        t2 = self._posted_up(addr2, size2, ready_ps)
        return math.ceil(t + after), math.ceil(t2 + after)

    def msi(self, addr, ready_ps=None):
        """Send an MSI-X message: a 4-byte posted write upstream to ``addr``.

        Returns
        -------
        int
            Picoseconds at which the root complex has the message (delivery to a core is the
            host model's business).
        """
        self.msis += 1
        t = self._posted_up(addr, MSI_BYTES, ready_ps)
        return math.ceil(t + self._latency + self._proc)

    # -- device-initiated reads --

    def dma_read(self, addr, size, ready_ps=None):
        """Read ``size`` bytes of host memory at ``addr`` into the device.

        Requests go upstream (split at MRRS and 4 KiB), each once a tag and a non-posted
        header credit are free; the root complex answers each with completions downstream.
        A tag is free again when its request's last completion reached the device.

        Returns
        -------
        int
            Picoseconds at which the last completion byte reached the device.
        """
        if size < 1:
            raise ValueError(f"size must be at least 1 byte, not {size!r}.")
        self.dma_reads += 1
        up = self.up
        down = self.down
        now = self.env.now
        t = up.free_at
        if ready_ps is None:
            ready_ps = now
        if ready_ps > t:
            t = ready_ps
        config = self.config
        mrrs = config.mrrs
        ppb = up.ps_per_byte
        dppb = down.ps_per_byte
        latency = self._latency
        proc = self._proc
        np_return = self._credit_return
        nonposted = self._nonposted
        nph = self._nph_free
        tags = self._tags
        max_tags = self._max_tags
        cpl_hdr = self._cpl
        rcb_mask = config.rcb - 1
        mps = config.mps
        chunk = config.rcb if config.rcb_chunks else 0
        down_t = down.free_at
        end = addr + size
        req_wire = 0
        cpl_wire = 0
        requests = 0
        cpls = 0
        done = t
        while addr < end:
            n = end - addr
            room = BOUNDARY_BYTES - (addr & (BOUNDARY_BYTES - 1))
            if n > room:
                n = room
            if n > mrrs:
                n = mrrs
            if len(tags) >= max_tags and tags[0] > t:
                up.tag_stalls += 1
                up.tag_stall_ps += tags[0] - t
                t = tags[0]
            while nonposted and nonposted[0] <= t:
                nonposted.popleft()
                nph += 1
            if nph < 1:
                released = nonposted.popleft()
                up.credit_stalls += 1
                up.credit_stall_ps += released - t
                t = released
                nph += 1
            nph -= 1
            hdr = self._hdr_low if addr < FOUR_GIB else self._hdr64
            req_wire += hdr
            t += hdr * ppb
            nonposted.append(t + np_return)
            at_rc = t + latency + proc
            if chunk:
                count = (n + (addr & rcb_mask) + chunk - 1) // chunk
            elif n <= mps:
                count = 1
            else:
                count = (n + (addr & rcb_mask) + mps - 1) // mps
            wire = n + count * cpl_hdr
            if at_rc > down_t:
                down_t = at_rc
            down_t += wire * dppb
            done = down_t + latency
            if len(tags) >= max_tags:
                heapq.heapreplace(tags, done)
            else:
                heapq.heappush(tags, done)
            cpl_wire += wire
            cpls += count
            requests += 1
            addr += n
        self._nph_free = nph
        up.free_at = t
        up.tlps += requests
        up.wire_bytes += req_wire
        up.busy_ps += req_wire * ppb
        down.free_at = down_t
        down.tlps += cpls
        down.wire_bytes += cpl_wire
        down.payload_bytes += size
        down.busy_ps += cpl_wire * dppb
        return math.ceil(done)

    # -- host-initiated MMIO --

    def mmio_write(self, addr, size, ready_ps=None):
        """Write ``size`` bytes from the host to device registers at ``addr`` (posted).

        The device is taken to advertise enough credits (no stalls downstream).

        Returns
        -------
        int
            Picoseconds at which the last byte reached the device.
        """
        if size < 1:
            raise ValueError(f"size must be at least 1 byte, not {size!r}.")
        self.mmio_writes += 1
        down = self.down
        now = self.env.now
        t = down.free_at
        if ready_ps is None or ready_ps < now:
            ready_ps = now
        if ready_ps > t:
            t = ready_ps
        mps = self.config.mps
        end = addr + size
        overhead = 0
        tlps = 0
        while addr < end:
            n = end - addr
            room = BOUNDARY_BYTES - (addr & (BOUNDARY_BYTES - 1))
            if n > room:
                n = room
            if n > mps:
                n = mps
            overhead += self._hdr_low if addr < FOUR_GIB else self._hdr64
            tlps += 1
            addr += n
        wire = size + overhead
        t += wire * down.ps_per_byte
        down.free_at = t
        down.tlps += tlps
        down.wire_bytes += wire
        down.payload_bytes += size
        down.busy_ps += wire * down.ps_per_byte
        return math.ceil(t + self._latency)

    def mmio_read(self, addr, size, ready_ps=None):
        """Read ``size`` bytes of device registers at ``addr`` from the host (non-posted).

        The request goes downstream, the device answers at once, and the completion comes
        upstream behind earlier upstream traffic: a round trip of two latencies plus the
        serialization of request and completion. The host is not limited by tags here and
        completions need no credits (receivers advertise infinite completion credits, Base
        Spec §2.6.1).

        Returns
        -------
        int
            Picoseconds at which the data is back at the host.
        """
        if size < 1:
            raise ValueError(f"size must be at least 1 byte, not {size!r}.")
        self.mmio_reads += 1
        down = self.down
        up = self.up
        now = self.env.now
        t = down.free_at
        if ready_ps is None or ready_ps < now:
            ready_ps = now
        if ready_ps > t:
            t = ready_ps
        hdr = self._hdr_low if addr < FOUR_GIB else self._hdr64
        t += hdr * down.ps_per_byte
        down.free_at = t
        down.tlps += 1
        down.wire_bytes += hdr
        down.busy_ps += hdr * down.ps_per_byte
        at_device = t + self._latency
        count = completion_count(self.config, addr, size)
        wire = size + count * self._cpl
        t = up.free_at
        if at_device > t:
            t = at_device
        t += wire * up.ps_per_byte
        up.free_at = t
        up.tlps += count
        up.wire_bytes += wire
        up.payload_bytes += size
        up.busy_ps += wire * up.ps_per_byte
        return math.ceil(t + self._latency)

    # -- statistics --

    def restart_counters(self):
        """Zero the counters and start the utilisation window now (a measurement starts);
        what is scheduled stays scheduled."""
        now = self.env.now
        self.start_ps = now
        for direction in (self.up, self.down):
            direction.tlps = direction.wire_bytes = direction.payload_bytes = 0
            direction.credit_stalls = direction.tag_stalls = 0
            direction.credit_stall_ps = direction.tag_stall_ps = 0.0
            direction.busy_ps = max(0.0, direction.free_at - now)
        self.dma_writes = self.dma_reads = self.mmio_writes = self.mmio_reads = self.msis = 0

    def utilisation(self, now_ps=None):
        """Return the busy share of each direction since the link was made, 0 to 1.

        Parameters
        ----------
        now_ps : int, optional
            End of the interval (default ``env.now``). Serialization scheduled past it is not
            counted.
        """
        now = self.env.now if now_ps is None else now_ps
        elapsed = now - self.start_ps
        result = {}
        for direction in (self.up, self.down):
            # Over the span the direction has work scheduled in: when traffic is queued past
            # ``now`` (a backlog, or stalls for credits), the span reaches its end.
            span = max(elapsed, direction.free_at - self.start_ps)
            result[direction.name] = min(1.0, direction.busy_ps / span) if span > 0 else 0.0
        return result

    def __repr__(self):
        c = self.config
        return f"PcieLink(gen{c.gen} x{c.lanes}, {self.up!r}, {self.down!r})"


# --- Saturating the model ----------------------------------------------------------------------

class SimulatedBandwidth(NamedTuple):
    """Result of :func:`simulate_bandwidth`."""

    bytes_per_s: float  # payload rate between first_done_ps and last_done_ps
    transfers: int
    first_done_ps: int  # completion of the middle transfer, where the measurement starts
    last_done_ps: int  # completion of the last transfer
    link: PcieLink


def simulate_bandwidth(config, op, size, transfers=10_000):
    """Move ``transfers`` back-to-back DMA transfers through a :class:`PcieLink` in SimPy.

    A SimPy process issues transfer ``i`` as soon as the upstream direction can take it (its
    requests or writes are queued no further ahead than the link), each at its own 4 KiB
    aligned address. The bandwidth comes from the completion times of the second half of the
    transfers, in steady state: neither the pipeline's fill time (one latency) nor the start,
    when all credits and tags are free, counts.

    Returns
    -------
    SimulatedBandwidth
    """
    import simpy

    _check_op(op, size)
    if transfers < 4:
        raise ValueError(f"transfers must be at least 4, not {transfers!r}.")
    env = simpy.Environment()
    link = PcieLink(env, config)
    issue = link.dma_write if op == "write" else link.dma_read
    stride = -(-size // BOUNDARY_BYTES) * BOUNDARY_BYTES
    window = 1 << 30
    done = []

    def saturate():
        up = link.up
        for i in range(transfers):
            done.append(issue((i * stride) % window, size))
            wait = int(up.free_at) - env.now
            if wait > 0:
                yield env.timeout(wait)

    env.process(saturate())
    env.run()
    # Least-squares time per transfer over the second half: when credits or tags bind, the
    # transfers complete in bursts, and a plain first-to-last quotient would depend on where
    # in a burst the two ends fall.
    tail = done[transfers // 2:]
    mean_x = (len(tail) - 1) / 2
    mean_y = sum(tail) / len(tail)
    sxy = sum((i - mean_x) * (y - mean_y) for i, y in enumerate(tail))
    sxx = sum((i - mean_x) ** 2 for i in range(len(tail)))
    rate = size * S * sxx / sxy if sxy > 0 else math.inf
    return SimulatedBandwidth(rate, transfers, tail[0], tail[-1], link)
