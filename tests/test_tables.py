"""experiment=table1 as a real (miniature) multirun, then make_tables.py over its directory."""

from __future__ import annotations

import csv
from pathlib import Path

from helpers import compose_cfg, run_script, run_sweep

from ddrm_exp.config import validate
from ddrm_exp.report import Record, auto_table, build_table, get_spec, load_records, plot_curves

TABLE1, FIGURE8 = get_spec("table1"), get_spec("figure8")

ROOT = Path(__file__).resolve().parents[1]


def test_table1_composes_with_report_settings() -> None:
    cfg = compose_cfg(["experiment=table1"], hydra=True)
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
    jobs = run_sweep(
        [
            "experiment=table1",
            "model=gaussian",
            "dataset=samples",
            "dataset.limit=2",
            # offline: the rendered lorem mask, not the official one table1 downloads
            "lorem_source=rendered",
            "batch_size=2",
            "sampler.timesteps=3",
            "sampler.grad_scale=0,1.5",
            "metrics.lpips=false",
            "save_images=false",
            "logger=none",
        ],
        sweep,
        tmp_path,
        timeout=600,
    )
    assert len(jobs) == 6  # 3 tasks x 2 alphas

    # experiment=table1 names its table: the multirun's callback wrote it already
    by_callback = (sweep / "tables" / "table1.md").read_text()
    out = run_script("make_tables.py", [str(sweep)])
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
    assert (tables / "table1.md").read_text() == by_callback
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


# ---- blind deblurring: Table 2 and Figure 8 ----------------------------------------------------
def test_table2_and_figure8_compose_with_report_settings() -> None:
    cfg = compose_cfg(["experiment=table2"], hydra=True)
    validate(cfg)
    choices = cfg.hydra.runtime.choices
    assert (choices.dataset, choices.degradation) == ("bsd_synthetic", "blur_estimated")
    assert choices.kernel_estimator == "classical"
    assert cfg.degradation.rank1 is True and cfg.degradation.min_coverage == 0.025
    params = cfg.hydra.sweeper.params
    assert params["degradation.assumed_kernel"] == "gt,aniso2d,gauss,estimated"
    assert params["noise.sigma_y"] == "0.02,0.0"

    cfg = compose_cfg(["experiment=figure8"], hydra=True)
    validate(cfg)
    assert cfg.hydra.runtime.choices.dataset == "bsd" and cfg.noise.sigma_y == 0
    params = cfg.hydra.sweeper.params
    assert params["degradation.assumed_kernel"] == "estimated,gauss,uniform,aniso2d"
    assert params["noise.assumed_sigma_y"] == "0.05,0.04,0.03,0.02,0.01,0.0"


def _record(index: int, kernel: str, assumed_sigma: float, psnr: float) -> Record:
    raw = {
        "assumed_sigma_y": assumed_sigma,
        "batch_size": 1,
        "kernel": {"assumed": kernel, "ncc": None, "estimation_seconds": 0.5},
    }
    return Record(
        run_dir=Path("."),
        degradation="blur_estimated",
        sampler="ddrm",
        params={},
        sigma_y=0.0,
        index=index,
        seed=0,
        values={"psnr": psnr, "baseline_psnr": psnr - 1, "measurement_psnr": 25.0 + index},
        seconds=1.5,
        nfe=20,
        raw=raw,
    )


def test_figure8_layout_and_plot(tmp_path: Path) -> None:
    records = [
        _record(i, kernel, sigma, 10.0 + 100 * sigma + i)
        for i in range(2)
        for kernel in ("estimated", "gauss")
        for sigma in (0.0, 0.05)
    ]
    assert auto_table(records) == "figure8"
    result = build_table(FIGURE8, records)
    lines = result.markdown.splitlines()
    header = next(line for line in lines if line.startswith("| σ_y"))
    assert header.split(" | ")[1:3] == ["Kernel estimation", "Gaussian deblurring"]
    row = next(line for line in lines if line.startswith("| 0.05 |"))
    assert "15.50" in row and "(report 12.9)" in row and "(report 12.3)" in row
    # the blurry frame, over distinct images: n = 2 is too few for a CI, so the values show
    assert row.rstrip(" |").endswith("25.50 (n=2: 25.00, 26.00)")
    assert lines.index(row) < lines.index(next(x for x in lines if x.startswith("| 0 |")))
    assert "H⁺y baseline" in result.markdown
    assert [v for v, _ in result.curves["Kernel estimation"]] == [0.0, 0.05]
    assert result.hlines["blurry measurement"] == 25.5
    # 20 NFE in 1.5 s of sampling + 0.5 s of estimation per image
    assert result.rows[0]["nfe_per_s"] == 10.0
    assert plot_curves(result, FIGURE8, records, tmp_path / "f8.png") is not None
    assert (tmp_path / "f8.png").stat().st_size > 1000
