# Ref: Linux net/core/filter.c (xdp_do_redirect(), xdp_do_flush(), bpf_redirect_map()),
#      net/core/dev.c (do_xdp_generic(), netif_receive_generic_xdp(), generic_xdp_tx()),
#      kernel/bpf/devmap.c (bq_enqueue(), bq_xmit_all(), dev_map_generic_redirect()),
#      kernel/bpf/cpumap.c (cpu_map_enqueue(), cpu_map_kthread_run(), __xdp_build_skb_from_frame
#      in net/core/xdp.c), include/uapi/linux/bpf.h (enum xdp_action),
#      Documentation/bpf/map_devmap.rst, map_cpumap.rst, map_xskmap.rst,
#      Documentation/networking/xdp-rx-metadata.rst (driver-level hook, before the skb)
"""XDP in the host's packet path: a real eBPF object run per frame in the driver.

Native XDP (``host.path = "xdp"``) runs the program in the driver's NAPI poll, on the frame in
its receive buffer, before any sk_buff exists. The program is loaded like the kernel loads it
(:mod:`nicsim.host.ebpf.elf`), verified at load (:func:`nicsim.host.ebpf.verifier.verify`; a
rejected program is an error naming the file and the verifier's reason) and run by the
interpreter (:class:`nicsim.host.ebpf.interp.Vm`), frame by frame, within the NAPI batches the
Linux path (:mod:`nicsim.host.linux`) already simulates as one step each. The CPU pays for what
the program did, from the instructions and helpers the interpreter counted
(:mod:`nicsim.host.ebpf.cost`, measured in the kernel), plus the driver's per-frame work in the
named operations of :data:`nicsim.host.cpu.COSTS`; never the interpreter's wall time.

Per frame, native: the completion read (``l3_hit``), the program, and, by verdict:

``XDP_DROP``
    The buffer is recycled into the ring (``rx_refill``); counted as ``xdp_drop``.
``XDP_ABORTED`` (or any other return value, or a run the interpreter had to stop)
    Dropped as a drop is, counted as ``xdp_aborted`` and as an exception
    (``trace_xdp_exception``: :attr:`XdpPath.exceptions`).
``XDP_PASS``
    The Linux path goes on with the frame the program left (a rewritten frame is written back
    into the buffer): ``build_skb``, GRO, the stack, the socket, the application threads.
``XDP_TX``
    The buffer goes to the transmit ring of the same NIC (no copy: the page is sent as it is):
    ``driver_tx`` per frame, one doorbell per batch; the buffer slot is refilled
    (``rx_refill``). A full ring drops the frame (``xdp_tx_full``).
``XDP_REDIRECT``
    ``xdp_do_redirect()`` (``xdp_redirect`` per frame) into a per-CPU bulk queue flushed at
    the end of the batch, by target: an interface (``bpf_redirect`` or a devmap) is sent out
    of that function's transmit ring (``ndo_xdp_xmit``: ``driver_tx``, a doorbell per flush);
    a CPU of a cpumap gets the frame in its queue (bounded by the entry's queue size:
    ``xdp_cpumap_full``), is kicked with an IPI at the end of the poll, and *there* builds the
    skb (``skb_alloc``, the frame's lines missed from another core: ``cache_miss``) and runs
    the stack, without GRO; an xskmap entry hands the frame to an AF_XDP socket
    (:mod:`nicsim.host.afxdp`) if that socket is bound to the queue the frame came in on. A
    target that does not exist fails the redirect (``xdp_redirect_failed``; ``xsk_no_socket``
    for an xskmap), and so does a socket bound to another queue (``xsk_queue_mismatch``) or
    one that cannot take the frame (``xsk_fill_ring_empty``, ``xsk_rx_ring_full``): the frame
    is dropped, counted by its reason and as an exception (``redirect_failed``).

A check of scale, not a fit: with a two-instruction ``XDP_DROP`` program one core here drops
about 19.5 Mpps (the 100 Gb/s wire offering 40 Mpps of 64-byte frames), against about 24 Mpps
per core that Høiland-Jørgensen et al. measured on a ConnectX-5 ("The eXpress Data Path",
CoNEXT 2018); generic XDP drops about 5.3 Mpps on the same core.

Interfaces are the PCI functions of the host's NIC: the physical function has ifindex
:data:`IFINDEX_BASE` (2; 1 is the loopback device), virtual function ``n`` ``2 + n``.

Generic XDP (``host.path = "xdp_generic"``) is the fallback for drivers without XDP support:
the program runs on the skb the driver already built (completion, ``skb_alloc``, header line,
``rx_refill``) with the extra work of ``netif_receive_generic_xdp()`` (``xdp_generic``); a
dropped frame frees its skb (``skb_free``), ``XDP_TX`` and redirects to an interface go out
one skb at a time through ``generic_xdp_tx()`` (the transmit lock, ``driver_tx`` and a doorbell
per frame), a cpumap gets the skb itself (no skb to build on the remote CPU).

Simulation: the frames of a NAPI batch (up to 8, ``gro_normal_batch``) are one step; sends and
redirects of a batch happen when the core's clock reaches the batch's end. The cpumap's
kthread is modelled as the remote core's backlog work (``softirq`` time), as RPS's.
"""

from __future__ import annotations

import dataclasses
import struct
from collections import deque
from pathlib import Path

from nicsim.host.apps import AppGroup
from nicsim.host.ebpf.interp import ExecError
from nicsim.host.linux import GRO_NORMAL_BATCH, LINUX_APPS, TX_REAP_THRESH, LinuxPath, SocketApp
from nicsim.hw.ref.checksum import Status, rx_checksum
from nicsim.hw.ref.packet import IPPROTO_TCP, IPPROTO_UDP, parse_ip

__all__ = ["XdpPath", "XdpGenericPath", "XdpProgram", "load_program", "parse_routes",
           "IFINDEX_BASE", "VERDICTS", "compare_defaults", "resolve_program", "GPL_LICENSES"]

IFINDEX_BASE = 2  # ifindex of the physical function (1 is lo); VF n has IFINDEX_BASE + n
VERDICTS = ("ABORTED", "DROP", "PASS", "TX", "REDIRECT")
_ABORTED, _DROP, _PASS, _TX, _REDIRECT = range(5)
# Licenses the kernel takes as GPL compatible (license_is_gpl_compatible()).
GPL_LICENSES = ("GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL", "Dual MIT/GPL",
                "Dual MPL/GPL")
_U32 = struct.Struct("<I")
# skb tuple fields of nicsim.host.linux (born, length, segments, payload, data, checksum
# state, hash, truesize, protocol) and its checksum states.
_CSUM_DONE, _CSUM_SOFT, _CSUM_BAD = 0, 1, 2


# -- the program ------------------------------------------------------------------------------

@dataclasses.dataclass
class XdpProgram:
    """A loaded, verified XDP program with its maps, ready to run.

    Members
    -------
    path : pathlib.Path
        The object or source it came from.
    program : nicsim.host.ebpf.elf.Program
    maps : list of nicsim.host.ebpf.maps.BpfMap
        In the object's order; shared by every core (per-CPU maps keep one value per core).
    vm : nicsim.host.ebpf.interp.Vm
    insns_processed : int
        What the verifier walked.
    """

    path: Path
    program: object
    maps: list
    vm: object
    insns_processed: int = 0

    def map(self, name):
        """Return the map called ``name``."""
        for m in self.maps:
            if m.name == name:
                return m
        raise KeyError(name)


def resolve_program(spec, base=None):
    """Return the path of the program ``spec``: a shipped example by name (``"drop_udp"``,
    :mod:`nicsim.host.ebpf.progs`), else a file, relative paths taken against ``base``."""
    from nicsim.host.ebpf.build import prog_path

    text = str(spec)
    if "/" not in text and not text.endswith((".c", ".o")):
        return prog_path(text)
    path = Path(text).expanduser()
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return path


def _parse_preset(item, specs):
    """``"NAME:KEYHEX=VALUEHEX"`` -> (map index, key bytes, value bytes)."""
    name, sep, rest = str(item).partition(":")
    key_hex, sep2, value_hex = rest.partition("=")
    if not sep or not sep2:
        raise ValueError(f"host.xdp_maps entry {item!r}: write \"NAME:KEYHEX=VALUEHEX\"")
    index = next((n for n, s in enumerate(specs) if s.name == name), None)
    if index is None:
        have = ", ".join(s.name for s in specs) or "none"
        raise ValueError(f"host.xdp_maps entry {item!r}: the program has no map {name!r} "
                         f"(maps: {have})")
    try:
        key = bytes.fromhex(key_hex.replace(":", ""))
        value = bytes.fromhex(value_hex.replace(":", ""))
    except ValueError:
        raise ValueError(f"host.xdp_maps entry {item!r}: key and value must be hex "
                         f"bytes") from None
    spec = specs[index]
    if len(key) != spec.key_size or len(value) != spec.value_size:
        raise ValueError(f"host.xdp_maps entry {item!r}: map {name!r} has {spec.key_size}-byte "
                         f"keys and {spec.value_size}-byte values, not {len(key)} and "
                         f"{len(value)}")
    return index, key, value


def parse_routes(items):
    """``["PREFIX,IFINDEX,DMAC[,SMAC[,GATEWAY]]" or "PREFIX,KIND", ...]`` -> the host's routing
    table for ``bpf_fib_lookup`` (:class:`nicsim.host.ebpf.helpers.FibTable`), or None when
    empty. ``KIND`` is ``blackhole``, ``unreachable``, ``prohibit`` or ``local``."""
    from nicsim.host.ebpf.helpers import ROUTE_KINDS, FibTable

    if not items:
        return None
    fib = FibTable()
    for item in items:
        parts = [p.strip() for p in str(item).split(",")]
        if len(parts) == 2 and parts[1] in ROUTE_KINDS[1:]:  # PREFIX,blackhole and the like
            try:
                fib.add(parts[0], 0, kind=parts[1])
            except ValueError as exc:
                raise ValueError(f"host.xdp_routes entry {item!r}: {exc}") from None
            continue
        if len(parts) < 3:
            raise ValueError(f"host.xdp_routes entry {item!r}: write "
                             f"\"PREFIX,IFINDEX,DMAC[,SMAC[,GATEWAY]]\" or \"PREFIX,KIND\" "
                             f"(KIND: {', '.join(ROUTE_KINDS[1:])})")
        try:
            fib.add(parts[0], int(parts[1]), dmac=parts[2] or None,
                    smac=parts[3] if len(parts) > 3 and parts[3] else b"\0" * 6,
                    gateway=parts[4] if len(parts) > 4 and parts[4] else None)
        except ValueError as exc:
            raise ValueError(f"host.xdp_routes entry {item!r}: {exc}") from None
    return fib


def load_program(spec, section=None, name=None, presets=(), ncpus=1, base=None, routes=()):
    """Load, verify and prepare the XDP program ``spec`` (see :func:`resolve_program`).

    Parameters
    ----------
    spec : str or Path
        Shipped example name, ``.c`` (compiled with clang first) or ``.o`` file.
    section, name : str or None
        Which program of the object: its ELF section, its function name.
    presets : sequence of str
        Map entries to write before the program runs, ``"NAME:KEYHEX=VALUEHEX"``; an entry of
        a global data map (``.rodata``: key 0) sets its initial value before verification, as
        a loader sets ``const volatile`` variables.
    ncpus : int
        Cores (per-CPU map values).
    routes : sequence of str
        The host's routes for ``bpf_fib_lookup`` (:func:`parse_routes`).

    Raises
    ------
    ValueError
        One sentence: a missing file, a compile or load error, no (or more than one) matching
        program, a bad preset, or the verifier's rejection with its reason.
    """
    from nicsim.host.ebpf.build import BuildError, compile_c
    from nicsim.host.ebpf.elf import LoadError, load_object
    from nicsim.host.ebpf.interp import TranslateError, Vm
    from nicsim.host.ebpf.maps import MapError, create_map
    from nicsim.host.ebpf.verifier import verify

    path = resolve_program(spec, base)
    if not path.exists():
        raise ValueError(f"host.xdp_prog {str(spec)!r}: {path}: no such file")
    try:
        obj = load_object(compile_c(path) if path.suffix == ".c" else path)
    except (BuildError, LoadError) as exc:
        raise ValueError(f"host.xdp_prog {str(spec)!r}: {exc}") from None
    progs = [p for p in obj.programs.values()
             if (section is None or p.section == section) and (name is None or p.name == name)]
    have = ", ".join(f"{p.name} ({p.section})" for p in obj.programs.values()) or "none"
    if not progs:
        raise ValueError(f"{path}: no XDP program matches host.xdp_section/host.xdp_name "
                         f"(programs: {have})")
    if len(progs) > 1:
        raise ValueError(f"{path}: several XDP programs ({have}); choose one with "
                         f"host.xdp_name")
    program = progs[0]
    specs = list(obj.maps)
    entries = [_parse_preset(item, specs) for item in presets]
    for index, _key, value in entries:
        if specs[index].origin == "data":  # global data: its one value, before verification
            specs[index] = dataclasses.replace(specs[index], initial=value)
    result = verify(program, specs, gpl=obj.license in GPL_LICENSES)
    if not result.ok:
        raise ValueError(f"{path}: program {program.name} rejected by the verifier: "
                         f"{result.reason}")
    try:
        maps = [create_map(s, ncpus) for s in specs]
        vm = Vm(program, maps, ncpus=ncpus, fib=parse_routes(routes))
    except (MapError, TranslateError) as exc:
        raise ValueError(f"{path}: program {program.name}: {exc}") from None
    for index, key, value in entries:
        if specs[index].origin != "data":
            err = maps[index].update(key, value)
            if err:
                raise ValueError(f"host.xdp_maps: writing map {specs[index].name!r} failed "
                                 f"with errno {-err}")
    return XdpProgram(path, program, maps, vm, result.insns_processed)


def compare_defaults(path, app, overrides=(), port=None):
    """Return the ``--set`` overrides ``nicsim compare`` adds for an XDP path: the program an
    XDP deployment of ``app`` would load (unless ``overrides`` name one). ``drop``: drop the
    traffic's UDP ``port`` in the driver (``drop_udp`` with its port set); ``l2fwd``: send
    every frame back with its addresses swapped (``reflect``, XDP_TX); otherwise ``drop_udp``
    at its default port (9), which passes the traffic to the stack (XDP_PASS)."""
    if path not in ("xdp", "xdp_generic") or any(o.startswith("host.xdp_") for o in overrides):
        return []
    if app == "drop" and port is not None:
        port = struct.pack("<H", port).hex()
        return ['host.xdp_prog="drop_udp"', f'host.xdp_maps=[".rodata:00000000={port}"]']
    if app == "l2fwd":
        return ['host.xdp_prog="reflect"']
    return ['host.xdp_prog="drop_udp"']


# -- results ----------------------------------------------------------------------------------

class _Sent(SocketApp):
    """Frames XDP sent out (XDP_TX, redirects to an interface), counted as delivered when they
    are placed in a transmit ring: an application-like counter for the results."""

    def __init__(self):
        super().__init__("xdp_tx")

    def done(self, nbytes, born, t_ps):
        super().done(len(born), nbytes, t_ps)
        lat = self.latency_ps
        for b in born:
            if b is not None:
                lat.append(t_ps - b)


class _Batch(list):
    """The skbs of a batch for the stack, with the batch's sends (None when there are none;
    a dict of nothing still asks for the end-of-batch flush): true while either is left,
    so that :meth:`LinuxPath._poll_queue` hands it to ``_up`` where the sends go out."""

    __slots__ = ("sends",)

    def __bool__(self):
        return self.sends is not None or len(self) > 0


class _Stack(LinuxPath):
    """The Linux path with the XDP hook in its driver and the cpumap queues on its cores."""

    def __init__(self, xdp, ctx, driver, queues, cores):
        self.xdp = xdp
        super().__init__(ctx, driver, queues, cores)
        self.cpumap = {cpu.num: deque() for cpu in self.cpus}

    def _driver_rx(self, napi, cpu, got):
        return self.xdp._rx(self, napi, cpu, got)

    def _up(self, cpu, skbs):
        if skbs.__class__ is _Batch:
            if skbs.sends is not None:
                env = self.env
                if cpu.t > env.now:
                    yield env.timeout(cpu.t - env.now)
                    self._account(cpu)
                cpu.t += self.xdp._flush(self, cpu, skbs.sends)
                skbs.sends = None
            if not len(skbs):
                return
            skbs = list(skbs)
        yield from super()._up(cpu, skbs)

    def _poll_backlog(self, cpu, weight):
        work = yield from self.xdp._cpumap_poll(self, cpu, weight)
        if work < weight:
            work += yield from super()._poll_backlog(cpu, weight - work)
        return work


# -- the path ---------------------------------------------------------------------------------

class XdpPath:
    """XDP on the Linux path of one PCI function: native (in the driver) or generic.

    Parameters
    ----------
    ctx : nicsim.host.paths.PathContext
        ``ctx.params``: ``xdp_prog``, ``xdp_section``, ``xdp_name``, ``xdp_maps`` (presets),
        ``xdp_routes`` (for ``bpf_fib_lookup``) and the Linux path's keys.
    driver : nicsim.host.driver.NicDriver
    queues : list of int
    cores : list of nicsim.host.cpu.Core

    Members
    -------
    app : nicsim.host.apps.AppGroup
        What reached the end of the host: the socket application's frames (XDP_PASS), the
        frames XDP sent out, and (AF_XDP) the sockets' applications.
    drops : dict
        Frames dropped by reason (the Linux path's and XDP's).
    verdicts : dict
        Frames per program verdict (``DROP``, ``PASS``, ``TX``, ``REDIRECT``, ``ABORTED``).
    exceptions : dict
        What ``trace_xdp_exception`` would have reported, by reason (``aborted``,
        ``redirect_failed``, ``tx_full``).
    redirects : dict
        Frames redirected, by target kind (``ifindex``, ``devmap``, ``cpumap``, ``xskmap``).
    cpumap_frames : dict
        Frames each core took from its cpumap queue (built into skbs there), by core number.
    insns : int
        eBPF instructions executed.
    prog : XdpProgram
    stack : LinuxPath
        The Linux path the XDP hook sits in.
    ifindex : int

    ``host.app``: a socket application of the Linux path gets what the program passes; any
    other (``l2fwd``, ``l3fwd``) is left to the program, and what it passes reaches a socket
    that drops it.

    Raises
    ------
    ValueError
        No program, or a program that does not load or verify.
    """

    generic = False
    path_name = "xdp"

    def __init__(self, ctx, driver, queues, cores):
        params = ctx.params
        self.ctx = ctx
        self.env = ctx.env
        self.costs = c = ctx.costs
        self.driver = driver
        self.cores = cores
        self.ifindex = IFINDEX_BASE + driver.fn
        spec = getattr(params, "xdp_prog", None) or self.default_prog
        if spec is None:
            raise ValueError(f"host.path \"{self.path_name}\" needs an XDP program: set "
                             f"host.xdp_prog (a .o or .c file, or a shipped example such as "
                             f"\"drop_udp\")")
        name = getattr(params, "xdp_name", None)
        if name is None and not getattr(params, "xdp_prog", None):
            name = self.default_name
        self.prog = load_program(spec, getattr(params, "xdp_section", None), name,
                                 getattr(params, "xdp_maps", None) or (),
                                 ncpus=max(len(cores), 1),
                                 routes=getattr(params, "xdp_routes", None) or ())
        self.vm = self.prog.vm
        self.cost_ns = _program_cost()
        self.verdicts = dict.fromkeys(VERDICTS, 0)
        self.exceptions = {}
        self.redirects = {}
        self.cpumap_frames = {}
        self.insns = 0
        self.sent = _Sent()
        # The Linux path under the hook. An application it does not run (l2fwd, l3fwd) is left
        # to the program (XDP_TX, redirects) or to AF_XDP; what the program passes then reaches
        # a socket that drops it.
        stack_ctx = ctx
        if params.app not in LINUX_APPS:
            stack_ctx = dataclasses.replace(ctx, params=_with(params, app="drop"))
        self.stack = _Stack(self, stack_ctx, driver, queues, cores)
        self.drops = self.stack.drops
        # Interfaces of this host for redirects: every function's path registers here.
        netdevs = ctx.__dict__.setdefault("xdp_netdevs", {})
        netdevs[self.ifindex] = self
        self.netdevs = netdevs
        self._setup()
        self.app = AppGroup([self.stack.app, self.sent, *self.extra_apps()])
        # Per-frame driver work around the program (see the module documentation).
        self.native_ps = c.l3_hit + c.rx_refill  # completion read, the slot's new buffer
        self.skb_ps = c.l3_hit + c.skb_alloc + c.l3_hit + c.rx_refill  # what generic adds
        self.generic_tx_ps = c.spin_lock + c.driver_tx + c.mmio_write  # generic_xdp_tx()

    default_prog = None
    default_name = None

    def _setup(self):
        """Hook for subclasses: more state once the stack exists."""

    def extra_apps(self):
        """Hook for subclasses: more applications whose frames count as delivered."""
        return []

    # -- receive ---------------------------------------------------------------------------

    def _rx(self, stack, napi, cpu, got):
        """Run the program on the completions ``got``; return the skbs for the stack and the
        batch's sends (a :class:`_Batch`)."""
        c = self.costs
        bus = stack.bus
        devs = stack.dev_addr
        tags = bus.tags
        mem_read = bus.mem_read
        run = self.vm.run
        cost_ns = self.cost_ns
        generic = self.generic
        drops = self.drops
        verdicts = self.verdicts
        q = napi.q
        rxq = napi.num
        cpu_num = cpu.num
        ifindex = self.ifindex
        t = cpu.t
        passed = []
        sends = {}  # (kind, target) -> [(packet, born)]
        other = 0  # frames not passed to the stack
        for entry, buf in got:
            length = entry[2]
            data = mem_read(buf, length)
            try:
                res = run(data, ifindex=ifindex, rx_queue=rxq, now_ns=t // 1000, cpu=cpu_num)
            except ExecError:  # the program faulted: the kernel could not have, verified
                res = None
            if res is None:
                verdict = _ABORTED
                prog_ps = round(cost_ns.entry_ns * 1000)
            else:
                verdict = res.verdict if res.verdict <= _REDIRECT else _ABORTED
                self.insns += res.insns
                prog_ps = round(cost_ns.run_ns(res) * 1000)
            verdicts[VERDICTS[verdict]] += 1
            if generic:
                t += c.xdp_generic + prog_ps
                if verdict != _PASS:
                    t += self.skb_ps  # the skb was built before the program ran
            else:
                t += prog_ps
                if verdict != _PASS:
                    t += self.native_ps
            if verdict == _PASS:
                packet = res.packet
                if packet != data:
                    if len(packet) > q.buffer_bytes:
                        drops["xdp_pass_oversize"] = drops.get("xdp_pass_oversize", 0) + 1
                        tags.pop(devs[buf], None)
                        other += 1
                        continue
                    bus.mem_write(buf, packet)
                    entry = entry[:2] + (len(packet),) + entry[3:]
                passed.append((entry, buf))
                continue
            other += 1
            born = tags.pop(devs[buf], None)
            if verdict == _DROP or verdict == _ABORTED:
                if generic:
                    t += c.skb_free
                reason = "xdp_drop" if verdict == _DROP else "xdp_aborted"
                drops[reason] = drops.get(reason, 0) + 1
                if verdict == _ABORTED:
                    self._exception("aborted")
                continue
            if verdict == _TX:
                t += self.generic_tx_ps if generic else c.driver_tx
                sends.setdefault(("dev", ifindex), []).append((res.packet, born))
                continue
            t = self._redirect(stack, cpu, res, born, sends, t, rxq)
        cpu.t = t
        stack.app.completions += other
        batch = _Batch(LinuxPath._driver_rx(stack, napi, cpu, passed) if passed else ())
        batch.sends = sends or None
        return batch

    def _reap(self, txq):
        """Consume the transmit completions of ``txq``; return how many frames finished."""
        return txq.reap()

    def _exception(self, reason, count=1):
        self.exceptions[reason] = self.exceptions.get(reason, 0) + count

    def _fail_redirect(self, reason="xdp_redirect_failed"):
        self.drops[reason] = self.drops.get(reason, 0) + 1
        self._exception("redirect_failed")

    def _redirect(self, stack, cpu, res, born, sends, t, rxq):
        """XDP_REDIRECT of one frame that came in on receive queue ``rxq``: queue it for its
        target; return the core's clock."""
        c = self.costs
        target = res.redirect or {}
        kind = target.get("kind")
        self.redirects[kind] = self.redirects.get(kind, 0) + 1
        t += c.xdp_redirect
        if kind in ("ifindex", "devmap", "devmap_hash"):
            if target.get("target") == "broadcast":
                devs = [i for i in self.netdevs
                        if not (target.get("exclude_ingress") and i == self.ifindex)]
            else:
                devs = [target.get("ifindex", target.get("target"))]
            for ifindex in devs:
                if ifindex not in self.netdevs:
                    self._fail_redirect()
                    continue
                t += self.generic_tx_ps if self.generic else c.driver_tx
                sends.setdefault(("dev", ifindex), []).append((res.packet, born))
            return t
        if kind == "cpumap":
            return self._to_cpu(stack, cpu, res, born, target, t)
        if kind == "xskmap":
            return self._to_xsk(stack, cpu, res, born, target, t, rxq)
        self._fail_redirect()
        return t

    def _to_cpu(self, stack, cpu, res, born, target, t):
        """cpumap: queue the frame for the CPU ``target`` names (cpu_map_enqueue())."""
        num = target.get("target")
        dest = next((x for x in stack.cpus if x.num == num), None)
        if dest is None:
            self._fail_redirect()
            return t
        value = self.prog.map(target["map"]).lookup(_U32.pack(target["key"]))
        qsize = _U32.unpack_from(value)[0] if value else 0
        queue = stack.cpumap[dest.num]
        if len(queue) >= qsize:
            self.drops["xdp_cpumap_full"] = self.drops.get("xdp_cpumap_full", 0) + 1
            return t
        queue.append((res.packet, born, cpu.num))
        napi = dest.backlog_napi
        if not napi.scheduled:
            napi.scheduled = True
            dest.poll_list.append(napi)
            if dest is not cpu and dest not in cpu.kicks:
                cpu.kicks.append(dest)
        return t

    def _to_xsk(self, stack, cpu, res, born, target, t, rxq):
        """xskmap: no AF_XDP socket is bound on this path."""
        self._fail_redirect("xsk_no_socket")
        return t

    def _flush(self, stack, cpu, sends):
        """Send the batch's frames for each interface (xdp_do_flush()); return the CPU time."""
        c = self.costs
        cost = 0
        t = self.env.now
        for (_, ifindex), items in sends.items():
            dev = self.netdevs[ifindex]
            txqs = dev.driver.tx
            txq = txqs[cpu.num % len(txqs)]
            if txq.inflight >= TX_REAP_THRESH or txq.room() < len(items):
                cost += self._reap(txq) * (c.l3_hit + (c.skb_free if self.generic
                                                       else c.rx_refill))
            fit = txq.buffer_bytes
            if any(len(p) > fit for p, _ in items):  # grown past a transmit buffer
                big = sum(len(p) > fit for p, _ in items)
                self.drops["xdp_tx_oversize"] = self.drops.get("xdp_tx_oversize", 0) + big
                items = [(p, b) for p, b in items if len(p) <= fit]
            frames = [p for p, _ in items]
            born = [b for _, b in items]
            sent = 0
            if self.generic:  # one skb, one transmit call and doorbell each (already charged)
                for n in range(len(frames)):
                    sent += txq.send(frames[n:n + 1], born=born[n:n + 1])
            else:
                sent = txq.send(frames, born=born)
                cost += c.mmio_write
            if sent < len(frames):
                lost = len(frames) - sent
                self.drops["xdp_tx_full"] = self.drops.get("xdp_tx_full", 0) + lost
                self._exception("tx_full", lost)
            if sent:
                self.sent.done(sum(map(len, frames[:sent])), born[:sent], t + cost)
        return cost

    # -- cpumap -----------------------------------------------------------------------------

    def _cpumap_poll(self, stack, cpu, weight):
        """The cpumap kthread of ``cpu``: build skbs of the queued frames (native) and run the
        stack on them, up to ``weight``; return the frames taken."""
        queue = stack.cpumap[cpu.num]
        c = self.costs
        work = 0
        build = c.cache_miss if self.generic else c.skb_alloc + c.cache_miss
        while queue and work < weight:
            skbs = []
            t = cpu.t
            while queue and len(skbs) < GRO_NORMAL_BATCH and work < weight:
                packet, born, _source = queue.popleft()
                skb, csum_bytes = _skb(packet, born)
                t += build + round(c.csum * csum_bytes)
                skbs.append(skb)
                work += 1
            cpu.t = t
            yield from stack._deliver(cpu, skbs)
        if work:
            self.cpumap_frames[cpu.num] = self.cpumap_frames.get(cpu.num, 0) + work
        return work


def _skb(packet, born):
    """Return the Linux path's skb tuple of a frame built from an xdp_frame, and the bytes TCP
    sums before it takes the segment. The skb has no checksum status (``CHECKSUM_NONE``: UDP
    verifies while copying to the user, TCP on receive), no GRO, a software hash."""
    from nicsim.host.driver import RX_BUFFER_BYTES
    from nicsim.host.linux import SKB_OVERHEAD_BYTES, _soft_hash

    length = len(packet)
    ip = parse_ip(packet)
    truesize = RX_BUFFER_BYTES + SKB_OVERHEAD_BYTES
    if ip is None:
        return (born, length, 1, 0, packet, _CSUM_DONE, 0, truesize, 0), 0
    version, l3, hlen, proto = ip
    l4 = l3 + hlen
    flow = _soft_hash(packet, version, l3, l4)
    if proto not in (IPPROTO_UDP, IPPROTO_TCP):
        return (born, length, 1, 0, packet, _CSUM_DONE, flow, truesize, proto), 0
    verdicts = rx_checksum(packet)
    if verdicts.ip == Status.BAD or verdicts.l4 == Status.BAD:
        state = _CSUM_BAD
    else:
        state = _CSUM_SOFT if proto == IPPROTO_UDP else _CSUM_DONE
    if proto == IPPROTO_UDP:
        return (born, length, 1, max(0, length - l4 - 8), packet, state, flow, truesize,
                proto), 0
    payload = max(0, length - l4 - (packet[l4 + 12] >> 4) * 4) if length > l4 + 12 else 0
    return (born, length, 1, payload, packet, state, flow, truesize, proto), length - l4


def _program_cost():
    from nicsim.host.ebpf.cost import DEFAULT_COST

    return DEFAULT_COST


def _with(params, **changes):
    """Return the scenario's host section with ``changes`` (a pydantic model or a plain
    namespace)."""
    if hasattr(params, "model_copy"):
        return params.model_copy(update=changes)
    import copy

    out = copy.copy(params)
    for key, value in changes.items():
        setattr(out, key, value)
    return out


class XdpGenericPath(XdpPath):
    """Generic (skb) XDP: the same program after the driver built the skb (see the module
    documentation)."""

    generic = True
    path_name = "xdp_generic"
