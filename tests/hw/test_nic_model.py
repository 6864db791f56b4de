"""The NIC model backend through its device interface, with a host that answers at once.

Completions are checked against the golden references called here directly and against
scapy's view of the frames; ring mechanics (wrap, full, empty) against counts worked out by
hand.
"""

import struct

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from nicsim.hw.frame import Frame
from nicsim.hw.nic import regs
from nicsim.hw.nic.device import RegisterError
from nicsim.hw.nic.formats import COMPLETION, CPL_BYTES, DESC_BYTES, RX_DESC, TX_DESC, TxFlags
from nicsim.hw.nic.model import NicConfig, NicModel
from nicsim.hw.ref import checksum as ref_checksum
from nicsim.hw.ref import rss as ref_rss

MAC = bytes.fromhex("020000000001")
RING = 0x10000
CQ = 0x20000
BUF = 0x100000
TX_RING = 0x30000
TX_CQ = 0x40000
TX_BUF = 0x200000


class FakeHost:
    """A host port with flat memory and fixed latencies (1 us per DMA)."""

    def __init__(self, blocked=()):
        self.mem = bytearray(4 << 20)
        self.tags = {}
        self.irqs = []
        self.armed = {}
        self.moderation = {}
        self.out = []
        self.blocked = blocked

    def dma_read(self, fn, addr, size, ready_ps):
        if any(lo <= addr < hi for lo, hi in self.blocked):
            return None, ready_ps + 1_000_000
        return bytes(self.mem[addr:addr + size]), ready_ps + 1_000_000

    dma_sent = 0

    def dma_write(self, fn, addr, data, ready_ps):
        self.dma_sent = ready_ps
        if any(lo <= addr < hi for lo, hi in self.blocked):
            return None
        self.mem[addr:addr + len(data)] = data
        return ready_ps + 1_000_000

    def dma_write_pair(self, fn, addr, data, addr2, data2, ready_ps):
        first = self.dma_write(fn, addr, data, ready_ps)
        if first is None:
            return None, None
        return first, self.dma_write(fn, addr2, data2, ready_ps)

    def irq(self, fn, vector, t_ps, count):
        self.irqs.append((fn, vector, t_ps, count))

    def irq_setup(self, fn, vector, frames, usecs):
        self.moderation[(fn, vector)] = (frames, usecs)

    def irq_arm(self, fn, vector, armed, t_ps):
        self.armed[(fn, vector)] = armed

    def eth_out(self, port, batch):
        self.out.extend(batch)

    now = 1 << 60  # everything has happened: the device acts on messages at once
    defer = False  # with defer, timers wait for run_timers()
    timers = None

    def call_at(self, t_ps, callback):
        if not self.defer:
            callback(t_ps)
            return
        self.timers = self.timers or []
        self.timers.append((t_ps, len(self.timers), callback))

    def run_timers(self, until):
        while self.timers:
            self.timers.sort()
            t, _, callback = self.timers[0]
            if t > until:
                return
            self.timers.pop(0)
            self.now = max(self.now, t)
            callback(self.now)


def setup(nic, host, ring_log2=3, rx_post=None, ctrl=regs.Ctrl.RX_CSUM | regs.Ctrl.RSS,
          queues=1):
    w = nic.mmio_write
    w(0, regs.reg("MAC_LO"), int.from_bytes(MAC[2:], "big"), 0)
    w(0, regs.reg("MAC_HI"), int.from_bytes(MAC[:2], "big"), 0)
    w(0, regs.reg("CTRL"), ctrl | regs.Ctrl.RX_ENABLE | regs.Ctrl.TX_ENABLE, 0)
    size = 1 << ring_log2
    for q in range(queues):
        base = q * 0x1000
        for slot in range(size):
            host.mem[RING + base + slot * DESC_BYTES:RING + base + (slot + 1) * DESC_BYTES] = \
                RX_DESC.pack(addr=BUF + (q * size + slot) * 2048, len=2048)
        for name, value in (("RING_LO", RING + base), ("RING_LOG2", ring_log2),
                            ("CQ_LO", CQ + base * 2), ("CQ_LOG2", ring_log2),
                            ("CTRL", regs.QueueCtrl.ENABLE)):
            w(0, regs.rxq_reg(q, name), value, 0)
        for name, value in (("RING_LO", TX_RING), ("RING_LOG2", ring_log2), ("CQ_LO", TX_CQ),
                            ("CQ_LOG2", ring_log2), ("CTRL", regs.QueueCtrl.ENABLE)):
            if q == 0:
                w(0, regs.txq_reg(q, name), value, 0)
        if rx_post is None:
            w(0, regs.rxq_reg(q, "TAIL"), size, 0)
        elif rx_post:
            w(0, regs.rxq_reg(q, "TAIL"), rx_post, 0)


def udp_frame(sport=1000, payload=b"x" * 18):
    return bytes(Ether(dst=MAC, src="02:00:00:00:00:09") / IP(src="10.0.0.1", dst="10.0.0.2")
                 / UDP(sport=sport, dport=53) / payload)


def completions(host, count, base=CQ):
    return [COMPLETION.unpack(host.mem, base + n * CPL_BYTES) for n in range(count)]


def make(**kwargs):
    host = FakeHost(kwargs.pop("blocked", ()))
    return NicModel(NicConfig(**kwargs), host), host


def test_receive_writes_buffer_and_completion_with_reference_offloads():
    nic, host = make()
    setup(nic, host)
    good = udp_frame()
    bad = bytearray(udp_frame(sport=7))
    bad[-1] ^= 0xFF  # payload changed: the UDP checksum no longer matches
    tcp = bytes(Ether(dst=MAC) / IP(src="1.2.3.4", dst="5.6.7.8") / TCP(sport=1, dport=2))
    frames = [good, bytes(bad), tcp]
    nic.eth_in(0, [Frame(f, t_ps=1000 * n, born_ps=7) for n, f in enumerate(frames)])
    rss = ref_rss.RssConfig(table=ref_rss.default_table(128, 1))
    for n, (entry, frame) in enumerate(zip(completions(host, 3), frames, strict=True)):
        c = ref_checksum.rx_checksum(frame)
        r = ref_rss.rss_hash(frame, rss)
        assert entry["len"] == len(frame)
        assert entry["index"] == n
        assert entry["csum"] == int(c.ip) | int(c.l4) << 2
        assert entry["csum_complete"] == c.csum_complete
        assert entry["rss_hash"] == r.hash
        assert entry["hash_type"] == int(r.hash_type)
        assert entry["flags"] & 1  # phase of the first pass
        assert bytes(host.mem[BUF + n * 2048:BUF + n * 2048 + len(frame)]) == frame
    # Independent oracle for the verdicts: scapy recomputes the UDP checksums.
    assert completions(host, 2)[0]["csum"] == 1 | 1 << 2
    assert completions(host, 2)[1]["csum"] >> 2 == 2


def test_rss_spreads_flows_to_the_queues_the_table_names():
    nic, host = make(rxqs=4)
    setup(nic, host, ring_log2=5, queues=4)
    for n in range(128):
        nic.mmio_write(0, regs.reg("RSS_TABLE", n), n % 4, 0)
    frames = [udp_frame(sport=1000 + n) for n in range(40)]
    nic.eth_in(0, [Frame(f, t_ps=n) for n, f in enumerate(frames)])
    rss = ref_rss.RssConfig(table=[n % 4 for n in range(128)])
    expected = [0] * 4
    for f in frames:
        expected[ref_rss.rss_hash(f, rss).queue] += 1
    got = [nic.mmio_read(0, regs.rxq_reg(q, "CQ_TAIL"), 0) for q in range(4)]
    assert got == expected
    assert sum(1 for c in got if c) > 1


def test_ring_wraps_and_phase_flips():
    nic, host = make()
    setup(nic, host, ring_log2=2)  # 4 entries, all posted
    frames = [udp_frame(sport=n) for n in range(10)]
    delivered = 0
    for n, f in enumerate(frames):
        nic.eth_in(0, [Frame(f, t_ps=10_000_000 * n)])
        # The driver consumes at once and reposts the slot (head and tail move together).
        delivered += 1
        nic.mmio_write(0, regs.rxq_reg(0, "CQ_HEAD"), delivered & 0xFFFF, 10_000_000 * n + 1)
        nic.mmio_write(0, regs.rxq_reg(0, "TAIL"), (4 + delivered) & 0xFFFF,
                       10_000_000 * n + 2)
    assert nic.stats()["rx_frames"] == 10
    entries = completions(host, 4)
    # Entries 8, 9 went to slots 0, 1 in the third pass (phase 1 again), 6, 7 in the second.
    assert [e["index"] for e in entries] == [8, 9, 6, 7]
    assert [e["flags"] & 1 for e in entries] == [1, 1, 0, 0]


def test_no_descriptors_waits_in_fifo_then_drops_counted():
    nic, host = make(rx_fifo_bytes=1000)
    setup(nic, host, rx_post=0)
    frame = udp_frame()  # 60 bytes
    nic.eth_in(0, [Frame(frame, t_ps=n) for n in range(20)])
    stats = nic.stats()
    assert stats["rx_waiting_for_descriptor"] == 1000 // len(frame)
    assert stats["drops"]["rx_no_descriptor"] == 20 - 1000 // len(frame)
    assert nic.mmio_read(0, regs.reg("COUNTER", regs.COUNTERS.index("rx_no_descriptor")), 0) \
        == 20 - 1000 // len(frame)
    # Posting two descriptors lets the two oldest waiting frames through.
    nic.mmio_write(0, regs.rxq_reg(0, "TAIL"), 2, 5_000_000)
    assert nic.stats()["rx_frames"] == 2
    assert nic.stats()["rx_waiting_for_descriptor"] == 1000 // len(frame) - 2


def test_completion_ring_full_drops_counted():
    nic, host = make()
    setup(nic, host, ring_log2=2)
    nic.eth_in(0, [Frame(udp_frame(), t_ps=n) for n in range(4)])
    # Four more buffers posted, but the driver never consumed a completion.
    nic.mmio_write(0, regs.rxq_reg(0, "TAIL"), 8, 10)
    nic.eth_in(0, [Frame(udp_frame(), t_ps=10_000_000)])
    assert nic.stats()["drops"] == {"rx_cq_full": 1}


def test_not_for_us_and_oversize_are_counted():
    nic, host = make()
    setup(nic, host)
    other = bytes(Ether(dst="02:99:99:99:99:99") / IP() / UDP())
    big = bytes(Ether(dst=MAC) / IP() / UDP() / (b"x" * 1600))
    nic.eth_in(0, [Frame(other), Frame(big)])
    assert nic.stats()["drops"] == {"rx_not_for_us": 1, "rx_oversize": 1}


def test_blocked_dma_is_counted_and_completes_empty():
    nic, host = make(blocked=[(BUF, BUF + 2048)])
    setup(nic, host)
    nic.eth_in(0, [Frame(udp_frame())])
    assert nic.stats()["drops"] == {"rx_dma_error": 1}
    assert completions(host, 1)[0]["len"] == 0
    assert bytes(host.mem[BUF:BUF + 60]) == bytes(60)


def test_transmit_checksum_offload_matches_scapy():
    nic, host = make()
    setup(nic, host)
    pkt = Ether(dst="02:00:00:00:00:09", src=MAC) / IP(src="10.1.1.1", dst="10.2.2.2") / \
        TCP(sport=5, dport=80, seq=1234) / (b"p" * 100)
    want = bytes(pkt)
    blank = bytearray(want)
    blank[24:26] = b"\0\0"  # IPv4 header checksum
    blank[50:52] = b"\0\0"  # TCP checksum
    host.mem[TX_BUF:TX_BUF + len(blank)] = blank
    host.mem[TX_RING:TX_RING + 16] = TX_DESC.pack(addr=TX_BUF, len=len(blank),
                                                  flags=TxFlags.CSUM_AUTO)
    host.tags[TX_BUF] = 42
    nic.mmio_write(0, regs.txq_reg(0, "TAIL"), 1, 0)
    assert [f.data for f in host.out] == [want]
    assert host.out[0].born_ps == 42
    entry = completions(host, 1, TX_CQ)[0]
    assert entry["len"] == len(want) and entry["flags"] & 2


def test_transmit_partial_checksum():
    nic, host = make()
    setup(nic, host)
    want = bytes(Ether(src=MAC) / IP(src="10.1.1.1", dst="10.2.2.2") / UDP(sport=5, dport=9)
                 / (b"q" * 33))
    blank = bytearray(want)
    # CHECKSUM_PARTIAL as Linux gives it: the field holds the folded pseudo-header sum.
    pseudo = ref_checksum.ones_sum(blank[26:34] + struct.pack("!BBH", 0, 17, 8 + 33))
    blank[40:42] = pseudo.to_bytes(2, "big")
    host.mem[TX_BUF:TX_BUF + len(blank)] = blank
    host.mem[TX_RING:TX_RING + 16] = TX_DESC.pack(
        addr=TX_BUF, len=len(blank), flags=TxFlags.CSUM_PARTIAL, param=34 | 6 << 8)
    nic.mmio_write(0, regs.txq_reg(0, "TAIL"), 1, 0)
    assert host.out[0].data == want


@pytest.mark.parametrize("offset, value, words", [
    (regs.reg("MTU"), 20, "MTU"),
    (regs.reg("RSS_TABLE", 3), 5, "below 1"),
    (regs.reg("RSS_TYPES"), 1, "RSS_TYPES"),
    (regs.reg("ID"), 1, "not a writable"),
    (0x0FC, 1, "not a writable"),
    (regs.rxq_reg(9, "TAIL"), 1, "does not exist"),
    (regs.rxq_reg(0, "RING_LOG2"), 1, "disabled"),
    (regs.rxq_reg(0, "TAIL"), 100, "more descriptors"),
    (regs.rxq_reg(0, "VECTOR"), 99, "vector 99"),
    (regs.reg("CTRL"), 1 << 20, "not defined"),
    (3, 0, "aligned"),
])
def test_bad_register_writes_are_refused_with_a_sentence(offset, value, words):
    nic, host = make()
    setup(nic, host)
    with pytest.raises(RegisterError, match=words):
        nic.mmio_write(0, offset, value, 0)
    assert nic.fns[0].counters["mmio_errors"] == 1


def test_missing_feature_cannot_be_enabled():
    nic, host = make(features=regs.Feature.RX_CSUM)
    with pytest.raises(RegisterError, match="lacks"):
        nic.mmio_write(0, regs.reg("CTRL"), regs.Ctrl.RSS, 0)


def test_virtual_functions_have_their_own_queues_and_mac():
    nic, host = make(vfs=2)
    assert nic.functions == 3
    vf_mac = bytes.fromhex("020000000002")
    nic.mmio_write(2, regs.reg("MAC_LO"), int.from_bytes(vf_mac[2:], "big"), 0)
    nic.mmio_write(2, regs.reg("MAC_HI"), int.from_bytes(vf_mac[:2], "big"), 0)
    nic.mmio_write(2, regs.reg("CTRL"), regs.Ctrl.RX_ENABLE, 0)
    for name, value in (("RING_LO", RING), ("RING_LOG2", 2), ("CQ_LO", CQ), ("CQ_LOG2", 2),
                        ("CTRL", 1)):
        nic.mmio_write(2, regs.rxq_reg(0, name), value, 0)
    host.mem[RING:RING + 16] = RX_DESC.pack(addr=BUF, len=2048)
    nic.mmio_write(2, regs.rxq_reg(0, "TAIL"), 1, 0)
    frame = bytes(Ether(dst=vf_mac) / IP() / UDP())
    nic.eth_in(0, [Frame(frame)])
    assert nic.stats()["functions"][2]["rx_frames"] == 1
    assert nic.stats()["functions"][0]["rx_frames"] == 0
    assert nic.mmio_read(1, regs.reg("NUM_RXQ"), 0) == 1
    with pytest.raises(RegisterError, match="function 3"):
        nic.mmio_write(3, regs.reg("MTU"), 1500, 0)


def test_armed_queue_reports_completions_to_interrupts():
    nic, host = make()
    setup(nic, host)
    nic.mmio_write(0, regs.rxq_reg(0, "VECTOR"), 0 | regs.VECTOR_ARMED, 0)
    nic.eth_in(0, [Frame(udp_frame(), t_ps=n) for n in range(3)])
    assert len(host.irqs) == 3 and host.armed[(0, 0)]
    # Re-arming with unconsumed completions reports them once more.
    nic.mmio_write(0, regs.rxq_reg(0, "VECTOR"), 0, 10)
    nic.mmio_write(0, regs.rxq_reg(0, "VECTOR"), regs.VECTOR_ARMED, 20)
    assert len(host.irqs) == 4


def test_optional_stages_rewrite_and_drop_with_their_reason():
    def no_dns(frame):  # a stand-in for a match-action table: drop UDP port 53
        if frame[23] == 17 and frame[36:38] == b"\0\x35":
            return None, "acl_dns"
        return frame, None

    def mark(frame):  # rewrite: set the IPv4 TOS byte
        return frame[:15] + b"\x2e" + frame[16:], None

    nic, host = make(stages={"rx": [no_dns, mark]})
    setup(nic, host)
    other = bytes(Ether(dst=MAC) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=80))
    nic.eth_in(0, [Frame(udp_frame()), Frame(other)])
    assert nic.stats()["drops"] == {"acl_dns": 1}
    assert host.mem[BUF + 15] == 0x2E


def tcp_segments(count, mss=100, push_last=True):
    frames = []
    for n in range(count):
        flags = "A" + ("P" if push_last and n == count - 1 else "")
        frames.append(bytes(Ether(dst=MAC, src="02:00:00:00:00:09")
                            / IP(src="10.0.0.1", dst="10.0.0.2", id=100 + n, flags="DF")
                            / TCP(sport=4000, dport=80, seq=1000 + n * mss, ack=7, flags=flags)
                            / (bytes([65 + n]) * mss)))
    return frames


def lro_nic():
    nic, host = make()
    host.defer, host.now = True, 0
    setup(nic, host, ctrl=regs.Ctrl.RX_CSUM | regs.Ctrl.RSS | regs.Ctrl.LRO)
    host.run_timers(5_000_000)  # the doorbells and descriptor fetches
    return nic, host


def test_lro_merges_a_flow_into_one_completion_with_segs_and_gso_size():
    nic, host = lro_nic()
    segments = tcp_segments(5)
    nic.eth_in(0, [Frame(f, t_ps=5_000_000 + n * 1000) for n, f in enumerate(segments)])
    host.run_timers(1 << 40)
    entries = completions(host, 2)
    assert nic.stats()["rx_frames"] == 1
    entry = entries[0]
    assert entry["lro_segs"] == 5 and entry["gso_size"] == 100
    merged = Ether(bytes(host.mem[BUF:BUF + entry["len"]]))
    assert bytes(merged[TCP].payload) == b"".join(bytes([65 + n]) * 100 for n in range(5))
    assert merged[TCP].flags.P and merged[TCP].seq == 1000
    # Valid checksums: scapy recomputes them from scratch and gets the same.
    check = merged.copy()
    del check[IP].chksum
    del check[TCP].chksum
    check = Ether(bytes(check))
    assert (check[IP].chksum, check[TCP].chksum) == (merged[IP].chksum, merged[TCP].chksum)
    assert entry["csum"] == 1 | 1 << 2


def test_lro_flushes_held_flows_on_timeout_and_at_the_end():
    nic, host = lro_nic()
    segments = tcp_segments(3, push_last=False)  # nothing ends the flow: it stays held
    host.now = 5_000_000
    nic.eth_in(0, [Frame(f, t_ps=5_000_000 + n * 1000) for n, f in enumerate(segments[:2])])
    assert nic.stats()["rx_frames"] == 0  # held
    host.run_timers(5_000_000 + 11_000_000)  # LRO_TIMEOUT_NS: 10 us after the first
    assert nic.stats()["rx_frames"] == 1
    assert completions(host, 1)[0]["lro_segs"] == 2
    nic.eth_in(0, [Frame(segments[2], t_ps=host.now + 1000)])
    nic.finish(host.now + 2000)  # the end of a run delivers what is held
    assert nic.stats()["rx_frames"] == 2


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_transmit_segmentation_offload(kind):
    from nicsim.hw.ref import tso as ref_tso

    nic, host = make()
    setup(nic, host)
    payload = bytes(range(256)) * 12  # 3072 bytes
    l4 = TCP(sport=5, dport=80, seq=1000, flags="PA") if kind == "tcp" else UDP(sport=5,
                                                                               dport=9)
    superframe = bytes(Ether(dst="02:00:00:00:00:09", src=MAC)
                       / IP(src="10.1.1.1", dst="10.2.2.2", id=7) / l4 / payload)
    host.mem[TX_BUF:TX_BUF + len(superframe)] = superframe
    flags = TxFlags.TSO if kind == "tcp" else TxFlags.USO
    host.mem[TX_RING:TX_RING + 16] = TX_DESC.pack(addr=TX_BUF, len=len(superframe),
                                                  flags=flags, param=1000)
    nic.mmio_write(0, regs.txq_reg(0, "TAIL"), 1, 0)
    sent = [f.data for f in host.out]
    assert sent == list(ref_tso.segment(superframe, 1000, kind).frames)
    assert len(sent) == 4
    parsed = [Ether(f) for f in sent]
    layer = TCP if kind == "tcp" else UDP
    assert b"".join(bytes(p[layer].payload) for p in parsed) == payload
    if kind == "tcp":
        assert [p[TCP].seq for p in parsed] == [1000, 2000, 3000, 4000]
        assert [bool(p[TCP].flags.P) for p in parsed] == [False, False, False, True]
    entry = completions(host, 1, TX_CQ)[0]
    assert entry["len"] == sum(len(f) for f in sent)


def test_transmit_segmentation_needs_the_feature():
    nic, host = make(features=regs.Feature.RX_CSUM | regs.Feature.TX_CSUM)
    setup(nic, host, ctrl=regs.Ctrl.RX_CSUM)
    frame = bytes(Ether() / IP() / TCP() / (b"x" * 2000))
    host.mem[TX_BUF:TX_BUF + len(frame)] = frame
    host.mem[TX_RING:TX_RING + 16] = TX_DESC.pack(addr=TX_BUF, len=len(frame),
                                                  flags=TxFlags.TSO, param=1000)
    nic.mmio_write(0, regs.txq_reg(0, "TAIL"), 1, 0)
    assert host.out == [] and nic.stats()["drops"] == {"tx_bad_descriptor": 1}
