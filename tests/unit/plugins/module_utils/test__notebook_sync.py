"""The two-way notebook sync planner: every case of (control node, workbench, last sync)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_sync import (
    Conflict,
    Kept,
    conflict_name,
    is_ignored,
    plan_strays,
    plan_sync,
    scan,
    sha256_file,
)

STAMP = "20261127-080000"
A, B, C = "a" * 64, "b" * 64, "c" * 64


def plan(local, remote, base):
    return plan_sync(local, remote, base, STAMP)


def test_unchanged_file_is_in_sync_and_nothing_moves() -> None:
    result = plan({"x.ipynb": A}, {"x.ipynb": A}, {"x.ipynb": A})
    assert not result.changed
    assert result.in_sync == ["x.ipynb"]
    assert result.state == {"x.ipynb": A}


def test_changed_on_control_node_only_is_pushed() -> None:
    result = plan({"x.ipynb": B}, {"x.ipynb": A}, {"x.ipynb": A})
    assert (result.push, result.pull, result.conflicts) == (["x.ipynb"], [], [])
    assert result.state == {"x.ipynb": B}


def test_changed_on_workbench_only_is_pulled() -> None:
    result = plan({"x.ipynb": A}, {"x.ipynb": B}, {"x.ipynb": A})
    assert (result.push, result.pull, result.conflicts) == ([], ["x.ipynb"], [])
    assert result.state == {"x.ipynb": B}


def test_changed_on_both_sides_to_the_same_content_is_in_sync() -> None:
    result = plan({"x.ipynb": B}, {"x.ipynb": B}, {"x.ipynb": A})
    assert not result.changed
    assert result.state == {"x.ipynb": B}


def test_changed_on_both_sides_differently_is_a_conflict_keeping_both() -> None:
    result = plan({"x.ipynb": B}, {"x.ipynb": C}, {"x.ipynb": A})
    copy = f"x.remote-conflict-{STAMP}.ipynb"
    assert result.conflicts == [Conflict("x.ipynb", copy)]
    # Nothing is pushed or pulled over either version: both survive, named apart.
    assert (result.push, result.pull, result.delete_local, result.delete_remote) == (
        [],
        [],
        [],
        [],
    )
    assert result.state == {"x.ipynb": B, copy: C}
    assert result.changed


def test_deleted_on_control_node_unchanged_on_workbench_is_deleted_there() -> None:
    result = plan({}, {"x.ipynb": A}, {"x.ipynb": A})
    assert result.delete_remote == ["x.ipynb"]
    assert result.state == {}


def test_deleted_on_workbench_unchanged_on_control_node_is_deleted_here() -> None:
    result = plan({"x.ipynb": A}, {}, {"x.ipynb": A})
    assert result.delete_local == ["x.ipynb"]
    assert result.state == {}


def test_deleted_on_control_node_but_changed_on_workbench_is_kept_and_reported() -> None:
    result = plan({}, {"x.ipynb": B}, {"x.ipynb": A})
    assert result.delete_remote == [] and result.pull == ["x.ipynb"]
    assert result.kept == [Kept("x.ipynb", "control node")]
    assert result.state == {"x.ipynb": B}


def test_deleted_on_workbench_but_changed_on_control_node_is_kept_and_reported() -> None:
    result = plan({"x.ipynb": B}, {}, {"x.ipynb": A})
    assert result.delete_local == [] and result.push == ["x.ipynb"]
    assert result.kept == [Kept("x.ipynb", "workbench")]
    assert result.state == {"x.ipynb": B}


def test_deleted_on_both_sides_is_forgotten() -> None:
    result = plan({}, {}, {"x.ipynb": A})
    assert not result.changed
    assert result.state == {}


def test_new_on_one_side_is_copied_over() -> None:
    result = plan({"new.ipynb": A}, {"made-there.ipynb": B}, {})
    assert result.push == ["new.ipynb"] and result.pull == ["made-there.ipynb"]
    assert result.state == {"new.ipynb": A, "made-there.ipynb": B}


def test_new_on_both_sides_identical_is_in_sync() -> None:
    result = plan({"x.ipynb": A}, {"x.ipynb": A}, {})
    assert not result.changed and result.state == {"x.ipynb": A}


def test_new_on_both_sides_different_is_a_conflict() -> None:
    result = plan({"x.ipynb": A}, {"x.ipynb": B}, {})
    assert [c.path for c in result.conflicts] == ["x.ipynb"]


def test_first_sync_without_state_never_deletes() -> None:
    # No record of a last sync (new workbench, state lost): one-sided files are copies.
    result = plan({"only-here.ipynb": A}, {"only-there.ipynb": B}, None)
    assert result.delete_local == [] and result.delete_remote == []
    assert result.push == ["only-here.ipynb"] and result.pull == ["only-there.ipynb"]


def test_ignored_files_are_neither_synced_nor_kept_in_state() -> None:
    local = {
        ".ipynb_checkpoints/x-checkpoint.ipynb": A,
        "sub/.ipynb_checkpoints/y-checkpoint.ipynb": A,
        "__pycache__/m.cpython-311.pyc": A,
        ".~x.ipynb": A,
        ".git/HEAD": A,
    }
    remote = {".Trash-1000/files/x.ipynb": B, ".virtual_documents/x.py": B}
    result = plan(local, remote, {".ipynb_checkpoints/x-checkpoint.ipynb": C})
    assert not result.changed
    assert result.state == {} and result.in_sync == []


def test_files_in_subfolders_keep_their_path() -> None:
    result = plan({"course/week1/a.ipynb": A}, {}, {})
    assert result.push == ["course/week1/a.ipynb"]


def test_conflict_copy_is_named_beside_the_file_and_never_reuses_a_name() -> None:
    assert conflict_name("x.ipynb", STAMP) == f"x.remote-conflict-{STAMP}.ipynb"
    assert conflict_name("d/e/x.ipynb", STAMP) == f"d/e/x.remote-conflict-{STAMP}.ipynb"
    assert conflict_name("Makefile", STAMP) == f"Makefile.remote-conflict-{STAMP}"
    assert conflict_name(".env", STAMP) == f".env.remote-conflict-{STAMP}"
    taken = {f"x.remote-conflict-{STAMP}.ipynb"}
    assert conflict_name("x.ipynb", STAMP, taken) == f"x.remote-conflict-{STAMP}-2.ipynb"
    # A conflict copy that already exists on one side is never overwritten.
    result = plan(
        {"x.ipynb": B, f"x.remote-conflict-{STAMP}.ipynb": A},
        {"x.ipynb": C, f"x.remote-conflict-{STAMP}.ipynb": A},
        {"x.ipynb": A, f"x.remote-conflict-{STAMP}.ipynb": A},
    )
    assert result.conflicts == [Conflict("x.ipynb", f"x.remote-conflict-{STAMP}-2.ipynb")]


def test_after_a_conflict_the_next_sync_moves_nothing() -> None:
    first = plan({"x.ipynb": B}, {"x.ipynb": C}, {"x.ipynb": A})
    (conflict,) = first.conflicts
    # Carried out: both sides hold both versions.
    both = {"x.ipynb": B, conflict.copy: C}
    second = plan(both, both, first.state)
    assert not second.changed


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        (".ipynb_checkpoints/x-checkpoint.ipynb", True),
        ("a/b/.ipynb_checkpoints/x.ipynb", True),
        (".~x.ipynb", True),
        ("x.ipynb", False),
        ("checkpoints.ipynb", False),
        (f"x.remote-conflict-{STAMP}.ipynb", False),
    ],
)
def test_is_ignored(path: str, ignored: bool) -> None:
    assert is_ignored(path) is ignored


def test_plan_strays_fetches_only_new_or_changed() -> None:
    assert plan_strays({"u.ipynb": A, "v.ipynb": B, "w.txt": C}, {"u.ipynb": A, "v.ipynb": A}) == [
        "v.ipynb",
        "w.txt",
    ]


def test_scan_hashes_files_skips_ignored_pruned_and_links(tmp_path: Path) -> None:
    (tmp_path / "sub" / ".ipynb_checkpoints").mkdir(parents=True)
    (tmp_path / "x.ipynb").write_text("x")
    (tmp_path / "sub" / "y.ipynb").write_text("y")
    (tmp_path / "sub" / ".ipynb_checkpoints" / "y-checkpoint.ipynb").write_text("old")
    (tmp_path / "workload").mkdir()
    (tmp_path / "workload" / "big.bin").write_text("no")
    os.symlink("/etc/passwd", tmp_path / "link.txt")
    os.symlink(tmp_path / "sub", tmp_path / "linkdir")
    found = scan(str(tmp_path), prune=["workload"])
    assert found == {
        "x.ipynb": sha256_file(str(tmp_path / "x.ipynb")),
        "sub/y.ipynb": sha256_file(str(tmp_path / "sub" / "y.ipynb")),
    }
    assert found["x.ipynb"] == "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
    assert scan(str(tmp_path / "missing")) == {}
