"""The DMA engine of one PCI function: link timing, IOMMU translation, host memory.

A :class:`DmaPort` takes the device's DMA address, charges the transfer on the PCIe link
(which always carries it, blocked or not: the IOMMU sits in the root complex, past the link),
translates it through the IOMMU and moves the bytes. A blocked write never touches memory; a
blocked read returns no data, as the device receives an error completion.

Memory is read and written when the call is made, and the call returns when the transfer
completes on the link: software must not look at written bytes before that time.
"""

from __future__ import annotations

from .iommu import DmaFault

__all__ = ["DmaPort", "OUTSIDE_MEMORY"]

OUTSIDE_MEMORY = "outside host memory"  # reason: the (translated) address names no memory


class DmaPort:
    """DMA of one PCI function (requester) into host memory.

    Parameters
    ----------
    link : object
        The PCIe link: ``dma_write(addr, size, ready_ps=None) -> int`` and
        ``dma_read(addr, size, ready_ps=None) -> int``, both returning completion times (ps).
    memory : nicsim.sim.memory.HostMemory
        Host physical memory.
    iommu : nicsim.sim.iommu.Iommu or None
        The IOMMU; ``None`` means DMA addresses are host physical.
    rid : int
        Requester ID of the function (0 for the PF, ``n`` for VF ``n``).

    Members
    -------
    reads, writes : int
        DMAs that reached memory.
    read_bytes, write_bytes : int
        Their bytes.
    blocked : dict
        ``{reason: count}`` of DMAs that did not reach memory (IOMMU faults and addresses
        outside host memory).
    last_fault : DmaFault or None
        The latest blocked DMA, with its link completion time in ``t_ps``.
    """

    __slots__ = ("link", "memory", "iommu", "rid", "reads", "writes", "read_bytes",
                 "write_bytes", "blocked", "last_fault")

    def __init__(self, link, memory, iommu, rid=0):
        self.link = link
        self.memory = memory
        self.iommu = iommu
        self.rid = rid
        self.reads = 0
        self.writes = 0
        self.read_bytes = 0
        self.write_bytes = 0
        self.blocked = {}
        self.last_fault = None

    def _block(self, fault, t_ps):
        fault.t_ps = t_ps
        self.blocked[fault.reason] = self.blocked.get(fault.reason, 0) + 1
        self.last_fault = fault

    def _pieces(self, addr, size, write):
        """Return the physical pieces of a DMA, or the DmaFault that blocks it."""
        if self.iommu is None:
            pieces = [(addr, size)]
        else:
            try:
                pieces = self.iommu.translate(self.rid, addr, size, write)
            except DmaFault as fault:
                return fault
        limit = self.memory.size
        for phys, length in pieces:
            if phys < 0 or phys + length > limit:
                return DmaFault(self.rid, addr, size, "write" if write else "read",
                                OUTSIDE_MEMORY)
        return pieces

    def write(self, addr, data, ready_ps=None):
        """Write the bytes-like ``data`` at DMA address ``addr``; return the completion time.

        ``ready_ps`` is when the device has the data ready (default: now). The time returned is
        the link's: when the last byte is in host memory.
        """
        size = len(data)
        t_ps = self.link.dma_write(addr, size, ready_ps)
        pieces = self._pieces(addr, size, True)
        if pieces.__class__ is not list:
            self._block(pieces, t_ps)
            return t_ps
        memory = self.memory
        if len(pieces) == 1:
            memory.write(pieces[0][0], data)
        else:
            view = memoryview(data).cast("B")
            pos = 0
            for phys, length in pieces:
                memory.write(phys, view[pos:pos + length])
                pos += length
        self.writes += 1
        self.write_bytes += size
        return t_ps

    def read(self, addr, size, ready_ps=None):
        """Read ``size`` bytes at DMA address ``addr``; return ``(data, completion time)``.

        ``data`` is ``None`` when the DMA was blocked (the device gets an error completion).
        The link is charged the full read either way: the error completion is modeled as
        costing what the data would have.
        """
        t_ps = self.link.dma_read(addr, size, ready_ps)
        pieces = self._pieces(addr, size, False)
        if pieces.__class__ is not list:
            self._block(pieces, t_ps)
            return None, t_ps
        memory = self.memory
        if len(pieces) == 1:
            data = memory.read(pieces[0][0], size)
        elif not pieces:
            data = b""
        else:
            data = b"".join([memory.read(phys, length) for phys, length in pieces])
        self.reads += 1
        self.read_bytes += size
        return data, t_ps
