# Ref: ITU-T V.42 / IEEE 802.3 §3.2.9 CRC-32 polynomial 0x04C11DB7 (here MSB first, zero
#      initial value, no final XOR: a linear function of the key bits)
"""The bucket hash of exact-match tables, shared by the gateware and the control plane.

The hash is the CRC-32 of the key (its most significant bit first), truncated to the bucket
index. With a zero initial value and no final XOR the CRC is linear in the key bits, so the
gateware computes each index bit as the XOR of a fixed set of key bits (:func:`hash_taps`)
and the control plane, which places entries, computes the same number (:func:`key_hash`).
"""

__all__ = ["CRC32_POLY", "key_hash", "hash_taps"]

CRC32_POLY = 0x04C11DB7


def key_hash(key: int, key_bits: int, index_bits: int) -> int:
    """Return the bucket index of ``key`` (``key_bits`` wide) in a table of 2**index_bits."""
    crc = 0
    for i in reversed(range(key_bits)):
        top = ((crc >> 31) & 1) ^ ((key >> i) & 1)
        crc = (crc << 1) & 0xFFFFFFFF
        if top:
            crc ^= CRC32_POLY
    return crc & ((1 << index_bits) - 1)


def hash_taps(key_bits: int, index_bits: int):
    """Return, for each index bit, the key bit positions whose XOR gives it."""
    taps = [[] for _ in range(index_bits)]
    for pos in range(key_bits):
        h = key_hash(1 << pos, key_bits, index_bits)
        for j in range(index_bits):
            if h >> j & 1:
                taps[j].append(pos)
    return taps
