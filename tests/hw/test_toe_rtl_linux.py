"""The RTL TCP engine (front end and session engine, in Amaranth's simulator) against the Linux
kernel's TCP stack, through the TAP bridge.

The kernel in a network namespace is the independent oracle: its sockets must get the
gateware's bytes exactly, and its handshake, close and reset must interoperate. The simulator
runs about a thousand times slower than the hardware would, so the transfers are 16 KiB and,
except the reset and ping check, run under ``-m long``: the same gateware on Verilator moves
1 MiB each way in ``make test`` (test_toe_verilator_linux.py). Needs root, /dev/net/tun and
``ip netns``; without them every test here is skipped with the reason.
"""

import random
import socket
import struct

import pytest
from test_toe_linux import ENGINE_IP, ENGINE_MAC, LINUX_IP, accept_all, listen_socket
from test_toe_verilator_linux import assert_clean, run_echo

from nicsim.hw.toe.apps import AppHost, EchoApp, SendApp
from nicsim.hw.toe.bridge import TapBridge, missing_requirements, ping
from nicsim.hw.toe.impair import Impairment

MISSING = missing_requirements()
pytestmark = [pytest.mark.skipif(MISSING is not None,
                                 reason=f"Linux bridge tests need {MISSING}"),
              pytest.mark.filterwarnings("ignore:coroutine .* was never awaited")]
KIB = 1024


def rtl_engine(sessions=4):
    from nicsim.hw.toe.rtl_engine import RtlEngine

    # engine time follows the wall clock, at most 20 ms at a time while the simulation lags
    return RtlEngine(ENGINE_MAC, ENGINE_IP, sessions=sessions, buf_bits=16, tick_s=0.01,
                     time_wait=0.2, catch_up_ticks=2)


@pytest.mark.long  # the Verilator runs cover it at 1 MiB in make test
def test_linux_echo_through_rtl_sessions():
    """Linux connects to the gateware's echo port, sends 16 KiB and reads them back."""
    engine = rtl_engine()
    data = random.Random(1).randbytes(16 * KIB)
    echo, results, leftover, counters = run_echo(engine, [data])
    assert results == [data]
    assert echo.finished == 1 and not echo.resets
    assert leftover == []
    assert_clean(counters)


@pytest.mark.long  # the Verilator runs cover it at 1 MiB in make test
def test_rtl_opens_connection_to_linux_and_sends():
    """The gateware's active open (ARP, SYN) to a Linux listener; 16 KiB, then FIN."""
    engine = rtl_engine()
    data = random.Random(2).randbytes(16 * KIB)
    listener = None
    with TapBridge(engine, [], host_ip=LINUX_IP) as bridge:
        listener = bridge.submit(listen_socket, 5001).result(timeout=10)
        accepted = bridge.submit(accept_all, listener, 1, 60)
        sender = SendApp(engine, LINUX_IP, 5001, [data])
        bridge.hosts.append(AppHost(engine, [sender]))
        received = bridge.wait(accepted, 120)
        bridge.run(lambda: sender.released, 10)
        counters = engine.counters()
    assert list(received.values()) == [data]
    assert sender.released == set(sender.opened) and not sender.resets
    assert_clean(counters)


def test_linux_reset_and_ping_with_sessions():
    """SO_LINGER 0 close: Linux's RST ends the gateware's session; ping still answered."""
    engine = rtl_engine()
    echo = EchoApp(engine, 7)

    def reset_client():
        sock = socket.create_connection((ENGINE_IP, 7), timeout=20)
        sock.sendall(b"hello")
        assert sock.recv(5) == b"hello"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        return True

    with TapBridge(engine, [AppHost(engine, [echo])], host_ip=LINUX_IP) as bridge:
        assert bridge.wait(bridge.submit(reset_client), 60)
        bridge.run(lambda: echo.resets, 10)
        assert bridge.wait(bridge.submit(ping, ENGINE_IP, 2, 5.0), 30) == 2
        counters = engine.counters()
    assert [info for _, info in echo.resets] == ["rst"]
    assert engine.sessions() == []
    assert counters["echo_replies"] == 2
    assert_clean(counters)


@pytest.mark.long
def test_linux_echo_64kib_and_impaired():
    """64 KiB echoed; then 16 KiB with 1% drop, duplication and reordering both ways."""
    engine = rtl_engine()
    data = random.Random(3).randbytes(64 * KIB)
    _, results, leftover, counters = run_echo(engine, [data], timeout=600)
    assert results == [data] and leftover == []
    assert_clean(counters)
    engine = rtl_engine()
    data = random.Random(4).randbytes(16 * KIB)
    _, results, _, counters = run_echo(engine, [data], timeout=600,
                                       to_engine=Impairment(0.01, 0.01, 0.01, 5),
                                       to_linux=Impairment(0.01, 0.01, 0.01, 6))
    assert results == [data]
    assert_clean(counters)


@pytest.mark.long
def test_four_concurrent_linux_clients():
    engine = rtl_engine(sessions=8)
    payloads = [random.Random(10 + k).randbytes(4 * KIB) for k in range(4)]
    echo, results, leftover, counters = run_echo(engine, payloads, timeout=600)
    assert results == payloads
    assert echo.finished == 4 and leftover == []
    assert_clean(counters)
