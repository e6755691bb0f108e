"""The runner in-process on tiny configs: every degradation end to end, and the output schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import FAST_RUN as FAST
from helpers import compose_cfg

from ddrm_exp.paths import CONF_DIR
from ddrm_exp.runner import RunContext, run

DEGRADATIONS = sorted(p.stem for p in (CONF_DIR / "degradation").glob("*.yaml"))


@pytest.mark.parametrize("degradation", DEGRADATIONS)
def test_every_degradation_runs(tmp_path: Path, degradation: str) -> None:
    size = 64 if degradation in ("sr16", "sr_bicubic16", "sr_bicubic8") else 32
    cfg = compose_cfg(
        [
            f"degradation={degradation}",
            "noise.sigma_y=0.02",
            "logger=none",
            "save_images=false",
            "model=gaussian",
            f"model.image_size={size}",
            *FAST,
        ]
    )
    ctx = RunContext(output_dir=tmp_path, choices={"degradation": degradation, "model": "gaussian"})
    summary = run(cfg, ctx)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["count"] == summary["count"] == 2
    assert on_disk["degradation"] == degradation
    assert on_disk["nfe"] == 4
    for part in ("restored", "baseline"):
        for key in ("psnr", "ssim", "residual_rel", "residual_rms"):
            stat = on_disk[part][key]
            assert stat["n"] == 2 and stat["mean"] is not None, (part, key)
        assert on_disk[part]["lpips"]["n"] == 0  # disabled: recorded as null, not dropped
    assert on_disk["restored"]["psnr"]["mean"] > 5
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == [0, 1]
