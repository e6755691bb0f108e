"""The run header and the once-per-run messages: threads, slow bf16, resizing, LPIPS offline."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from helpers import compose_cfg

from ddrm_exp import run_header
from ddrm_exp.errors import ConfigError
from ddrm_exp.metrics import image as image_metrics
from ddrm_exp.runner import setup
from ddrm_exp.tracking.resume import config_hash


def test_threads_option_sets_torch_and_leaves_the_hash() -> None:
    before = torch.get_num_threads()
    try:
        run_header.apply_threads(compose_cfg(["threads=1"]))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert compose_cfg([]).threads is None
    assert config_hash(compose_cfg(["threads=1"])) == config_hash(compose_cfg([]))
    for bad in ("threads=0", "threads=two"):
        with pytest.raises(ConfigError, match="threads"):
            run_header.apply_threads(compose_cfg([bad]))


def test_header_names_threads_and_the_resize_once(caplog: pytest.LogCaptureFixture) -> None:
    from ddrm_exp.runner import RunContext

    cfg = compose_cfg(["model=gaussian", "dataset.limit=1", "logger=none", "metrics.lpips=false"])
    s = setup(cfg, RunContext(output_dir=Path("unused")))
    with caplog.at_level(logging.INFO, logger="ddrm_exp"):
        run_header.log_header(s)
    text = caplog.text
    assert "CPU thread" in text and "torch's choice; set threads=N" in text
    assert text.count("resized to the model's size") == 1 and "→ 64×64" in text
    assert "dataset.resize=false" in text


def test_bf16_on_a_cpu_without_it_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(run_header, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="ddrm_exp"):
        run_header.warn_slow_precision("bf16", torch.device("cpu"))
        run_header.warn_slow_precision("fp32", torch.device("cpu"))
    assert caplog.text.count("precision=bf16") == 1 and "slower" in caplog.text


def test_lpips_offline_says_where_the_file_goes_once_and_downloads_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(image_metrics, "_TOLD", set())
    with caplog.at_level(logging.WARNING):
        first = image_metrics.LPIPSMetric(torch.device("cpu"))
        second = image_metrics.LPIPSMetric(torch.device("cpu"))
    assert not first.available and not second.available
    expected = str(tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    assert first.reason is not None and expected in first.reason
    assert "metrics.lpips=false" in first.reason
    assert caplog.text.count("LPIPS off") == 1  # said once per process
    out, err = capfd.readouterr()
    assert "Downloading" not in out + err
    assert first(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8)) == [None, None]


def test_resize_note_for_bsd_frames(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from PIL import Image

    Image.new("RGB", (40, 30)).save(tmp_path / "f.png")
    frames = SimpleNamespace(frames=[SimpleNamespace(sharp=tmp_path / "f.png")], resize=True)
    assert run_header.resize_note(frames, (32, 32)) == "40×30 → 32×32"
    frames.resize = False
    assert run_header.resize_note(frames, (32, 32)) is None
