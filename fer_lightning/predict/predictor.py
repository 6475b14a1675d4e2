"""`python predict.py ckpt_path=model.ckpt input=PATH|FOLDER|VIDEO|CAMERA_INDEX` (`fer-predict`).

For every frame: detect faces, crop them as the checkpoint's preprocessing says (size, crop, channels; the
model normalises), classify them in one batch, and write
- `predictions.jsonl`: one record per face (file, frame, box, label, confidence, every class probability: the
  softmax of the logits divided by the checkpoint's temperature when it stores one, `eval.py calibrate=true`);
- `files.json`: one record per input file with its status (ok, no_face, not_media, unreadable), so problems
  with single files are reported without stopping the batch;
- `annotated/`: each image with a face, and each video, with boxes, labels and confidences drawn.
Throughput (frames/s and faces/s, end to end and for the classifier alone) is printed at the end.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

import cv2
import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from fer_lightning.calibration import checkpoint_temperature
from fer_lightning.checkpoint import load_module
from fer_lightning.data.views import CenterCrop
from fer_lightning.errors import UserError
from fer_lightning.lit_module import FERLitModule
from fer_lightning.predict.faces import Box, annotate, crop_face, to_gray
from fer_lightning.predict.media import (
    MediaError,
    Source,
    discover,
    iter_frames,
    open_capture,
    read_image,
    video_writer,
)

log = logging.getLogger(__name__)


@dataclass
class FacePrediction:
    box: Box
    label: str
    confidence: float
    probs: dict[str, float]


class EmotionClassifier:
    """A checkpoint's model with its own preprocessing: gray face crops in, class probabilities out."""

    def __init__(self, module: FERLitModule, margin: float = 0.1, device: str = "cpu") -> None:
        self.module = module.eval().to(device)
        self.device = device
        info = module.hparams.get("preprocessing") or {}
        self.image_size = int(info.get("image_size") or 48)
        self.in_chans = int(info.get("in_chans") or module.hparams.in_chans)
        self.crop = CenterCrop(info.get("crop_size"))
        self.temperature = checkpoint_temperature(info)  # 1.0: the logits as they are
        self.margin = margin
        self.class_names = list(module.class_names)
        self.seconds = 0.0  # time spent in the model, for the classifier-only throughput
        self.faces = 0

    @classmethod
    def from_checkpoint(cls, path: str | Path, margin: float = 0.1, device: str = "cpu") -> EmotionClassifier:
        return cls(load_module(path), margin, device)

    def batch(self, gray: np.ndarray, boxes: list[Box]) -> torch.Tensor:
        """uint8 (N, C, S, S) as the datamodule feeds it: resized gray, center-cropped, channels repeated."""
        crops = [torch.from_numpy(crop_face(gray, box, self.image_size, self.margin)) for box in boxes]
        images = torch.stack([self.crop(c.unsqueeze(0)) for c in crops])
        return images.expand(-1, self.in_chans, -1, -1).contiguous()

    @torch.no_grad()
    def __call__(self, gray: np.ndarray, boxes: list[Box]) -> list[FacePrediction]:
        if not boxes:
            return []
        images = self.batch(gray, boxes).to(self.device)
        start = time.perf_counter()
        probs = torch.softmax(self.module(images).float() / self.temperature, dim=1).cpu().numpy()
        self.seconds += time.perf_counter() - start
        self.faces += len(boxes)
        return [
            FacePrediction(
                box, self.class_names[int(p.argmax())], float(p.max()), dict(zip(self.class_names, p.tolist()))
            )
            for box, p in zip(boxes, probs, strict=True)
        ]


@dataclass
class FileReport:
    file: str
    status: str = "ok"
    kind: str = "image"
    frames: int = 0
    faces: int = 0
    output: str | None = None
    message: str | None = None


@dataclass
class Predictor:
    """Runs detector + classifier over sources and writes the outputs; one instance per run."""

    classifier: EmotionClassifier
    detector: Callable[[np.ndarray], list[Box]]
    output_dir: Path
    records: TextIO  # the open predictions.jsonl
    annotate: bool = True
    video: dict = field(default_factory=dict)
    frames: int = 0

    def frame(self, frame: np.ndarray, name: str, index: int | None) -> tuple[np.ndarray, list[FacePrediction]]:
        gray = to_gray(frame)
        faces = self.classifier(gray, self.detector(gray))
        self.frames += 1
        for face in faces:
            record = {"file": name, "frame": index, **asdict(face), "box": list(face.box)}
            self.records.write(json.dumps(record) + "\n")
        if self.annotate and faces:
            frame = annotate(frame, [f.box for f in faces], [f"{f.label} {f.confidence:.2f}" for f in faces])
        return frame, faces

    def image(self, source: Source) -> FileReport:
        frame, faces = self.frame(read_image(source.location), source.name, None)
        report = FileReport(source.name, "ok" if faces else "no_face", "image", 1, len(faces))
        if self.annotate and faces:
            out = self.output_dir / "annotated" / source.name
            out = out if cv2.haveImageWriter(str(out)) else out.with_suffix(".png")
            out.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out), frame)
            report.output = str(out)
        return report

    def stream(self, source: Source) -> FileReport:
        """A video file or a camera; a camera runs until `video.max_frames` or Ctrl-C."""
        capture = open_capture(source)
        report = FileReport(source.name, kind=source.kind if source.kind == "webcam" else "video")
        stride = int(self.video.get("stride") or 1)
        fps = capture.get(cv2.CAP_PROP_FPS) / stride
        out = self.output_dir / "annotated" / Path(source.name).with_suffix(".mp4")
        writer = None
        try:
            for index, frame in iter_frames(capture, stride, self.video.get("max_frames")):
                drawn, faces = self.frame(frame, source.name, index)
                report.frames, report.faces = report.frames + 1, report.faces + len(faces)
                if self.annotate:
                    size = (drawn.shape[1], drawn.shape[0])
                    writer = writer or video_writer(out, fps, size, self.video.get("codec", "mp4v"))
                    writer.write(drawn)
        except KeyboardInterrupt:
            log.info("%s: stopped after %d frames", source.name, report.frames)
        finally:
            capture.release()
            if writer is not None:
                writer.release()
                report.output = str(out)
        if report.frames == 0:
            raise MediaError("unreadable", f"{source.location}: no frame could be decoded")
        report.status = "ok" if report.faces else "no_face"
        return report

    def run(self, source: Source) -> FileReport:
        try:
            return self.stream(source) if source.is_video else self.image(source)
        except (MediaError, cv2.error) as error:  # OpenCV raises on some malformed inputs: report, go on
            kind = "webcam" if source.kind == "webcam" else "video" if source.is_video else "image"
            status = error.status if isinstance(error, MediaError) else "unreadable"
            return FileReport(source.name, status, kind, message=str(error).strip())


def throughput(frames: int, faces: int, seconds: float, classifier: EmotionClassifier) -> str:
    # no face classified: no rate to give (n/a, not nan)
    model_rate = f"{classifier.faces / classifier.seconds:.1f}" if classifier.seconds else "n/a"
    return (
        f"{frames} frames, {faces} faces in {seconds:.2f} s: {frames / seconds:.1f} frames/s, "
        f"{faces / seconds:.1f} faces/s end to end (read, detect, classify, write); "
        f"classifier alone {model_rate} faces/s"
    )


def run_predict(cfg: DictConfig) -> dict:
    """Process every source of `cfg.input`; returns the summary also written to `files.json`."""
    if cfg.get("ckpt_path") in (None, "???") or cfg.get("input") is None:
        raise UserError("predict needs ckpt_path=... and input=IMAGE|FOLDER|VIDEO|CAMERA_INDEX")
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    classifier = EmotionClassifier.from_checkpoint(cfg.ckpt_path, cfg.margin, cfg.device)
    detector = hydra.utils.instantiate(cfg.detector)
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    sources = discover(cfg.input, cfg.recursive)
    if not sources:
        raise UserError(
            f"no images or videos found in {cfg.input}"
            + ("" if cfg.recursive else " (recursive=true looks in subfolders)")
        )
    start = time.perf_counter()
    with open(output_dir / "predictions.jsonl", "w") as records:
        predictor = Predictor(classifier, detector, output_dir, records, cfg.annotate, dict(cfg.video))
        reports = []
        for source in sources:
            report = predictor.run(source)
            reports.append(report)
            if report.status != "ok":
                print(f"{report.file}: {report.status}" + (f" ({report.message})" if report.message else ""))
    seconds = max(time.perf_counter() - start, 1e-9)
    faces = sum(r.faces for r in reports)
    summary = {
        "checkpoint": str(cfg.ckpt_path),
        "temperature": classifier.temperature,
        "files": [asdict(r) for r in reports],
        "frames": predictor.frames,
        "faces": faces,
        "seconds": seconds,
        "frames_per_s": predictor.frames / seconds,
        "faces_per_s": faces / seconds,
    }
    (output_dir / "files.json").write_text(json.dumps(summary, indent=2) + "\n")
    counts = {s: sum(r.status == s for r in reports) for s in sorted({r.status for r in reports})}
    print(f"{len(reports)} inputs {counts}; {throughput(predictor.frames, faces, seconds, classifier)}")
    print(f"Outputs: {output_dir}")
    if not any(r.status in ("ok", "no_face") for r in reports):  # everything failed: the command did not do its job
        raise UserError(f"none of the {len(reports)} inputs in {cfg.input} could be read (files.json lists why)")
    return summary
