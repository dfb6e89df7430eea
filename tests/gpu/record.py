"""`python record.py NAME FILE >> results.jsonl`: one line {"step": NAME, "result": ...}.

The result is the JSON object that starts a line of FILE (a list if several do); the other
lines are the step's chatter (logs, progress), which is how a step's output is captured.
"""

from __future__ import annotations

import json
import sys


def objects(text: str) -> list[object]:
    decoder, found, i = json.JSONDecoder(), [], 0
    while (j := text.find("{", i)) >= 0:
        if j == 0 or text[j - 1] == "\n":
            try:
                obj, i = decoder.raw_decode(text, j)
            except ValueError:
                pass
            else:
                found.append(obj)
                continue
        i = j + 1
    return found


def main() -> int:
    name, path = sys.argv[1], sys.argv[2]
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            found = objects(fh.read())
    except OSError as exc:
        found = [{"error": f"{type(exc).__name__}: {exc}"}]
    result = found[0] if len(found) == 1 else found or {"error": f"no JSON in {path}"}
    print(json.dumps({"step": name, "result": result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
