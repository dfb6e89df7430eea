"""Import the workload package from this checkout, whatever the venv's editable install says."""

from __future__ import annotations

import sys
from pathlib import Path

WORKLOAD = str(Path(__file__).resolve().parents[3] / "workload")
if sys.path[:1] != [WORKLOAD]:
    sys.path.insert(0, WORKLOAD)
