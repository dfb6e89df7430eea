"""Load the autostop agent's two files as modules (they live in the role, not a package)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

FILES = Path(__file__).resolve().parents[3] / "roles" / "autostop" / "files"


def load():
    if str(FILES) not in sys.path:
        sys.path.insert(0, str(FILES))
    return importlib.import_module("wyvern_autostop"), importlib.import_module("wyvern_hardstop")
