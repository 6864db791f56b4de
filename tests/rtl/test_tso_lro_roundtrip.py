"""Round trip: TCP sends segmented by the TSO engine and merged by the LRO gateware come back.

No golden reference is trusted here. Random byte streams of several flows are written as TCP
super-frames by scapy (which computes lengths and checksums), cut into MSS-sized segments by the
TSO engine (its gateware through ``nicsim.hw.engines`` once the ``tso`` engine is registered,
else the segmentation reference :func:`nicsim.hw.ref.tso.segment`), interleaved across flows and
merged by the LRO gateware (a send of at most one MSS skips segmentation, as the TSO engine
refuses it). Every super-frame ends with PSH, as a send does, so each must come
back whole: byte for byte the super-frame (headers, IP ID, flags, lengths and checksums), with
``segs`` = the number of segments and ``gso_size`` = the MSS, and the payloads of each flow
in order are its original byte stream.
"""

import random

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw
from test_lro import COMPACT

from nicsim.hw.engines import ENGINES
from nicsim.hw.lro_engine import LroConfig, run_rtl
from nicsim.hw.ref.tso import segment


def super_frames(rng, flows, sends, max_payload):
    """Return ``[(flow, frame, payload)]``: ``sends`` super-frames per flow, in stream order."""
    out = []
    for n in range(flows):
        v6 = rng.random() < 0.4
        vlans = rng.choice((0, 1, 2))
        seq = rng.getrandbits(32)
        ip_id = rng.getrandbits(16)
        ts = rng.getrandbits(32) if rng.random() < 0.5 else None
        for k in range(sends):
            payload = rng.randbytes(rng.randint(1, max_payload))
            l2 = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
            for tag in range(vlans):
                l2 = l2 / Dot1Q(vlan=100 + tag)
            options = [("NOP", None), ("NOP", None), ("Timestamp", (ts + k, 1))] if ts else []
            flags = "PA" if k or rng.random() < 0.7 else "PAC"
            tcp = TCP(sport=4000 + n, dport=443, seq=seq, ack=12345, flags=flags, window=512,
                      options=options)
            if v6:
                ip = IPv6(src=f"fd00::{n + 1}", dst="fd00::100", hlim=64)
            else:
                ip = IP(src=f"10.9.0.{n + 1}", dst="10.9.1.1", id=ip_id, flags="DF", ttl=64)
            out.append((n, bytes(l2 / ip / tcp / Raw(payload)), payload))
            seq = (seq + len(payload)) & 0xFFFFFFFF
            ip_id = (ip_id + 1 + len(payload)) & 0xFFFF
    return out


def segment_all(frames, mss):
    """Segments of each super-frame: TSO gateware when present, else the reference."""
    if "tso" in ENGINES:
        from nicsim.hw.engines import load_config
        from nicsim.hw.engines import run_rtl as engine_rtl

        run = engine_rtl("tso", frames, load_config("tso", None, {"mss": mss}), width=64)
        groups = [[] for _ in frames]
        for frame, origin in zip(run.frames, run.origin, strict=True):
            groups[origin].append(frame)
        return groups
    return [list(segment(frame, mss).frames) for frame in frames]


def interleave(rng, per_flow):
    """Merge per-flow lists into one arrival order, keeping each flow's order."""
    queues = [list(q) for q in per_flow if q]
    order = []
    while queues:
        queue = rng.choice(queues)
        order.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    return order


def round_trip(seed, config, flows, sends, max_payload, mss, width=64):
    rng = random.Random(seed)
    sent = super_frames(rng, flows, sends, max_payload)
    groups = segment_all([frame for _, frame, _ in sent], mss)
    per_flow = [[] for _ in range(flows)]
    for (flow, frame, payload), segments in zip(sent, groups, strict=True):
        if len(payload) <= mss:  # a send of one segment needs no segmentation: sent as it is
            segments = segments or [frame]
        assert segments, "the segmenter dropped a valid super-frame"
        per_flow[flow].append((frame, segments))
    # One flow's sends go out one after the other; flows interleave segment by segment.
    streams = [[(frame, seg, len(segs)) for frame, segs in sends_ for seg in segs]
               for sends_ in per_flow]
    arrivals = interleave(rng, streams)
    run = run_rtl([seg for _, seg, _ in arrivals], config, width=width, backpressure_pct=20,
                  idle_pct=10, seed=seed)
    expected = {}
    for frame, _, count in arrivals:
        expected.setdefault(frame, count)
    assert sorted(run.frames) == sorted(expected)
    for frame, meta in zip(run.frames, run.out_meta, strict=True):
        count = expected[frame]
        assert meta == {"segs": count, "gso_size": mss if count > 1 else 0}
    # The byte streams, read back from the merged frames by scapy.
    streams_back = {}
    for frame in run.frames:
        tcp = Ether(frame)[TCP]
        streams_back.setdefault(tcp.sport - 4000, []).append((tcp.seq, bytes(tcp.payload)))
    for flow in range(flows):
        original = b"".join(payload for f, _, payload in sent if f == flow)
        pieces = streams_back[flow]
        first = pieces[0][0]
        pieces.sort(key=lambda piece: (piece[0] - first) & 0xFFFFFFFF)
        assert b"".join(p for _, p in pieces) == original
    return run


@pytest.mark.parametrize("mss", [1, 100, 1448])
def test_round_trip(mss):
    max_payload = 5 * mss if mss < 1000 else 5800 - 120
    round_trip(seed=mss, config=COMPACT, flows=3, sends=4, max_payload=max_payload, mss=mss)


@pytest.mark.long
def test_round_trip_64k_long():
    run = round_trip(seed=64, config=LroConfig(), flows=4, sends=3, max_payload=65535 - 120,
                     mss=1448)
    assert max(len(f) for f in run.frames) > 60000
