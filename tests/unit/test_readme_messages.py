"""Users grep for the error messages the README quotes: each one must exist in the code."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE_DIRS = ["roles", "plugins", "playbooks", "workload/transfer_learning", "scripts", "inventory"]
READMES = [
    ROOT / "README.md",
    *sorted((ROOT / "roles").glob("*/README.md")),
    ROOT / "workload" / "README.md",
]


def _code_text() -> str:
    parts = []
    for folder in CODE_DIRS:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in {".py", ".yml", ".yaml", ".sh", ".j2", ".cfg"}:
                text = path.read_text(errors="replace")
                if path.suffix == ".py":  # join implicitly concatenated string literals
                    text = re.sub(r"[\"']\s*\n\s*[rbf]*[\"']", "", text)
                parts.append(text)
    # A message may be folded across YAML lines: compare with runs of spaces collapsed.
    return re.sub(r"\s+", " ", "\n".join(parts))


def quoted_messages(text: str) -> list[str]:
    """The messages a troubleshooting entry quotes: **"..."** at the start of a bullet."""
    section = text.split("## Troubleshooting", 1)[1] if "## Troubleshooting" in text else ""
    section = re.split(r"\n## ", section, maxsplit=1)[0]
    return re.findall(r'^\s*-\s+\*\*"([^"]+)"', section, re.M)


def test_every_quoted_message_exists_in_the_code() -> None:
    code = _code_text()
    missing = []
    for readme in READMES:
        for message in quoted_messages(readme.read_text()):
            # "..." stands for a value the message fills in; every literal piece must be there.
            pieces = [p.strip() for p in re.split(r"\.\.\.|…|<[^>]+>", message) if p.strip()]
            if not all(re.sub(r"\s+", " ", piece) in code for piece in pieces):
                missing.append(f"{readme.relative_to(ROOT)}: {message}")
    assert not missing, "README quotes messages the code never prints:\n" + "\n".join(missing)


def test_the_check_finds_quotes_at_all() -> None:
    sample = '## Troubleshooting\n\n- **"no such thing"**: fix it.\n- plain entry\n## Next\n'
    assert quoted_messages(sample) == ["no such thing"]
