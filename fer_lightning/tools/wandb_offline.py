"""Read what an offline W&B run recorded (run settings, config, history, summary) without syncing it.

An offline run keeps everything in `offline-run-*/run-*.wandb`: a 7-byte W&B header, then LevelDB's log format
(32 KiB blocks of records, each a 7-byte header: CRC32C, little-endian length, type) carrying protobuf `Record`s.
wandb >= 0.19 dropped its Python reader (the Go core writes the file), so this small one checks what runs log:
`fer-wandb-offline logs/train/runs/<run>/wandb/offline-run-*` (`python -m fer_lightning.tools.wandb_offline`).
"""

from __future__ import annotations

import argparse
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

BLOCK_SIZE, HEADER_SIZE = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    run: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    artifacts: list[dict] = field(default_factory=list)


def iter_records(path: Path):
    """Yield the protobuf `Record`s of a `.wandb` file, stopping quietly at a truncated tail."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if not data.startswith(b":W&B"):
        raise ValueError(f"{path}: not a W&B transaction log (header {data[:7]!r})")
    position, pending = HEADER_SIZE, b""
    while position + HEADER_SIZE <= len(data):
        left_in_block = BLOCK_SIZE - position % BLOCK_SIZE
        if left_in_block < HEADER_SIZE:  # a block's tail too short for a header is zero padding
            position += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + HEADER_SIZE])
        chunk = data[position + HEADER_SIZE : position + HEADER_SIZE + length]
        position += HEADER_SIZE + length
        if len(chunk) < length or kind not in (FULL, FIRST, MIDDLE, LAST):
            return
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def item_key(item) -> str:
    return item.key or ".".join(item.nested_key)


def read_offline_run(run_dir: str | Path) -> OfflineRun:
    """Replay the records: summary updates in order give the final summary, as `wandb sync` would upload it."""
    (path,) = Path(run_dir).glob("run-*.wandb")
    result = OfflineRun()
    for record in iter_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            result.run = {"project": run.project, "group": run.run_group, "name": run.display_name}
            result.run |= {"tags": list(run.tags), "job_type": run.job_type, "id": run.run_id}
            result.config |= {item_key(i): json.loads(i.value_json) for i in run.config.update}
        elif kind == "config":
            result.config |= {item_key(i): json.loads(i.value_json) for i in record.config.update}
        elif kind == "history":
            result.history.append({item_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            result.summary |= {item_key(i): json.loads(i.value_json) for i in record.summary.update}
        elif kind == "artifact":
            art = record.artifact
            result.artifacts.append({"name": art.name, "type": art.type, "aliases": list(art.aliases)})
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fer-wandb-offline", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="offline-run-* directories (each holds a run-*.wandb)")
    for directory in parser.parse_args(argv).run_dirs:
        offline = read_offline_run(directory)
        print(json.dumps({"run": offline.run, "summary": offline.summary, "artifacts": offline.artifacts}, indent=2))
        print(f"{len(offline.history)} history rows; config keys: {sorted(offline.config)}")


if __name__ == "__main__":
    main()
