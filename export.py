"""Export a checkpoint to ONNX or TorchScript, checked against PyTorch: `python export.py ckpt_path=X format=onnx`."""

from fer_lightning.cli import export_main

if __name__ == "__main__":
    export_main()
