"""Figures of the TCP offload engine.

* Protocol goodput of the golden model (hw.ref.tcp) on a simulated 64-bit wire: one bulk
  connection and 16 concurrent ones, payload bits delivered per engine clock cycle, the wire
  moving 64 bits a cycle (10 Gb/s at 156.25 MHz) with a one-way latency of 1 us, no loss and
  1% loss. This is what the protocol machinery (windows, ACK clocking, NewReno) allows at line
  rate; the ceiling with a 1460-byte MSS is 64 * 1460 / 1514 = 61.7 bits per cycle (Ethernet
  and IPv4/TCP headers; preamble and inter-frame gap not modelled).
* RTL session engine (rtl/toe/sessions.py, 64 bit, in Amaranth's simulator): one bulk
  connection with the golden model as the peer over the simulated wire, the gateware receiving
  (the model sends, an application on the gateware's streams reads) and sending; payload bits
  per clock cycle the gateware spent (frames in and out, buffer copies, the application
  streams, ACKs: the engine does one thing at a time, so this is its throughput).
* RTL front end (rtl/toe, on Verilator with the C++ harness): ICMP echo replies, bits of
  request per cycle for 64-byte and 1500-byte pings back to back.
* Linux bridge: wall-clock frames per second through the TAP bridge with the golden model,
  Linux echoing 4 MiB through the engine (skipped without root, /dev/net/tun, ip netns).

Prints the figures and writes benchmarks/results/toe.json.
"""

import json
import platform
import random
import socket
import threading
import time
from pathlib import Path

from nicsim.hw.ref.tcp import TcpConfig, TcpEngine, cycles
from nicsim.hw.toe.apps import AppHost, EchoApp, SendApp, SinkApp
from nicsim.hw.toe.impair import Impairment
from nicsim.hw.toe.loopback import Loopback

RESULTS = Path(__file__).parent / "results" / "toe.json"
PEER_WINDOW_SENDING = 1 << 15  # the model's receive buffer when the gateware sends to it
MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def model_goodput(connections, total_bytes, loss=0.0):
    cfg = TcpConfig(rx_buffer=1 << 20, tx_buffer=1 << 20, max_sessions=64)
    a = TcpEngine(MAC_A, "10.0.0.1", cfg)
    b = TcpEngine(MAC_B, "10.0.0.2", cfg)
    sink = SinkApp(b, 9)
    per = total_bytes // connections
    payloads = [random.Random(i).randbytes(per) for i in range(connections)]
    sender = SendApp(a, "10.0.0.2", 9, payloads)
    link = Loopback(a, b, latency=cycles(1e-6), bits_per_cycle=64,
                    impair_ab=Impairment(loss, 0, 0, 1), impair_ba=Impairment(loss, 0, 0, 2),
                    hosts=[AppHost(a, [sender]), AppHost(b, [sink])])
    # time from the first SYN to the last byte delivered
    start = link.now
    wall = time.perf_counter()
    ok = link.run(lambda: sum(len(d) for d in sink.data.values()) == per * connections,
                  max_cycles=cycles(120))
    wall = time.perf_counter() - wall
    assert ok, "transfer did not finish"
    assert sorted(bytes(d) for d in sink.data.values()) == sorted(payloads)
    spent = link.now - start
    return {"connections": connections, "bytes": per * connections, "loss": loss,
            "cycles": spent, "goodput_bits_per_cycle": round(8 * per * connections / spent, 2),
            "retransmits": a.stats["retransmits"], "timeouts": a.stats["timeouts"],
            "wall_s": round(wall, 2)}


def rtl_echo_rate():
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import Ether

    from nicsim.hw.harness import build_harness, run_harness

    build = build_harness("toe", {"width": 64})
    rows = []
    for size in (64, 1500):
        payload = size - 14 - 20 - 8
        frames = [bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                        / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=8, seq=i)
                        / bytes(payload)) for i in range(200)]
        done = run_harness(build, frames)
        assert len(done.frames) == len(frames)
        rows.append({"frame_bytes": size, "frames": len(frames), "in_span_cycles": done.in_span,
                     "request_bits_per_cycle": round(8 * size * len(frames) / done.in_span, 2)})
    return rows


def rtl_goodput(direction, total_bytes):
    from nicsim.hw.toe.rtl_engine import RtlEngine

    model = TcpEngine(MAC_A, "10.0.0.1", TcpConfig(rx_buffer=1 << 16, tx_buffer=1 << 16))
    rtl = RtlEngine(MAC_B, "10.0.0.2", sessions=4, buf_bits=16, tick_s=0.001)
    data = random.Random(5).randbytes(total_bytes)
    if direction == "receive":
        sink = SinkApp(rtl, 9)
        sender = SendApp(model, "10.0.0.2", 9, [data])
        hosts = [AppHost(model, [sender]), AppHost(rtl, [sink])]
    else:
        sink = SinkApp(model, 9)
        sender = SendApp(rtl, "10.0.0.1", 9, [data])
        hosts = [AppHost(rtl, [sender]), AppHost(model, [sink])]
    link = Loopback(model, rtl, latency=cycles(1e-6), hosts=hosts)
    wall = time.perf_counter()
    start = rtl.cycles
    ok = link.run(lambda: sum(len(d) for d in sink.data.values()) == total_bytes,
                  max_cycles=cycles(60))
    spent = rtl.cycles - start
    wall = time.perf_counter() - wall
    assert ok, "transfer did not finish"
    assert [bytes(d) for d in sink.data.values()] == [data]
    return {"direction": direction, "bytes": total_bytes, "gateware_cycles": spent,
            "goodput_bits_per_cycle": round(8 * total_bytes / spent, 2),
            "simulated_cycles_per_wall_s": round(spent / wall), "wall_s": round(wall, 1)}


def send_profile(total_bytes=160 << 10, skip_bytes=96 << 10, clock="events"):
    """Where the cycles of a sending run go: the gateware (Amaranth's simulator, 64 bit)
    sends ``total_bytes`` to the model over the simulated wire with the application inside
    the simulation (``auto_send``), on the wire's clock (``clock="wire"``) or run until idle
    at each event (``"events"``), the model's window ``PEER_WINDOW_SENDING``; every cycle
    the state machine's state is counted, and the cycles in which the transmitter sends a
    beat, the application mover moves a word and a frame comes in, once the model has the
    first ``skip_bytes`` (the slow start and the first fill of the send ring left out); and
    the states while the transmitter and the mover had nothing to do."""
    from amaranth.sim import Simulator

    from nicsim.hw.toe import rtl_engine

    counts, busy = {}, {"transmitter": 0, "mover": 0, "frame_in": 0, "cycles": 0}
    idle_tx, idle_ax = {}, {}  # states while the transmitter, the mover had nothing

    class Profiled(rtl_engine.RtlEngine):
        def _start(self):
            super()._start()
            dut = self._dut
            fsm = dut.state_machine
            names = fsm.decoding

            ses = dut.session_logic

            async def watch(ctx):
                async for _clk, _rst, state, ov, ordy, tv, trdy, iv, irdy, st, ax in \
                        ctx.tick().sample(fsm.state, dut.o.valid, dut.o.ready,
                                          dut.tx_data.valid, dut.tx_data.ready, dut.i.valid,
                                          dut.i.ready, ses.st_busy, ses.ax_busy):
                    if not self._counting:
                        continue
                    name = names[state]
                    counts[name] = counts.get(name, 0) + 1
                    busy["cycles"] += 1
                    busy["transmitter"] += ov & ordy
                    busy["mover"] += tv & trdy
                    busy["frame_in"] += iv & irdy
                    if not st:
                        idle_tx[name] = idle_tx.get(name, 0) + 1
                    if not ax:
                        idle_ax[name] = idle_ax.get(name, 0) + 1

            self._counting = False
            self._sim.add_process(watch)
            assert isinstance(self._sim, Simulator)

    model = TcpEngine(MAC_A, "10.0.0.1", TcpConfig(rx_buffer=PEER_WINDOW_SENDING,
                                                   tx_buffer=1 << 16))
    rtl = Profiled(MAC_B, "10.0.0.2", sessions=4, buf_bits=16, tick_s=0.001,
                   clocked=clock == "wire")
    rtl.auto_send()
    data = random.Random(5).randbytes(total_bytes)
    sink = SinkApp(model, 9)
    sender = SendApp(rtl, "10.0.0.1", 9, [data])
    hosts = [AppHost(rtl, [sender]), AppHost(model, [sink])]
    link = Loopback(model, rtl, latency=cycles(1e-6), hosts=hosts)

    def done():
        got = sum(len(d) for d in sink.data.values())
        rtl._counting = got >= skip_bytes
        return got == total_bytes

    ok = link.run(done, max_cycles=cycles(60))
    assert ok, "transfer did not finish"
    assert [bytes(d) for d in sink.data.values()] == [data]
    spent = busy["cycles"]
    moved = total_bytes - skip_bytes
    segments = moved / 1460
    return {"clock": clock, "bytes": total_bytes, "counted_bytes": moved,
            "gateware_cycles": spent,
            "goodput_bits_per_cycle": round(8 * moved / spent, 2),
            "cycles_per_segment": round(spent / segments, 1),
            "busy_cycles": busy,
            "states_per_segment": {k: round(v / segments, 1) for k, v in
                                   sorted(counts.items(), key=lambda kv: -kv[1])},
            "transmitter_idle_by_state": dict(sorted(idle_tx.items(), key=lambda kv: -kv[1])),
            "mover_idle_by_state": dict(sorted(idle_ax.items(), key=lambda kv: -kv[1]))}


def verilator_goodput(direction, connections, per_connection, app="python", clock="events"):
    """Goodput of the gateware on Verilator, ``connections`` at once to the model, in payload
    bits per gateware clock cycle (cycles in which the gateware had work; between events the
    simulation does not run). The build is the one the tests use (16 sessions, 10 ms ticks).

    ``clock``: ``"events"``, the driver runs the gateware until it is idle at each event (a
    frame, a tick, an application call) while the wire's clock stands still; ``"wire"``, the
    gateware runs on the wire's clock (``RtlEngine(clocked=True)``): in slices up to the next
    frame on the wire, so that ACKs arrive while segments still leave and frames while
    transfers run. ``wire_cycles`` is the span of the gateware's clock on the wire (from the
    first command to the last byte at the sink, idle time included).

    ``app``: ``"python"``, the sink's ``RECV`` or the sender's ``SEND`` calls, each run on its
    own after the frames before it; ``"auto"``, the application inside the simulation
    (:meth:`VerilatorEngine.auto_receive`, :meth:`VerilatorEngine.auto_send`): a ``RECV`` at
    each data notification, a ``SEND`` at each space notification, taken at the next frame
    boundary, their bytes moved on the second memory port while frames come in and segments
    are staged.

    Sending, the model offers a window of half the gateware's 64 KiB send buffer
    (``PEER_WINDOW_SENDING``): with a window as large as the buffer, every byte in the ring
    is in flight, so the bytes an ACK frees must be written before anything new can be sent,
    and writing cannot overlap staging whoever the application is."""
    from nicsim.hw.toe.verilator_engine import VerilatorEngine

    window = PEER_WINDOW_SENDING if direction == "send" else 1 << 16
    model = TcpEngine(MAC_A, "10.0.0.1", TcpConfig(rx_buffer=window, tx_buffer=1 << 16))
    rtl = VerilatorEngine(MAC_B, "10.0.0.2", sessions=16, buf_bits=16, tick_s=0.01,
                          fixed_isn=0xFFFF_F000, time_wait=0.2, clocked=clock == "wire")
    if app == "auto":
        rtl.auto_receive()
        rtl.auto_send()
    rng = random.Random(6)
    payloads = [rng.randbytes(per_connection) for _ in range(connections)]
    total = per_connection * connections
    if direction == "receive":
        sink = SinkApp(rtl, 9)
        sender = SendApp(model, "10.0.0.2", 9, payloads)
        hosts = [AppHost(model, [sender]), AppHost(rtl, [sink])]
    else:
        sink = SinkApp(model, 9)
        sender = SendApp(rtl, "10.0.0.1", 9, payloads)
        hosts = [AppHost(rtl, [sender]), AppHost(model, [sink])]
    link = Loopback(model, rtl, latency=cycles(1e-6), hosts=hosts)
    wall = time.perf_counter()
    start, clock0 = rtl.cycles, rtl.clock
    ok = link.run(lambda: sum(len(d) for d in sink.data.values()) == total,
                  max_cycles=cycles(120))
    spent = rtl.cycles - start
    wall = time.perf_counter() - wall
    assert ok, "transfer did not finish"
    assert sorted(bytes(d) for d in sink.data.values()) == sorted(payloads)
    row = {"direction": direction, "connections": connections, "app": app, "clock": clock,
           "peer_window": window,
           "bytes": total, "gateware_cycles": spent,
           "goodput_bits_per_cycle": round(8 * total / spent, 2)}
    if clock == "wire":
        span = max(rtl.clock, link.now) - clock0
        row.update(wire_cycles=span, wire_bits_per_cycle=round(8 * total / span, 2))
    row.update(simulated_cycles_per_wall_s=round(spent / wall), wall_s=round(wall, 1))
    return row


def verilator_burst(direction, segments=40, reader="after"):
    """The network side of the gateware on Verilator: ``receive``: ``segments`` in-order MSS
    segments back to back into one connection (as a wire at line rate delivers them), read by
    the application afterwards (``reader="after"``: the network side alone; the receive ring
    holds them all) or while they arrive (``"auto"``: the reader inside the simulation, a
    ``RECV`` at each data notification, its bytes sent on the second memory port), byte-exact
    either way; ``send``: the run in which one ACK releases the most segments of a bulk send
    (after slow start opened the window). Payload bits per gateware cycle of that run."""
    from nicsim.hw.ref.tcp import ACK, PSH, SYN, build_tcp_frame, parse_tcp_frame
    from nicsim.hw.toe.verilator_engine import VerilatorEngine

    rtl = VerilatorEngine(MAC_B, "10.0.0.2", sessions=16, buf_bits=16, tick_s=0.01,
                          fixed_isn=0xFFFF_F000, time_wait=0.2)
    if reader == "auto":
        rtl.auto_receive()
    peer_ip, our_ip = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    mod = 1 << 32

    def seg(flags, seq, ack, payload=b"", **opts):
        return build_tcp_frame(MAC_A, MAC_B, peer_ip, our_ip, 40000, 9, seq, ack, flags,
                               opts.pop("window", 65535), payload, **opts)

    rtl.listen(9)
    now = cycles(0.001)
    rtl.receive(seg(SYN, 1000, 0, mss=1460, wscale=7), now)
    snd = (parse_tcp_frame(rtl.pop_tx()[0]).seq + 1) % mod
    rcv = 1001
    rtl.receive(seg(ACK, rcv, snd, window=1 << 14), 2 * now)  # 2 MiB with the scale of 7
    rtl.notifications()
    if direction == "receive":
        data = random.Random(7).randbytes(1460 * segments)
        frames = [seg(ACK | PSH, rcv + k, snd, data[k:k + 1460], window=1 << 14)
                  for k in range(0, len(data), 1460)]
        start = rtl.cycles
        rtl.receive_burst(frames, 3 * now)
        spent = rtl.cycles - start
        acks = [parse_tcp_frame(f).ack for f in rtl.pop_tx()]
        assert max(acks) == (rcv + len(data)) % mod, "not every segment was taken"
        sid = rtl.sessions()[0]
        got = bytearray()
        while chunk := rtl.recv(sid):
            got += chunk
        assert bytes(got) == data
        moved = len(data)
    else:
        data = random.Random(8).randbytes(1 << 20)
        sid = rtl.sessions()[0]
        left = memoryview(data)
        acked, best, t = 0, None, 3 * now
        while acked < len(data):
            if left:
                left = left[rtl.send(sid, bytes(left[:1 << 16])):]
            t += now
            start = rtl.cycles
            rtl.receive(seg(ACK, rcv, snd + acked, window=1 << 14), t)
            spent = rtl.cycles - start
            out = [parse_tcp_frame(f) for f in rtl.pop_tx()]
            payload = sum(len(o.payload) for o in out)
            if payload and (best is None or payload > best[0]):
                best = (payload, spent, len(out))
            if out:
                acked = max(acked, max((o.seq - snd) % mod + len(o.payload) for o in out))
        moved, spent, _ = best
    return {"direction": direction, "reader": reader if direction == "receive" else None,
            "payload_bytes": moved, "gateware_cycles": spent,
            "bits_per_cycle": round(8 * moved / spent, 2)}


def verilator_rows():
    rows = []
    for clock in ("events", "wire"):
        for connections, per in ((1, 1 << 20), (16, 64 << 10)):
            for direction in ("receive", "send"):
                for app in ("auto", "python"):
                    rows.append(verilator_goodput(direction, connections, per, app, clock))
                    print(json.dumps(rows[-1]))
    return rows


def verilator_bursts():
    return [verilator_burst("receive", reader="after"), verilator_burst("receive", reader="auto"),
            verilator_burst("send")]


def bridge_rate():
    from nicsim.hw.toe.bridge import TapBridge, missing_requirements

    missing = missing_requirements()
    if missing:
        return {"skipped": f"needs {missing}"}
    engine = TcpEngine(MAC_B, "10.0.0.2", TcpConfig(rx_buffer=1 << 18, tx_buffer=1 << 18))
    echo = EchoApp(engine, 7)
    data = random.Random(3).randbytes(4 << 20)

    def client():
        sock = socket.create_connection(("10.0.0.2", 7), timeout=60)
        got = bytearray()

        def reader():
            while chunk := sock.recv(1 << 16):
                got.extend(chunk)

        t = threading.Thread(target=reader)
        t.start()
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        t.join(60)
        sock.close()
        return bytes(got)

    with TapBridge(engine, [AppHost(engine, [echo])]) as bridge:
        start = time.perf_counter()
        got = bridge.wait(bridge.submit(client), 120)
        wall = time.perf_counter() - start
        frames = bridge.frames_to_engine + bridge.frames_to_linux
    assert got == data
    return {"bytes_echoed": len(data), "frames": frames, "wall_s": round(wall, 2),
            "frames_per_s": round(frames / wall), "goodput_mbit_s": round(16 * len(data) / wall
                                                                          / 1e6, 1)}


def rtl_goodput_rows():
    """Both directions of :func:`rtl_goodput` with 32 KiB."""
    return [rtl_goodput(d, 32 << 10) for d in ("receive", "send")]


def _refresh(rows):
    """Recompute the named rows (name -> function) into the results file, keeping the others."""
    results = json.loads(RESULTS.read_text())
    for name, run in rows.items():
        results[name] = run()
        print(json.dumps(results[name]))
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


def main():
    import sys

    if "--verilator-only" in sys.argv:
        # refresh the Verilator rows alone
        _refresh({"verilator_goodput": verilator_rows, "verilator_burst": verilator_bursts})
        return
    if "--send-profile" in sys.argv:
        # where a sending run's cycles go (Amaranth's simulator)
        _refresh({"rtl_send_profile": send_profile})
        return
    if "--rtl-goodput-only" in sys.argv or "--rtl-only" in sys.argv:
        # refresh the RTL rows alone (the others need a quiet machine); --rtl-only: the
        # front end's echo rate too
        rows = {"rtl_echo": rtl_echo_rate} if "--rtl-only" in sys.argv else {}
        _refresh({**rows, "rtl_goodput": rtl_goodput_rows})
        return
    results = {"machine": platform.machine(), "python": platform.python_version(),
               "model_goodput": [], "rtl_echo": None, "bridge": None}
    for connections, loss in ((1, 0.0), (16, 0.0), (1, 0.01), (16, 0.01)):
        row = model_goodput(connections, 8 << 20, loss)
        print(json.dumps(row))
        results["model_goodput"].append(row)
    for name, run in (("rtl_echo", rtl_echo_rate), ("rtl_goodput", rtl_goodput_rows),
                      ("rtl_send_profile", send_profile),
                      ("verilator_goodput", verilator_rows),
                      ("verilator_burst", verilator_bursts), ("bridge", bridge_rate)):
        results[name] = run()
        print(json.dumps(results[name]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
