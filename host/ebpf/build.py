"""Compile eBPF C programs with clang into a per-user cache.

Objects are built the way a user builds them for the kernel (``clang -O2 -g -target bpf``) and
kept under ``~/.cache/nicsim/ebpf/<hash>.o``, the hash covering the source, the headers next to
it, the flags and the compiler, so an unchanged program is compiled once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

__all__ = ["BuildError", "CLANG", "compile_c", "cache_dir", "progs_dir", "prog_path"]

CLANG = os.environ.get("NICSIM_CLANG", "clang-15")
BASE_FLAGS = ("-O2", "-g", "-target", "bpf", "-Wall", "-Wno-unused-function")


class BuildError(RuntimeError):
    """A program that could not be compiled (one line)."""


def cache_dir() -> Path:
    """Return the object cache folder (``$XDG_CACHE_HOME/nicsim/ebpf`` or ``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nicsim" / "ebpf"


def progs_dir() -> Path:
    """Return the folder of the example XDP programs shipped with nicsim."""
    return Path(__file__).parent / "progs"


def prog_path(name: str) -> Path:
    """Return the path of example program ``name`` (with or without ``.c``)."""
    return progs_dir() / (name if name.endswith(".c") else name + ".c")


def _multiarch_include():
    # linux/types.h includes asm/types.h, which Debian keeps under the multiarch folder.
    arch = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
    path = Path("/usr/include") / arch
    return [f"-I{path}"] if path.is_dir() else []


def _clang_version(clang):
    try:
        out = subprocess.run([clang, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.splitlines()[0] if out.returncode == 0 and out.stdout else None


def compile_c(path, extra_flags=()) -> Path:
    """Compile the C file ``path`` to an eBPF object; return the cached object's path.

    Parameters
    ----------
    path : str or Path
        The C source.
    extra_flags : sequence of str
        More clang flags (``-DNAME=VALUE``, ``-I...``).

    Raises
    ------
    BuildError
        clang is missing, the source cannot be read or the compile fails (the first error line
        of clang is in the message).
    """
    path = Path(path)
    try:
        source = path.read_bytes()
    except OSError as exc:
        raise BuildError(f"cannot read {path}: {exc.strerror or exc}") from None
    clang = shutil.which(CLANG)
    if clang is None:
        raise BuildError(f"{CLANG} not found: install clang-15 (apt-get install clang-15) or "
                         f"set NICSIM_CLANG")
    version = _clang_version(clang) or CLANG
    flags = [*BASE_FLAGS, *_multiarch_include(), f"-I{path.parent.resolve()}",
             *map(str, extra_flags)]
    digest = hashlib.sha256()
    for part in (version, "\0".join(flags), path.name):
        digest.update(part.encode() + b"\0")
    digest.update(source)
    for header in sorted(path.parent.glob("*.h")):
        digest.update(header.name.encode() + b"\0" + header.read_bytes())
    out_dir = cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{digest.hexdigest()[:24]}.o"
    if target.exists():
        return target
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    try:
        proc = subprocess.run([clang, *flags, "-c", str(path), "-o", str(tmp)],
                              capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise BuildError(f"{CLANG} took too long compiling {path}") from None
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        errors = [ln for ln in proc.stderr.splitlines() if "error" in ln]
        first = errors[0] if errors else (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise BuildError(f"{CLANG} failed on {path}: {first.strip()}")
    os.replace(tmp, target)
    return target
