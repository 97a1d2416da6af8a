"""Text safe in Markdown (PR descriptions, issues, step summaries) and the number formats every
report shares."""

from __future__ import annotations

import math
import re
from typing import Any


def md_text(value: Any) -> str:
    """Literal inline Markdown text: one line, emphasis/link/table/HTML characters escaped, and
    no live @mention or #reference (a report is pasted into PRs and issues: text from a
    server, a file or a flag must not ping people or link issues)."""
    text = " ".join(str(value).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = re.sub(r"#(?=\d)", "&#35;", text)
    text = re.sub(r"@(?=\w)", "&#64;", text)
    return re.sub(r"([\\`*_\[\]|~])", r"\\\1", text)


def md_code(value: Any, *, in_table: bool = True) -> str:
    """Inline code that holds any text: a fence longer than any run of backticks inside, one
    line, and (in a table cell) '|' escaped, which would otherwise end the cell."""
    text = " ".join(str(value).split())
    if in_table:
        text = text.replace("|", "\\|")
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_block(text: str) -> list[str]:
    """A fenced code block whose fence no line of ``text`` can close."""
    fence = "`" * max(3, max((len(m) for m in re.findall(r"`{3,}", text)), default=0) + 1)
    return [fence, text, fence]


def fmt(v: Any, fmt: str = "{:.2f}") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return fmt.format(v)


def pct(v: float | None) -> str:
    if v is None or math.isnan(v):  # JSON holds an unbounded interval end as null
        return "n/a"
    if not math.isfinite(v):
        return "∞" if v > 0 else "-∞"
    return f"{v * 100:+.1f}%"


def size(v: Any) -> str:
    """A relative size without sign (5.2%), or n/a."""
    if v is None or not isinstance(v, int | float) or not math.isfinite(v):
        return "n/a"
    return f"{v * 100:.1f}%"


def short_g(v: float) -> str:
    return f"{v:.6g}"


def us(v: Any, signed: bool = False) -> str:
    if v is None or not math.isfinite(v):
        return "n/a" if v is None or v != v else ("+inf" if v > 0 else "-inf")
    return f"{v:+.2f}" if signed else f"{v:.2f}"
