# Ref: kernel/bpf/arraymap.c, hashtab.c, lpm_trie.c, devmap.c, cpumap.c, net/xdp/xskmap.c
#      (xsk_map_update_elem(), xsk_map_lookup_elem_sys_only()), net/xdp/xsk.c
#      (xsk_delete_from_maps()) and
#      include/uapi/linux/bpf.h (BPF_ANY/BPF_NOEXIST/BPF_EXIST, BPF_F_NO_PREALLOC) in Linux 6.x;
#      Documentation/bpf/map_*.rst
"""eBPF maps with the kernel's lookup, update and delete semantics.

Values are ``bytearray`` objects that a program reads and writes in place through the pointer
``bpf_map_lookup_elem`` returns, as in the kernel. Operations return 0 or a negative errno
like the kernel's ``map_ops`` (``-EEXIST`` for ``BPF_NOEXIST`` on a present key, ``-ENOENT``
for ``BPF_EXIST`` on a missing one, ``-E2BIG`` when a hash map is full, ``-EINVAL`` to delete
from an array). Per-CPU maps hold one value per CPU; the program sees its own CPU's.

The LRU hash evicts the least recently used entry when full; the kernel's LRU is approximate
(per-CPU free lists, a clock-like second chance), so which entry goes can differ from Linux.
"""

from __future__ import annotations

import errno
from collections import OrderedDict
from dataclasses import dataclass

from nicsim.host.ebpf.protos import MapType

__all__ = ["MapError", "BpfMap", "ArrayMap", "PercpuArrayMap", "HashMap", "PercpuHashMap",
           "LruHashMap", "LruPercpuHashMap", "LpmTrieMap", "DevMap", "DevMapHash", "CpuMap",
           "XskMap", "FileDesc", "ProgArrayMap", "create_map", "BPF_ANY", "BPF_NOEXIST",
           "BPF_EXIST", "BPF_F_NO_PREALLOC"]

BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
BPF_F_LOCK = 4
BPF_F_NO_PREALLOC = 1
MAX_KEY_SIZE = 512            # MAX_BPF_STACK: a key must fit on the stack
MAX_VALUE_SIZE = 1 << 20      # KMALLOC_MAX_SIZE-ish bound for one element (nicsim's guard)


class MapError(ValueError):
    """A map definition the kernel would refuse (one line)."""


class BpfMap:
    """Common part of every map.

    Parameters
    ----------
    spec : MapSpec
        Name, type, key and value sizes, max_entries, flags.
    ncpus : int
        CPUs for per-CPU maps.
    """

    key_size_fixed: int | None = None
    value_sizes: tuple | None = None

    def __init__(self, spec, ncpus=1):
        self.spec = spec
        self.name = spec.name
        self.type = int(spec.type)
        self.key_size = spec.key_size
        self.value_size = spec.value_size
        self.max_entries = spec.max_entries
        self.flags = spec.flags
        self.ncpus = ncpus
        if self.max_entries <= 0:
            raise MapError(f"map {self.name!r}: max_entries must be positive")
        if self.key_size_fixed is not None and self.key_size != self.key_size_fixed:
            raise MapError(f"map {self.name!r}: key size must be {self.key_size_fixed}, not "
                           f"{self.key_size}")
        if self.value_sizes is not None and self.value_size not in self.value_sizes:
            raise MapError(f"map {self.name!r}: value size must be one of {self.value_sizes}, "
                           f"not {self.value_size}")
        if self.key_size <= 0 and self.key_size_fixed is None:
            raise MapError(f"map {self.name!r}: key size must be positive")
        if self.value_size <= 0:
            raise MapError(f"map {self.name!r}: value size must be positive")
        if self.key_size > MAX_KEY_SIZE or self.value_size > MAX_VALUE_SIZE:
            raise MapError(f"map {self.name!r}: key or value larger than the kernel allows "
                           f"({self.key_size}, {self.value_size})")

    def _check(self, key, value=None):
        if len(key) != self.key_size:
            raise ValueError(f"map {self.name!r}: key is {len(key)} bytes, not {self.key_size}")
        if value is not None and len(value) != self.value_size:
            raise ValueError(f"map {self.name!r}: value is {len(value)} bytes, not "
                             f"{self.value_size}")

    # Program-side and user-side API.
    def lookup(self, key: bytes, cpu: int = 0):
        """Return the live value (a bytearray) for ``key``, or None."""
        raise NotImplementedError

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY, cpu: int | None = None):
        """Insert or replace; return 0 or -errno. ``cpu`` None writes every CPU's copy."""
        raise NotImplementedError

    def delete(self, key: bytes) -> int:
        """Remove ``key``; return 0 or -errno."""
        raise NotImplementedError

    def items(self, cpu: int = 0):
        """Return ``[(key bytes, value bytes)]`` for the present entries."""
        raise NotImplementedError

    def sys_lookup(self, key: bytes):
        """Return what ``BPF_MAP_LOOKUP_ELEM`` from user space gives: the value's bytes (a
        per-CPU map: CPU 0's), or -errno (``-ENOENT`` for a missing key)."""
        value = self.lookup(key)
        return -errno.ENOENT if value is None else bytes(value)

    @staticmethod
    def _flags_ok(flags):
        return (flags & ~BPF_F_LOCK) <= BPF_EXIST


# --- arrays --------------------------------------------------------------------------------

class _LazyValues(dict):
    """Array slots, each a zeroed bytearray made on first use (large arrays stay cheap)."""

    def __init__(self, size):
        super().__init__()
        self.size = size

    def __missing__(self, index):
        value = self[index] = bytearray(self.size)
        return value


class ArrayMap(BpfMap):
    """``BPF_MAP_TYPE_ARRAY``: ``max_entries`` zeroed values, keys 0..max_entries-1."""

    key_size_fixed = 4

    def __init__(self, spec, ncpus=1):
        super().__init__(spec, ncpus)
        self.values = _LazyValues(self.value_size)
        if spec.initial is not None:
            self.values[0][:] = spec.initial[:self.value_size].ljust(self.value_size, b"\0")

    def _index(self, key):
        self._check(key)
        index = int.from_bytes(key, "little")
        return index if index < self.max_entries else None

    def _stores(self, cpu):
        """The value arrays an update with ``cpu`` writes (per-CPU maps: all when None)."""
        return (self.values,)

    def lookup(self, key, cpu=0):
        index = self._index(key)
        return None if index is None else self._stores(cpu)[0][index]

    def update(self, key, value, flags=BPF_ANY, cpu=None):
        self._check(key, value)
        if not self._flags_ok(flags):
            return -errno.EINVAL
        index = self._index(key)
        if index is None:
            return -errno.E2BIG
        if flags & 3 == BPF_NOEXIST:
            return -errno.EEXIST  # every element of an array exists
        for values in self._stores(cpu):
            values[index][:] = value
        return 0

    def delete(self, key):
        return -errno.EINVAL

    def items(self, cpu=0):
        return self._items(self.values)

    def _items(self, values):
        zero = bytes(self.value_size)
        return [(i.to_bytes(4, "little"), bytes(values[i]) if i in values else zero)
                for i in range(self.max_entries)]


class PercpuArrayMap(ArrayMap):
    """``BPF_MAP_TYPE_PERCPU_ARRAY``: one array per CPU."""

    def __init__(self, spec, ncpus=1):
        BpfMap.__init__(self, spec, ncpus)
        self.percpu = [_LazyValues(self.value_size) for _ in range(ncpus)]
        self.values = self.percpu[0]

    def _stores(self, cpu):
        return self.percpu if cpu is None else (self.percpu[cpu],)

    def items(self, cpu=0):
        return self._items(self.percpu[cpu])


class ProgArrayMap(ArrayMap):
    """``BPF_MAP_TYPE_PROG_ARRAY``: slots of tail-call targets (nicsim keeps them empty)."""

    value_sizes = (4,)


# --- hashes --------------------------------------------------------------------------------

class HashMap(BpfMap):
    """``BPF_MAP_TYPE_HASH``."""

    def __init__(self, spec, ncpus=1):
        super().__init__(spec, ncpus)
        self.entries: dict[bytes, bytearray] = {}

    def lookup(self, key, cpu=0):
        self._check(key)
        return self.entries.get(bytes(key))

    def _admit(self, key, flags):
        """Return -errno when ``flags`` or capacity forbid writing ``key``, else 0."""
        if not self._flags_ok(flags):
            return -errno.EINVAL
        present = key in self.entries
        if flags & 3 == BPF_NOEXIST and present:
            return -errno.EEXIST
        if flags & 3 == BPF_EXIST and not present:
            return -errno.ENOENT
        if not present and len(self.entries) >= self.max_entries:
            return self._full()
        return 0

    def _full(self):
        return -errno.E2BIG

    def update(self, key, value, flags=BPF_ANY, cpu=None):
        self._check(key, value)
        key = bytes(key)
        err = self._admit(key, flags)
        if err:
            return err
        old = self.entries.get(key)
        if old is None:
            self.entries[key] = bytearray(value)
        else:
            old[:] = value
        return 0

    def delete(self, key):
        self._check(key)
        return 0 if self.entries.pop(bytes(key), None) is not None else -errno.ENOENT

    def items(self, cpu=0):
        return [(k, bytes(v)) for k, v in self.entries.items()]


class PercpuHashMap(HashMap):
    """``BPF_MAP_TYPE_PERCPU_HASH``: each entry holds one value per CPU."""

    def lookup(self, key, cpu=0):
        self._check(key)
        values = self.entries.get(bytes(key))
        return None if values is None else values[cpu]

    def update(self, key, value, flags=BPF_ANY, cpu=None):
        self._check(key, value)
        key = bytes(key)
        err = self._admit(key, flags)
        if err:
            return err
        values = self.entries.get(key)
        if values is None:
            # A new entry from a program sets its CPU's value and zeroes the others.
            values = [bytearray(self.value_size) for _ in range(self.ncpus)]
            self.entries[key] = values
        for c in range(self.ncpus) if cpu is None else (cpu,):
            values[c][:] = value
        return 0

    def items(self, cpu=0):
        return [(k, bytes(v[cpu])) for k, v in self.entries.items()]


class LruHashMap(HashMap):
    """``BPF_MAP_TYPE_LRU_HASH``: a full map evicts its least recently used entry."""

    def __init__(self, spec, ncpus=1):
        super().__init__(spec, ncpus)
        self.entries = OrderedDict()

    def lookup(self, key, cpu=0):
        self._check(key)
        key = bytes(key)
        value = self.entries.get(key)
        if value is not None:
            self.entries.move_to_end(key)
        return value

    def _full(self):
        self.entries.popitem(last=False)
        return 0

    def update(self, key, value, flags=BPF_ANY, cpu=None):
        err = super().update(key, value, flags, cpu)
        if not err:
            self.entries.move_to_end(bytes(key))
        return err


class LruPercpuHashMap(PercpuHashMap, LruHashMap):
    """``BPF_MAP_TYPE_LRU_PERCPU_HASH``."""

    def __init__(self, spec, ncpus=1):
        LruHashMap.__init__(self, spec, ncpus)

    def lookup(self, key, cpu=0):
        values = LruHashMap.lookup(self, key)
        return None if values is None else values[cpu]

    def update(self, key, value, flags=BPF_ANY, cpu=None):
        err = PercpuHashMap.update(self, key, value, flags, cpu)
        if not err:
            self.entries.move_to_end(bytes(key))
        return err


# --- LPM trie ------------------------------------------------------------------------------

class LpmTrieMap(BpfMap):
    """``BPF_MAP_TYPE_LPM_TRIE``: keys are ``u32 prefixlen`` then the address bytes.

    A lookup finds the longest stored prefix that matches the key's data within the key's own
    prefix length; update and delete use the exact (prefixlen, masked data) pair.
    """

    def __init__(self, spec, ncpus=1):
        super().__init__(spec, ncpus)
        if self.key_size < 5 or self.key_size > 4 + 256:
            raise MapError(f"map {self.name!r}: LPM key size must be 5..260, not "
                           f"{self.key_size}")
        if not self.flags & BPF_F_NO_PREALLOC:
            raise MapError(f"map {self.name!r}: an LPM trie needs BPF_F_NO_PREALLOC")
        self.data_bits = 8 * (self.key_size - 4)
        self.entries: dict[tuple[int, int], tuple[bytes, bytearray]] = {}
        self._length_cache = None

    def _split(self, key):
        self._check(key)
        plen = int.from_bytes(key[:4], "little")
        data = int.from_bytes(key[4:], "big")
        return plen, data

    def _mask(self, plen):
        return ((1 << plen) - 1) << (self.data_bits - plen) if plen else 0

    def lookup(self, key, cpu=0):
        plen, data = self._split(key)
        if plen > self.data_bits:
            return None
        entries = self.entries
        for length, mask in self._lengths():
            if length <= plen:
                hit = entries.get((length, data & mask))
                if hit is not None:
                    return hit[1]
        return None

    def _lengths(self):
        """Stored prefix lengths, longest first, with their masks (cached until a write)."""
        if self._length_cache is None:
            lengths = sorted({plen for plen, _ in self.entries}, reverse=True)
            self._length_cache = [(n, self._mask(n)) for n in lengths]
        return self._length_cache

    def update(self, key, value, flags=BPF_ANY, cpu=None):
        self._check(key, value)
        if flags & ~BPF_F_LOCK > BPF_EXIST:
            return -errno.EINVAL
        plen, data = self._split(key)
        if plen > self.data_bits:
            return -errno.EINVAL
        ident = (plen, data & self._mask(plen))
        present = ident in self.entries
        if flags & 3 == BPF_NOEXIST and present:
            return -errno.EEXIST
        if flags & 3 == BPF_EXIST and not present:
            return -errno.ENOENT
        if not present and len(self.entries) >= self.max_entries:
            return -errno.ENOSPC
        if present:
            self.entries[ident][1][:] = value
        else:
            self._length_cache = None
            canon = plen.to_bytes(4, "little") + ident[1].to_bytes(self.key_size - 4, "big")
            self.entries[ident] = (canon, bytearray(value))
        return 0

    def delete(self, key):
        plen, data = self._split(key)
        if plen > self.data_bits:
            return -errno.EINVAL
        self._length_cache = None
        return 0 if self.entries.pop((plen, data & self._mask(plen)), None) else -errno.ENOENT

    def items(self, cpu=0):
        return [(k, bytes(v)) for k, v in self.entries.values()]


# --- redirect targets ----------------------------------------------------------------------

class _TargetArray(BpfMap):
    """An array of redirect targets; writing a zero target (ifindex 0, queue size 0) clears
    the slot, as the kernel's devmap and cpumap do. nicsim does not check that an interface
    exists."""

    key_size_fixed = 4

    def __init__(self, spec, ncpus=1):
        super().__init__(spec, ncpus)
        self.slots: dict[int, bytearray] = {}

    def _index(self, key):
        self._check(key)
        index = int.from_bytes(key, "little")
        return index if index < self.max_entries else None

    def lookup(self, key, cpu=0):
        index = self._index(key)
        return None if index is None else self.slots.get(index)

    def _valid(self, value):
        return int.from_bytes(value[:4], "little") != 0

    def update(self, key, value, flags=BPF_ANY, cpu=None):
        self._check(key, value)
        if flags > BPF_EXIST:
            return -errno.EINVAL
        index = self._index(key)
        if index is None:
            return -errno.E2BIG
        if flags == BPF_NOEXIST:
            return -errno.EEXIST  # as the kernel's dev_map_update_elem: slots always exist
        if not self._valid(value):
            self.slots.pop(index, None)  # ifindex 0 / queue size 0 clears the slot
            return 0
        self.slots[index] = bytearray(value)
        return 0

    def delete(self, key):
        index = self._index(key)
        if index is None:
            return -errno.EINVAL
        self.slots.pop(index, None)  # clearing an empty slot succeeds, as in the kernel
        return 0

    def items(self, cpu=0):
        return [(i.to_bytes(4, "little"), bytes(v)) for i, v in sorted(self.slots.items())]

    def target(self, key: int):
        """Return the target number (ifindex, CPU or queue) stored at ``key``, or None."""
        value = self.slots.get(key)
        return None if value is None else int.from_bytes(value[:4], "little")


class DevMap(_TargetArray):
    """``BPF_MAP_TYPE_DEVMAP``: values are an ifindex (and optionally a program fd)."""

    value_sizes = (4, 8)


class DevMapHash(HashMap):
    """``BPF_MAP_TYPE_DEVMAP_HASH``: ifindex values under arbitrary u32 keys."""

    key_size_fixed = 4
    value_sizes = (4, 8)

    def update(self, key, value, flags=BPF_ANY, cpu=None):
        # __dev_map_hash_update_elem(): no ifindex is an error (not a clear, as in the array
        # devmap), and BPF_EXIST does not ask for a present key.
        self._check(key, value)
        if flags > BPF_EXIST or not int.from_bytes(value[:4], "little"):
            return -errno.EINVAL
        key = bytes(key)
        present = key in self.entries
        if present and flags == BPF_NOEXIST:
            return -errno.EEXIST
        if not present and len(self.entries) >= self.max_entries:
            return -errno.E2BIG
        self.entries[key] = bytearray(value)
        return 0

    def target(self, key: int):
        value = self.entries.get(key.to_bytes(4, "little"))
        return None if value is None else int.from_bytes(value[:4], "little")


class CpuMap(_TargetArray):
    """``BPF_MAP_TYPE_CPUMAP``: the key is a CPU, the value its queue size (0: no entry)."""

    value_sizes = (4, 8)
    QSIZE_MAX = 16384  # cpu_map_update_elem()'s sanity limit on a queue's size

    def update(self, key, value, flags=BPF_ANY, cpu=None):
        self._check(key, value)
        if (flags <= BPF_EXIST and flags != BPF_NOEXIST and self._index(key) is not None
                and int.from_bytes(value[:4], "little") > self.QSIZE_MAX):
            return -errno.EOVERFLOW
        return super().update(key, value, flags, cpu)

    def target(self, key: int):
        return key if key in self.slots else None


@dataclass(eq=False)
class FileDesc:
    """An open file of the simulated process, as an xskmap update sees the fd naming it.

    Parameters
    ----------
    kind : str
        ``"xsk"`` an AF_XDP socket, ``"socket"`` a socket of another family, ``"file"``
        anything that is no socket.
    queue_id : int
        The queue an AF_XDP socket is bound to (0 before it is bound): what a program reads
        as ``struct bpf_xdp_sock``'s ``queue_id`` through an xskmap lookup.

    Members
    -------
    view : bytearray
        ``struct bpf_xdp_sock`` as a program sees it (the queue, a u32).
    """

    kind: str = "xsk"
    queue_id: int = 0

    def __post_init__(self):
        self.view = bytearray(self.queue_id.to_bytes(4, "little"))


XSKMAP_FLAGS = 0x1C  # xsk_map_alloc(): BPF_F_NUMA_NODE | BPF_F_RDONLY | BPF_F_WRONLY only


class XskMap(_TargetArray):
    """``BPF_MAP_TYPE_XSKMAP``: the key is an RX queue, the value an AF_XDP socket.

    As ``xsk_map_update_elem()``, an update checks its flags, then the key (``-E2BIG``
    past ``max_entries``), then the socket: with ``fds`` set (``{fd: FileDesc}``, the open
    files of the simulated process) a value that is no open fd gives ``-EBADF``, a file
    that is no socket ``-ENOTSOCK``, a socket of another family ``-EOPNOTSUPP``; with
    ``fds`` None (the simulated paths) every value is the id of a socket bound to the queue
    of that number. ``BPF_NOEXIST`` is ``-EEXIST`` only on a slot holding another socket,
    ``BPF_EXIST`` is ``-ENOENT`` on an empty one. A program's lookup returns the socket
    (``struct bpf_xdp_sock``: its ``queue_id``) or NULL; from user space an xskmap cannot
    be read (``-EOPNOTSUPP``, ``xsk_map_lookup_elem_sys_only()``). :meth:`release` closes
    an fd: a socket's last one takes it out of every slot, as ``xsk_delete_from_maps()``.
    """

    value_sizes = (4,)

    def __init__(self, spec, ncpus=1):
        super().__init__(spec, ncpus)
        if self.flags & ~XSKMAP_FLAGS:
            raise MapError(f"map {self.name!r}: an xskmap takes no flags but BPF_F_NUMA_NODE, "
                           f"BPF_F_RDONLY and BPF_F_WRONLY, not {self.flags:#x}")
        self.fds: dict[int, FileDesc] | None = None
        self.socks: dict[int, FileDesc] = {}       # slot -> the socket it holds
        self._ids: dict[int, FileDesc] = {}        # fds None: socket id -> its socket

    def _socket(self, fd):
        """Return the socket ``fd`` names, or -errno."""
        if self.fds is None:
            sock = self._ids.get(fd)
            if sock is None:
                sock = self._ids[fd] = FileDesc("xsk", fd)
            return sock
        sock = self.fds.get(fd)
        if sock is None:
            return -errno.EBADF
        if sock.kind == "file":
            return -errno.ENOTSOCK
        return sock if sock.kind == "xsk" else -errno.EOPNOTSUPP

    def update(self, key, value, flags=BPF_ANY, cpu=None):
        self._check(key, value)
        if flags > BPF_EXIST:
            return -errno.EINVAL
        index = self._index(key)
        if index is None:
            return -errno.E2BIG
        sock = self._socket(int.from_bytes(value, "little"))
        if isinstance(sock, int):
            return sock
        old = self.socks.get(index)
        if old is sock:
            return 0
        if old is not None and flags == BPF_NOEXIST:
            return -errno.EEXIST
        if old is None and flags == BPF_EXIST:
            return -errno.ENOENT
        self.socks[index] = sock
        self.slots[index] = bytearray(value)
        return 0

    def delete(self, key):
        err = super().delete(key)
        if not err:
            self.socks.pop(int.from_bytes(key, "little"), None)
        return err

    def lookup(self, key, cpu=0):
        index = self._index(key)
        sock = None if index is None else self.socks.get(index)
        return None if sock is None else sock.view

    def sys_lookup(self, key):
        return -errno.EOPNOTSUPP

    def release(self, fd):
        """Close ``fd`` of :attr:`fds`; a socket no other fd names leaves every slot."""
        sock = self.fds.pop(fd, None) if self.fds is not None else None
        if sock is None or any(s is sock for s in self.fds.values()):
            return
        for index in [i for i, s in self.socks.items() if s is sock]:
            del self.socks[index]
            del self.slots[index]


_TYPES = {
    MapType.array: ArrayMap, MapType.percpu_array: PercpuArrayMap,
    MapType.prog_array: ProgArrayMap, MapType.hash: HashMap,
    MapType.percpu_hash: PercpuHashMap, MapType.lru_hash: LruHashMap,
    MapType.lru_percpu_hash: LruPercpuHashMap, MapType.lpm_trie: LpmTrieMap,
    MapType.devmap: DevMap, MapType.devmap_hash: DevMapHash, MapType.cpumap: CpuMap,
    MapType.xskmap: XskMap,
}


def create_map(spec, ncpus=1) -> BpfMap:
    """Create the map ``spec`` describes; raise :class:`MapError` for one nicsim lacks."""
    cls = _TYPES.get(spec.type)
    if cls is None:
        try:
            kind = MapType(spec.type).name
        except ValueError:
            kind = f"type {spec.type}"
        raise MapError(f"map {spec.name!r}: {kind} maps are not supported")
    return cls(spec, ncpus)
