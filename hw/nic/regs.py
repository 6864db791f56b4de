"""Register map of one PCI function of the NIC (the physical function and each SR-IOV virtual
function have their own copy in their own BAR).

One table, :data:`REGISTERS`, for the function-wide registers and one, :data:`QUEUE_REGISTERS`,
for the block every transmit and receive queue has; the model backend decodes accesses with
them, drivers take offsets from them and ``nicsim nic regs`` prints them. Queue blocks sit at
``TXQ_BASE + QUEUE_STRIDE * n`` and ``RXQ_BASE + QUEUE_STRIDE * n``; each queue owns one
completion queue, configured in its block.
"""

from __future__ import annotations

from nicsim.rtl.regs import Register, offset_of

__all__ = [
    "REGISTERS", "QUEUE_REGISTERS", "TXQ_BASE", "RXQ_BASE", "QUEUE_STRIDE", "MAX_QUEUES",
    "IRQ_BASE", "IRQ_STRIDE", "MAX_VECTORS", "NIC_ID", "NIC_VERSION", "Ctrl", "Feature",
    "QueueCtrl", "VECTOR_ARMED", "MAX_RING_LOG2", "reg", "txq_reg", "rxq_reg", "irq_reg",
    "COUNTERS", "IRQ_REGISTERS",
]

NIC_ID = 0x4E494353  # "NICS"
NIC_VERSION = 0x0001_0000
TXQ_BASE = 0x1000
RXQ_BASE = 0x2000
QUEUE_STRIDE = 0x40
MAX_QUEUES = 64
IRQ_BASE = 0x0C00  # after the 512-entry RSS table at 0x400
IRQ_STRIDE = 0x10
MAX_VECTORS = 64
MAX_RING_LOG2 = 15  # 32768 entries
VECTOR_ARMED = 1 << 31


class Feature:
    """Bits of ``FEATURES``: offloads this NIC instance has."""

    RX_CSUM = 1 << 0
    TX_CSUM = 1 << 1
    RSS = 1 << 2
    TSO = 1 << 3
    USO = 1 << 4
    LRO = 1 << 5
    MATCH_ACTION = 1 << 6
    TOE = 1 << 7


class Ctrl:
    """Bits of ``CTRL``: what the driver turned on (a subset of ``FEATURES``, plus enables)."""

    RX_ENABLE = 1 << 0
    TX_ENABLE = 1 << 1
    RX_CSUM = 1 << 2
    RSS = 1 << 3
    LRO = 1 << 4
    PROMISC = 1 << 8
    BROADCAST = 1 << 9


class QueueCtrl:
    """Bits of a queue block's ``CTRL``."""

    ENABLE = 1 << 0


COUNTERS = (
    "rx_frames", "rx_bytes", "tx_frames", "tx_bytes", "rx_no_descriptor", "rx_fifo_full",
    "rx_cq_full",
    "rx_not_for_us", "rx_queue_disabled", "rx_truncated", "tx_bad_descriptor",
    "tx_dma_error", "rx_dma_error", "mmio_errors",
)

REGISTERS = (
    Register("ID", 0x000, 1, "ro", f"{NIC_ID:#010x} (\"NICS\")"),
    Register("VERSION", 0x004, 1, "ro", "major << 16 | minor"),
    Register("FEATURES", 0x008, 1, "ro", "Feature bits of this instance"),
    Register("CTRL", 0x00C, 1, "rw", "Ctrl bits; a bit whose feature is absent is an error"),
    Register("NUM_TXQ", 0x010, 1, "ro", "transmit queues of this function"),
    Register("NUM_RXQ", 0x014, 1, "ro", "receive queues of this function"),
    Register("NUM_VECTORS", 0x018, 1, "ro", "MSI-X vectors of this function"),
    Register("MTU", 0x01C, 1, "rw", "largest received frame without FCS, 64..9600 (1514)"),
    Register("MAC_LO", 0x020, 1, "rw", "station MAC address bytes 2..5 (byte 5 in bits 0-7)"),
    Register("MAC_HI", 0x024, 1, "rw", "station MAC address bytes 0..1 in bits 8-15, 0-7"),
    Register("LRO_TIMEOUT_NS", 0x028, 1, "rw", "held LRO flows flush after this (10000)"),
    Register("RSS_TYPES", 0x040, 1, "rw", "hw.ref.rss.HashType enable mask (0b1111110)"),
    Register("RSS_TABLE_LOG2", 0x044, 1, "rw", "log2 of the indirection table size, 0..9 (7)"),
    Register("RSS_KEY", 0x080, 10, "rw", "40-byte Toeplitz key, byte 4n in bits 24-31 of "
                                          "register n"),
    Register("COUNTER", 0x100, len(COUNTERS), "ro", "statistics: " + ", ".join(COUNTERS)),
    Register("RSS_TABLE", 0x400, 512, "rw", "indirection table: receive queue numbers, each "
                                             "below NUM_RXQ"),
)

QUEUE_REGISTERS = (
    Register("RING_LO", 0x00, 1, "rw", "descriptor ring address, bits 0-31 (16-byte aligned)"),
    Register("RING_HI", 0x04, 1, "rw", "descriptor ring address, bits 32-63"),
    Register("RING_LOG2", 0x08, 1, "rw", f"log2 of ring entries, 1..{MAX_RING_LOG2}"),
    Register("CTRL", 0x0C, 1, "rw", "QueueCtrl bits; enabling checks the ring settings"),
    Register("TAIL", 0x10, 1, "rw", "doorbell: producer index the driver wrote up to"),
    Register("HEAD", 0x14, 1, "ro", "consumer index of the device"),
    Register("CQ_LO", 0x18, 1, "rw", "completion ring address, bits 0-31 (32-byte aligned)"),
    Register("CQ_HI", 0x1C, 1, "rw", "completion ring address, bits 32-63"),
    Register("CQ_LOG2", 0x20, 1, "rw", f"log2 of completion ring entries, 1..{MAX_RING_LOG2}"),
    Register("CQ_HEAD", 0x24, 1, "rw", "consumer index of the driver in the completion ring"),
    Register("CQ_TAIL", 0x28, 1, "ro", "producer index of the device in the completion ring"),
    Register("VECTOR", 0x2C, 1, "rw", "MSI-X vector in bits 0-15; bit 31 arms the interrupt"),
)

IRQ_REGISTERS = (
    Register("FRAMES", 0x0, 1, "rw", "interrupt moderation: completions per interrupt (1)"),
    Register("USECS", 0x4, 1, "rw", "interrupt moderation: microseconds after the first "
                                     "unsignalled completion (0)"),
)


def reg(name, index=0):
    """Return the offset of function-wide register ``name``."""
    return offset_of(REGISTERS, name, index)


def txq_reg(queue, name):
    """Return the offset of register ``name`` of transmit queue ``queue``."""
    return TXQ_BASE + QUEUE_STRIDE * queue + offset_of(QUEUE_REGISTERS, name)


def rxq_reg(queue, name):
    """Return the offset of register ``name`` of receive queue ``queue``."""
    return RXQ_BASE + QUEUE_STRIDE * queue + offset_of(QUEUE_REGISTERS, name)


def irq_reg(vector, name):
    """Return the offset of moderation register ``name`` of MSI-X vector ``vector``."""
    return IRQ_BASE + IRQ_STRIDE * vector + offset_of(IRQ_REGISTERS, name)
