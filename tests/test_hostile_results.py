"""A crafted results.json given to ``perfgate report`` cannot put live Markdown into a pull
request: every text or number field of a stored run, replaced one kind at a time by a hostile
string (raw HTML, an @mention, a #reference, backticks, a table pipe, a link, newlines that
would start a heading or close a fence), either renders as inert text or is refused with a
message (exit 2), never a traceback."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

from click.testing import CliRunner

from perfgate.cli.main import main
from perfgate.documents.io import read_json

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = "x<img src=y>@alice #12 `z` | [l](http://e) \n## H\n```\n</details>"


def strip_code(md: str) -> str:
    """``md`` without its fenced blocks and inline code spans (CommonMark's rules: a fence
    closes on a line of at least as many backticks; a span on the next run of exactly as
    many), where HTML, mentions and headings are inert."""
    out, lines, i = [], md.split("\n"), 0
    while i < len(lines):
        if m := re.match(r"^(`{3,})", lines[i]):
            i += 1
            while i < len(lines) and not re.match(rf"^`{{{len(m.group(1))},}}\s*$", lines[i]):
                i += 1
            i += 1
            continue
        out.append(lines[i])
        i += 1
    text, kept, pos = "\n".join(out), [], 0
    while m := re.compile(r"(?<!`)(`+)(?!`)").search(text, pos):
        close = re.compile(rf"(?<!`)`{{{len(m.group(1))}}}(?!`)").search(text, m.end())
        if close is None:
            break
        kept.append(text[pos : m.start()])
        pos = close.end()
    return "".join(kept) + text[pos:]


def _leaves(doc, path=()):
    """Paths of the text and number fields, list indices as '*' (records and GPQA samples,
    which no report renders one by one, left out)."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(doc, list):
        for value in doc:
            yield from _leaves(value, (*path, "*"))
    elif (
        isinstance(doc, str | int | float)
        and not isinstance(doc, bool)
        and "records" not in path
        and "samples" not in path
    ):
        yield path


def _replace(doc, path, value) -> None:
    key, rest = path[0], path[1:]
    for k in range(len(doc)) if key == "*" else [key]:
        if not rest:
            doc[k] = value
        else:
            _replace(doc[k], rest, value)


def test_every_field_of_a_stored_run_renders_inert_or_is_refused(tmp_path):
    doc = read_json(ROOT / "docs/gpu/results/h100-120b-tinygemm-broken.json.xz")
    paths = sorted(set(_leaves(doc)))
    assert len(paths) > 200
    rendered, leaks = 0, []
    for path in paths:
        crafted = copy.deepcopy(doc)
        _replace(crafted, path, HOSTILE)
        (tmp_path / "r.json").write_text(json.dumps(crafted))
        result = CliRunner().invoke(main, ["report", str(tmp_path / "r.json")])
        assert result.exit_code in (0, 2) and "Traceback" not in result.output, (path, result)
        if result.exit_code == 2:
            assert "r.json" in result.output, (path, result.output)  # the message names it
            continue
        rendered += 1
        live = strip_code(result.output)
        if "<img" in live or re.search(r"(?<![&\w])@alice", live) or "\n## H" in live:
            leaks.append(path)
    assert leaks == []
    assert rendered > 150  # most fields are text a report shows, escaped; not all refused
