"""Append-only per-video records, so that an interrupted run loses nothing and a restart skips what is done.

Each process (rank) appends JSON lines to `<out>/records/rank-<r>.jsonl`, one per (defence, attack, clip), flushed
and fsynced after every batch. A restart reads every records file and skips the keys already present; a
line cut short by a crash is ignored. `merge_records` (rank 0, after all ranks are done) writes the union,
deduplicated by key (first record wins), to `<out>/records.jsonl` atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from ..io import atomic_write

Key = tuple[str, str, str]  # (defence, attack, clip)


def record_key(record: dict) -> Key:
    return (record["defence"], record["attack"], record["clip"])


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The complete JSON lines of a file (a truncated or corrupt line, e.g. from a crash, is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    with path.open() as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def record_files(out: str | os.PathLike) -> list[Path]:
    """The merged records file (if any) and every rank's file."""
    out = Path(out)
    files = [out / "records.jsonl"] if (out / "records.jsonl").is_file() else []
    return files + sorted((out / "records").glob("rank-*.jsonl"))


def load_records(out: str | os.PathLike) -> list[dict]:
    """Every record of a results folder, deduplicated by key (first wins), in file order."""
    seen: set[Key] = set()
    records = []
    for path in record_files(out):
        for record in read_jsonl(path):
            key = record_key(record)
            if key not in seen:
                seen.add(key)
                records.append(record)
    return records


class RecordWriter:
    """Appends one rank's records; `done` holds the keys already recorded by any rank (for resuming)."""

    def __init__(self, out: str | os.PathLike, rank: int = 0):
        self.path = Path(out) / "records" / f"rank-{rank}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: set[Key] = {record_key(r) for r in load_records(out)}

    def append(self, records: Iterable[dict]) -> None:
        records = [r for r in records if record_key(r) not in self.done]
        if not records:
            return
        with self.path.open("a") as f:
            for record in records:
                f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done.update(record_key(r) for r in records)


def merge_records(out: str | os.PathLike) -> Path:
    """Write the union of all records to <out>/records.jsonl (temp file + rename) and return its path."""
    out = Path(out)
    records = load_records(out)
    target = out / "records.jsonl"
    with atomic_write(target) as f:
        for record in records:
            f.write(json.dumps(record, sort_keys=True) + "\n")
    return target
