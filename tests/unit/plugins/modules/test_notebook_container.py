"""notebook_container's options are declared once: the module's ARGUMENT_SPEC.

Its DOCUMENTATION and the notebook role's meta/argument_specs.yml (for the notebook_*
variables that roles/notebook/tasks/run.yml passes to the module) must say the same; these
tests fail when one of them drifts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible_collections.wyvern.workbench.plugins.modules import notebook_container

from tests.support.module_docs import assert_option_agrees

ROOT = Path(__file__).resolve().parents[4]
ROLE = ROOT / "roles" / "notebook"
DOC = yaml.safe_load(notebook_container.DOCUMENTATION)
SPEC = notebook_container.ARGUMENT_SPEC
# Role variables that are raw on purpose, with the preflight task that checks them:
# a count of GPUs or a port number is not one of a fixed list of choices.
RAW_IN_ROLE = {"notebook_gpus": "gpus", "notebook_port": "port"}


def test_documentation_lists_exactly_the_options_of_the_argument_spec() -> None:
    assert set(DOC["options"]) == set(SPEC)


@pytest.mark.parametrize("option", sorted(SPEC))
def test_documentation_agrees_with_the_argument_spec(option: str) -> None:
    assert_option_agrees(DOC["options"][option], SPEC[option])


def test_check_mode_is_declared_partial_with_its_limits() -> None:
    attributes = DOC["attributes"]
    assert attributes["check_mode"]["support"] == "partial"
    details = " ".join(attributes["check_mode"]["details"])
    assert "does not predict" in details and "RV(probe)" in details
    assert attributes["diff_mode"]["support"] == "partial"


def _role_options() -> dict[str, Any]:
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    return specs["argument_specs"]["main"]["options"]


def _fed_options() -> dict[str, str]:
    """notebook_* variable -> the module option run.yml passes it to."""
    tasks = yaml.safe_load((ROLE / "tasks" / "run.yml").read_text())
    (task,) = [t for t in tasks if "wyvern.workbench.notebook_container" in t]
    fed = {}
    for option, value in task["wyvern.workbench.notebook_container"].items():
        names = set(re.findall(r"\bnotebook_\w+", value)) if isinstance(value, str) else set()
        if len(names) == 1 and option in SPEC and "/" not in value:
            fed[names.pop()] = option
    return fed


def test_run_yml_feeds_the_module_from_role_variables() -> None:
    fed = _fed_options()
    assert fed["notebook_expect_gpu"] == "expect_gpu"
    assert fed["notebook_health_timeout"] == "timeout" and fed["notebook_name"] == "name"
    assert {"notebook_state", "notebook_gpus", "notebook_bind_address", "notebook_port"} <= set(fed)


@pytest.mark.parametrize("variable", sorted(_fed_options()))
def test_role_argument_specs_agree_with_the_module_option(variable: str) -> None:
    option = _fed_options()[variable]
    role, module = _role_options()[variable], SPEC[option]
    if variable in RAW_IN_ROLE:
        assert RAW_IN_ROLE[variable] == option and role["type"] == "raw"
        assert not role.get("choices") and not module.get("choices")
        return
    assert role["type"] == module.get("type", "str")
    assert role.get("choices") == module.get("choices")
    if module.get("default") is not None:
        assert role["default"] == module["default"]


@pytest.mark.parametrize("value", ["auto", "true", "false", True, False])
def test_expect_gpu_accepts_its_documented_choices(value: Any) -> None:
    result = ArgumentSpecValidator({"expect_gpu": SPEC["expect_gpu"]}).validate(
        {"expect_gpu": value}
    )
    assert not result.error_messages
    assert result.validated_parameters["expect_gpu"] in DOC["options"]["expect_gpu"]["choices"]


@pytest.mark.parametrize("value", ["yes", "1", "maybe", "TRUE"])
def test_expect_gpu_refuses_anything_else_in_the_module_and_the_role(value: str) -> None:
    module = ArgumentSpecValidator({"expect_gpu": SPEC["expect_gpu"]}).validate(
        {"expect_gpu": value}
    )
    assert module.error_messages
    role_spec = {"notebook_expect_gpu": _role_options()["notebook_expect_gpu"]}
    role_spec["notebook_expect_gpu"] = {
        k: v for k, v in role_spec["notebook_expect_gpu"].items() if k != "description"
    }
    role = ArgumentSpecValidator(role_spec).validate({"notebook_expect_gpu": value})
    assert role.error_messages
