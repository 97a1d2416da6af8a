"""Typed reads from one table of a scenario's TOML, each error naming ``file: table.key`` and
what would be right; and the budget's small language ("8, 2h")."""

from __future__ import annotations

import math
import re
from typing import Any

from perfgate import limits
from perfgate.documents.spec import Budget, ScenarioError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|min|h)")


def parse_budget(text: str) -> Budget:
    """``"8"`` (most starts per arm), ``"45m"`` / ``"2h"`` / ``"900s"`` (wall time), or
    both, comma-separated (``"8, 2h"``). ValueError names what is wrong."""
    starts: int | None = None
    seconds: float | None = None
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts or len(parts) > 2:
        raise ValueError(
            f"budget {text!r}: give most starts per arm (8), a wall time (45m, 2h, 900s) or "
            'both ("8, 2h")'
        )
    for part in parts:
        if part.isdigit():
            if starts is not None:
                raise ValueError(f"budget {text!r} gives the number of starts twice")
            starts = int(part)
            if not 2 <= starts <= limits.MAX_STARTS:
                raise ValueError(
                    f"budget {text!r}: most starts per arm must be 2..{limits.MAX_STARTS} "
                    "(a verdict needs two starts per arm)"
                )
        elif m := _DURATION.fullmatch(part):
            if seconds is not None:
                raise ValueError(f"budget {text!r} gives the wall time twice")
            seconds = float(m.group(1)) * {"s": 1, "m": 60, "min": 60, "h": 3600}[m.group(2)]
            if not 1 <= seconds <= 7 * 86400:
                raise ValueError(f"budget {text!r}: the wall time must be 1 s to 7 days")
        else:
            raise ValueError(
                f"budget {text!r}: {part!r} is neither a number of starts (8) nor a wall "
                "time (45m, 2h, 900s)"
            )
    return Budget(starts, seconds)


class Fields:
    """Typed reads from one TOML table, each error naming ``file: table.key``."""

    def __init__(self, source: str, prefix: str, table: Any) -> None:
        self.source, self.prefix = source, prefix
        if not isinstance(table, dict):
            raise ScenarioError(f"{source}: {prefix or 'the file'} must be a table")
        self.table = table

    def where(self, key: str) -> str:
        return f"{self.source}: {self.prefix}{'.' if self.prefix else ''}{key}"

    def check_keys(self, allowed: set[str]) -> None:
        unknown = sorted(set(self.table) - allowed)
        if unknown:
            raise ScenarioError(
                f"{self.where(unknown[0])} is not a known field; known here: "
                f"{', '.join(sorted(allowed))}"
            )

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.table.get(key, default)
        if value is None:
            if required:
                raise ScenarioError(f"{self.where(key)} is required (a string)")
            return None
        if not isinstance(value, str) or (required and not value):
            raise ScenarioError(f"{self.where(key)} must be a string, got {value!r} (quote it)")
        return value

    def integer(
        self, key: str, default: int | None, *, minimum: int = 0, maximum: int = limits.MAX_SEED
    ) -> int | None:
        value = self.table.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise ScenarioError(
                f"{self.where(key)} must be an integer >= {minimum} (at most {maximum}), "
                f"got {value!r}"
            )
        return value

    def number(self, key: str, default: float, *, low: float, high: float) -> float:
        value = self.table.get(key, default)
        if value == "inf":
            value = math.inf
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise ScenarioError(
                f"{self.where(key)} must be a number in [{low:g}, {high:g}], got {value!r}"
            )
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise ScenarioError(f"{self.where(key)} must be true or false, got {value!r}")
        return value

    def str_list(self, key: str) -> tuple[str, ...]:
        value = self.table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ScenarioError(
                f"{self.where(key)} must be a list of strings, got {value!r} "
                '(e.g. ["--max-num-seqs", "8"])'
            )
        for arg in value:
            if (problem := limits.arg_problem(arg)) is not None:
                raise ScenarioError(f"{self.where(key)}: {problem}")
        return tuple(value)

    def env(self, key: str) -> dict[str, str]:
        value = self.table.get(key, {})
        if not isinstance(value, dict):
            raise ScenarioError(f"{self.where(key)} must be a table of strings")
        for k, v in value.items():
            if not isinstance(v, str):
                raise ScenarioError(f"{self.where(key)}.{k} must be a string, got {v!r} (quote it)")
            if (problem := limits.env_problem(k, v)) is not None:
                raise ScenarioError(f"{self.where(key)}: {problem}")
        return dict(value)

    def sub(self, key: str) -> Fields:
        return Fields(
            self.source, f"{self.prefix}.{key}" if self.prefix else key, self.table.get(key, {})
        )


def integer(f: Fields, key: str, default: int, minimum: int, maximum: int) -> int:
    value = f.integer(key, default, minimum=minimum, maximum=maximum)
    return default if value is None else value
