"""User errors end a command with one message and exit status 2; a traceback only with HYDRA_FULL_ERROR=1."""

from __future__ import annotations

from pathlib import Path

import pytest

from fer_lightning.checkpoint import CheckpointError
from fer_lightning.data.formats.fer2013 import DataFormatError
from fer_lightning.errors import USER_ERROR_EXIT, UserError, console_script, exit_on_user_error
from tests.scripts import finish_script, script_env, start_script


def run(script: str, *overrides: str, cwd: Path, **env: str):
    return finish_script(start_script(script, *overrides, cwd=cwd, env=script_env(cwd, **env)), timeout=120)


def test_user_errors_are_one_message_and_status_2(capsys: pytest.CaptureFixture) -> None:
    for error in (DataFormatError("data.csv row 3: expected 2304 pixels"), CheckpointError("x.ckpt: not one")):
        with pytest.raises(SystemExit) as stop, exit_on_user_error():
            raise error
        assert stop.value.code == USER_ERROR_EXIT
        assert capsys.readouterr().err == f"error: {error}\n"


def test_a_console_script_passes_argv_returns_none_and_exits_2_on_a_user_error(capsys: pytest.CaptureFixture) -> None:
    received = []

    def tool(argv):
        received.append(argv)
        if argv == ["--bad"]:
            raise UserError("--bad: expected a number")
        return "a value a console script must not return as its status"

    main = console_script(tool)
    assert main(["--good"]) is None
    assert received == [["--good"]]
    with pytest.raises(SystemExit) as stop:
        main(["--bad"])
    assert stop.value.code == USER_ERROR_EXIT
    assert capsys.readouterr().err == "error: --bad: expected a number\n"


def test_bugs_keep_their_traceback() -> None:
    with pytest.raises(ZeroDivisionError), exit_on_user_error():
        raise ZeroDivisionError("a bug, not the user's")


def test_full_error_re_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(UserError), exit_on_user_error():
        raise UserError("shown with its traceback")


def test_eval_of_a_text_file_exits_2_without_traceback(tmp_path: Path) -> None:
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    result = run("eval.py", f"ckpt_path={text}", "data=synthetic", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"error: {text}: cannot be read as a PyTorch checkpoint" in result.stderr
    assert "Traceback" not in result.stderr
    assert "HYDRA_FULL_ERROR" not in result.stderr
    full = run("eval.py", f"ckpt_path={text}", "data=synthetic", cwd=tmp_path, HYDRA_FULL_ERROR="1")
    assert full.returncode != 0
    assert "Traceback" in full.stderr


def test_export_to_an_unknown_format_exits_2(tmp_path: Path) -> None:
    result = run("export.py", "ckpt_path=whatever.ckpt", "format=tflite", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "format='tflite': choose one of" in result.stderr
    assert "Traceback" not in result.stderr
