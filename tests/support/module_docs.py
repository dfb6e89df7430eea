"""A module's DOCUMENTATION against its argument spec: one check for every module test."""

from __future__ import annotations

from typing import Any


def assert_option_agrees(doc: dict[str, Any], spec: dict[str, Any]) -> None:
    """One option as documented and as declared: type, elements, default, choices, required."""
    assert doc.get("type", "str") == spec.get("type", "str")
    assert doc.get("elements") == spec.get("elements")
    assert doc.get("default") == spec.get("default")
    assert doc.get("choices") == spec.get("choices")
    assert bool(doc.get("required")) == bool(spec.get("required"))
