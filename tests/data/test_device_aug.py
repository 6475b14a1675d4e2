"""data.loader=device: BatchAugment against albumentations, the epoch permutation and its DDP shards, the loader in
the DataModule, and a train -> validate -> test run on it."""

from __future__ import annotations

import json
from pathlib import Path

import albumentations as A
import cv2
import hydra
import numpy as np
import pytest
import torch

from fer_lightning.data.datamodule import FERDataModule
from fer_lightning.data.device_aug import BatchAugment, Draw
from fer_lightning.data.device_loader import DeviceBatches, EpochPermutation
from fer_lightning.data.formats.synthetic import render_images
from fer_lightning.data.views import center_crop
from fer_lightning.training import run_training
from tests.conftest import compose_train, write_fer_csv
from tests.scripts import one_thread, run_script  # noqa: F401 (fixture)

PRESETS = ("none", "light", "keras", "heavy")
FACES = render_images(np.arange(64) % 7, np.random.default_rng(0))  # smooth 48x48 faces, every class


def preset(name: str, tmp_path: Path, *overrides: str):
    """(albumentations train transform, device BatchAugment, crop size) of an aug preset, from the real config."""
    cfg = compose_train([f"aug={name}", *overrides], tmp_path)
    train = hydra.utils.instantiate(cfg.aug.train) if cfg.aug.train is not None else None
    device = hydra.utils.instantiate(cfg.aug.device) if cfg.aug.device is not None else None
    return train, device, cfg.aug.crop_size


def batch(images: np.ndarray, repeats: int = 1) -> torch.Tensor:
    return torch.from_numpy(np.repeat(images, repeats, 0))[:, None]


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("crop", [None, 40, 44])
def test_every_preset_gives_uint8_batches_of_the_crop_size(name: str, crop: int | None, tmp_path: Path) -> None:
    _, augment, crop_size = preset(name, tmp_path, f"aug.crop_size={crop or 'null'}")
    assert crop_size == crop
    augment = augment or BatchAugment(crop_size=crop)  # aug=none has no device node: no augmentation
    for channels in (1, 3):
        images = torch.randint(0, 256, (5, channels, 48, 48), dtype=torch.uint8)
        out = augment(images)
        assert out.dtype == torch.uint8
        assert out.shape == (5, channels, crop or 48, crop or 48)


def test_every_sample_draws_its_own_parameters_and_a_seed_reproduces_them(tmp_path: Path) -> None:
    _, augment, _ = preset("heavy", tmp_path)
    images = batch(FACES[:1], 16)  # one face 16 times: any difference comes from the draws
    first = augment(images, torch.Generator().manual_seed(0))
    assert len({tuple(sample.flatten().tolist()) for sample in first}) >= 14  # p = 0.5 steps: a few may tie
    assert torch.equal(first, augment(images, torch.Generator().manual_seed(0)))
    assert not torch.equal(first, augment(images, torch.Generator().manual_seed(1)))


def test_flip_mirrors_exactly() -> None:
    images = batch(FACES[:4])
    assert torch.equal(BatchAugment(flip_p=1.0)(images), images.flip(-1))
    assert torch.equal(BatchAugment(flip_p=0.0)(images), images)


def test_disabled_or_zero_strength_steps_return_the_batch_exactly() -> None:
    images = batch(FACES[:8])
    off = {"p": 0.0}
    assert torch.equal(BatchAugment()(images), images)
    assert torch.equal(BatchAugment(0.0, off, off, off, off)(images), images)
    zero = BatchAugment(  # every step drawn (p = 1) but with ranges that do nothing: the resample path is exact
        resized_crop={"p": 1.0, "scale": [1.0, 1.0], "ratio": [1.0, 1.0]},
        affine={"p": 1.0, "rotate": [0, 0], "translate": [0, 0], "scale": [1, 1]},
        brightness_contrast={"p": 1.0, "brightness": [0, 0], "contrast": [0, 0]},
        erase={"p": 1.0, "height": [0.0, 0.0], "width": [0.0, 0.0]},
        crop_size=48,
    )
    assert torch.equal(zero(images), images)


def test_geometry_matches_albumentations_pixel_for_pixel() -> None:
    """Fixed parameters: rotation direction, center, whole-pixel shift and scale as albumentations.Affine."""
    spec = {"rotate": (8.0, 8.0), "translate": (0.1, 0.1), "scale": (1.1, 1.1)}
    device = BatchAugment(affine={"p": 1.0, **spec})(batch(FACES[:8]))[:, 0].numpy().astype(int)
    cv = A.Affine(rotate=spec["rotate"], translate_percent=spec["translate"], scale=spec["scale"], border_mode=1, p=1)
    reference = np.stack([cv(image=image)["image"] for image in FACES[:8]]).astype(int)
    assert np.abs(device - reference).max() <= 2  # cv2 interpolates in 1/32-pixel fixed point
    assert np.abs(device - reference).mean() < 0.3


def test_random_crop_is_a_window_of_the_uncropped_output() -> None:
    """The crop is folded into the resample: every crop must equal a 40x40 window of the same draw at 48x48."""
    affine = {"p": 1.0, "rotate": (5.0, 5.0), "translate": (0.05, 0.05)}
    full = BatchAugment(affine=affine)(batch(FACES[:6]))
    crops = BatchAugment(affine=affine, crop_size=40)(batch(FACES[:6]))
    for whole, crop in zip(full, crops, strict=True):
        windows = [whole[:, t : t + 40, left : left + 40] for t in range(9) for left in range(9)]
        assert any(torch.equal(window, crop) for window in windows)


def probes() -> list[np.ndarray]:
    """Faces, horizontal stripes (rotation tilts them, nothing else does; a zoom changes their period) and a
    left-to-right ramp (a flip reverses it, nothing else does), 64 of each."""
    phase = np.linspace(0, 2 * np.pi, 64, endpoint=False)[:, None, None]
    stripes = np.round(128 + 60 * np.sin(2 * np.pi * np.arange(48)[None, :, None] / 9 + phase))
    ramp = np.round(40 + 170 * np.arange(48) / 47 + phase[:, :, 0] * 3)[:, None, :]
    return [FACES, *(np.broadcast_to(p, (64, 48, 48)).astype(np.uint8) for p in (stripes, ramp))]


def augmentation_stats(faces: torch.Tensor, stripes: torch.Tensor, ramps: torch.Tensor, crop: int | None) -> dict:
    """Flip-aligned mean absolute difference from the face as stored (translation, rotation, crop, erasing),
    intensity mean and spread (brightness/contrast), black pixels (erasing), the horizontal share of the stripes'
    gradients (rotation), the spread of their gradient magnitude (zoom: affine scale, resized crop) and the share of
    reversed ramps (flip)."""
    faces, stripes, ramps = faces.float(), stripes.float(), ramps.float()
    stored = batch(FACES, len(faces) // len(FACES)).float()
    stored = center_crop(stored, crop) if crop else stored
    mad = torch.minimum((faces - stored).abs().mean((1, 2, 3)), (faces - stored.flip(-1)).abs().mean((1, 2, 3)))
    grad_x = (stripes[..., 1:] - stripes[..., :-1]).abs().mean((1, 2, 3))
    grad_y = (stripes[..., 1:, :] - stripes[..., :-1, :]).abs().mean((1, 2, 3))
    return {
        "mad": mad.mean().item(),
        "mean": faces.mean().item(),
        "std": faces.std(dim=(2, 3)).mean().item(),
        "black_percent": 100 * (faces == 0).float().mean().item(),
        "rotation": (grad_x / (grad_x + grad_y)).mean().item(),
        "zoom": (grad_x + grad_y).std().item(),
        "flipped": ((ramps[..., 1:] - ramps[..., :-1]).mean((1, 2, 3)) < 0).float().mean().item(),
    }


# (relative, absolute) tolerance of each statistic: a few times the spread between two seeds of the same sampler
TOLERANCE = {
    "mad": (0.08, 0.05),
    "mean": (0.02, 0.5),
    "std": (0.03, 0.1),
    "black_percent": (0.15, 0.05),
    "rotation": (0.1, 0.002),
    "zoom": (0.1, 0.01),
    "flipped": (0.0, 0.07),
}


@pytest.mark.parametrize("name", ["light", "keras", "heavy"])
def test_statistics_match_albumentations(name: str, tmp_path: Path) -> None:
    """Same images, same preset: a step much too strong or too weak (rotation x2, no flip, half the erasing) moves a
    statistic past these tolerances, while the two implementations' random draws differ by a few percent."""
    train, augment, crop = preset(name, tmp_path)
    train.set_random_seed(0)
    workers = [batch(np.stack([train(image=i)["image"] for i in np.repeat(p, 16, 0)])) for p in probes()]
    generator = torch.Generator().manual_seed(0)
    device = [augment(batch(p, 16), generator) for p in probes()]
    expected, got = augmentation_stats(*workers, crop), augmentation_stats(*device, crop)
    for key, (relative, absolute) in TOLERANCE.items():
        assert got[key] == pytest.approx(expected[key], rel=relative, abs=absolute), (key, got, expected)


def test_an_epoch_visits_every_index_once_and_epochs_differ() -> None:
    images = torch.arange(103, dtype=torch.uint8).view(103, 1, 1, 1).expand(103, 1, 4, 4).contiguous()
    loader = DeviceBatches(images, torch.arange(103), 10, EpochPermutation(103, seed=3))
    assert len(loader) == 11
    epoch0 = torch.cat([targets for _, targets in loader])
    assert sorted(epoch0.tolist()) == list(range(103))
    assert torch.equal(torch.cat([x[:, 0, 0, 0] for x, _ in loader]).long(), epoch0)  # images follow their targets
    assert torch.equal(torch.cat([t for _, t in loader]), epoch0)  # the same epoch, the same order
    loader.sampler.set_epoch(1)
    epoch1 = torch.cat([targets for _, targets in loader])
    assert sorted(epoch1.tolist()) == list(range(103))
    assert not torch.equal(epoch0, epoch1)
    in_order = DeviceBatches(images, torch.arange(103), 10, EpochPermutation(103, shuffle=False))
    assert torch.cat([t for _, t in in_order]).tolist() == list(range(103))  # eval: the stored order


@pytest.mark.parametrize(("size", "world_size"), [(100, 2), (101, 2), (100, 3)])
def test_rank_shards_are_disjoint_and_cover_the_epoch(size: int, world_size: int) -> None:
    shards = []
    for rank in range(world_size):
        sampler = EpochPermutation(size, seed=5, rank=rank, world_size=world_size)
        sampler.set_epoch(2)
        shards.append(sampler.indices().tolist())
    assert len({len(shard) for shard in shards}) == 1  # the same number of steps on every rank
    every = [i for shard in shards for i in shard]
    assert set(every) == set(range(size))
    assert len(every) - len(set(every)) == (-size) % world_size  # only DistributedSampler-style padding repeats


def test_weighted_sampler_balances_the_device_epoch() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    weights = torch.as_tensor(1.0 / np.bincount(labels)[labels])
    drawn = labels[EpochPermutation(100, seed=0, weights=weights).indices().numpy()]
    assert len(drawn) == 100
    assert 30 < (drawn == 1).sum() < 70


def test_datamodule_device_batches_equal_the_dataloader_at_eval(fer_csv: Path, tmp_path: Path) -> None:
    overrides = [f"data.path={fer_csv}", "aug=heavy", "tta=tencrop", "data.loader=device", "data.num_workers=0"]
    cfg = compose_train([*overrides, f"paths.cache_dir={tmp_path / 'cache'}", "data.eval_batch_size=8"], tmp_path)
    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    assert isinstance(dm.train_dataloader(), DeviceBatches)
    images, targets = next(iter(dm.train_dataloader()))
    assert images.shape == (42, 1, 40, 40)  # the whole 42-image split in one batch of 64
    assert images.dtype == torch.uint8
    assert targets.dtype == torch.int64
    device_views, device_targets = next(iter(dm.val_dataloader()))
    worker_views, worker_targets = next(iter(dm.loader("val")))  # the DataLoader path on the same split
    assert device_views.shape == (8, 10, 1, 40, 40)
    assert torch.equal(device_views, worker_views)
    assert torch.equal(device_targets, worker_targets)


def test_device_loader_options_are_checked(fer_csv: Path) -> None:
    with pytest.raises(ValueError, match="eval: null"):
        FERDataModule(str(fer_csv), loader="device", eval_transform=A.HorizontalFlip())
    with pytest.raises(ValueError, match="data.loader must be one of"):
        FERDataModule(str(fer_csv), loader="gpu")


@pytest.mark.usefixtures("one_thread")
def test_train_validate_test_on_the_device_loader(fer_csv: Path, tmp_path: Path) -> None:
    overrides = ["aug=heavy", "tta=flip", "data.loader=device", "model=simple_cnn", "data.batch_size=16"]
    cfg = compose_train([f"data.path={fer_csv}", *overrides, "trainer.max_epochs=1", "trainer.accelerator=cpu",
                         "logger=csv", f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path)  # fmt: skip
    metrics = run_training(cfg)
    saved = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert saved["test/acc"] == pytest.approx(metrics["test/acc"])
    assert 0.0 <= saved["val/acc"] <= 1.0
    report = json.loads((Path(cfg.paths.output_dir) / "per_class_test.json").read_text())
    assert sum(map(sum, report["confusion_matrix"])) == 14  # every PrivateTest row counted once
    assert cv2.imread(str(Path(cfg.paths.output_dir) / "confusion_matrix_test.png")) is not None


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_ddp_ranks_train_and_evaluate_their_own_shards(tmp_path: Path) -> None:
    """2 gloo processes on data.loader=device: 16 test images = 2 disjoint shards of 8, each image counted once."""
    data = write_fer_csv(tmp_path / "fer.csv", {"Training": 32, "PublicTest": 16, "PrivateTest": 16})
    result = run_script(
        "train.py", "trainer=ddp_cpu", f"data.path={data}", "data.loader=device", "aug=heavy", "tta=flip",
        "model=simple_cnn", "data.batch_size=8", "data.eval_batch_size=8", "trainer.max_epochs=1", "logger=none",
        f"hydra.run.dir={tmp_path}/ddp", cwd=tmp_path, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in result.stdout + result.stderr
    report = json.loads((tmp_path / "ddp" / "per_class_test.json").read_text())
    assert sum(map(sum, report["confusion_matrix"])) == 16


@pytest.mark.gpu
def test_batches_are_augmented_on_the_gpu(tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    _, augment, _ = preset("heavy", tmp_path)
    images = batch(FACES, 4).cuda()
    out = augment(images, torch.Generator(device="cuda").manual_seed(0))
    assert out.device.type == "cuda"
    assert out.shape == (256, 1, 40, 40)
    assert torch.equal(out, augment(images, torch.Generator(device="cuda").manual_seed(0)))
    on_cpu_generator = augment(images, torch.Generator().manual_seed(0))  # a CPU generator drives a GPU batch too
    assert on_cpu_generator.device.type == "cuda"


@pytest.mark.parametrize("name", PRESETS)
def test_a_batch_takes_one_random_draw_and_builds_no_tensor_from_host_numbers(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a GPU each torch.tensor([...]) is a blocking host-to-device copy, and each torch.rand a kernel launch and,
    under torch.compile, a graph break (issue 18): after its first batch the augmentation makes neither per batch
    beyond its one draw, and that draw is exactly as wide as its steps use."""
    _, augment, _ = preset(name, tmp_path)
    if augment is None:
        pytest.skip("aug=none has no device augmentation")
    images = batch(FACES[:1], 8)
    augment(images)  # the first batch builds the per-shape constants
    calls = {"tensor": 0, "rand": 0}
    real_tensor, real_rand = torch.tensor, torch.rand

    def counted(kind, real):
        def call(*args, **kwargs):
            calls[kind] += 1
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(torch, "tensor", counted("tensor", real_tensor))
    monkeypatch.setattr(torch, "rand", counted("rand", real_rand))
    used: list[Draw] = []
    real_init = Draw.__init__

    def recording_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        used.append(self)

    monkeypatch.setattr(Draw, "__init__", recording_init)
    augment(images)
    assert calls == {"tensor": 0, "rand": 1}
    assert used[0].used == used[0].per_sample == augment.draws_per_sample
