"""Every path, on one or several cores, accounts for every frame: delivered, dropped with a
reason, or still in flight; and concurrent threads do not lose each other's work."""

import pytest

from nicsim.sim.scenario import load_scenario
from nicsim.sim.world import World


@pytest.mark.parametrize("path", ["pmd", "irq", "linux", "netmap"])
@pytest.mark.parametrize("cores", [1, 2, 4])
def test_frames_are_conserved(path, cores):
    overrides = [f"host.path=\"{path}\"", f"host.cores={cores}", f"nic.rxqs={cores}",
                 f"nic.txqs={cores}", "traffic.0.flows=64", "traffic.0.rate_mpps=3"]
    world = World(load_scenario(text="duration_us = 100\n", overrides=overrides))
    r = world.run()
    accounted = (r["delivered_frames"] + sum(r["drops"].values())
                 + r["in_flight"]["rx_waiting_for_descriptor"])
    assert r["in_flight"]["elsewhere"] == r["offered"]["frames"] - accounted
    # Nothing is lost inside the host: what is not delivered or dropped is at most what the
    # NIC and the link still hold at the end (a few microseconds of traffic).
    assert 0 <= r["in_flight"]["elsewhere"] <= 3 * 20
    assert len(r["cpu_busy"]) == cores
