"""The one parser of `key=value` options on command lines and in spec strings.

    parse_value("0.5") -> 0.5;   parse_assignments(["t_star=4", "guidance=false"]) -> {"t_star": 4, "guidance": False}

Used by defence specs (`jpeg:quality=50`), `videopure eval --config/--attack-config/--attack-clips` and
`videopure comfy-run --set NODE.INPUT=VALUE`; and back: `command_line` writes a command from parsed arguments.
"""

from __future__ import annotations

import argparse
import json
import shlex
from typing import Callable, Iterable, Sequence


def parse_value(text: str):
    """One option value: 'true'/'false' -> bool, 'none'/'null' -> None, '3' -> 3, '0.5' -> 0.5,
    '32x28x28' -> (32, 28, 28), JSON strings, lists and objects ('"none"' -> 'none', '[1, 2]'), else the text."""
    text = text.strip()
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(low)
        except ValueError:
            pass
    if text[:1] in ('"', "[", "{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    parts = low.split("x")
    if len(parts) > 1 and all(part.isdigit() for part in parts):
        return tuple(int(part) for part in parts)
    return text


def parse_assignments(items: Iterable[str], what: str = "option", example: str = "t_star=6") -> dict:
    """['KEY=VALUE', ...] -> {KEY: parse_value(VALUE)} in order (a repeated key: the last one wins).

    Raises ValueError naming `what` and an `example` for an item without '=' or with an empty key."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what} {item!r} is not key=value (e.g. {example}).")
        out[key.strip()] = parse_value(value)
    return out


def command_line(prefix: Sequence[str], args, add_arguments: Callable) -> str:
    """The command that reproduces `args` (an argparse Namespace): `prefix` (e.g. ["videopure", "bench"]) and the
    options that differ from their defaults in the parser `add_arguments` builds, shell-quoted (for reports)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    words = list(prefix)
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        flag = action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction):
            words.append(flag if value else "--no-" + flag[2:])
        elif value is True:
            words.append(flag)
        elif isinstance(value, (list, tuple)):
            words += [flag, *(shlex.quote(str(v)) for v in value)]
        else:
            words += [flag, shlex.quote(str(value))]
    return " ".join(words)
