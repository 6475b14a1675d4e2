"""Commands over the library that are not tasks of their own (nothing in the library imports this package):

- `fer-show-aug` (`show_aug.py`): a PNG grid of an augmentation preset's draws on real training images;
- `fer-import-keras` (`keras_import.py`): the authors' trained Keras mini_XCEPTION as a fer-lightning checkpoint;
- `fer-wandb-offline` (`wandb_offline.py`): what an offline W&B run recorded, without syncing it.
"""
