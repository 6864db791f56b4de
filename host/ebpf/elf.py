# Ref: tools/lib/bpf/libbpf.c (program sections, map definitions, relocation of map references
#      and bpf-to-bpf calls: bpf_object__collect_relos, bpf_object__reloc_code) in Linux 6.x;
#      Documentation/bpf/btf.rst (BTF type encoding); Documentation/bpf/llvm_reloc.rst
"""Load eBPF ELF objects built by clang, as libbpf does before handing programs to the kernel.

:func:`load_object` finds the XDP programs (sections ``xdp``, ``xdp.frags``, ``xdp/...``,
``xdp.frags/...``; one program per global function in the section), the maps (BTF-defined ones
in ``.maps``, legacy ``struct bpf_map_def`` ones in ``maps``, and one single-entry array per
global data section ``.rodata``/``.data``/``.bss``, as libbpf creates them) and the license.
Each program's instructions are relocated: a map reference becomes a lddw with
``src = PSEUDO_MAP_FD`` and ``imm`` the map's index in :attr:`BpfObject.maps` (a global data
reference becomes ``src = PSEUDO_MAP_VALUE`` with the offset in the upper 32 bits of ``imm``);
the subprograms a program calls are appended after it and the calls point at them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from nicsim.host.ebpf import insn as isa
from nicsim.host.ebpf.protos import MapType

__all__ = ["LoadError", "MapSpec", "Program", "BpfObject", "load_object", "is_xdp_section"]

EM_BPF = 247
STT_FUNC = 2
STT_SECTION = 3
STB_LOCAL = 0
BPF_F_RDONLY_PROG = 1 << 7
DATA_SECTIONS = (".rodata", ".data", ".bss")


class LoadError(ValueError):
    """An object file nicsim cannot load (one line)."""


@dataclass
class MapSpec:
    """A map as the object defines it.

    Members
    -------
    name : str
    type : int
        :class:`~nicsim.host.ebpf.protos.MapType` value.
    key_size, value_size, max_entries, flags : int
    origin : str
        ``"btf"`` (``.maps``), ``"legacy"`` (``maps``) or ``"data"`` (global data section).
    initial : bytes or None
        Initial value of a global data map (its one entry).
    """

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0
    origin: str = "btf"
    initial: bytes | None = None


@dataclass
class Program:
    """One program of an object.

    Members
    -------
    name : str
        Function name.
    section : str
        ELF section it came from.
    insns : list of Insn or None
        Relocated instructions, one entry per slot (``None`` in a lddw's second slot), the
        called subprograms appended.
    frags : bool
        True for ``xdp.frags`` programs (multi-buffer aware).
    """

    name: str
    section: str
    insns: list
    frags: bool = False

    def __len__(self):
        return len(self.insns)


@dataclass
class BpfObject:
    """The programs, maps and license of one object file."""

    path: Path
    programs: dict = field(default_factory=dict)
    maps: list = field(default_factory=list)
    license: str = ""

    def map_index(self, name):
        """Return the index of the map called ``name``."""
        for i, spec in enumerate(self.maps):
            if spec.name == name:
                return i
        raise KeyError(name)


def is_xdp_section(name):
    """Return True when ``name`` is a section libbpf loads as an XDP program."""
    return (name in ("xdp", "xdp.frags") or name.startswith("xdp/")
            or name.startswith("xdp.frags/"))


# --- BTF -----------------------------------------------------------------------------------

_BTF_KIND_EXTRA = {1: 4, 2: 0, 3: 12, 4: -12, 5: -12, 6: -8, 7: 0, 8: 0, 9: 0, 10: 0, 11: 0,
                   12: 0, 13: -8, 14: 4, 15: -12, 16: 0, 17: 4, 18: 0, 19: -12}
_INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM = 1, 2, 3, 4, 5, 6
_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _VAR, _DATASEC, _TYPE_TAG = 8, 9, 10, 11, 14, 15, 18
_ENUM64, _FLOAT = 19, 16


class _Btf:
    """The types of a ``.BTF`` section, enough to read map definitions."""

    def __init__(self, data):
        if len(data) < 24:
            raise LoadError(".BTF section is truncated")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != 0xEB9F:
            raise LoadError(f".BTF has magic {magic:#x}, not 0xeb9f (big-endian object?)")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        types = data[hdr_len + type_off: hdr_len + type_off + type_len]
        self.strings = data[hdr_len + str_off: hdr_len + str_off + str_len]
        self.types = [None]  # id 0 is void
        pos = 0
        while pos + 12 <= len(types):
            name_off, info, size_type = struct.unpack_from("<III", types, pos)
            pos += 12
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            extra = _BTF_KIND_EXTRA.get(kind)
            if extra is None:
                raise LoadError(f".BTF type {len(self.types)} has unknown kind {kind}")
            nbytes = extra if extra >= 0 else -extra * vlen
            members = []
            if kind in (_STRUCT, _UNION, _DATASEC):
                for m in range(vlen):
                    members.append(struct.unpack_from("<III", types, pos + 12 * m))
            elif kind == _ARRAY:
                members.append(struct.unpack_from("<III", types, pos))
            self.types.append((kind, self.name(name_off), size_type, members))
            pos += nbytes

    def name(self, off):
        end = self.strings.find(b"\0", off)
        return self.strings[off:end if end >= 0 else None].decode(errors="replace")

    def get(self, tid):
        if not 0 < tid < len(self.types):
            raise LoadError(f".BTF refers to type {tid}, which does not exist")
        return self.types[tid]

    def skip_mods(self, tid):
        for _ in range(64):
            kind, _name, size_type, _m = self.get(tid)
            if kind not in (_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG):
                return tid
            tid = size_type
        raise LoadError(".BTF type chain too long")

    def size(self, tid, depth=0):
        if depth > 64:
            raise LoadError(".BTF type chain too long")
        tid = self.skip_mods(tid)
        kind, _name, size_type, members = self.get(tid)
        if kind == _PTR:
            return 8
        if kind == _ARRAY:
            elem, _index, nelems = members[0]
            return nelems * self.size(elem, depth + 1)
        if kind in (_INT, _STRUCT, _UNION, _ENUM, _ENUM64, _FLOAT, _DATASEC):
            return size_type
        raise LoadError(f".BTF type {tid} (kind {kind}) has no size")

    def datasec(self, name):
        for kind, tname, _size, members in self.types[1:]:
            if kind == _DATASEC and tname == name:
                return members
        return None


def _btf_map(btf, var_tid):
    kind, name, type_id, _m = btf.get(var_tid)
    if kind != _VAR:
        raise LoadError(f"map entry {var_tid} in .maps is not a variable")
    sid = btf.skip_mods(type_id)
    skind, _sname, _size, members = btf.get(sid)
    if skind != _STRUCT:
        raise LoadError(f"map {name!r}: definition is not a struct")
    values = {}
    for name_off, mtype, _offset in members:
        field_name = btf.name(name_off)
        pkind, _n, target, _pm = btf.get(btf.skip_mods(mtype))
        if pkind != _PTR:
            raise LoadError(f"map {name!r}: member {field_name!r} is not a pointer "
                            f"(__uint/__type)")
        if field_name in ("key", "value"):
            values[field_name + "_size"] = btf.size(target)
        else:
            akind, _an, _asize, amembers = btf.get(btf.skip_mods(target))
            if akind != _ARRAY:
                raise LoadError(f"map {name!r}: member {field_name!r} is not __uint()")
            values[field_name] = amembers[0][2]
    if "type" not in values:
        raise LoadError(f"map {name!r} has no type")
    return MapSpec(name=name, type=values["type"], key_size=values.get("key_size", 0),
                   value_size=values.get("value_size", 0),
                   max_entries=values.get("max_entries", 0),
                   flags=values.get("map_flags", 0), origin="btf")


# --- ELF -----------------------------------------------------------------------------------

def load_object(path) -> BpfObject:
    """Load the eBPF object file ``path``.

    Raises
    ------
    LoadError
        The file is not a little-endian eBPF ELF object or holds something nicsim cannot
        relocate (the message says what).
    """
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    path = Path(path)
    try:
        with path.open("rb") as fh:
            try:
                elf = ELFFile(fh)
                _check_bounds(elf, path, path.stat().st_size)
                return _load(elf, path)
            except LoadError:
                raise
            except isa.DecodeError as exc:
                raise LoadError(f"{path}: {exc}") from None
            except (ELFError, struct.error, IndexError, KeyError, ValueError, OverflowError,
                    AttributeError, TypeError, UnicodeDecodeError, MemoryError) as exc:
                # A damaged file can break pyelftools anywhere; say so in one line.
                raise LoadError(f"{path}: not a valid ELF object ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else '?'})") from None
    except OSError as exc:
        raise LoadError(f"cannot read {path}: {exc.strerror or exc}") from None


def _check_bounds(elf, path, file_size):
    """Refuse section headers that point outside the file (before pyelftools reads them)."""
    for i in range(elf.num_sections()):
        header = elf._get_section_header(i)
        if header["sh_type"] != "SHT_NOBITS" and (
                header["sh_offset"] + header["sh_size"] > file_size):
            raise LoadError(f"{path}: section {i} lies outside the file (truncated or damaged "
                            f"object)")


def _load(elf, path):
    if elf["e_machine"] != "EM_BPF" and elf["e_machine"] != EM_BPF:
        raise LoadError(f"{path}: ELF machine is {elf['e_machine']}, not BPF (compile with "
                        f"clang -target bpf)")
    if not elf.little_endian:
        raise LoadError(f"{path}: big-endian eBPF object (compile with -target bpf or bpfel)")
    sections = list(elf.iter_sections())
    symtab = elf.get_section_by_name(".symtab")
    if symtab is None or not hasattr(symtab, "iter_symbols"):
        raise LoadError(f"{path}: no symbol table")
    symbols = list(symtab.iter_symbols())
    obj = BpfObject(path=path)

    lic = elf.get_section_by_name("license")
    if lic is not None:
        obj.license = lic.data().split(b"\0")[0].decode(errors="replace")

    # Maps: map section index -> {symbol offset: map index}.
    map_at: dict[int, dict[int, int]] = {}
    btf_sec = elf.get_section_by_name(".BTF")
    maps_sec = elf.get_section_by_name(".maps")
    if maps_sec is not None:
        if btf_sec is None:
            raise LoadError(f"{path}: .maps section without .BTF (compile with -g)")
        btf = _Btf(btf_sec.data())
        vars_ = btf.datasec(".maps") or []
        by_name = {}
        for var_tid, _off, _size in vars_:
            spec = _btf_map(btf, var_tid)
            by_name[spec.name] = spec
        idx = _section_index(elf, ".maps")
        offsets = {}
        for sym in symbols:
            if sym["st_shndx"] == idx and sym.name in by_name:
                offsets[sym["st_value"]] = len(obj.maps)
                obj.maps.append(by_name[sym.name])
        map_at[idx] = offsets
    legacy = elf.get_section_by_name("maps")
    if legacy is not None:
        idx = _section_index(elf, "maps")
        data = legacy.data()
        offsets = {}
        for sym in sorted((s for s in symbols if s["st_shndx"] == idx
                           and s["st_info"]["type"] != "STT_SECTION"),
                          key=lambda s: s["st_value"]):
            off, size = sym["st_value"], sym["st_size"] or 20
            if size < 16 or off + 16 > len(data):
                raise LoadError(f"{path}: legacy map {sym.name!r} is smaller than "
                                f"struct bpf_map_def")
            fields = struct.unpack_from("<IIII", data, off)
            flags = struct.unpack_from("<I", data, off + 16)[0] if size >= 20 else 0
            offsets[off] = len(obj.maps)
            obj.maps.append(MapSpec(name=sym.name, type=fields[0], key_size=fields[1],
                                    value_size=fields[2], max_entries=fields[3], flags=flags,
                                    origin="legacy"))
        map_at[idx] = offsets
    data_map: dict[int, int] = {}
    for i, sec in enumerate(sections):
        base = sec.name.split(".")[1] if sec.name.count(".") >= 1 else ""
        if "." + base in DATA_SECTIONS and sec.name.startswith("." + base) and sec["sh_size"]:
            initial = (bytes(sec["sh_size"]) if sec["sh_type"] == "SHT_NOBITS"
                       else sec.data())
            data_map[i] = len(obj.maps)
            obj.maps.append(MapSpec(name=sec.name, type=int(MapType.array), key_size=4,
                                    value_size=sec["sh_size"], max_entries=1,
                                    flags=BPF_F_RDONLY_PROG if base == "rodata" else 0,
                                    origin="data", initial=initial))

    # Code sections: decode, then apply the map and data relocations in place.
    code: dict[int, list] = {}
    for i, sec in enumerate(sections):
        if sec["sh_type"] == "SHT_PROGBITS" and sec["sh_flags"] & 0x4 and sec["sh_size"]:
            code[i] = isa.decode(sec.data())
    calls: dict[tuple[int, int], tuple[int, int]] = {}  # (sec, slot) -> (sec, slot) target
    for rel in sections:
        if rel["sh_type"] not in ("SHT_REL", "SHT_RELA"):
            continue
        target_sec = rel["sh_info"]
        if target_sec not in code:
            continue
        insns = code[target_sec]
        for entry in rel.iter_relocations():
            sym = symbols[entry["r_info_sym"]]
            slot = entry["r_offset"] // 8
            if entry["r_offset"] % 8 or not 0 <= slot < len(insns) or insns[slot] is None:
                raise LoadError(f"{path}: relocation at {entry['r_offset']:#x} of "
                                f"{sections[target_sec].name} is not on an instruction")
            ins = insns[slot]
            shndx = sym["st_shndx"]
            where = f"{sections[target_sec].name}+{slot}"
            if ins.op == (isa.JMP | isa.CALL):
                if shndx not in code:
                    raise LoadError(f"{path}: call at {where} to {sym.name!r}, which is not "
                                    f"code (kfuncs and externs are not supported)")
                calls[(target_sec, slot)] = (shndx, sym["st_value"] // 8 + ins.imm + 1)
                continue
            if not ins.is_lddw:
                raise LoadError(f"{path}: relocation at {where} on op {ins.op:#04x}, "
                                f"not lddw or call")
            if shndx in map_at:
                idx = map_at[shndx].get(sym["st_value"])
                if idx is None:
                    raise LoadError(f"{path}: {where} refers to {sym.name!r}, not a map")
                insns[slot] = isa.Insn(ins.op, ins.dst, isa.PSEUDO_MAP_FD, 0, idx)
            elif shndx in data_map:
                offset = ((ins.imm & 0xFFFFFFFF) + sym["st_value"]) & 0xFFFFFFFF
                insns[slot] = isa.Insn(ins.op, ins.dst, isa.PSEUDO_MAP_VALUE, 0,
                                       data_map[shndx] | (offset << 32))
            else:
                name = sym.name or sections[shndx].name if shndx < len(sections) else sym.name
                raise LoadError(f"{path}: {where} refers to {name!r}, which is neither a map "
                                f"nor global data (externs are not supported)")
    # Calls inside a section without a relocation (same-section static functions).
    for sec_i, insns in code.items():
        for slot, ins in enumerate(insns):
            if (ins is not None and ins.op == (isa.JMP | isa.CALL)
                    and ins.src == isa.PSEUDO_CALL and (sec_i, slot) not in calls):
                calls[(sec_i, slot)] = (sec_i, slot + ins.imm + 1)

    funcs: dict[tuple[int, int], tuple[str, int]] = {}  # (sec, start slot) -> (name, slots)
    for sym in symbols:
        if sym["st_info"]["type"] == "STT_FUNC" and sym["st_shndx"] in code:
            size = sym["st_size"] // 8 or len(code[sym["st_shndx"]]) - sym["st_value"] // 8
            funcs[(sym["st_shndx"], sym["st_value"] // 8)] = (sym.name, size)

    for (sec_i, start), (name, size) in sorted(funcs.items()):
        sec_name = sections[sec_i].name
        if not is_xdp_section(sec_name):
            continue
        sym_bind = next((s["st_info"]["bind"] for s in symbols if s.name == name
                         and s["st_shndx"] == sec_i), "STB_GLOBAL")
        if sym_bind == "STB_LOCAL":
            continue
        insns = _link(path, code, funcs, calls, sec_i, start, size, name)
        obj.programs[name] = Program(name=name, section=sec_name, insns=insns,
                                     frags=sec_name.startswith("xdp.frags"))
    return obj


def _section_index(elf, name):
    for i, sec in enumerate(elf.iter_sections()):
        if sec.name == name:
            return i
    raise LoadError(f"no section {name}")


def _link(path, code, funcs, calls, sec_i, start, size, name):
    """Return the program at (sec_i, start) with every subprogram it calls appended."""
    placed: dict[tuple[int, int], int] = {(sec_i, start): 0}
    pieces = [(sec_i, start, size)]
    out: list = []
    k = 0
    while k < len(pieces):
        psec, pstart, psize = pieces[k]
        base = len(out)
        body = code[psec][pstart:pstart + psize]
        for j, ins in enumerate(body):
            slot = pstart + j
            target = calls.get((psec, slot))
            if target is not None and ins is not None:
                if target not in placed:
                    fn = funcs.get(target)
                    if fn is None:
                        raise LoadError(f"{path}: {name}: call at slot {slot} goes to "
                                        f"{target[1]}, which is not a function start")
                    placed[target] = -1  # offset known once the previous pieces are laid out
                    pieces.append((target[0], target[1], fn[1]))
                out.append(("call", target, ins, base + j))
            else:
                out.append(ins)
        # Record where this piece starts.
        placed[(psec, pstart)] = base
        k += 1
    # Pieces were appended in order, so every placed offset is known now.
    offset = 0
    for psec, pstart, psize in pieces:
        placed[(psec, pstart)] = offset
        offset += psize
    result = []
    for idx, item in enumerate(out):
        if isinstance(item, tuple):
            _tag, target, ins, _at = item
            rel = placed[target] - (idx + 1)
            result.append(isa.Insn(ins.op, ins.dst, isa.PSEUDO_CALL, ins.off, rel))
        else:
            result.append(item)
    return result
