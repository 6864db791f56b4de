"""The ELF loader against the C source it was built from and llvm-objdump's reading.

Map definitions are checked against the sizes the C source declares; instructions against the
bytes llvm-objdump prints for each function; relocations against the symbols llvm-objdump
names at each relocated instruction; and the kernel (through bpftool, which relocates with
libbpf) accepts the same objects.
"""

import re
import shutil
import subprocess

import pytest

from nicsim.host.ebpf import insn as isa
from nicsim.host.ebpf.build import BuildError, compile_c
from nicsim.host.ebpf.elf import LoadError, load_object
from nicsim.host.ebpf.protos import MapType

from .kernel_oracle import kernel_available, kernel_load

SOURCE = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct pair { __u32 a; __u16 b; __u8 c[10]; };
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __type(key, struct pair);
    __type(value, __u64);
    __uint(max_entries, 128);
    __uint(map_flags, BPF_F_NO_PREALLOC);
} flows SEC(".maps");
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(key_size, 4);
    __uint(value_size, 24);
    __uint(max_entries, 4);
} stats SEC(".maps");
const volatile __u32 bias = 7;
__attribute__((noinline)) static int scale(int x) { return x * 3 + bias; }
__attribute__((noinline)) static int twice(int x) { return scale(x) + scale(x + 1); }
SEC("xdp") int first(struct xdp_md *ctx) {
    struct pair k = {};
    __u64 *v = bpf_map_lookup_elem(&flows, &k);
    if (v) return scale(*v) & 3;
    return XDP_PASS;
}
SEC("xdp.frags") int second(struct xdp_md *ctx) {
    __u32 k = 0;
    void *v = bpf_map_lookup_elem(&stats, &k);
    return v ? twice(ctx->data_end - ctx->data) & 3 : XDP_DROP;
}
char _license[] SEC("license") = "Dual BSD/GPL";
"""

LEGACY = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct bpf_map_def { unsigned int type, key_size, value_size, max_entries, map_flags; };
struct bpf_map_def SEC("maps") counters = {
    .type = BPF_MAP_TYPE_ARRAY, .key_size = 4, .value_size = 8, .max_entries = 16,
};
SEC("xdp/legacy") int legacy(struct xdp_md *ctx) {
    __u32 k = 3;
    __u64 *v = bpf_map_lookup_elem(&counters, &k);
    if (v) *v += 1;
    return XDP_PASS;
}
char _license[] SEC("license") = "GPL";
"""


@pytest.fixture(scope="module")
def obj_path(tmp_path_factory):
    src = tmp_path_factory.mktemp("elf") / "two.c"
    src.write_text(SOURCE)
    return compile_c(src)


def objdump_functions(path):
    """Return ``{function: [(slot, bytes, relocation symbol or None)]}`` from llvm-objdump."""
    tool = shutil.which("llvm-objdump-15") or shutil.which("llvm-objdump")
    if tool is None:
        pytest.skip("llvm-objdump not installed")
    text = subprocess.run([tool, "-dr", str(path)], capture_output=True, text=True,
                          check=True).stdout
    funcs, current = {}, None
    for line in text.splitlines():
        head = re.match(r"^[0-9a-f]+ <(\w+)>:", line)
        if head:
            if not head[1].startswith("LBB"):
                current = funcs.setdefault(head[1], [])
            continue
        ins = re.match(r"^\s+(\d+):\s+([0-9a-f ]+)\t", line)
        if ins and current is not None:
            current.append([int(ins[1]), bytes.fromhex(ins[2].replace(" ", "")), None])
            continue
        rel = re.match(r"^\s+[0-9a-f]+:\s+R_BPF_\w+\s+(\S+)", line)
        if rel and current:
            current[-1][2] = rel[1]
    return funcs


def test_maps_match_the_c_declarations(obj_path):
    obj = load_object(obj_path)
    by_name = {m.name: m for m in obj.maps}
    flows = by_name["flows"]
    assert (flows.type, flows.key_size, flows.value_size, flows.max_entries, flows.flags) == (
        MapType.hash, 16, 8, 128, 1)  # struct pair: 4 + 2 + 10 bytes; BPF_F_NO_PREALLOC = 1
    stats = by_name["stats"]
    assert (stats.type, stats.key_size, stats.value_size, stats.max_entries) == (
        MapType.percpu_array, 4, 24, 4)
    rodata = by_name[".rodata"]
    assert rodata.origin == "data" and rodata.initial == (7).to_bytes(4, "little")
    assert obj.license == "Dual BSD/GPL"
    assert set(obj.programs) == {"first", "second"}
    assert obj.programs["second"].frags and obj.programs["second"].section == "xdp.frags"


def test_instructions_and_relocations_match_objdump(obj_path):
    obj = load_object(obj_path)
    funcs = objdump_functions(obj_path)
    for name, subs in (("first", ["scale"]), ("second", ["twice", "scale"])):
        prog = obj.programs[name]
        pieces = [name, *subs]
        expected = [entry for fn in pieces for entry in funcs[fn]]
        starts, pos = {}, 0
        for fn in pieces:
            starts[fn] = pos
            pos += sum(2 if e[1][0] == 0x18 else 1 for e in funcs[fn])
        assert len(prog.insns) == pos
        slot = 0
        for _, raw, reloc in expected:
            ins = prog.insns[slot]
            if ins.op == (isa.JMP | isa.CALL) and ins.src == isa.PSEUDO_CALL:
                target = slot + 1 + ins.imm
                callee = reloc if reloc in starts else None
                if callee is None:  # call to a section symbol: objdump shows ".text"
                    callee = next(fn for fn in subs if starts[fn] == target)
                assert starts[callee] == target, (name, slot)
            elif ins.is_lddw and reloc is not None:
                spec = obj.maps[ins.imm & 0xFFFFFFFF]
                if ins.src == isa.PSEUDO_MAP_FD:
                    assert spec.name == reloc
                else:
                    assert ins.src == isa.PSEUDO_MAP_VALUE and spec.name == ".rodata"
            else:
                assert isa.encode([ins]) == raw, (name, slot)
            slot += ins.slots


def test_legacy_maps_section(tmp_path):
    src = tmp_path / "legacy.c"
    src.write_text(LEGACY)
    obj = load_object(compile_c(src))
    (spec,) = obj.maps
    assert (spec.name, spec.type, spec.key_size, spec.value_size, spec.max_entries,
            spec.origin) == ("counters", MapType.array, 4, 8, 16, "legacy")
    prog = obj.programs["legacy"]
    assert prog.section == "xdp/legacy"
    lddw = [i for i in prog.insns if i is not None and i.is_lddw]
    assert [(i.src, i.imm) for i in lddw] == [(isa.PSEUDO_MAP_FD, 0)]


def test_kernel_accepts_the_same_object(obj_path):
    ok, why = kernel_available()
    if not ok:
        pytest.skip(why)
    accepted, log = kernel_load(obj_path, "first")
    assert accepted, log


@pytest.mark.parametrize("content, message", [
    (b"", "not a valid ELF"),
    (b"\x7fELF" + bytes(60), "not a valid ELF"),
    (b"hello world, not an object", "not a valid ELF"),
])
def test_bad_files_give_one_line(tmp_path, content, message):
    path = tmp_path / "bad.o"
    path.write_bytes(content)
    with pytest.raises(LoadError, match=message) as info:
        load_object(path)
    assert "\n" not in str(info.value)


def test_host_object_is_refused(tmp_path):
    cc = shutil.which("clang-15")
    if cc is None:
        pytest.skip("clang-15 not installed")
    src = tmp_path / "host.c"
    src.write_text("int f(int x) { return x + 1; }\n")
    out = tmp_path / "host.o"
    subprocess.run([cc, "-c", str(src), "-o", str(out)], check=True)
    with pytest.raises(LoadError, match="not BPF"):
        load_object(out)


def test_missing_file_and_compile_error(tmp_path):
    with pytest.raises(LoadError, match="cannot read"):
        load_object(tmp_path / "nope.o")
    bad = tmp_path / "bad.c"
    bad.write_text("int x = ;\n")
    with pytest.raises(BuildError, match="error"):
        compile_c(bad)


def test_damaged_objects_give_load_errors(tmp_path, obj_path):
    """Random byte damage: the loader and the interpreter refuse in one line, never crash."""
    import random

    from nicsim.host.ebpf.interp import ExecError, TranslateError, Vm
    from nicsim.host.ebpf.maps import MapError

    good = obj_path.read_bytes()
    rng = random.Random(4)
    path = tmp_path / "damaged.o"
    for _ in range(150):
        data = bytearray(good)
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.2:
            data = data[:rng.randrange(len(data))]
        path.write_bytes(bytes(data))
        try:
            obj = load_object(path)
        except LoadError as exc:
            assert "\n" not in str(exc)
            continue
        for prog in obj.programs.values():
            try:
                Vm(prog, map_specs=obj.maps, insn_limit=100_000).run(bytes(64))
            except (TranslateError, ExecError, MapError) as exc:
                assert str(exc).startswith(("insn ", "map ", "empty"))
