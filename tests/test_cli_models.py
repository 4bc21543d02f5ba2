"""`emovit models` (list, fetch) and offline-first face detection: the YuNet cache lives in
``$EMOVIT_HOME/models`` (a private folder per test, from conftest's `isolated_env`)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from emovit.cli import main
from emovit.faces import YUNET, emovit_home

from .conftest import SHARED

SHARED_YUNET = SHARED / "models" / YUNET.filename
OFFLINE = "http://127.0.0.1:9/offline"  # nothing listens on port 9: refused at once
needs_opencv = pytest.mark.skipif(importlib.util.find_spec("cv2") is None, reason="needs emovit[faces]")


@pytest.fixture
def shared_yunet() -> Path:
    if not SHARED_YUNET.is_file():
        pytest.skip(f"{SHARED_YUNET} is missing (tests read ../shared in place; set EMOVIT_SHARED)")
    return SHARED_YUNET


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOVIT_YUNET_URL", OFFLINE)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def cached() -> Path:
    return emovit_home() / "models" / YUNET.filename


def test_models_lists_the_registry() -> None:
    for args in (["models"], ["models", "list"]):
        result = run(*args)
        assert result.exit_code == 0, result.output
        assert result.stdout.split()[0] == "default" and "dima806" in result.stdout


def test_fetch_from_a_local_copy_checks_its_sha256(shared_yunet: Path, offline: None) -> None:
    assert YUNET.sha256 == "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
    result = run("models", "fetch", "yunet", "--from", str(shared_yunet))
    assert result.exit_code == 0, result.output
    assert Path(result.stdout.strip()) == cached()
    assert hashlib.sha256(cached().read_bytes()).hexdigest() == YUNET.sha256
    again = run("models", "fetch", "yunet")  # cached: no network needed
    assert again.exit_code == 0 and Path(again.stdout.strip()) == cached()


def test_fetch_from_a_wrong_file_names_it_and_installs_nothing(tmp_path: Path, offline: None) -> None:
    wrong = tmp_path / "not yunet.onnx"
    wrong.write_bytes(b"something else")
    result = run("models", "fetch", "yunet", "--from", str(wrong))
    assert result.exit_code == 2
    assert "'--from'" in result.stderr and str(wrong) in result.stderr and YUNET.sha256 in result.stderr
    assert not cached().parent.exists() or list(cached().parent.iterdir()) == []  # no temporary file
    device = run("models", "fetch", "yunet", "--from", os.devnull)  # it exists: "no such file" misled
    assert device.exit_code == 2 and "not a regular file" in device.stderr, device.output


def test_a_cache_that_cannot_be_made_is_not_blamed_on_the_network(
    tmp_path: Path, offline: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "home").write_text("EMOVIT_HOME points at a file")
    monkeypatch.setenv("EMOVIT_HOME", str(tmp_path / "home"))
    result = run("models", "fetch", "yunet")
    assert result.exit_code == 1 and "cannot create the cache folder" in result.stderr, result.output
    assert "Offline?" not in result.stderr and "EMOVIT_HOME" in result.stderr


def test_fetch_downloads_and_verifies(shared_yunet: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOVIT_YUNET_URL", shared_yunet.as_uri())  # a download without a network
    result = run("models", "fetch", "yunet")
    assert result.exit_code == 0, result.output
    assert hashlib.sha256(cached().read_bytes()).hexdigest() == YUNET.sha256


def test_fetch_offline_fails_with_the_way_out(offline: None) -> None:
    result = run("models", "fetch", "yunet")
    assert result.exit_code == 1
    assert "--from PATH" in result.stderr and "Traceback" not in result.output
    assert not cached().exists()


@needs_opencv
def test_predict_works_offline_without_a_cached_detector(
    tiny_model_dir: Path, face_jpeg: Path, tmp_path: Path
) -> None:
    """The default detector is auto: no YuNet in the cache and no network → Haar, one warning that
    says how to install the file offline."""
    env = {**os.environ, "EMOVIT_HOME": str(tmp_path / "empty home"), "EMOVIT_YUNET_URL": OFFLINE}
    proc = subprocess.run(
        [sys.executable, "-m", "emovit.cli", "predict", str(face_jpeg), "--model", str(tiny_model_dir),
         "--format", "csv"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "Haar" in warnings[0], proc.stderr
    assert "emovit models fetch yunet --from PATH" in warnings[0]  # how to fix it offline
    assert len(proc.stdout.splitlines()) >= 2  # header + the face Haar found


@needs_opencv
def test_yunet_by_name_offline_after_fetch_from(
    shared_yunet: Path, tiny_model_dir: Path, face_jpeg: Path, offline: None
) -> None:
    args = ["predict", str(face_jpeg), "--model", str(tiny_model_dir), "--detector", "yunet", "-q"]
    missing = run(*args)
    assert missing.exit_code == 2 and "'--detector'" in missing.stderr
    assert "emovit models fetch yunet" in missing.stderr
    assert run("models", "fetch", "yunet", "--from", str(shared_yunet)).exit_code == 0
    found = run(*args, "--format", "jsonl")
    assert found.exit_code == 0, found.output
    assert '"detection_score": 0.' in found.stdout


def test_info_says_why_auto_runs_torch_without_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> None:
    """`make demo` installs no onnxruntime: info said `torch` beside a good model.onnx, no why."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a)
    )
    details = json.loads(run("info", "default", "--format", "json").stdout)
    assert details["onnx"]["matches_weights"] is True
    assert details["backend_auto_cpu"] == "torch (onnxruntime is not installed: pip install 'emovit[onnx]')"
