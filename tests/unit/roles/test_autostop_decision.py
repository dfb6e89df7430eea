"""The auto-stop decision as a pure function: every signal combination, the idle clock,
the unreadable case, the action rules and the hard limit."""

from __future__ import annotations

import itertools

import pytest

from .autostop_support import load

agent, hard = load()
A, D, U, X = agent.ACTIVE, agent.IDLE, agent.UNREADABLE, agent.ABSENT
SIGNALS = ("jupyter", "runs", "gpu", "ssh")
NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC
MIN = 60.0


def policy(**over) -> dict:
    base = {
        "target": "aws",
        "action": "stop",
        "poweroff_behavior": "stop",
        "terminate_unfetched": False,
        "idle_seconds": 30 * MIN,
        "max_seconds": 12 * 3600.0,
        "warn_seconds": 5 * MIN,
    }
    return dict(base, **over)


@pytest.mark.parametrize("states", list(itertools.product((A, D, U, X), repeat=4)))
def test_every_signal_combination(states: tuple[str, ...]) -> None:
    """Idle for an hour by the clock: any active or unreadable signal keeps it up."""
    readings = [agent.Reading(s, st, detail="d") for s, st in zip(SIGNALS, states, strict=True)]
    out = agent.decide(readings, NOW, NOW - 60 * MIN, NOW - 3 * 3600, policy())
    keeps_up = A in states or U in states
    assert out["verdict"] == ("active" if keeps_up else "act")
    assert out["last_active"] == (NOW if keeps_up else NOW - 60 * MIN)
    for name, state in zip(SIGNALS, states, strict=True):
        if state == U:
            assert any(
                r.startswith(f"{name} unreadable (counts as activity)") for r in out["reasons"]
            )
        if state == A:
            assert any(r.startswith(f"{name} active") for r in out["reasons"])


@pytest.mark.parametrize(
    ("idle_minutes", "verdict"),
    [(0, "idle"), (24.9, "idle"), (25, "warn"), (29.9, "warn"), (30, "act"), (300, "act")],
)
def test_the_idle_clock_warns_then_acts(idle_minutes: float, verdict: str) -> None:
    readings = [agent.Reading(s, D) for s in SIGNALS]
    out = agent.decide(readings, NOW, NOW - idle_minutes * MIN, None, policy())
    assert out["verdict"] == verdict
    assert out["act_at"] == NOW - idle_minutes * MIN + 30 * MIN


def test_activity_a_signal_saw_restarts_the_clock() -> None:
    """A kernel that ran 10 min ago (its last_activity) is 10 min idle, not 60."""
    readings = [
        agent.Reading("jupyter", D, NOW - 10 * MIN),
        agent.Reading("runs", D, NOW - 50 * MIN),
    ]
    out = agent.decide(readings, NOW, NOW - 60 * MIN, None, policy())
    assert (out["verdict"], out["idle_for"]) == ("idle", 10 * MIN)


def test_a_dead_run_is_idle_from_its_last_heartbeat() -> None:
    """A run alive within its heartbeat tolerance keeps the workbench up, but its activity
    is its last heartbeat: once it stops beating, the window counts from that beat, not
    from the last tick that still believed it (the tolerance must not add to the stop lag)."""
    beat = NOW - 100.0  # within a 120 s tolerance
    alive = agent.Reading("runs", A, beat, "running: r1", seen_at=beat)
    out = agent.decide([alive], NOW, NOW - 200.0, None, policy(idle_seconds=300.0))
    assert (out["verdict"], out["last_active"]) == ("active", beat)
    # The next tick sees the heartbeat stale: idle since the beat, not since NOW.
    later = NOW + 250.0
    dead = agent.Reading("runs", D, beat, "stale heartbeat")
    out = agent.decide([dead], later, out["last_active"], None, policy(idle_seconds=300.0))
    assert (out["verdict"], out["idle_for"]) == ("act", 350.0)


def test_jupyter_starting_holds_the_stop_but_counts_from_the_start() -> None:
    """Nothing answers yet just after the container started: the agent does not act, and
    the idle clock runs from the start, not from each tick that saw Jupyter starting."""
    started = NOW - 20.0
    starting = agent.Reading("jupyter", agent.STARTING, detail="starting", seen_at=started)
    out = agent.decide([starting], NOW, started, started, policy(idle_seconds=12.0))
    assert (out["verdict"], out["last_active"]) == ("active", started)
    assert out["reasons"] == ["jupyter starting: starting"]
    answered = agent.Reading("jupyter", D, None, "0 kernel(s)")
    out = agent.decide([answered], NOW + 1, out["last_active"], started, policy(idle_seconds=12.0))
    assert (out["verdict"], out["idle_for"]) == ("act", 21.0)


def test_a_restart_gives_a_full_window() -> None:
    """The workbench started 5 min ago (boot or container start): 5 min idle, whatever the
    agent's state file says from before."""
    out = agent.decide([agent.Reading("ssh", D)], NOW, NOW - 600 * MIN, NOW - 5 * MIN, policy())
    assert (out["verdict"], out["idle_for"]) == ("idle", 5 * MIN)


def test_a_fresh_agent_gives_a_full_window() -> None:
    out = agent.decide([agent.Reading("ssh", D)], NOW, None, None, policy())
    assert (out["verdict"], out["idle_for"]) == ("idle", 0)


def test_a_clock_in_the_future_is_not_negative_idle() -> None:
    out = agent.decide([agent.Reading("runs", D, NOW + 99)], NOW, None, None, policy())
    assert out["idle_for"] == 0


def test_idle_minutes_zero_turns_the_idle_stop_off() -> None:
    out = agent.decide(
        [agent.Reading("ssh", D)], NOW, NOW - 999 * MIN, None, policy(idle_seconds=0)
    )
    assert out["verdict"] == "off"
    assert out["act_at"] is None


# ---------------------------------------------------------------- the action


@pytest.mark.parametrize(
    ("target", "action", "behavior", "unfetched", "force", "expected"),
    [
        ("local", "stop", "stop", [], False, "stop"),
        ("local", "terminate", "terminate", ["r1"], False, "stop"),
        ("aws", "stop", "stop", ["r1"], False, "stop"),
        ("aws", "terminate", "stop", ["r1"], False, "stop"),  # cannot terminate from inside
        ("aws", "stop", "terminate", [], False, "refuse"),  # powering off would terminate
        ("aws", "terminate", "terminate", [], False, "terminate"),
        ("aws", "terminate", "terminate", ["r1"], False, "refuse"),  # outputs not fetched
        ("aws", "terminate", "terminate", ["r1"], True, "terminate"),  # told otherwise
    ],
)
def test_resolve_action(target, action, behavior, unfetched, force, expected) -> None:
    got, why = hard.resolve_action(
        policy(target=target, action=action, poweroff_behavior=behavior, terminate_unfetched=force),
        unfetched,
    )
    assert got == expected
    if expected == "refuse" and unfetched:
        assert "r1" in why and "not fetched" in why


STOP_COMMAND = ["python3", "wyvern_durable.py", "--config", "d.json", "--stop-instance"]


@pytest.mark.parametrize(
    ("target", "action", "behavior", "unfetched", "force", "expected"),
    [
        # Where the instance may stop itself, every refusal becomes a stop through the API.
        ("aws", "stop", "terminate", [], False, "stop-api"),
        ("aws", "terminate", "terminate", ["r1"], False, "stop-api"),
        # Everything else is as without it.
        ("aws", "terminate", "terminate", [], False, "terminate"),
        ("aws", "terminate", "terminate", ["r1"], True, "terminate"),
        ("aws", "stop", "stop", ["r1"], False, "stop"),
        ("aws", "terminate", "stop", ["r1"], False, "stop"),
        ("local", "terminate", "terminate", ["r1"], False, "stop"),
    ],
)
def test_an_instance_that_may_stop_itself_stops_instead_of_refusing(
    target, action, behavior, unfetched, force, expected
) -> None:
    got, why = hard.resolve_action(
        policy(
            target=target,
            action=action,
            poweroff_behavior=behavior,
            terminate_unfetched=force,
            stop_command=STOP_COMMAND,
        ),
        unfetched,
    )
    assert got == expected, why
    if expected == "stop-api":
        assert "stops instead" in why
        if unfetched:
            assert "r1" in why and "not fetched" in why


def test_the_hard_limit_stops_instead_of_terminating_unfetched_outputs() -> None:
    p = policy(action="terminate", poweroff_behavior="terminate", stop_command=STOP_COMMAND)
    assert hard.decide_hard(p, NOW, NOW - 13 * 3600, ["run-1"])[:2] == (True, "stop-api")
    assert hard.decide_hard(p, NOW, NOW - 13 * 3600, [])[:2] == (True, "terminate")


# ---------------------------------------------------------------- the hard limit


@pytest.mark.parametrize(
    ("hours_up", "max_hours", "act"),
    [(11.9, 12, False), (12, 12, True), (40, 12, True), (40, 0, False)],
)
def test_hard_limit(hours_up: float, max_hours: float, act: bool) -> None:
    started = NOW - hours_up * 3600
    got, action, _ = hard.decide_hard(policy(max_seconds=max_hours * 3600), NOW, started, [])
    assert (got, action) == ((True, "stop") if act else (False, "none"))


def test_hard_limit_refuses_to_terminate_unfetched_outputs() -> None:
    p = policy(action="terminate", poweroff_behavior="terminate")
    assert hard.decide_hard(p, NOW, NOW - 13 * 3600, ["run-1"])[:2] == (False, "refuse")
    assert hard.decide_hard(p, NOW, NOW - 13 * 3600, [])[:2] == (True, "terminate")


def test_hard_limit_without_a_start_time_does_not_act() -> None:
    assert hard.decide_hard(policy(), NOW, None, [])[0] is False


# ---------------------------------------------------------------- the policy line


def test_policy_text() -> None:
    started = NOW - 6 * 3600 + 5 * MIN  # 02:05 UTC, so 14:05 UTC with 12 h
    assert (
        agent.policy_text(policy(), started, NOW)
        == "stops after 30 min idle; hard stop at 14:05 UTC"
    )
    assert (
        agent.policy_text(policy(idle_seconds=0, max_seconds=0), started, NOW)
        == "idle auto-stop off; no hard limit"
    )
    text = agent.policy_text(
        policy(action="terminate", poweroff_behavior="terminate"), started, NOW
    )
    assert text == "terminates after 30 min idle; hard terminate at 14:05 UTC"
    may_stop = agent.policy_text(
        policy(action="terminate", poweroff_behavior="terminate", stop_command=STOP_COMMAND),
        started,
        NOW,
    )
    assert may_stop == (
        "terminates after 30 min idle (stops instead while outputs are not fetched); "
        "hard terminate at 14:05 UTC"
    )
    asked_to_stop = agent.policy_text(
        policy(action="stop", poweroff_behavior="terminate", stop_command=STOP_COMMAND),
        started,
        NOW,
    )
    assert asked_to_stop == "stops after 30 min idle; hard stop at 14:05 UTC"
    tomorrow = agent.policy_text(policy(max_seconds=30 * 3600), started, NOW)
    assert tomorrow.endswith("hard stop at 2027-01-16 08:05 UTC")
