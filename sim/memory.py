"""Host physical memory: sparse, byte-addressable, zero-filled on first touch.

Memory is kept as 4 KiB pages created when first written, so a simulated host of many
gigabytes costs only the pages the simulation touches. Accesses copy whole slices within a
page and split only at page boundaries: the per-packet path never loops over bytes.
"""

from __future__ import annotations

__all__ = [
    "HostMemory",
    "HostMemoryExhausted",
    "PAGE_BYTES",
    "PAGE_SHIFT",
    "DEFAULT_MEMORY_BYTES",
]

PAGE_SHIFT = 12
PAGE_BYTES = 1 << PAGE_SHIFT  # 4 KiB, the x86-64 base page and the IOMMU's mapping granule
_PAGE_MASK = PAGE_BYTES - 1
DEFAULT_MEMORY_BYTES = 16 << 30  # a 16 GiB host


class HostMemoryExhausted(MemoryError):
    """Raised when :meth:`HostMemory.alloc` has no room left in its range."""


class HostMemory:
    """Sparse host physical memory with a bump allocator.

    Parameters
    ----------
    size : int
        Bytes of physical memory; addresses ``[0, size)`` exist, others raise ``ValueError``.
    alloc_base : int
        First address :meth:`alloc` hands out. The default leaves page 0 unallocated, so that
        address 0 never names a buffer (a stray null DMA address stays visible).
    alloc_end : int or None
        End (exclusive) of the allocation range; ``None`` means ``size``.

    Members
    -------
    size : int
        Bytes of physical memory.
    alloc_base, alloc_end : int
        The allocation range.
    allocated_bytes : int
        Bytes handed out by :meth:`alloc`, alignment padding included.
    """

    __slots__ = ("size", "alloc_base", "alloc_end", "allocated_bytes", "_next", "_pages")

    def __init__(self, size=DEFAULT_MEMORY_BYTES, alloc_base=PAGE_BYTES, alloc_end=None):
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"Host memory size must be a positive number of bytes, not {size!r}")
        alloc_end = size if alloc_end is None else alloc_end
        if not 0 <= alloc_base <= alloc_end <= size:
            raise ValueError(
                f"Host memory allocation range [{alloc_base:#x}, {alloc_end:#x}) must lie "
                f"within the memory [0, {size:#x}); pass alloc_base and alloc_end inside it")
        self.size = size
        self.alloc_base = alloc_base
        self.alloc_end = alloc_end
        self.allocated_bytes = 0
        self._next = alloc_base
        # page number -> memoryview of a 4 KiB bytearray (memoryview slicing copies once)
        self._pages = {}

    def _outside(self, addr, size):
        return ValueError(
            f"Host memory access of {size} bytes at {addr:#x} falls outside the host memory "
            f"[0, {self.size:#x}); fix the address or give HostMemory a larger size")

    def read(self, addr, size):
        """Return ``size`` bytes starting at physical address ``addr``.

        Bytes never written read as zero.
        """
        if addr < 0 or size < 0 or addr + size > self.size:
            raise self._outside(addr, size)
        offset = addr & _PAGE_MASK
        if offset + size <= PAGE_BYTES:
            page = self._pages.get(addr >> PAGE_SHIFT)
            if page is None:
                return bytes(size)
            return bytes(page[offset:offset + size])
        out = bytearray(size)
        pages = self._pages
        number = addr >> PAGE_SHIFT
        pos = 0
        while pos < size:
            length = min(PAGE_BYTES - offset, size - pos)
            page = pages.get(number)
            if page is not None:
                out[pos:pos + length] = page[offset:offset + length]
            pos += length
            number += 1
            offset = 0
        return bytes(out)

    def write(self, addr, data):
        """Store the bytes-like ``data`` at physical address ``addr``."""
        size = len(data)
        if addr < 0 or addr + size > self.size:
            raise self._outside(addr, size)
        pages = self._pages
        number = addr >> PAGE_SHIFT
        offset = addr & _PAGE_MASK
        if offset + size <= PAGE_BYTES:
            page = pages.get(number)
            if page is None:
                page = pages[number] = memoryview(bytearray(PAGE_BYTES))
            page[offset:offset + size] = data
            return
        view = memoryview(data).cast("B")
        pos = 0
        while pos < size:
            length = min(PAGE_BYTES - offset, size - pos)
            page = pages.get(number)
            if page is None:
                page = pages[number] = memoryview(bytearray(PAGE_BYTES))
            page[offset:offset + length] = view[pos:pos + length]
            pos += length
            number += 1
            offset = 0

    def alloc(self, size, align=64):
        """Reserve ``size`` bytes aligned to ``align`` (a power of two) and return the address.

        Memory is never freed: a simulation allocates its rings and buffers once.

        Raises
        ------
        HostMemoryExhausted
            When the allocation range has no room left.
        """
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"Allocation size must be a positive number of bytes, not {size!r}")
        if not isinstance(align, int) or align <= 0 or align & (align - 1):
            raise ValueError(f"Allocation alignment must be a power of two, not {align!r}")
        addr = (self._next + align - 1) & -align
        end = addr + size
        if end > self.alloc_end:
            raise HostMemoryExhausted(
                f"Host memory allocation of {size} bytes (aligned to {align}) does not fit: "
                f"{max(self.alloc_end - self._next, 0)} bytes are left in "
                f"[{self.alloc_base:#x}, {self.alloc_end:#x}); give HostMemory a larger size "
                f"or allocation range")
        self.allocated_bytes += end - self._next
        self._next = end
        return addr

    @property
    def resident_bytes(self):
        """Bytes of the pages touched so far (what the simulation really holds)."""
        return len(self._pages) * PAGE_BYTES

    def __repr__(self):
        return (f"HostMemory(size={self.size:#x}, allocated={self.allocated_bytes}, "
                f"resident={self.resident_bytes})")
