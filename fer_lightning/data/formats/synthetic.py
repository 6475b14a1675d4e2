"""The embedded synthetic stand-in for FER2013: seeded 48x48 grayscale cartoon faces in FER2013's exact CSV layout.

FER2013 cannot ship with the project (Kaggle's terms), yet every part of the framework (CSV reader, cache,
DataModule, training, evaluation, reports) should run out of the box. This module draws faces with OpenCV whose
geometry encodes the 7 FER2013 emotions (brow height and slant, eye opening, mouth curve, width and opening, a
one-sided lip raise, nose wrinkles) and writes them as `emotion,pixels,Usage` rows, with FER2013's class imbalance
in every split, so the file goes through the very same loader as the real one.

The task is meant to be learnable but not trivial: each face is a random identity (head shape, feature placement,
skin, hair, glasses), a random pose, lighting, background and noise, and its expression is a neutral face moved
part of the way (random intensity) towards its class prototype, plus per-feature jitter. Weak expressions
therefore overlap with Neutral and neighbouring classes (Fear/Surprise, Angry/Disgust, Sad/Neutral) overlap each
other, as in the real data. Accuracies on it say nothing about FER2013.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from fer_lightning.data.formats.fer2013 import FER2013_CLASSES, FER2013_SIZE, USAGES

# FER2013's Training class counts (angry, disgust, fear, happy, sad, surprise, neutral): the imbalance to mimic
FER2013_TRAIN_COUNTS = (3995, 436, 4097, 7215, 4830, 3171, 4965)
# sized so that `python train.py experiment=quickstart` (8 epochs of mini_Xception) takes ~2 minutes on 2 CPU cores
SYNTHETIC_DEFAULTS = {"num_train": 6000, "num_val": 800, "num_test": 800}
# bump whenever the drawing changes, so that files made by an older generator are regenerated, not reused
GENERATOR_VERSION = 1

SUPERSAMPLE = 4  # draw at 4x and area-downsample: anti-aliased, sub-pixel feature geometry at 48x48
SHIFT = 4  # cv2 fixed-point bits, so that coordinates are not rounded to whole canvas pixels
_SCALE = SUPERSAMPLE * (1 << SHIFT)
_CANVAS = FER2013_SIZE * SUPERSAMPLE

# Expression parameters, in pixels of the 48x48 face frame (image y points down):
# brow raise, brow slant (inner end minus outer end, up is +), eye half-opening, mouth corner lift,
# mouth half-width, mouth opening, one-sided upper-lip raise, nose wrinkle strength (0..1).
EXPRESSION_PARAMS = (
    "brow_raise",
    "brow_slant",
    "eye_open",
    "mouth_curve",
    "mouth_width",
    "mouth_open",
    "lip",
    "wrinkle",
)
PROTOTYPES = np.array(
    [
        [-1.4, -3.0, 1.2, -0.5, 4.6, 0.0, 0.0, 0.5],  # angry: brows down and in, narrowed eyes, tight mouth
        [-0.8, -1.4, 0.8, -1.3, 5.6, 0.3, 2.2, 1.0],  # disgust: squint, wrinkled nose, one-sided lip raise
        [2.0, 1.8, 2.5, -0.8, 7.2, 1.8, 0.0, 0.0],  # fear: raised inner brows, wide eyes, stretched open mouth
        [0.3, 0.0, 1.1, 2.8, 7.4, 1.2, 0.0, 0.0],  # happy: smile, slightly narrowed eyes
        [0.6, 2.4, 1.3, -2.4, 5.6, 0.0, 0.0, 0.0],  # sad: inner brows raised, corners down
        [2.8, 0.4, 2.7, 0.0, 3.8, 4.5, 0.0, 0.0],  # surprise: high brows, wide eyes, round open mouth
        [0.0, 0.0, 1.6, 0.0, 6.0, 0.0, 0.0, 0.0],  # neutral
    ]
)
NEUTRAL = len(FER2013_CLASSES) - 1
# per-sample jitter (std) of each expression parameter: what makes neighbouring classes overlap
JITTER = np.array([0.8, 0.9, 0.35, 0.8, 0.8, 0.6, 0.6, 0.25])
INTENSITY_RANGE = (0.3, 1.2)  # how far from neutral towards the prototype a face goes


def class_counts(total: int, weights: Sequence[float] = FER2013_TRAIN_COUNTS) -> np.ndarray:
    """Split `total` by `weights` with largest-remainder rounding; every class gets at least one row."""
    weights = np.asarray(weights, dtype=np.float64)
    if total < len(weights):
        raise ValueError(f"a split needs at least {len(weights)} rows (one per class), got {total}")
    forced = np.zeros(len(weights), dtype=bool)
    while True:
        # classes too rare to round up to one row are pinned at 1 and the rest re-apportioned among the others
        free = total - int(forced.sum())
        quota = np.where(forced, 0.0, free * weights / weights[~forced].sum())
        counts = np.floor(quota).astype(np.int64)
        remainder = quota - counts
        order = sorted(np.flatnonzero(~forced), key=lambda i: (-remainder[i], i))  # ties: lower class first
        counts[order[: free - int(counts.sum())]] += 1
        counts[forced] = 1
        if (counts > 0).all():
            return counts
        forced |= counts == 0


def sample_parameters(labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw every per-image parameter at once (vectorised; a fixed draw order keeps files reproducible)."""
    n = len(labels)
    u = rng.uniform
    intensity = np.where(labels == NEUTRAL, 0.0, u(*INTENSITY_RANGE, n))
    neutral = PROTOTYPES[NEUTRAL]
    expr = neutral + intensity[:, None] * (PROTOTYPES[labels] - neutral) + JITTER * rng.standard_normal((n, 8))
    expr = np.maximum(expr, [-9, -9, 0.3, -9, 2.8, 0.0, 0.0, 0.0])
    expr[:, 7] = np.minimum(expr[:, 7], 1.0)
    params = {name: expr[:, i] for i, name in enumerate(EXPRESSION_PARAMS)}
    params |= {
        # identity: head shape, feature placement and sizes, tones
        "face_w": u(14.0, 18.0, n), "face_h": u(18.0, 22.0, n), "eye_dx": u(6.5, 8.5, n), "eye_y": u(-5.0, -2.0, n),
        "eye_w": u(2.6, 3.6, n), "nose_y": u(3.5, 5.5, n), "mouth_y": u(9.0, 12.0, n), "brow_th": u(0.9, 1.8, n),
        "skin": u(100.0, 215.0, n), "ink": u(60.0, 130.0, n), "hair": u(10.0, 200.0, n), "hair_h": u(0.0, 7.0, n),
        "lip_side": rng.choice([-1.0, 1.0], n), "gaze": u(-0.8, 0.8, n), "glasses": u(0, 1, n) < 0.12,
        "teeth": u(0, 1, n) < 0.5,
        # pose: in-plane rotation, scale, aspect (a crude yaw), translation
        "angle": np.clip(rng.normal(0.0, 8.0, n), -20, 20), "scale": u(0.88, 1.12, n), "aspect": u(0.88, 1.08, n),
        "tx": rng.normal(0.0, 1.5, n), "ty": rng.normal(0.0, 1.5, n),
        # photometry: background, contrast, side lighting, gamma, blur, noise, an occluder (hand, hat, watermark)
        "bg": u(0.0, 255.0, n), "bg_grad": u(-60.0, 60.0, n), "contrast": u(0.55, 1.2, n),
        "light": u(-50.0, 50.0, n), "light_dir": u(0.0, 2 * np.pi, n), "gamma": u(0.7, 1.4, n),
        "blur": u(0.0, 1.0, n), "noise": u(1.0, 9.0, n), "occlude": u(0, 1, n) < 0.1,
        "occ_x": u(4.0, 44.0, n), "occ_y": u(20.0, 48.0, n), "occ_r": u(5.0, 11.0, n), "occ_v": u(0.0, 255.0, n),
    }  # fmt: skip
    return params


def _pt(x: float, y: float, supersample: int = SUPERSAMPLE) -> tuple[int, int]:
    """A point of the 48x48 frame as cv2 fixed-point coordinates on a canvas `supersample` times larger."""
    scale = supersample * (1 << SHIFT)
    return round(x * scale), round(y * scale)


def _curve(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    return np.round(np.stack([xs, ys], axis=1) * _SCALE).astype(np.int32)


def _line(img: np.ndarray, pts: np.ndarray, value: float, width: float) -> None:
    cv2.polylines(img, [pts], False, value, max(1, round(width * SUPERSAMPLE)), cv2.LINE_AA, SHIFT)


def _ellipse(img: np.ndarray, cx: float, cy: float, ax: float, ay: float, value: float, width: int = -1) -> None:
    axes = (max(1, round(ax * _SCALE)), max(1, round(ay * _SCALE)))
    cv2.ellipse(img, _pt(cx, cy), axes, 0, 0, 360, value, width, cv2.LINE_AA, SHIFT)


def draw_head(face: np.ndarray, mask: np.ndarray, p: dict, cx: float, cy: float) -> None:
    """Shoulders, neck, hair and head; `mask` marks what covers the background."""
    skin, fw, fh = p["skin"], p["face_w"], p["face_h"]
    # (image, shoulders, neck, hair, head, outline) values: tones on the face layer, opaque on the mask
    for img, values in ((face, (p["hair"] * 0.5 + 40, skin * 0.85, p["hair"], skin, skin - 0.5 * p["ink"])),
                        (mask, (255.0,) * 5)):  # fmt: skip
        shoulders, neck, hair, head, outline = values
        cv2.ellipse(img, _pt(cx, 51), _pt(1.7 * fw, 7), 0, 180, 360, shoulders, -1, cv2.LINE_AA, SHIFT)
        cv2.rectangle(img, _pt(cx - 0.55 * fw, cy), _pt(cx + 0.55 * fw, 47), neck, -1, cv2.LINE_AA, SHIFT)
        if p["hair_h"] > 1.0:  # a hair cap peeking out above and beside the head
            _ellipse(img, cx, cy - 0.25 * p["hair_h"], fw + 1.2, fh + 0.4 * p["hair_h"], hair)
        _ellipse(img, cx, cy, fw, fh, head)
        _ellipse(img, cx, cy, fw, fh, outline, max(1, SUPERSAMPLE // 2))


def draw_eyes_and_brows(face: np.ndarray, p: dict, cx: float, cy: float) -> None:
    """Eyes (sclera, an iris no taller than the opening, upper lid), glasses, and brows (raised, slanted, arched)."""
    skin, ink = p["skin"], p["skin"] - p["ink"]
    ey, ew, eo = cy + p["eye_y"], p["eye_w"], p["eye_open"]
    for side in (-1.0, 1.0):
        ex = cx + side * p["eye_dx"]
        _ellipse(face, ex, ey, ew, eo, min(255.0, skin + 35.0))
        _ellipse(face, ex + p["gaze"], ey, min(1.5, ew * 0.5), min(1.5, eo), ink)
        lid = np.linspace(-1, 1, 9)
        _line(face, _curve(ex + ew * lid, ey - eo * np.sqrt(1 - lid**2)), ink, 0.8)
        # brow: inner end at x = +-2.5 from the midline, outer end beyond the eye; slant lifts the inner end
        t = np.linspace(0.0, 1.0, 9)  # 0 = inner end, 1 = outer end
        bx = cx + side * (2.5 + t * (p["eye_dx"] + ew + 0.5 - 2.5))
        arch = 0.8 + 0.25 * max(p["brow_raise"], 0.0)
        by = ey - 4.0 - p["brow_raise"] - p["brow_slant"] * (0.5 - t) - arch * 4 * t * (1 - t)
        _line(face, _curve(bx, by), ink, p["brow_th"])
        if p["glasses"]:
            _ellipse(face, ex, ey, ew + 1.6, ew + 0.8, ink, max(1, SUPERSAMPLE // 2))
    if p["glasses"]:
        _line(face, _curve(np.array([cx - 1.4, cx + 1.4]), np.array([ey, ey])), ink, 0.5)


def draw_nose(face: np.ndarray, p: dict, cx: float, cy: float) -> None:
    """Nostrils and bridge shading; wrinkles across the bridge grow with `wrinkle` (disgust, anger)."""
    skin = p["skin"]
    ny = cy + p["nose_y"]
    for side in (-1.0, 1.0):
        _ellipse(face, cx + side * 1.6, ny, 0.9, 0.5, skin - 0.6 * p["ink"])
        _line(face, _curve(np.array([cx + side * 1.2, cx + side * 1.8]), np.array([ny - 6, ny - 1])), skin - 18, 0.6)
    if p["wrinkle"] > 0.05:
        shade = skin - p["wrinkle"] * 0.7 * p["ink"]  # faint lines for weak wrinkling, dark for strong
        for dy in (-4.5, -3.0, -1.5):
            xs = np.linspace(-2.2, 2.2, 5)
            _line(face, _curve(cx + xs, ny + dy - 0.25 * xs**2), shade, 0.6)


def draw_mouth(face: np.ndarray, p: dict, cx: float, cy: float) -> None:
    """Mouth from a centre curve (corner lift, one-sided lip raise), opened around it into a dark polygon."""
    skin, ink = p["skin"], p["skin"] - p["ink"]
    w = p["mouth_width"]
    u = np.linspace(-1.0, 1.0, 21)
    centre = cy + p["mouth_y"] - p["mouth_curve"] * (u**2 - 0.35)
    centre -= p["lip"] * np.clip(p["lip_side"] * u, 0.0, 1.0)  # the raised corner of a sneer
    envelope = np.sqrt(1 - u**2)
    upper = centre - envelope * (0.4 * p["mouth_open"] + 0.5 * p["lip"] * np.clip(p["lip_side"] * u, 0.0, 1.0))
    lower = centre + envelope * 0.6 * p["mouth_open"]
    xs = cx + w * u
    if (lower - upper).max() < 0.6:  # closed: a single line, thicker for pressed lips
        _line(face, _curve(xs, centre), ink, 0.9 + 0.15 * max(0.0, 5.0 - w))
        return
    cv2.fillPoly(
        face, [np.concatenate([_curve(xs, upper), _curve(xs[::-1], lower[::-1])])], ink * 0.6, cv2.LINE_AA, SHIFT
    )
    if p["teeth"] and p["mouth_open"] > 1.0:  # a light band under the upper lip
        _line(face, _curve(xs[4:-4], upper[4:-4] + 0.5), min(255.0, skin + 20), 0.8)
    _line(face, _curve(xs, upper), ink, 0.7)
    _line(face, _curve(xs, lower), skin - 0.5 * p["ink"], 0.7)


def render_face(p: dict, grid: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """One 48x48 float image: draw upright at 4x, pose it, area-downsample, composite on a background, light it."""
    face = np.zeros((_CANVAS, _CANVAS), np.float32)
    mask = np.zeros_like(face)
    cx, cy = 24.0, 23.0
    draw_head(face, mask, p, cx, cy)
    draw_eyes_and_brows(face, p, cx, cy)
    draw_nose(face, p, cx, cy)
    draw_mouth(face, p, cx, cy)
    centre = (cx * SUPERSAMPLE, cy * SUPERSAMPLE)
    pose = cv2.getRotationMatrix2D(centre, float(p["angle"]), float(p["scale"]))
    pose[0, :2] *= p["aspect"]
    # keep the face centre fixed under rotation, scale and aspect, then translate
    pose[:, 2] = np.array(centre) - pose[:, :2] @ centre + np.array([p["tx"], p["ty"]]) * SUPERSAMPLE
    size = (_CANVAS, _CANVAS)
    face = cv2.resize(cv2.warpAffine(face, pose, size), (48, 48), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(cv2.warpAffine(mask, pose, size), (48, 48), interpolation=cv2.INTER_AREA) / 255.0
    xx, yy = grid
    image = (p["bg"] + p["bg_grad"] * yy) * (1 - alpha) + face * alpha
    if p["occlude"]:  # something in front of the face: a hand, a microphone, a watermark blob
        cv2.circle(
            image, _pt(p["occ_x"], p["occ_y"], 1), round(p["occ_r"] * (1 << SHIFT)), p["occ_v"], -1, cv2.LINE_AA, SHIFT
        )
    lit = 128 + p["contrast"] * (image - 128) + p["light"] * (np.cos(p["light_dir"]) * xx + np.sin(p["light_dir"]) * yy)
    lit = 255.0 * (np.clip(lit, 0, 255) / 255.0) ** p["gamma"]
    if p["blur"] > 0.4:
        lit = cv2.GaussianBlur(lit, (0, 0), float(p["blur"]))
    return lit


def render_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one face per label: parameters vectorised, drawing one image at a time with cv2."""
    params = sample_parameters(labels, rng)
    noise = rng.standard_normal((len(labels), 48, 48)).astype(np.float32)
    xx, yy = np.meshgrid(np.linspace(-1, 1, 48, dtype=np.float32), np.linspace(-1, 1, 48, dtype=np.float32))
    images = np.empty((len(labels), 48, 48), np.float32)
    for i in range(len(labels)):
        images[i] = render_face({k: v[i] for k, v in params.items()}, (xx, yy))
    images += params["noise"][:, None, None].astype(np.float32) * noise
    return np.clip(np.round(images), 0, 255).astype(np.uint8)


def make_split(total: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`total` images with FER2013's class proportions, in shuffled order like Kaggle's file."""
    labels = np.repeat(np.arange(len(FER2013_CLASSES)), class_counts(total))
    labels = labels[rng.permutation(total)]
    return labels, render_images(labels, rng)


def write_synthetic_fer_csv(
    path: str | os.PathLike,
    num_train: int = SYNTHETIC_DEFAULTS["num_train"],
    num_val: int = SYNTHETIC_DEFAULTS["num_val"],
    num_test: int = SYNTHETIC_DEFAULTS["num_test"],
    seed: int = 0,
) -> Path:
    """Write a FER2013-format CSV (Training, PublicTest, PrivateTest blocks); same seed and sizes, same bytes."""
    sizes = (num_train, num_val, num_test)
    for total in sizes:
        class_counts(total)  # a split too small to hold every class fails here, before any drawing
    path = Path(path)
    _write_atomic(path, _csv_blocks(sizes, np.random.default_rng(seed)))
    return path


def _csv_blocks(sizes: Sequence[int], rng: np.random.Generator) -> Iterator[str]:
    """The header, then one block of rows per usage; one split in memory at a time."""
    tokens = np.array([str(v) for v in range(256)], dtype=object)  # uint8 -> text by lookup, not per-pixel str()
    yield "emotion,pixels,Usage\n"
    for usage, total in zip(USAGES, sizes):
        labels, images = make_split(total, rng)
        rows = images.reshape(len(images), -1)
        yield "".join(f"{label},{' '.join(tokens[row])},{usage}\n" for label, row in zip(labels, rows))


def _write_atomic(path: Path, chunks: Iterable[str]) -> None:
    """Write to a temporary file beside `path`, then rename: an interrupted run never leaves a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.writelines(chunks)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; the data is not secret
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def ensure_synthetic_fer_csv(path: str | os.PathLike, seed: int = 0, **sizes: int) -> Path:
    """Generate the synthetic CSV unless `path` already holds one made with these sizes, seed and generator.

    A JSON sidecar (`<name>.json`) records how the file was made and its byte size; a file without a matching
    sidecar (other sizes or seed, an older generator, edited or foreign) is regenerated, never silently reused.
    """
    unknown = set(sizes) - set(SYNTHETIC_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown synthetic size(s) {sorted(unknown)}; expected some of {list(SYNTHETIC_DEFAULTS)}")
    path = Path(path)
    spec = {**SYNTHETIC_DEFAULTS, **{k: int(v) for k, v in sizes.items()}, "seed": int(seed)}
    spec["generator_version"] = GENERATOR_VERSION
    sidecar = _sidecar(path)
    if path.exists() and sidecar.exists():
        try:
            recorded = json.loads(sidecar.read_text())
        except ValueError:
            recorded = {}
        if recorded == {**spec, "bytes": path.stat().st_size}:
            return path
    sidecar.unlink(missing_ok=True)  # first, so that a run interrupted below leaves no record vouching for the CSV
    write_synthetic_fer_csv(path, **{k: spec[k] for k in (*SYNTHETIC_DEFAULTS, "seed")})
    _write_atomic(sidecar, [json.dumps({**spec, "bytes": path.stat().st_size}, indent=2) + "\n"])
    return path
