"""Face detection, face crops as a checkpoint's preprocessing wants them, and annotation of frames.

Detectors are callables `gray uint8 (H, W) -> [(x, y, w, h), ...]`, instantiated from `conf/detector/*.yaml`.
The default is OpenCV's Viola-Jones frontal-face cascade, the detector of Arriaga et al.'s real-time demo
(oarriaga/face_classification `src/video_emotion_color_demo.py`); its XML file ships inside opencv-python.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x, y, width, height in frame pixels


class HaarFaceDetector:
    """OpenCV's cascade detector; boxes are returned left to right so face order is stable across frames."""

    def __init__(
        self,
        cascade: str | None = None,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 30,
    ) -> None:
        path = cascade or str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml")
        self.classifier = cv2.CascadeClassifier(path)
        if self.classifier.empty():
            raise FileNotFoundError(f"cannot load the Haar cascade {path}")
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size

    def __call__(self, gray: np.ndarray) -> list[Box]:
        boxes = self.classifier.detectMultiScale(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
        )
        return sorted((tuple(int(v) for v in box) for box in boxes), key=lambda b: (b[0], b[1]))


class FullFrameDetector:
    """No detection: every image is one face, already cropped (FER2013-style 48x48 faces, aligned crops)."""

    def __call__(self, gray: np.ndarray) -> list[Box]:
        height, width = gray.shape[:2]
        return [(0, 0, width, height)]


def to_gray(frame: np.ndarray) -> np.ndarray:
    """BGR or BGRA (OpenCV's order) or already gray -> uint8 gray."""
    if frame.ndim == 2:
        return frame
    code = cv2.COLOR_BGRA2GRAY if frame.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    return cv2.cvtColor(frame, code)


def crop_face(gray: np.ndarray, box: Box, size: int, margin: float = 0.0) -> np.ndarray:
    """The square `size` x `size` crop around a box widened by `margin` of its size on every side.

    Parts outside the frame repeat the border rather than being cut, so a face at the edge keeps its
    geometry. Shrinking uses area interpolation (antialiased, like the downscaling that produced FER2013);
    enlarging uses bilinear, as the training data was resized.
    """
    x, y, w, h = box
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    x0, y0 = round(cx - side / 2.0), round(cy - side / 2.0)
    x1, y1 = x0 + round(side), y0 + round(side)
    height, width = gray.shape[:2]
    pads = (max(0, -y0), max(0, y1 - height), max(0, -x0), max(0, x1 - width))
    if any(pads):
        gray = cv2.copyMakeBorder(gray, *pads, borderType=cv2.BORDER_REPLICATE)
        x0, x1, y0, y1 = x0 + pads[2], x1 + pads[2], y0 + pads[0], y1 + pads[0]
    crop = gray[y0:y1, x0:x1]
    interpolation = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interpolation)


def annotate(frame: np.ndarray, boxes: Sequence[Box], labels: Sequence[str], color=(0, 200, 255)) -> np.ndarray:
    """Draw each box with its label above it (below when the box touches the top); returns the frame."""
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    scale = max(0.4, min(frame.shape[:2]) / 800.0)
    thickness = max(1, round(scale * 2))
    for (x, y, w, h), label in zip(boxes, labels, strict=True):
        cv2.rectangle(frame, (x, y), (x + w, y + h), color, thickness)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = y - th - base - 4 if y - th - base - 4 >= 0 else y + h
        cv2.rectangle(frame, (x, top), (x + tw + 4, top + th + base + 4), color, cv2.FILLED)
        cv2.putText(frame, label, (x + 2, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness)
    return frame
