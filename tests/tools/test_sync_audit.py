"""The host-sync audit of `make gpu-check`: its message without CUDA, and on a GPU the counts it reports."""

from __future__ import annotations

import pytest
import torch

from fer_lightning.tools import sync_audit


def test_without_cuda_it_says_so_and_exits_0(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert sync_audit.main([]) == 0
    assert "sync audit: no CUDA device" in capsys.readouterr().out


@pytest.mark.gpu
def test_the_per_step_pieces_never_wait_for_the_gpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    counts = {name: sync_audit.syncs_per_call(fn) for name, fn in sync_audit.pieces(batch=32).items()}
    # issue 18: the device augmentation, Mixup, the training accuracy and the eval loss run every step without a sync
    for name in ("device aug (heavy)", "mixup / cutmix", "eval loss update"):
        assert counts[name] == 0, counts
