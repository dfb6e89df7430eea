"""The runs page (module_utils/_runs_page.py) over run directories laid out as run.yml fetches them."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

from ansible_collections.wyvern.workbench.plugins.module_utils import _runs_page as rp

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


def make_run(
    root: Path,
    host: str = "localhost",
    workbench: str = "workbench",
    run_id: str = "finetune-0123456789",
    *,
    acc: float = 0.9,
    end: str = "2026-11-27T05:15:02.123456+00:00",
    parameters: dict | None = None,
    device: str = "cpu",
    gpus: list[str] | None = None,
) -> Path:
    run = root / host / workbench / run_id
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(
        json.dumps(
            {
                "device": device,
                "epochs": [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}],
                "best_val_acc": acc,
                "best_epoch": 2,
                "images_per_s": 13.25,
                "wall_time_s": 3600.0,
            }
        )
    )
    (run / "environment.json").write_text(
        json.dumps({"gpus": gpus or [], "arguments": {"epochs": 9, "output_dir": "/x"}})
    )
    notebook = {
        "cells": [],
        "metadata": {
            "papermill": {
                "parameters": parameters
                if parameters is not None
                else {"epochs": 3, "run_id": run_id, "output_dir": "/workspace/outputs"},
                "end_time": end,
            }
        },
    }
    (run / "transfer_learning.ipynb").write_text(json.dumps(notebook))
    (run / "curves.png").write_bytes(PNG)
    (run / "confusion.png").write_bytes(PNG)
    return run


class Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> Collector:
    collector = Collector()
    collector.feed(page)
    return collector


def test_every_fetched_run_is_found_newest_first_and_nothing_else(tmp_path: Path) -> None:
    make_run(tmp_path, run_id="old", end="2026-11-20T10:00:00+00:00")
    make_run(tmp_path, "ec2-host", "gpu-box", "new", end="2026-11-27T10:00:00+00:00")
    (tmp_path / "index.html").write_text("old page")
    (tmp_path / "localhost" / "workbench" / "stray.txt").write_text("not a run")
    (tmp_path / "localhost" / "workbench" / "empty-dir").mkdir()
    (tmp_path / "localhost" / ".hidden" / "run").mkdir(parents=True)
    (tmp_path / "localhost" / ".hidden" / "run" / "metrics.json").write_text("{}")

    runs = rp.collect_runs(tmp_path)

    assert [(r.host, r.workbench, r.run_id) for r in runs] == [
        ("ec2-host", "gpu-box", "new"),
        ("localhost", "workbench", "old"),
    ]
    new = runs[0]
    assert new.finished == "2026-11-27T10:00:00Z"
    assert new.best_val_acc == 0.9 and new.best_epoch == 2 and new.epochs == 3
    assert new.images_per_s == 13.25 and new.wall_time_s == 3600.0
    # papermill's parameters (what the user asked for), without the bookkeeping ones.
    assert new.parameters == {"epochs": 3}
    assert new.files["curves.png"] == "ec2-host/gpu-box/new/curves.png"
    assert new.cost_usd is None and new.problems == []


def test_no_outputs_yet_is_an_empty_page_not_an_error(tmp_path: Path) -> None:
    assert rp.collect_runs(tmp_path / "missing") == []
    page = rp.render_html([])
    assert "No runs fetched yet" in page
    assert rp.render_table([])[0].startswith("No runs fetched yet")


def test_cost_is_the_wall_time_at_the_recorded_price(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, gpus=["Tesla T4"], device="cuda:0")
    (run_dir / "cost.json").write_text(rp.cost_record("g4dn.xlarge", 0.526))
    (run,) = rp.collect_runs(tmp_path)
    assert run.cost_usd == 0.526  # one hour of wall time
    assert run.device == "cuda:0 (Tesla T4)"
    page = rp.render_html([run])
    assert "0.526 USD" in page and "g4dn.xlarge at 0.526 USD/h" in page
    assert "0.526 USD" in "\n".join(rp.render_table([run]))


def test_user_text_is_escaped_and_links_are_quoted(tmp_path: Path) -> None:
    hostile = '<script>alert("run")</script>'
    make_run(
        tmp_path,
        run_id='r #1 ?"><img src=x onerror=alert(1)>',
        parameters={"data_dir": hostile, "note": "a & b"},
    )
    (run,) = rp.collect_runs(tmp_path)
    page = rp.render_html([run], title="<b>mine</b>")

    parsed = parse(page)
    tags = [tag for tag, _ in parsed.tags]
    assert "script" not in tags and "b" not in tags
    # The only images are the two plots, and no attribute carries a handler.
    images = [attrs for tag, attrs in parsed.tags if tag == "img"]
    assert len(images) == 2
    assert all(not any(k.startswith("on") for k in attrs) for _, attrs in parsed.tags)
    # Text reads back as the user wrote it.
    text = "".join(parsed.text)
    assert hostile in text and "a & b" in text and "<b>mine</b>" in text
    # Links point at the real directory: quoted, so '#', '?', '"' and spaces survive.
    hrefs = [attrs["href"] for tag, attrs in parsed.tags if tag == "a"]
    assert (
        "localhost/workbench/r%20%231%20%3F%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E/curves.png"
        in hrefs
    )


def test_unfinished_and_broken_runs_are_listed_with_the_problem(tmp_path: Path) -> None:
    partial = tmp_path / "localhost" / "workbench" / "partial"
    partial.mkdir(parents=True)
    (partial / "environment.json").write_text("{}")
    broken = make_run(tmp_path, run_id="broken")
    (broken / "metrics.json").write_text("{not json")

    runs = {r.run_id: r for r in rp.collect_runs(tmp_path)}
    assert "no metrics.json" in runs["partial"].problems[0]
    assert runs["broken"].problems == ["metrics.json is unreadable (JSONDecodeError)"]
    assert runs["broken"].best_val_acc is None
    page = rp.render_html(list(runs.values()))
    assert "metrics.json is unreadable" in page
    assert "no metrics.json" in "\n".join(rp.render_table(list(runs.values())))


def test_an_interrupted_run_shows_its_notices_and_how_to_go_on(tmp_path: Path) -> None:
    # What the durable-outputs agent writes: the latest notice, and every one so far.
    notice = {
        "kind": "instance-action",
        "received_at": "2026-11-27T10:02:03Z",
        "signal": "SIGTERM",
        "checkpoint_saved": True,
    }
    rebalance = {
        **notice,
        "kind": "rebalance",
        "signal": "SIGUSR1",
        "received_at": "2026-11-27T10:00:00Z",
    }
    record = {**notice, "interruptions": [rebalance, notice]}
    # Reclaimed: only the checkpoint, the notice and the progress came home (from S3).
    reclaimed = tmp_path / "i-0abc" / "workbench" / "finetune-reclaimed"
    reclaimed.mkdir(parents=True)
    (reclaimed / "interruption.json").write_text(json.dumps(record))
    (reclaimed / "checkpoint.pt").write_bytes(b"x")
    # Resumed and finished: listed like any run, with its interruption kept.
    resumed = make_run(tmp_path, run_id="finetune-resumed")
    (resumed / "interruption.json").write_text(json.dumps({**notice, "checkpoint_saved": False}))

    runs = {r.run_id: r for r in rp.collect_runs(tmp_path)}
    assert runs["finetune-reclaimed"].interruptions == [
        "rebalance recommendation at 2026-11-27T10:00:00Z, SIGUSR1, checkpoint saved",
        "spot interruption notice at 2026-11-27T10:02:03Z, SIGTERM, checkpoint saved",
    ]
    assert "How to resume" in runs["finetune-reclaimed"].problems[0]
    assert runs["finetune-resumed"].problems == []
    assert runs["finetune-resumed"].interruptions == [
        "spot interruption notice at 2026-11-27T10:02:03Z, SIGTERM, no checkpoint saved"
    ]
    table = "\n".join(rp.render_table(list(runs.values())))
    assert "[interrupted: spot interruption notice at 2026-11-27T10:02:03Z" in table
    page = parse(rp.render_html(list(runs.values())))
    shown = [t for t in page.text if t.startswith("interrupted: ")]
    assert len(shown) == 3, shown
    # A broken record is a problem of that run, not a crash of the page.
    (resumed / "interruption.json").write_text("[1, 2]")
    problems = {r.run_id: r.problems for r in rp.collect_runs(tmp_path)}
    assert problems["finetune-resumed"] == ["interruption.json is not a JSON object"]


def test_the_table_is_aligned_and_keeps_control_characters_off_the_terminal(
    tmp_path: Path,
) -> None:
    make_run(tmp_path, run_id="a", parameters={"data_dir": "x\x1b[31mred"})
    make_run(tmp_path, "a-much-longer-host-name", run_id="b")
    lines = rp.render_table(rp.collect_runs(tmp_path))
    assert lines[0].split()[:3] == ["host", "workbench", "run"]
    # Every column starts where its header does (device: "device" then "cpu").
    column = lines[0].index("device")
    assert all(line[column:].startswith("cpu") for line in lines[1:]), lines
    assert "\x1b" not in "".join(lines) and "x?[31mred" in "".join(lines)


def test_the_same_runs_give_the_same_bytes_and_no_rewrite(tmp_path: Path) -> None:
    make_run(tmp_path)
    page = rp.render_html(rp.collect_runs(tmp_path))
    dest = tmp_path / "index.html"
    assert rp.write_if_changed(dest, page, check_mode=True)
    assert not dest.exists()  # check mode writes nothing
    assert rp.write_if_changed(dest, page)
    assert dest.read_text() == page
    # index.html itself is not a run; the page does not change by being there.
    assert rp.render_html(rp.collect_runs(tmp_path)) == page
    assert not rp.write_if_changed(dest, page)


def test_writers_at_once_leave_one_whole_page_and_no_temporary_file(tmp_path: Path) -> None:
    """The nodes of a workbench write the page at the same time (teardown on every node)."""
    from concurrent.futures import ThreadPoolExecutor

    dest = tmp_path / "index.html"
    pages = [f"<html>{'x' * 100_000}{i}</html>\n" for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        written = list(pool.map(lambda page: rp.write_if_changed(dest, page), pages * 4))
    assert any(written)
    assert dest.read_text() in pages
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html"]
