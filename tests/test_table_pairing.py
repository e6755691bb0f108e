"""Tables never pool runs of different settings, and their numbers match hand-computed ones."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from helpers import run_job, run_script

from ddrm_exp.metrics.summary import error_bar, format_stat, mean_ci
from ddrm_exp.report import (
    MixedSettingsError,
    Record,
    build_table,
    get_spec,
    group,
    load_records,
    plot_curves,
)

TABLE1, FIGURE8, GENERIC = get_spec("table1"), get_spec("figure8"), get_spec("runs")

ROOT = Path(__file__).resolve().parents[1]

# PSNR of DDRM (MCG with α = 0) and of DDRM+MCG α = 1 on images 0 and 1, at σ_y = 0 and 0.05.
# Per-image MCG − DDRM: σ_y=0: 2.14, 1.56 (mean 1.85); σ_y=0.05: 0.92, 0.77 (mean 0.845).
PSNR = {
    (0.0, 0.0, 0): 20.00,
    (0.0, 0.0, 1): 22.00,
    (0.0, 1.0, 0): 22.14,
    (0.0, 1.0, 1): 23.56,
    (0.05, 0.0, 0): 18.00,
    (0.05, 0.0, 1): 19.50,
    (0.05, 1.0, 0): 18.92,
    (0.05, 1.0, 1): 20.27,
}


def _record(sigma: float, alpha: float, index: int, psnr: float, **raw: Any) -> Record:
    return Record(
        run_dir=Path(f"run_{sigma}_{alpha}"),
        degradation="inpaint_lorem",
        sampler="mcg",
        params={"timesteps": 5, "grad_scale": alpha},
        sigma_y=sigma,
        index=index,
        seed=0,
        values={"psnr": psnr, "baseline_psnr": 10.0 + 100 * sigma + index},
        seconds=1.0,
        nfe=5,
        raw={"assumed_sigma_y": sigma, "batch_size": 2, **raw},
    )


def _sweep() -> list[Record]:
    return [_record(s, a, i, v) for (s, a, i), v in PSNR.items()]


def _diff_row(result: Any, column: str) -> dict[str, Any]:
    return next(r for r in result.rows if r["method"] == "DDRM+MCG" and r["column"] == column)


def test_table1_splits_a_sigma_sweep_and_pairs_within_each_level() -> None:
    result = build_table(TABLE1, _sweep())
    zero, noisy = (
        _diff_row(result, "inpaint_lorem σ_y=0"),
        _diff_row(result, "inpaint_lorem σ_y=0.05"),
    )
    assert zero["diff_psnr_mean"] == pytest.approx((2.14 + 1.56) / 2)
    assert noisy["diff_psnr_mean"] == pytest.approx((0.92 + 0.77) / 2)
    assert zero["n"] == noisy["n"] == 2
    ddrm = [r for r in result.rows if r["method"] == "DDRM"]
    assert sorted(r["psnr_mean"] for r in ddrm) == pytest.approx([18.75, 21.0])
    text = result.markdown
    assert "| method | inpaint_lorem σ_y=0 | inpaint_lorem σ_y=0.05 |" in text
    assert "1.85 (n=2: 2.14, 1.56)" in text and "0.85 (n=2: 0.92, 0.77)" in text
    assert "(n = 2)" in text and "split by it" in text
    # H⁺y baseline per σ_y, not one value for both levels
    hpy = next(line for line in text.splitlines() if line.startswith("| H⁺y"))
    assert "10.50" in hpy and "15.50" in hpy


def test_table1_over_one_level_is_unsplit_and_repeated_runs_count_once() -> None:
    records = [r for r in _sweep() if r.sigma_y == 0.0]
    result = build_table(TABLE1, records + records)  # the same sweep passed twice
    assert _diff_row(result, "inpaint_lorem")["diff_psnr_mean"] == pytest.approx(1.85)
    assert _diff_row(result, "inpaint_lorem")["n"] == 2
    assert "counted once" in result.markdown and "split" not in result.markdown


def test_generic_table_splits_sigma_and_draws_no_empty_curve(tmp_path: Path) -> None:
    records = [r for r in _sweep() if r.params["grad_scale"] == 0.0]
    result = build_table(GENERIC, records)
    assert {r["column"] for r in result.rows} == {"inpaint_lorem σ_y=0", "inpaint_lorem σ_y=0.05"}
    assert {r["method"] for r in result.rows} == {"mcg"}  # only the settings that differ
    both = build_table(GENERIC, _sweep())
    assert {r["method"] for r in both.rows} == {"mcg grad_scale=0.0", "mcg grad_scale=1.0"}
    hpy = next(line for line in result.markdown.splitlines() if line.startswith("| H⁺y"))
    assert "10.50" in hpy and "15.50" in hpy
    assert not result.curves
    assert plot_curves(result, GENERIC, records, tmp_path / "runs_curve.png") is None
    assert not (tmp_path / "runs_curve.png").exists()


def test_fixed_layout_table_refuses_a_mixed_cell() -> None:
    kernel = {"assumed": "gauss", "ncc": None, "estimation_seconds": 0.0}
    records = [_record(0.0, 0.0, i, 20.0, kernel=kernel) for i in range(2)] + [
        Record(**{**r.__dict__, "params": {**r.params, "timesteps": 20}, "index": r.index})
        for r in [_record(0.0, 0.0, i, 21.0, kernel=kernel) for i in range(2)]
    ]
    with pytest.raises(MixedSettingsError, match="timesteps"):
        build_table(FIGURE8, records)


def test_make_tables_exits_2_on_a_mixed_cell(tmp_path: Path) -> None:
    import json

    for t, psnr in ((5, 20.0), (20, 21.0)):
        run = tmp_path / f"t{t}"
        run.mkdir()
        line = {
            "index": 0,
            "name": "a",
            "degradation": "blur_estimated",
            "sampler": "ddrm",
            "sampler_params": {"timesteps": t},
            "sigma_y": 0.0,
            "seed": 0,
            "nfe": t,
            "seconds": 1.0,
            "restored": {"psnr": psnr},
            "kernel": {"assumed": "gauss", "ncc": None},
        }
        (run / "results.jsonl").write_text(json.dumps(line) + "\n")
    out = run_script("make_tables.py", [str(tmp_path)], timeout=120)
    assert out.returncode == 2
    assert "different settings" in out.stderr and "timesteps" in out.stderr


def test_format_stat_says_what_the_spread_is() -> None:
    assert format_stat(mean_ci([0.2, 1.0])) == "0.60 (n=2: 0.20, 1.00)"
    assert format_stat(mean_ci([3.0])) == "3.00 (n=1)"
    five = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    # t(0.975, 4) = 2.7764; s = sqrt(2.5); half-width = 2.7764 * 1.5811 / sqrt(5) = 1.963
    assert format_stat(five) == "3.00 ± 1.96 (n=5)"
    assert format_stat({"mean": 1.0, "ci95": 0.5}) == "1.00"  # no n: no claim about spread
    assert format_stat(None) == "–"


def test_error_bars_are_clipped_to_the_values() -> None:
    stat = mean_ci([-5.0, 5.0, 6.0])  # CI half-width ~ 15: far beyond the values
    below, above = error_bar(stat)
    assert stat["mean"] - below == pytest.approx(-5.0)
    assert stat["mean"] + above == pytest.approx(6.0)
    assert error_bar(mean_ci([1.0])) == (0.0, 0.0)
    assert math.isclose(sum(error_bar(mean_ci([1.0, 1.0]))), 0.0)


# ---- degradation options (official_compat, source, mask_path, kernels) are settings too -----
COMPAT_RUN = [
    "degradation=deblur_uniform",
    "model=gaussian",
    "dataset.limit=2",
    "sampler.timesteps=2",
    "logger=none",
    "metrics.lpips=false",
]
COMPAT_COLUMNS = {"deblur_uniform official_compat=False", "deblur_uniform official_compat=True"}


@pytest.fixture(scope="module")
def compat_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real runs that differ only in degradation.official_compat."""
    root = tmp_path_factory.mktemp("compat")
    for compat in ("false", "true"):
        overrides = [*COMPAT_RUN, f"degradation.official_compat={compat}"]
        run_job(overrides, root / f"compat_{compat}")
    return root


def _assert_never_pooled(records: list[Record]) -> None:
    psnr = {(r.run_dir.name, r.index): r.values["psnr"] for r in records}
    for spec in (GENERIC, TABLE1):
        result = build_table(spec, records)
        assert {row["column"] for row in result.rows} == COMPAT_COLUMNS
        assert all(row["n"] == 2 for row in result.rows)
        for row in result.rows:
            run = "compat_true" if row["column"].endswith("=True") else "compat_false"
            expected = (psnr[(run, 0)] + psnr[(run, 1)]) / 2  # type: ignore[operator]
            assert row["psnr_mean"] == pytest.approx(expected)
        assert "split by it" in result.markdown
    cells = group(records, lambda r: r.sampler, lambda r: r.degradation)
    assert len(cells) == 2
    assert all(len({r.run_dir for r in cell.records}) == 1 for cell in cells.values())
    with pytest.raises(MixedSettingsError, match="official_compat"):
        group(records, lambda r: r.sampler, lambda r: r.degradation, split=False)


def test_runs_differing_only_in_a_degradation_option_are_never_pooled(compat_runs: Path) -> None:
    records = load_records([compat_runs])
    assert len(records) == 4
    assert {r.raw["degradation_params"]["official_compat"] for r in records} == {False, True}
    assert "cache_dir" not in records[0].raw["degradation_params"]  # where, not what
    _assert_never_pooled(records)


def test_old_records_take_degradation_options_from_their_config(
    compat_runs: Path, tmp_path: Path
) -> None:
    import json
    import shutil

    old = tmp_path / "old"
    shutil.copytree(compat_runs, old)
    for results in old.rglob("results.jsonl"):
        lines = [json.loads(line) for line in results.read_text().splitlines()]
        for line in lines:
            del line["degradation_params"]  # as written before the field existed
        results.write_text("".join(json.dumps(line) + "\n" for line in lines))
    # A config written before official_compat existed lacks it: it ran the default, False.
    config = old / "compat_false" / "config_resolved.yaml"
    text = config.read_text()
    assert "  official_compat: false\n" in text
    config.write_text(text.replace("  official_compat: false\n", ""))
    records = load_records([old])
    assert {r.degradation_params["official_compat"] for r in records} == {False, True}  # type: ignore[index]
    _assert_never_pooled(records)

    # No config (or one of other settings): unknown, which loads and pools as before the field.
    config.unlink()
    other = old / "compat_true" / "config_resolved.yaml"
    other.write_text(other.read_text().replace("sigma_y: 0.05", "sigma_y: 0.06"))
    records = load_records([old])
    assert all(r.degradation_params is None for r in records)
    result = build_table(GENERIC, records)
    assert {row["column"] for row in result.rows} == {"deblur_uniform"}
