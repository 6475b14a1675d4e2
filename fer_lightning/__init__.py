"""fer-lightning: a PyTorch Lightning + Hydra framework for facial expression recognition."""

from omegaconf import ListConfig, OmegaConf

__version__ = "0.1.0"


def _image_folder_info(key: str, path: str):
    """`${image_folder:num_classes,${data.path}}`: a fact read from an image tree (see data/folders.py)."""
    from fer_lightning.data.folders import image_folder_info

    value = image_folder_info(path)[key]
    return ListConfig(value) if isinstance(value, list) else value  # a plain list breaks OmegaConf.resolve


# Registered on import so every entry point (train.py, eval.py, tests composing the config) resolves it.
if not OmegaConf.has_resolver("image_folder"):
    OmegaConf.register_new_resolver("image_folder", _image_folder_info, use_cache=True)
