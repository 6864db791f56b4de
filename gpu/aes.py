# Ref: FIPS 197 §5.1-5.2 (AES cipher and key expansion), NIST SP 800-38A §6.5 (CTR mode),
#      RFC 4303 (ESP), S. Han et al., PacketShader, SIGCOMM 2010 §6.2.4 (IPsec on a GPU)
"""AES-128-CTR payload encryption for an IPsec-style gateway: host key expansion, the
kernel's wrapper and a numpy version.

Frame ``i``'s payload (from ``starts[i]`` to its end) is XORed with the key stream
``AES_K(iv_i) ‖ AES_K(iv_i + 1) ‖ ...``, the counter block a 128-bit big-endian integer, as the
``cryptography`` package's ``modes.CTR`` does; bytes before the payload are left as they
are. Decryption is the same operation.
"""

from __future__ import annotations

import numpy as np

from .batch import Batch, from_device, launch, pack, to_device

__all__ = ["SBOX", "TE0", "AesCtrKernel", "aes_ctr_numpy", "expand_key"]


def _sbox() -> np.ndarray:
    """FIPS 197 §5.1.1: the multiplicative inverse in GF(2^8), then the affine map."""
    def mul(a, b):
        p = 0
        while b:
            if b & 1:
                p ^= a
            a = ((a << 1) ^ 0x1B) & 0xFF if a & 0x80 else a << 1
            b >>= 1
        return p

    inverse = [0] * 256
    for a in range(1, 256):
        for b in range(1, 256):
            if mul(a, b) == 1:
                inverse[a] = b
                break
    box = np.zeros(256, dtype=np.uint8)
    for a in range(256):
        x = inverse[a]
        s = x
        for shift in range(1, 5):
            s ^= ((x << shift) | (x >> (8 - shift))) & 0xFF
        box[a] = s ^ 0x63
    return box


SBOX = _sbox()


def _te0() -> np.ndarray:
    """The 32-bit round table: {02}S[x], S[x], S[x], {03}S[x] as one big-endian word."""
    s = SBOX.astype(np.uint32)
    twice = ((s << 1) ^ np.where(s & 0x80, 0x11B, 0)).astype(np.uint32) & 0xFF
    return (twice << 24) | (s << 16) | (s << 8) | (twice ^ s)


TE0 = _te0()
_RCON = (0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x1B, 0x36)


def expand_key(key: bytes) -> np.ndarray:
    """Return the 11 round keys of an AES-128 key as 176 bytes (FIPS 197 §5.2).

    Raises
    ------
    ValueError
        If the key is not 16 bytes.
    """
    key = bytes(key)
    if len(key) != 16:
        raise ValueError(f"an AES-128 key is 16 bytes, not {len(key)}")
    words = [list(key[4 * i:4 * i + 4]) for i in range(4)]
    for i in range(4, 44):
        t = list(words[i - 1])
        if i % 4 == 0:
            t = [int(SBOX[b]) for b in t[1:] + t[:1]]
            t[0] ^= _RCON[i // 4 - 1]
        words.append([a ^ b for a, b in zip(words[i - 4], t, strict=True)])
    return np.array([b for w in words for b in w], dtype=np.uint8)


def _words(data: np.ndarray) -> np.ndarray:
    """Bytes as big-endian 32-bit words (uint32 in host order)."""
    return np.ascontiguousarray(data, dtype=np.uint8).view(">u4").astype(np.uint32)


def _xtime(x):
    return ((x << 1) & 0xFF) ^ np.where(x & 0x80, 0x1B, 0).astype(np.uint8)


def _encrypt_blocks(blocks: np.ndarray, round_keys: np.ndarray) -> np.ndarray:
    """Encrypt ``(n, 16)`` uint8 blocks (column-major state) with numpy."""
    s = blocks ^ round_keys[:16]
    rows = np.arange(4)
    # ShiftRows as a gather: out[4 c + r] = in[4 ((c + r) % 4) + r].
    shift = np.array([4 * ((c + r) % 4) + r for c in range(4) for r in rows])
    for rnd in range(1, 11):
        t = SBOX[s][:, shift]
        if rnd < 10:
            a = t.reshape(-1, 4, 4)
            a0, a1, a2, a3 = a[:, :, 0], a[:, :, 1], a[:, :, 2], a[:, :, 3]
            every = a0 ^ a1 ^ a2 ^ a3
            t = np.stack([a0 ^ every ^ _xtime(a0 ^ a1), a1 ^ every ^ _xtime(a1 ^ a2),
                          a2 ^ every ^ _xtime(a2 ^ a3), a3 ^ every ^ _xtime(a3 ^ a0)],
                         axis=2).reshape(-1, 16)
        s = t ^ round_keys[16 * rnd:16 * rnd + 16]
    return s


def _plan(frames, ivs, starts):
    """Pack the batch and list its blocks: (batch, ivs, starts, block frame, block index)."""
    b = frames if isinstance(frames, Batch) else pack(frames)
    n = b.count
    ivs = np.ascontiguousarray(np.frombuffer(b"".join(bytes(v) for v in ivs), dtype=np.uint8)
                               if not isinstance(ivs, np.ndarray) else ivs, dtype=np.uint8)
    if ivs.size != 16 * n:
        raise ValueError(f"give one 16-byte counter block per frame ({n}), not {ivs.size} "
                         f"bytes")
    lengths = np.diff(b.offsets.astype(np.int64))
    starts = np.zeros(n, np.int64) if starts is None else np.asarray(starts, np.int64)
    if starts.shape != (n,) or (starts < 0).any() or (starts > lengths).any():
        raise ValueError("starts must give, for every frame, an offset from 0 to its length")
    blocks = (lengths - starts + 15) // 16
    block_frame = np.repeat(np.arange(n, dtype=np.uint32), blocks)
    first = np.cumsum(blocks) - blocks
    block_index = (np.arange(int(blocks.sum()), dtype=np.int64)
                   - np.repeat(first, blocks)).astype(np.uint32)
    return b, ivs.reshape(-1), starts.astype(np.uint32), block_frame, block_index


def _counter_blocks(ivs, block_frame, block_index):
    """The counter block iv + index of every block, as (n, 16) uint8."""
    iv = ivs.reshape(-1, 16)[block_frame].astype(np.uint64)
    hi = np.zeros(len(block_frame), np.uint64)
    lo = np.zeros(len(block_frame), np.uint64)
    for k in range(8):
        hi = (hi << np.uint64(8)) | iv[:, k]
        lo = (lo << np.uint64(8)) | iv[:, 8 + k]
    new_lo = lo + block_index.astype(np.uint64)
    hi = hi + (new_lo < lo).astype(np.uint64)
    out = np.zeros((len(block_frame), 16), np.uint8)
    for k in range(8):
        out[:, 7 - k] = (hi >> np.uint64(8 * k)) & np.uint64(0xFF)
        out[:, 15 - k] = (new_lo >> np.uint64(8 * k)) & np.uint64(0xFF)
    return out


def aes_ctr_numpy(key: bytes, frames, ivs, starts=None) -> Batch:
    """Encrypt with numpy, every block of the batch at once; return the new batch."""
    b, ivs, starts, block_frame, block_index = _plan(frames, ivs, starts)
    stream = _encrypt_blocks(_counter_blocks(ivs, block_frame, block_index), expand_key(key))
    data = b.data.copy()
    if len(block_frame):
        at = (b.offsets[:-1].astype(np.int64)[block_frame] + starts[block_frame]
              + 16 * block_index.astype(np.int64))
        end = b.offsets[1:].astype(np.int64)[block_frame]
        pos = at[:, None] + np.arange(16)
        valid = pos < end[:, None]
        data[pos[valid]] ^= stream[valid]
    return Batch(data, b.offsets)


class AesCtrKernel:
    """AES-128-CTR of batches on the OpenCL device, one work-item per 16-byte block."""

    def __init__(self, platform, key: bytes):
        self.platform = platform
        self.kernel = platform.kernel("aes_ctr", "aes")
        self.round_keys = to_device(platform, _words(expand_key(key)))
        self.te0 = to_device(platform, TE0)
        self.last_event = None

    def run(self, frames, ivs, starts=None) -> Batch:
        """Encrypt frame ``i`` from ``starts[i]`` (default 0) with counter block ``ivs[i]``
        (16 bytes each, a sequence or an ``(n, 16)`` array); return the new batch."""
        b, ivs, starts, block_frame, block_index = _plan(frames, ivs, starts)
        p = self.platform
        data = to_device(p, b.data, writable=True)
        self.last_event = launch(p, self.kernel, len(block_frame), data,
                                 to_device(p, b.offsets), to_device(p, starts),
                                 to_device(p, _words(ivs)), to_device(p, block_frame),
                                 to_device(p, block_index), np.uint32(len(block_frame)),
                                 self.round_keys, self.te0)
        return Batch(from_device(p, data, b.data.shape, np.uint8), b.offsets)
