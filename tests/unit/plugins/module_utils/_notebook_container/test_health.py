"""Jupyter health with a fake clock: answers, timeouts, exits, refused tokens, crash loops."""

from __future__ import annotations

import pytest
from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_container import (
    common,
    health,
)

from .helpers import (
    FakeClock,
)

TOKEN = "s3cr3t-" + "x" * 36


def test_health_waits_until_jupyter_answers() -> None:
    clock = FakeClock()
    answers = iter([None, None, 503, 200])
    waited = health.wait_healthy(
        "http://127.0.0.1:1",
        "tok",
        lambda: health.ContainerState("running"),
        10,
        0.5,
        clock,
        clock.sleep,
        lambda u, t: next(answers),
    )
    assert waited == pytest.approx(1.5)


def test_health_times_out_with_the_last_status() -> None:
    clock = FakeClock()
    with pytest.raises(
        common.NotebookError, match=r"did not answer within 3s \(last status None\)"
    ):
        health.wait_healthy(
            "http://x",
            "tok",
            lambda: health.ContainerState("running"),
            3,
            0.5,
            clock,
            clock.sleep,
            lambda u, t: None,
        )
    assert clock.now == pytest.approx(103.0)


def test_health_stops_when_the_container_exits() -> None:
    clock = FakeClock()
    states = iter([health.ContainerState("running"), health.ContainerState("exited", exit_code=3)])
    with pytest.raises(common.NotebookError, match="exited during start"):
        health.wait_healthy(
            "http://x", "t", lambda: next(states), 60, 0.5, clock, clock.sleep, lambda u, t: None
        )
    assert clock.now == pytest.approx(100.5)


def test_health_reports_a_refused_token() -> None:
    clock = FakeClock()
    with pytest.raises(common.NotebookError, match="refused the token"):
        health.wait_healthy(
            "http://x",
            "t",
            lambda: health.ContainerState("running"),
            60,
            0.5,
            clock,
            clock.sleep,
            lambda u, t: 403,
        )


def test_a_restart_loop_is_found_within_a_poll_or_two() -> None:
    clock = FakeClock()
    states = iter(
        [
            health.ContainerState("running"),
            health.ContainerState("running", restart_count=1, exit_code=0),  # restarted, starting
            health.ContainerState("restarting", restart_count=1, exit_code=3),  # crashed again
        ]
    )
    with pytest.raises(health.CrashLoop) as failure:
        health.wait_healthy(
            "http://x", "t", lambda: next(states), 180, 0.2, clock, clock.sleep, lambda u, t: None
        )
    assert clock.now - 100.0 < 1.0
    text = str(failure.value)
    assert "crash loop, not a slow start" in text and "exit code 3" in text
    assert "raise the timeout" not in text


def test_a_restarting_state_is_a_crash_loop_and_oom_is_named() -> None:
    clock = FakeClock()
    oom = health.ContainerState("restarting", restart_count=0, exit_code=137, oom_killed=True)
    with pytest.raises(health.CrashLoop, match="OOMKilled"):
        health.wait_healthy(
            "http://x", "t", lambda: oom, 180, 0.2, clock, clock.sleep, lambda u, t: None
        )


def test_one_restart_that_then_answers_is_healthy() -> None:
    clock = FakeClock()
    answers = iter([None, None, None, 200])
    restarted = health.ContainerState("running", restart_count=1, exit_code=0)
    waited = health.wait_healthy(
        "http://x", "t", lambda: restarted, 180, 0.5, clock, clock.sleep, lambda u, t: next(answers)
    )
    assert waited == pytest.approx(1.5)


def test_a_timeout_says_the_container_is_left_running() -> None:
    clock = FakeClock()
    with pytest.raises(common.NotebookError) as failure:
        health.wait_healthy(
            "http://x",
            "t",
            lambda: health.ContainerState("running"),
            3,
            0.5,
            clock,
            clock.sleep,
            lambda u, t: None,
        )
    assert "the container is left running" in str(failure.value)
    assert "state: absent" in str(failure.value)
