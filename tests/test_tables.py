"""experiment=table1 as a real (miniature) multirun, then make_tables.py over its directory."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from ddrm_exp.config import validate
from ddrm_exp.paths import CONF_DIR
from ddrm_exp.tables import TABLE1, build_table, load_records

ROOT = Path(__file__).resolve().parents[1]


def test_table1_composes_with_report_settings() -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="config", overrides=["experiment=table1"], return_hydra_config=True
        )
    validate(cfg)
    assert cfg.hydra.runtime.choices.model == "lsun_bedroom"
    assert cfg.hydra.runtime.choices.dataset == "lsun_bedroom"
    assert (cfg.sampler.eta, cfg.sampler.eta_b, cfg.sampler.timesteps) == (1.0, 0.8, 20)
    assert cfg.noise.sigma_y == 0 and cfg.batch_size == 6
    params = cfg.hydra.sweeper.params
    assert params.degradation == "colorize,inpaint_lorem,denoise"
    assert params["sampler.grad_scale"] == "0.0,1.0,1.5,2.0,2.5,3.0,3.5"


def test_table1_miniature_multirun_and_make_tables(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ddrm_exp",
            "-m",
            "experiment=table1",
            "model=gaussian",
            "dataset=samples",
            "dataset.limit=2",
            "batch_size=2",
            "sampler.timesteps=3",
            "sampler.grad_scale=0,1.5",
            "metrics.lpips=false",
            "save_images=false",
            "logger=none",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len([p for p in sweep.iterdir() if p.name.isdigit()]) == 6  # 3 tasks x 2 alphas

    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_tables.py"), str(sweep)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    for needle in (
        "colorize",
        "inpaint_lorem",
        "denoise",
        "| DDRM |",
        "DDRM+MCG (best α)",
        "paired Δ DDRM+MCG − DDRM",
        "report 24.52",
        "report 25.22",
        "α=1.5",
    ):
        assert needle in text, needle
    tables = sweep / "tables"
    assert (tables / "table1.md").read_text().strip() == text.split("\nWrote ")[0].strip()
    rows = list(csv.DictReader(open(tables / "table1.csv")))
    assert {r["column"] for r in rows} == {"colorize", "inpaint_lorem", "denoise"}
    mcg = [r for r in rows if r["method"] == "DDRM+MCG"]
    assert {r["variant"] for r in mcg} == {"1.5"} and all(r["diff_psnr_mean"] for r in mcg)
    assert (tables / "table1_curve.png").stat().st_size > 1000

    # the paired difference is computed over the same images: recompute it by hand
    records = load_records([sweep])
    result = build_table(TABLE1, records)
    colorize = [r for r in result.rows if r["method"] == "DDRM+MCG" and r["column"] == "colorize"][
        0
    ]
    ddrm = {
        r.key: r.values["psnr"]
        for r in records
        if r.degradation == "colorize" and r.params["grad_scale"] == 0
    }
    mcg_r = [r for r in records if r.degradation == "colorize" and r.params["grad_scale"] == 1.5]
    manual = sum(r.values["psnr"] - ddrm[r.key] for r in mcg_r) / len(mcg_r)
    assert abs(colorize["diff_psnr_mean"] - manual) < 1e-9
