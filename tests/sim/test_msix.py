"""MSI-X mask and pending semantics, interrupt moderation, NAPI-style disable/enable."""

import pytest
import simpy

from nicsim.sim.msix import MSI_ADDRESS_BASE, Moderation, MsixTable
from nicsim.sim.units import NS, US

MSI_PS = 300 * NS  # the fake link's delivery latency of an MSI-X write


class FakeLink:
    """A PCIe link delivering every MSI-X write a fixed time after it is ready."""

    def __init__(self, env):
        self.env = env
        self.messages = []

    def msi(self, addr, ready_ps=None):
        self.messages.append(addr)
        return (self.env.now if ready_ps is None else ready_ps) + MSI_PS


class Host:
    """Records interrupts as they are delivered, with the simulation time of delivery."""

    def __init__(self, env):
        self.env = env
        self.got = []

    def __call__(self, vector, t_ps):
        assert self.env.now == t_ps  # delivered at its time, never early or late
        self.got.append((vector, t_ps))


def make(vectors=4, moderation=None, masked=False):
    env = simpy.Environment()
    link = FakeLink(env)
    host = Host(env)
    kwargs = {} if moderation is None else {"moderation": moderation}
    table = MsixTable(env, link, vectors, host, masked=masked, **kwargs)
    return env, link, host, table


def test_fire_delivers_at_link_time():
    env, link, host, table = make()
    table.program(2, MSI_ADDRESS_BASE | (3 << 12), 0x41)
    assert table.fire(2, ready_ps=1000) == 1000 + MSI_PS
    assert host.got == []
    env.run()
    assert host.got == [(2, 1000 + MSI_PS)]
    assert link.messages == [MSI_ADDRESS_BASE | (3 << 12)]
    assert table.message(2) == (MSI_ADDRESS_BASE | (3 << 12), 0x41)
    assert table.fired == [0, 0, 1, 0]


def test_masked_vector_sets_pending_and_unmask_delivers_once():
    env, link, host, table = make()
    table.mask(1)
    assert table.fire(1) is None
    assert table.fire(1) is None
    assert table.is_pending(1) and table.masked_pending[1] == 2
    env.run(until=10 * US)
    assert host.got == [] and link.messages == []
    assert table.unmask(1) == 10 * US + MSI_PS
    assert not table.is_pending(1) and not table.is_masked(1)
    assert table.unmask(1) is None  # nothing pending any more
    env.run()
    assert host.got == [(1, 10 * US + MSI_PS)]
    assert table.fired[1] == 1


def test_unmask_without_pending_sends_nothing():
    env, _, host, table = make()
    table.mask(0)
    assert table.unmask(0) is None
    env.run()
    assert host.got == []


def test_reset_state_masked():
    env, _, host, table = make(masked=True)
    table.fire(3)
    env.run()
    assert host.got == [] and table.is_pending(3)
    table.unmask(3)
    env.run()
    assert host.got == [(3, MSI_PS)]


def test_function_mask():
    env, _, host, table = make()
    table.mask_function()
    table.fire(0)
    table.fire(2)
    table.mask(2)  # still individually masked after the function mask clears
    env.run(until=5 * US)
    assert host.got == []
    assert table.unmask(0) is None  # the function mask still holds it
    assert table.unmask_function() == [5 * US + MSI_PS]
    env.run()
    assert host.got == [(0, 5 * US + MSI_PS)]
    assert table.is_pending(2) and not table.is_pending(0)
    table.unmask(2, ready_ps=7 * US)
    env.run()
    assert host.got[-1] == (2, 7 * US + MSI_PS)


@pytest.mark.parametrize("call", [
    lambda t: t.fire(4), lambda t: t.fire(-1), lambda t: t.mask(7), lambda t: t.unmask(99),
    lambda t: t.event(4, 0), lambda t: t.disable(1.5), lambda t: t.program(4, 0, 0),
])
def test_bad_vector(call):
    _, _, _, table = make(vectors=4)
    with pytest.raises(ValueError, match=r"out of range: this function has 4 vectors, 0 to 3"):
        call(table)


def test_bad_parameters():
    env = simpy.Environment()
    with pytest.raises(ValueError, match="between 1 and 2048"):
        MsixTable(env, FakeLink(env), 0, print)
    with pytest.raises(ValueError, match="frames"):
        Moderation(frames=-1)
    with pytest.raises(ValueError, match="usecs"):
        Moderation(usecs=-2)


def feed(env, table, vector, times, count=1):
    """Report an event at each time, as a device process would."""
    def run():
        for t in times:
            yield env.timeout(t - env.now)
            table.event(vector, env.now, count)
    env.process(run())


@pytest.mark.parametrize("moderation", [None, Moderation(1, 0), Moderation(0, 0)])
def test_no_moderation_interrupts_per_event(moderation):
    env, _, host, table = make(moderation=moderation)
    feed(env, table, 0, [i * US for i in range(10)])
    env.run()
    assert host.got == [(0, i * US + MSI_PS) for i in range(10)]
    assert table.coalesced[0] == 0 and table.fired[0] == 10


def test_moderation_by_frames():
    env, _, host, table = make(moderation=Moderation(frames=4))
    feed(env, table, 1, [i * US for i in range(100)])
    env.run()
    assert table.fired[1] == 25 and len(host.got) == 25
    # the 4th, 8th, ... event triggers its interrupt
    assert [t for _, t in host.got] == [(4 * k + 3) * US + MSI_PS for k in range(25)]
    assert table.coalesced[1] == 75 and table.events[1] == 100


def test_moderation_by_usecs():
    env, _, host, table = make(moderation=Moderation(frames=0, usecs=10))
    feed(env, table, 0, [i * US for i in range(100)])
    env.run()
    times = [t for _, t in host.got]
    # one interrupt 10 us after the first event of each window: at 10, 20, ..., 100 us
    assert times == [k * 10 * US + MSI_PS for k in range(1, 11)]
    assert table.coalesced[0] == 90


def test_usecs_timer_without_further_events():
    env, _, host, table = make(moderation=Moderation(frames=64, usecs=8))
    feed(env, table, 0, [0, 1 * US, 2 * US])
    env.run()
    assert host.got == [(0, 8 * US + MSI_PS)]
    assert table.coalesced[0] == 2


def test_usecs_window_in_the_future():
    """Device models compute completion times ahead of ``env.now`` (calendar style)."""
    env, _, host, table = make(moderation=Moderation(frames=0, usecs=5))
    scheduled = []
    schedule = env.schedule

    def counting_schedule(event, *args, **kwargs):
        scheduled.append(event)
        schedule(event, *args, **kwargs)

    env.schedule = counting_schedule
    for i in range(12):
        table.event(0, 100 * US + i * US)  # all reported at time 0
    env.run()
    # windows [100, 105) and [105, 110) close as later events arrive, [110, 115) by its timer
    assert host.got == [(0, 105 * US + MSI_PS), (0, 110 * US + MSI_PS),
                        (0, 115 * US + MSI_PS)]
    # one timer, woken once early and moved on to the last deadline, plus three deliveries
    assert len(scheduled) == 5


def test_both_thresholds():
    env, _, host, table = make(moderation=Moderation(frames=8, usecs=20))
    burst = [i * 100 * NS for i in range(16)]  # 16 events in 1.6 us: frames wins twice
    sparse = [100 * US + i * 5 * US for i in range(3)]  # 3 events 5 us apart: the timer wins
    feed(env, table, 2, burst + sparse)
    env.run()
    assert [t for _, t in host.got] == [700 * NS + MSI_PS, 1500 * NS + MSI_PS,
                                        120 * US + MSI_PS]
    assert table.fired[2] == 3 and table.coalesced[2] == 19 - 3


def test_batched_events_count_packets():
    env, _, host, table = make(moderation=Moderation(frames=32, usecs=50))
    feed(env, table, 0, [0, 1 * US, 2 * US, 3 * US], count=10)
    env.run()
    assert [t for _, t in host.got] == [3 * US + MSI_PS]  # 40 packets >= 32 at the 4th batch
    assert table.coalesced[0] == 39


def test_per_vector_moderation():
    env, _, host, table = make(moderation=Moderation(frames=4))
    table.set_moderation(3, Moderation(frames=1))
    assert table.moderation(3) == Moderation(1, 0)
    assert table.moderation(0) == Moderation(4, 0)
    feed(env, table, 0, [i * US for i in range(8)])
    feed(env, table, 3, [i * US for i in range(8)])
    env.run()
    assert table.fired == [2, 0, 0, 8]


def test_disable_and_enable():
    env, _, host, table = make()
    table.event(0, 0)
    env.run()
    assert host.got == [(0, MSI_PS)]
    table.disable(0)  # the driver's NAPI poll starts
    for t in range(1, 6):
        table.event(0, t * US)
    env.run(until=10 * US)
    assert len(host.got) == 1 and not table.is_enabled(0)
    assert table.enable(0) == 10 * US + MSI_PS  # outstanding events: fires right away
    env.run()
    assert host.got[-1] == (0, 10 * US + MSI_PS)
    assert table.coalesced[0] == 4
    assert table.enable(0) is None  # nothing outstanding now


def test_enable_with_nothing_outstanding_stays_quiet():
    env, _, host, table = make(moderation=Moderation(frames=0, usecs=10))
    table.event(1, 0)
    table.disable(1)  # before the window's timer: the timer must not fire while disabled
    env.run(until=50 * US)
    assert host.got == []
    assert table.enable(1, discard_outstanding=True) is None  # the poll handled the event
    env.run()
    assert host.got == [] and table.coalesced[1] == 1
    table.event(1, 60 * US)  # moderation resumes after enabling
    env.run()
    assert host.got == [(1, 70 * US + MSI_PS)]


def test_disabled_then_masked():
    env, _, host, table = make()
    table.disable(0)
    table.event(0, 0)
    table.mask(0)
    assert table.enable(0) is None  # the message goes pending behind the mask
    assert table.is_pending(0)
    table.unmask(0, ready_ps=2 * US)
    env.run()
    assert host.got == [(0, 2 * US + MSI_PS)]
