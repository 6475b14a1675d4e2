"""Model zoo. Importing this package registers every family; `create_model` builds one by name."""

from fer_lightning.models import (
    airfer,  # noqa: F401  (registers the family)
    densenet,  # noqa: F401  (registers the family)
    mini_xception,  # noqa: F401  (registers the family)
    mobilenet,  # noqa: F401  (registers the family)
    resnet,  # noqa: F401  (registers the family)
    vgg,  # noqa: F401  (registers the family)
)
from fer_lightning.models._base import FERNet
from fer_lightning.models._registry import ModelInfo, create_model, list_models, model_info, register_model

__all__ = ["FERNet", "ModelInfo", "create_model", "list_models", "model_info", "register_model"]
