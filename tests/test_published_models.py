"""A published-architecture model runs through the CLI unchanged once its file is in place.

The real checkpoints cannot be downloaded here, so a state dict with the published layout
(random values) stands in for the user's file: what is exercised is the path a user takes —
model.checkpoint, strict loading, the LSUN folder dataset, the sampler at 256x256.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddrm_exp.models.ddpm_unet import ddpm_unet


@pytest.mark.slow
def test_lsun_bedroom_runs_with_a_checkpoint_in_place(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = ddpm_unet(256)  # the lsun_bedroom architecture (113.7M parameters)
    ckpt = tmp_path / "model-2388000.ckpt"
    torch.save(net.state_dict(), ckpt)  # a plain state dict, as the published file
    del net
    root = tmp_path / "ood_bedroom" / "bedroom"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 280, 3), dtype=np.uint8)).save(root / "a.png")
    run_dir = tmp_path / "run"
    env = {**os.environ, "DDRM_EXP_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ddrm_exp",
            "model=lsun_bedroom",
            f"model.checkpoint={ckpt}",
            "dataset=lsun_bedroom",
            f"dataset.root={tmp_path / 'ood_bedroom'}",
            "degradation=sr4",
            "sampler.timesteps=2",
            "batch_size=1",
            "logger=none",
            "metrics.lpips=false",
            f"hydra.run.dir={run_dir}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == "lsun_bedroom" and summary["count"] == 1 and summary["nfe"] == 2
