"""Filters for the notebook and run roles: pip settings for the build, the image tag, the run id
and which interrupted run to continue.

Each rule that was Jinja in a task file lives here once, with unit tests
(tests/unit/plugins/filter/test_notebook.py).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

# `pip config list` prints one setting a line: global.index-url='https://mirror/simple'; a
# value of several lines (extra-index-url) keeps its newlines inside the quotes.
_PIP_SETTING = re.compile(
    r"^(?P<section>[^.\s=]+)\.(?P<key>[a-z-]+)='(?P<value>[^']*)'", re.M | re.S
)
_HTTP = re.compile(r"^https?://")
_IMAGE_TAG_LENGTH = 16
_RUN_ID_LENGTH = 10
# The notebook run.yml executes unless run_notebook names another (path under /workspace).
DEFAULT_NOTEBOOK = "workload/notebooks/transfer_learning.ipynb"
# A run directory's checkpoint (the workload's) and the run role's record of a finished run.
RUN_CHECKPOINT = "checkpoint.pt"
RUN_RECORD = "run.json"


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "\n".join(str(line) for line in value)
    return "" if value is None else str(value)


def notebook_pip_indexes(
    pip_config: Any,
    env: Mapping[str, Any] | None = None,
    index_url: str = "",
    extra_index_urls: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The package indexes for the image build: the role's settings, else the host's.

    `pip_config` is what `pip config list` printed (text or lines), `env` the host's
    environment (PIP_INDEX_URL and PIP_EXTRA_INDEX_URL win over the config files, as in pip).
    Only http(s) indexes are kept: a file:// index does not exist inside the build.
    """
    conf_index = ""
    conf_extra: list[str] = []
    for match in _PIP_SETTING.finditer(_text(pip_config)):
        if match["key"] == "index-url" and not conf_index:
            conf_index = match["value"].strip()
        elif match["key"] == "extra-index-url":
            conf_extra += match["value"].split()
    env = env or {}
    host_index = str(env.get("PIP_INDEX_URL") or "") or conf_index
    host_extra = str(env.get("PIP_EXTRA_INDEX_URL") or "").split() + conf_extra
    index = str(index_url or "") or host_index
    extra = list(extra_index_urls or []) or host_extra
    unique: list[str] = []
    for url in extra:
        if _HTTP.match(str(url)) and url not in unique:
            unique.append(str(url))
    return {"index_url": index if _HTTP.match(index) else "", "extra_index_urls": unique}


def notebook_pip_conf(indexes: Mapping[str, Any], cert: str | None = None) -> str:
    """pip.conf for the build's venv stage (its one `[global]` section)."""
    lines = ["[global]"]
    if indexes.get("index_url"):
        lines.append(f"index-url = {indexes['index_url']}")
    if indexes.get("extra_index_urls"):
        lines.append(f"extra-index-url = {' '.join(indexes['extra_index_urls'])}")
    if cert:
        lines.append(f"cert = {cert}")
    return "\n".join(lines) + "\n"


def _image_names(image: Mapping[str, Any]) -> set[str]:
    names = set(image.get("RepoTags") or []) | set(image.get("RepoDigests") or [])
    # Docker shows official images without their docker.io/library/ prefix.
    return names | {re.sub(r"^(docker\.io/)?(library/)?", "", name) for name in names}


def notebook_base_identity(images: Iterable[Mapping[str, Any]], candidates: Any) -> str:
    """What the image tag hashes for the base: the first candidate reference present here,
    with its image id (a rebuilt or re-pulled base is another base); else the first
    reference alone (the build then resolves it and hashes again).

    `images` is docker_image_info's `images`; `candidates` a reference or a list of them,
    in the order the role would choose them.
    """
    refs = [candidates] if isinstance(candidates, str) else list(candidates or [])
    if not refs:
        raise AnsibleFilterError("notebook_base_identity needs at least one base image reference")
    images = list(images or [])
    for ref in refs:
        # `repo:tag@sha256:...` is found by its digest alone (`repo@sha256:...`).
        wanted = {ref, re.sub(r":[^/:@]+@", "@", ref)}
        for image in images:
            if wanted & _image_names(image):
                return f"{ref} {image.get('Id', '')}".strip()
    return refs[0]


def image_repositories(references: Iterable[str]) -> list[str]:
    """The repositories of image references (`repo[:tag][@digest]` -> `repo`), once each:
    Docker's `reference` filter with a bare repository matches all its tags and digests,
    so one image listing answers for every reference (tasks/docker_state.yml)."""
    repos: list[str] = []
    for ref in references:
        repo = re.sub(r"@.*$", "", str(ref))
        repo = re.sub(r":[^/:]+$", "", repo)
        if not repo:
            raise AnsibleFilterError(f"image_repositories: {ref!r} is not an image reference")
        if repo not in repos:
            repos.append(repo)
    return repos


def image_present(images: Iterable[Mapping[str, Any]] | None, reference: str) -> bool:
    """Whether `reference` (`repo:tag` or `repo@digest`) names one of `images` (Docker's
    image listing or docker_image_info's `images`)."""
    wanted = {reference, re.sub(r":[^/:@]+@", "@", reference)}
    return any(wanted & _image_names(image) for image in images or [])


def notebook_base_candidates(mode: str, base_image: str, bootstrap_image: str) -> list[str]:
    """The bases the role may build on, in its order of choice (notebook_base_bootstrap)."""
    choices = {
        "always": [bootstrap_image],
        "never": [base_image],
        "auto": [base_image, bootstrap_image],
    }
    if mode not in choices:
        raise AnsibleFilterError(f"notebook_base_bootstrap={mode!r}: use auto, always or never")
    return choices[mode]


def notebook_image_tag(inputs: Iterable[Sequence[str]], base: str) -> str:
    """The content-addressed tag: SHA-256 over the base image and every (path, sha256) the
    build copies, sorted by path; the first 16 hex digits."""
    pairs = sorted((str(path), str(digest)) for path, digest in inputs)
    if not pairs:
        raise AnsibleFilterError("notebook_image_tag: no workload file to hash")
    if not base:
        raise AnsibleFilterError("notebook_image_tag: the base image is part of the tag")
    lines = [f"base {base}", *(f"{path} {digest}" for path, digest in pairs)]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:_IMAGE_TAG_LENGTH]


def run_id(
    settings: Mapping[str, Any],
    image_id: str,
    notebook: str | None = None,
    data_digest: str | None = None,
) -> str:
    """`<mode>-<10 hex>`: a SHA-1 over the notebook's parameters, the image that runs them,
    (when not the default) the notebook and (when given) the data set's content digest, so
    new parameters, new workload code, another notebook or changed data is a new run and
    the same ones are the same run. The default digits set has no digest: its ids stay."""
    if "mode" not in settings:
        raise AnsibleFilterError("run_id: the settings have no `mode`")
    keyed = {**settings, "image_id": image_id}
    if notebook and notebook != DEFAULT_NOTEBOOK:
        keyed["notebook"] = notebook
    if data_digest:
        keyed["data_digest"] = data_digest
    digest = hashlib.sha1(json.dumps(keyed).encode(), usedforsecurity=False).hexdigest()
    return f"{settings['mode']}-{digest[:_RUN_ID_LENGTH]}"


def interrupted_runs(paths: Iterable[str]) -> list[str]:
    """The run directories among ``paths`` (files under them, relative or absolute) that hold
    a checkpoint and no finished-run record: a run that was stopped (a signal, a spot
    reclaim, a lost connection) and can go on from its checkpoint. Sorted, no duplicates."""
    found: dict[str, set[str]] = {}
    for path in paths:
        text = _text(path).rstrip("/")
        folder, _, name = text.rpartition("/")
        if name in (RUN_CHECKPOINT, RUN_RECORD):
            found.setdefault(folder, set()).add(name)
    return sorted(folder for folder, names in found.items() if names == {RUN_CHECKPOINT})


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def resumable_run(records: Iterable[Any], identity: Mapping[str, Any]) -> str:
    """The id of the newest started-run record (``started.json``) whose identity (notebook,
    parameters, data, image) is ``identity``, or ``""``: the interrupted run that a new
    execution of the same run continues, even under another run id (a replacement instance
    that built the same image again gets another image id)."""
    wanted = _canonical(dict(identity))
    best: tuple[str, str] | None = None
    for record in records:
        if isinstance(record, str):
            try:
                record = json.loads(record)
            except ValueError:
                continue  # a torn or foreign file is not a run to continue
        if not isinstance(record, Mapping) or not isinstance(record.get("run_id"), str):
            continue
        run = record["run_id"]
        if not run or "/" in run or run.startswith("."):
            continue
        if _canonical(record.get("identity")) != wanted:
            continue
        key = (str(record.get("started_at") or ""), run)
        if best is None or key > best:
            best = key
    return best[1] if best else ""


def redact_url(value: Any) -> str:
    """A URL as it may be shown or recorded: no user, password, query or fragment.

    A presigned URL carries its signature and credential in the query, a basic-auth URL its
    password in the user part; both may be given as run_dataset. Anything that is not a URL
    with a scheme and a host comes back as it is.
    """
    from urllib.parse import urlsplit

    text = _text(value)
    try:
        parts = urlsplit(text)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return text
    if not parts.scheme or not host:
        return text
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    hidden = bool(parts.username or parts.password or parts.query or parts.fragment)
    shown = f"{parts.scheme}://{netloc}{parts.path}"
    return f"{shown}?(hidden)" if hidden else shown


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "notebook_pip_indexes": notebook_pip_indexes,
            "notebook_pip_conf": notebook_pip_conf,
            "notebook_base_candidates": notebook_base_candidates,
            "notebook_base_identity": notebook_base_identity,
            "notebook_image_tag": notebook_image_tag,
            "image_repositories": image_repositories,
            "image_present": image_present,
            "run_id": run_id,
            "interrupted_runs": interrupted_runs,
            "resumable_run": resumable_run,
            "redact_url": redact_url,
        }
