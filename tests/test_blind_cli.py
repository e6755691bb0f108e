"""Blind deblurring through the CLI (report §5, Table 2, Figure 8) on a miniature BSD tree.

The CLI runs use the weight-free Gaussian prior at 32x32 with a handful of steps: they check the
wiring (measurements from the dataset, per-batch operators, kernels in the records, the bad
combinations, the Table 2 sweep and its table), not the restoration quality of a real model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import GAUSSIAN_32, config_error, run_cli_ok, run_job
from omegaconf import OmegaConf

from ddrm_exp.config import instantiate_config
from ddrm_exp.datasets.bsd import BSDSyntheticDataset
from ddrm_exp.datasets.bsd_mini import write_mini_bsd
from ddrm_exp.degradations.assumed_blur import AssumedBlur, PerImageOperators
from ddrm_exp.degradations.fft_blur import FFTBlur
from ddrm_exp.degradations.kernels2d import motion_kernel
from ddrm_exp.errors import ConfigError
from ddrm_exp.report import write_table
from ddrm_exp.run.summary import infinite_psnr_note, summary_extras
from ddrm_exp.runner import format_summary

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
FAST = [*GAUSSIAN_32, "sampler.timesteps=5", "batch_size=2"]


@pytest.fixture(scope="module")
def bsd_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bsd")
    write_mini_bsd(root, sequences=2, frames=2, size=(48, 48))
    return root


def read_results(run_dir: Path) -> list[dict]:
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    return sorted((json.loads(line) for line in lines), key=lambda r: r["index"])


# ---- operators, in process ----------------------------------------------------------------------
def test_per_batch_operator_does_not_depend_on_the_batch() -> None:
    shape = (3, 16, 16)
    motion = motion_kernel(7, 0.5, generator=3)
    box = torch.ones(3, 3, dtype=torch.float64) / 9  # rank 1: auto takes the separable operator
    blur = AssumedBlur(shape, assumed_kernel="gt")
    assert blur.per_image
    x = torch.rand(2, 3 * 16 * 16, dtype=torch.float32)
    kernels = torch.stack([motion, torch.nn.functional.pad(box, (2, 2, 2, 2))])
    together = blur.with_kernels(kernels)
    assert isinstance(together, PerImageOperators)  # one FFT image, one separable
    assert together.singulars().shape == (2, 3 * 16 * 16)
    for i in range(2):
        alone = blur.with_kernels(kernels[i : i + 1])
        torch.testing.assert_close(together.H(x)[i : i + 1], alone.H(x[i : i + 1]))
        torch.testing.assert_close(together.Vt(x)[i : i + 1], alone.Vt(x[i : i + 1]))
        y = alone.H(x[i : i + 1])
        torch.testing.assert_close(together.H_pinv(together.H(x))[i : i + 1], alone.H_pinv(y))
    # H = U Σ Vᵀ holds for the stacked operator too.
    s = together.singulars()
    torch.testing.assert_close(together.U(s * together.Vt(x)), together.H(x), atol=1e-5, rtol=0)
    two_motion = blur.with_kernels(torch.stack([motion, motion.flip(0)]))
    assert isinstance(two_motion, FFTBlur) and two_motion.per_image


def test_fixed_assumed_kernels_are_ddrm_blurs() -> None:
    shape = (3, 16, 16)
    x = torch.rand(2, 3 * 16 * 16)
    for assumed, config in (("gauss", "deblur_gauss"), ("aniso2d", "deblur_aniso")):
        op = AssumedBlur(shape, assumed_kernel=assumed)
        assert not op.per_image
        ref = instantiate_config(
            "degradation", OmegaConf.load(ROOT / "conf/degradation" / f"{config}.yaml"), shape=shape
        )
        torch.testing.assert_close(op.H(x), ref.H(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="assumed_kernel"):
        AssumedBlur(shape, assumed_kernel="motion")


def test_rank1_applies_to_estimated_kernels_only() -> None:
    k = motion_kernel(9, 0.5, generator=1).unsqueeze(0)
    est = AssumedBlur((3, 16, 16), assumed_kernel="estimated", rank1=True)
    used, errors = est.prepare_kernels(k)
    assert errors[0] is not None and errors[0] > 0
    assert torch.linalg.matrix_rank(used[0]) == 1
    gt = AssumedBlur((3, 16, 16), assumed_kernel="gt", rank1=True)
    same, none = gt.prepare_kernels(k)
    assert torch.equal(same, k) and none == [None]


# ---- the CLI -------------------------------------------------------------------------------
def test_ground_truth_kernels_per_image(bsd_root: Path, tmp_path: Path) -> None:
    """In process (the CLI's own wiring of blind runs: the estimated-kernel test below)."""
    run_dir = tmp_path / "gt"
    overrides = [
        *FAST,
        "dataset=bsd_synthetic",
        f"dataset.root={bsd_root}",
        "dataset.kernel.size=9",
        "dataset.kernel_per=frame",  # every image of a batch has its own kernel
        "degradation=blur_given",
        "degradation.assumed_kernel=gt",
        "noise=none",
    ]
    summary = run_job(overrides, run_dir)
    assert "of the measurement itself" in format_summary(summary)
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    assert summary["restored"]["psnr"]["mean"] > summary["measurement"]["psnr"]["mean"] + 3
    assert summary["kernel"]["ncc"]["mean"] == pytest.approx(1.0)
    records = read_results(run_dir)
    dataset = BSDSyntheticDataset(
        SIZE, root=bsd_root, kernel={"type": "motion", "size": 9}, kernel_per="frame"
    )
    kernels = []
    for r in records:
        info = r["kernel"]
        assert info["assumed"] == "gt" and info["operator"] == "fft"
        assert info["ncc"] == pytest.approx(1.0) and info["estimation_seconds"] is None
        assert r["measurement_source"] == "dataset" and r["measurement"]["psnr"] > 0
        saved = np.load(run_dir / info["file"])
        np.testing.assert_allclose(saved, dataset.kernel_for(r["index"]).numpy(), atol=1e-12)
        kernels.append(saved)
        assert (run_dir / info["file"].replace("_kernel.npy", "_measurement.png")).is_file()
    assert not np.allclose(kernels[0], kernels[1])  # two kernels in one batch of 2
    # Exact circular model and no noise: restoring beats the blurry frame on every image.
    assert all(r["restored"]["psnr"] > r["measurement"]["psnr"] for r in records)


def test_real_blur_with_estimated_kernels(bsd_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "est"
    proc = run_cli_ok(
        [
            *FAST,
            "dataset=bsd",
            f"dataset.root={bsd_root}",
            "dataset.limit=2",
            "degradation=blur_estimated",
            "degradation.border=null",  # the report's operators (auto: valid on real frames)
            "kernel_estimator=classical",
            "kernel_estimator.kernel_size=9",
            "noise.sigma_y=0.01",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
    )
    assert "kernel s (estimated)" in proc.stdout
    assert "restored − measurement, paired" in proc.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["kernel"]["estimation_seconds"]["mean"] > 0
    assert summary["kernel"]["returned"] == {"restored": 2}
    gains = [r["restored"]["psnr"] - r["measurement"]["psnr"] for r in read_results(run_dir)]
    paired = summary["vs_measurement"]
    assert paired["psnr"]["n"] == 2 and paired["psnr"]["mean"] == pytest.approx(sum(gains) / 2)
    assert paired["worse"] == sum(g < -0.2 for g in gains) and paired["worst"] == min(gains)
    for r in read_results(run_dir):
        info = r["kernel"]
        assert info["estimator"] == "classical" and info["estimation_seconds"] > 0
        # rank1=true (blur_estimated's default): the separable operator, as in the report.
        assert info["operator"] == "separable" and info["rank1_error"] is not None
        assert info["ncc"] is None  # real blur: no true kernel
        k = np.load(run_dir / info["file"])
        assert k.shape == (9, 9) and abs(k.sum() - 1) < 1e-9
        assert np.linalg.matrix_rank(k, tol=1e-10) == 1
        assert np.isfinite(r["restored"]["psnr"]) and np.isfinite(r["baseline"]["psnr"])


def test_summary_counts_frames_worse_than_their_measurement_and_what_each_returned() -> None:
    def record(restored: float | None, measured: float, returned: str) -> dict[str, Any]:
        return {
            "restored": {"psnr": restored},
            "measurement": {"psnr": measured},
            "kernel": {"assumed": "estimated", "returned": returned},
        }

    records = [
        record(30.0, 29.0, "restored"),
        record(28.7, 29.0, "richardson_lucy"),  # 0.3 dB below: worse
        record(28.9, 29.0, "richardson_lucy"),  # 0.1 dB below: within the bar
        record(29.0, 29.0, "blurry"),
        record(None, 29.0, "restored"),  # infinite PSNR: not a difference
    ]
    extras = summary_extras(records)
    paired = extras["vs_measurement"]
    assert paired["psnr"]["n"] == 4
    assert paired["psnr"]["mean"] == pytest.approx((1.0 - 0.3 - 0.1 + 0.0) / 4)
    assert (paired["worse"], paired["worst"]) == (1, pytest.approx(-0.3))
    assert extras["kernel"]["returned"] == {"blurry": 1, "restored": 2, "richardson_lucy": 2}
    text = format_summary({"count": 5, "nfe": 0, "seconds_per_image": 0.0, "nfe_per_s": None,
                           "restored": {}, "baseline": {}, **extras})  # fmt: skip
    assert "1 of 4 below it by > 0.2 dB (worst -0.30)" in text
    assert "returned: blurry 1, restored 2, richardson_lucy 2" in text


def test_infinite_psnr_note_says_why() -> None:
    """A sharp frame returned as it is equals the original: the note says so, not 'denoise'."""
    sharp = {
        "restored": {"psnr": None},
        "baseline": {},
        "measurement": {"psnr": None},
        "kernel": {"returned": "blurry"},
    }
    note = infinite_psnr_note([sharp, sharp], 0.0)
    assert note is not None and "2 of 2" in note and "no blur" in note and "denoise" not in note
    denoised = {"restored": {"psnr": 40.0}, "baseline": {"psnr": None}}
    note = infinite_psnr_note([denoised], 0.0)
    assert note is not None and "denoise" in note
    assert infinite_psnr_note([{"restored": {"psnr": 30.0}}], 0.0) is None


def test_in_loop_kernel_estimation(bsd_root: Path, tmp_path: Path) -> None:
    """In-process: the blind CLI path is the two tests above."""
    run_dir = tmp_path / "inloop"
    run_job(
        [
            *FAST,
            "dataset=bsd_synthetic",
            f"dataset.root={bsd_root}",
            "dataset.limit=2",
            "dataset.kernel.size=7",
            "degradation=blur_estimated",
            "kernel_estimator=in_loop",
            "kernel_estimator.kernel_size=7",
            "sampler.kernel_steps=5",
        ],
        run_dir,
    )
    for r in read_results(run_dir):
        assert r["sampler"] == "ddrm_blind"
        assert r["kernel"]["estimator"] == "in_loop" and r["kernel"]["size"] == [7, 7]
        assert 0 < r["kernel"]["ncc"] <= 1 + 1e-9


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["dataset=bsd", "degradation=blur_given"], "assumed_kernel=gt needs the true blur"),
        (["dataset=bsd", "degradation=blur_estimated", "kernel_estimator=none"], "=none; add"),
        (
            ["dataset=samples", "degradation=blur_given", "degradation.true_kernel=null"],
            "dataset=samples has none",
        ),
        (["dataset=bsd", "degradation=sr4"], "provides its own measurement"),
    ],
)
def test_bad_combinations_are_refused_before_the_model(
    bsd_root: Path, tmp_path: Path, args: list[str], needle: str
) -> None:
    # How the CLI prints such an error (exit 2, one paragraph) is test_cli's; here: which error.
    root = [] if "dataset=samples" in args else [f"dataset.root={bsd_root}"]
    assert needle in config_error([*FAST, *args, *root], tmp_path / "run")
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").rglob("*.png"))


def test_table2_miniature_sweep_and_table(bsd_root: Path, tmp_path: Path) -> None:
    """experiment=table2's jobs, then its table (in-process: the multirun and make_tables.py
    CLIs are test_cli's and test_tables')."""
    sweep = tmp_path / "sweep"
    for job, kernel in enumerate(("gt", "estimated")):
        overrides = [
            "experiment=table2",
            *FAST,
            f"dataset.root={bsd_root}",
            "dataset.stride=1",
            "dataset.limit=2",
            "dataset.kernel.size=9",
            "kernel_estimator.kernel_size=9",
            "save_images=false",
            f"degradation.assumed_kernel={kernel}",
            "noise.sigma_y=0.02",
        ]
        run_job(overrides, sweep / str(job))

    table = write_table([sweep], "table2").result.markdown
    for needle in (
        "| Ground truth | ✓ (σ_y=0.02) |",
        "| Kernel estimation | ✓ (σ_y=0.02) |",
        "| 30.98 |",
        "| 10.14 |",
        "Blurry measurement (no restoration)",
        "1.000",  # the ground truth's kernel NCC
    ):
        assert needle in table, needle
    assert (sweep / "tables" / "table2.md").is_file()
    assert (sweep / "tables" / "table2.csv").is_file()
