"""TrainingClock's wall time across a resume: the earlier attempts' time, as the fit started, kept."""

from __future__ import annotations

from fer_lightning.callbacks import TrainingClock


def test_a_resumed_fit_keeps_the_earlier_attempts_wall_time() -> None:
    clock = TrainingClock()
    clock.load_state_dict({"train_seconds": 1.0, "images_seen": 64, "wall_seconds": 100.0})  # the fit's restore
    clock.on_fit_start(None, None)
    assert clock.resumed_wall_s == 100.0
    assert 100.0 <= clock.state_dict()["wall_seconds"] < 101.0  # the next checkpoint goes on counting
    # test(ckpt_path="best") restores callbacks again, from an older checkpoint: the fit's figure stays
    clock.load_state_dict({"train_seconds": 0.5, "images_seen": 32, "wall_seconds": 40.0})
    assert clock.resumed_wall_s == 100.0
    old = TrainingClock()
    old.load_state_dict({"train_seconds": 1.0, "images_seen": 64})  # a checkpoint from before the key
    old.on_fit_start(None, None)
    assert old.resumed_wall_s == 0.0
