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
