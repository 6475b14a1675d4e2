"""Model registry: small builder functions registered by name, one factory to create them.

Follows timm's `register_model` / `create_model` pattern: a family file defines its `nn.Module` and a few
5-line builders decorated with `@register_model(...)`; importing `fer_lightning.models` registers them all.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model besides its builder."""

    name: str
    family: str
    paper: str
    # read by nothing yet (the input size comes from the data config); kept while mini_xception.py passes it
    default_input_size: int = 48


_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_INFOS: dict[str, ModelInfo] = {}


def register_model(
    *, family: str, paper: str, default_input_size: int = 48
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under its function name; a duplicate name is an error."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _BUILDERS:
            raise ValueError(
                f"model {name!r} is registered twice ({_BUILDERS[name].__module__} and {builder.__module__})"
            )
        _BUILDERS[name] = builder
        _INFOS[name] = ModelInfo(name, family, paper, default_input_size)
        return builder

    return decorate


def list_models(family: str | None = None) -> list[str]:
    """Names of all registered models (optionally of one family), sorted."""
    return sorted(n for n, info in _INFOS.items() if family is None or info.family == family)


def model_info(name: str) -> ModelInfo:
    _check_known(name)
    return _INFOS[name]


def create_model(name: str, num_classes: int, in_chans: int = 1, **kwargs) -> nn.Module:
    """Build a registered model; an unknown name lists the valid ones (and the closest match)."""
    _check_known(name)
    return _BUILDERS[name](num_classes=num_classes, in_chans=in_chans, **kwargs)


def _check_known(name: str) -> None:
    if name in _BUILDERS:
        return
    close = difflib.get_close_matches(name, _BUILDERS, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise KeyError(f"unknown model {name!r}.{hint} Registered models: {', '.join(list_models())}")
