"""Speed measurements, each a command over the library (nothing in the library imports this package):

- `fer-bench` (`python -m fer_lightning.bench`, `make bench`, `__main__.py`): training and inference speed of the
  framework against the bare model step and a plain PyTorch loop; the paths are in `framework.py` and `plain.py`;
- `fer-bench-loader` (`loader.py`): the train DataLoader and the device data path alone, against the model step;
- `fer-bench-inference` (`inference.py`): one checkpoint in PyTorch, TorchScript and ONNX Runtime on the CPU;
- `timing.py`, `machine.py`: the clocks they share, and what machine (and how much memory) a figure comes from.
"""
