"""The TCP engine's golden model against the Linux kernel's TCP stack, through a TAP bridge.

The kernel in a network namespace is the independent oracle: its sockets must deliver the
engine's bytes exactly, its handshake, close, reset and window handling must interoperate.
Needs root, /dev/net/tun and ``ip netns``; without them every test here is skipped with the
reason.
"""

import os
import random
import socket
import struct
import threading
import time

import pytest

from nicsim.hw.ref.tcp import (
    ACK,
    SYN,
    Notice,
    State,
    TcpConfig,
    TcpEngine,
    cycles,
    parse_tcp_frame,
)
from nicsim.hw.toe.apps import AppHost, EchoApp, SendApp, SinkApp
from nicsim.hw.toe.bridge import TapBridge, missing_requirements, ping
from nicsim.hw.toe.impair import Impairment

MISSING = missing_requirements()
pytestmark = pytest.mark.skipif(MISSING is not None,
                                reason=f"Linux bridge tests need {MISSING}")

ENGINE_IP = "10.0.0.2"
LINUX_IP = "10.0.0.1"
ENGINE_MAC = bytes.fromhex("020000000002")
MIB = 1 << 20


def make_engine(**overrides):
    params = {"rx_buffer": 1 << 18, "tx_buffer": 1 << 18, "time_wait": cycles(0.2)}
    params.update(overrides)
    return TcpEngine(ENGINE_MAC, ENGINE_IP, TcpConfig(**params))


def impaired(seed):
    return {"to_engine": Impairment(0.01, 0.01, 0.01, seed),
            "to_linux": Impairment(0.01, 0.01, 0.01, seed + 1)}


def echo_client(data, port=7, timeout=60):
    """Connect, send ``data``, half-close, return everything read until EOF."""
    sock = socket.create_connection((ENGINE_IP, port), timeout=timeout)
    got = bytearray()

    def reader():
        while chunk := sock.recv(1 << 16):
            got.extend(chunk)

    thread = threading.Thread(target=reader)
    thread.start()
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
    thread.join(timeout)
    sock.close()
    return bytes(got)


def listen_socket(port, rcvbuf=None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((LINUX_IP, port))
    sock.listen(64)
    return sock


def accept_all(listener, count, timeout=60, delay_read=0.0):
    """Accept ``count`` connections, read each to EOF, close; return the data by peer port."""
    listener.settimeout(timeout)
    results = {}

    def serve(conn, peer):
        conn.settimeout(timeout)
        if delay_read:
            time.sleep(delay_read)
        data = bytearray()
        while chunk := conn.recv(1 << 16):
            data.extend(chunk)
        conn.close()
        results[peer[1]] = bytes(data)

    threads = []
    for _ in range(count):
        conn, peer = listener.accept()
        t = threading.Thread(target=serve, args=(conn, peer))
        t.start()
        threads.append(t)
    for t in threads:
        t.join(timeout)
    listener.close()
    return results


def bridge_for(engine, apps, **kwargs):
    return TapBridge(engine, [AppHost(engine, apps)], host_ip=LINUX_IP, **kwargs)


def assert_clean(engine):
    bad = {k: v for k, v in engine.drops.items()
           if k in ("bad_tcp_checksum", "bad_ip_checksum", "truncated", "bad_flags",
                    "session_table_full")}
    assert not bad, bad


def test_ping():
    engine = make_engine()
    with bridge_for(engine, []) as bridge:
        assert bridge.wait(bridge.submit(ping, ENGINE_IP, 3)) == 3
    assert engine.stats["echo_replies"] == 3
    assert engine.stats["arp_replies"] >= 1


def run_echo(engine, data, clients=1, timeout=60, **bridge_kwargs):
    echo = EchoApp(engine, 7)
    with bridge_for(engine, [echo], **bridge_kwargs) as bridge:
        futures = [bridge.submit(echo_client, d, 7, timeout) for d in data]
        bridge.run(lambda: all(f.done() for f in futures), timeout)
        results = [f.result(timeout=1) for f in futures]
        # the engine closes after the peer's FIN; its sessions end when Linux acks the FIN
        bridge.run(lambda: not engine.sessions(), 5)
        leftover = engine.sessions()
    return echo, results, leftover


def test_linux_echo_1mib():
    engine = make_engine()
    data = random.Random(1).randbytes(MIB)
    echo, (result,), leftover = run_echo(engine, [data])
    assert result == data
    assert echo.finished == 1 and not echo.resets
    assert leftover == []  # LAST-ACK ended by Linux's ACK of the engine's FIN
    assert_clean(engine)


def test_engine_sends_1mib():
    engine = make_engine()
    data = random.Random(2).randbytes(MIB)
    with bridge_for(engine, []) as bridge:
        listener = bridge.submit(listen_socket, 5001).result(timeout=10)
        done = bridge.submit(accept_all, listener, 1)
        sender = SendApp(engine, LINUX_IP, 5001, [data])
        bridge.hosts[0].apps.append(sender)
        results = bridge.wait(done, 60)
        (sid,) = sender.opened
        # the engine closed first: FIN-WAIT-2, then TIME-WAIT once Linux closes, then released
        bridge.run(lambda: sid in sender.released, 5)
    assert list(results.values()) == [data]
    assert sid in sender.released and not sender.resets
    assert_clean(engine)


def test_linux_echo_impaired():
    engine = make_engine()
    data = random.Random(3).randbytes(MIB)
    kwargs = impaired(10)
    echo, (result,), _ = run_echo(engine, [data], **kwargs)
    assert result == data
    assert kwargs["to_engine"].counts["dropped"] and kwargs["to_linux"].counts["dropped"]
    assert kwargs["to_engine"].counts["reordered"] and kwargs["to_linux"].counts["duplicated"]
    assert engine.stats["retransmits"] > 0
    assert not echo.resets


def test_engine_sends_impaired():
    engine = make_engine()
    data = random.Random(4).randbytes(MIB)
    kwargs = impaired(20)
    with bridge_for(engine, [], **kwargs) as bridge:
        listener = bridge.submit(listen_socket, 5002).result(timeout=10)
        done = bridge.submit(accept_all, listener, 1)
        sender = SendApp(engine, LINUX_IP, 5002, [data])
        bridge.hosts[0].apps.append(sender)
        results = bridge.wait(done, 90)
    assert list(results.values()) == [data]
    assert engine.stats["retransmits"] > 0
    assert not sender.resets


def test_16_concurrent_linux_clients():
    engine = make_engine(rx_buffer=1 << 16, tx_buffer=1 << 16)
    rng = random.Random(5)
    data = [rng.randbytes(rng.randrange(1, 96 * 1024)) for _ in range(16)]
    echo, results, leftover = run_echo(engine, data, clients=16)
    assert results == data
    assert echo.finished == 16
    assert leftover == []


def test_16_concurrent_engine_connections():
    engine = make_engine(rx_buffer=1 << 16, tx_buffer=1 << 16)
    rng = random.Random(6)
    data = [rng.randbytes(rng.randrange(1, 96 * 1024)) for _ in range(16)]
    with bridge_for(engine, []) as bridge:
        listener = bridge.submit(listen_socket, 5003).result(timeout=10)
        done = bridge.submit(accept_all, listener, 16)
        sender = SendApp(engine, LINUX_IP, 5003, data)
        bridge.hosts[0].apps.append(sender)
        results = bridge.wait(done, 60)
    by_port = {engine_port: d for engine_port, d in
               zip((49152 + i for i in range(16)), data, strict=True)}
    assert results == by_port


def test_linux_closes_first():
    """Linux sends FIN first: the engine reaches CLOSE-WAIT, closes, LAST-ACK, released."""
    engine = make_engine()
    sink = SinkApp(engine, 9)
    states = []
    with bridge_for(engine, [sink]) as bridge:
        def client():
            sock = socket.create_connection((ENGINE_IP, 9), timeout=10)
            sock.sendall(b"hello")
            sock.shutdown(socket.SHUT_WR)
            rest = sock.recv(10)  # EOF after the engine's FIN
            sock.close()
            return rest
        result = bridge.wait(bridge.submit(client), 10)
        bridge.run(lambda: not engine.sessions(), 5)
        states = engine.sessions()
    assert result == b""
    assert [bytes(d) for d in sink.data.values()] == [b"hello"]
    assert states == []


def test_engine_closes_first_time_wait():
    """The engine sends FIN first: FIN-WAIT-1/2, TIME-WAIT for time_wait, then released."""
    engine = make_engine(time_wait=cycles(0.3))
    sender = SendApp(engine, LINUX_IP, 5004, [b"x" * 3000])
    with bridge_for(engine, [sender]) as bridge:
        listener = bridge.submit(listen_socket, 5004).result(timeout=10)
        results = bridge.wait(bridge.submit(accept_all, listener, 1), 10)
        (sid,) = sender.opened
        assert bridge.run(lambda: engine.state(sid) == State.TIME_WAIT, 5)
        entered = time.monotonic()
        assert bridge.run(lambda: engine.state(sid) == State.CLOSED, 5)
        waited = time.monotonic() - entered
    assert list(results.values()) == [b"x" * 3000]
    assert 0.25 <= waited <= 1.5


def test_linux_reset_reaches_engine():
    engine = make_engine()
    sink = SinkApp(engine, 9)
    with bridge_for(engine, [sink]) as bridge:
        def client():
            sock = socket.create_connection((ENGINE_IP, 9), timeout=10)
            sock.sendall(b"abc")
            time.sleep(0.1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # linger 0: RST
        bridge.wait(bridge.submit(client), 10)
        bridge.run(lambda: sink.resets, 5)
    assert [info for _, info in sink.resets] == ["rst"]
    assert engine.sessions() == []


def test_engine_refuses_closed_port():
    engine = make_engine()
    with bridge_for(engine, []) as bridge:
        def client():
            try:
                socket.create_connection((ENGINE_IP, 4444), timeout=5).close()
            except ConnectionRefusedError:
                return "refused"
            return "connected"
        assert bridge.wait(bridge.submit(client), 10) == "refused"
    assert engine.stats["rst_sent"] == 1


def test_engine_abort_resets_linux():
    engine = make_engine()
    sink = SinkApp(engine, 9, read=False)
    with bridge_for(engine, [sink]) as bridge:
        def client():
            try:
                # the RST may beat the connecting thread's wake-up: connect() then reports it
                sock = socket.create_connection((ENGINE_IP, 9), timeout=10)
                sock.recv(10)
            except ConnectionResetError:
                return "reset"
            return "eof"
        future = bridge.submit(client)
        assert bridge.run(lambda: sink.sessions, 5)
        engine.abort(next(iter(sink.sessions)))
        assert bridge.wait(future, 10) == "reset"


def test_engine_open_refused_by_linux():
    engine = make_engine()
    with bridge_for(engine, []) as bridge:
        sid = engine.open(LINUX_IP, 4445)
        bridge.run(lambda: engine.state(sid) == State.CLOSED, 5)
        notes = [n for n in bridge.hosts[0].unclaimed if n.session == sid]
    assert [(n.kind, n.info) for n in notes] == [(Notice.RESET, "refused")]


def test_zero_window_linux_probes_engine():
    """The engine's buffer fills (no reads): it announces 0, Linux probes, reads resume."""
    engine = make_engine(rx_buffer=8192)
    sink = SinkApp(engine, 9, read=False)
    probes = []

    def monitor(direction, frame):
        seg = parse_tcp_frame(frame)
        if direction == "to_engine" and not isinstance(seg, str) and not seg.payload \
                and sink.sessions:
            sid = next(iter(sink.sessions))
            if engine.state(sid) == State.ESTABLISHED:
                rcv_nxt = engine.session_info(sid)["rcv_nxt"]
                if seg.seq == (rcv_nxt - 1) % (1 << 32):
                    probes.append(seg)

    data = random.Random(7).randbytes(64 * 1024)
    with bridge_for(engine, [sink], monitor=monitor) as bridge:
        def client():
            sock = socket.create_connection((ENGINE_IP, 9), timeout=30)
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            sock.recv(1)
            sock.close()
        future = bridge.submit(client)
        assert bridge.run(lambda: probes, 10), "Linux sent no zero-window probe"
        sid = next(iter(sink.sessions))
        assert engine.session_info(sid)["readable"] == 8192
        sink.read = True
        bridge.wait(future, 30)
    assert bytes(sink.data[sid]) == data


def test_zero_window_engine_probes_linux():
    """Linux's receive buffer fills: the engine's persist timer probes until reads resume."""
    engine = make_engine(rto_initial=cycles(0.2))
    data = random.Random(8).randbytes(MIB)
    sender = SendApp(engine, LINUX_IP, 5005, [data])
    with bridge_for(engine, [sender]) as bridge:
        listener = bridge.submit(listen_socket, 5005, 4096).result(timeout=10)
        done = bridge.submit(accept_all, listener, 1, 60, 1.5)
        assert bridge.run(lambda: engine.stats["window_probes"] >= 2, 10)
        results = bridge.wait(done, 60)
    assert list(results.values()) == [data]
    assert not sender.resets


def test_sequence_wraparound_with_linux():
    """Both directions cross 2**32: the engine starts 100 kB before the wrap."""
    engine = make_engine(fixed_isn=(1 << 32) - 100_000)
    data = random.Random(9).randbytes(MIB)
    echo, (result,), _ = run_echo(engine, [data])
    assert result == data
    assert not echo.resets


def test_window_scale_negotiated_with_linux():
    """The engine uses the shift Linux announces and announces its own (RFC 7323 §2)."""
    engine = make_engine(rx_buffer=1 << 20)
    syns = []

    def monitor(direction, frame):
        seg = parse_tcp_frame(frame)
        if not isinstance(seg, str) and seg.flags & SYN:
            syns.append((direction, seg))

    sink = SinkApp(engine, 9)
    data = random.Random(11).randbytes(512 * 1024)
    with bridge_for(engine, [sink], monitor=monitor) as bridge:
        def client():
            sock = socket.create_connection((ENGINE_IP, 9), timeout=30)
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            sock.recv(1)
            sock.close()
        future = bridge.submit(client)
        assert bridge.run(lambda: sink.sessions, 5)
        info = engine.session_info(next(iter(sink.sessions)))
        bridge.wait(future, 30)
    (linux_syn,) = [s for d, s in syns if d == "to_engine"]
    (engine_syn,) = [s for d, s in syns if d == "to_linux"]
    assert engine_syn.flags == SYN | ACK
    assert info["snd_wscale"] == linux_syn.wscale
    assert engine_syn.wscale == info["rcv_wscale"] == 5  # 2**20 >> 5 is the first to fit 16 bits
    assert bytes(next(iter(sink.data.values()))) == data


@pytest.mark.long
@pytest.mark.parametrize("loss", [0.02, 0.03])
def test_linux_echo_heavy_impairment(loss):
    engine = make_engine()
    data = random.Random(12).randbytes(2 * MIB)
    kwargs = {"to_engine": Impairment(loss, loss, loss, 30),
              "to_linux": Impairment(loss, loss, loss, 31)}
    echo, (result,), _ = run_echo(engine, [data], timeout=120, **kwargs)
    assert result == data


@pytest.mark.long
def test_16_concurrent_impaired():
    engine = make_engine(rx_buffer=1 << 16, tx_buffer=1 << 16)
    rng = random.Random(13)
    data = [rng.randbytes(128 * 1024) for _ in range(16)]
    echo, results, _ = run_echo(engine, data, timeout=120, **impaired(40))
    assert results == data


def test_bridge_cleans_up_on_failure():
    engine = make_engine()
    with pytest.raises(RuntimeError), bridge_for(engine, []) as bridge:
        name = bridge.netns
        assert os.path.exists(f"/run/netns/{name}")
        raise RuntimeError("boom")
    assert not os.path.exists(f"/run/netns/{name}")


def test_ping_rtl_front_end():
    """Linux resolves and pings the gateware (rtl/toe in Amaranth's simulator)."""
    from nicsim.hw.toe.rtl_engine import RtlFrontEnd

    engine = RtlFrontEnd(ENGINE_MAC, ENGINE_IP)
    with TapBridge(engine, [], host_ip=LINUX_IP) as bridge:
        replies = bridge.wait(bridge.submit(ping, ENGINE_IP, 3, 2.0, bytes(range(200))), 30)
        counters = engine.counters()
    assert replies == 3
    assert counters["arp_replies"] == 1 and counters["echo_replies"] == 3
    assert counters["frames_in"] == 4


def test_rtl_front_end_refuses_linux_connection():
    """With no session engine yet, the gateware answers a SYN with the RST Linux expects."""
    from nicsim.hw.toe.rtl_engine import RtlFrontEnd

    engine = RtlFrontEnd(ENGINE_MAC, ENGINE_IP)
    with TapBridge(engine, [], host_ip=LINUX_IP) as bridge:
        def client():
            try:
                socket.create_connection((ENGINE_IP, 7), timeout=5).close()
            except ConnectionRefusedError:
                return "refused"
            return "connected"
        assert bridge.wait(bridge.submit(client), 30) == "refused"
        counters = engine.counters()
    assert counters["rst_sent"] == 1 and counters["no_session"] == 1
    assert counters["bad_tcp_checksum"] == 0
