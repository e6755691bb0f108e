"""The baselines table: paired differences against DDRM per task, exact restorations, H⁺y, and
which runs ``--table auto`` gives it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ddrm_exp.report.records import Record
from ddrm_exp.report.spec import auto_table, get_spec


def record(sampler: str, degradation: str, index: int, psnr: float | None, **kw: float) -> Record:
    return Record(
        run_dir=Path(f"/runs/{sampler}-{degradation}"),
        degradation=degradation,
        sampler=sampler,
        params={"timesteps": 20},
        sigma_y=0.0,
        index=index,
        seed=0,
        values={
            "psnr": psnr,
            "ssim": kw.get("ssim", 0.5),
            "baseline_psnr": kw.get("baseline", 10.0),
        },
        seconds=kw.get("seconds", 1.0),
        nfe=int(kw.get("nfe", 20)),
    )


def runs() -> list[Record]:
    out = []
    for i in range(6):
        out.append(record("ddrm", "inpaint_lorem", i, 20.0 + i))
        # DDNM: 1 dB better on every image, except that image 0 differs by 2 dB
        out.append(record("ddnm", "inpaint_lorem", i, 21.0 + i + (1.0 if i == 0 else 0.0)))
        out.append(record("dps", "inpaint_lorem", i, 10.0 + i, nfe=40))
        out.append(record("ddrm", "denoise", i, 45.0))
        out.append(record("ddnm", "denoise", i, None, ssim=1.0))  # exact: PSNR ∞, recorded null
    return out


def test_paired_differences_exact_rows_and_baseline() -> None:
    spec = get_spec("baselines")
    result = spec.render(spec, runs())
    rows = {(r["column"], r["method"]): r for r in result.rows}
    ddnm = rows[("inpaint_lorem", "DDNM")]
    assert ddnm["diff_psnr_mean"] == pytest.approx(7 / 6)  # (2 + 5 × 1) / 6
    assert ddnm["diff_psnr_ci95"] > 0
    assert rows[("inpaint_lorem", "DPS")]["diff_psnr_mean"] == pytest.approx(-10.0)
    assert rows[("inpaint_lorem", "DPS")]["nfe"] == 40
    assert "diff_psnr_mean" not in rows[("inpaint_lorem", "DDRM")]
    lines = result.markdown.splitlines()
    assert any(line.startswith("| denoise | DDNM | ∞ (exact) |") for line in lines)
    assert any(line.startswith("| inpaint_lorem | H⁺y | 10.00") for line in lines)
    # the report's column order: inpaint_lorem before denoise; DDRM first within a task
    body = [
        line for line in lines if line.startswith("| inpaint_lorem") or line.startswith("| denoise")
    ]
    assert body[0].startswith("| inpaint_lorem | DDRM |") and body[-1].startswith("| denoise")


def test_auto_picks_baselines_before_table1() -> None:
    mixed = [*runs(), record("mcg", "inpaint_lorem", 0, 22.0)]
    assert auto_table(mixed) == "baselines"
    assert (
        auto_table([record("ddrm", "colorize", 0, 20.0), record("mcg", "colorize", 0, 21.0)])
        == "table1"
    )
