"""The table registry, and the one write path make_tables.py and the multirun callback share."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import ddrm_exp.report.spec as spec_module
import ddrm_exp.report.tables as tables_package
from ddrm_exp.report import NoResultsError, auto_table, get_spec, load_records, specs, write_table
from ddrm_exp.tracking.callbacks import WriteTables


def _write_run(run_dir: Path, sampler: str = "ddrm", **extra: object) -> Path:
    run_dir.mkdir(parents=True)
    lines = [
        {
            "index": i,
            "degradation": "denoise",
            "sampler": sampler,
            "sampler_params": {"timesteps": 5},
            "degradation_params": {},
            "sigma_y": 0.1,
            "seed": 0,
            "nfe": 5,
            "seconds": 0.5,
            "restored": {"psnr": 20.0 + i, "ssim": 0.5},
            "baseline": {"psnr": 15.0 + i},
            **extra,
        }
        for i in range(3)
    ]
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run_dir


def test_every_table_module_registers_its_spec_under_its_name() -> None:
    names = {m.stem for m in Path(tables_package.__file__).parent.glob("*.py")}
    assert set(specs()) == {"table1", "table2", "figure8", "video", "runs", "baselines"}
    assert set(specs()) <= names
    with pytest.raises(KeyError, match="known: baselines, figure8, runs"):
        get_spec("table9")


def test_auto_picks_the_table_the_runs_were_made_for(tmp_path: Path) -> None:
    plain = load_records([_write_run(tmp_path / "plain")])
    mcg = load_records([_write_run(tmp_path / "mcg", sampler="mcg")])
    blind = load_records([_write_run(tmp_path / "blind", kernel={"assumed": "gauss"})])
    synthetic = load_records([_write_run(tmp_path / "syn", kernel={"assumed": "gt", "ncc": 1.0})])
    video = load_records([_write_run(tmp_path / "video", task="video", kernel={"ncc": 1.0})])
    picked = [auto_table(r) for r in (plain, mcg, blind, synthetic, video)]
    assert picked == ["runs", "table1", "figure8", "table2", "video"]


def test_a_new_table_is_one_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = tmp_path / "extra_tables"
    extra.mkdir()
    (extra / "count.py").write_text(
        "from ddrm_exp.report.spec import TableResult, TableSpec\n"
        "def render(spec, records):\n"
        "    n = len(records)\n"
        "    return TableResult(f'## {spec.title}: {n} images', [{'n': n}], {})\n"
        "SPEC = TableSpec(name='count', title='Count', render=render)\n"
    )
    monkeypatch.setattr(tables_package, "__path__", [*tables_package.__path__, str(extra)])
    monkeypatch.setattr(spec_module, "_SPECS", None)
    monkeypatch.delitem(sys.modules, "ddrm_exp.report.tables.count", raising=False)
    run = _write_run(tmp_path / "run")
    written = write_table([run], "count")
    assert (run / "tables" / "count.md").read_text() == "## Count: 3 images\n"
    assert (run / "tables" / "count.csv").read_text().split() == ["n", "3"]
    assert written.plot is None


def test_the_multirun_callback_writes_what_make_tables_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "sweep"
    _write_run(sweep / "0", sampler="mcg", sampler_params={"grad_scale": 0.0})
    _write_run(sweep / "1", sampler="mcg", sampler_params={"grad_scale": 1.0})
    by_hand = write_table([sweep], out=tmp_path / "by_hand")
    WriteTables().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert by_hand.name == "table1"
    for made in by_hand.files:
        assert (sweep / "tables" / made.name).read_bytes() == made.read_bytes()
    assert by_hand.result.markdown in capsys.readouterr().out


def test_no_results_is_a_clear_error_and_the_callback_survives_it(tmp_path: Path) -> None:
    with pytest.raises(NoResultsError, match="no results.jsonl"):
        write_table([tmp_path])
    WriteTables().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert not (tmp_path / "tables").exists()


def test_cells_count_the_nfe_done_when_frames_were_kept(tmp_path: Path) -> None:
    """A blind run's kept frames record nfe 0 (no sampling); a cell's NFE is the mean per image
    and NFE/s counts each record's share of its batched call, so neither reads the first
    record alone."""
    from ddrm_exp.report.cells import mean_nfe
    from ddrm_exp.report.tables.blind import nfe_per_second

    run = _write_run(tmp_path / "blind", kernel={"assumed": "estimated"})
    lines = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    kept_then_two_sampled = [(0, 3, 0.0), (20, 2, 1.0), (20, 2, 1.0)]
    for line, (nfe, batch, seconds) in zip(lines, kept_then_two_sampled, strict=True):
        line.update(nfe=nfe, batch_size=batch, seconds=seconds)
    (run / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    records = load_records([run])
    assert mean_nfe(records) == pytest.approx(40 / 3)
    # two sampled frames in one batch of 2: one call of 20 NFE in 2 s of sampling
    assert nfe_per_second(records) == pytest.approx(20 / 2.0)
    assert mean_nfe(records[1:]) == 20 and isinstance(mean_nfe(records[1:]), int)


def test_kept_frames_have_no_baseline_and_the_tables_count_the_others(tmp_path: Path) -> None:
    """A frame the blind plan kept builds no operator, so its record has no H⁺y (baseline {})
    and no residual: the H⁺y baseline is the mean over the sampled frames only, and an
    all-kept cell shows none."""
    run = _write_run(tmp_path / "blind", kernel={"assumed": "estimated"})
    lines = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    lines[0]["baseline"] = {}
    lines[0]["restored"].update(residual_rel=None, residual_rms=None)
    (run / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    made = write_table([run], out=tmp_path / "t")
    assert made.name == "figure8"
    baseline = made.result.markdown.split("### H⁺y baseline")[1]
    assert "16.50 (n=2: 16.00, 17.00)" in baseline  # frames 1 and 2: 15 + i
    assert "21.00 (n=3" in made.result.markdown  # every frame's restoration counts
    for line in lines:
        line["baseline"] = {}
    (run / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    baseline = write_table([run], out=tmp_path / "t2").result.markdown.split("### H⁺y")[1]
    assert "| 0.1 | – |" in baseline
