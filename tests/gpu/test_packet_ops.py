"""Batched checksum verification and RSS kernels against the golden references."""

import random

import numpy as np
import pytest
from conftest import adversarial_frames, random_frames

from nicsim.gpu.batch import pack
from nicsim.gpu.packet_ops import ChecksumKernel, RssKernel
from nicsim.hw.ref.checksum import Status, rx_checksum
from nicsim.hw.ref.rss import ALL_TYPES_MASK, HashType, RssConfig, rss_hash


def _check_checksums(kernel, frames):
    got = kernel.run(frames)
    for i, frame in enumerate(frames):
        want = rx_checksum(frame)
        assert (got.ip[i], got.l4[i], got.csum_complete[i]) == \
            (want.ip, want.l4, want.csum_complete), f"frame {i}: {frame.hex()}"
    return got


def _check_rss(kernel, frames, config):
    got = kernel.run(frames)
    for i, frame in enumerate(frames):
        want = rss_hash(frame, config)
        assert (got.hash[i], got.hash_type[i], got.queue[i]) == \
            (want.hash, want.hash_type, want.queue), f"frame {i}: {frame.hex()}"
    return got


def test_checksum_random(platform):
    frames = random_frames(random.Random(1), 300)
    got = _check_checksums(ChecksumKernel(platform), frames)
    # The batch exercises every verdict.
    assert {Status.OK, Status.BAD, Status.NONE} <= set(got.ip) | set(got.l4)
    assert Status.OK in got.l4 and Status.BAD in got.l4


def test_checksum_adversarial(platform):
    kernel = ChecksumKernel(platform)
    frames = adversarial_frames()
    got = _check_checksums(kernel, frames)
    assert got.l4[frames.index(adversarial_frames()[7])] == Status.OK  # jumbo TCP
    assert kernel.run([]).ip.shape == (0,)
    _check_checksums(kernel, frames[7:8])  # one jumbo frame alone


def test_rss_random(platform):
    rng = random.Random(2)
    frames = random_frames(rng, 300)
    got = _check_rss(RssKernel(platform), frames, RssConfig())
    assert set(got.hash_type) >= {HashType.NONE, HashType.IPV4, HashType.TCP_IPV4,
                                  HashType.UDP_IPV4, HashType.IPV6, HashType.UDP_IPV6}
    key = bytes(rng.randrange(256) for _ in range(40))
    table = [rng.randrange(16) for _ in range(64)]
    for enabled in (ALL_TYPES_MASK, 0b0010010, 0):
        config = RssConfig(key=key, enabled=enabled, table=table)
        _check_rss(RssKernel(platform, config), frames, config)


def test_rss_adversarial(platform):
    kernel = RssKernel(platform)
    _check_rss(kernel, adversarial_frames(), RssConfig())
    assert kernel.run(pack([])).queue.shape == (0,)


def test_rss_published_vector(platform):
    # Microsoft's verification suite: 66.9.149.187:2794 -> 161.142.100.80:1766 (REFERENCES.md).
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    frame = bytes(Ether() / IP(src="66.9.149.187", dst="161.142.100.80")
                  / TCP(sport=2794, dport=1766))
    got = RssKernel(platform).run([frame])
    assert (int(got.hash[0]), int(got.hash_type[0])) == (0x51CCC178, HashType.TCP_IPV4)


@pytest.mark.long
def test_checksum_and_rss_fuzz(platform):
    rng = random.Random(99)
    frames = random_frames(rng, 5000, max_payload=1500)
    _check_checksums(ChecksumKernel(platform), frames)
    _check_rss(RssKernel(platform), frames, RssConfig())
    assert np.all(np.diff(pack(frames).offsets.astype(np.int64)) >= 0)
