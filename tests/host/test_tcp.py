"""TCP on the Linux and mTCP paths: bulk receive with delayed ACKs, request/response.

Each test checks a mechanism against an expectation worked out independently of the code: the
ACK rule of RFC 9293 §3.8.6.3 / Linux's ``__tcp_ack_snd_check()`` applied by hand to the
segments sent, the per-operation costs of host/cpu.py, scapy's reading (and recomputed
checksums) of the frames the host sends, Little's law for closed-loop clients.
"""

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from nicsim.host.cpu import CostModel
from nicsim.host.tcp import EMPTY, HOLE, IN_ORDER, OLD, Connection, parse_segment
from nicsim.sim.scenario import ScenarioError, load_scenario
from nicsim.sim.traffic import DPORT, SPORT_BASE
from nicsim.sim.world import World

MAC = "02:00:00:00:10:01"  # the NIC of host 0
PEER = "02:00:00:00:00:09"  # the sender of the captures replayed here
BULK = ("host.app=\"tcp_bulk\"", "traffic.0.proto=\"tcp\"", "traffic.0.stream=true")
RR = ("host.app=\"tcp_rr\"", "traffic.0.proto=\"tcp\"", "traffic.0.pattern=\"closed_loop\"")


def run(*overrides, duration_us=200, capture=()):
    world = World(load_scenario(text=f"duration_us = {duration_us}\n", overrides=overrides),
                  capture=capture)
    return world, world.run()


def path_of(world):
    return world.hosts[0].paths[0]


def softirq_ps(world):
    return sum(c.by_kind["softirq"] for c in world.hosts[0].cores)


def conserved(r):
    return r["offered"]["frames"] == (r["delivered_frames"] + sum(r["drops"].values())
                                      + sum(r["in_flight"].values()))


def checksums_valid(frame):
    """Whether scapy, recomputing them, finds the IPv4 header and TCP checksums as sent."""
    again = frame.copy()
    if IP in again:
        del again[IP].chksum
    del again[TCP].chksum
    again = Ether(bytes(again))
    return (again[TCP].chksum == frame[TCP].chksum
            and (IP not in frame or again[IP].chksum == frame[IP].chksum))


# -- the receiver's sequence space ------------------------------------------------------------

def test_a_connection_takes_data_in_order_and_reports_holes_and_duplicates():
    first = bytes(Ether(dst=MAC) / IP(src="10.0.0.2", dst="10.0.0.1")
                  / TCP(sport=4000, dport=5201, flags="A", seq=0xFFFFFF00, ack=7) / (b"x" * 100))
    seg = parse_segment(first)
    conn = Connection(first, seg)
    assert (conn.rcv_nxt, conn.snd_nxt) == (0xFFFFFF00, 7)
    assert conn.receive(seg.seq, 100) == IN_ORDER
    assert conn.rcv_nxt == 0xFFFFFF64 and not conn.ack_due()  # one full segment: not yet
    assert conn.receive(0xFFFFFF64, 100) == IN_ORDER  # the next one: due
    assert conn.rcv_nxt == 0xFFFFFFC8 and conn.ack_due()
    assert conn.receive(0xFFFFFF64, 100) == OLD  # a duplicate
    assert conn.receive(0x0000002C, 100) == HOLE  # 100 bytes missing, across the wrap
    conn.skip(0x0000002C, 100)
    assert conn.rcv_nxt == 0x90 and conn.holes == 1
    assert conn.receive(0x90, 0) == EMPTY


# -- tcp_bulk on Linux: GRO/LRO and delayed ACKs ----------------------------------------------

def stream_pcap(tmp_path, segments, mss, push, gap_us=1.0):
    """A capture of one TCP stream to host 0: ``segments`` of ``mss`` bytes, ``gap_us`` apart,
    PSH on every segment or on none."""
    from scapy.utils import wrpcap

    packets = []
    for n in range(segments):
        p = (Ether(src=PEER, dst=MAC) / IP(src="10.0.0.2", dst="10.0.0.1", flags="DF", id=n)
             / TCP(sport=4000, dport=5201, flags="PA" if push else "A", seq=1 + n * mss, ack=1)
             / (bytes([n & 0xFF]) * mss))
        p.time = n * gap_us * 1e-6
        packets.append(p)
    path = tmp_path / ("push.pcap" if push else "stream.pcap")
    wrpcap(str(path), packets)
    return path


def bulk_replay(pcap, *overrides):
    return run("host.path=\"linux\"", "host.app=\"tcp_bulk\"", "traffic.0.pattern=\"pcap\"",
               f"traffic.0.pcap=\"{pcap}\"", *overrides, duration_us=150, capture=("tx_wire",))


def acks_of(world):
    """The ACK segments the host sent, as scapy reads them."""
    frames = [Ether(data) for _, data in world.sink.capture]
    return [f for f in frames if TCP in f and not len(f[TCP].payload)]


@pytest.mark.parametrize("merge", ["gro", "lro"])
def test_merging_cuts_softirq_work_and_acks_per_segment(tmp_path, merge):
    segments, mss = 120, 1000
    extra = () if merge == "gro" else ("nic.features=[\"rx_csum\", \"tx_csum\", \"rss\", \"lro\"]",
                                       "nic.buffer_bytes=65536")
    merged, r_merged = bulk_replay(stream_pcap(tmp_path, segments, mss, False), *extra)
    alone, r_alone = bulk_replay(stream_pcap(tmp_path, segments, mss, True), *extra)
    for r in (r_merged, r_alone):
        assert r["delivered_frames"] == r["offered"]["frames"] == segments and not r["drops"]
    skbs = len(path_of(merged).app.latency_ps)  # one latency per skb the reader took
    assert len(path_of(alone).app.latency_ps) == segments  # PSH: nothing merges
    assert skbs < segments / 4
    # Linux's rule (more than one full segment unacknowledged): one ACK per two segments
    # when each is an skb of its own (the last, odd one waits for the 40 ms timer) ...
    acks_alone = acks_of(alone)
    assert len(acks_alone) == segments // 2
    # ... at most one per merged skb otherwise.
    acks_merged = acks_of(merged)
    assert len(acks_merged) <= skbs
    # The softirq saves IP and TCP receive and the socket enqueue of every skb merged away,
    # and the ACKs not sent.
    c = CostModel()
    per_skb = c.ip_rcv + c.tcp_rcv + c.socket_enqueue
    per_ack = c.tcp_ack + c.qdisc + c.driver_tx + c.mmio_write
    saved = (segments - skbs) * per_skb + (len(acks_alone) - len(acks_merged)) * per_ack
    assert softirq_ps(alone) - softirq_ps(merged) > 0.8 * saved
    assert softirq_ps(merged) / segments < softirq_ps(alone) / segments


def test_acks_acknowledge_the_highest_in_order_byte_and_are_valid_tcp(tmp_path):
    segments, mss = 60, 1000
    world, r = bulk_replay(stream_pcap(tmp_path, segments, mss, True))
    acks = acks_of(world)
    assert len(acks) == segments // 2
    expected = [1 + 2 * k * mss for k in range(1, segments // 2 + 1)]  # every second segment
    assert [a[TCP].ack for a in acks] == expected
    for a in acks:
        assert (a.src, a.dst) == (MAC, PEER)
        assert (a[IP].src, a[IP].dst) == ("10.0.0.1", "10.0.0.2")
        assert (a[TCP].sport, a[TCP].dport) == (5201, 4000)
        assert a[TCP].flags == "A" and a[TCP].seq == 1  # what the segments acknowledge
        assert a[IP].flags == "DF" and a[IP].ttl == 64
        assert checksums_valid(a)


@pytest.mark.parametrize("overrides", [
    (),
    ("nic.features=[\"rss\"]",),  # checksums in software, both ways
    ("traffic.0.ipv6=true",),
])
def test_stream_acks_are_valid_on_both_paths(overrides):
    for path in ("linux", "mtcp"):
        world, r = run(f"host.path=\"{path}\"", *BULK, "traffic.0.size=1000",
                       "traffic.0.flows=4", "traffic.0.rate_mpps=0.3", *overrides,
                       duration_us=100, capture=("tx_wire",))
        assert r["delivered_frames"] == r["offered"]["frames"] == 30 and not r["drops"]
        acks = acks_of(world)
        assert acks
        by_port = {}
        for a in acks:
            ip = a[IPv6] if IPv6 in a else a[IP]
            assert a[TCP].sport == DPORT and a[TCP].flags == "A"
            by_port.setdefault(a[TCP].dport, []).append(a[TCP].ack)
            assert checksums_valid(a) if IP in a else _tcp6_valid(a)
            assert ip.dst.startswith("10.0.0.") or ip.dst.startswith("fd00::1:")
        # Each flow's ACKs advance over whole segments of its stream.
        payload = 1000 - 4 - 14 - (40 if "traffic.0.ipv6=true" in overrides else 20) - 20
        for port, numbers in by_port.items():
            assert SPORT_BASE <= port < SPORT_BASE + 4
            assert numbers == sorted(set(numbers))
            assert all((n - 1) % payload == 0 for n in numbers)


def _tcp6_valid(frame):
    again = frame.copy()
    del again[TCP].chksum
    return Ether(bytes(again))[TCP].chksum == frame[TCP].chksum


# -- mTCP against Linux ------------------------------------------------------------------------

@pytest.mark.parametrize("size", [64, 512, 1518])
def test_mtcp_receives_more_segments_per_core_than_linux_at_line_rate(size):
    # A 40 Gb/s wire of four streams: more than one core of either takes.
    args = (*BULK, f"traffic.0.size={size}", "traffic.0.flows=4", "wire.rate_gbps=40",
            "pcie.gen=4", "pcie.lanes=16")
    _, linux = run("host.path=\"linux\"", *args, duration_us=300)
    _, mtcp = run("host.path=\"mtcp\"", *args, duration_us=300)
    assert linux["delivered_frames"] < linux["offered"]["frames"]
    assert mtcp["delivered_frames"] > 1.15 * linux["delivered_frames"]
    assert mtcp["cpu_busy"] == [pytest.approx(1.0, abs=0.02)]


# -- tcp_rr -------------------------------------------------------------------------------------

def rr(path, concurrency, *overrides, duration_us=300, capture=()):
    return run(f"host.path=\"{path}\"", *RR, f"traffic.0.concurrency={concurrency}",
               *overrides, duration_us=duration_us, capture=capture)


@pytest.mark.parametrize("path", ["linux", "mtcp"])
@pytest.mark.parametrize("concurrency", [1, 4])
def test_transactions_per_second_are_concurrency_over_the_round_trip(path, concurrency):
    world, r = rr(path, concurrency)
    lat = world.sink.latencies_ps
    mean_rtt_us = sum(lat) / len(lat) / 1e6
    assert r["delivered_frames"] == world.sources[0].replies == len(lat) > 10
    assert r["throughput"]["mpps"] == pytest.approx(concurrency / mean_rtt_us, rel=0.1)
    assert conserved(r) and r["in_flight"]["elsewhere"] <= concurrency
    assert not r["drops"]


def test_mtcp_answers_faster_than_linux_at_concurrency_one():
    _, linux = rr("linux", 1)
    _, mtcp = rr("mtcp", 1)
    # Linux waits for the interrupt (moderation), wakes the thread and makes two system calls;
    # mTCP's polling core finds the request at once.
    assert mtcp["latency_us"]["p50"] < linux["latency_us"]["p50"] - 5
    assert mtcp["throughput"]["mpps"] > 2 * linux["throughput"]["mpps"]


@pytest.mark.parametrize("path", ["linux", "mtcp"])
@pytest.mark.parametrize("overrides", [
    (),
    ("nic.features=[\"rss\"]",),  # checksums in software
    ("traffic.0.ipv6=true", "traffic.0.size=120"),
])
def test_replies_are_tcp_segments_on_the_requests_connection(path, overrides):
    world, r = rr(path, 3, "host.rr_reply_bytes=100", *overrides, duration_us=60,
                  capture=("tx_wire",))
    replies = [Ether(data) for _, data in world.sink.capture]
    assert len(replies) == r["delivered_frames"] > 3
    source = world.sources[0]
    for reply in replies:
        flow = reply[TCP].dport - SPORT_BASE
        request = Ether(source._maker.template(flow, source._size))
        req_ip = request[IPv6] if IPv6 in request else request[IP]
        ip = reply[IPv6] if IPv6 in reply else reply[IP]
        assert (reply.src, reply.dst) == (request.dst, request.src)
        assert (ip.src, ip.dst) == (req_ip.dst, req_ip.src)
        assert (reply[TCP].sport, reply[TCP].dport) == (request[TCP].dport, request[TCP].sport)
        assert reply[TCP].flags == "PA"
        assert reply[TCP].seq == request[TCP].ack
        assert reply[TCP].ack == request[TCP].seq + len(request[TCP].payload)
        assert len(reply[TCP].payload) == 100
        assert checksums_valid(reply) if IP in reply else _tcp6_valid(reply)


# -- conservation and refusals ----------------------------------------------------------------

@pytest.mark.parametrize("path", ["linux", "mtcp"])
@pytest.mark.parametrize("app", ["tcp_bulk", "tcp_rr"])
def test_frames_are_conserved_on_two_cores(path, app):
    traffic = BULK[1:] + ("traffic.0.rate_mpps=1", "traffic.0.flows=16") if app == "tcp_bulk" \
        else RR[1:] + ("traffic.0.concurrency=16",)
    world, r = run(f"host.path=\"{path}\"", f"host.app=\"{app}\"", "host.cores=2",
                   "nic.rxqs=2", "nic.txqs=2", *traffic, duration_us=100)
    assert conserved(r)
    assert r["delivered_frames"] > 0
    # In flight inside the host: segments the Linux readers have not taken from their sockets
    # yet; the rest is what the NIC and the links hold, or requests waiting for their replies.
    queued = sum(skb[2] for th in getattr(path_of(world), "threads", ())
                 for skb, _ in th.sock.queue)
    assert 0 <= r["in_flight"]["elsewhere"] - queued <= (60 if app == "tcp_bulk" else 16)


@pytest.mark.parametrize("overrides, message", [
    (("host.path=\"pmd\"", *BULK), "host.app 'tcp_bulk' needs a TCP stack"),
    (("host.path=\"netmap\"", *RR), "host.app 'tcp_rr' needs a TCP stack"),
    (("host.path=\"mtcp\"",), "runs the TCP applications tcp_bulk and tcp_rr, not host.app"),
    (("host.path=\"linux\"", "host.app=\"tcp_bulk\""), "traffic.0 must be TCP streams"),
    (("host.path=\"linux\"", "host.app=\"tcp_bulk\"", "traffic.0.proto=\"tcp\""),
     "traffic.0 must be TCP streams"),
    (("host.path=\"mtcp\"", "host.app=\"tcp_rr\"", "traffic.0.proto=\"tcp\""),
     "needs pattern = \"closed_loop\" and proto = \"tcp\""),
    (("host.path=\"linux\"", "host.app=\"tcp_rr\"", "traffic.0.pattern=\"closed_loop\""),
     "needs pattern = \"closed_loop\" and proto = \"tcp\""),
    (("host.path=\"mtcp\"", *RR, "traffic.0.ipv6=true", "host.rr_reply_bytes=1460"),
     "does not fit one IPv6 segment"),
])
def test_tcp_applications_are_refused_without_a_stack_or_their_traffic(overrides, message):
    with pytest.raises(ScenarioError, match=message) as info:
        load_scenario(text="", overrides=overrides)
    assert "\n" not in str(info.value)


def test_the_mtcp_path_refuses_other_applications_when_built():
    from nicsim.sim.scenario import Scenario

    scenario = Scenario.model_validate({"host": {"path": "mtcp", "app": "l2fwd"}})
    with pytest.raises(ValueError, match="host.path \"mtcp\" is a TCP stack"):
        World(scenario)
