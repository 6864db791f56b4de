"""The device interface: how a NIC backend and the rest of the simulation talk.

Only four kinds of message cross it, the set SimBricks uses between its simulators: MMIO
register accesses, DMA of host memory, interrupts, and Ethernet frames. The model backend
(:mod:`nicsim.hw.nic.model`) implements :class:`Device` with the golden references; an RTL
backend implements the same methods around the gateware. The simulation gives the backend a
:class:`HostPort`.

Times are integer picoseconds. The simulation is a calendar: a call may carry a time later than
the simulation's present (a doorbell lands a link latency after the CPU wrote it), and answers
carry the times at which things will have happened. A backend never acts on a message before
the message's time.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Device", "HostPort", "RegisterError"]


class RegisterError(ValueError):
    """A register access the device answers with an error (AXI4-Lite SLVERR, PCIe UR)."""


class HostPort(Protocol):
    """What a device backend may ask of the simulation around it."""

    now: int
    """The simulation's present (ps); a backend issues DMA no later than now and schedules
    what comes later with :meth:`call_at`."""

    dma_sent: int
    """When the DMA writes issued so far have left the device (ps): the receive FIFO frees
    a frame's space then."""

    tags: dict
    """Simulation metadata per host buffer address (the time a frame was born), carried along
    with the data so latency can be measured end to end; not device state."""

    def dma_read(self, fn: int, addr: int, size: int, ready_ps: int) -> tuple[bytes | None, int]:
        """Read host memory for PCI function ``fn``; ``None`` when the IOMMU blocked it."""

    def dma_write(self, fn: int, addr: int, data: bytes, ready_ps: int) -> int | None:
        """Write host memory; return the time it is visible, ``None`` when blocked."""

    def dma_write_pair(self, fn: int, addr: int, data: bytes, addr2: int, data2: bytes,
                       ready_ps: int) -> tuple[int | None, int | None]:
        """Two writes in order, as two :meth:`dma_write` calls (a frame, then its completion);
        one call because it is the per-frame path. When the first is blocked the second is
        not made: ``(None, None)``."""

    def irq(self, fn: int, vector: int, t_ps: int, count: int) -> None:
        """Report ``count`` completions on MSI-X ``vector``; moderation decides the messages."""

    def irq_setup(self, fn: int, vector: int, frames: int, usecs: int) -> None:
        """Set the moderation of ``vector``: an interrupt per ``frames`` or ``usecs``."""

    def irq_arm(self, fn: int, vector: int, armed: bool, t_ps: int) -> None:
        """Enable (or disable) interrupts of ``vector`` from time ``t_ps``."""

    def eth_out(self, port: int, batch: list) -> None:
        """Send a time-ordered batch of :class:`nicsim.sim.frame.Frame` on Ethernet ``port``."""

    def call_at(self, t_ps: int, callback) -> None:
        """Call ``callback(now)`` when the simulation reaches ``t_ps`` (or at once, with the
        present, if ``t_ps`` has passed)."""


class Device(Protocol):
    """A NIC backend as the simulation sees it."""

    functions: int
    ports: int

    def mmio_write(self, fn: int, offset: int, value: int, t_ps: int) -> None:
        """Write a 32-bit register of function ``fn``; raise :class:`RegisterError` on errors."""

    def mmio_read(self, fn: int, offset: int, t_ps: int) -> int:
        """Read a 32-bit register of function ``fn``."""

    def eth_in(self, port: int, batch: list) -> None:
        """Take a time-ordered batch of frames that arrived on Ethernet ``port``."""

    def finish(self, t_ps: int) -> None:
        """Flush what the device holds at the end of a run (LRO flows)."""

    def stats(self) -> dict:
        """Return counters: ``{"drops": {reason: n}, ...}``."""
