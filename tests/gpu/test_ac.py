"""Aho-Corasick kernel and automaton against plain search; the signature file reader."""

import random

import pytest

from nicsim.gpu.ac import AcKernel, AhoCorasick, ac_numpy
from nicsim.hw.ref.ac import load_signatures, match, parse_signature


def _check(result, patterns, frames, starts=None):
    for i, frame in enumerate(frames):
        found = match(patterns, frame[starts[i] if starts else 0:])
        assert int(result.counts[i]) == len(found), f"frame {i}"
        assert result.patterns(i) == sorted({index for _, index in found}), f"frame {i}"


def test_random_overlapping(platform):
    rng = random.Random(1)
    # A small alphabet makes overlaps, suffix patterns and duplicates common.
    patterns = [bytes(rng.choice(b"abc") for _ in range(rng.randint(1, 6))) for _ in range(70)]
    patterns += [b"abcabc", b"abcabc", b"c"]
    frames = [bytes(rng.choice(b"abcd") for _ in range(rng.randint(0, 200))) for _ in range(80)]
    starts = [rng.randint(0, len(f)) for f in frames]
    automaton = AhoCorasick(patterns)
    kernel = AcKernel(platform, automaton)
    _check(kernel.run(frames), patterns, frames)
    _check(kernel.run(frames, starts), patterns, frames, starts)
    _check(ac_numpy(automaton, frames, starts), patterns, frames, starts)


def test_binary_signatures_all_hit_all_miss_jumbo(platform, tmp_path):
    path = tmp_path / "sigs.txt"
    path.write_text("# shellcode and web attacks\n\n"
                    "nop-sled: |90 90 90 90|\n"
                    "etc-passwd: /etc/passwd\n"
                    "pipe: a\\|b\n"
                    "cmd: |00|cmd.exe|00|\n")
    sigs = load_signatures(path)
    assert [s.content for s in sigs] == [b"\x90" * 4, b"/etc/passwd", b"a|b",
                                         b"\x00cmd.exe\x00"]
    patterns = [s.content for s in sigs]
    kernel = AcKernel(platform, AhoCorasick(sigs))
    hit = b"GET /etc/passwd a|b \x00cmd.exe\x00" + b"\x90" * 10
    jumbo = bytes(9000) + hit + b"\xff" * 8
    frames = [hit, b"", b"nothing to see", bytes(9018), jumbo]
    result = kernel.run(frames)
    _check(result, patterns, frames)
    assert result.patterns(0) == [0, 1, 2, 3] and result.counts[0] == 7 + 3
    assert result.counts[1:4].tolist() == [0, 0, 0]
    assert kernel.run([]).counts.shape == (0,)
    _check(kernel.run([jumbo]), patterns, [jumbo])  # a batch of one (jumbo) frame


def test_many_patterns_bit_set(platform):
    # More than 32 patterns: the bit set spans words.
    patterns = [f"sig{n:03d}".encode() for n in range(100)]
    frames = [b"..sig099..sig000..sig050", b"sig0", b"sig064sig032sig031"]
    _check(AcKernel(platform, AhoCorasick(patterns)).run(frames), patterns, frames)


@pytest.mark.parametrize("line, message", [
    ("x: |9|", "not hexadecimal"), ("x: |90", "not closed"), ("x: ab\\", "backslash"),
    ("x:", "empty"), ("x: " + "a" * 300, "more than"),
])
def test_bad_signature_lines(line, message):
    with pytest.raises(ValueError, match=message):
        parse_signature(line)


def test_bad_signature_files(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        load_signatures(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="no signature"):
        load_signatures(tmp_path / "empty.txt")
    (tmp_path / "bad.txt").write_text("ok: abc\nbad: |zz|\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: \|zz\|"):
        load_signatures(tmp_path / "bad.txt")


def test_bad_starts_refused(platform):
    with pytest.raises(ValueError, match="starts"):
        AcKernel(platform, AhoCorasick([b"a"])).run([b"abc"], [4])


@pytest.mark.long
def test_fuzz(platform):
    rng = random.Random(5)
    patterns = [bytes(rng.randrange(4) for _ in range(rng.randint(1, 8))) for _ in range(300)]
    frames = [bytes(rng.randrange(5) for _ in range(rng.randint(0, 3000))) for _ in range(300)]
    _check(AcKernel(platform, AhoCorasick(patterns)).run(frames), patterns, frames)
