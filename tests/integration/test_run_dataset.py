"""playbooks/run.yml on the user's own data (run_dataset), against a real notebook container.

A tiny ImageFolder tree on the control node is synced to the workbench and trained on; a
rerun changes nothing; one changed image moves alone and makes a new run; an archive of
the tree is unpacked on the workbench; bad data (missing path, a class missing from val/,
nothing readable, an archive that is not one) stops before papermill starts, naming the
path and the fix. A few minutes on two shared cores (tiny data, one epoch, 32 px).
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

# The fixture that starts a notebook of its own with the repository's playbooks.
from tests.integration.test_run_role import workbench  # noqa: F401
from tests.support.outputs import host_notebook_home, run_outputs_dir
from tests.support.playbook import run_playbook

TINY = {"run_epochs": 1, "run_image_size": 32, "run_batch_size": 8, "run_poll_interval": 1}
CLASSES = {"a": (20, 60, 200), "b": (200, 60, 20), "c": (60, 200, 60)}
PAPERMILL = "Execute the notebook with papermill"


def _image(path: Path, colour: tuple[int, int, int], seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    noise = rng.integers(-30, 30, (24, 24, 3))
    pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
    Image.fromarray(pixels, "RGB").save(path)


def _tree(root: Path) -> Path:
    """3 classes, 6 train and 3 val images each."""
    for k, (name, colour) in enumerate(CLASSES.items()):
        for i in range(6):
            _image(root / "train" / name / f"{i}.png", colour, 100 * k + i)
        for i in range(3):
            _image(root / "val" / name / f"{i}.png", colour, 1000 + 100 * k + i)
    return root


def _record(outputs: Path, run_id: str) -> dict:
    return json.loads((outputs / run_id / "run.json").read_text())


def _run_ids(text: str) -> list[str]:
    return re.findall(r"Run (finetune-[0-9a-f]{10}) on localhost", text)


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_own_data_is_synced_checked_and_names_the_run(
    repo_root: Path,
    ansible_env,
    workbench: dict,  # noqa: F811
    tmp_path: Path,
) -> None:
    data = _tree(tmp_path / "mydata")
    settings = {**workbench, **TINY, "run_dataset": str(data)}
    outputs = run_outputs_dir(
        workbench["workbench_outputs_dir"], "localhost", workbench["workbench_name"]
    )
    home = host_notebook_home(workbench["workbench_name"])

    first = run_playbook(repo_root, "playbooks/run.yml", ansible_env, settings)
    assert first.rc == 0, first.tail(80)
    text = _flat(first.output)
    assert f"run_dataset {data}: 27 file(s) sent to /workspace/data/own/mydata" in text, text[
        -3000:
    ]
    (run_id,) = set(_run_ids(first.output))
    record = _record(outputs, run_id)
    assert record["data"]["source"] == str(data)
    assert record["data"]["root"] == "/workspace/data/own/mydata"
    assert re.fullmatch(r"[0-9a-f]{64}", record["data"]["sha256"])
    assert record["parameters"]["data_dir"] == "/workspace/data/own/mydata"
    metrics = json.loads((outputs / run_id / "metrics.json").read_text())
    assert metrics["num_train"] == 18 and metrics["num_val"] == 9, metrics

    again = run_playbook(repo_root, "playbooks/run.yml", ansible_env, settings)
    assert again.rc == 0 and again.changed == 0, again.tail(60)
    assert "file(s) sent" not in again.output

    # One image changed: it alone moves, and the run is a new one.
    _image(data / "train" / "b" / "3.png", (255, 255, 255), 7)
    changed = run_playbook(repo_root, "playbooks/run.yml", ansible_env, settings)
    assert changed.rc == 0, changed.tail(80)
    assert (
        f"run_dataset {data}: 1 file(s) sent to /workspace/data/own/mydata: train/b/3.png"
        in _flat(changed.output)
    ), changed.tail(60)
    (new_id,) = set(_run_ids(changed.output))
    assert new_id != run_id
    assert _record(outputs, new_id)["data"]["sha256"] != record["data"]["sha256"]
    assert PAPERMILL in changed.output

    # An archive of the tree is unpacked on the workbench and trained on.
    archive = tmp_path / "packed.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(data, arcname="packed")
    packed = run_playbook(
        repo_root, "playbooks/run.yml", ansible_env, {**settings, "run_dataset": str(archive)}
    )
    assert packed.rc == 0, packed.tail(80)
    (packed_id,) = set(_run_ids(packed.output))
    assert _record(outputs, packed_id)["data"]["root"] == "/workspace/data/own/packed/packed"
    assert (home / "data" / "own" / "packed" / "packed" / "train" / "b" / "3.png").is_file()
    packed_again = run_playbook(
        repo_root, "playbooks/run.yml", ansible_env, {**settings, "run_dataset": str(archive)}
    )
    assert packed_again.rc == 0 and packed_again.changed == 0, packed_again.tail(60)


def test_bad_data_stops_before_the_run_with_the_path_and_the_fix(
    repo_root: Path,
    ansible_env,
    workbench: dict,  # noqa: F811
    tmp_path: Path,
) -> None:
    home = host_notebook_home(workbench["workbench_name"])

    def refused(dataset: str) -> str:
        run = run_playbook(
            repo_root,
            "playbooks/run.yml",
            ansible_env,
            {**workbench, **TINY, "run_dataset": dataset},
        )
        assert run.rc != 0, run.tail(40)
        assert PAPERMILL not in run.output, run.tail(60)
        assert not any((home / "outputs").glob("*/run.json"))
        return _flat(run.output)

    missing = tmp_path / "nowhere"
    text = refused(str(missing))
    assert f"run_dataset {missing}: does not exist on the control node. Fix:" in text, text[-2000:]
    # Refused before anything was copied.
    assert not (home / "data" / "own" / "nowhere").exists()

    no_val_class = _tree(tmp_path / "noval")
    shutil.rmtree(no_val_class / "val" / "c")
    text = refused(str(no_val_class))
    assert (
        f"run_dataset {no_val_class} cannot be used: {no_val_class}/val has no directory for"
        " class(es) c: every class in train/ needs validation images in val/<class>/"
    ) in text, text[-2000:]
    assert "Fix the data set: an ImageFolder tree" in text

    unreadable = tmp_path / "unreadable"
    for split in ("train", "val"):
        for name in ("a", "b"):
            (unreadable / split / name).mkdir(parents=True)
            (unreadable / split / name / "0.png").write_text("not an image")
    text = refused(str(unreadable))
    assert f"{unreadable}/train has 2 file(s) and no readable image" in text, text[-2000:]

    not_an_archive = tmp_path / "photos.zip"
    not_an_archive.write_text("just text")
    text = refused(str(not_an_archive))
    assert (
        f"run_dataset {not_an_archive}:" in text and "is neither a zip nor a tar archive" in text
    ), text[-2000:]

    text = refused("https://example.invalid/data.zip")
    assert "run_dataset https://example.invalid/data.zip is a URL: set run_dataset_sha256" in text

    # A path already in the container is checked the same way.
    (home / "data" / "empty").mkdir(parents=True)
    text = refused("/workspace/data/empty")
    assert "data root /workspace/data/empty has no train/ directory" in text, text[-2000:]

    # A presigned URL's signature is a secret: the fetch fails here (nothing listens), and
    # neither its message nor Ansible's -vvv log nor any run record shows the query.
    secret = "X-Amz-Signature=feedc0ffee5ecret"
    signed = f"https://127.0.0.1:9/bucket/data.tar.gz?X-Amz-Credential=AKIDWYVERN&{secret}"
    vvv_env = {**ansible_env, "ANSIBLE_VERBOSITY": "3"}
    run = run_playbook(
        repo_root,
        "playbooks/run.yml",
        vvv_env,
        {**workbench, **TINY, "run_dataset": signed, "run_dataset_sha256": "0" * 64},
    )
    assert run.rc != 0, run.tail(40)
    assert PAPERMILL not in run.output, run.tail(60)
    text = _flat(run.output)
    assert "run_dataset https://127.0.0.1:9/bucket/data.tar.gz?(hidden):" in text, text[-2000:]
    for leak in ("feedc0ffee5ecret", "AKIDWYVERN"):
        assert leak not in run.output, "the presigned URL's query reached the log"
        for written in (home / "data").rglob("*.json"):
            assert leak not in written.read_text(), written
