# Copyright: Wyvern workbench team
# Apache-2.0
"""Jinja tests for the notebook role, from the rules notebook_container itself applies.

``loopback_address``: true for an address that keeps Jupyter on the host (127.0.0.0/8,
::1, localhost), the module's own rule, so the role's preflight refuses a public bind
before the image build with exactly the module's judgement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ansible_collections.wyvern.workbench.plugins.module_utils._notebook_container.spec import (
    is_loopback,
)


def loopback_address(value: Any) -> bool:
    return is_loopback(str(value).strip())


class TestModule:
    def tests(self) -> dict[str, Callable[..., bool]]:
        return {"loopback_address": loopback_address}
