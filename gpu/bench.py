"""Kernel throughput on the OpenCL platform at hand, against numpy doing the same work, and
the calibration of the GPU device model from the same measurements.

Every kernel runs on a seeded batch; its time is the device's own (OpenCL profiling events,
the median of several runs), so copies and launch are left out of ``opencl_pps`` and counted
in ``opencl_end_to_end_pps`` (wall time of the wrapper call: buffers, copies both ways, launch,
wait). The numpy version runs on the same batch in the same process; ``agree`` says whether
its answers equal the kernel's. The numpy versions of checksum verification and RSS handle
the bench's traffic (untagged IPv4/TCP frames without options, the datagram filling the
frame); the others are general.
"""

from __future__ import annotations

import random
import statistics
import time
from functools import partial

import numpy as np

from .ac import AcKernel, AhoCorasick, ac_numpy
from .aes import AesCtrKernel, aes_ctr_numpy
from .batch import pack
from .device import KERNELS, GpuProfile, KernelCost
from .lpm import Dir24_8, Lpm4Kernel, Lpm6Kernel, Lpm6Table, lpm4_numpy, lpm6_numpy, v6_words
from .packet_ops import ChecksumKernel, RssKernel

__all__ = ["run_bench"]

_M32 = 0xFFFFFFFF


def _median_time(fn, reps):
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _kernel_time(kernel, call, reps):
    """Median device time (s) of ``call()`` over ``reps`` runs, and its median wall time."""
    device = []
    wall = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        wall.append(time.perf_counter() - start)
        event = kernel.last_event
        device.append((event.profile.end - event.profile.start) * 1e-9 if event else 0.0)
    return statistics.median(device), statistics.median(wall)


def _tcp_frames(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """``n`` untagged IPv4/TCP frames of ``size`` bytes (even, >= 54) with random addresses,
    ports and payload and a valid IPv4 header checksum, as an ``(n, size)`` array."""
    f = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    f[:, 12:14] = (0x08, 0x00)
    f[:, 14] = 0x45
    f[:, 15] = 0
    total = size - 14
    f[:, 16:18] = (total >> 8, total & 0xFF)
    f[:, 20:22] = (0x40, 0)  # DF, no fragment
    f[:, 22:24] = (64, 6)
    f[:, 24:26] = 0
    f[:, 46] = 0x50  # data offset 5
    words = f[:, 14:34].astype(np.uint32)
    check = (~_fold(((words[:, 0::2] << 8) | words[:, 1::2]).sum(axis=1))) & 0xFFFF
    f[:, 24] = check >> 8
    f[:, 25] = check & 0xFF
    return f


def _same_arrays(got, want):
    return all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


def _fold(x):
    x = np.asarray(x, dtype=np.uint64)
    while (x >> 16).any():
        x = (x & 0xFFFF) + (x >> 16)
    return x.astype(np.uint32)


def _checksum_numpy(frames: np.ndarray):
    """Checksum verdicts of untagged IPv4/TCP frames whose datagram fills the frame."""
    words = (frames[:, 0::2].astype(np.uint64) << 8) | frames[:, 1::2]
    ip_ok = _fold(words[:, 7:17].sum(axis=1)) == 0xFFFF
    l4_len = frames.shape[1] - 34
    pseudo = words[:, 13:17].sum(axis=1) + 6 + l4_len
    l4_ok = _fold(words[:, 17:].sum(axis=1) + pseudo) == 0xFFFF
    complete = _fold(words[:, 7:].sum(axis=1))
    ip = np.where(ip_ok, 1, 2).astype(np.uint8)
    l4 = np.where(ip_ok, np.where(l4_ok, 1, 2), 0).astype(np.uint8)
    return ip, l4, complete.astype(np.uint16)


def _rss_numpy(frames: np.ndarray, config):
    """Toeplitz hash, type and queue of untagged IPv4/TCP frames (not fragments)."""
    key = int.from_bytes(config.key, "big")
    bits = 8 * len(config.key)
    h = np.zeros(len(frames), dtype=np.uint32)
    for position in range(12):  # source, destination, ports: bytes 26..37
        windows = [(key >> (bits - 32 - (8 * position + 7 - bit))) & _M32 for bit in range(8)]
        table = np.zeros(256, dtype=np.uint32)
        for value in range(1, 256):
            low = (value & -value).bit_length() - 1
            table[value] = table[value & (value - 1)] ^ windows[low]
        h ^= table[frames[:, 26 + position]]
    queues = np.asarray(config.table, dtype=np.uint32)[h & (len(config.table) - 1)]
    return h, np.full(len(frames), 2, np.uint8), queues


def _entry(name, n, size, device_s, wall_s, numpy_s, agree):
    return {"kernel": name, "packets": n, "frame_bytes": size,
            "opencl_pps": round(n / device_s) if device_s else None,
            "opencl_end_to_end_pps": round(n / wall_s) if wall_s else None,
            "numpy_pps": round(n / numpy_s) if numpy_s else None,
            "opencl_over_numpy": round(numpy_s / device_s, 3) if device_s else None,
            "agree": bool(agree)}


def _nonneg_lstsq(a, t):
    """Least squares ``a @ x ~ t`` with no term of ``x`` negative (negative terms dropped)."""
    used = list(range(a.shape[1]))
    x = np.zeros(a.shape[1])
    while used:
        sol, *_ = np.linalg.lstsq(a[:, used], t, rcond=None)
        negative = [u for u, v in zip(used, sol, strict=True) if v < 0]
        if not negative:
            x[used] = sol
            break
        used = [u for u in used if u not in negative]
    return x


def _fit_span(points, span):
    """The best ``fixed, item, byte`` for a given ``span`` (ps per byte of the longest work-item),
    in relative error: a point whose span term exceeds its throughput term is fitted by
    ``fixed + longest * span`` alone. Returns the cost and its squared log error."""
    n = len(points)
    columns = [1] + ([2] if len({b / i for i, b, _, _ in points if i}) > 1 else [])
    bound = [False] * n
    cost = None
    for _ in range(2 * n + 2):  # the bound set settles within a few rounds
        rows = []
        target = []
        for (items, nbytes, longest, ps), is_bound in zip(points, bound, strict=True):
            if is_bound:
                rows.append([1.0, 0.0, 0.0])
                target.append(ps - longest * span)
            else:
                rows.append([1.0, float(items), float(nbytes)])
                target.append(ps)
        weight = np.array([1.0 / max(ps, 1.0) for _, _, _, ps in points])
        a = np.array(rows)[:, [0] + columns] * weight[:, None]
        x = _nonneg_lstsq(a, np.array(target) * weight)
        coef = np.zeros(3)
        coef[[0] + columns] = x
        cost = KernelCost(coef[0], coef[1], coef[2], span)
        now = [longest * span > items * cost.item_ps + nbytes * cost.byte_ps
               for items, nbytes, longest, _ in points]
        if now == bound:
            break
        bound = now
    error = sum(np.log(max(cost.time_ps(i, b, longest), 1) / max(ps, 1.0)) ** 2
                for i, b, longest, ps in points)
    return cost, error


def _fit(points):
    """Fit :class:`KernelCost` to measured ``(items, nbytes, longest, ps)`` points.

    ``fixed + max(items * item + nbytes * byte, longest * span)``, no term negative, chosen
    for the least squared relative (log) error over the points, so that small batches weigh
    as much as large ones. The span is searched over the values each point would give alone
    and a log-spaced range between them; ``span = 0`` (the plain linear fit) is a candidate.
    """
    if not points:
        return KernelCost()
    points = [(int(i), int(b), int(longest), float(ps)) for i, b, longest, ps in points]
    alone = [ps / longest for _, _, longest, ps in points if longest > 0 and ps > 0]
    spans = [0.0]
    if alone:
        spans += list(np.geomspace(min(alone) / 100, max(alone), 200)) + alone
    best = min((_fit_span(points, s) for s in spans), key=lambda fit: fit[1])
    return best[0]


def _launch_ps(platform, reps):
    """Host-side launch overhead: wall time of a one-item launch and wait, less its run."""
    kernel = Lpm4Kernel(platform, Dir24_8([]))
    addrs = np.zeros(1, np.uint32)
    kernel.lookup(addrs)
    over = []
    for _ in range(reps):
        start = time.perf_counter()
        kernel.lookup(addrs)
        wall = time.perf_counter() - start
        e = kernel.last_event
        over.append(wall - (e.profile.end - e.profile.start) * 1e-9)
    return round(statistics.median(over) * 1e12)


def run_bench(platform, scale: float = 1.0, reps: int = 5, seed: int = 1, signatures=None,
              progress=None) -> dict:
    """Measure every kernel; return the results and the fitted :class:`GpuProfile`.

    Parameters
    ----------
    platform : nicsim.gpu.platform.Platform
    scale : float
        Batch sizes relative to the defaults (1.0: a million IPv4 lookups, ...).
    reps : int
        Runs per measurement (the median is kept).
    signatures : list of bytes, optional
        IDS patterns (default: 200 random ones of 4 to 16 bytes).
    progress : callable, optional
        ``progress(text)`` as each kernel starts.

    Returns
    -------
    dict
        ``{"platform", "kind", "results": [...], "profile": {...}, "points": {...}}``; the
        points are the measured ``[items, bytes, longest, ps]`` each kernel's cost is fitted to.
    """
    say = progress or (lambda text: None)
    rng = np.random.default_rng(seed)
    prng = random.Random(seed)
    results = []
    points = {k: [] for k in KERNELS}

    def sized(n):
        return max(8, int(n * scale))

    say("launch overhead")  # first, before large buffers are around to be freed
    launch_ps = _launch_ps(platform, max(5, 4 * reps))

    say("lpm4")
    routes = []
    for _ in range(sized(20000)):
        length = prng.randint(8, 32)
        net = prng.getrandbits(32) >> (32 - length) << (32 - length)
        routes.append((f"{net >> 24}.{net >> 16 & 255}.{net >> 8 & 255}.{net & 255}/{length}",
                       prng.randrange(1000)))
    table = Dir24_8(routes)
    k4 = Lpm4Kernel(platform, table)
    for n in (sized(1 << 17), sized(1 << 20)):
        addrs = rng.integers(0, 1 << 32, size=n, dtype=np.uint64).astype(np.uint32)
        k4.lookup(addrs)
        dev, wall = _kernel_time(k4, lambda a=addrs: k4.lookup(a), reps)
        points["lpm4"].append((n, 0, 0, dev * 1e12))
    np_s = _median_time(lambda: lpm4_numpy(table, addrs), reps)
    results.append(_entry("lpm4", n, None, dev, wall, np_s,
                          np.array_equal(k4.lookup(addrs), lpm4_numpy(table, addrs))))

    say("lpm6")
    routes6 = []
    for _ in range(sized(5000)):
        length = prng.choice([32, 40, 48, 56, 64, 64, 64, 96, 128])
        net = prng.getrandbits(128) >> (128 - length) << (128 - length)
        routes6.append((f"{net:032x}", length, prng.randrange(1000)))
    import ipaddress
    routes6 = [(str(ipaddress.ip_network((net, length))), hop)
               for net, length, hop in ((int(h, 16), ln, hp) for h, ln, hp in routes6)]
    table6 = Lpm6Table(routes6)
    k6 = Lpm6Kernel(platform, table6)
    for n in (sized(1 << 15), sized(1 << 18)):
        picks = [ipaddress.ip_network(routes6[prng.randrange(len(routes6))][0])
                 for _ in range(n // 2)]
        words = v6_words([int(p.network_address) | prng.getrandbits(128 - p.prefixlen)
                          for p in picks] + [prng.getrandbits(128) for _ in range(n - n // 2)])
        k6.lookup(words)
        dev, wall = _kernel_time(k6, lambda w=words: k6.lookup(w), reps)
        points["lpm6"].append((n, 0, 0, dev * 1e12))
    np_s = _median_time(lambda: lpm6_numpy(table6, words), max(1, reps // 2))
    results.append(_entry("lpm6", n, None, dev, wall, np_s,
                          np.array_equal(k6.lookup(words), lpm6_numpy(table6, words))))

    from nicsim.hw.ref.rss import RssConfig
    config = RssConfig()
    rss = RssKernel(platform, config)
    ck = ChecksumKernel(platform)
    patterns = signatures or [bytes(prng.randrange(256) for _ in range(prng.randint(4, 16)))
                              for _ in range(200)]
    automaton = AhoCorasick(patterns)
    ac = AcKernel(platform, automaton)
    key = bytes(prng.randrange(256) for _ in range(16))
    aes = AesCtrKernel(platform, key)

    for size, n_base in ((64, 1 << 16), (1500, 1 << 13)):
        n = sized(n_base)
        small = sized(n_base // 8)
        frames = _tcp_frames(rng, n, size)
        batch = pack(list(frames))  # the kernels' layout (each frame a row, back to back)
        ivs = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
        starts = np.full(n, 54, np.uint32)  # the TCP payload
        payload = size - 54
        cases = (
            ("rss", rss, lambda c, b: rss.run(b), min(size, 128),
             partial(_rss_numpy, frames, config), _same_arrays),
            ("checksum", ck, lambda c, b: ck.run(b), size, partial(_checksum_numpy, frames),
             _same_arrays),
            ("ac", ac, lambda c, b, s=starts: ac.run(b, s[:c]), payload,
             partial(ac_numpy, automaton, batch, starts), _same_arrays),
            ("aes", aes, lambda c, b, v=ivs, s=starts: aes.run(b, v[:c], s[:c]), payload,
             partial(aes_ctr_numpy, key, batch, ivs, starts),
             lambda got, want: np.array_equal(got.data, want.data)),
        )
        for name, kernel, call, read, numpy_call, same in cases:
            say(f"{name}, {size}-byte frames")
            for count in (small, n):
                b = pack(list(frames[:count])) if count < n else batch
                call(count, b)  # warm up
                dev, wall = _kernel_time(kernel, partial(call, count, b), reps)
                points[name].append((count, read * count, read, dev * 1e12))
            np_s = _median_time(numpy_call, reps if name in ("rss", "checksum")
                                else max(1, reps // 2))
            results.append(_entry(name, n, size, dev, wall, np_s,
                                  same(call(n, batch), numpy_call())))

    profile = GpuProfile(platform.slug, launch_ps,
                         {k: _fit(p) for k, p in points.items()},
                         f"measured by nicsim gpu bench on {platform.name}")
    return {"platform": platform.name, "slug": platform.slug, "kind": platform.kind,
            "results": results, "profile": profile.to_dict(),
            "points": {k: [[i, b, longest, round(ps)] for i, b, longest, ps in p]
                       for k, p in points.items()}}
