"""The ``nicsim xdp`` commands: verify an XDP program, run a capture through it.

``PROG`` is an eBPF object built with ``clang -O2 -g -target bpf`` or a C file (compiled with
clang-15 into a cache first). ``xdp verify`` runs nicsim's verifier over each XDP program of the
object (exit status 1 when one is rejected); ``xdp run`` verifies the program, then runs every
frame of the capture through the interpreter: frames it passes (XDP_PASS) or sends back
(XDP_TX) go to ``--out``, one JSON line per input frame to ``--meta``. Errors a user can cause
end in one sentence on stderr and exit status 2.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from nicsim.sim.clierr import fail as _fail

__all__ = ["xdp_app", "load_program", "parse_map_init", "parse_route"]

console = Console()

xdp_app = typer.Typer(help="XDP programs: verify them, run captures through them.",
                      no_args_is_help=True)

PROG_HELP = "eBPF object (.o) or C source (.c, compiled with clang-15)."
SECTION_HELP = "Only programs of this ELF section (xdp, xdp.frags, xdp/NAME)."
NAME_HELP = "The program (function) to use when the object has several."


ETH_HLEN = 14  # the shortest frame XDP runs on


class UserError(Exception):
    """An error to report in one line."""


def load_program(path, section=None, name=None, *, single=True):
    """Load (compiling a .c first) and return ``(object, [programs])``.

    Raises
    ------
    UserError
        Missing file, compile or load error, no program matching ``section``/``name``, or
        several when ``single``.
    """
    from nicsim.host.ebpf.build import BuildError, compile_c
    from nicsim.host.ebpf.elf import LoadError, load_object

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file.")
    try:
        obj_path = compile_c(path) if path.suffix == ".c" else path
        obj = load_object(obj_path)
    except (BuildError, LoadError) as exc:
        raise UserError(str(exc)) from None
    progs = [p for p in obj.programs.values()
             if (section is None or p.section == section) and (name is None or p.name == name)]
    if not progs:
        have = ", ".join(f"{p.name} ({p.section})" for p in obj.programs.values()) or "none"
        raise UserError(f"{path}: no XDP program matches (programs: {have}).")
    if single and len(progs) > 1:
        names = ", ".join(p.name for p in progs)
        raise UserError(f"{path}: several XDP programs ({names}); choose one with --prog.")
    return obj, progs


def _gpl(obj):
    """Whether the object's license lets it call GPL-only helpers (the kernel's
    license_is_gpl_compatible())."""
    from nicsim.host.xdp import GPL_LICENSES

    return obj.license in GPL_LICENSES


def _verifier():
    try:
        from nicsim.host.ebpf.verifier import verify
    except ImportError:
        return None
    return verify


def parse_map_init(items, obj):
    """``["name:KEYHEX=VALUEHEX", ...]`` -> ``[(map index, key bytes, value bytes)]``."""
    out = []
    for item in items:
        name, sep, rest = item.partition(":")
        key_hex, sep2, value_hex = rest.partition("=")
        if not sep or not sep2:
            raise UserError(f"--map {item!r}: write NAME:KEYHEX=VALUEHEX.")
        try:
            index = obj.map_index(name)
        except KeyError:
            names = ", ".join(m.name for m in obj.maps) or "none"
            raise UserError(f"--map {item!r}: no map {name!r} (maps: {names}).") from None
        try:
            key = bytes.fromhex(key_hex.replace(":", ""))
            value = bytes.fromhex(value_hex.replace(":", ""))
        except ValueError:
            raise UserError(f"--map {item!r}: key and value must be hex bytes.") from None
        spec = obj.maps[index]
        if len(key) != spec.key_size or len(value) != spec.value_size:
            raise UserError(f"--map {item!r}: map {name!r} has {spec.key_size}-byte keys and "
                            f"{spec.value_size}-byte values, not {len(key)} and {len(value)}.")
        out.append((index, key, value))
    return out


def parse_route(items):
    """``["PREFIX,IFINDEX,DMAC[,SMAC[,GATEWAY]]" or "PREFIX,KIND", ...]`` -> a FibTable (None
    when empty); ``KIND`` is ``blackhole``, ``unreachable``, ``prohibit`` or ``local``."""
    from nicsim.host.ebpf.helpers import ROUTE_KINDS, FibTable

    if not items:
        return None
    fib = FibTable()
    for item in items:
        parts = [p.strip() for p in item.split(",")]
        if len(parts) == 2 and parts[1] in ROUTE_KINDS[1:]:  # PREFIX,blackhole and the like
            try:
                fib.add(parts[0], 0, kind=parts[1])
            except ValueError as exc:
                raise UserError(f"--route {item!r}: {exc}") from None
            continue
        if len(parts) < 3:
            raise UserError(f"--route {item!r}: write PREFIX,IFINDEX,DMAC[,SMAC[,GATEWAY]] or "
                            f"PREFIX,KIND (KIND: {', '.join(ROUTE_KINDS[1:])}).")
        try:
            fib.add(parts[0], int(parts[1]), dmac=parts[2] or None,
                    smac=parts[3] if len(parts) > 3 and parts[3] else b"\0" * 6,
                    gateway=parts[4] if len(parts) > 4 and parts[4] else None)
        except ValueError as exc:
            raise UserError(f"--route {item!r}: {exc}.") from None
    return fib


@xdp_app.command("verify")
def xdp_verify(
    prog: Annotated[Path, typer.Argument(help=PROG_HELP)],
    section: Annotated[str | None, typer.Option(help=SECTION_HELP)] = None,
    name: Annotated[str | None, typer.Option("--prog", help=NAME_HELP)] = None,
):
    """Verify the XDP programs of an object as the kernel would before loading them."""
    try:
        obj, progs = load_program(prog, section, name, single=False)
    except UserError as exc:
        _fail(str(exc))
    verify = _verifier()
    if verify is None:
        _fail("the verifier is not available in this build of nicsim "
              "(nicsim.host.ebpf.verifier is missing).")
    rejected = 0
    for p in progs:
        result = verify(p, obj.maps, gpl=_gpl(obj))
        if result.ok:
            console.print(f"{p.name} ({p.section}): accepted, {len(p.insns)} slots, "
                          f"{result.insns_processed} instructions processed", highlight=False,
                          soft_wrap=True)
        else:
            rejected += 1
            console.print(f"{p.name} ({p.section}): rejected: {result.reason}",
                          highlight=False, soft_wrap=True)
    if rejected:
        raise typer.Exit(1)


@xdp_app.command("run")
def xdp_run(
    prog: Annotated[Path, typer.Argument(help=PROG_HELP)],
    in_path: Annotated[Path, typer.Option("--in", help="Input capture (pcap or pcapng).")],
    out_path: Annotated[Path, typer.Option("--out", help="Frames the program passes or "
                                                         "sends back (XDP_PASS, XDP_TX).")],
    meta_path: Annotated[Path, typer.Option("--meta", help="One JSON line per input frame: "
                                                           "verdict, lengths, instructions, "
                                                           "helpers, redirect target.")],
    section: Annotated[str | None, typer.Option(help=SECTION_HELP)] = None,
    name: Annotated[str | None, typer.Option("--prog", help=NAME_HELP)] = None,
    map_init: Annotated[list[str] | None, typer.Option(
        "--map", help="Map entry before the run: NAME:KEYHEX=VALUEHEX (repeatable).")] = None,
    route: Annotated[list[str] | None, typer.Option(
        "--route", help="Route for bpf_fib_lookup: PREFIX,IFINDEX,DMAC[,SMAC[,GATEWAY]], or "
                        "PREFIX,KIND for a blackhole, unreachable, prohibit or local route "
                        "(repeatable).")] = None,
    ifindex: Annotated[int, typer.Option(help="ingress_ifindex the program sees.")] = 1,
    rx_queue: Annotated[int, typer.Option(help="rx_queue_index the program sees.")] = 0,
    no_verify: Annotated[bool, typer.Option("--no-verify", help="Run without verifying "
                                                                "first.")] = False,
):
    """Run every frame of a capture through an XDP program."""
    from nicsim.host.ebpf.interp import ExecError, TranslateError, Vm
    from nicsim.host.ebpf.maps import MapError, create_map
    from nicsim.hw.pcap import Packet, PcapError, read_pcap, write_pcap

    try:
        obj, (program,) = load_program(prog, section, name)
        inits = parse_map_init(map_init or [], obj)
        fib = parse_route(route or [])
    except UserError as exc:
        _fail(str(exc))
    if not no_verify:
        verify = _verifier()
        if verify is None:
            _fail("the verifier is not available in this build of nicsim; use --no-verify "
                  "to run the program unverified.")
        result = verify(program, obj.maps, gpl=_gpl(obj))
        if not result.ok:
            _fail(f"{program.name}: rejected by the verifier: {result.reason}")
    try:
        packets = read_pcap(in_path)
    except PcapError as exc:
        _fail(str(exc))
    try:
        maps = [create_map(spec) for spec in obj.maps]
        vm = Vm(program, maps, fib=fib)
    except (MapError, TranslateError) as exc:
        _fail(f"{program.name}: {exc}")
    for index, key, value in inits:
        err = maps[index].update(key, value)
        if err:
            _fail(f"--map: writing map {maps[index].name!r} failed with errno {-err}.")
    out, verdicts, total_insns = [], Counter(), 0
    t0 = packets[0].time_ns if packets else 0
    try:
        meta_fh = meta_path.open("w")
    except OSError as exc:
        _fail(f"{meta_path}: cannot write ({exc.strerror}).")
    with meta_fh:
        for i, pkt in enumerate(packets):
            row = {"index": i, "len_in": len(pkt.data)}
            if len(pkt.data) < ETH_HLEN:  # BPF_PROG_TEST_RUN refuses it; no NIC delivers it
                row.update(verdict="NOT RUN",
                           error=f"frame of {len(pkt.data)} bytes is shorter than an "
                                 f"Ethernet header ({ETH_HLEN})")
                verdicts["NOT RUN (runt)"] += 1
                meta_fh.write(json.dumps(row) + "\n")
                continue
            try:
                res = vm.run(pkt.data, ifindex=ifindex, rx_queue=rx_queue,
                             now_ns=pkt.time_ns - t0)
            except ExecError as exc:
                row.update(verdict="ABORTED", error=str(exc))
                verdicts["ABORTED (error)"] += 1
            else:
                row.update(verdict=res.action, code=res.verdict, len_out=len(res.packet),
                           insns=res.insns, helpers=res.helpers)
                if res.meta:
                    row["meta"] = res.meta.hex()
                if res.redirect:
                    row["redirect"] = res.redirect
                verdicts[res.action] += 1
                total_insns += res.insns
                if res.action in ("PASS", "TX"):
                    out.append(Packet(res.packet, pkt.time_ns,
                                      f"{res.action} frame {i}"))
            meta_fh.write(json.dumps(row) + "\n")
    try:
        write_pcap(out_path, out)
    except OSError as exc:
        _fail(f"{out_path}: cannot write ({exc.strerror}).")
    table = Table(title=f"{program.name}: {len(packets)} frames")
    table.add_column("verdict")
    table.add_column("frames", justify="right")
    for verdict, count in sorted(verdicts.items()):
        table.add_row(verdict, str(count))
    console.print(table)
    if packets:
        console.print(f"{total_insns} instructions, {total_insns / len(packets):.1f} per frame",
                      highlight=False)
