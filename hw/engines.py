"""Run captures through an offload engine: on the golden model or on the gateware in Verilator.

Both backends take the same frames and configuration and return the same
:class:`EngineRun` — output frames and one metadata record per input frame — so their results
can be compared byte for byte (``nicsim rtl run --backend rtl|model``).
"""

from __future__ import annotations

import importlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from nicsim.rtl.checksum_tx import REGISTERS as TX_REGISTERS
from nicsim.rtl.regs import offset_of
from nicsim.rtl.rss import REGISTERS as RSS_REGISTERS

from .ref.checksum import (
    DROP_BAD_COMMAND,
    DROP_EMPTY,
    DROP_OVERSIZE,
    MAX_FRAME_LEN,
    Status,
    TxCommand,
    TxMode,
    rx_checksum,
    tx_checksum,
)
from .ref.rss import ALL_TYPES_MASK, DEFAULT_KEY, HashType, RssConfig, default_table, rss_hash

__all__ = [
    "ENGINES",
    "EngineSpec",
    "ConfigError",
    "EngineRun",
    "load_config",
    "run_model",
    "run_rtl",
    "decode_csum_result",
    "decode_rss_result",
]


@dataclass(frozen=True)
class EngineSpec:
    """An engine ``nicsim rtl run`` knows.

    Members
    -------
    module : str
        Module of the engine's adapter. The three first engines live here; every other engine
        has its own module with ``load_config(section, options) -> config``,
        ``run_model(frames, config) -> EngineRun`` and
        ``run_rtl(frames, config, *, width, idle_pct, backpressure_pct, seed, waves) ->
        EngineRun``. ``section`` is the engine's TOML table (empty without ``--config``).
    summary : str
        One line for help texts.
    options : tuple of str
        Command-line options the engine takes beyond the common ones (``mss``, ``udp``,
        ``fixed_id``, ``program``, ``entries``).
    timed : bool
        The adapter's ``run_model`` and ``run_rtl`` also take ``times_ns``: each frame's
        capture time in nanoseconds from the first frame (meters need it).
    """

    module: str
    summary: str
    options: tuple = ()
    timed: bool = False


ENGINES = {
    "checksum-rx": EngineSpec(__name__, "RX checksum verification"),
    "checksum-tx": EngineSpec(__name__, "TX checksum insertion"),
    "rss": EngineSpec(__name__, "RSS Toeplitz hash and queue"),
    "match-action": EngineSpec("nicsim.hw.match_action.engine",
                               "Match-action pipeline (program and entries)",
                               ("program", "entries"), timed=True),
    "lro": EngineSpec("nicsim.hw.lro_engine", "LRO: merge TCP segments (GRO rules)"),
    "tso": EngineSpec("nicsim.hw.tso_engine", "TSO/USO: cut super-frames into MSS-sized frames",
                      ("mss", "udp", "fixed_id")),
}
_BUILTIN = ("checksum-rx", "checksum-tx", "rss")

# Register offsets, from the blocks' register tables.
RSS_REG_ENABLED = offset_of(RSS_REGISTERS, "HASH_TYPES")
RSS_REG_KEY = offset_of(RSS_REGISTERS, "KEY")
RSS_REG_TABLE = offset_of(RSS_REGISTERS, "TABLE")
TX_FRAMES_OUT = offset_of(TX_REGISTERS, "FRAMES_OUT")
TX_DROPS = tuple(offset_of(TX_REGISTERS, name)
                 for name in ("DROP_OVERSIZE", "DROP_BAD_COMMAND", "DROP_MALFORMED"))


class ConfigError(ValueError):
    """A configuration file or value the engines cannot use; one sentence for the user."""


@dataclass
class EngineConfig:
    """Configuration of one engine run.

    Members
    -------
    rss : RssConfig
        Key, enabled hash types and indirection table (rss).
    tx : TxCommand
        Command applied to every frame (checksum-tx).
    """

    rss: RssConfig = field(default_factory=RssConfig)
    tx: TxCommand = field(default_factory=lambda: TxCommand(TxMode.AUTO))


@dataclass
class EngineRun:
    """What an engine did with a capture.

    Members
    -------
    frames : list of bytes
        Frames leaving the engine (taps pass every frame unchanged).
    meta : list of dict
        One record per input frame, in input order (``{"dropped": reason}`` for a drop).
    out_meta : list of dict or None
        For engines whose frames out are not one per frame in (segmentation, coalescing): one
        record per output frame, in output order; ``nicsim rtl run`` writes these to ``--meta``.
    origin : list of int or None
        With ``out_meta``: index of the input frame each output frame leaves after (its
        capture timestamp is kept).
    """

    frames: list
    meta: list
    out_meta: list | None = None
    origin: list | None = None


def _spec(engine):
    try:
        return ENGINES[engine]
    except KeyError:
        raise ValueError(f"Unknown engine {engine!r}; choose one of "
                         f"{', '.join(ENGINES)}") from None


def _adapter(engine):
    return importlib.import_module(_spec(engine).module)


_HASH_TYPE_NAMES = {t: t.name.lower() for t in HashType}
_STATUS_NAMES = {s: s.name.lower() for s in Status}
_TX_MODES = {"off": TxMode.OFF, "partial": TxMode.PARTIAL, "auto": TxMode.AUTO}


def load_config(engine, path=None, options=None):
    """Read a TOML configuration; ``[rss]`` and ``[checksum-tx]`` sections (or top-level keys).

    ``options`` holds command-line settings (``{"mss": 1448}``); an engine that does not take
    one raises :class:`ConfigError`. Engines with their own module read their section there.

    ``[rss]``: ``key`` (80 hex digits), ``hash_types`` (names of :class:`HashType`),
    ``table`` (queue numbers, repeated to ``table_size``), ``queues`` (``table[i] = i % queues``),
    ``table_size`` (power of two, 1..512). ``[checksum-tx]``: ``mode`` (off, partial, auto),
    ``csum_start``, ``csum_offset``.
    """
    spec = _spec(engine)
    options = {k: v for k, v in (options or {}).items() if v is not None and v is not False}
    extra = sorted(set(options) - set(spec.options))
    if extra:
        flags = ", ".join("--" + name.replace("_", "-") for name in extra)
        raise ConfigError(f"{flags} does not apply to {engine}.")
    section = {}
    if path is not None:
        path = Path(path)
        try:
            doc = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the configuration ({exc.strerror}).") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc}).") from None
        section = doc.get(engine, doc)
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: [{engine}] must be a table.")
    if engine not in _BUILTIN:
        try:
            return _adapter(engine).load_config(section, options)
        except (ValueError, TypeError) as exc:
            where = f"{path}: " if path is not None else ""
            raise ConfigError(f"{where}{exc}") from None
    cfg = EngineConfig()
    if path is None:
        return cfg
    try:
        if engine == "rss":
            cfg.rss = _rss_config(section)
        elif engine == "checksum-tx":
            cfg.tx = _tx_config(section)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return cfg


def _rss_config(section):
    known = {"key", "hash_types", "table", "queues", "table_size"}
    unknown = set(section) - known - set(ENGINES)
    if unknown:
        raise ValueError(f"unknown rss setting(s) {sorted(unknown)}; use {sorted(known)}")
    key = DEFAULT_KEY
    if "key" in section:
        text = str(section["key"]).replace(":", "").replace(" ", "")
        try:
            key = bytes.fromhex(text)
        except ValueError:
            raise ValueError("rss.key must be hex digits") from None
        if len(key) != 40:
            raise ValueError(f"rss.key must be 40 bytes (80 hex digits), not {len(key)}")
    enabled = ALL_TYPES_MASK
    if "hash_types" in section:
        enabled = 0
        names = {t.name.lower(): t for t in HashType if t is not HashType.NONE}
        for name in section["hash_types"]:
            if str(name).lower() not in names:
                raise ValueError(f"unknown hash type {name!r}; use {sorted(names)}")
            enabled |= 1 << names[str(name).lower()]
    size = int(section.get("table_size", 128))
    if "table" in section:
        entries = [int(q) for q in section["table"]]
        if not entries:
            raise ValueError("rss.table must not be empty")
        table = [entries[i % len(entries)] for i in range(size)]
    elif "queues" in section:
        queues = int(section["queues"])
        if not 1 <= queues <= 256:
            raise ValueError(f"rss.queues must be 1..256, not {queues}")
        table = [i % queues for i in range(size)]
    else:
        table = default_table(size) if size != 128 else default_table()
    if any(not 0 <= q < 256 for q in table):
        raise ValueError("rss.table entries must be queue numbers 0..255")
    return RssConfig(key=key, enabled=enabled, table=table)


def _tx_config(section):
    mode = str(section.get("mode", "auto")).lower()
    if mode not in _TX_MODES:
        raise ValueError(f"checksum-tx.mode must be one of {sorted(_TX_MODES)}, not {mode!r}")
    start = int(section.get("csum_start", 0))
    offset = int(section.get("csum_offset", 0))
    if not (0 <= start < 1 << 16 and 0 <= offset < 1 << 16):
        raise ValueError("checksum-tx.csum_start and csum_offset must be 0..65535")
    return TxCommand(_TX_MODES[mode], start, offset)


def decode_csum_result(word):
    """Decode a checksum-rx result word into its metadata record."""
    return {
        "ip": _STATUS_NAMES[Status((word >> 16) & 3)],
        "l4": _STATUS_NAMES[Status((word >> 18) & 3)],
        "csum_complete": word & 0xFFFF,
    }


def decode_rss_result(word):
    """Decode an rss result word into its metadata record."""
    return {
        "hash": word & 0xFFFFFFFF,
        "hash_type": _HASH_TYPE_NAMES[HashType((word >> 32) & 0xF)],
        "queue": (word >> 48) & 0xFFFF,
    }


def _timing(engine, times_ns):
    """Keyword arguments that hand capture times to an engine that uses them."""
    return {"times_ns": times_ns} if times_ns is not None and ENGINES[engine].timed else {}


def run_model(engine, frames, config=None, times_ns=None) -> EngineRun:
    """Run frames through the golden reference of ``engine``.

    ``times_ns``: capture time of each frame in nanoseconds from the first; engines without
    time-dependent state ignore it.
    """
    if engine not in _BUILTIN:
        adapter = _adapter(engine)
        return adapter.run_model(frames, config if config is not None
                                 else adapter.load_config({}, {}),
                                 **_timing(engine, times_ns))
    config = config or EngineConfig()
    if engine == "checksum-rx":
        meta = []
        for f in frames:
            r = rx_checksum(f)
            meta.append({"ip": _STATUS_NAMES[r.ip], "l4": _STATUS_NAMES[r.l4],
                         "csum_complete": r.csum_complete})
        return EngineRun(list(frames), meta)
    if engine == "rss":
        meta = []
        for f in frames:
            r = rss_hash(f, config.rss)
            meta.append({"hash": r.hash, "hash_type": _HASH_TYPE_NAMES[r.hash_type],
                         "queue": r.queue})
        return EngineRun(list(frames), meta)
    if engine == "checksum-tx":
        out, meta = [], []
        for f in frames:
            r = tx_checksum(f, config.tx)
            if r.frame is None:
                meta.append({"dropped": r.drop_reason})
            else:
                out.append(r.frame)
                meta.append({"ip_inserted": r.ip_inserted, "l4_inserted": r.l4_inserted})
        return EngineRun(out, meta)
    raise ValueError(f"Unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")


def _tx_drop_reason(frame, cmd):
    """Drops the TX engine decides from length and command alone (no parsing)."""
    if not frame:
        return DROP_EMPTY
    if len(frame) > MAX_FRAME_LEN:
        return DROP_OVERSIZE
    if cmd.mode == TxMode.PARTIAL and cmd.csum_start + cmd.csum_offset + 2 > len(frame):
        return DROP_BAD_COMMAND
    return None


def rss_register_writes(config: RssConfig):
    """Return the (address, value) writes that load an RSS configuration."""
    writes = [(RSS_REG_ENABLED, config.enabled)]
    for i in range(10):
        writes.append((RSS_REG_KEY + 4 * i, int.from_bytes(config.key[4 * i:4 * i + 4], "big")))
    writes += [(RSS_REG_TABLE + 4 * i, q) for i, q in enumerate(config.table)]
    return writes


def run_rtl(engine, frames, config=None, width=64, idle_pct=0, backpressure_pct=0, seed=1,
            waves=None, times_ns=None):
    """Run frames through the gateware of ``engine`` on Verilator (C++ harness).

    Parameters
    ----------
    engine : str
        ``checksum-rx``, ``checksum-tx`` or ``rss``.
    frames : list of bytes
        Ethernet frames.
    config : EngineConfig
        Engine configuration, loaded into the design's registers.
    width : int
        Data width of the gateware in bits.
    idle_pct, backpressure_pct : int
        Percent of cycles the source idles / the sinks refuse (seeded).
    waves : path, optional
        Record the run as an FST waveform.
    times_ns : list of int, optional
        Capture time of each frame in nanoseconds from the first (engines with meters).
    """
    from .harness import build_harness, run_harness

    if engine not in _BUILTIN:
        adapter = _adapter(engine)
        return adapter.run_rtl(frames, config if config is not None
                               else adapter.load_config({}, {}), width=width,
                               idle_pct=idle_pct, backpressure_pct=backpressure_pct, seed=seed,
                               waves=waves, **_timing(engine, times_ns))
    config = config or EngineConfig()
    params = {"width": width}
    users = [0] * len(frames)
    writes, reads = [], []
    if engine == "rss":
        params["table_size"] = len(config.rss.table)
        writes = rss_register_writes(config.rss)
    elif engine == "checksum-tx":
        cmd = config.tx
        user = cmd.csum_start | (cmd.csum_offset << 16) | (int(cmd.mode) << 32)
        users = [user] * len(frames)
        reads = [0x00, TX_FRAMES_OUT, *TX_DROPS]
    elif engine != "checksum-rx":
        raise ValueError(f"Unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    # An AXI4-Stream frame has at least one byte: empty records never reach the wire.
    sent = [i for i, f in enumerate(frames) if f]
    build = build_harness(engine, params, waves=waves is not None)
    done = run_harness(build, [frames[i] for i in sent], [users[i] for i in sent], writes,
                       reads, idle_pct=idle_pct, backpressure_pct=backpressure_pct, seed=seed,
                       waves=waves)
    if engine == "checksum-tx":
        return _tx_outcome(frames, done, config.tx)
    decode = decode_csum_result if engine == "checksum-rx" else decode_rss_result
    words = iter(done.results)
    meta = [decode(next(words)) if f else run_model(engine, [f], config).meta[0]
            for f in frames]
    return EngineRun(list(frames), meta)


def _tx_outcome(frames, done, cmd):
    out_frames = done.frames
    expected_drops = [_tx_drop_reason(f, cmd) for f in frames]
    kept = sum(r is None for r in expected_drops)
    if kept != len(out_frames):
        raise RuntimeError(f"checksum-tx gateware emitted {len(out_frames)} frames where "
                           f"{kept} were expected; counters {[v for v, _ in done.reads]}")
    meta = []
    outs = iter(out_frames)
    for reason in expected_drops:
        if reason is not None:
            meta.append({"dropped": reason})
        else:
            _, user = next(outs)
            meta.append({"ip_inserted": bool(user & 1), "l4_inserted": bool(user & 2)})
    return EngineRun([f for f, _ in out_frames], meta)

