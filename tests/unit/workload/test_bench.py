"""The bench's stand-in pretraining data: disjoint from the sample both recipes use."""

from __future__ import annotations

from pathlib import Path

import pytest
from transfer_learning.bench import stand_in_folder
from transfer_learning.cli import build_parser
from transfer_learning.data import limit_split, make_digits, scan_folder
from transfer_learning.errors import WorkloadError


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_digits(tmp_path_factory.mktemp("digits") / "digits", size=8)


def test_bench_defaults_to_auto_weights() -> None:
    args = build_parser().parse_args(["bench"])
    assert (args.weights, args.stand_in_epochs, args.limit) == ("auto", 3, 192)


def test_stand_in_folder_is_disjoint_from_the_bench_sample(digits: Path, tmp_path: Path) -> None:
    root = stand_in_folder(digits, 100, 0, tmp_path / "stand-in")
    folder, pool = scan_folder(digits), scan_folder(root)
    assert pool.classes == folder.classes
    for split, seed in (("train", 0), ("val", 1)):
        sample = set(limit_split(getattr(folder, split), 100, seed).paths)
        used = {p.resolve() for p in getattr(pool, split).paths}
        assert not used & sample
        assert len(used) == len(getattr(folder, split).paths) - 100


def test_stand_in_needs_images_outside_the_sample(digits: Path, tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="smaller --limit"):
        stand_in_folder(digits, None, 0, tmp_path / "stand-in")


def test_headline_is_end_to_end_wall_time_median_of_repeats(
    digits: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transfer_learning import bench

    walls = {"baseline": iter([30.0, 10.0, 20.0] * 2), "ours": iter([5.0, 4.0, 100.0] * 2)}

    def fake(name: str, rate: float) -> object:
        def run(*args: object, **kwargs: object) -> dict[str, float]:
            return {"wall_time_s": next(walls[name]), "images_per_s": rate, "final_val_acc": 0.5}

        return run

    monkeypatch.setattr(bench, "tutorial_run", fake("baseline", 10.0))
    monkeypatch.setattr(bench, "ours_run", fake("ours", 40.0))
    report = bench.bench(str(digits), weights="none", device_name="cpu", repeats=3)
    r = report["finetune"]
    assert len(r["runs"]["ours"]) == 3
    assert r["baseline"]["wall_time_s"] == {"median": 20.0, "min": 10.0, "max": 30.0}
    assert r["wall_time_speedup"] == 20.0 / 5.0  # medians: one slow outlier does not count
    assert r["steady_throughput_ratio"] == 4.0
    table = bench.format_table(report)
    assert "median [min-max] of 3 runs" in table and "20.0 [10.0-30.0]" in table
    assert "steady train img/s" in table
