"""XDP and AF_XDP paths in the simulated host: mechanisms against independent expectations.

The programs are real eBPF objects (clang-15), loaded, verified and interpreted per frame. The
checks: XDP's CPU follows the load while a PMD core spins; a dropped frame costs the sum of its
named operations and the program's calibrated cost, a passed one the stack's work on top; a
cpumap spreads the frames over the cores the program picks (counted from the captured wire with
scapy); zero copy saves the copy; an AF_XDP socket takes only the frames of the queue it is
bound to (the kernel's xsk_rcv_check()); XDP_TX sends the rewritten frame (scapy on the
sink's side); every frame is delivered, sent or dropped with a reason; a program the verifier
rejects stops the scenario with one sentence naming the file and the reason.
"""

import shutil
import struct

import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from typer.testing import CliRunner

from nicsim.host.cpu import CostModel
from nicsim.host.ebpf.cost import NS_PER_INSN, PROGRAM_ENTRY_NS
from nicsim.sim.cli import app as cli
from nicsim.sim.compare_cli import compare_points
from nicsim.sim.scenario import load_scenario
from nicsim.sim.traffic import DPORT
from nicsim.sim.world import World

pytestmark = pytest.mark.skipif(shutil.which("clang-15") is None,
                                reason="clang-15 is needed to build the XDP programs")

HOST_MAC = bytes([0x02, 0, 0, 0, 0x10, 0x01])  # host 0's station address (sim.world)
DROP_PORT = f'host.xdp_maps=[".rodata:00000000={struct.pack("<H", DPORT).hex()}"]'
CPUMAP = "host.xdp_maps=[" + ",".join(f'"cpus:{n:02x}000000=00080000"' for n in range(4)) + "]"


def run(*overrides, duration_us=100, capture=()):
    world = World(load_scenario(text=f"duration_us = {duration_us}\n", overrides=overrides),
                  capture=capture)
    return world, world.run()


def accounted(r):
    """Frames delivered (or sent), dropped with a reason, or still held by the NIC."""
    return (r["delivered_frames"] + sum(r["drops"].values())
            + r["in_flight"]["rx_waiting_for_descriptor"])


@pytest.fixture(scope="module")
def verdict_progs(tmp_path_factory):
    """Programs of two instructions (``r0 = verdict; exit``) for each verdict."""
    folder = tmp_path_factory.mktemp("progs")
    paths = {}
    for name, value in (("drop", "XDP_DROP"), ("pass", "XDP_PASS"), ("aborted", "XDP_ABORTED"),
                        ("bogus", "7")):  # (7: no action, which the verifier refuses)
        path = folder / f"{name}.c"
        path.write_text('#include <linux/bpf.h>\n#define SEC(n) __attribute__((section(n), '
                        'used))\nSEC("xdp") int prog(struct xdp_md *ctx) { return '
                        f'{value}; }}\nchar _license[] SEC("license") = "GPL";\n')
        paths[name] = path
    return paths


def softirq_ps(world):
    """Interrupt and softirq time of every core (the kernel's receive work)."""
    return sum(c.by_kind["irq"] + c.by_kind["softirq"] for c in world.hosts[0].cores)


# -- CPU follows the load ---------------------------------------------------------------------

def test_xdp_cpu_grows_with_load_while_the_pmd_spins():
    busy = {}
    for path in ("xdp", "pmd"):
        for mpps in (0.5, 4.0):
            extra = ('host.xdp_prog="drop_udp"', DROP_PORT) if path == "xdp" else ()
            _, r = run(f'host.path="{path}"', f"traffic.0.rate_mpps={mpps}",
                       "traffic.0.flows=16", *extra)
            assert accounted(r) == r["offered"]["frames"]
            busy[path, mpps] = r["cpu_busy"][0]
            if path == "xdp":
                assert r["drops"] == {"xdp_drop": r["offered"]["frames"]}
    assert busy["pmd", 0.5] == pytest.approx(1.0, abs=0.01)
    assert busy["pmd", 4.0] == pytest.approx(1.0, abs=0.01)
    assert 0 < busy["xdp", 0.5] < busy["xdp", 4.0] < 0.6
    # Eight times the frames: more than twice the CPU (fixed interrupt costs amortize).
    assert busy["xdp", 4.0] > 2 * busy["xdp", 0.5]


def test_compare_runs_the_xdp_paths_with_the_program_of_the_application():
    rows = compare_points(["xdp", "af_xdp"], "drop", [1], 64, [0.5, 4.0], (), 100, 16)
    by = {(r["path"], r["offered_mpps"]): r for r in rows}
    # drop: the XDP program drops the traffic's port in the driver; AF_XDP's thread drops it.
    assert set(by["xdp", 4.0]["drops"]) == {"xdp_drop"}
    assert by["af_xdp", 4.0]["mpps"] == pytest.approx(4.0, rel=0.05)
    for path in ("xdp", "af_xdp"):
        assert by[path, 0.5]["cpu_busy"][0] < by[path, 4.0]["cpu_busy"][0] < 1.0


# -- what a verdict costs ---------------------------------------------------------------------

def test_a_dropped_frame_costs_its_driver_operations_and_the_program(verdict_progs):
    world, r = run(f'host.xdp_prog="{verdict_progs["drop"]}"', 'host.path="xdp"',
                   "traffic.0.rate_mpps=8", duration_us=200)
    frames = r["offered"]["frames"]
    assert r["drops"] == {"xdp_drop": frames}
    c = CostModel()
    # Completion read, the slot's fresh buffer, two instructions at the kernel's calibration.
    per_frame_ps = c.l3_hit + c.rx_refill + (PROGRAM_ENTRY_NS + 2 * NS_PER_INSN) * 1000
    measured = softirq_ps(world) / frames
    # Per poll and interrupt work comes on top, spread over the frames of a poll.
    assert per_frame_ps <= measured <= 1.25 * per_frame_ps


def test_pass_costs_the_stack_on_top_of_drop_and_generic_costs_the_skb(verdict_progs):
    cost = {}
    for path in ("xdp", "xdp_generic"):
        for verdict in ("drop", "pass"):
            world, r = run(f'host.path="{path}"', f'host.xdp_prog="{verdict_progs[verdict]}"',
                           "traffic.0.rate_mpps=2", "traffic.0.flows=16")
            frames = r["offered"]["frames"]
            assert accounted(r) == frames
            kernel = sum(core.busy_ps for core in world.hosts[0].cores)
            cost[path, verdict] = kernel / frames
            path_obj = world.hosts[0].paths[0]
            assert path_obj.verdicts[verdict.upper()] == frames
    c = CostModel()
    # A passed frame gets an skb, IP and UDP receive, the socket and a recv() at least.
    stack = c.skb_alloc + c.ip_rcv + c.udp_rcv + c.socket_enqueue + c.syscall
    assert cost["xdp", "pass"] - cost["xdp", "drop"] > stack
    # Generic XDP builds the skb before the program and frees it on a drop.
    assert cost["xdp_generic", "drop"] - cost["xdp", "drop"] >= (
        c.skb_alloc + c.xdp_generic + c.skb_free)
    assert cost["xdp_generic", "pass"] > cost["xdp", "pass"]


def test_aborted_is_a_counted_drop_and_an_exception(verdict_progs):
    world, r = run('host.path="xdp"', f'host.xdp_prog="{verdict_progs["aborted"]}"',
                   "traffic.0.rate_mpps=1")
    frames = r["offered"]["frames"]
    path = world.hosts[0].paths[0]
    assert r["drops"] == {"xdp_aborted": frames}
    assert path.exceptions == {"aborted": frames}
    assert path.verdicts["ABORTED"] == frames
    # A return value that is no action never runs: the verifier refuses it, as the kernel's.
    with pytest.raises(ValueError, match=r"bogus\.c: program prog rejected by the verifier: "
                                         r"insn 1: .*R0"):
        run('host.path="xdp"', f'host.xdp_prog="{verdict_progs["bogus"]}"')


# -- XDP_TX and redirects ---------------------------------------------------------------------

def test_xdp_tx_sends_the_rewritten_frame_back_out():
    world, r = run('host.path="xdp"', 'host.xdp_prog="reflect"', 'host.app="l2fwd"',
                   "traffic.0.rate_mpps=2", "traffic.0.flows=4", duration_us=50,
                   capture=("rx_wire", "tx_wire"))
    sent = [Ether(data) for _, data in world.rx_wires[0].capture]
    back = [Ether(data) for _, data in world.sink.capture]
    assert len(back) == len(sent) == r["offered"]["frames"] == r["delivered_frames"]
    for before, after in zip(sent, back, strict=True):
        # reflect swaps the MAC addresses and leaves the rest (scapy's view of both).
        assert (after.src, after.dst) == (before.dst, before.src)
        assert bytes(after.payload) == bytes(before.payload)
    assert world.hosts[0].paths[0].verdicts["TX"] == len(sent)


def test_devmap_redirect_leaves_through_the_other_function():
    world, r = run('host.path="xdp"', 'host.xdp_prog="redirect"', 'host.xdp_name="redirect_port"',
                   'host.xdp_maps=["tx_port:00000000=03000000"]', "nic.vfs=1",
                   "traffic.0.rate_mpps=1")
    frames = r["offered"]["frames"]
    host = world.hosts[0]
    assert host.vf_drivers[0].tx[0].tail == frames  # virtual function 1 is ifindex 3
    assert host.driver.tx[0].tail == 0
    assert world.sink.frames == frames == r["delivered_frames"]
    # A devmap slot naming no interface fails the redirect: counted, not lost.
    world, r = run('host.path="xdp"', 'host.xdp_prog="redirect"',
                   'host.xdp_name="redirect_port"', 'host.xdp_maps=["tx_port:00000000=09000000"]',
                   "traffic.0.rate_mpps=1")
    assert r["drops"] == {"xdp_redirect_failed": r["offered"]["frames"]}
    assert world.hosts[0].paths[0].exceptions == {"redirect_failed": r["offered"]["frames"]}


def test_fib_forwarding_rewrites_and_redirects_to_the_route_s_interface():
    route = '"10.0.1.0/24,3,02:00:00:00:00:fe,02:00:00:00:10:03"'
    world, r = run('host.path="xdp"', 'host.xdp_prog="fwd"', f"host.xdp_routes=[{route}]",
                   'host.app="l2fwd"', "nic.vfs=1", "traffic.0.rate_mpps=2",
                   "traffic.0.flows=8", duration_us=30, capture=("rx_wire", "tx_wire"))
    sent = [Ether(data) for _, data in world.rx_wires[0].capture]
    out = [Ether(data) for _, data in world.sink.capture]
    assert len(out) == len(sent) == r["delivered_frames"] == r["offered"]["frames"]
    assert world.hosts[0].vf_drivers[0].tx[0].tail == len(out)  # out of ifindex 3
    for before, after in zip(sent, out, strict=True):
        assert (after.dst, after.src) == ("02:00:00:00:00:fe", "02:00:00:00:10:03")
        assert after[IP].ttl == before[IP].ttl - 1
        again = after[IP].copy()
        del again.chksum
        assert IP(bytes(again)).chksum == after[IP].chksum  # scapy recomputes it the same
        assert bytes(after[IP].payload) == bytes(before[IP].payload)


def test_cpumap_spreads_the_frames_and_their_stack_work_over_cpus():
    world, r = run('host.path="xdp"', 'host.xdp_prog="redirect"',
                   'host.xdp_name="redirect_cpu"', CPUMAP, "host.cores=4", "nic.rxqs=1",
                   "traffic.0.flows=64", "traffic.0.rate_mpps=2", capture=("rx_wire",))
    frames = r["offered"]["frames"]
    assert r["delivered_frames"] == frames
    # The program picks CPU (source address & 3): count that from the wire with scapy.
    expected = {}
    for _, data in world.rx_wires[0].capture:
        cpu = int.from_bytes(bytes(map(int, Ether(data)[IP].src.split("."))), "big") & 3
        expected[cpu] = expected.get(cpu, 0) + 1
    path = world.hosts[0].paths[0]
    assert path.cpumap_frames == expected
    assert len(expected) == 4
    # Every core builds skbs and runs the stack; the receiving core alone without cpumap.
    cores = world.hosts[0].cores
    assert all(core.by_kind["softirq"] > 0 for core in cores)
    world, r = run('host.path="xdp"', 'host.xdp_prog="drop_udp"', "host.cores=4", "nic.rxqs=1",
                   "traffic.0.flows=64", "traffic.0.rate_mpps=2")
    plain = world.hosts[0].cores
    assert [core.by_kind["softirq"] > 0 for core in plain] == [True, False, False, False]
    assert cores[0].by_kind["softirq"] < plain[0].by_kind["softirq"]


# -- AF_XDP -----------------------------------------------------------------------------------

def test_af_xdp_zero_copy_saves_the_copy_of_every_frame():
    busy = {}
    for mode in ("zerocopy", "copy"):
        world, r = run('host.path="af_xdp"', f'host.xsk_mode="{mode}"', "host.cores=2",
                       "traffic.0.size=1518", "traffic.0.rate_mpps=0.5", "traffic.0.flows=8")
        frames = r["offered"]["frames"]
        assert r["delivered_frames"] == frames
        path = world.hosts[0].paths[0]
        assert [s.received for s in path.sockets] == [frames]
        assert path.sockets[0].core is world.hosts[0].cores[1]  # its own core
        busy[mode] = softirq_ps(world)
    c = CostModel()
    # Copy mode copies the 1514 bytes into the UMEM and recycles the driver's buffer.
    assert busy["copy"] - busy["zerocopy"] >= 0.9 * frames * (c.copy(1514) + c.rx_refill)


def test_af_xdp_consumer_thread_sends_replies_and_small_rings_drop_with_a_reason():
    world, r = run('host.path="af_xdp"', 'host.app="l2fwd"', "host.cores=2",
                   "traffic.0.rate_mpps=2", duration_us=50, capture=("tx_wire",))
    frames = r["offered"]["frames"]
    assert r["delivered_frames"] == frames
    for _, data in world.sink.capture:
        assert Ether(data).src == "02:00:00:00:10:01"  # l2fwd swapped the addresses
    # A fill ring of 8 frames against a thread that wakes per batch: frames lost, counted.
    world, r = run('host.path="af_xdp"', "host.xsk_ring_size=8", "host.cores=2",
                   "traffic.0.rate_mpps=10", "wire.rate_gbps=100", duration_us=50)
    assert r["drops"].get("xsk_fill_ring_empty", 0) > 0
    assert accounted(r) == r["offered"]["frames"]


def test_af_xdp_frames_sent_wait_for_their_completion():
    # A frame sent from the UMEM is not reusable until the completion ring gives it back
    # (Documentation/networking/af_xdp.rst): a UMEM no larger than the fill ring starves when
    # the application forwards (l2fwd) but not when it drops; twice the ring, libxdp's
    # default proportion (4096 frames, rings of 2048), is enough.
    lost = {}
    for app, umem in (("l2fwd", 64), ("drop", 64), ("l2fwd", 128)):
        world, r = run('host.path="af_xdp"', f'host.app="{app}"', "host.cores=2",
                       f"host.xsk_frames={umem}", "host.xsk_ring_size=64",
                       "traffic.0.rate_mpps=4", duration_us=100)
        assert accounted(r) == r["offered"]["frames"]
        (sock,) = world.hosts[0].paths[0].sockets
        assert sock.fill + len(sock.rx) + sock.free + sock.tx_out + sock.completion == umem
        if app == "l2fwd":
            assert sock.completed > 0 and sock.completed <= sock.transmitted
        else:
            assert sock.completed == sock.transmitted == 0
        lost[app, umem] = r["drops"].get("xsk_fill_ring_empty", 0)
    assert lost["l2fwd", 64] > 0
    assert lost["drop", 64] == lost["l2fwd", 128] == 0


@pytest.mark.parametrize("mode", ["zerocopy", "copy"])
def test_af_xdp_socket_that_cannot_take_a_frame_fails_the_redirect(mode):
    # net/xdp/xsk.c: xsk_rcv() fails when the fill ring has no UMEM frame (__xsk_rcv():
    # -ENOMEM) or the RX ring has no room (__xsk_rcv_zc(): -ENOBUFS); xdp_do_redirect() then
    # fails and the driver drops the frame as an exception (trace_xdp_exception), as for a
    # socket bound to another queue. A thread that takes one frame per step (l3fwd) against
    # 16-entry rings runs into both.
    world, r = run('host.path="af_xdp"', f'host.xsk_mode="{mode}"', 'host.app="l3fwd"',
                   "host.burst=1", "host.xsk_ring_size=16", "host.cores=2",
                   "traffic.0.rate_mpps=10", "wire.rate_gbps=100", duration_us=50)
    path = world.hosts[0].paths[0]
    (sock,) = path.sockets
    empty, full = r["drops"].get("xsk_fill_ring_empty", 0), r["drops"].get("xsk_rx_ring_full", 0)
    assert empty > 0 and full > 0
    assert set(r["drops"]) == {"xsk_fill_ring_empty", "xsk_rx_ring_full"}
    assert path.exceptions == {"redirect_failed": empty + full}
    # Every redirect either reached the socket or failed.
    assert path.verdicts["REDIRECT"] == path.redirects["xskmap"] == sock.received + empty + full
    assert accounted(r) == r["offered"]["frames"]


XSK_KEYS_C = """#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_XSKMAP); __uint(key_size, 4); __uint(value_size, 4);
         __uint(max_entries, 4); } xsks SEC(".maps");
SEC("xdp") int to_other(struct xdp_md *ctx) {
\treturn bpf_redirect_map(&xsks, ctx->rx_queue_index ^ 1, XDP_PASS);
}
SEC("xdp") int to_zero(struct xdp_md *ctx) { return bpf_redirect_map(&xsks, 0, XDP_PASS); }
char _license[] SEC("license") = "GPL";
"""


def test_af_xdp_socket_takes_only_the_frames_of_its_own_queue(tmp_path):
    # xsk_rcv_check() (net/xdp/xsk.c): a socket bound to queue q takes a frame only if it came
    # in on queue q of the socket's device; for any other, xdp_do_redirect() fails (-EINVAL)
    # and the driver drops the frame as an exception (trace_xdp_exception). The sockets here
    # are bound to queues 0 and 1, and every xskmap slot q holds the socket of queue q.
    src = tmp_path / "xsk_keys.c"
    src.write_text(XSK_KEYS_C)
    common = ('host.path="af_xdp"', "host.cores=2", "nic.rxqs=2", "traffic.0.flows=64",
              "traffic.0.rate_mpps=1")
    # Each queue's own socket (the shipped redirect_xsk): how many frames each queue had.
    world, r = run(*common, duration_us=60)
    per_queue = [s.received for s in world.hosts[0].paths[0].sockets]
    assert sum(per_queue) == r["delivered_frames"] == r["offered"]["frames"]
    assert min(per_queue) > 0  # both queues carry traffic
    # Every frame to the other queue's socket: every redirect fails, nothing is received.
    world, r = run(*common, f'host.xdp_prog="{src}"', 'host.xdp_name="to_other"',
                   duration_us=60)
    frames = r["offered"]["frames"]
    path = world.hosts[0].paths[0]
    assert [s.received for s in path.sockets] == [0, 0]
    assert r["drops"] == {"xsk_queue_mismatch": frames}
    assert path.exceptions == {"redirect_failed": frames}
    assert path.verdicts["REDIRECT"] == path.redirects["xskmap"] == frames
    # Every frame to the socket of queue 0: queue 0's frames reach it, queue 1's are dropped.
    world, r = run(*common, f'host.xdp_prog="{src}"', 'host.xdp_name="to_zero"',
                   duration_us=60)
    path = world.hosts[0].paths[0]
    assert [s.received for s in path.sockets] == [per_queue[0], 0]
    assert r["drops"] == {"xsk_queue_mismatch": per_queue[1]}
    assert path.exceptions == {"redirect_failed": per_queue[1]}


# -- conservation and errors ------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [
    ('host.path="xdp"', 'host.xdp_prog="parse_count"'),
    ('host.path="xdp_generic"', 'host.xdp_prog="drop_udp"', DROP_PORT),
    ('host.path="xdp"', 'host.xdp_prog="redirect"', 'host.xdp_name="redirect_ifindex"'),
    ('host.path="xdp"', 'host.xdp_prog="redirect"', 'host.xdp_name="redirect_cpu"', CPUMAP),
    ('host.path="af_xdp"', 'host.xsk_mode="copy"'),
    ('host.path="af_xdp"', 'host.app="udp_echo"'),
], ids=["parse_count", "generic-drop", "redirect-ifindex", "cpumap", "afxdp-copy", "afxdp-echo"])
@pytest.mark.parametrize("cores", [1, 2])
def test_frames_are_conserved(overrides, cores):
    _, r = run(*overrides, f"host.cores={cores}", f"nic.rxqs={cores}", f"nic.txqs={cores}",
               "traffic.0.flows=64", "traffic.0.rate_mpps=3", "traffic.0.sizes=[64, 600]")
    assert r["in_flight"]["elsewhere"] == r["offered"]["frames"] - accounted(r)
    assert 0 <= r["in_flight"]["elsewhere"] <= 3 * 20  # what the NIC and wire still hold


def test_a_rejected_program_is_one_sentence_naming_the_file_and_the_reason(tmp_path):
    bad = tmp_path / "unchecked.c"
    bad.write_text('#include <linux/bpf.h>\n#define SEC(n) __attribute__((section(n), used))\n'
                   'SEC("xdp") int prog(struct xdp_md *ctx) {\n'
                   '  unsigned char *p = (unsigned char *)(long)ctx->data;\n'
                   '  return p[12] == 8 ? XDP_DROP : XDP_PASS;  /* no data_end check */\n}\n'
                   'char _license[] SEC("license") = "GPL";\n')
    scenario = tmp_path / "bad.toml"
    scenario.write_text('[host]\npath = "xdp"\nxdp_prog = "unchecked.c"\n')  # beside the file
    with pytest.raises(ValueError, match=r"unchecked\.c: program prog rejected by the "
                                         r"verifier: insn \d+: "):
        World(load_scenario(scenario))
    result = CliRunner().invoke(cli, ["run", str(scenario), "--out", str(tmp_path / "out"),
                                      "--quiet"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "rejected by the verifier" in result.output
    for overrides, message in ((['host.path="xdp"'], "needs an XDP program"),
                               (['host.path="xdp"', 'host.xdp_prog="nothing_here"'],
                                "no such file"),
                               (['host.path="xdp"', 'host.xdp_prog="redirect"'],
                                "several XDP programs"),
                               (['host.path="xdp"', 'host.xdp_prog="drop_udp"',
                                 'host.xdp_maps=["nomap:00=00"]'], "no map 'nomap'")):
        with pytest.raises(ValueError, match=message):
            World(load_scenario(text="", overrides=overrides))


def test_bad_af_xdp_keys_are_one_sentence():
    from nicsim.sim.scenario import ScenarioError

    for key, value, message in (("host.xsk_ring_size", 3, "must be a power of two, not 3"),
                                ("nic.ring_size", 100, "must be a power of two, not 100"),
                                ("host.xsk_mode", '"fast"', "'zerocopy' or 'copy', not 'fast'")):
        with pytest.raises(ScenarioError) as info:
            load_scenario(text='[host]\npath = "af_xdp"\n', overrides=[f"{key}={value}"])
        text = str(info.value)
        assert f"{key}: " in text and text.endswith(message) and "\n" not in text, text
        assert text.count("not ") == 1, text


def test_fib_forwarding_drops_what_a_blackhole_route_holds():
    world, r = run('host.path="xdp"', 'host.xdp_prog="fwd"',
                   'host.xdp_routes=["10.0.0.0/8,blackhole"]', 'host.app="l2fwd"',
                   "traffic.0.rate_mpps=2", duration_us=30)
    assert r["drops"] == {"xdp_drop": r["offered"]["frames"]}
    with pytest.raises(ValueError, match=r"host.xdp_routes entry .*PREFIX,KIND"):
        World(load_scenario(text="", overrides=['host.path="xdp"', 'host.xdp_prog="fwd"',
                                                'host.xdp_routes=["10.0.0.0/8,nowhere"]']))
