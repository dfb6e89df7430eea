"""The instance role's S3 policy: only the workbench's prefix, judged by a small evaluator.

The evaluator follows IAM's rules for what this policy uses: implicit deny, Allow
statements matched on Action and Resource with IAM wildcards (`*` any run, `?` one
character, case-sensitive for resources, not for actions), and StringLike or ArnLike
conditions on a request's context keys (a key the request lacks fails the condition).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError

ROOT = Path(__file__).resolve().parents[4]
_spec = importlib.util.spec_from_file_location(
    "ec2_gpu_instance_filters_policy", ROOT / "plugins/filter/ec2_gpu_instance.py"
)
assert _spec and _spec.loader
filters = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(filters)

BUCKET = "wyvern-123456789012-us-east-1-tester"
PREFIX = "workbench"


def _like(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def allowed(policy: dict[str, Any], action: str, resource: str, **context: str) -> bool:
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow", "the evaluator knows Allow statements only"
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}
        if not any(_like(a, action, ignore_case=True) for a in _as_list(statement["Action"])):
            continue
        if not any(_like(r, resource) for r in _as_list(statement["Resource"])):
            continue
        ok = True
        for operator, keys in statement.get("Condition", {}).items():
            assert operator in ("StringLike", "ArnLike"), operator
            for key, patterns in keys.items():
                value = context.get(key)
                if value is None or not any(_like(p, value) for p in _as_list(patterns)):
                    ok = False
        if ok:
            return True
    return False  # implicit deny


POLICY = filters.ec2_outputs_policy(BUCKET, PREFIX)
OBJ = f"arn:aws:s3:::{BUCKET}"


@pytest.mark.parametrize(
    ("action", "resource", "context"),
    [
        ("s3:PutObject", f"{OBJ}/workbench/outputs/run1/checkpoint.pt", {}),
        ("s3:GetObject", f"{OBJ}/workbench/outputs/run1/metrics.json", {}),
        ("s3:ListBucket", OBJ, {"s3:prefix": "workbench/outputs/"}),
        ("s3:ListBucket", OBJ, {"s3:prefix": "workbench"}),
    ],
)
def test_requests_under_the_prefix_are_allowed(action, resource, context) -> None:
    assert allowed(POLICY, action, resource, **context)


@pytest.mark.parametrize(
    ("action", "resource", "context"),
    [
        # Another workbench of the same owner, even one whose name starts the same.
        ("s3:PutObject", f"{OBJ}/workbench2/outputs/run1/checkpoint.pt", {}),
        ("s3:GetObject", f"{OBJ}/other/secret.txt", {}),
        # The bucket's top level.
        ("s3:PutObject", f"{OBJ}/checkpoint.pt", {}),
        # Another bucket, same key.
        ("s3:PutObject", "arn:aws:s3:::someone-else/workbench/outputs/x", {}),
        # Deleting, even under the prefix: only the control node removes.
        ("s3:DeleteObject", f"{OBJ}/workbench/outputs/run1/checkpoint.pt", {}),
        # Bucket-wide actions.
        ("s3:PutBucketPolicy", OBJ, {}),
        ("s3:DeleteBucket", OBJ, {}),
        # Listing the whole bucket, another prefix, or without a prefix.
        ("s3:ListBucket", OBJ, {}),
        ("s3:ListBucket", OBJ, {"s3:prefix": ""}),
        ("s3:ListBucket", OBJ, {"s3:prefix": "other/"}),
        ("s3:ListBucket", OBJ, {"s3:prefix": "workbench2/"}),
        ("s3:ListAllMyBuckets", "*", {}),
        ("iam:PassRole", "*", {}),
    ],
)
def test_requests_outside_the_prefix_are_denied(action, resource, context) -> None:
    assert not allowed(POLICY, action, resource, **context)


def test_the_policy_names_the_partition() -> None:
    policy = filters.ec2_outputs_policy(BUCKET, PREFIX, "aws-cn")
    assert policy["Statement"][0]["Resource"] == f"arn:aws-cn:s3:::{BUCKET}/{PREFIX}/*"


@pytest.mark.parametrize(
    "prefix", ["", "*", "work*", "/workbench", "workbench/", "a//b", "${aws:username}"]
)
def test_a_prefix_that_would_widen_the_policy_is_refused(prefix: str) -> None:
    with pytest.raises(AnsibleFilterError, match="prefix"):
        filters.ec2_outputs_policy(BUCKET, prefix)


@pytest.mark.parametrize("bucket", ["", "Upper", "a", "dots.in.name", "-dash", "x" * 64])
def test_a_bad_bucket_name_is_refused(bucket: str) -> None:
    with pytest.raises(AnsibleFilterError, match="bucket"):
        filters.ec2_outputs_policy(bucket, PREFIX)


def test_the_default_bucket_is_per_owner_account_and_region() -> None:
    name = filters.ec2_outputs_bucket_name("Jane.Doe", "123456789012", "eu-west-1")
    assert name == "wyvern-123456789012-eu-west-1-jane-doe"
    long = filters.ec2_outputs_bucket_name("x" * 80, "123456789012", "ap-southeast-2")
    assert len(long) <= 63 and long.startswith("wyvern-123456789012-ap-southeast-2-xxx")


def test_only_ec2_may_assume_the_role() -> None:
    trust = filters.ec2_assume_role_policy()
    assert trust["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]


# ---------------------------------------------------------------- stopping its own instance

ROLE = "wyvern-workbench-tester"
STOPPER = filters.ec2_outputs_policy(BUCKET, PREFIX, "aws", ROLE)
INSTANCE = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0"
OWN_PROFILE = f"arn:aws:iam::123456789012:instance-profile/{ROLE}"


def test_the_instance_may_stop_only_instances_with_its_own_profile() -> None:
    assert allowed(STOPPER, "ec2:StopInstances", INSTANCE, **{"ec2:InstanceProfile": OWN_PROFILE})
    # Another workbench's instance (its own profile), one whose name starts the same, or one
    # without a profile.
    for other in (f"{OWN_PROFILE}-2", "arn:aws:iam::123456789012:instance-profile/other"):
        assert not allowed(STOPPER, "ec2:StopInstances", INSTANCE, **{"ec2:InstanceProfile": other})
    assert not allowed(STOPPER, "ec2:StopInstances", INSTANCE)


@pytest.mark.parametrize(
    "action",
    [
        "ec2:TerminateInstances",
        "ec2:StartInstances",
        "ec2:ModifyInstanceAttribute",
        "ec2:RunInstances",
    ],
)
def test_the_instance_may_do_nothing_else_in_ec2(action: str) -> None:
    assert not allowed(STOPPER, action, INSTANCE, **{"ec2:InstanceProfile": OWN_PROFILE})


def test_without_a_profile_the_policy_holds_no_ec2_right() -> None:
    assert not [st for st in POLICY["Statement"] if "ec2:" in str(st["Action"])]
    assert STOPPER["Statement"][:2] == POLICY["Statement"]


@pytest.mark.parametrize("profile", ["a*", "a/b", "${ec2:SourceInstanceARN}", "x" * 129])
def test_a_profile_name_that_would_widen_the_policy_is_refused(profile: str) -> None:
    with pytest.raises(AnsibleFilterError, match="instance profile"):
        filters.ec2_outputs_policy(BUCKET, PREFIX, "aws", profile)
