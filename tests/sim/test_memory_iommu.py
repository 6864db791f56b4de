"""Host memory, the IOMMU's modes and faults, and DMA through both."""

import pytest
import simpy

from nicsim.sim.dma import OUTSIDE_MEMORY, DmaPort
from nicsim.sim.iommu import DmaFault, Iommu
from nicsim.sim.memory import PAGE_BYTES, HostMemory, HostMemoryExhausted
from nicsim.sim.units import NS

MiB = 1 << 20


class FakeLink:
    """A PCIe link with fixed latencies that records the transfers it carried."""

    WRITE_PS = 400 * NS
    READ_PS = 900 * NS

    def __init__(self, env):
        self.env = env
        self.carried = []

    def _start(self, ready_ps):
        return self.env.now if ready_ps is None else ready_ps

    def dma_write(self, addr, size, ready_ps=None):
        self.carried.append(("write", addr, size))
        return self._start(ready_ps) + self.WRITE_PS

    def dma_read(self, addr, size, ready_ps=None):
        self.carried.append(("read", addr, size))
        return self._start(ready_ps) + self.READ_PS


def pattern(size, seed=1):
    return bytes((i * 7 + seed) & 0xFF for i in range(size))


@pytest.fixture
def env():
    return simpy.Environment()


# --- memory --------------------------------------------------------------------------------

def test_memory_untouched_reads_zero_and_round_trips():
    mem = HostMemory(size=16 * MiB)
    assert mem.read(0x5000, 100) == bytes(100)
    mem.write(0x5010, b"abc")
    assert mem.read(0x500F, 5) == b"\0abc\0"
    assert mem.resident_bytes == PAGE_BYTES


@pytest.mark.parametrize("size", [1, 64, 1500, 2048, 4096, 9000, 3 * PAGE_BYTES + 5])
@pytest.mark.parametrize("offset", [0, 1, PAGE_BYTES - 64, PAGE_BYTES - 1])
def test_memory_across_page_boundaries(size, offset):
    mem = HostMemory(size=16 * MiB)
    addr = 7 * PAGE_BYTES + offset
    data = pattern(size)
    mem.write(addr, data)
    assert mem.read(addr, size) == data
    # neighbours untouched
    assert mem.read(addr - 1, 1) == b"\0"
    assert mem.read(addr + size, 1) == b"\0"
    # a read straddling written and never-touched pages
    assert mem.read(addr - 10, size + 20) == bytes(10) + data + bytes(10)


def test_memory_accepts_memoryview_and_bytearray():
    mem = HostMemory(size=1 * MiB)
    mem.write(PAGE_BYTES - 2, bytearray(b"wxyz"))
    mem.write(2 * PAGE_BYTES - 1, memoryview(b"12"))
    assert mem.read(PAGE_BYTES - 2, 4) == b"wxyz"
    assert mem.read(2 * PAGE_BYTES - 1, 2) == b"12"


def test_memory_bounds():
    mem = HostMemory(size=1 * MiB)
    mem.write(MiB - 4, b"1234")
    with pytest.raises(ValueError, match="outside the host memory"):
        mem.write(MiB - 3, b"1234")
    with pytest.raises(ValueError, match="outside the host memory"):
        mem.read(MiB, 1)
    with pytest.raises(ValueError, match="outside the host memory"):
        mem.read(-1, 2)


def test_alloc_alignment_and_exhaustion():
    mem = HostMemory(size=1 * MiB, alloc_base=0x1000, alloc_end=0x3000)
    a = mem.alloc(10)
    b = mem.alloc(10)
    assert a == 0x1000 and b == 0x1040
    c = mem.alloc(100, align=4096)
    assert c == 0x2000
    d = mem.alloc(1, align=1)
    assert d == 0x2064
    with pytest.raises(HostMemoryExhausted, match="does not fit"):
        mem.alloc(0x1000)
    assert mem.alloc(0x3000 - 0x2065, align=1) == 0x2065
    with pytest.raises(HostMemoryExhausted):
        mem.alloc(1, align=1)
    with pytest.raises(ValueError, match="power of two"):
        mem.alloc(8, align=48)
    with pytest.raises(ValueError, match="positive"):
        mem.alloc(0)


def test_alloc_default_range_skips_page_zero():
    mem = HostMemory(size=1 * MiB)
    assert mem.alloc(64) >= PAGE_BYTES


# --- IOMMU and DMA -------------------------------------------------------------------------

def make(env, mode="translate"):
    link = FakeLink(env)
    mem = HostMemory(size=64 * MiB)
    iommu = Iommu(default_mode=mode)
    return link, mem, iommu


def test_off_passes_physical(env):
    link, mem, iommu = make(env, "off")
    port = DmaPort(link, mem, iommu, rid=0)
    data = pattern(1500)
    t = port.write(0x12345, data, ready_ps=1000)
    assert t == 1000 + FakeLink.WRITE_PS
    assert mem.read(0x12345, 1500) == data
    got, t = port.read(0x12345, 1500)
    assert got == data and t == FakeLink.READ_PS
    assert (port.writes, port.write_bytes, port.reads, port.read_bytes) == (1, 1500, 1, 1500)
    assert port.blocked == {}
    assert iommu.translate(0, 0x12345, 10, True) == [(0x12345, 10)]


def test_no_iommu_object_is_physical(env):
    link, mem, _ = make(env)
    port = DmaPort(link, mem, None)
    port.write(0x8000, b"hello")
    assert mem.read(0x8000, 5) == b"hello"


def test_translate_blocks_unmapped_write_and_leaves_memory(env):
    link, mem, iommu = make(env)
    port = DmaPort(link, mem, iommu, rid=0)
    before = pattern(256, seed=9)
    mem.write(0x40000, before)
    # identity addresses: without a mapping, even the "right" physical address is blocked
    t = port.write(0x40000, bytes(256), ready_ps=5000)
    assert t == 5000 + FakeLink.WRITE_PS  # the write still crossed the link
    assert link.carried == [("write", 0x40000, 256)]
    assert mem.read(0x40000, 256) == before
    assert port.blocked == {"unmapped": 1}
    assert port.writes == 0 and port.write_bytes == 0
    assert port.last_fault.reason == "unmapped" and port.last_fault.t_ps == t
    assert iommu.faults == {0: {"unmapped": 1}}
    fault = iommu.fault_log[-1]
    assert (fault.rid, fault.addr, fault.size, fault.op) == (0, 0x40000, 256, "write")


def test_translate_read_only_and_write_only(env):
    link, mem, iommu = make(env)
    port = DmaPort(link, mem, iommu)
    tx_buf, rx_buf = 0x100000, 0x200000
    mem.write(tx_buf, b"payload!")
    iommu.map(0, 0xA000, tx_buf, 8, write=False)  # DMA_TO_DEVICE
    iommu.map(0, 0xB000, rx_buf, 8, read=False)  # DMA_FROM_DEVICE
    assert port.read(0xA000, 8)[0] == b"payload!"
    port.write(0xA000, b"XXXXXXXX")
    assert mem.read(tx_buf, 8) == b"payload!"
    data, _ = port.read(0xB000, 8)
    assert data is None
    port.write(0xB000, b"received")
    assert mem.read(rx_buf, 8) == b"received"
    assert port.blocked == {"read-only": 1, "write-only": 1}
    assert iommu.faults[0] == {"read-only": 1, "write-only": 1}


def test_translate_spanning_non_contiguous_pages(env):
    link, mem, iommu = make(env)
    port = DmaPort(link, mem, iommu)
    iova = 0x7000_0000
    first, second = 0x30_0000, 0x10_0000  # second page physically *below* the first
    iommu.map(0, iova, first, PAGE_BYTES)
    iommu.map(0, iova + PAGE_BYTES, second, PAGE_BYTES)
    data = pattern(2000)
    start = iova + PAGE_BYTES - 500
    assert iommu.translate(0, start, 2000, True) == [
        (first + PAGE_BYTES - 500, 500), (second, 1500)]
    port.write(start, data)
    assert mem.read(first + PAGE_BYTES - 500, 500) == data[:500]
    assert mem.read(second, 1500) == data[500:]
    assert port.read(start, 2000)[0] == data


def test_contiguous_pages_merge_into_one_piece(env):
    _, _, iommu = make(env)
    iommu.map(0, 0x10_0000, 0x50_0000, 3 * PAGE_BYTES)
    assert iommu.translate(0, 0x10_0010, 3 * PAGE_BYTES - 32, False) == [
        (0x50_0010, 3 * PAGE_BYTES - 32)]


def test_dma_over_a_partly_mapped_range_writes_nothing(env):
    link, mem, iommu = make(env)
    port = DmaPort(link, mem, iommu)
    iommu.map(0, 0x1000, 0x9000, PAGE_BYTES)
    port.write(0x1F00, pattern(512))  # second page unmapped
    assert mem.read(0x9000, PAGE_BYTES) == bytes(PAGE_BYTES)
    assert port.blocked == {"unmapped": 1}


def test_unmap_blocks_again(env):
    link, mem, iommu = make(env)
    port = DmaPort(link, mem, iommu)
    iommu.map(0, 0x4000, 0x8000, 100)
    port.write(0x4000, b"one")
    iommu.unmap(0, 0x4000, 100)
    port.write(0x4000, b"two")
    assert mem.read(0x8000, 3) == b"one"
    assert port.blocked == {"unmapped": 1}
    with pytest.raises(ValueError, match="not mapped"):
        iommu.unmap(0, 0x4000, 100)


def test_map_checks():
    iommu = Iommu("translate")
    iommu.map(0, 0x1000, 0x2000, 10)
    with pytest.raises(ValueError, match="already mapped"):
        iommu.map(0, 0x1800, 0x5800, 10)
    with pytest.raises(ValueError, match="same offset"):
        iommu.map(0, 0x3000, 0x4010, 10)
    with pytest.raises(ValueError, match="read, write or both"):
        iommu.map(0, 0x3000, 0x4000, 10, read=False, write=False)
    with pytest.raises(ValueError, match="mode must be one of"):
        iommu.set_mode(0, "bypass")


def test_vf_domains_are_isolated(env):
    link, mem, iommu = make(env)
    vf1 = DmaPort(link, mem, iommu, rid=1)
    vf2 = DmaPort(link, mem, iommu, rid=2)
    iommu.map(2, 0x10000, 0x60_0000, PAGE_BYTES)
    vf2.write(0x10000, b"vf2 data")
    assert mem.read(0x60_0000, 8) == b"vf2 data"
    vf1.write(0x10000, b"vf1 evil")  # same IOVA, other domain
    assert vf1.read(0x10000, 8)[0] is None
    assert mem.read(0x60_0000, 8) == b"vf2 data"
    assert vf1.blocked == {"unmapped": 2} and vf2.blocked == {}
    assert iommu.faults == {1: {"unmapped": 2}}
    assert iommu.mapped_pages(1) == 0 and iommu.mapped_pages(2) == 1


def test_passthrough_maps_guest_range_and_blocks_beyond(env):
    link, mem, iommu = make(env)
    guest_base, guest_size = 16 * MiB, 4 * MiB
    iommu.set_mode(3, "passthrough", host_base=guest_base, guest_size=guest_size)
    vf = DmaPort(link, mem, iommu, rid=3)
    vf.write(0x2000, b"guest")
    assert mem.read(guest_base + 0x2000, 5) == b"guest"
    vf.write(guest_size - 4, b"last")
    assert mem.read(guest_base + guest_size - 4, 4) == b"last"
    before = mem.read(guest_base + guest_size - 2, 8)
    vf.write(guest_size - 2, b"overflow")  # straddles the end of guest memory
    vf.write(guest_size + 0x1000, b"beyond")
    assert mem.read(guest_base + guest_size - 2, 8) == before
    assert mem.read(guest_base + guest_size + 0x1000, 6) == bytes(6)
    assert vf.read(guest_size, 4)[0] is None
    assert vf.blocked == {"outside guest memory": 3}
    assert iommu.faults_by_reason() == {"outside guest memory": 3}
    assert iommu.mode(3) == "passthrough" and iommu.mode(0) == "translate"
    with pytest.raises(ValueError, match="Passthrough needs"):
        iommu.set_mode(4, "passthrough", host_base=0x10, guest_size=MiB)


def test_dma_outside_host_memory_is_blocked(env):
    link, mem, iommu = make(env, "off")
    port = DmaPort(link, mem, iommu)
    port.write(mem.size - 2, b"abcd")
    assert port.read(mem.size, 4)[0] is None
    assert port.blocked == {OUTSIDE_MEMORY: 2}
    assert mem.read(mem.size - 2, 2) == b"\0\0"


def test_fault_log_is_bounded():
    iommu = Iommu("translate", fault_history=4)
    for i in range(10):
        with pytest.raises(DmaFault, match="blocked: unmapped"):
            iommu.translate(5, i * PAGE_BYTES, 64, False)
    assert [f.addr for f in iommu.fault_log] == [i * PAGE_BYTES for i in range(6, 10)]
    assert iommu.faults_total == 10 and iommu.faults == {5: {"unmapped": 10}}
