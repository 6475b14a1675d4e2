"""fer-report: the self-contained report.html of a run directory and of a sweep directory.

The directories are built by hand in the layout a real run writes (train.py experiment=quickstart data=synthetic
logger=csv; a two-job multirun): csv/metrics.csv in Lightning's sparse CSVLogger format (train and val metrics on
rows of their own, then the selected checkpoint's validate and test rows after the fit), metrics.json, the test
split's report files (the real writer), .hydra/overrides.yaml, job.json and summary.csv (the real writer).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from fer_lightning.sweep.callback import SweepSummary
from fer_lightning.sweep.summary import collect_rows, sort_rows, write_summary
from fer_lightning.tools.html_report import main
from fer_lightning.training import run_training
from fer_lightning.utils import html_report
from fer_lightning.utils.html_report import write_html_report, write_html_report_safely
from fer_lightning.utils.html_report_plots import curve, fit_rows, read_metrics_csv
from fer_lightning.utils.report import write_split_report
from tests.conftest import FER2013_ORDER, compose_train

HEADER = "epoch,step,test/acc,test/f1_macro,test/loss,time/images_seen,train/acc,train/loss,train/lr,val/acc,val/loss"
CHROMIUM = Path("/usr/bin/chromium")


def metrics_csv_text(val_accs: list[float]) -> str:
    """One epoch of 5 steps per val/acc: a val row and a train row at the epoch's last step; then the validate
    and test rows of the selected checkpoint at the next step (what Lightning's CSVLogger writes)."""
    lines, step = [HEADER], 0
    for epoch, acc in enumerate(val_accs):
        step += 5
        lines.append(f"{epoch},{step - 1},,,,{step * 64}.0,,,,{acc},{2.0 - acc}")
        lines.append(f"{epoch},{step - 1},,,,,{acc - 0.05},{2.1 - acc},{0.001 / (epoch + 1)},,")
    best = max(val_accs)
    lines.append(f"{len(val_accs)},{step},,,,,,,,{best},{2.0 - best}")
    lines.append(f"{len(val_accs)},{step},{best - 0.01},0.3,{2.0 - best},,,,,,")
    return "\n".join(lines) + "\n"


def make_run(run_dir: Path, overrides: list[str], val_accs: list[float] | None, tested: bool = True) -> Path:
    """A run directory; `val_accs=None`: a job that failed before logging anything."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    if val_accs is None:
        return run_dir
    (run_dir / "csv").mkdir()
    (run_dir / "csv" / "metrics.csv").write_text(metrics_csv_text(val_accs))
    if tested:
        confmat = np.diag([3, 1, 2, 4, 2, 1, 3]) + 1
        write_split_report(run_dir, "test", confmat, FER2013_ORDER)
        metrics = {"val/acc": max(val_accs), "test/acc": max(val_accs) - 0.01, "test/f1_macro": 0.3, "epochs": 2}
        metrics |= {"wall_time_s": 67.8, "params": 56951.0, "best_checkpoint": str(run_dir / "best.ckpt")}
        metrics["test/per_class_acc"] = dict.fromkeys(FER2013_ORDER, 0.5)
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def make_sweep(sweep_dir: Path, summary: bool = True) -> Path:
    """Three jobs over optimizer.lr: two finished, one failed without metrics."""
    shared = ["data=synthetic", "logger=csv"]
    for job, (lr, accs) in enumerate([("0.001", [0.2, 0.4]), ("0.01", [0.3, 0.35]), ("0.1", None)]):
        overrides = [*shared, f"optimizer.lr={lr}"]
        job_dir = make_run(sweep_dir / str(job), overrides, accs)
        error = "RuntimeError: diverged" if accs is None else ""
        record = {"job": job, "overrides": overrides, "status": "failed" if error else "ok", "error": error}
        (job_dir / "job.json").write_text(json.dumps(record))
    (sweep_dir / "multirun.yaml").write_text("hydra: {}\n")
    if summary:
        write_summary(sweep_dir, sort_rows(collect_rows(sweep_dir)))
    return sweep_dir


def images(page: str) -> list[str]:
    return re.findall(r'<img class="figure" alt="([^"]*)" src="data:image/png;base64,', page)


def assert_self_contained(page: str) -> None:
    assert "://" not in page  # no URL at all (":" is not in base64's alphabet)
    assert "<script" not in page


def test_run_page_has_title_curves_headline_and_per_class_table(tmp_path: Path, capsys) -> None:
    run_dir = make_run(tmp_path / "20-15-21", ["experiment=quickstart", "data=synthetic"], [0.2, 0.25])
    main([str(run_dir)])
    printed = capsys.readouterr().out.strip()
    assert printed == str(run_dir / "report.html")
    page = (run_dir / "report.html").read_text()
    assert "<h1>fer-report: 20-15-21</h1>" in page
    assert images(page) == ["loss", "accuracy and macro-F1", "learning rate", "confusion matrix (test)"]
    assert_self_contained(page)
    assert "experiment=quickstart data=synthetic" in page
    assert re.search(r"<td>val/acc</td><td class=\"num\">0.2500</td>", page)
    assert re.search(r"<td>epochs</td><td class=\"num\">2</td>", page)
    assert '<td>wall_time_s</td><td class="num">1.1 min</td>' in page
    for name in FER2013_ORDER:  # the per-class table
        assert f"<td>{name}</td>" in page
    assert "Accuracy 35.38% on 65 images" in page  # 23 correct of 65
    assert "not available" not in page


def test_curves_leave_out_the_selected_checkpoints_rows_after_the_fit(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text(metrics_csv_text([0.2, 0.4, 0.3]))
    rows = fit_rows(read_metrics_csv(path))
    assert curve(rows, "val/acc") == ("epoch", [0.0, 1.0, 2.0], [0.2, 0.4, 0.3])
    assert curve(rows, "train/lr")[2] == pytest.approx([0.001, 0.0005, 0.001 / 3])
    assert not any("test/acc" in row for row in rows)


def test_missing_pieces_say_not_available(tmp_path: Path) -> None:
    training = make_run(tmp_path / "training", ["data=synthetic"], [0.2], tested=False)  # no test, no metrics yet
    page = write_html_report(training).read_text()
    assert "metrics.json: not available" in page
    assert "test split report: not available" in page
    assert images(page) == ["loss", "accuracy and macro-F1", "learning rate"]
    started = make_run(tmp_path / "started", ["logger=tensorboard"], None)  # no csv/metrics.csv either
    page = write_html_report(started).read_text()
    assert "learning curves: not available" in page
    assert images(page) == []


def test_confusion_matrix_is_drawn_from_the_json_when_its_png_is_gone(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", ["data=synthetic"], [0.2, 0.3])
    (run_dir / "confusion_matrix_test.png").unlink()
    assert "confusion matrix (test)" in images(write_html_report(run_dir).read_text())


def test_sweep_page_lists_every_job_and_plots_their_val_acc(tmp_path: Path, monkeypatch) -> None:
    sweep_dir = make_sweep(tmp_path / "lr_sweep")
    write_html_report(sweep_dir / "0")  # a job's own page, linked from the table
    plotted = []
    real_plot = html_report.plot_curves
    monkeypatch.setattr(
        html_report, "plot_curves", lambda title, curves: plotted.append(curves) or real_plot(title, curves)
    )
    page = write_html_report(sweep_dir).read_text()
    assert "<h1>fer-report: lr_sweep</h1>" in page
    assert_self_contained(page)
    assert images(page) == ["val/acc per job"]
    assert [label for label, _ in plotted[0]] == ["job 0: optimizer.lr=0.001", "job 1: optimizer.lr=0.01"]
    assert plotted[0][0][1] == ("epoch", [0.0, 1.0], [0.2, 0.4])
    for lr in ("0.001", "0.01", "0.1"):
        assert f"<td>optimizer.lr={lr}</td>" in page  # every job, the shared overrides left out
    assert "Overrides shared by every job: <code>data=synthetic logger=csv</code>" in page
    assert "3 jobs, 2 ok, 1 failed" in page
    assert '<tr class="failed">' in page
    assert "RuntimeError: diverged" in page
    assert "job 2: optimizer.lr=0.1 val/acc curve: not available" in page
    assert '<a href="0/report.html">' in page
    assert '<a href="1/report.html">' not in page
    assert "From <code>summary.csv</code>" in page


def test_a_sweep_without_its_summary_yet_reads_the_jobs(tmp_path: Path) -> None:
    sweep_dir = make_sweep(tmp_path / "cut_off", summary=False)
    page = write_html_report(sweep_dir).read_text()
    assert "No <code>summary.csv</code> yet" in page
    assert all(f"<td>optimizer.lr={lr}</td>" in page for lr in ("0.001", "0.01", "0.1"))
    assert images(page) == ["val/acc per job"]


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_a_directory_that_is_neither_exits_2_naming_it(tmp_path: Path, make: str, capsys) -> None:
    target = tmp_path / "somewhere"
    if make == "empty":
        target.mkdir()
        (target / "notes.txt").write_text("no run here\n")
    elif make == "file":
        target.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main([str(target)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert str(target) in err
    assert "expected" in err
    assert len(err.strip().splitlines()) == 1
    assert not (target / "report.html").exists()


def test_the_run_and_sweep_hooks_never_fail_on_a_report_error(tmp_path: Path, caplog, monkeypatch) -> None:
    with caplog.at_level(logging.WARNING):
        assert write_html_report_safely(tmp_path / "gone") is None
    assert "report.html not written" in caplog.text
    sweep_dir = make_sweep(tmp_path / "sweep")
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})
    with pytest.raises(SystemExit, match="1 of 3 sweep jobs failed"):  # after the summary and the page
        SweepSummary().on_multirun_end(config)
    assert "optimizer.lr=0.1" in (sweep_dir / "report.html").read_text()
    monkeypatch.setattr(html_report, "sweep_page", lambda _: 1 / 0)
    with pytest.raises(SystemExit, match="1 of 3"), caplog.at_level(logging.WARNING):
        SweepSummary().on_multirun_end(config)
    assert "ZeroDivisionError" in caplog.text


def test_a_real_training_run_writes_its_report(fer_csv: Path, tmp_path: Path) -> None:
    overrides = [f"data.path={fer_csv}", "debug=limit", "logger=csv", "model=tiny_xception", "speed.autotune=false"]
    cfg = compose_train(overrides, tmp_path)
    run_training(cfg)
    page = (Path(cfg.paths.output_dir) / "report.html").read_text()
    assert images(page) == ["loss", "accuracy and macro-F1", "learning rate", "confusion matrix (test)"]
    assert "not available" not in page


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    command = [str(CHROMIUM), *flags, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["run", "sweep"])
def test_the_page_renders_in_headless_chromium(tmp_path: Path, kind: str) -> None:
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    from matplotlib.image import imread

    target = make_run(tmp_path / "run", ["data=synthetic"], [0.2, 0.3]) if kind == "run" else make_sweep(tmp_path / "s")
    page = write_html_report(target)
    shot = tmp_path / "shot.png"
    result = chromium(f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri(), profile=tmp_path / "p1")
    assert shot.exists(), result.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1200)
    assert (pixels.min(axis=2) < 0.9).mean() > 0.01  # not a blank page: text, tables and figures drawn
    assert len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50
    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "p2").stdout
    assert f"<h1>fer-report: {target.name}</h1>" in dom
    assert len(images(dom)) == len(images(page.read_text())) >= 1


def test_an_eval_directory_shows_its_reliability_diagrams(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", ["data=synthetic"], [0.2, 0.3])
    (run_dir / "reliability_test.png").write_bytes((run_dir / "confusion_matrix_test.png").read_bytes())
    assert "reliability diagram (test)" in images(write_html_report(run_dir).read_text())


def test_a_damaged_overrides_file_is_named_on_the_page_and_the_rest_shown(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run", ["data=synthetic"], [0.2, 0.3])
    (run_dir / ".hydra" / "overrides.yaml").write_text("- data=synthetic\n- [unclosed\n")
    page = write_html_report(run_dir).read_text()
    assert "overrides.yaml: not available (cannot be read: " in page
    assert images(page) == ["loss", "accuracy and macro-F1", "learning rate", "confusion matrix (test)"]
