"""AES-128-CTR kernel against the cryptography package and FIPS 197's key expansion."""

import random

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from nicsim.gpu.aes import AesCtrKernel, aes_ctr_numpy, expand_key


def _reference(key, frame, iv, start):
    enc = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return frame[:start] + enc.update(frame[start:]) + enc.finalize()


def _check(batch, key, frames, ivs, starts):
    for i, frame in enumerate(frames):
        assert batch.frame(i) == _reference(key, frame, ivs[i], starts[i]), f"frame {i}"


def test_key_expansion_fips197():
    # FIPS 197 Appendix A.1: key 2b7e1516..., round key 10 d014f9a8 c9ee2589 e13f0cc8 b6630ca6.
    keys = expand_key(bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c"))
    assert keys[160:].tobytes().hex() == "d014f9a8c9ee2589e13f0cc8b6630ca6"
    with pytest.raises(ValueError, match="16 bytes"):
        expand_key(b"short")


def test_random_payloads(platform):
    rng = random.Random(1)
    key = rng.randbytes(16)
    frames = [rng.randbytes(rng.randint(0, 300)) for _ in range(60)]
    ivs = [rng.randbytes(16) for _ in frames]
    # Counters that carry across 64 bits and wrap around 128 bits.
    ivs[0] = b"\xff" * 16
    ivs[1] = bytes(8) + b"\xff" * 8
    ivs[2] = bytes(15) + b"\xfe"
    starts = [rng.randint(0, len(f)) for f in frames]
    _check(AesCtrKernel(platform, key).run(frames, ivs, starts), key, frames, ivs, starts)
    _check(aes_ctr_numpy(key, frames, ivs, starts), key, frames, ivs, starts)


def test_edges(platform):
    rng = random.Random(2)
    key = rng.randbytes(16)
    kernel = AesCtrKernel(platform, key)
    frames = [b"", b"x", rng.randbytes(9018), rng.randbytes(64), rng.randbytes(16)]
    ivs = np.frombuffer(rng.randbytes(16 * len(frames)), np.uint8).reshape(-1, 16)
    starts = [0, 1, 42, 64, 0]  # a frame with no payload at all, a header only
    _check(kernel.run(frames, ivs, starts), key, frames, [v.tobytes() for v in ivs], starts)
    assert kernel.run([], []).data.size == 0
    one = kernel.run(frames[2:3], ivs[2:3])
    assert one.frame(0) == _reference(key, frames[2], ivs[2].tobytes(), 0)
    # Decryption is the same operation.
    assert kernel.run([one.frame(0)], ivs[2:3]).frame(0) == frames[2]
    with pytest.raises(ValueError, match="counter block"):
        kernel.run([b"abc"], [])


@pytest.mark.long
def test_fuzz(platform):
    rng = random.Random(3)
    key = rng.randbytes(16)
    frames = [rng.randbytes(rng.randint(0, 9018)) for _ in range(300)]
    ivs = [rng.randbytes(16) for _ in frames]
    starts = [rng.randint(0, len(f)) for f in frames]
    _check(AesCtrKernel(platform, key).run(frames, ivs, starts), key, frames, ivs, starts)
