"""Frames the blind plan keeps (no-harm rule, delta kernels) are decided before sampling: the
sampler sees only the others, kept frames cost no NFE and no operator (no dense SVD: their
records have no H⁺y baseline and no residual), and a restored frame is bit for bit the one it
gets when its whole batch is sampled (each image has its own generators)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import compose_cfg
from omegaconf import open_dict
from torch import Tensor
from torch.utils.data import default_collate

import ddrm_exp.degradations.valid_blur as valid_blur
from ddrm_exp.datasets.bsd_mini import write_mini_bsd
from ddrm_exp.kernel_estimation import KernelEstimate
from ddrm_exp.kernel_estimation.reliability import NoHarmRule
from ddrm_exp.run.batch import BatchOutcome, Metrics, restore_batch
from ddrm_exp.run.setup import RunContext, Setup, setup
from ddrm_exp.run.summary import infinite_psnr_note, summarize
from ddrm_exp.samplers.base import WarmStart

STEPS = 3


def line(length: int) -> Tensor:
    """A horizontal box blur of ``length`` taps in a 5x5 kernel (spread 1.41 px at 5 taps)."""
    k = torch.zeros(5, 5, dtype=torch.float64)
    k[2, 2 - length // 2 : 2 - length // 2 + length] = 1 / length
    return k


# Frames 0 and 2: 5-tap blur, restored; 1 and 3 kept: a delta (keep_sharp) and 3-tap blur
# (0.82 px, below KEEP_MILD's min_spread).
KERNELS = [line(5), line(1), line(5), line(3)]


class ByPosition:
    """A stand-in estimator: frame ``b`` of the batch gets ``KERNELS[b]``."""

    def estimate(self, blurry: Tensor) -> KernelEstimate:
        b = blurry.shape[0]
        k = torch.stack(KERNELS[:b])[:, None]
        return KernelEstimate(k, torch.ones(b, 1, *blurry.shape[-2:]), (0.0,) * b, "stub")


class Counting:
    """The run's sampler, recording the batches it is given."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def sample(self, prior: Any, operator: Any, y: Tensor, sigma: float, **kw: Any) -> Any:
        self.calls.append({"y": y.clone(), "warm": kw.get("warm_start")})
        return self.inner.sample(prior, operator, y, sigma, **kw)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bsd")
    write_mini_bsd(root, sequences=4, frames=1, size=(32, 32))
    return root


def blind_setup(
    tree: Path,
    out: Path,
    rule: NoHarmRule | None,
    keep_sharp: bool = True,
    border: str = "taper",  # the FFT operator: no dense SVD in most tests
) -> Setup:
    """A blind run's setup whose estimator returns ``KERNELS``, with ``rule`` and keep_sharp
    (no rule and no keep_sharp: every frame is sampled)."""
    cfg = compose_cfg(
        [
            "logger=none",
            "model=gaussian",
            "model.image_size=32",
            "metrics.lpips=false",
            "dataset=bsd",
            f"dataset.root={tree}",
            "degradation=blur_estimated",
            f"degradation.border={border}",
            "kernel_estimator=classical_valid",
            "noise=none",
            "noise.assumed_sigma_y=0.02",
            f"sampler.timesteps={STEPS}",
            "batch_size=4",
            f"degradation.keep_sharp={str(keep_sharp).lower()}",
            "save_images=false",
        ]
    )
    with open_dict(cfg):
        cfg.overwrite = True
    choices = {"dataset": "bsd", "kernel_estimator": "classical_valid"}
    s = setup(cfg, RunContext(output_dir=out, choices=choices))
    assert s.plan is not None
    s.plan.estimator = ByPosition()
    s.plan.no_harm = rule
    s.sampler = Counting(s.sampler)  # type: ignore[assignment]
    return s


def restore(s: Setup, out: Path, **kw: Any) -> BatchOutcome:
    batch = default_collate([s.dataset[i] for i in range(4)])
    prior = s.build_model()
    return restore_batch(s, prior, Metrics(False, False, s.device), batch, out, **kw)


def calls(s: Setup) -> list[dict[str, Any]]:
    return s.sampler.calls  # type: ignore[attr-defined, no-any-return]


KEEP_MILD = NoHarmRule(min_spread=1.0, fallback="blurry")


def test_sampler_sees_only_the_frames_the_rule_does_not_keep(tree: Path, tmp_path: Path) -> None:
    s = blind_setup(tree, tmp_path, KEEP_MILD)
    done = restore(s, tmp_path)
    assert done.measured is not None
    assert done.measured.kept == [None, "delta_kernel", None, "mild_blur"]
    assert done.sampled == [0, 2]
    (call,) = calls(s)
    assert torch.equal(call["y"], done.measured.y[[0, 2]])
    as_measured = done.measured.untapered  # y as it came, before edge tapering
    assert as_measured is not None
    for j in (1, 3):  # returned blurry
        assert torch.equal(done.x_hat[j].reshape(-1), as_measured[j])
    records = [done.record(s, tmp_path, j, {}, {}) for j in range(4)]
    nfe = s.sampler.nfe
    assert nfe > 0 and [r["nfe"] for r in records] == [nfe, 0, nfe, 0]
    assert [r["kernel"]["returned"] for r in records] == ["restored", "blurry"] * 2
    assert [r["batch_size"] for r in records] == [2, 4, 2, 4]  # the sampler ran 2 frames
    assert records[1]["seconds"] == 0.0 and records[0]["seconds"] > 0


def test_restored_frames_are_those_of_the_whole_batch(tree: Path, tmp_path: Path) -> None:
    part = restore(blind_setup(tree, tmp_path / "a", KEEP_MILD), tmp_path / "a")
    s = blind_setup(tree, tmp_path / "b", None, keep_sharp=False)
    whole = restore(s, tmp_path / "b")
    assert whole.sampled == [0, 1, 2, 3] and calls(s)[0]["y"].shape[0] == 4
    assert torch.equal(part.x_hat[[0, 2]], whole.x_hat[[0, 2]])
    for j in (0, 2):
        assert part.restored_metrics[j] == whole.restored_metrics[j]
    assert not torch.equal(part.x_hat[1], whole.x_hat[1])  # the kept frame was not sampled


def test_warm_start_reaches_the_sampled_frames_only(tree: Path, tmp_path: Path) -> None:
    guess = torch.linspace(-1, 1, 4 * 3 * 32 * 32).reshape(4, 3, 32, 32)

    def warm(_operator: Any, _y: Tensor) -> WarmStart:
        return WarmStart(guess, t_star=500)

    s = blind_setup(tree, tmp_path / "a", KEEP_MILD)
    part = restore(s, tmp_path / "a", warm_start_from=warm)
    seen = calls(s)[0]["warm"]
    assert torch.equal(seen.x0, guess[[0, 2]]) and seen.t_star == 500
    s = blind_setup(tree, tmp_path / "b", None, keep_sharp=False)
    whole = restore(s, tmp_path / "b", warm_start_from=warm)
    assert calls(s)[0]["warm"].x0 is guess  # the whole batch: the warm start as it was made
    assert torch.equal(part.x_hat[[0, 2]], whole.x_hat[[0, 2]])
    assert part.result.nfe == whole.result.nfe < s.sampler.nfe  # the warm start skipped steps


def test_no_sampler_call_when_every_frame_is_kept(tree: Path, tmp_path: Path) -> None:
    s = blind_setup(tree, tmp_path, NoHarmRule(min_spread=9.0, fallback="wiener"))
    done = restore(s, tmp_path)
    assert calls(s) == [] and done.sampled == []
    assert done.result.nfe == 0
    assert all(done.cost(j)["nfe"] == 0 for j in range(4))
    assert bool(torch.isfinite(done.x_hat).all())
    assert done.measured is not None and done.measured.operator is None  # none built
    assert done.measured.untapered is None  # no operator, no tapering: y as it came
    assert not torch.equal(done.x_hat[0].reshape(-1), done.measured.y[0])  # Wiener
    assert done.baseline_metrics == [{}] * 4


def count_dense_svds(monkeypatch: pytest.MonkeyPatch) -> list[Tensor]:
    """The kernels of every dense SVD BorderBlur computes from now on (the eigen cache does not
    hide a second one of the same kernel: each SVD is counted, cached eigenpairs or not)."""
    seen: list[Tensor] = []
    real = valid_blur._dense_svd

    def counted(kernel: Tensor, *args: Any, **kw: Any) -> Any:
        seen.append(kernel.clone())
        return real(kernel, *args, **kw)

    monkeypatch.setattr(valid_blur, "_dense_svd", counted)
    return seen


def test_kept_frames_build_no_dense_operator(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = blind_setup(tree, tmp_path, NoHarmRule(min_spread=9.0, fallback="wiener"), border="valid")
    svds = count_dense_svds(monkeypatch)  # after the setup's placeholder (a 1x1 delta)
    done = restore(s, tmp_path)
    assert done.sampled == [] and svds == []
    records = [done.record(s, tmp_path, j, {}, {}) for j in range(4)]
    for r in records:
        assert r["baseline"] == {}  # no H⁺y: not computed
        assert r["restored"]["residual_rel"] is None and r["restored"]["residual_rms"] is None
        assert r["restored"]["psnr"] is not None  # what the frame returns is still scored
        assert r["kernel"]["operator"] == "valid"  # the border model (no operator built)
    assert [r["kernel"]["returned"] for r in records] == ["wiener", "blurry", "wiener", "wiener"]
    # The run's summary: no H⁺y to average, and no missing PSNR read as an infinite one.
    plain = [dict(r) for r in records]
    assert summarize(plain)["baseline"] == {}
    assert summarize(plain)["restored"]["psnr"]["n"] == 4
    assert infinite_psnr_note(plain, 0.0) is None


def test_mixed_batch_builds_one_operator_per_sampled_frame(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = blind_setup(tree, tmp_path / "a", KEEP_MILD, border="valid")
    svds = count_dense_svds(monkeypatch)
    part = restore(s, tmp_path / "a")
    assert part.sampled == [0, 2]
    assert [torch.equal(k, KERNELS[j]) for k, j in zip(svds, (0, 2), strict=True)] == [True] * 2
    records = [part.record(s, tmp_path / "a", j, {}, {}) for j in range(4)]
    assert [r["kernel"]["operator"] for r in records] == ["valid"] * 4
    assert [r["baseline"] == {} for r in records] == [False, True, False, True]
    rel = [r["restored"]["residual_rel"] for r in records]
    assert rel[1] is None and rel[3] is None and rel[0] > 0 and rel[2] > 0
    # The restored frames' records are those of the whole batch (its four operators).
    s = blind_setup(tree, tmp_path / "b", None, keep_sharp=False, border="valid")
    svds.clear()
    whole = restore(s, tmp_path / "b")
    assert len(svds) == 4 and whole.sampled == [0, 1, 2, 3]
    assert torch.equal(part.x_hat[[0, 2]], whole.x_hat[[0, 2]])
    for j in (0, 2):
        assert part.restored_metrics[j] == whole.restored_metrics[j]
        assert part.baseline_metrics[j] == whole.baseline_metrics[j]
        assert torch.equal(part.baseline[j], whole.baseline[j])
