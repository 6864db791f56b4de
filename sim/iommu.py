"""The IOMMU between the NIC's PCI functions and host memory.

Each requester (PCI function: the PF is requester 0, SR-IOV VF ``n`` is requester ``n``) sits in
its own domain with its own I/O virtual address space, in one of three modes:

``"off"``
    No IOMMU, or Linux ``iommu=pt``: DMA addresses are host physical addresses.
``"translate"``
    The Linux DMA-API with an IOMMU: only pages the driver mapped with :meth:`Iommu.map` are
    reachable, with the access rights of the mapping (``DMA_TO_DEVICE`` is read-only for the
    device, ``DMA_FROM_DEVICE`` write-only).
``"passthrough"``
    The function is assigned to a virtual machine (VFIO): guest-physical ``[0, guest_size)``
    maps to host-physical ``[host_base, host_base + guest_size)``; anything beyond is blocked.

Mappings are 4 KiB-page granular, as in the VT-d and AMD-Vi page tables; a lookup is one dict
access per page touched. A blocked access raises :class:`DmaFault`, is counted per requester
and reason, and the last few faults are kept for reports (the IOMMU's fault recording
registers).
"""

# Ref: Intel Virtualization Technology for Directed I/O, rev. 4.1, §3 (DMA remapping) and
# §7 (fault recording); Linux Documentation/core-api/dma-api.rst.

from __future__ import annotations

from collections import deque

from .memory import PAGE_BYTES, PAGE_SHIFT

__all__ = [
    "Iommu",
    "DmaFault",
    "MODES",
    "OFF",
    "TRANSLATE",
    "PASSTHROUGH",
    "UNMAPPED",
    "READ_ONLY",
    "WRITE_ONLY",
    "OUTSIDE_GUEST",
]

OFF = "off"
TRANSLATE = "translate"
PASSTHROUGH = "passthrough"
MODES = (OFF, TRANSLATE, PASSTHROUGH)

# Fault reasons
UNMAPPED = "unmapped"
READ_ONLY = "read-only"  # a write to a page mapped DMA_TO_DEVICE
WRITE_ONLY = "write-only"  # a read of a page mapped DMA_FROM_DEVICE
OUTSIDE_GUEST = "outside guest memory"

FAULT_HISTORY = 64  # fault records kept; VT-d hardware has a handful of recording registers

_PAGE_MASK = PAGE_BYTES - 1
_READ = 1
_WRITE = 2


class DmaFault(Exception):
    """A DMA the IOMMU blocked.

    Members
    -------
    rid : int
        Requester (PCI function) that issued the DMA.
    addr : int
        The DMA address the device used (I/O virtual or guest physical).
    size : int
        Bytes of the access.
    op : str
        ``"read"`` or ``"write"``.
    reason : str
        Why it was blocked, for example ``"unmapped"``, ``"read-only"``,
        ``"outside guest memory"``.
    t_ps : int or None
        When the access completed on the link, where the caller knows it.
    """

    def __init__(self, rid, addr, size, op, reason, t_ps=None):
        super().__init__(rid, addr, size, op, reason)
        self.rid = rid
        self.addr = addr
        self.size = size
        self.op = op
        self.reason = reason
        self.t_ps = t_ps

    def __str__(self):
        return (f"DMA {self.op} of {self.size} bytes at {self.addr:#x} by requester {self.rid} "
                f"was blocked: {self.reason}")


class _Domain:
    __slots__ = ("mode", "pages", "host_base", "guest_size")

    def __init__(self, mode):
        self.mode = mode
        # I/O virtual page number -> host physical page address | access bits
        self.pages = {}
        self.host_base = 0
        self.guest_size = 0


class Iommu:
    """DMA remapping for the PCI functions of one device.

    Parameters
    ----------
    default_mode : str
        Mode of requesters not configured with :meth:`set_mode`: ``"off"``, ``"translate"``
        or ``"passthrough"`` (the last needs :meth:`set_mode`'s guest range, so it cannot be
        the default).
    fault_history : int
        Number of fault records kept in :attr:`fault_log`.

    Members
    -------
    faults : dict
        ``{rid: {reason: count}}`` of blocked accesses.
    faults_total : int
        All blocked accesses.
    fault_log : collections.deque
        The last ``fault_history`` :class:`DmaFault` records, oldest first.
    """

    def __init__(self, default_mode=OFF, fault_history=FAULT_HISTORY):
        if default_mode not in (OFF, TRANSLATE):
            raise ValueError(
                f"IOMMU default mode must be 'off' or 'translate', not {default_mode!r}; "
                f"assign passthrough per requester with set_mode")
        self.default_mode = default_mode
        self.faults = {}
        self.faults_total = 0
        self.fault_log = deque(maxlen=fault_history)
        self._domains = {}

    def _domain(self, rid):
        domain = self._domains.get(rid)
        if domain is None:
            if not isinstance(rid, int) or rid < 0:
                raise ValueError(f"Requester ID must be a non-negative integer, not {rid!r}")
            domain = self._domains[rid] = _Domain(self.default_mode)
        return domain

    def set_mode(self, rid, mode, host_base=0, guest_size=0):
        """Put requester ``rid`` in ``mode``.

        Parameters
        ----------
        rid : int
            Requester ID (0 for the PF, ``n`` for VF ``n``).
        mode : str
            ``"off"``, ``"translate"`` or ``"passthrough"``.
        host_base : int
            For passthrough: host physical address of guest physical address 0 (page aligned).
        guest_size : int
            For passthrough: bytes of guest memory (a positive multiple of 4 KiB).

        Mappings made with :meth:`map` stay in the domain across mode changes; they are used
        only in ``"translate"`` mode.
        """
        if mode not in MODES:
            raise ValueError(f"IOMMU mode must be one of {', '.join(MODES)}, not {mode!r}")
        if mode == PASSTHROUGH:
            if (not isinstance(guest_size, int) or guest_size <= 0 or guest_size & _PAGE_MASK
                    or host_base < 0 or host_base & _PAGE_MASK):
                raise ValueError(
                    f"Passthrough needs a page-aligned host_base and a guest_size that is a "
                    f"positive multiple of {PAGE_BYTES}, not host_base={host_base:#x} "
                    f"guest_size={guest_size!r}")
        domain = self._domain(rid)
        domain.mode = mode
        domain.host_base = host_base if mode == PASSTHROUGH else 0
        domain.guest_size = guest_size if mode == PASSTHROUGH else 0

    def mode(self, rid):
        """Return the mode of requester ``rid``."""
        domain = self._domains.get(rid)
        return self.default_mode if domain is None else domain.mode

    def map(self, rid, iova, phys, size, read=True, write=True):
        """Map ``size`` bytes at ``iova`` in the domain of ``rid`` to host physical ``phys``.

        Like ``dma_map_single``, whole pages are mapped: every page that ``[iova, iova+size)``
        touches becomes reachable, so ``iova`` and ``phys`` must have the same offset within
        their page. ``read`` and ``write`` are the device's rights (``dma_map_single`` with
        ``DMA_TO_DEVICE`` is ``read=True, write=False``). Mapping a page that is already mapped
        raises ``ValueError``: unmap it first.
        """
        if size <= 0 or iova < 0 or phys < 0:
            raise ValueError(
                f"IOMMU mapping needs non-negative addresses and a positive size, not "
                f"iova={iova:#x} phys={phys:#x} size={size}")
        if (iova ^ phys) & _PAGE_MASK:
            raise ValueError(
                f"IOMMU mapping of iova {iova:#x} to phys {phys:#x}: both must have the same "
                f"offset within their {PAGE_BYTES}-byte page")
        if not (read or write):
            raise ValueError("IOMMU mapping must allow the device to read, write or both")
        rights = (_READ if read else 0) | (_WRITE if write else 0)
        pages = self._domain(rid).pages
        first = iova >> PAGE_SHIFT
        count = ((iova + size - 1) >> PAGE_SHIFT) - first + 1
        for number in range(first, first + count):
            if number in pages:
                raise ValueError(
                    f"IOMMU page {number << PAGE_SHIFT:#x} of requester {rid} is already "
                    f"mapped; unmap it before mapping it again")
        phys_page = phys & ~_PAGE_MASK
        for i in range(count):
            pages[first + i] = (phys_page + (i << PAGE_SHIFT)) | rights

    def unmap(self, rid, iova, size):
        """Remove the mapping of every page ``[iova, iova+size)`` touches in ``rid``'s domain.

        Unmapping a page that is not mapped raises ``ValueError`` (a driver bug worth seeing).
        """
        if size <= 0 or iova < 0:
            raise ValueError(f"IOMMU unmap needs iova >= 0 and size > 0, not {iova:#x}, {size}")
        pages = self._domain(rid).pages
        first = iova >> PAGE_SHIFT
        numbers = range(first, ((iova + size - 1) >> PAGE_SHIFT) + 1)
        for number in numbers:
            if number not in pages:
                raise ValueError(
                    f"IOMMU page {number << PAGE_SHIFT:#x} of requester {rid} is not mapped, "
                    f"so it cannot be unmapped")
        for number in numbers:
            del pages[number]

    def mapped_pages(self, rid):
        """Return the number of pages mapped in ``rid``'s domain."""
        domain = self._domains.get(rid)
        return 0 if domain is None else len(domain.pages)

    def translate(self, rid, addr, size, write):
        """Return the host physical pieces ``[(phys, length), ...]`` of a DMA.

        The pieces follow the DMA in order; adjacent pages mapped to contiguous physical pages
        come back as one piece. A zero-byte access returns ``[]``.

        Raises
        ------
        DmaFault
            When the IOMMU blocks the access; it is counted and recorded first.
        """
        domain = self._domains.get(rid)
        if domain is None:
            domain = self._domain(rid)
        mode = domain.mode
        if mode == OFF:
            return [(addr, size)] if size > 0 else []
        if size <= 0:
            if size < 0:
                raise ValueError(f"DMA size must not be negative, not {size}")
            return []
        if mode == PASSTHROUGH:
            if 0 <= addr and addr + size <= domain.guest_size:
                return [(domain.host_base + addr, size)]
            raise self._fault(rid, addr, size, write, OUTSIDE_GUEST)
        pages = domain.pages
        need = _WRITE if write else _READ
        offset = addr & _PAGE_MASK
        if offset + size <= PAGE_BYTES:
            entry = pages.get(addr >> PAGE_SHIFT)
            if entry is None or addr < 0:
                raise self._fault(rid, addr, size, write, UNMAPPED)
            if not entry & need:
                raise self._fault(rid, addr, size, write, READ_ONLY if write else WRITE_ONLY)
            return [((entry & ~_PAGE_MASK) + offset, size)]
        pieces = []
        number = addr >> PAGE_SHIFT
        pos = 0
        end_phys = -1
        while pos < size:
            entry = pages.get(number)
            if entry is None or addr < 0:
                raise self._fault(rid, addr, size, write, UNMAPPED)
            if not entry & need:
                raise self._fault(rid, addr, size, write, READ_ONLY if write else WRITE_ONLY)
            length = min(PAGE_BYTES - offset, size - pos)
            phys = (entry & ~_PAGE_MASK) + offset
            if phys == end_phys:
                last_phys, last_length = pieces[-1]
                pieces[-1] = (last_phys, last_length + length)
            else:
                pieces.append((phys, length))
            end_phys = phys + length
            pos += length
            number += 1
            offset = 0
        return pieces

    def _fault(self, rid, addr, size, write, reason):
        fault = DmaFault(rid, addr, size, "write" if write else "read", reason)
        by_reason = self.faults.get(rid)
        if by_reason is None:
            by_reason = self.faults[rid] = {}
        by_reason[reason] = by_reason.get(reason, 0) + 1
        self.faults_total += 1
        self.fault_log.append(fault)
        return fault

    def faults_by_reason(self):
        """Return ``{reason: count}`` over all requesters."""
        totals = {}
        for by_reason in self.faults.values():
            for reason, count in by_reason.items():
                totals[reason] = totals.get(reason, 0) + count
        return totals
