"""predict: real faces (scikit-image's astronaut photo) in images, folders and a generated video; bad files in a
batch are reported per file; webcam indices are parsed. An untrained mini_xception checkpoint keeps it fast:
the detector, crops, records and outputs are under test here, not the model's accuracy."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from fer_lightning.calibration import write_calibrated_checkpoint
from fer_lightning.checkpoint import build_checkpoint, save_checkpoint
from fer_lightning.errors import UserError
from fer_lightning.models import create_model
from fer_lightning.predict import EmotionClassifier, FullFrameDetector, crop_face, run_predict
from fer_lightning.predict.media import discover, webcam_index
from fer_lightning.predict.predictor import throughput
from tests.conftest import compose_train

skimage_data = pytest.importorskip("skimage.data")

# tiny batches: on a shared 2-core machine a second torch thread mostly waits
pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
ASTRONAUT_FACE = (177, 66, 95, 95)  # where OpenCV's cascade finds Eileen Collins' face in the 512x512 photo


def random_checkpoint(path: Path, image_size: int = 64, crop_size: int | None = None) -> Path:
    torch.manual_seed(0)
    config = {"name": "mini_xception", "num_classes": 7, "in_chans": 1}
    preprocessing = {"image_size": image_size, "crop_size": crop_size, "in_chans": 1, "mean": 0.5, "std": 0.5}
    checkpoint = build_checkpoint(create_model(**config), config, {**preprocessing, "class_names": CLASSES})
    return save_checkpoint(checkpoint, path)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt")


def astronaut_bgr(size: int | None = None) -> np.ndarray:
    image = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)
    return image if size is None else cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def iou(a, b) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def predict(ckpt: Path, source: Path | int, tmp_path: Path, *overrides: str) -> tuple[dict, list[dict], Path]:
    cfg = compose_train([f"ckpt_path={ckpt}", f"input={source}", *overrides], tmp_path, config_name="predict")
    summary = run_predict(cfg)
    run = Path(cfg.output_dir)
    records = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    return summary, records, run


def test_image_with_a_real_face(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image = tmp_path / "in" / "astronaut.png"
    image.parent.mkdir()
    cv2.imwrite(str(image), astronaut_bgr())
    summary, records, run = predict(ckpt, image, tmp_path)

    assert len(records) == 1
    face = records[0]
    assert face["file"] == "astronaut.png"
    assert face["frame"] is None
    assert iou(face["box"], ASTRONAUT_FACE) > 0.7
    assert list(face["probs"]) == CLASSES
    assert sum(face["probs"].values()) == pytest.approx(1.0, abs=1e-5)
    assert face["label"] == max(face["probs"], key=face["probs"].get)
    assert face["confidence"] == max(face["probs"].values())
    annotated = cv2.imread(str(run / "annotated" / "astronaut.png"))
    assert annotated.shape == (512, 512, 3)
    assert not np.array_equal(annotated, astronaut_bgr())
    assert summary["files"][0]["status"] == "ok"
    assert json.loads((run / "files.json").read_text())["faces"] == 1
    assert "faces/s" in capsys.readouterr().out


def test_bad_files_are_reported_and_do_not_stop_the_batch(ckpt: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a_astronaut.jpg"), astronaut_bgr())
    gradient = np.tile(np.linspace(0, 255, 200, dtype=np.uint8), (150, 1))
    cv2.imwrite(str(folder / "b_gradient.png"), gradient)  # an image, but no face
    (folder / "c_notes.txt").write_text("not an image")
    (folder / "d_truncated.jpg").write_bytes((folder / "a_astronaut.jpg").read_bytes()[:300])
    (folder / "e_empty.png").write_bytes(b"")
    (folder / "f_garbage.mp4").write_bytes(np.random.default_rng(0).bytes(2000))
    cv2.imwrite(str(folder / "g_astronaut_small.png"), astronaut_bgr(256))

    summary, records, _ = predict(ckpt, folder, tmp_path)

    statuses = {f["file"]: f["status"] for f in summary["files"]}
    assert statuses == {
        "a_astronaut.jpg": "ok",
        "b_gradient.png": "no_face",
        "c_notes.txt": "not_media",
        "d_truncated.jpg": "unreadable",
        "e_empty.png": "unreadable",
        "f_garbage.mp4": "unreadable",
        "g_astronaut_small.png": "ok",
    }
    assert sorted(r["file"] for r in records) == ["a_astronaut.jpg", "g_astronaut_small.png"]


def test_video_frames_are_classified_and_annotated(ckpt: Path, tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (256, 256))
    for shift in range(6):  # the face drifts right, as in a real clip
        writer.write(np.roll(astronaut_bgr(256), 3 * shift, axis=1))
    writer.release()

    summary, records, run = predict(ckpt, video, tmp_path, "video.stride=2")

    assert [r["frame"] for r in records] == [0, 2, 4]
    assert summary["files"][0] | {"output": None} == {
        "file": "clip.avi",
        "status": "ok",
        "kind": "video",
        "frames": 3,
        "faces": 3,
        "output": None,
        "message": None,
    }
    capture = cv2.VideoCapture(str(run / "annotated" / "clip.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3


def test_webcam_index_is_parsed_and_a_missing_camera_is_reported(ckpt: Path, tmp_path: Path) -> None:
    assert webcam_index(0) == 0
    assert webcam_index("2") == 2
    assert webcam_index("photo.jpg") is None
    assert webcam_index(True) is None
    (tmp_path / "3").write_bytes(b"")
    assert webcam_index(str(tmp_path / "3")) is None
    assert discover(0)[0].kind == "webcam"
    cfg = compose_train([f"ckpt_path={ckpt}", "input=9", "video.max_frames=1"], tmp_path, config_name="predict")
    with pytest.raises(UserError, match="none of the 1 inputs in 9 could be read"):  # no camera 9 on a test machine
        run_predict(cfg)
    summary = json.loads((Path(cfg.output_dir) / "files.json").read_text())  # still written: it says why
    assert (Path(cfg.output_dir) / "predictions.jsonl").read_text() == ""
    assert summary["files"][0]["kind"] == "webcam"
    assert summary["files"][0]["status"] == "unreadable"


def test_nothing_to_predict_is_an_error_naming_the_folder(ckpt: Path, tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(UserError, match=r"no images or videos found in .*empty \(recursive=true"):
        predict(ckpt, tmp_path / "empty", tmp_path)


def test_throughput_without_faces_says_n_a() -> None:
    classifier = SimpleNamespace(faces=0, seconds=0.0)
    line = throughput(3, 0, 1.5, classifier)
    assert "classifier alone n/a faces/s" in line
    assert "nan" not in line


def test_crops_follow_the_checkpoint_preprocessing(tmp_path: Path) -> None:
    gray = cv2.cvtColor(astronaut_bgr(), cv2.COLOR_BGR2GRAY)
    assert crop_face(gray, (0, 0, 40, 40), 64, margin=0.5).shape == (64, 64)  # box at the corner: border padded
    classifier = EmotionClassifier.from_checkpoint(random_checkpoint(tmp_path / "c.ckpt", 48, crop_size=44))
    assert classifier.batch(gray, [ASTRONAUT_FACE, (10, 10, 30, 30)]).shape == (2, 1, 44, 44)


def test_full_frame_detector_for_already_cropped_faces(ckpt: Path, tmp_path: Path) -> None:
    face = cv2.cvtColor(astronaut_bgr(), cv2.COLOR_BGR2GRAY)[66:161, 177:272]
    assert FullFrameDetector()(face) == [(0, 0, 95, 95)]
    image = tmp_path / "face48.png"
    cv2.imwrite(str(image), cv2.resize(face, (48, 48), interpolation=cv2.INTER_AREA))
    _, records, _ = predict(ckpt, image, tmp_path, "detector=full_frame", "annotate=false")
    assert [r["box"] for r in records] == [[0, 0, 48, 48]]


def test_a_calibrated_checkpoint_predicts_softmax_of_logits_over_its_temperature(ckpt: Path, tmp_path: Path) -> None:
    gray = cv2.cvtColor(astronaut_bgr(), cv2.COLOR_BGR2GRAY)
    boxes = [ASTRONAUT_FACE, (10, 10, 120, 120), (300, 200, 150, 150)]
    plain = EmotionClassifier.from_checkpoint(ckpt)
    calibrated = EmotionClassifier.from_checkpoint(write_calibrated_checkpoint(ckpt, 3.0, {}, tmp_path / "c.ckpt"))
    assert (plain.temperature, calibrated.temperature) == (1.0, 3.0)
    with torch.no_grad():
        logits = plain.module(plain.batch(gray, boxes)).float()
    faces = calibrated(gray, boxes)
    got = torch.tensor([list(face.probs.values()) for face in faces])
    torch.testing.assert_close(got, torch.softmax(logits / 3.0, dim=1), atol=1e-6, rtol=0)
    assert [face.label for face in faces] == [face.label for face in plain(gray, boxes)]  # the argmax unchanged
    assert [face.confidence for face in faces] == pytest.approx(got.max(1).values.tolist())
