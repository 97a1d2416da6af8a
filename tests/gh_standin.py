#!/usr/bin/env python3
"""A stand-in for the GitHub CLI (``gh``) for the CI scripts' tests: it records every call in
``$GH_STATE`` (a JSON file: the calls, and the comments, issues and labels they made) and
answers the calls ci/pr.sh and ci/nightly.sh make the way GitHub would. Any other call fails,
so a script that starts using a new call fails its test until this stand-in learns it.
``GH_FAIL=1`` makes every call fail (a GitHub outage)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = "perfgate-tests/vllm"


def load(path: Path) -> dict:
    if path.exists():
        return json.loads(path.read_text())
    return {"calls": [], "comments": [], "issues": [], "labels": []}


def value(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def main(args: list[str]) -> int:
    path = Path(os.environ["GH_STATE"])
    state = load(path)
    state["calls"].append(args)
    try:
        return answer(args, state)
    finally:
        path.write_text(json.dumps(state, indent=1))


def answer(args: list[str], state: dict) -> int:
    if os.environ.get("GH_FAIL"):
        print("gh: HTTP 503", file=sys.stderr)
        return 1
    match args[:2]:
        case ["repo", "view"]:
            print(REPO)
        case ["api", _]:
            return api(args[1:], state)
        case ["pr", "comment"]:
            body = Path(value(args, "--body-file") or "").read_text()
            state["comments"].append({"id": 1000 + len(state["comments"]), "pr": int(args[2]),
                                      "body": body, "edits": 0})  # fmt: skip
        case ["label", "create"]:
            if args[2] not in state["labels"]:
                state["labels"].append(args[2])
        case ["issue", "list"]:
            label = value(args, "--label")
            open_ = [i for i in state["issues"] if label in i["labels"] and i["state"] == "open"]
            print(open_[0]["number"] if open_ else "")
        case ["issue", "create"]:
            label = value(args, "--label")
            if label not in state["labels"]:
                print(f"could not add label: '{label}' not found", file=sys.stderr)
                return 1
            number = 1 + len(state["issues"])
            state["issues"].append({
                "number": number, "title": value(args, "--title"), "labels": [label],
                "state": "open", "body": Path(value(args, "--body-file") or "").read_text(),
                "comments": [],
            })  # fmt: skip
            print(f"https://github.com/{REPO}/issues/{number}")
        case ["issue", "comment"]:
            issue = next(i for i in state["issues"] if i["number"] == int(args[2]))
            issue["comments"].append(Path(value(args, "--body-file") or "").read_text())
        case _:
            print(f"gh stand-in: unknown call {args}", file=sys.stderr)
            return 2
    return 0


def api(args: list[str], state: dict) -> int:
    if args[0] == "--method" and args[1] == "PATCH":
        comment_id = int(args[2].rsplit("/", 1)[1])
        body = next(a for a in args if a.startswith("body=@"))[len("body=@") :]
        comment = next(c for c in state["comments"] if c["id"] == comment_id)
        comment["body"] = Path(body).read_text()
        comment["edits"] += 1
        print("{}")
        return 0
    if args[0] == "--paginate" and args[1].endswith("/comments"):
        pr = int(args[1].split("/")[-2])
        jq = value(args, "--jq") or ""
        marker = jq.split('startswith("', 1)[1].split('")', 1)[0]
        for c in state["comments"]:
            if c["pr"] == pr and c["body"].startswith(marker):
                print(c["id"])
        return 0
    print(f"gh stand-in: unknown api call {args}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
