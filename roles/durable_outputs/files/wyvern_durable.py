#!/usr/bin/env python3
"""Wyvern durable outputs agent: outputs to S3, and the spot interruption notice acted on.

Runs on the instance's host (standard library only: the host has no boto3, and the
notebook container cannot reach the instance metadata service, whose hop limit is 1).
Every `interval_seconds`:

- watcher: asks IMDSv2 for /latest/meta-data/spot/instance-action (a reclaim in two
  minutes) and /latest/meta-data/events/recommendations/rebalance (capacity is getting
  short). On a reclaim notice it sends the running training SIGTERM (checkpoint at the next
  step, stop), on a rebalance SIGUSR1 (checkpoint, go on), waits for the checkpoint,
  records <run dir>/interruption.json and uploads at once;
- uploader: PUTs every new or changed file under <outputs_dir> to
  s3://<bucket>/<prefix>/outputs/<run_id>/<file>, signed with SigV4 by hand from the
  instance profile's credentials (IMDSv2, refreshed before they expire). A run directory
  whose every file is in S3 gets `.uploaded`, newer than them (the hard limit counts such a
  run as safe to terminate).

  python3 wyvern_durable.py --config FILE [--once | --loop | --ensure-loop | --stop-loop]
  python3 wyvern_durable.py --config FILE --restore RUN_ID   (S3 -> outputs/RUN_ID/)
  python3 wyvern_durable.py --config FILE --stop-instance

--stop-instance stops this instance through EC2's API (StopInstances, signed with the
instance profile's credentials, which may stop only this workbench's instance). The idle
agent (role autostop) runs it when powering off would terminate the instance while it
holds outputs that are not safe yet: the instance stops instead, and keeps its volume.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import xml.etree.ElementTree as ET
from typing import Any

IMDS_URL = "http://169.254.169.254"
TOKEN_TTL = 21600  # seconds: IMDSv2's maximum
MARKER = ".uploaded"
INTERRUPTION = "interruption.json"
STATE_FILE = "uploaded.json"
CHUNK = 1 << 20


def log(message: str) -> None:
    print(f"wyvern-durable: {message}", file=sys.stderr, flush=True)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- IMDSv2 ---------------------------------------------------------------------------


class ImdsError(Exception):
    pass


class Imds:
    """IMDSv2: a session token (PUT), refreshed a minute before it expires or on a 401."""

    def __init__(self, base: str = IMDS_URL, ttl: int = TOKEN_TTL, timeout: float = 2.0) -> None:
        self.base = urllib.parse.urlsplit(base)
        self.ttl = ttl
        self.timeout = timeout
        self._token = ""
        self._expires = 0.0

    def _request(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(
            self.base.hostname, self.base.port or 80, timeout=self.timeout
        )
        try:
            conn.request(method, path, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except OSError as exc:
            raise ImdsError(f"{method} {path}: {exc}") from exc
        finally:
            conn.close()

    def token(self) -> str:
        if not self._token or time.monotonic() >= self._expires - min(60, self.ttl / 2):
            status, body = self._request(
                "PUT",
                "/latest/api/token",
                {"X-aws-ec2-metadata-token-ttl-seconds": str(self.ttl)},
            )
            if status != 200:
                raise ImdsError(f"token: HTTP {status}")
            self._token = body.decode().strip()
            self._expires = time.monotonic() + self.ttl
        return self._token

    def get(self, path: str) -> str | None:
        """The body, or None on 404 (no such notice)."""
        for attempt in (0, 1):
            status, body = self._request("GET", path, {"X-aws-ec2-metadata-token": self.token()})
            if status == 401 and attempt == 0:  # token expired early (clock, restart)
                self._token = ""
                continue
            if status == 404:
                return None
            if status != 200:
                raise ImdsError(f"GET {path}: HTTP {status}")
            return body.decode()
        raise ImdsError(f"GET {path}: token refused")


class Credentials:
    """The instance profile's temporary credentials, re-read 5 minutes before expiry."""

    def __init__(self, imds: Imds) -> None:
        self.imds = imds
        self.value: dict[str, str] = {}
        self._expires = 0.0

    def get(self) -> dict[str, str]:
        if not self.value or time.time() >= self._expires - 300:
            base = "/latest/meta-data/iam/security-credentials/"
            roles = (self.imds.get(base) or "").split()
            if not roles:
                raise ImdsError("the instance has no IAM instance profile")
            data = json.loads(self.imds.get(base + roles[0]) or "{}")
            self.value = {
                "access_key": data["AccessKeyId"],
                "secret_key": data["SecretAccessKey"],
                "token": data.get("Token", ""),
            }
            expiry = data.get("Expiration", "")
            try:
                self._expires = (
                    dt.datetime.strptime(expiry, "%Y-%m-%dT%H:%M:%SZ")
                    .replace(tzinfo=dt.UTC)
                    .timestamp()
                )
            except ValueError:
                self._expires = time.time() + 600
        return self.value


# --- S3 with SigV4 --------------------------------------------------------------------


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sign(
    method: str,
    host: str,
    path: str,
    query: dict[str, str],
    headers: dict[str, str],
    payload_hash: str,
    region: str,
    creds: dict[str, str],
    when: dt.datetime,
    service: str = "s3",
) -> dict[str, str]:
    """Headers for an AWS Signature Version 4 request (path already URI-encoded)."""
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    out = dict(headers)
    out["host"] = host
    out["x-amz-date"] = amz_date
    out["x-amz-content-sha256"] = payload_hash
    if creds.get("token"):
        out["x-amz-security-token"] = creds["token"]
    lower = {k.lower(): " ".join(str(v).strip().split()) for k, v in out.items()}
    signed = ";".join(sorted(lower))
    canonical_headers = "".join(f"{k}:{lower[k]}\n" for k in sorted(lower))
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in sorted(query.items())
    )
    canonical = "\n".join([method, path, canonical_query, canonical_headers, signed, payload_hash])
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(("AWS4" + creds["secret_key"]).encode(), date)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={creds['access_key']}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    return out


class S3Error(Exception):
    pass


class S3:
    """PUT, GET and list of one bucket: virtual-hosted on AWS, path style on an endpoint."""

    def __init__(
        self, bucket: str, region: str, credentials: Any, endpoint: str = "", timeout: float = 60
    ) -> None:
        self.bucket = bucket
        self.region = region
        self.credentials = credentials
        self.timeout = timeout
        if endpoint:
            parts = urllib.parse.urlsplit(endpoint)
            self.scheme, self.host, self.base = parts.scheme, parts.netloc, f"/{bucket}"
        else:
            self.scheme, self.host, self.base = "https", f"{bucket}.s3.{region}.amazonaws.com", ""

    def _path(self, key: str) -> str:
        return self.base + "/" + urllib.parse.quote(key, safe="/-_.~")

    def _send(
        self,
        method: str,
        key: str | None,
        query: dict[str, str],
        payload_hash: str,
        body: Any = None,
        length: int = 0,
    ) -> tuple[int, bytes, http.client.HTTPResponse, http.client.HTTPConnection]:
        path = self._path(key) if key is not None else (self.base or "/")
        headers: dict[str, str] = {}
        if method == "PUT":
            headers["content-length"] = str(length)
        signed = sign(
            method,
            self.host,
            path,
            query,
            headers,
            payload_hash,
            self.region,
            self.credentials.get(),
            dt.datetime.now(dt.UTC),
        )
        signed.pop("host")
        url = path + ("?" + urllib.parse.urlencode(sorted(query.items())) if query else "")
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        conn = cls(self.host, timeout=self.timeout)
        conn.putrequest(method, url, skip_accept_encoding=True)
        for name, value in signed.items():
            conn.putheader(name, value)
        conn.endheaders()
        if body is not None:
            while chunk := body.read(CHUNK):
                conn.send(chunk)
        resp = conn.getresponse()
        return resp.status, b"", resp, conn

    def put_file(self, key: str, path: str) -> None:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
            length = handle.tell()
            handle.seek(0)
            status, _, resp, conn = self._send("PUT", key, {}, digest.hexdigest(), handle, length)
            text = resp.read()
            conn.close()
        if status != 200:
            raise S3Error(f"PUT {key}: HTTP {status} {text[:300]!r}")

    def get_file(self, key: str, dest: str) -> None:
        status, _, resp, conn = self._send("GET", key, {}, hashlib.sha256(b"").hexdigest())
        try:
            if status != 200:
                raise S3Error(f"GET {key}: HTTP {status} {resp.read()[:300]!r}")
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            tmp = dest + ".part"
            with open(tmp, "wb") as out:
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
            os.replace(tmp, dest)
        finally:
            conn.close()

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        token = ""
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if token:
                query["continuation-token"] = token
            status, _, resp, conn = self._send("GET", None, query, hashlib.sha256(b"").hexdigest())
            body = resp.read()
            conn.close()
            if status != 200:
                raise S3Error(f"list {prefix}: HTTP {status} {body[:300]!r}")
            root = ET.fromstring(body)
            ns = root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""
            keys += [el.text or "" for el in root.iter(f"{ns}Key")]
            more = root.find(f"{ns}IsTruncated")
            nxt = root.find(f"{ns}NextContinuationToken")
            if more is None or more.text != "true" or nxt is None:
                return keys
            token = nxt.text or ""


# --- EC2: stop this instance -----------------------------------------------------------


class Ec2Error(Exception):
    pass


def stop_instance(config: dict[str, Any], imds: Imds, credentials: Any) -> dict[str, str]:
    """StopInstances for the instance IMDS names, in its own region: one signed POST.

    The endpoint is `ec2_endpoint_url` (tests: moto), else EC2's regional endpoint. Returns
    the instance id and the state EC2 reports (stopping; stopped if it already was)."""
    instance = (imds.get("/latest/meta-data/instance-id") or "").strip()
    region = (imds.get("/latest/meta-data/placement/region") or "").strip()
    if not instance or not region:
        raise Ec2Error("the metadata service gave no instance id or region")
    endpoint = config.get("ec2_endpoint_url") or f"https://ec2.{region}.amazonaws.com"
    parts = urllib.parse.urlsplit(endpoint)
    body = urllib.parse.urlencode(
        {"Action": "StopInstances", "InstanceId.1": instance, "Version": "2016-11-15"}
    ).encode()
    headers = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}
    signed = sign(
        "POST",
        parts.netloc,
        "/",
        {},
        headers,
        hashlib.sha256(body).hexdigest(),
        region,
        credentials.get(),
        dt.datetime.now(dt.UTC),
        service="ec2",
    )
    signed.pop("host")
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.netloc, timeout=30)
    try:
        conn.request("POST", "/", body=body, headers=signed)
        resp = conn.getresponse()
        status, text = resp.status, resp.read()
    except OSError as exc:
        raise Ec2Error(f"StopInstances {instance}: {exc}") from exc
    finally:
        conn.close()
    if status != 200:
        raise Ec2Error(f"StopInstances {instance}: HTTP {status} {_aws_error(text)}")
    current = next(
        (el for el in ET.fromstring(text).iter() if el.tag.endswith("currentState")), None
    )
    name = (
        ""
        if current is None
        else next((c.text or "" for c in current if c.tag.endswith("name")), "")
    )
    return {"instance": instance, "state": name or "unknown"}


def _aws_error(text: bytes) -> str:
    """Code: Message of an AWS error document, else its start."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return repr(text[:300])
    code = next((el.text for el in root.iter() if el.tag.endswith("Code")), "")
    message = next((el.text for el in root.iter() if el.tag.endswith("Message")), "")
    return f"{code}: {message}" if code or message else repr(text[:300])


# --- uploader -------------------------------------------------------------------------


def _skip(name: str) -> bool:
    return name.startswith(".") or name.endswith((".tmp", ".part"))


def read_json(path: str) -> dict[str, Any]:
    try:
        with open(path) as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_json(path: str, data: dict[str, Any], mode: int = 0o644) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
    os.replace(tmp, path)


class Uploader:
    """Each file under outputs_dir once per (size, mtime); a finished pass marks the run."""

    def __init__(self, config: dict[str, Any], s3: S3) -> None:
        self.outputs = config["outputs_dir"]
        self.prefix = config["prefix"].strip("/") + "/outputs/"
        self.settle = float(config.get("settle_seconds", 0.5))
        self.state_path = os.path.join(config["state_dir"], STATE_FILE)
        self.state: dict[str, list[int]] = read_json(self.state_path)  # rel -> [size, mtime_ns]
        self.s3 = s3

    def pending(self) -> dict[str, list[tuple[str, list[int]]]]:
        """Per run directory: files not uploaded as they are now (settled ones only)."""
        runs: dict[str, list[tuple[str, list[int]]]] = {}
        try:
            entries = sorted(os.listdir(self.outputs))
        except FileNotFoundError:
            return runs
        limit = time.time() - self.settle
        for run in entries:
            top = os.path.join(self.outputs, run)
            if _skip(run) or not os.path.isdir(top):
                continue
            todo = runs.setdefault(run, [])
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                for name in filenames:
                    if _skip(name):
                        continue
                    path = os.path.join(dirpath, name)
                    try:
                        st = os.stat(path)
                    except FileNotFoundError:
                        continue
                    rel = os.path.relpath(path, self.outputs)
                    seen = [st.st_size, st.st_mtime_ns]
                    if self.state.get(rel) == seen:
                        continue
                    todo.append((rel, seen) if st.st_mtime <= limit else (rel, []))
        return runs

    def sync(self) -> list[str]:
        """Upload what is new; returns the relative paths uploaded."""
        done: list[str] = []
        for run, todo in self.pending().items():
            complete = True
            for rel, seen in todo:
                if not seen:  # still being written: next pass
                    complete = False
                    continue
                path = os.path.join(self.outputs, rel)
                try:
                    self.s3.put_file(self.prefix + rel, path)
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                done.append(rel)
                if [st.st_size, st.st_mtime_ns] == seen:
                    self.state[rel] = seen
                else:  # changed while it was read: again next pass
                    complete = False
            marker = os.path.join(self.outputs, run, MARKER)
            if complete and (todo or not os.path.exists(marker)):
                with open(marker, "a"):
                    pass
                os.utime(marker)
        if done:
            write_json(self.state_path, self.state, 0o600)
        return done


# --- interruption watcher -------------------------------------------------------------


class Watcher:
    """Acts once per notice: SIGTERM the training on a reclaim, SIGUSR1 on a rebalance."""

    def __init__(self, config: dict[str, Any], imds: Imds) -> None:
        self.config = config
        self.imds = imds
        self.state_path = os.path.join(config["state_dir"], "notices.json")
        self.seen: dict[str, str] = read_json(self.state_path)

    def poll(self) -> dict[str, str] | None:
        """The new notice, if any: {'kind': 'instance-action'|'rebalance', 'notice': ...}."""
        for kind, path, sig in (
            ("instance-action", "/latest/meta-data/spot/instance-action", "TERM"),
            ("rebalance", "/latest/meta-data/events/recommendations/rebalance", "USR1"),
        ):
            body = self.imds.get(path)
            if body is None or self.seen.get(kind) == body:
                continue
            self.seen[kind] = body
            write_json(self.state_path, self.seen, 0o600)
            return {"kind": kind, "notice": body, "signal": sig}
        return None

    def running_runs(self) -> list[tuple[str, int]]:
        found = []
        outputs = self.config["outputs_dir"]
        try:
            entries = sorted(os.listdir(outputs))
        except FileNotFoundError:
            return found
        for run in entries:
            progress = read_json(os.path.join(outputs, run, "progress.json"))
            if progress.get("state") in ("starting", "running") and progress.get("pid"):
                found.append((run, int(progress["pid"])))
        return found

    def act(self, notice: dict[str, str]) -> list[dict[str, Any]]:
        """Signal each running training, wait for its checkpoint, record the interruption."""
        records = []
        command = self.config.get(
            "signal_command",
            # The shell's kill: the notebook image has no kill program.
            ["docker", "exec", "{container}", "sh", "-c", 'kill -s "$0" "$1"', "{signal}", "{pid}"],
        )
        for run, pid in self.running_runs():
            run_dir = os.path.join(self.config["outputs_dir"], run)
            ckpt = os.path.join(run_dir, self.config.get("checkpoint_name", "checkpoint.pt"))
            before = os.stat(ckpt).st_mtime_ns if os.path.exists(ckpt) else 0
            argv = [
                part.format(
                    container=self.config.get("container", ""), signal=notice["signal"], pid=pid
                )
                for part in command
            ]
            started = time.time()
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
            saved = False
            deadline = started + float(self.config.get("checkpoint_wait_seconds", 90))
            while time.time() < deadline:
                now_ns = os.stat(ckpt).st_mtime_ns if os.path.exists(ckpt) else 0
                state = read_json(os.path.join(run_dir, "progress.json")).get("state")
                if now_ns > before and (
                    notice["signal"] == "USR1" or state not in ("starting", "running")
                ):
                    saved = True
                    break
                time.sleep(0.2)
            record = {
                "kind": notice["kind"],
                "notice": _parse(notice["notice"]),
                "received_at": now_iso(),
                "signal": f"SIG{notice['signal']}",
                "pid": pid,
                "signal_rc": proc.returncode,
                "checkpoint_saved": saved,
                "checkpoint_seconds": round(time.time() - started, 2),
            }
            path = os.path.join(run_dir, INTERRUPTION)
            history = read_json(path).get("interruptions", [])
            write_json(path, {**record, "interruptions": [*history, record]})
            log(
                f"{notice['kind']}: run {run} pid {pid} SIG{notice['signal']}, checkpoint saved: {saved}"
            )
            records.append({"run": run, **record})
        return records


def _parse(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body


# --- main -----------------------------------------------------------------------------


def load_config(path: str) -> dict[str, Any]:
    with open(path) as handle:
        config = json.load(handle)
    os.makedirs(config["state_dir"], exist_ok=True)
    return config


def build(config: dict[str, Any]) -> tuple[Imds, Uploader, Watcher]:
    imds = Imds(config.get("imds_url") or IMDS_URL, int(config.get("token_ttl", TOKEN_TTL)))
    creds: Any
    if config.get("static_credentials"):  # tests only
        static = config["static_credentials"]

        class _Static:
            def get(self) -> dict[str, str]:
                return static

        creds = _Static()
    else:
        creds = Credentials(imds)
    s3 = S3(config["bucket"], config["region"], creds, config.get("endpoint_url", ""))
    return imds, Uploader(config, s3), Watcher(config, imds)


def once(imds: Imds, uploader: Uploader, watcher: Watcher) -> dict[str, Any]:
    result: dict[str, Any] = {"notice": None, "uploaded": [], "errors": []}
    try:
        notice = watcher.poll()
        if notice:
            result["notice"] = notice
            result["acted"] = watcher.act(notice)
    except (ImdsError, OSError, ValueError, subprocess.SubprocessError) as exc:
        result["errors"].append(f"watcher: {exc}")
    try:
        result["uploaded"] = uploader.sync()
    except (ImdsError, S3Error, OSError, ValueError) as exc:
        result["errors"].append(f"uploader: {exc}")
    return result


def loop(config_path: str) -> None:
    config = load_config(config_path)
    imds, uploader, watcher = build(config)
    interval = float(config.get("interval_seconds", 2))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    home = os.path.dirname(os.path.abspath(config["outputs_dir"]))
    while not stop:
        # A workbench removed without teardown (its config or folder gone) leaves no agent.
        if not os.path.exists(config_path) or not os.path.isdir(home):
            log("config or workbench folder gone: exiting")
            return
        started = time.monotonic()
        result = once(imds, uploader, watcher)
        for error in result["errors"]:
            log(error)
        for rel in result["uploaded"]:
            log(f"uploaded {rel}")
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


def restore(config: dict[str, Any], run_id: str) -> list[str]:
    """S3 -> outputs/<run_id>/: every file the prefix holds for that run, missing or older here."""
    _, uploader, _ = build(config)
    prefix = uploader.prefix + run_id + "/"
    got = []
    for key in uploader.s3.list(prefix):
        rel = key[len(uploader.prefix) :]
        if any(part in ("", ".", "..") for part in rel.split("/")):
            continue
        dest = os.path.join(config["outputs_dir"], rel)
        if not os.path.exists(dest):
            uploader.s3.get_file(key, dest)
            st = os.stat(dest)
            uploader.state[rel] = [st.st_size, st.st_mtime_ns]
            got.append(rel)
    write_json(uploader.state_path, uploader.state, 0o600)
    return got


def _pid_alive(pid: int, config_path: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return os.path.abspath(config_path).encode() in handle.read()
    except OSError:
        return False


def ensure_loop(config_path: str, python: str) -> dict[str, Any]:
    """Start the loop unless one runs with this config and script (idempotent)."""
    config = load_config(config_path)
    pidfile = os.path.join(config["state_dir"], "loop.pid")
    info = read_json(pidfile)
    digest = hashlib.sha256()
    for path in (config_path, __file__):
        with open(path, "rb") as handle:
            digest.update(handle.read())
    wanted = digest.hexdigest()
    pid = int(info.get("pid", 0) or 0)
    if pid and _pid_alive(pid, config_path):
        if info.get("fingerprint") == wanted:
            return {"changed": False, "pid": pid}
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not _pid_alive(pid, config_path):
                break
            time.sleep(0.1)
    with (
        open(os.devnull, "r+b") as null,
        open(os.path.join(config["state_dir"], "loop.log"), "ab") as logfile,
    ):
        proc = subprocess.Popen(
            [python, os.path.abspath(__file__), "--config", os.path.abspath(config_path), "--loop"],
            stdin=null,
            stdout=logfile,
            stderr=logfile,
            start_new_session=True,
            close_fds=True,
        )
    write_json(pidfile, {"pid": proc.pid, "fingerprint": wanted}, 0o600)
    return {"changed": True, "pid": proc.pid}


def stop_loop(config_path: str) -> dict[str, Any]:
    config = load_config(config_path)
    pid = int(read_json(os.path.join(config["state_dir"], "loop.pid")).get("pid", 0) or 0)
    if pid and _pid_alive(pid, config_path):
        os.kill(pid, signal.SIGTERM)
        return {"changed": True, "pid": pid}
    return {"changed": False}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true")
    mode.add_argument("--loop", action="store_true")
    mode.add_argument("--ensure-loop", action="store_true")
    mode.add_argument("--stop-loop", action="store_true")
    mode.add_argument("--restore", metavar="RUN_ID")
    mode.add_argument("--stop-instance", action="store_true")
    args = parser.parse_args(argv)
    if args.loop:
        loop(args.config)
        return 0
    if args.ensure_loop:
        print(json.dumps(ensure_loop(args.config, sys.executable)))
        return 0
    if args.stop_loop:
        print(json.dumps(stop_loop(args.config)))
        return 0
    config = load_config(args.config)
    if args.restore:
        print(json.dumps({"restored": restore(config, args.restore)}))
        return 0
    if args.stop_instance:
        imds, uploader, _ = build(config)
        try:
            print(json.dumps(stop_instance(config, imds, uploader.s3.credentials)))
        except (Ec2Error, ImdsError) as exc:
            log(f"could not stop the instance: {exc}")
            return 1
        return 0
    result = once(*build(config))
    print(json.dumps(result))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
