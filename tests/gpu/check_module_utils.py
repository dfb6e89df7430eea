"""The module_utils GPU functions against this machine's real driver; one JSON object out.

`python tests/gpu/check_module_utils.py` (run by scripts/gpu_check.sh). Loads
plugins/module_utils/_gpu.py (the project's one GPU rule) by path with importlib, checks
that importing it pulls in nothing outside the standard library, runs the module's own
in-container probe script with this python, and asks diagnose_gpu about the real driver
and about forced mismatches.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "plugins" / "module_utils" / "_gpu.py"


def _nvidia_smi(field: str) -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (
        out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    )


def main() -> int:
    before = set(sys.modules)
    spec = importlib.util.spec_from_file_location("_gpu", MODULE)
    assert spec and spec.loader
    nc = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = nc  # dataclasses look their module up while it loads
    spec.loader.exec_module(nc)
    roots = {name.split(".")[0] for name in set(sys.modules) - before}
    roots.discard(spec.name)
    non_stdlib = sorted(r for r in roots if r not in sys.stdlib_module_names)

    probe_run = subprocess.run(
        [sys.executable, "-c", nc.PROBE_SCRIPT], capture_output=True, text=True, timeout=120
    )
    probe = json.loads(probe_run.stdout.strip().splitlines()[-1]) if probe_run.stdout else {}
    driver = nc.host_driver_version()
    smi_driver = _nvidia_smi("driver_version")
    needed = nc.min_driver_for_cuda(probe.get("cuda"))
    meets = nc.version_tuple(driver) >= nc.version_tuple(needed) if driver and needed else None
    result = {
        "imports_outside_stdlib": non_stdlib,
        "host_has_nvidia_gpu": nc.host_has_nvidia_gpu(),
        "host_driver_version": driver,
        "nvidia_smi_driver_version": smi_driver,
        "driver_versions_agree": driver == smi_driver,
        "probe": probe,
        "probe_stderr_tail": probe_run.stderr[-500:],
        "min_driver_for_cuda": needed,
        "driver_meets_minimum": meets,
        # What the module would say if the container saw no GPU on this very host.
        "diagnosis_real_driver": nc.diagnose_gpu(True, probe, "all", driver, []),
        # A forced mismatch: the same torch build against an older (CUDA 12.2 era) driver.
        "diagnosis_forced_old_driver": nc.diagnose_gpu(True, probe, "all", "535.104.05", []),
        "diagnosis_no_driver": nc.diagnose_gpu(True, probe, "none", None, ["runc"]),
        "diagnosis_unexpected_gpu": nc.diagnose_gpu(False, probe, "all", driver, ["nvidia"]),
    }
    print(json.dumps(result, indent=1))
    ok = (
        not non_stdlib
        and result["host_has_nvidia_gpu"]
        and driver is not None
        and result["driver_versions_agree"]
        and bool(meets)
        and bool(probe.get("cuda_available"))
        and "is older than" in result["diagnosis_forced_old_driver"]
    )
    print("module_utils check:", "OK" if ok else "MISMATCH (see above)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
