"""Maps against the kernel's: the same random sequence of updates (with BPF_ANY, BPF_NOEXIST,
BPF_EXIST and bad flags), lookups and deletes on a kernel map (bpf(2)) and on nicsim's must give
the same return codes and values. LRU eviction order and program-side per-CPU behaviour are
checked against hand-worked expectations.
"""

import errno
import os
import random
import struct

import pytest

from nicsim.host.ebpf.elf import MapSpec
from nicsim.host.ebpf.maps import (
    BPF_ANY,
    BPF_EXIST,
    BPF_F_NO_PREALLOC,
    BPF_NOEXIST,
    MapError,
    create_map,
)
from nicsim.host.ebpf.protos import MapType

from .kernel_oracle import KernelError, RawMap, kernel_available


def spec(kind, key_size=4, value_size=8, max_entries=8, flags=0):
    return MapSpec("m", int(kind), key_size, value_size, max_entries, flags)


def _keys(kind, rng, key_size):
    if kind == MapType.lpm_trie:
        plen = rng.choice([0, 8, 16, 24, 32, 33])
        return struct.pack("<I", plen) + bytes(rng.choice([10, 192]) for _ in range(4))
    if kind == MapType.cpumap:  # CPUs this machine has, and keys beyond max_entries (8)
        return struct.pack("<I", rng.choice([0, min(1, os.cpu_count() - 1), 8, 9]))
    if kind in (MapType.array, MapType.percpu_array, MapType.devmap, MapType.devmap_hash):
        return struct.pack("<I", rng.randrange(10))  # some beyond max_entries (8)
    return bytes(rng.randrange(3) for _ in range(key_size))


KINDS = [
    (MapType.hash, 4, 8, 0),
    (MapType.percpu_hash, 4, 8, 0),
    (MapType.array, 4, 8, 0),
    (MapType.percpu_array, 4, 8, 0),
    (MapType.lru_hash, 4, 8, 0),
    (MapType.lpm_trie, 8, 4, BPF_F_NO_PREALLOC),
    (MapType.lru_percpu_hash, 4, 8, 0),
    (MapType.devmap, 4, 4, 0),
    (MapType.devmap_hash, 4, 4, 0),
    (MapType.cpumap, 4, 4, 0),
]


@pytest.mark.parametrize("kind, key_size, value_size, flags", KINDS,
                         ids=[k[0].name for k in KINDS])
def test_map_operations_match_kernel(kind, key_size, value_size, flags):
    ok, why = kernel_available()
    if not ok:
        pytest.skip(f"kernel oracle unavailable: {why}")
    rng = random.Random(f"maps-{kind.name}")
    # An LRU map only behaves the same while it is not full (eviction order differs).
    max_entries = 64 if kind in (MapType.lru_hash, MapType.lru_percpu_hash) else 8
    ours = create_map(spec(kind, key_size, value_size, max_entries, flags))
    try:
        theirs = RawMap(int(kind), key_size, value_size, max_entries, flags)
    except KernelError as exc:
        pytest.skip(str(exc))
    with theirs:
        for step in range(300):
            key = _keys(kind, rng, key_size)
            op = rng.random()
            if op < 0.5:
                if kind in (MapType.devmap, MapType.devmap_hash):
                    value = struct.pack("<I", rng.choice([1, 1, 0]))  # 0 is no interface
                elif kind == MapType.cpumap:  # queue sizes: none, some, the limit, past it
                    value = struct.pack("<I", rng.choice([0, 64, 16384, 16385]))
                else:
                    value = bytes(rng.randrange(256) for _ in range(value_size))
                fl = rng.choice([BPF_ANY, BPF_NOEXIST, BPF_EXIST, BPF_ANY, 8])
                expected = theirs.update(key, value, fl)
                got = ours.update(key, value, fl)
                if kind == MapType.devmap and expected == -errno.ENODEV:
                    expected = -errno.EINVAL   # no such interface: nicsim says EINVAL
                assert got == expected, (step, "update", key.hex(), fl)
            elif op < 0.75:
                assert ours.delete(key) == theirs.delete(key), (step, "delete", key.hex())
            else:
                value = ours.lookup(key)
                assert (None if value is None else bytes(value)) == theirs.lookup(key), (
                    step, "lookup", key.hex())


def test_lru_evicts_least_recently_used():
    m = create_map(spec(MapType.lru_hash, max_entries=3))
    for k in (b"a", b"b", b"c"):
        assert m.update(k.ljust(4, b"\0"), bytes(8)) == 0
    m.lookup(b"a\0\0\0")                       # a is now the most recently used
    assert m.update(b"d\0\0\0", bytes(8)) == 0  # b, the least recently used, goes
    assert m.lookup(b"b\0\0\0") is None
    assert {k[:1] for k, _ in m.items()} == {b"a", b"c", b"d"}


def test_percpu_hash_new_entry_from_one_cpu():
    m = create_map(spec(MapType.percpu_hash), ncpus=3)
    assert m.update(b"k\0\0\0", b"\1" * 8, cpu=1) == 0
    assert [bytes(m.entries[b"k\0\0\0"][c]) for c in range(3)] == [bytes(8), b"\1" * 8, bytes(8)]


def test_lpm_longest_prefix_and_key_prefix_limit():
    m = create_map(spec(MapType.lpm_trie, 8, 4, 16, BPF_F_NO_PREALLOC))

    def key(plen, addr):
        return struct.pack("<I", plen) + bytes(map(int, addr.split(".")))

    m.update(key(8, "10.0.0.0"), b"\x08\0\0\0")
    m.update(key(24, "10.1.2.0"), b"\x18\0\0\0")
    assert bytes(m.lookup(key(32, "10.1.2.3"))) == b"\x18\0\0\0"
    assert bytes(m.lookup(key(32, "10.1.3.3"))) == b"\x08\0\0\0"
    assert bytes(m.lookup(key(16, "10.1.2.3"))) == b"\x08\0\0\0"   # key's own length bounds it
    assert m.lookup(key(32, "11.0.0.0")) is None


@pytest.mark.parametrize("bad, message", [
    (spec(MapType.array, key_size=8), "key size must be 4"),
    (spec(MapType.hash, max_entries=0), "max_entries"),
    (spec(MapType.lpm_trie, 8, 4, 4, 0), "BPF_F_NO_PREALLOC"),
    (spec(MapType.devmap, value_size=16), "value size"),
    (MapSpec("q", 22, 4, 4, 4), "not supported"),
])
def test_bad_map_definitions(bad, message):
    with pytest.raises(MapError, match=message):
        create_map(bad)
