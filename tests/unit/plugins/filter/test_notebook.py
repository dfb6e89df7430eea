"""The notebook filters: pip settings for the build, the image tag, the run id."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

ROOT = Path(__file__).resolve().parents[4]
_spec = importlib.util.spec_from_file_location(
    "notebook_filters", ROOT / "plugins/filter/notebook.py"
)
assert _spec and _spec.loader
filters = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(filters)

INPUTS = [["Dockerfile", "a" * 64], ["transfer_learning/cli.py", "b" * 64]]
BASE = "wyvern/debian-base:bookworm sha256:" + "1" * 64
DIGEST = "sha256:" + "d" * 64
PINNED = f"python:3.11-slim-bookworm@{DIGEST}"


# -- pip settings ---------------------------------------------------------------------------


def test_pip_indexes_come_from_the_host_config_http_only() -> None:
    config = (
        "global.index-url='https://user:s3cret@mirror.example/simple'\n"
        "global.extra-index-url='https://extra.example/simple file:///srv/wheels'\n"
        "install.extra-index-url='http://second.example/simple'\n"
        "global.timeout='60'\n"
    )
    assert filters.notebook_pip_indexes(config) == {
        "index_url": "https://user:s3cret@mirror.example/simple",
        "extra_index_urls": ["https://extra.example/simple", "http://second.example/simple"],
    }


def test_a_multi_line_extra_index_value_is_read_whole() -> None:
    lines = ["global.extra-index-url='", "https://a.example/simple", "https://b.example/simple'"]
    got = filters.notebook_pip_indexes(lines)
    assert got["extra_index_urls"] == ["https://a.example/simple", "https://b.example/simple"]


def test_the_environment_wins_over_the_config_and_the_role_over_both() -> None:
    config = "global.index-url='https://conf.example/simple'\n"
    env = {"PIP_INDEX_URL": "https://env.example/simple", "PIP_EXTRA_INDEX_URL": "https://x/ y"}
    got = filters.notebook_pip_indexes(config, env)
    assert got == {"index_url": "https://env.example/simple", "extra_index_urls": ["https://x/"]}
    got = filters.notebook_pip_indexes(
        config, env, "https://role.example/simple", ["https://r2/", "https://r2/"]
    )
    assert got == {"index_url": "https://role.example/simple", "extra_index_urls": ["https://r2/"]}


def test_a_file_index_or_nothing_leaves_pip_on_pypi() -> None:
    assert filters.notebook_pip_indexes("global.index-url='file:///srv/simple'\n") == {
        "index_url": "",
        "extra_index_urls": [],
    }
    assert filters.notebook_pip_indexes(None, None) == {"index_url": "", "extra_index_urls": []}


def test_pip_conf_holds_what_is_set() -> None:
    indexes = {"index_url": "https://m/simple", "extra_index_urls": ["https://a/", "https://b/"]}
    assert filters.notebook_pip_conf(indexes, "/opt/wyvern-build/ca-bundle.crt") == (
        "[global]\nindex-url = https://m/simple\nextra-index-url = https://a/ https://b/\n"
        "cert = /opt/wyvern-build/ca-bundle.crt\n"
    )
    assert filters.notebook_pip_conf({"index_url": "", "extra_index_urls": []}) == "[global]\n"


# -- the image tag --------------------------------------------------------------------------


def test_the_image_tag_hashes_the_base_image_too() -> None:
    tag = filters.notebook_image_tag(INPUTS, BASE)
    assert len(tag) == 16 and int(tag, 16) >= 0
    assert filters.notebook_image_tag(list(reversed(INPUTS)), BASE) == tag  # order-free
    other_base = BASE.replace("1" * 64, "2" * 64)  # the same tag name, bootstrapped again
    assert filters.notebook_image_tag(INPUTS, other_base) != tag
    assert filters.notebook_image_tag(INPUTS, PINNED) != tag
    changed = [INPUTS[0], ["transfer_learning/cli.py", "c" * 64]]
    assert filters.notebook_image_tag(changed, BASE) != tag
    renamed = [INPUTS[0], ["transfer_learning/main.py", "b" * 64]]
    assert filters.notebook_image_tag(renamed, BASE) != tag


def test_the_image_tag_refuses_to_hash_nothing() -> None:
    with pytest.raises(AnsibleFilterError, match="no workload file"):
        filters.notebook_image_tag([], BASE)
    with pytest.raises(AnsibleFilterError, match="base image"):
        filters.notebook_image_tag(INPUTS, "")


def _image(image_id: str, tags: list[str], digests: list[str] | None = None) -> dict:
    return {"Id": image_id, "RepoTags": tags, "RepoDigests": digests or []}


def test_base_identity_is_the_first_present_candidate_with_its_id() -> None:
    official = _image("sha256:off", ["python:3.11-slim-bookworm"], [f"python@{DIGEST}"])
    bootstrap = _image("sha256:boot", ["wyvern/debian-base:bookworm"])
    candidates = filters.notebook_base_candidates("auto", PINNED, "wyvern/debian-base:bookworm")
    assert candidates == [PINNED, "wyvern/debian-base:bookworm"]
    # Found by its digest (docker_image_info lists `repo@digest`, not `repo:tag@digest`).
    assert filters.notebook_base_identity([bootstrap, official], candidates) == (
        f"{PINNED} sha256:off"
    )
    assert filters.notebook_base_identity([bootstrap], candidates) == (
        "wyvern/debian-base:bookworm sha256:boot"
    )
    assert filters.notebook_base_identity([], candidates) == PINNED  # resolved by the build
    docker_io = _image("sha256:lib", [], [f"docker.io/library/python@{DIGEST}"])
    assert filters.notebook_base_identity([docker_io], PINNED) == f"{PINNED} sha256:lib"


def test_base_candidates_follow_notebook_base_bootstrap() -> None:
    assert filters.notebook_base_candidates("always", "b", "s") == ["s"]
    assert filters.notebook_base_candidates("never", "b", "s") == ["b"]
    with pytest.raises(AnsibleFilterError, match="notebook_base_bootstrap='sometimes'"):
        filters.notebook_base_candidates("sometimes", "b", "s")


# -- the run id -----------------------------------------------------------------------------


SETTINGS = {"data_dir": "/workspace/data/digits", "epochs": 3, "limit": None, "mode": "finetune"}


def test_run_id_is_stable_and_keyed_by_parameters_and_image() -> None:
    run = filters.run_id(SETTINGS, "sha256:img")
    # The formula run.yml used in Jinja (to_json | hash('sha1')): old outputs keep their id.
    legacy = hashlib.sha1(json.dumps({**SETTINGS, "image_id": "sha256:img"}).encode()).hexdigest()
    assert run == f"finetune-{legacy[:10]}"
    assert filters.run_id(dict(SETTINGS), "sha256:img") == run
    assert filters.run_id({**SETTINGS, "epochs": 4}, "sha256:img") != run
    assert filters.run_id(SETTINGS, "sha256:new") != run
    assert filters.run_id(SETTINGS, "sha256:img", filters.DEFAULT_NOTEBOOK) == run
    assert filters.run_id(SETTINGS, "sha256:img", "notebooks/mine.ipynb") != run
    feature = filters.run_id({**SETTINGS, "mode": "feature-extract"}, "sha256:img")
    assert feature.startswith("feature-extract-")
    with pytest.raises(AnsibleFilterError, match="no `mode`"):
        filters.run_id({"epochs": 1}, "sha256:img")


def test_run_id_changes_with_the_data_and_stays_for_the_default_data_set() -> None:
    run = filters.run_id(SETTINGS, "sha256:img")
    # The digits set has no digest (the role passes none): its runs keep their ids.
    assert filters.run_id(SETTINGS, "sha256:img", None, None) == run == "finetune-1497b1c82e"
    own = {**SETTINGS, "data_dir": "/workspace/data/own/flowers"}
    first = filters.run_id(own, "sha256:img", None, "a" * 64)
    assert filters.run_id(own, "sha256:img", None, "a" * 64) == first
    # One changed image is another digest, so another run (same path, same parameters).
    assert filters.run_id(own, "sha256:img", None, "b" * 64) != first


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        (
            "https://bucket.s3.amazonaws.com/data/set.tar.gz?X-Amz-Credential=AKIAEXAMPLE%2F2026"
            "&X-Amz-Signature=0123abcd",
            "https://bucket.s3.amazonaws.com/data/set.tar.gz?(hidden)",
        ),
        ("https://user:s3cret@example.org:8443/d.zip", "https://example.org:8443/d.zip?(hidden)"),
        ("https://example.org/d.zip#token=abc", "https://example.org/d.zip?(hidden)"),
        ("https://example.org/d.zip", "https://example.org/d.zip"),
        ("http://[::1]:8000/d.tgz?sig=1", "http://[::1]:8000/d.tgz?(hidden)"),
        ("digits", "digits"),
        ("/home/me/data/flowers", "/home/me/data/flowers"),
        ("/workspace/data/x", "/workspace/data/x"),
        ("https://example.org:notaport/d.zip", "https://example.org:notaport/d.zip"),
    ],
)
def test_redact_url_hides_what_a_url_carries_as_a_secret(given: str, shown: str) -> None:
    assert filters.redact_url(given) == shown
    for secret in ("s3cret", "0123abcd", "AKIAEXAMPLE", "token=abc", "sig=1"):
        assert secret not in filters.redact_url(given)


# One Docker listing answers for every image the role looks for (tasks/docker_state.yml).


def test_image_repositories_strip_tags_and_digests_once_each() -> None:
    from ansible_collections.wyvern.workbench.plugins.filter.notebook import image_repositories

    assert image_repositories(
        [
            "python:3.11-slim-bookworm@sha256:" + "a" * 64,
            "wyvern/debian-base:bookworm",
            "wyvern/notebook",
            "localhost:5000/team/base:1",
            "localhost:5000/team/base",
            "python@sha256:" + "b" * 64,
        ]
    ) == ["python", "wyvern/debian-base", "wyvern/notebook", "localhost:5000/team/base"]


def test_image_present_finds_a_reference_by_tag_or_digest_and_nothing_else() -> None:
    from ansible_collections.wyvern.workbench.plugins.filter.notebook import image_present

    digest = "sha256:" + "c" * 64
    images = [
        {"Id": "sha256:1", "RepoTags": ["wyvern/notebook:aaaa"], "RepoDigests": None},
        {"Id": "sha256:2", "RepoTags": None, "RepoDigests": [f"python@{digest}"]},
    ]
    assert image_present(images, "wyvern/notebook:aaaa")
    assert not image_present(images, "wyvern/notebook:bbbb")
    assert image_present(images, f"python:3.11-slim@{digest}")
    assert not image_present([], "wyvern/notebook:aaaa")
    assert not image_present(None, "wyvern/notebook:aaaa")


def test_interrupted_runs_hold_a_checkpoint_and_no_record() -> None:
    files = [
        "stopped/checkpoint.pt",
        "stopped/started.json",
        "stopped/interruption.json",
        "done/checkpoint.pt",
        "done/run.json",
        "fresh/started.json",
        "/home/u/outputs/host/wb/other/checkpoint.pt",
        "/home/u/outputs/host/wb/other/checkpoint.pt.tmp",
        "stopped/checkpoint.pt",  # listed twice: one run
    ]
    assert filters.interrupted_runs(files) == ["/home/u/outputs/host/wb/other", "stopped"]
    assert filters.interrupted_runs([]) == []


IDENTITY = {
    "notebook": "workload/notebooks/transfer_learning.ipynb",
    "settings": {"epochs": 3, "limit": None, "mode": "finetune"},
    "data": "",
    "image": "wyvern/notebook:0123456789abcdef",
}


def _started(run_id: str, at: str, **identity: object) -> str:
    return json.dumps(
        {"run_id": run_id, "started_at": at, "identity": {**IDENTITY, **identity}}, indent=2
    )


def test_resumable_run_is_the_newest_interrupted_run_of_the_same_identity() -> None:
    records = [
        _started("finetune-old", "2026-11-27T10:00:00+00:00"),
        _started("finetune-new", "2026-11-27T11:00:00+00:00"),
        # Same run, another image (new workload code): never continued.
        _started("finetune-code", "2026-11-27T12:00:00+00:00", image="wyvern/notebook:ffff"),
        # Other parameters.
        _started("finetune-ep5", "2026-11-27T12:00:00+00:00", settings={"epochs": 5}),
    ]
    assert filters.resumable_run(records, IDENTITY) == "finetune-new"
    # Key order and a JSON round trip do not matter; parsed records are taken too.
    reordered = dict(reversed(list(IDENTITY.items())))
    assert filters.resumable_run([json.loads(records[0])], reordered) == "finetune-old"


@pytest.mark.parametrize(
    "record",
    [
        "not json",
        "[]",
        json.dumps({"identity": IDENTITY}),  # no run id
        json.dumps({"run_id": "../escape", "identity": IDENTITY}),
        json.dumps({"run_id": ".hidden", "identity": IDENTITY}),
        json.dumps({"run_id": "", "identity": IDENTITY}),
        json.dumps({"run_id": "x", "identity": {**IDENTITY, "data": "sha256:other"}}),
    ],
)
def test_resumable_run_ignores_torn_foreign_and_other_records(record: str) -> None:
    assert filters.resumable_run([record], IDENTITY) == ""
