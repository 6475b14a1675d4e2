"""What `input=` names: an image, a folder of them, a video file or a webcam index; and reading it.

Problems with one file (not an image, corrupt, empty) raise `MediaError`, which the caller records for that
file before moving on, so a folder with junk in it is still processed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fer_lightning.errors import UserError

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}


class MediaError(UserError):
    """One input cannot be used; `status` says how (`not_media`, `unreadable`)."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Source:
    """One thing to process. `kind`: `file` (an image or a video, decided by reading it) or `webcam`."""

    kind: str
    location: str  # a path, or the camera index as text
    name: str  # relative name used for outputs and reports

    @property
    def is_video(self) -> bool:
        return self.kind == "webcam" or Path(self.location).suffix.lower() in VIDEO_SUFFIXES


def webcam_index(value: object) -> int | None:
    """`input=0` (Hydra gives an int) or "0" means camera 0, unless a file of that name exists."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip()
    return int(text) if text.isdigit() and not Path(text).exists() else None


def discover(value: object, recursive: bool = False) -> list[Source]:
    """Sources for an input: a camera, one file, or a folder's visible files sorted by path."""
    index = webcam_index(value)
    if index is not None:
        return [Source("webcam", str(index), f"webcam{index}")]
    path = Path(str(value)).expanduser()
    if path.is_file():
        return [Source("file", str(path), path.name)]
    if not path.is_dir():
        raise FileNotFoundError(f"input {path} is neither a file, a folder nor a webcam index")
    files = path.rglob("*") if recursive else path.iterdir()
    visible = [f for f in files if f.is_file() and not any(p.startswith(".") for p in f.relative_to(path).parts)]
    return [Source("file", str(f), str(f.relative_to(path))) for f in sorted(visible)]


def read_image(path: str) -> np.ndarray:
    """BGR uint8; `MediaError` says whether the file is no image at all or a broken one."""
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise MediaError("unreadable", f"{path}: empty file")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is not None:
        return image
    if cv2.haveImageReader(path):
        raise MediaError("unreadable", f"{path}: image format recognised but the data cannot be decoded (corrupt?)")
    raise MediaError("not_media", f"{path}: not an image or video file")


def open_capture(source: Source) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(int(source.location)) if source.kind == "webcam" else cv2.VideoCapture(source.location)
    if not capture.isOpened():
        what = f"camera {source.location}" if source.kind == "webcam" else source.location
        raise MediaError("unreadable", f"{what}: cannot be opened as a video")
    return capture


def iter_frames(
    capture: cv2.VideoCapture, stride: int = 1, max_frames: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, BGR frame) for every `stride`-th frame, at most `max_frames` of them."""
    index = yielded = 0
    while max_frames is None or yielded < max_frames:
        ok = capture.grab()
        if not ok:
            return
        if index % stride == 0:
            ok, frame = capture.retrieve()
            if not ok:
                return
            yield index, frame
            yielded += 1
        index += 1


def video_writer(path: Path, fps: float, size: tuple[int, int], codec: str = "mp4v") -> cv2.VideoWriter:
    """A writer for the annotated video; `size` is (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps if fps > 0 else 25.0, size)
    if not writer.isOpened():
        raise MediaError("unwritable", f"{path}: OpenCV cannot write {codec!r} video here")
    return writer
