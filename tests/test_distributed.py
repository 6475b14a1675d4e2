"""DDP for real on the CPU: 2 gloo processes train, validate and test, and report what one process reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fer_lightning.evaluation import run_eval
from tests.conftest import compose_train, write_fer_csv
from tests.scripts import one_thread, run_script  # noqa: F401 (fixture)

COMPARED = ("val/acc", "val/f1_macro", "val/loss", "test/acc", "test/f1_macro", "test/loss")


@pytest.mark.usefixtures("one_thread")
def test_ddp_on_two_cpu_processes_reports_the_metrics_of_one_process(tmp_path: Path) -> None:
    # data.loader=device (aug=none has a device node): 17 val images in batches of 8 shard into 9 + 8, i.e. 2 batches
    # on rank 0 and 1 on rank 1, and 19 test images into 10 + 9; the shards are not padded (issue 18), so the synced
    # metrics must count every image exactly once, as one process does, with uneven batch counts per rank
    data = write_fer_csv(tmp_path / "fer.csv", {"Training": 32, "PublicTest": 17, "PrivateTest": 19})
    common = [f"data.path={data}", "data.num_workers=0", "data.eval_batch_size=8"]
    # TenCrop at eval: 10 views of the 40x40 crop the (crop-free) training ran at
    ddp = run_script(
        "train.py",
        "trainer=ddp_cpu",
        *common,
        "model=tiny_xception",
        "aug=none",
        "aug.crop_size=40",
        "tta=tencrop",
        "data.batch_size=8",
        "trainer.max_epochs=1",
        # fp32 (eval takes the trained precision): oneDNN's bf16 kernels round differently per batch size, and the
        # ranks' last batches (2 and 1 test images) are not one process's (3)
        "trainer.precision=32-true",
        "logger=none",
        f"hydra.run.dir={tmp_path}/ddp",
        cwd=tmp_path,
        timeout=240,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    output = ddp.stdout + ddp.stderr
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in output
    ddp_metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    report = json.loads((tmp_path / "ddp" / "per_class_test.json").read_text())
    assert sum(map(sum, report["confusion_matrix"])) == 19  # both ranks' shards, each image once

    # the same checkpoint and data in one process, through eval's TenCrop
    single_cfg = compose_train(
        [*common, f"ckpt_path={ddp_metrics['best_checkpoint']}", "tta=tencrop", "trainer.accelerator=cpu"],
        tmp_path / "single",
        config_name="eval",
    )
    single = run_eval(single_cfg)
    assert single["tta"].endswith("TenCropTTA")
    for key in COMPARED:  # losses to 1e-4: fp32 sums in another order
        assert ddp_metrics[key] == pytest.approx(single[key], abs=1e-4 if "loss" in key else 1e-6), key
    assert ddp_metrics["test/per_class_acc"] == pytest.approx(single["test/per_class_acc"])


# ~40-70 s on a shared 2-core machine (3 processes start per run of the sweep, twice): too slow for every CI run
@pytest.mark.slow
def test_ddp_jobs_of_a_multirun_each_run_their_own_ranks(tmp_path: Path) -> None:
    """Lightning's launcher re-runs the command line for rank 1: it must be this job, not the sweep again; and when
    resume=true continues a job from its checkpoint, rank 1 must load that checkpoint too."""
    data = write_fer_csv(tmp_path / "fer.csv", {"Training": 16, "PublicTest": 8, "PrivateTest": 8})
    command = [
        "train.py",
        "-m",
        "trainer=ddp_cpu",
        f"data.path={data}",
        "model=tiny_xception",
        "data.num_workers=0",
        "data.batch_size=8",
        "trainer.max_epochs=1",
        "logger=none",
        "optimizer.lr=0.001,0.002",
        f"hydra.sweep.dir={tmp_path}/sweep",
    ]
    result = run_script(*command, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (result.stdout + result.stderr).count(
        "Launching 2 jobs locally"
    ) == 1  # rank 1 processes did not start the sweep again
    for job in ("0", "1"):  # each job's rank 1 logged into that job's directory
        assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (tmp_path / "sweep" / job / "train_ddp_process_1.log").read_text()
        assert (tmp_path / "sweep" / job / "metrics.json").exists()
    assert "2 jobs: 2 ok, 0 failed" in (tmp_path / "sweep" / "summary.md").read_text()

    # job 1 as if it had been cut off after its last epoch ended: both ranks restore that state and only test
    # (a rank without the checkpoint would train an epoch alone, and the ranks' collectives would not match)
    (tmp_path / "sweep" / "1" / "metrics.json").unlink()
    resumed = run_script(*command, "resume=true", cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Skipped job 0" in resumed.stdout
    assert f"Resuming job 1 from {tmp_path}/sweep/1/checkpoints/last.ckpt" in resumed.stdout
    rank1_log = (tmp_path / "sweep" / "1" / "train_ddp_process_1.log").read_text()
    assert f"fit resumes from {tmp_path}/sweep/1/checkpoints/last.ckpt" in rank1_log
    summary = (tmp_path / "sweep" / "summary.md").read_text()
    assert "2 jobs: 2 ok, 0 failed (1 skipped as finished earlier, 1 resumed from a checkpoint)" in summary
