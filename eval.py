"""Evaluate a checkpoint: `python eval.py ckpt_path=model.ckpt split=both tta=tencrop` (Hydra overrides)."""

from fer_lightning.cli import eval_main

if __name__ == "__main__":
    eval_main()
