"""data.loader=device's shards: training pads to equal steps per rank, evaluation partitions the split exactly."""

from __future__ import annotations

import multiprocessing
import socket
from collections import Counter
from pathlib import Path

import pytest
import torch

from fer_lightning.data.datamodule import FERDataModule
from fer_lightning.data.device_loader import EpochPermutation
from tests.conftest import write_fer_csv

WORLD_SIZE = 2


@pytest.mark.parametrize(("size", "world_size"), [(13, 2), (3589, 2), (3589, 4), (7, 3), (2, 4)])
def test_unpadded_shards_partition_the_split(size: int, world_size: int) -> None:
    shards = [
        EpochPermutation(size, shuffle=False, rank=rank, world_size=world_size, pad=False).indices().tolist()
        for rank in range(world_size)
    ]
    assert sorted(i for shard in shards for i in shard) == list(range(size))  # each index once, none added
    lengths = [len(EpochPermutation(size, rank=r, world_size=world_size, pad=False)) for r in range(world_size)]
    assert lengths == [len(shard) for shard in shards]
    assert max(lengths) - min(lengths) <= 1


def test_padded_training_shards_are_equal_so_every_rank_steps_alike() -> None:
    shards = [EpochPermutation(13, seed=3, rank=rank, world_size=2).indices() for rank in range(2)]
    assert [len(shard) for shard in shards] == [7, 7]  # 13 + 1 duplicate
    assert set(torch.cat(shards).tolist()) == set(range(13))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def evaluate_rank(rank: int, port: int, csv: str, cache: str, results: multiprocessing.Queue) -> None:
    """One gloo rank: its val shard through the datamodule (no trainer: the rank comes from torch.distributed)."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        dm = FERDataModule(csv, cache_dir=cache, num_workers=0, loader="device", eval_batch_size=4)
        dm.setup("fit")
        batches = list(dm.dataloader("val"))
        images = [image.numpy().tobytes() for views, _ in batches for image in views]
        results.put((rank, images, len(batches)))
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.usefixtures("one_thread")
def test_ddp_ranks_evaluate_every_val_image_exactly_once(tmp_path: Path) -> None:
    # 9 PublicTest images over 2 ranks in batches of 4: shards of 5 and 4 (2 batches and 1), no duplicate
    csv = write_fer_csv(tmp_path / "fer.csv", {"Training": 8, "PublicTest": 9, "PrivateTest": 4})
    split = FERDataModule(str(csv), cache_dir=str(tmp_path / "cache"), num_workers=0, loader="device")
    split.setup("fit")  # also writes the cache, so the ranks below only read it
    expected = Counter(image.tobytes() for image in split.splits["val"][0])

    context = multiprocessing.get_context("fork")
    results, port = context.Queue(), free_port()
    ranks = [
        context.Process(target=evaluate_rank, args=(rank, port, str(csv), str(tmp_path / "cache"), results))
        for rank in range(WORLD_SIZE)
    ]
    for process in ranks:
        process.start()
    per_rank = {rank: (images, n) for rank, images, n in (results.get(timeout=120) for _ in ranks)}
    for process in ranks:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert Counter(image for images, _ in per_rank.values() for image in images) == expected
    assert [len(per_rank[rank][0]) for rank in range(WORLD_SIZE)] == [5, 4]
    assert [per_rank[rank][1] for rank in range(WORLD_SIZE)] == [2, 1]  # uneven batch counts: eval allows them
