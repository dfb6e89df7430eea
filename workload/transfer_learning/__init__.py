"""Fast, reproducible PyTorch transfer learning on CPU or GPU."""

from __future__ import annotations

__version__ = "0.1.0"
