"""IPv4 (DIR-24-8) and IPv6 LPM kernels against the LPM reference; the reference against a
brute-force search."""

import ipaddress
import random

import numpy as np
import pytest

from nicsim.gpu.lpm import (
    MISS,
    Dir24_8,
    Lpm4Kernel,
    Lpm6Kernel,
    Lpm6Table,
    lpm4_numpy,
    lpm6_numpy,
    v6_words,
)
from nicsim.hw.ref.lpm import LpmTable


def _random_routes(rng, count, version, lengths):
    bits = 32 if version == 4 else 128
    routes = []
    for _ in range(count):
        length = rng.choice(lengths)
        value = rng.getrandbits(bits) >> (bits - length) << (bits - length) if length else 0
        net = ipaddress.ip_network((value, length))
        routes.append((str(net), rng.randrange(MISS)))
    return routes


def _expected(ref, addrs, version):
    out = []
    for a in addrs:
        hop = ref.lookup(int(a), version)
        out.append(MISS if hop is None else hop)
    return np.array(out, dtype=np.uint16)


def _probe_v4(rng, routes, count):
    """Random addresses plus each route's first and last address and their neighbours."""
    addrs = [rng.getrandbits(32) for _ in range(count)]
    for prefix, _ in routes:
        net = ipaddress.ip_network(prefix)
        if net.version == 4:
            lo, hi = int(net.network_address), int(net.broadcast_address)
            addrs += [lo, hi, max(lo - 1, 0), min(hi + 1, 2**32 - 1)]
    return np.array(addrs, dtype=np.uint32)


def _probe_v6(rng, routes, count):
    addrs = [rng.getrandbits(128) for _ in range(count)]
    for prefix, _ in routes:
        net = ipaddress.ip_network(prefix)
        if net.version == 6:
            lo, hi = int(net.network_address), int(net.broadcast_address)
            addrs += [lo, hi, max(lo - 1, 0), min(hi + 1, 2**128 - 1),
                      lo | rng.getrandbits(128 - net.prefixlen) if net.prefixlen < 128 else lo]
    return addrs


def test_reference_against_brute_force():
    rng = random.Random(7)
    routes = _random_routes(rng, 60, 4, [0, 8, 12, 16, 24, 25, 31, 32]) \
        + _random_routes(rng, 60, 6, [0, 1, 32, 48, 64, 100, 128])
    ref = LpmTable(routes)
    nets = {}
    for prefix, hop in routes:
        nets[ipaddress.ip_network(prefix)] = hop
    for a in [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(200)] + \
             [ipaddress.IPv6Address(rng.getrandbits(128)) for _ in range(200)] + \
             [n.network_address for n in nets]:
        holding = [n for n in nets if n.version == a.version and a in n]
        want = nets[max(holding, key=lambda n: n.prefixlen)] if holding else None
        assert ref.lookup(a) == want


def test_reference_refuses_bad_prefix():
    with pytest.raises(ValueError, match="not an IP prefix"):
        LpmTable([("10.0.0.1/8", 1)])


@pytest.mark.parametrize("seed", [1, 2])
def test_ipv4_random(platform, seed):
    rng = random.Random(seed)
    routes = _random_routes(rng, 200, 4, [8, 15, 16, 20, 23, 24, 25, 26, 30, 31, 32])
    table = Dir24_8(routes)
    addrs = _probe_v4(rng, routes, 1000)
    want = _expected(LpmTable(routes), addrs, 4)
    assert (want != MISS).any() and (want == MISS).any()
    assert np.array_equal(Lpm4Kernel(platform, table).lookup(addrs), want)
    assert np.array_equal(lpm4_numpy(table, addrs), want)


def test_ipv4_edges(platform):
    # Nested prefixes around one /24 with longer prefixes, a later duplicate, a /0 default.
    routes = [("0.0.0.0/0", 1), ("10.0.0.0/8", 2), ("10.1.2.0/24", 3), ("10.1.2.128/25", 4),
              ("10.1.2.200/32", 5), ("10.1.2.0/30", 6), ("10.1.2.0/24", 7),
              ("255.255.255.255/32", 8), ("0.0.0.0/32", 9), ("2001:db8::/32", 10)]
    table = Dir24_8(routes)
    addrs = _probe_v4(random.Random(3), routes, 100)
    kernel = Lpm4Kernel(platform, table)
    want = _expected(LpmTable(routes), addrs, 4)
    assert (want != MISS).all()  # all-hit: the default route holds everything
    assert np.array_equal(kernel.lookup(addrs), want)
    assert kernel.lookup(np.zeros(0, np.uint32)).shape == (0,)
    assert kernel.lookup(np.array([0x0A0102C8], np.uint32)).tolist() == [5]


def test_ipv4_all_miss(platform):
    addrs = np.array([0, 1, 0x0A000000, 0xFFFFFFFF], dtype=np.uint32)
    assert (Lpm4Kernel(platform, Dir24_8([])).lookup(addrs) == MISS).all()
    assert (Lpm4Kernel(platform, Dir24_8([("11.0.0.0/8", 1)])).lookup(addrs) == MISS).all()


def test_bad_hop_is_refused():
    with pytest.raises(ValueError, match="next hop"):
        Dir24_8([("10.0.0.0/8", MISS)])


@pytest.mark.parametrize("seed", [1, 2])
def test_ipv6_random(platform, seed):
    rng = random.Random(seed)
    routes = _random_routes(rng, 150, 6, [16, 32, 40, 48, 56, 64, 65, 96, 127, 128])
    table = Lpm6Table(routes)
    addrs = _probe_v6(rng, routes, 500)
    want = _expected(LpmTable(routes), addrs, 6)
    assert (want != MISS).any() and (want == MISS).any()
    words = v6_words(addrs)
    assert np.array_equal(Lpm6Kernel(platform, table).lookup(words), want)
    assert np.array_equal(lpm6_numpy(table, words), want)


def test_ipv6_nested_markers(platform):
    # A chain of nested prefixes with gaps: the binary search must follow markers to the
    # longest and fall back to a marker's best match when the longer probe misses.
    base = int(ipaddress.IPv6Address("2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff"))
    routes = []
    for n, length in enumerate([3, 17, 33, 50, 64, 77, 90, 111, 128]):
        value = base >> (128 - length) << (128 - length)
        routes.append((str(ipaddress.ip_network((value, length))), n))
    routes.append(("::/0", 100))
    addrs = _probe_v6(random.Random(5), routes, 50) + [base ^ (1 << k) for k in range(128)]
    want = _expected(LpmTable(routes), addrs, 6)
    assert (want != MISS).all()
    kernel = Lpm6Kernel(platform, Lpm6Table(routes))
    assert np.array_equal(kernel.lookup(v6_words(addrs)), want)
    assert kernel.lookup(np.zeros((0, 4), np.uint32)).shape == (0,)
    assert kernel.lookup(v6_words([base])).tolist() == [8]


def test_ipv6_all_miss(platform):
    words = v6_words([0, 1, 2**128 - 1])
    assert (Lpm6Kernel(platform, Lpm6Table([])).lookup(words) == MISS).all()
    assert (Lpm6Kernel(platform, Lpm6Table([("fe80::/10", 1)])).lookup(words) == MISS).all()


@pytest.mark.long
def test_ipv4_large_table(platform):
    rng = random.Random(11)
    routes = _random_routes(rng, 20000, 4, list(range(8, 33)))
    addrs = _probe_v4(rng, routes[:2000], 100000)
    want = _expected(LpmTable(routes), addrs, 4)
    assert np.array_equal(Lpm4Kernel(platform, Dir24_8(routes)).lookup(addrs), want)


@pytest.mark.long
def test_ipv6_large_table(platform):
    rng = random.Random(12)
    routes = _random_routes(rng, 5000, 6, list(range(16, 129, 4)))
    addrs = _probe_v6(rng, routes[:1000], 20000)
    want = _expected(LpmTable(routes), addrs, 6)
    assert np.array_equal(Lpm6Kernel(platform, Lpm6Table(routes)).lookup(v6_words(addrs)), want)
