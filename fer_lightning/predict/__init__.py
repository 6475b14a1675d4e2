"""Inference on images, folders, videos and cameras: face detection, crops, classification, annotation."""

from fer_lightning.predict.faces import FullFrameDetector, HaarFaceDetector, annotate, crop_face
from fer_lightning.predict.predictor import EmotionClassifier, FacePrediction, run_predict

__all__ = [
    "EmotionClassifier",
    "FacePrediction",
    "FullFrameDetector",
    "HaarFaceDetector",
    "annotate",
    "crop_face",
    "run_predict",
]
