"""Classify the faces in images, folders, videos or a camera: `python predict.py ckpt_path=model.ckpt input=PATH`."""

from fer_lightning.cli import predict_main

if __name__ == "__main__":
    predict_main()
