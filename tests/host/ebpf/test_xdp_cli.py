"""``nicsim xdp verify`` and ``nicsim xdp run`` end to end, checked with scapy's reading of the
frames that come out and with what each input frame was built to be."""

import json

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from typer.testing import CliRunner

from nicsim.host.ebpf.build import prog_path
from nicsim.hw.pcap import read_pcap, write_pcap
from nicsim.sim.cli import app

runner = CliRunner()

A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def frames():
    base = Ether(src=A, dst=B) / IP(src="192.0.2.1", dst="10.0.0.1")
    return [
        bytes(base / UDP(sport=1000, dport=9) / b"discard me"),      # dropped: UDP port 9
        bytes(base / UDP(sport=1000, dport=53) / b"query"),          # passed
        bytes(base / TCP(sport=1000, dport=9)),                      # passed: TCP
        bytes(Ether(src=A, dst=B, type=0x88B5) / (b"\0" * 50)),     # passed: not IP
    ]


def test_run_writes_passed_frames_and_one_meta_line_per_frame(tmp_path):
    write_pcap(tmp_path / "in.pcap", frames())
    result = runner.invoke(app, ["xdp", "run", str(prog_path("drop_udp")),
                                 "--in", str(tmp_path / "in.pcap"),
                                 "--out", str(tmp_path / "out.pcap"),
                                 "--meta", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["verdict"] for r in rows] == ["DROP", "PASS", "PASS", "PASS"]
    assert all(r["insns"] > 0 for r in rows)
    out = [p.data for p in read_pcap(tmp_path / "out.pcap")]
    assert out == frames()[1:]


def test_reflect_swaps_addresses(tmp_path):
    write_pcap(tmp_path / "in.pcap", frames())
    result = runner.invoke(app, ["xdp", "run", str(prog_path("reflect")),
                                 "--in", str(tmp_path / "in.pcap"),
                                 "--out", str(tmp_path / "out.pcap"),
                                 "--meta", str(tmp_path / "m.jsonl")])
    assert result.exit_code == 0, result.output
    out = read_pcap(tmp_path / "out.pcap")
    assert len(out) == 4
    for p in out:
        eth = Ether(p.data)
        assert (eth.src, eth.dst) == (B, A)


def test_fib_forwarder_uses_the_routes_given(tmp_path):
    frame = bytes(Ether(src=A, dst=B) / IP(src="192.0.2.1", dst="10.0.0.7", ttl=9) /
                  UDP(sport=1, dport=2))
    write_pcap(tmp_path / "in.pcap", [frame])
    result = runner.invoke(app, ["xdp", "run", str(prog_path("fwd")),
                                 "--in", str(tmp_path / "in.pcap"),
                                 "--out", str(tmp_path / "out.pcap"),
                                 "--meta", str(tmp_path / "m.jsonl"),
                                 "--route", "10.0.0.0/24,3,02:00:00:00:00:cc,02:00:00:00:00:dd"])
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert row["verdict"] == "REDIRECT"
    assert row["redirect"] == {"kind": "ifindex", "ifindex": 3}
    assert row["helpers"] == {"fib_lookup": 1, "redirect": 1}


def test_verify_lists_each_program():
    result = runner.invoke(app, ["xdp", "verify", str(prog_path("vlan"))])
    assert result.exit_code == 0, result.output
    assert "vlan_push (xdp): accepted" in result.output
    assert "vlan_pop (xdp): accepted" in result.output


def test_unchecked_packet_read_is_rejected(tmp_path):
    src = tmp_path / "bad.c"
    src.write_text('#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n'
                   'SEC("xdp") int bad(struct xdp_md *ctx) {\n'
                   '  unsigned char *p = (void *)(long)ctx->data;\n'
                   '  return p[20] == 1 ? XDP_DROP : XDP_PASS;\n}\n'
                   'char _license[] SEC("license") = "GPL";\n')
    result = runner.invoke(app, ["xdp", "verify", str(src)])
    assert result.exit_code == 1
    assert "bad (xdp): rejected: insn" in result.output
    write_pcap(tmp_path / "in.pcap", frames())
    result = runner.invoke(app, ["xdp", "run", str(src), "--in", str(tmp_path / "in.pcap"),
                                 "--out", str(tmp_path / "o.pcap"),
                                 "--meta", str(tmp_path / "m.jsonl")])
    assert result.exit_code == 2
    assert "rejected by the verifier" in result.output


def test_user_errors_are_one_line(tmp_path):
    (tmp_path / "bad.pcap").write_bytes(b"not a capture")
    cases = [
        ["xdp", "run", str(tmp_path / "missing.o"), "--in", "x", "--out", "y", "--meta", "z"],
        ["xdp", "run", str(prog_path("redirect")), "--in", str(tmp_path / "bad.pcap"),
         "--out", "y", "--meta", "z"],
        ["xdp", "run", str(prog_path("reflect")), "--in", str(tmp_path / "bad.pcap"),
         "--out", "y", "--meta", "z"],
        ["xdp", "run", str(prog_path("lb")), "--in", str(tmp_path / "bad.pcap"),
         "--out", "y", "--meta", "z", "--map", "backends:00=11"],
    ]
    for args in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.count("error:") == 1 and "Traceback" not in result.output


def test_rejection_is_one_line_with_its_reason(tmp_path):
    src = tmp_path / "bad.c"
    src.write_text('#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n'
                   'SEC("xdp") int an_unchecked_read(struct xdp_md *ctx) {\n'
                   '  unsigned char *p = (void *)(long)ctx->data;\n'
                   '  return p[20] == 1 ? XDP_DROP : XDP_PASS;\n}\n'
                   'char _license[] SEC("license") = "GPL";\n')
    result = runner.invoke(app, ["xdp", "verify", str(src)])
    assert result.exit_code == 1
    (line,) = [ln for ln in result.output.splitlines() if "rejected" in ln]
    assert line.startswith("an_unchecked_read (xdp): rejected: insn ")
    assert line.endswith("(check against data_end first)")


def test_gpl_only_helper_refused_to_a_proprietary_program_as_the_kernel_does(tmp_path):
    from .kernel_oracle import kernel_available, kernel_load

    src = tmp_path / "prop.c"
    src.write_text('#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n'
                   'SEC("xdp") int prop(struct xdp_md *ctx) {\n'
                   '  char fmt[] = "hi";\n'
                   '  bpf_trace_printk(fmt, sizeof(fmt));\n  return XDP_PASS;\n}\n'
                   'char _license[] SEC("license") = "Proprietary";\n')
    ok, _ = kernel_available()
    if ok:  # the kernel refuses it for its license
        from nicsim.host.ebpf.build import compile_c

        accepted, log = kernel_load(compile_c(src))
        assert not accepted and "GPL" in log
    result = runner.invoke(app, ["xdp", "verify", str(src)])
    assert result.exit_code == 1 and "prop (xdp): rejected:" in result.output
    write_pcap(tmp_path / "in.pcap", frames())
    result = runner.invoke(app, ["xdp", "run", str(src), "--in", str(tmp_path / "in.pcap"),
                                 "--out", str(tmp_path / "o.pcap"),
                                 "--meta", str(tmp_path / "m.jsonl")])
    assert result.exit_code == 2
    assert "rejected by the verifier" in result.output and "GPL" in result.output
    # The same program under the GPL runs.
    src.write_text(src.read_text().replace('"Proprietary"', '"GPL"'))
    result = runner.invoke(app, ["xdp", "run", str(src), "--in", str(tmp_path / "in.pcap"),
                                 "--out", str(tmp_path / "o.pcap"),
                                 "--meta", str(tmp_path / "m.jsonl")])
    assert result.exit_code == 0, result.output


def test_runt_frames_are_counted_not_run_as_the_kernel_refuses_them(tmp_path):
    from nicsim.host.ebpf.build import compile_c
    from nicsim.hw.pcap import Packet

    from .kernel_oracle import KernelError, KernelProgram, kernel_available

    ok, _ = kernel_available()
    if ok:  # BPF_PROG_TEST_RUN runs no XDP program on fewer than 14 bytes
        with KernelProgram(compile_c(prog_path("parse_count")), "parse_count") as kp:
            assert kp.run(bytes(14))[0] in (1, 2)
            try:
                kp.run(bytes(13))
            except KernelError:
                pass
            else:
                raise AssertionError("the kernel ran a 13-byte frame")
    good = frames()
    write_pcap(tmp_path / "in.pcap", [Packet(b"", 0, ""), Packet(good[1], 1, ""),
                                      Packet(bytes(13), 2, "")])
    result = runner.invoke(app, ["xdp", "run", str(prog_path("parse_count")),
                                 "--in", str(tmp_path / "in.pcap"),
                                 "--out", str(tmp_path / "o.pcap"),
                                 "--meta", str(tmp_path / "m.jsonl")])
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["verdict"] for r in rows] == ["NOT RUN", "PASS", "NOT RUN"]
    assert "shorter than an Ethernet header" in rows[2]["error"]
    assert [p.data for p in read_pcap(tmp_path / "o.pcap")] == [good[1]]
    assert "NOT RUN (runt)" in result.output


def test_fib_forwarder_drops_on_reject_routes_and_passes_without_a_route(tmp_path):
    # fwd.c drops what a blackhole/unreachable/prohibit route answers and passes NOT_FWDED
    # (no route, or a local address) to the stack; the kernel's answers are checked in
    # test_helpers.py.
    dests = ["10.3.0.1", "10.4.0.1", "10.5.0.1", "10.0.0.1", "8.8.8.8", "10.9.0.1"]
    write_pcap(tmp_path / "in.pcap", [bytes(Ether(src=A, dst=B) / IP(dst=d, ttl=9) /
                                            UDP(sport=1, dport=2)) for d in dests])
    result = runner.invoke(app, ["xdp", "run", str(prog_path("fwd")),
                                 "--in", str(tmp_path / "in.pcap"),
                                 "--out", str(tmp_path / "out.pcap"),
                                 "--meta", str(tmp_path / "m.jsonl"),
                                 "--route", "10.3.0.0/16,blackhole",
                                 "--route", "10.4.0.0/16,unreachable",
                                 "--route", "10.5.0.0/16,prohibit",
                                 "--route", "10.0.0.1/32,local",
                                 "--route", "10.9.0.0/16,3,02:00:00:00:00:cc"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["verdict"] for r in rows] == ["DROP", "DROP", "DROP", "PASS", "PASS", "REDIRECT"]
    result = runner.invoke(app, ["xdp", "run", str(prog_path("fwd")),
                                 "--in", str(tmp_path / "in.pcap"),
                                 "--out", str(tmp_path / "out.pcap"),
                                 "--meta", str(tmp_path / "m.jsonl"),
                                 "--route", "10.3.0.0/16,nowhere"])
    assert result.exit_code == 2 and "PREFIX,KIND" in result.output
