"""The ec2_gpu_instance role's public interface: defaults mirrored by argument_specs."""

from __future__ import annotations

from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[3] / "roles/ec2_gpu_instance"


def test_argument_specs_mirror_the_defaults_exactly() -> None:
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    specs = yaml.safe_load((ROLE / "meta/argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert set(options) == set(defaults)
    assert {name: spec.get("default") for name, spec in options.items()} == defaults
    assert all(name.startswith("ec2_gpu_instance_") for name in defaults)


def test_price_table_covers_the_default_type_and_says_where_it_comes_from() -> None:
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    assert defaults["ec2_gpu_instance_type"] in defaults["ec2_gpu_instance_prices"]
    assert all(price > 0 for price in defaults["ec2_gpu_instance_prices"].values())
    assert defaults["ec2_gpu_instance_prices_source"] and defaults["ec2_gpu_instance_prices_date"]
