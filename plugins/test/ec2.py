# Copyright: Wyvern workbench team
# Apache-2.0
"""Jinja tests for the ec2_gpu_instance role.

``ec2_profile_not_ready``: true for a failed launch that EC2 refused because it does not
know the instance profile yet. IAM is eventually consistent: a profile made seconds
before (the durable-outputs role and profile are made right before the launch) can be
refused for about ten seconds ("Invalid IAM Instance Profile name"), and the same launch
succeeds a little later. The role's launch tasks retry while this holds; any other failure
is not retried. Nothing was created by a refused RunInstances call, so retrying is safe.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# EC2's words, e.g. "Value (wb-x) for parameter iamInstanceProfile.name is invalid. Invalid
# IAM Instance Profile name" or "... iamInstanceProfile.arn is invalid ...".
_NOT_READY = re.compile(r"iaminstanceprofile\.(name|arn)\b.*\binvalid|invalid iam instance profile")


def ec2_profile_not_ready(result: Any) -> bool:
    if not isinstance(result, dict) or not result.get("failed"):
        return False
    text = " ".join(str(result.get(key) or "") for key in ("msg", "exception")).lower()
    return bool(_NOT_READY.search(text))


class TestModule:
    def tests(self) -> dict[str, Callable[..., bool]]:
        return {"ec2_profile_not_ready": ec2_profile_not_ready}
