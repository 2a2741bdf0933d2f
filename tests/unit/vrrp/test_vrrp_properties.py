"""Random fault sequences on the fake link: invariants after every input, one master once faults stop."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st
from vrrp_sim import Link, router_config

from dsrlb.vrrp.machine import State, VrrpRouter


@dataclass(frozen=True)
class Fault:
    at: float
    kind: str  # isolate, mute, heal, delay, shutdown, start, crash, priority
    node: int
    value: float


@dataclass(frozen=True)
class Scenario:
    version: int
    family: int
    interval: float
    priorities: tuple[int, ...]
    preempt: tuple[bool, ...]
    preempt_delay: tuple[float, ...]
    faults: tuple[Fault, ...]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(2, 3))
    family = draw(st.sampled_from([4, 6]))
    version = 3 if family == 6 else draw(st.sampled_from([2, 3]))
    interval = 1.0 if version == 2 else draw(st.sampled_from([0.5, 1.0, 1.5]))
    faults = draw(st.lists(st.builds(
        Fault, st.floats(0.0, 40.0, allow_nan=False).map(lambda t: round(t, 3)),
        st.sampled_from(["isolate", "mute", "heal", "delay", "shutdown", "start", "crash", "priority"]),
        st.integers(0, n - 1), st.floats(0.0, 1.0, allow_nan=False)), max_size=15))
    return Scenario(
        version, family, interval,
        tuple(draw(st.lists(st.integers(1, 255), min_size=n, max_size=n))),
        tuple(draw(st.lists(st.booleans(), min_size=n, max_size=n))),
        tuple(draw(st.lists(st.sampled_from([0.0, 0.0, 3.0]), min_size=n, max_size=n))),
        tuple(sorted(faults, key=lambda f: f.at)),
    )


class Invariants:
    """Checked after every input of every router."""

    def __init__(self) -> None:
        # by id() of the router (a restart is a new one), holding it so that its id is not reused
        self.counters: dict[int, tuple[VrrpRouter, dict[str, int]]] = {}

    def __call__(self, link: Link) -> None:
        for i, r in enumerate(link.routers):
            assert r.state in (State.INITIALIZE, State.BACKUP, State.MASTER)
            assert (r.next_deadline is None) == (r.state is State.INITIALIZE)
            if i not in link.dead and r.next_deadline is not None:
                # never left behind: the loop calls timer() at the deadline, which moves it on
                assert r.next_deadline >= link.now
            assert (r.master_address == r.config.primary_address) == (r.state is State.MASTER)
            now, (_, before) = r.counters, self.counters.get(id(r), (r, None))
            if before is not None:
                assert now.keys() == before.keys()
                assert all(now[k] >= v for k, v in before.items())  # counters only grow
            self.counters[id(r)] = (r, now)


def apply(link: Link, fault: Fault, n: int) -> None:
    match fault.kind:
        case "isolate":
            link.partition([fault.node], [i for i in range(n) if i != fault.node])
        case "mute":
            link.muted.add(fault.node)
        case "heal":
            link.heal()
            link.muted.clear()
        case "delay":
            link.delay = 0.0005 + fault.value * 0.2
        case "shutdown":
            link.shutdown(fault.node)
        case "start":
            link.start(fault.node)
        case "crash":
            link.crash(fault.node)
        case "priority":
            link.set_priority(fault.node, 1 + round(fault.value * 254))


@given(scenarios())
@settings(max_examples=300, deadline=None)
def test_random_faults_keep_the_invariants_and_end_with_one_master(s: Scenario) -> None:
    n = len(s.priorities)
    link = Link.of([router_config(i + 1, priority=s.priorities[i], version=s.version, family=s.family,
                                  advert_interval=s.interval, preempt=s.preempt[i],
                                  preempt_delay=s.preempt_delay[i]) for i in range(n)], delay=0.001)
    link.on_step = Invariants()
    link.start()
    for fault in s.faults:
        link.run_until(fault.at)
        apply(link, fault, n)
    # the faults stop: the link heals, the delay is small again, crashed routers stay dead
    end_of_faults = link.now
    link.heal()
    link.muted.clear()
    link.delay = 0.001
    link.run_until(end_of_faults + 60.0)
    running = [i for i in link.live() if link.routers[i].state is not State.INITIALIZE]
    if not running:
        return
    masters = link.masters()
    assert len(masters) == 1
    master = link.routers[masters[0]]
    # a preempting router outranks no master for long; a non-preempting one may stay below it
    assert all(master.priority >= link.routers[i].priority for i in running if link.routers[i].config.preempt)
    for i in running:
        if i != masters[0]:
            assert link.routers[i].master_address == master.config.primary_address
