"""Scenarios: what to simulate, as a TOML file checked before anything runs.

A scenario names the topology (hosts behind a switch, or one host wired to the traffic), the
PCIe link, the NIC and its features, the IOMMU, interrupt moderation, the host path and its
application, the wires, the traffic, the duration and the seed, and what to write out. Every
field has a default, so an empty file is a valid scenario (one host, a 10 Gb/s wire of 64-byte
frames at line rate into a poll-mode driver that drops them).

Any parameter can be overridden from the command line with dotted keys
(``--set pcie.lanes=16``, ``--set traffic.0.rate_gbps=5``); values are read as TOML values
(``true``, ``[1, 2]``, ``"text"``) and fall back to strings.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = ["Scenario", "ScenarioError", "load_scenario", "apply_overrides", "FEATURES"]

FEATURES = ("rx_csum", "tx_csum", "rss", "tso", "uso", "lro")
_RESPONDING = ("l2fwd", "l3fwd", "udp_echo", "kv", "tcp_rr")  # applications that send replies
_TCP_APPS = ("tcp_bulk", "tcp_rr")  # nicsim.host.tcp.TCP_APPS
_TCP_PATHS = ("linux", "mtcp")  # paths with a TCP stack (nicsim.host.tcp.TCP_PATHS)


class ScenarioError(ValueError):
    """A scenario that cannot run; the message is one sentence naming the input."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PcieSection(_Section):
    gen: Annotated[int, Field(ge=1, le=5)] = 3
    lanes: Literal[1, 2, 4, 8, 16] = 8
    mps: Literal[128, 256, 512, 1024, 2048, 4096] = 256
    mrrs: Literal[128, 256, 512, 1024, 2048, 4096] = 512
    rcb: Literal[64, 128] = 64
    addr64: bool = True
    ecrc: bool = False
    latency_ns: Annotated[float, Field(ge=0)] = 500.0  # SimBricks default
    posted_header_credits: Annotated[int, Field(ge=1)] | None = None
    posted_data_credits: Annotated[int, Field(ge=1)] | None = None
    nonposted_header_credits: Annotated[int, Field(ge=1)] | None = None
    read_tags: Annotated[int, Field(ge=1)] | None = None


class NicSection(_Section):
    backend: Literal["model"] = "model"
    rxqs: Annotated[int, Field(ge=1, le=64)] = 1
    txqs: Annotated[int, Field(ge=1, le=64)] = 1
    vfs: Annotated[int, Field(ge=0, le=63)] = 0
    vf_queues: Annotated[int, Field(ge=1, le=64)] = 1
    vectors: Annotated[int, Field(ge=1, le=64)] = 8
    ring_size: Annotated[int, Field(ge=2, le=32768)] = 1024
    buffer_bytes: Annotated[int, Field(ge=64, le=1 << 20)] = 2048  # per ring slot
    features: list[str] = ["rx_csum", "tx_csum", "rss"]
    desc_fetch_batch: Annotated[int, Field(ge=1, le=64)] = 8
    rx_fifo_kib: Annotated[int, Field(ge=0)] = 128
    rx_pipeline_ns: Annotated[float, Field(ge=0)] = 100.0
    tx_pipeline_ns: Annotated[float, Field(ge=0)] = 100.0
    promiscuous: bool = False

    @field_validator("ring_size")
    @classmethod
    def _power_of_two(cls, value):
        if value & (value - 1):
            raise ValueError("must be a power of two")  # the message adds "not <value>"
        return value

    @field_validator("features")
    @classmethod
    def _known(cls, value):
        for name in value:
            if name not in FEATURES:
                raise ValueError(f"unknown feature {name!r} (known: {', '.join(FEATURES)})")
        return value


class IommuSection(_Section):
    mode: Literal["off", "translate", "passthrough"] = "off"
    guest_mib: Annotated[int, Field(ge=1)] = 1024


class InterruptSection(_Section):
    # mlx5's defaults (MLX5E_PARAMS_DEFAULT_RX_CQ_MODERATION_PKTS/_USEC): 32 frames or 8 us.
    frames: Annotated[int, Field(ge=0)] = 32
    usecs: Annotated[int, Field(ge=0)] = 8


class HostSection(_Section):
    path: Literal["pmd", "irq", "linux", "netmap", "mtcp", "gpu", "xdp", "xdp_generic",
                  "af_xdp"] = "pmd"
    app: Literal["drop", "l2fwd", "l3fwd", "udp_echo", "kv", "tcp_bulk", "tcp_rr"] = "drop"
    cores: Annotated[int, Field(ge=1, le=64)] = 1
    clock_ghz: Annotated[float, Field(gt=0, le=10)] = 3.0
    burst: Annotated[int, Field(ge=1, le=1024)] = 32
    budget: Annotated[int, Field(ge=1, le=1024)] = 64
    costs: dict[str, float] = {}
    # Linux: queue interrupts pinned one per core ("pinned") or all on core 0 ("single", as
    # without irqbalance); RPS/RFS; where the application threads run; socket buffer.
    irq_affinity: Literal["pinned", "single"] = "pinned"
    rps: bool = False
    rfs: bool = False
    app_cores: list[int] | None = None
    rmem_kib: Annotated[int, Field(ge=1)] = 208  # Linux net.core.rmem_default (212992 B)
    zerocopy: bool = False
    kv_value_bytes: Annotated[int, Field(ge=1, le=1 << 20)] = 64  # kv: value bytes per reply
    # tcp_rr: payload bytes of every reply, one segment (default: the request's payload).
    rr_reply_bytes: Annotated[int, Field(ge=1, le=1460)] | None = None
    # Kernel bypass: run to completion, or a pipeline of an RX core and workers over rings.
    pmd_mode: Literal["run_to_completion", "pipeline"] = "run_to_completion"
    # GPU offload (host.path "gpu", nicsim.host.gpu_path): what the GPU does, batches, its link.
    gpu_kernel: Literal["lpm4", "lpm6", "rss", "checksum", "ac", "aes"] = "lpm4"
    gpu_batch: Annotated[int, Field(ge=1, le=65536)] = 1024
    gpu_timeout_us: Annotated[float, Field(ge=0)] = 50.0
    gpu_profile: str = "discrete"
    gpu_pcie_gen: Annotated[int, Field(ge=1, le=5)] = 3
    gpu_pcie_lanes: Literal[1, 2, 4, 8, 16] = 16
    gpu_p2p: bool = False
    # XDP (host.path "xdp", "xdp_generic", "af_xdp"; nicsim.host.xdp, nicsim.host.afxdp): the
    # program (a shipped example's name, or a .c/.o file relative to the scenario), which one
    # of the object, map entries written before it runs, routes for bpf_fib_lookup; AF_XDP's
    # mode, rings and UMEM.
    xdp_prog: str | None = None
    xdp_section: str | None = None
    xdp_name: str | None = None
    xdp_maps: list[str] = []
    xdp_routes: list[str] = []
    xsk_mode: Literal["zerocopy", "copy"] = "zerocopy"
    xsk_ring_size: Annotated[int, Field(ge=2, le=1 << 16)] = 2048
    xsk_frames: Annotated[int, Field(ge=1, le=1 << 20)] | None = None

    @field_validator("xsk_ring_size")
    @classmethod
    def _ring_power_of_two(cls, value):
        if value & (value - 1):
            raise ValueError("must be a power of two")  # the message adds "not <value>"
        return value


class WireSection(_Section):
    rate_gbps: Annotated[float, Field(gt=0)] = 10.0
    latency_ns: Annotated[float, Field(ge=0)] = 500.0  # SimBricks default
    mtu: Annotated[int, Field(ge=68, le=9600)] = 1500


class TrafficSection(_Section):
    host: Annotated[int, Field(ge=0)] = 0
    function: Annotated[int, Field(ge=0)] = 0  # 0: the physical function; n: VF n
    pattern: Literal["constant", "poisson", "burst", "pcap", "closed_loop"] = "constant"
    concurrency: Annotated[int, Field(ge=1, le=64511)] = 1  # closed_loop: requests in flight
    think_us: Annotated[float, Field(ge=0)] = 0.0  # closed_loop: pause before the next one
    rate_gbps: Annotated[float, Field(gt=0)] | None = None
    rate_mpps: Annotated[float, Field(gt=0)] | None = None
    size: int | Literal["imix"] | None = None
    sizes: list[int] | None = None
    flows: Annotated[int, Field(ge=1)] = 1
    proto: Literal["udp", "tcp"] = "udp"
    stream: bool = False  # TCP: each flow a stream of in-order segments (LRO/GRO merge them)
    ipv6: bool = False
    vlan: Annotated[int, Field(ge=1, le=4094)] | None = None
    count: Annotated[int, Field(ge=1)] | None = None
    start_us: Annotated[float, Field(ge=0)] = 0.0
    burst_frames: Annotated[int, Field(ge=1)] = 32
    burst_gap_us: Annotated[float, Field(ge=0)] = 10.0
    pcap: str | None = None
    pcap_speed: Annotated[float, Field(gt=0)] = 1.0
    pcap_loop: Annotated[int, Field(ge=1)] = 1
    batch_frames: Annotated[int, Field(ge=1, le=4096)] = 32


class TopologySection(_Section):
    hosts: Annotated[int, Field(ge=1, le=16)] = 1
    switch_buffer_kib: Annotated[int, Field(ge=1)] = 512


class OutputSection(_Section):
    pcap: list[Literal["rx_wire", "tx_wire"]] = []
    plots: bool = True
    pcap_max_frames: Annotated[int, Field(ge=1)] = 100_000


class Scenario(_Section):
    """A whole scenario (see the module documentation)."""

    name: str = "scenario"
    seed: int = 1
    duration_us: Annotated[float, Field(gt=0)] = 1000.0
    drain_us: Annotated[float, Field(ge=0)] = 50.0
    topology: TopologySection = TopologySection()
    pcie: PcieSection = PcieSection()
    nic: NicSection = NicSection()
    iommu: IommuSection = IommuSection()
    interrupts: InterruptSection = InterruptSection()
    host: HostSection = HostSection()
    wire: WireSection = WireSection()
    traffic: list[TrafficSection] = [TrafficSection()]
    output: OutputSection = OutputSection()

    @field_validator("traffic", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, dict) else value


def _parse_value(text):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw, overrides):
    """Apply ``KEY=VALUE`` strings (dotted keys, list indices as numbers) to a raw dict."""
    for item in overrides:
        if "=" not in item:
            raise ScenarioError(f"--set takes KEY=VALUE, not {item!r}")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ScenarioError(f"--set key {key!r} has an empty part")
        node = raw
        for n, part in enumerate(parts[:-1]):
            nxt = parts[n + 1]
            if isinstance(node, list):
                if not part.isdigit() or int(part) > len(node):
                    raise ScenarioError(f"--set {key}: {part!r} is not an index of the list "
                                        f"{'.'.join(parts[:n])} ({len(node)} entries; the "
                                        f"next index adds one)")
                if int(part) == len(node):
                    node.append({})
                node = node[int(part)]
                continue
            if part == "traffic" and not isinstance(node.get(part), list):
                node[part] = [node[part]] if isinstance(node.get(part), dict) else [{}]
            child = node.setdefault(part, [] if nxt.isdigit() else {})
            if not isinstance(child, dict | list):
                raise ScenarioError(f"--set {key}: {'.'.join(parts[:n + 1])} is a value, "
                                    f"not a table")
            node = child
        last = parts[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ScenarioError(f"--set {key}: no list entry {last!r}")
            node[int(last)] = _parse_value(text.strip())
        else:
            node[last] = _parse_value(text.strip())
    return raw


def _describe(error, source):
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key (a typo?)"
    elif first["type"] == "literal_error":
        message = message.replace("Input should be", "must be")
    else:
        message = message.replace("Input should be", "must be").replace("Value error, ", "")
    got = first.get("input")
    tail = "" if isinstance(got, dict | list) or first["type"] == "extra_forbidden" \
        else f", not {got!r}"
    return f"{source}: {where}: {message}{tail}"


def _check_tcp(scenario, source):
    """Refuse TCP applications without a TCP stack or without the traffic they serve."""
    host = scenario.host
    if host.app in _TCP_APPS and host.path not in _TCP_PATHS:
        raise ScenarioError(f"{source}: host.app {host.app!r} needs a TCP stack, which host.path "
                            f"{host.path!r} does not have; use host.path \"linux\" or \"mtcp\"")
    if host.path == "mtcp" and host.app not in _TCP_APPS:
        raise ScenarioError(f"{source}: host.path \"mtcp\" is a TCP stack that runs the TCP "
                            f"applications {' and '.join(_TCP_APPS)}, not host.app {host.app!r}")
    for n, t in enumerate(scenario.traffic):
        if host.app == "tcp_bulk" and t.pattern != "pcap" and not (
                t.proto == "tcp" and t.stream and t.pattern != "closed_loop"):
            raise ScenarioError(f"{source}: traffic.{n} must be TCP streams for host.app "
                                f"\"tcp_bulk\" (proto = \"tcp\", stream = true, an open-loop "
                                f"pattern)")
        if host.app == "tcp_rr" and (t.pattern != "closed_loop" or t.proto != "tcp"):
            raise ScenarioError(f"{source}: host.app \"tcp_rr\" answers closed-loop TCP clients, "
                                f"so traffic.{n} needs pattern = \"closed_loop\" and proto = "
                                f"\"tcp\"")
        if (host.app == "tcp_rr" and t.ipv6 and host.rr_reply_bytes is not None
                and host.rr_reply_bytes > 1440):
            raise ScenarioError(f"{source}: host.rr_reply_bytes {host.rr_reply_bytes} does not "
                                f"fit one IPv6 segment (traffic.{n} is IPv6): at most 1440")


def load_scenario(path=None, overrides=(), text=None):
    """Read, override and validate a scenario; raise :class:`ScenarioError` on any problem."""
    source = str(path) if path is not None else "scenario"
    if text is None and path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ScenarioError(f"{source}: cannot read it ({exc.strerror})") from None
    try:
        raw = tomllib.loads(text or "")
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML ({exc})") from None
    apply_overrides(raw, overrides)
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(_describe(exc, source)) from None
    _check_tcp(scenario, source)
    prog = scenario.host.xdp_prog
    if prog and path is not None and ("/" in prog or prog.endswith((".c", ".o"))):
        resolved = Path(path).parent / Path(prog).expanduser()  # an absolute one stays
        scenario = scenario.model_copy(update={"host": scenario.host.model_copy(
            update={"xdp_prog": str(resolved)})})
    for n, t in enumerate(scenario.traffic):
        if t.host >= scenario.topology.hosts:
            raise ScenarioError(f"{source}: traffic.{n}.host is {t.host}, but the topology "
                                f"has {scenario.topology.hosts} host(s)")
        if t.function > scenario.nic.vfs:
            raise ScenarioError(f"{source}: traffic.{n}.function is {t.function}, but the NIC "
                                f"has {scenario.nic.vfs} virtual function(s) (nic.vfs)")
        if t.pattern == "closed_loop" and scenario.host.app not in _RESPONDING:
            raise ScenarioError(f"{source}: traffic.{n} is closed_loop, which waits for "
                                f"replies, but host.app {scenario.host.app!r} sends none "
                                f"(use one of {', '.join(_RESPONDING)})")
        if t.pattern != "pcap" and t.rate_gbps is not None and t.rate_mpps is not None:
            raise ScenarioError(f"{source}: traffic.{n}: give rate_gbps or rate_mpps, not both")
    pipeline = scenario.host.path == "pmd" and scenario.host.pmd_mode == "pipeline"
    if (scenario.host.path in ("pmd", "irq", "mtcp") and not pipeline
            and scenario.host.cores > scenario.nic.rxqs):
        raise ScenarioError(f"{source}: host.cores ({scenario.host.cores}) exceeds nic.rxqs "
                            f"({scenario.nic.rxqs}); a polling core needs a queue")
    return scenario
