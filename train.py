"""Train, validate, test and report: `python train.py model=mini_xception aug=heavy` (Hydra overrides)."""

from fer_lightning.cli import train_main

if __name__ == "__main__":
    train_main()
