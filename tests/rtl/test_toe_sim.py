"""The TCP engine's front end (ARP, ICMP echo, IPv4 checks) in Amaranth's simulator, against
the golden model hw.ref.tcp.TcpEngine: same output bytes, same drop reasons."""

import random

import pytest
from amaranth.sim import Simulator
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether

from nicsim.hw.ref.tcp import TcpEngine
from nicsim.rtl.toe.engine import DROP_REASONS, ToeEngine

E_MAC = "02:00:00:00:00:02"
P_MAC = "02:00:00:00:00:01"
E_IP, P_IP = "10.0.0.2", "10.0.0.1"


def corpus(seed=1, jumbo=True):
    rng = random.Random(seed)
    eth = Ether(src=P_MAC, dst=E_MAC)
    frames = [
        Ether(src=P_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=P_MAC, psrc=P_IP, pdst=E_IP),
        Ether(src=P_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=P_MAC, psrc=P_IP,
                                                        pdst="10.0.0.9"),
        Ether(src=P_MAC, dst=E_MAC) / ARP(op=2, hwsrc=P_MAC, psrc=P_IP, pdst=E_IP),
        Ether(src=P_MAC, dst=E_MAC) / ARP(op=5, hwsrc=P_MAC, psrc=P_IP, pdst=E_IP),
        Ether(src=P_MAC, dst=E_MAC) / ARP(op=1, ptype=0x86DD, hwsrc=P_MAC, psrc=P_IP,
                                          pdst=E_IP),
        eth / IP(src=P_IP, dst="10.0.0.7") / ICMP() / b"x",
        eth / IP(src=P_IP, dst=E_IP) / UDP(sport=1, dport=2) / b"udp",
        eth / IP(src=P_IP, dst=E_IP, flags="MF") / ICMP() / b"frag",
        eth / IP(src=P_IP, dst=E_IP, options=b"\x01\x01\x01\x00") / ICMP() / b"opt",
        eth / IP(src=P_IP, dst=E_IP) / ICMP(type=13) / b"timestamp",
        eth / IP(src=P_IP, dst=E_IP) / ICMP(type=8, code=1) / b"code",
        eth / IPv6(src="fe80::1", dst="fe80::2") / ICMP(),
    ]
    for size in [0, 1, 2, 7, 8, 9, 17, 56, 100, 1000, 1472] + ([8000] if jumbo else []):
        frames.append(eth / IP(src=P_IP, dst=E_IP, id=rng.randrange(65536),
                               ttl=rng.randrange(1, 256))
                      / ICMP(type=8, id=rng.randrange(65536), seq=rng.randrange(65536))
                      / rng.randbytes(size))
    frames = [bytes(f) for f in frames]
    padded = bytes(eth / IP(src=P_IP, dst=E_IP) / ICMP(type=8, id=7) / b"ab") + b"\x00" * 12
    frames.append(padded)  # Ethernet padding after the datagram
    bad_ip = bytearray(frames[-3])
    bad_ip[24] ^= 0x40
    bad_icmp = bytearray(frames[-3])
    bad_icmp[-1] ^= 0x01
    frames += [bytes(bad_ip), bytes(bad_icmp), frames[-4][:30], frames[-4][:-5], b"\x01" * 13,
               frames[0][:41], bytes(60)]
    frames += tcp_corpus(rng)
    rng.shuffle(frames)
    return frames


def tcp_corpus(rng):
    """Segments to a closed engine: RST answers (RFC 9293 §3.10.7.1) and counted drops."""
    ip = Ether(src=P_MAC, dst=E_MAC) / IP(src=P_IP, dst=E_IP, id=rng.randrange(65536))

    def seg(**fields):
        fields.setdefault("sport", rng.randrange(1, 65536))
        fields.setdefault("dport", rng.randrange(1, 65536))
        fields.setdefault("seq", rng.randrange(1 << 32))
        fields.setdefault("ack", rng.randrange(1 << 32))
        return ip / TCP(**fields)

    frames = [seg(flags=f) / (rng.randbytes(rng.randrange(0, 60)) if rng.random() < 0.5 else b"")
              for f in ("S", "SA", "A", "PA", "FA", "F", "R", "RA", "SF", "SR", "", "U", "FS",
                        "CEA", "SEC", "P")]
    frames += [seg(flags="S", seq=(1 << 32) - 1) / b"wrap", seg(flags="FPU", seq=(1 << 32) - 3)
               / b"abcdef", seg(flags="S", options=[("MSS", 1460), ("WScale", 7),
                                                   ("SAckOK", b""), ("NOP", None)]),
               seg(flags="A", options=[("NOP", None)] * 3 + [(2, b"\x05")]) / b"bad opt"]
    frames = [bytes(f) for f in frames]
    bad_csum = bytearray(frames[0])
    bad_csum[-1 if len(bad_csum) > 54 else 50] ^= 0x10
    bad_offset = bytearray(frames[2])
    bad_offset[46] = 0x40  # data offset 4 words
    big_offset = bytearray(frames[2][:54])
    big_offset[46] = 0xF0  # 60 bytes of header in a 20-byte segment
    truncated = bytearray(frames[2][:54])
    truncated[16:18] = (36).to_bytes(2, "big")  # a 16-byte TCP "segment"
    truncated[24:26] = b"\x00\x00"
    from nicsim.hw.ref.checksum import ones_sum
    for f in (truncated, big_offset, bad_offset):
        f[24:26] = b"\x00\x00"
        f[24:26] = (~ones_sum(bytes(f[14:34])) & 0xFFFF).to_bytes(2, "big")
    return frames + [bytes(bad_csum), bytes(bad_offset), bytes(big_offset), bytes(truncated)]


def beats(frame, nb=8):
    out = []
    for start in range(0, len(frame), nb):
        chunk = frame[start:start + nb]
        out.append({"data": int.from_bytes(chunk, "little"), "keep": (1 << len(chunk)) - 1,
                    "last": int(start + nb >= len(frame))})
    return out


def run_rtl(frames, stall_seed=None, width=64):
    nb = width // 8
    dut = ToeEngine(width)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    out_frames = []
    counters = {}
    state = {"sent": False}

    async def producer(ctx):
        rng = random.Random(5)
        for frame in frames:
            for beat in beats(frame, nb):
                if stall_seed is not None and rng.random() < 0.3:
                    await ctx.tick()
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, beat)
                await ctx.tick().until(dut.i.ready)
                ctx.set(dut.i.valid, 0)
        for _ in range(3000):
            await ctx.tick()
        state["sent"] = True
        for k, name in enumerate(["frames_in", "arp", "echo", "rst"] + list(DROP_REASONS)):
            ctx.set(dut.bus.addr, 4 * k)
            ctx.set(dut.bus.r_en, 1)
            await ctx.tick()
            ctx.set(dut.bus.r_en, 0)
            await ctx.tick()
            counters[name] = ctx.get(dut.bus.r_data)

    async def consumer(ctx):
        rng = random.Random(stall_seed or 0)
        current = bytearray()
        while not state["sent"]:
            ready = 1 if stall_seed is None else int(rng.random() < 0.6)
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid and ready:
                n = bin(payload.keep).count("1")
                current += payload.data.to_bytes(nb, "little")[:n]
                if payload.last:
                    out_frames.append(bytes(current))
                    current = bytearray()

    sim.add_testbench(producer)
    sim.add_testbench(consumer, background=True)
    sim.run()
    return out_frames, counters


def model_run(frames):
    e = TcpEngine(bytes.fromhex("020000000002"), E_IP)
    out = []
    for i, f in enumerate(frames):
        e.receive(f, i)
        out += e.pop_tx()
    return out, e


def check(frames, stall_seed=None, width=64):
    expected, model = model_run(frames)
    got, counters = run_rtl(frames, stall_seed, width)
    assert got == expected
    assert counters["frames_in"] == len(frames)
    assert counters["arp"] == model.stats["arp_replies"]
    assert counters["echo"] == model.stats["echo_replies"]
    assert counters["rst"] == model.stats["rst_sent"]
    drops = {k: v for k, v in counters.items() if k in DROP_REASONS and v}
    assert drops == dict(model.drops)


@pytest.mark.parametrize("width", [64, 128, 256, 512])
def test_front_end_matches_model(width):
    check(corpus(jumbo=False), width=width)


def test_front_end_matches_model_with_stalls():
    check(corpus(2, jumbo=False)[:30], stall_seed=3)
