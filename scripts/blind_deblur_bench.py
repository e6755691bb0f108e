"""Blind-deblurring benchmarks, each a Markdown table measured side by side in one run.

    OMP_NUM_THREADS=1 python scripts/blind_deblur_bench.py rank1        # FFT vs rank-1 (~4 min)
    OMP_NUM_THREADS=1 python scripts/blind_deblur_bench.py estimators   # error ratios (~6 min)
    OMP_NUM_THREADS=1 python scripts/blind_deblur_bench.py cost         # operator cost (~2 min)
    python scripts/blind_deblur_bench.py rank1 --sizes 9 15 21 --kernels-per-photo 8
    python scripts/blind_deblur_bench.py estimators --splits heldout train --sigmas 0.02
    python scripts/blind_deblur_bench.py cost --sides 32 64 128 --svd-max-side 128

(Times: this 2-core CPU, one thread.) ``rank1`` and ``estimators`` restore with the bundled
``tiny`` prior (64x64), DDRM with ``--timesteps`` steps (η 0.85, η_b 1). Their images are the
sample photos of ``--splits`` (default the 4 held-out ones; the prior was trained on the
``train`` split, so those flatter the prior), each blurred by ``--kernels-per-photo`` seeded
camera-shake kernels (``motion_kernel(size, intensity, seed)``, a different seed for every
(photo, kernel) image ``i``: seed ``--kernel-seed + i``), **circularly** (``blur_circular``),
plus white noise of std ``σ_y`` drawn as the runner draws it (``image_generator(seed, i,
STREAM_MEASUREMENT)``). Every method restoring image ``i`` uses the same sampler generator
(``image_generator(seed, i, STREAM_SAMPLER)``), so differences between methods are paired.

``rank1`` -- "with the true non-separable motion kernel, DDRM through the FFT operator beats
DDRM with the kernel's rank-1 approximation, on the same images". Three DDRM runs per image:

* ``FFT, true k``: :class:`FFTBlur` with the true kernel (an exact model of the measurement);
* ``rank-1, separable``: the runner's rank-1 path (``AssumedBlur(rank1=true, method=auto)``:
  the best rank-1 approximation, then DDRM's *zero-padded* separable Toeplitz operator);
* ``rank-1, FFT``: the same rank-1 kernel through the *circular* FFT operator.

Since the measurement is circular, the separable arm differs from the true one by the kernel
*and* by the border model; the rank-1 FFT arm isolates the kernel. The table gives the mean
PSNR of each arm, the paired per-image differences (mean ± 95 % t-CI) and how many images the
FFT/true-kernel run wins; a second table repeats the differences on the interior (a border of
``size`` pixels cropped), where the border model matters least.

``estimators`` -- Levin et al.'s (CVPR 2009) error ratio
``SSD(x, x̂ with the estimated kernel) / SSD(x, x̂ with the true kernel)`` (=
``10^((PSNR_true - PSNR_est)/10)``), the restoration being DDRM through :class:`FFTBlur` with
the respective kernel (same noise, same sampler seed), for the classical global estimator
(``conf/kernel_estimator/classical.yaml``), the 3x3 local one reduced as the report does
(``classical_local``: kernels covering > 2.5 %, summed) -- both with ``kernel_size`` set to the
true size -- and InLoopKernelDDRM (``conf/kernel_estimator/in_loop.yaml``, from a delta,
``kernel_size`` = true size), next to a Gaussian guess (σ = size / 6) and, for scale, the true
kernel under another sampler seed (the ratio's own sampling noise) and no restoration at all
(the blurry ``y`` itself: a ratio threshold it passes does not tell restorations apart). A row
for the runner's default ``blur_estimated`` path on the classical estimate (rank 1, then the
separable zero-padded operator) is added unless ``--no-rank1``. Per (size, σ_y) cell: PSNR
(mean ± CI), the paired PSNR difference to the true-kernel run, kernel NCC (max over shifts),
the ratio's median and the shares ≤ 2, 3, 5, and seconds per image (estimation, and estimation
+ sampling; the in-loop sampler's is all sampling). Then the same pooled per σ_y and over the
whole run, the shares with Wilson 95 % intervals.

``cost`` -- the FFT operator against a dense SVD operator of the same circular blur (a
``--cost-kernel``-sized motion kernel), 3-channel images, batch 1, float32, one thread. The
dense operator keeps ``U`` and ``V`` of the per-channel ``n x n`` matrix (``n = side²``; the
3 channels share it, which is the cheapest dense form) and sorts the ``3n`` singular values as
every operator does; ``H``/``Ht`` go through the SVD (``U Σ Vᵀ``), as for any operator of the
protocol. Up to ``--svd-max-side`` the SVD is LAPACK's (``torch.linalg.svd``, float64) of the
dense matrix; above it, while ``U`` and ``V`` fit in ``--max-dense-gib``, the exact singular
vectors are read off the FFT basis column by column (the LAPACK time is then extrapolated as
``n³`` from the largest measured size and marked ≈); larger sides are skipped. Timings are
medians of ``torch.utils.benchmark`` blocked runs; the DDRM step row is one step's transforms
(two ``Vt``, one ``V``). The separable Toeplitz operator of the kernel's rank-1 approximation
is timed beside them for reference.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from scipy import stats
from torch import Tensor

from ddrm_exp.datasets import SampleImages
from ddrm_exp.datasets.samples import split_names
from ddrm_exp.degradations.assumed_blur import AssumedBlur
from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.degradations.blur2d import operator_for_kernel
from ddrm_exp.degradations.dense import DenseSVD
from ddrm_exp.degradations.fft_blur import ZERO_THRESHOLD, FFTBlur, blur_circular
from ddrm_exp.degradations.kernels2d import (
    gaussian_kernel2d,
    motion_kernel,
    normalized_cross_correlation,
    rank1_approximation,
)
from ddrm_exp.degradations.noise import add_measurement_noise
from ddrm_exp.metrics import format_stat, mean_ci
from ddrm_exp.metrics.image import psnr
from ddrm_exp.run.seeding import STREAM_MEASUREMENT, STREAM_SAMPLER, image_generator
from ddrm_exp.samplers import DDRM

CONF = Path(__file__).resolve().parents[1] / "conf"


# ---- shared --------------------------------------------------------------------------------------
def load_prior() -> Any:
    cfg = OmegaConf.load(CONF / "model" / "tiny.yaml")
    cfg.cache_dir = "."  # bundled weights
    return instantiate(cfg).eval()


def load_photos(splits: Sequence[str], size: int) -> tuple[list[str], Tensor]:
    names, images = [], []
    for split in splits:
        data = SampleImages(image_size=size, split=split)
        for i in range(len(data)):
            item = data[i]
            names.append(str(item["name"]))
            images.append(item["image"])
    return names, torch.stack(images)


def image_set(
    photos: Tensor, per_photo: int, size: int, intensity: float, kernel_seed: int
) -> tuple[Tensor, Tensor, list[int]]:
    """(x, true kernels, photo index) of the ``photos x per_photo`` blurred images.

    Image ``i = j * P + p`` is photo ``p`` with motion kernel seed ``kernel_seed + i``.
    """
    p = photos.shape[0]
    idx = [i % p for i in range(p * per_photo)]
    x = photos[idx]
    k = torch.stack(
        [motion_kernel(size, intensity, generator=kernel_seed + i) for i in range(len(idx))]
    )
    return x, k, idx


def measure(x: Tensor, k: Tensor, sigma_y: float, seed: int) -> Tensor:
    """``blur_circular(x, k) + σ_y z`` (images in [-1, 1], so std 2σ_y), flattened; z per image
    from the runner's measurement stream."""
    y = blur_circular(x, k).to(x.dtype).flatten(1)
    gens = [image_generator(seed, i, STREAM_MEASUREMENT) for i in range(x.shape[0])]
    return add_measurement_noise(y, sigma_y, gens)


def sampler_gens(n: int, seed: int) -> list[torch.Generator]:
    return [image_generator(seed, i, STREAM_SAMPLER) for i in range(n)]


def timed_sample(
    sampler: Any, prior: Any, op: HFunctions, y: Tensor, sigma_y: float, seed: int, **kw: Any
) -> tuple[Any, float]:
    """The sampler's result and its wall time per image."""
    start = time.perf_counter()
    out = sampler.sample(prior, op, y, sigma_y, generator=sampler_gens(y.shape[0], seed), **kw)
    return out, (time.perf_counter() - start) / y.shape[0]


def interior_psnr(x: Tensor, ref: Tensor, border: int) -> list[float]:
    if border <= 0:
        return psnr(x, ref)
    return psnr(x[..., border:-border, border:-border], ref[..., border:-border, border:-border])


def paired(a: Sequence[float], b: Sequence[float]) -> str:
    return format_stat(mean_ci([u - v for u, v in zip(a, b, strict=True)]))


def wins(a: Sequence[float], b: Sequence[float]) -> str:
    return f"{sum(u > v for u, v in zip(a, b, strict=True))}/{len(a)}"


def wilson(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion."""
    if n == 0:
        return math.nan, math.nan
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def header(columns: Sequence[str]) -> None:
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))


def row(cells: Sequence[Any]) -> None:
    print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)


def preamble(args: argparse.Namespace, names: Sequence[str], n_images: int) -> None:
    print(
        f"model=tiny, photos ({'+'.join(args.splits)}): {', '.join(names)} at 64x64, "
        f"{args.kernels_per_photo} motion kernel(s) per photo (intensity {args.intensity:g}, "
        f"seeds {args.kernel_seed}..{args.kernel_seed + n_images - 1}) = {n_images} images per "
        f"cell, circular blur, DDRM {args.timesteps} steps, seed {args.seed}, "
        f"threads={torch.get_num_threads()}\n",
        flush=True,
    )


# ---- rank1: FFT operator vs the rank-1 approximation ---------------------------------------------
def run_rank1(args: argparse.Namespace) -> None:
    prior = load_prior()
    shape = tuple(prior.shape)
    names, photos = load_photos(args.splits, shape[-1])
    n = photos.shape[0] * args.kernels_per_photo
    preamble(args, names, n)
    ddrm = DDRM(args.timesteps)
    rank1_path = AssumedBlur(shape, assumed_kernel="estimated", rank1=True, method="auto")
    results = []
    cols = [
        "kernel",
        "σ_y",
        "rank-1 rel. error",
        "rank-1 NCC",
        "PSNR FFT, true k",
        "PSNR rank-1, separable",
        "Δ FFT − separable",
        "FFT wins",
        "PSNR rank-1, FFT",
        "Δ FFT − rank-1 FFT",
        "FFT wins ",
    ]
    header(cols)
    for size in args.sizes:
        x, k_true, _ = image_set(
            photos, args.kernels_per_photo, size, args.intensity, args.kernel_seed
        )
        k_r1, errors = rank1_path.prepare_kernels(k_true)
        ncc_r1 = [normalized_cross_correlation(a, b) for a, b in zip(k_r1, k_true, strict=True)]
        sep_op = rank1_path.with_kernels(k_r1)
        for sigma in args.sigmas:
            y = measure(x, k_true, sigma, args.seed)
            arms = {
                "fft": FFTBlur(shape, kernel=k_true),
                "sep": sep_op,
                "r1fft": FFTBlur(shape, kernel=k_r1),
            }
            full, inner = {}, {}
            for name, op in arms.items():
                out, _ = timed_sample(ddrm, prior, op, y, sigma, args.seed)
                full[name] = psnr(out.x0, x)
                inner[name] = interior_psnr(out.x0, x, size)
            results.append((size, sigma, inner))
            row(
                [
                    f"motion {size}x{size}",
                    f"{sigma:g}",
                    format_stat(mean_ci(e for e in errors if e is not None), digits=3),
                    format_stat(mean_ci(ncc_r1), digits=3),
                    format_stat(mean_ci(full["fft"])),
                    format_stat(mean_ci(full["sep"])),
                    paired(full["fft"], full["sep"]),
                    wins(full["fft"], full["sep"]),
                    format_stat(mean_ci(full["r1fft"])),
                    paired(full["fft"], full["r1fft"]),
                    wins(full["fft"], full["r1fft"]),
                ]
            )
    print("\nInterior only (a border of `size` pixels cropped from each side before the PSNR):\n")
    header(
        [
            "kernel",
            "σ_y",
            "PSNR FFT, true k",
            "Δ FFT − separable",
            "FFT wins",
            "Δ FFT − rank-1 FFT",
            "FFT wins ",
        ]
    )
    for size, sigma, inner in results:
        row(
            [
                f"motion {size}x{size}",
                f"{sigma:g}",
                format_stat(mean_ci(inner["fft"])),
                paired(inner["fft"], inner["sep"]),
                wins(inner["fft"], inner["sep"]),
                paired(inner["fft"], inner["r1fft"]),
                wins(inner["fft"], inner["r1fft"]),
            ]
        )


# ---- estimators: error ratio and the side-by-side table ------------------------------------------
def build_estimator(option: str, kernel_size: int, timesteps: int | None = None) -> Any:
    """The object of ``conf/kernel_estimator/<option>.yaml`` for this kernel size."""
    cfg = OmegaConf.load(CONF / "kernel_estimator" / f"{option}.yaml")
    # Every estimator has one top-level kernel_size (classical_local's cells follow it).
    cfg.kernel_size = kernel_size
    node = cfg.inner if "inner" in cfg else cfg
    if "num_threads" in node:
        node.num_threads = 1
    if timesteps is not None:
        cfg.timesteps = timesteps
    return instantiate(cfg)


REFERENCE = "DDRM, true kernel"
RANK1_ROW = "classical → rank-1 → DDRM (separable; runner default)"


def ratio_of(est: Sequence[float], true: Sequence[float]) -> list[float]:
    """Levin's SSD ratio from two PSNRs (the same reference image and peak)."""
    return [10 ** ((t - e) / 10) for e, t in zip(est, true, strict=True)]


def share(ratios: Sequence[float], bound: float) -> str:
    hits = sum(r <= bound for r in ratios)
    return f"{hits / len(ratios):.0%}"


def run_estimators(args: argparse.Namespace) -> None:
    prior = load_prior()
    shape = tuple(prior.shape)
    names, photos = load_photos(args.splits, shape[-1])
    n = photos.shape[0] * args.kernels_per_photo
    preamble(args, names, n)
    ddrm = DDRM(args.timesteps)
    methods = [
        "no restoration (the blurry y; delta kernel)",
        REFERENCE,
        "DDRM, true kernel, other sampler seed",
        "DDRM, Gaussian guess σ=size/6",
        "classical → DDRM (FFT)",
        "classical_local → DDRM (FFT)",
        "in-loop (InLoopKernelDDRM, from delta)",
    ]
    if args.rank1:
        methods.insert(5, RANK1_ROW)
    # (σ_y, method, ratio, PSNR, Δ PSNR vs true, NCC, seconds / image) per restored image
    records: list[tuple[float, str, float, float, float, float, float]] = []
    header(
        [
            "kernel",
            "σ_y",
            "method",
            "PSNR (dB)",
            "Δ vs true k",
            "kernel NCC",
            "ratio median",
            "≤ 2",
            "≤ 3",
            "≤ 5",
            "est. s / img",
            "total s / img",
        ]
    )
    for size in args.sizes:
        x, k_true, _ = image_set(
            photos, args.kernels_per_photo, size, args.intensity, args.kernel_seed
        )
        delta = torch.zeros(n, size, size, dtype=torch.float64)
        delta[:, size // 2, size // 2] = 1.0
        guess = gaussian_kernel2d(size, size / 6).expand(n, -1, -1)
        estimators = {
            "classical": build_estimator("classical", size),
            "classical_local": build_estimator("classical_local", size),
        }
        in_loop = build_estimator("in_loop", size, args.timesteps)
        rank1_path = AssumedBlur(shape, assumed_kernel="estimated", rank1=True, method="auto")
        for sigma in args.sigmas:
            y = measure(x, k_true, sigma, args.seed)
            label = f"motion {size}x{size}"
            blurry = psnr(y.reshape(x.shape), x)

            # method -> (psnr list, kernels used, est. seconds / image, total seconds / image)
            got: dict[str, tuple[list[float], Tensor, float, float]] = {}
            got[methods[0]] = (blurry, delta, 0.0, 0.0)
            out, secs = timed_sample(
                ddrm, prior, FFTBlur(shape, kernel=k_true), y, sigma, args.seed
            )
            got[REFERENCE] = (psnr(out.x0, x), k_true, 0.0, secs)
            out, secs = timed_sample(
                ddrm, prior, FFTBlur(shape, kernel=k_true), y, sigma, args.seed + 1
            )
            got[methods[2]] = (psnr(out.x0, x), k_true, 0.0, secs)
            out, secs = timed_sample(ddrm, prior, FFTBlur(shape, kernel=guess), y, sigma, args.seed)
            got[methods[3]] = (psnr(out.x0, x), guess, 0.0, secs)
            for option, est in estimators.items():
                start = time.perf_counter()
                estimate = est.estimate(y.reshape(x.shape))
                est_secs = (time.perf_counter() - start) / n
                k_est = estimate.reduce(0.025).to(torch.float64).cpu()
                out, secs = timed_sample(
                    ddrm, prior, FFTBlur(shape, kernel=k_est), y, sigma, args.seed
                )
                got[f"{option} → DDRM (FFT)"] = (psnr(out.x0, x), k_est, est_secs, est_secs + secs)
                if option == "classical" and args.rank1:
                    k_r1, _ = rank1_path.prepare_kernels(k_est)
                    out, secs = timed_sample(
                        ddrm, prior, rank1_path.with_kernels(k_r1), y, sigma, args.seed
                    )
                    got[RANK1_ROW] = (psnr(out.x0, x), k_r1, est_secs, est_secs + secs)
            out, secs = timed_sample(
                in_loop, prior, FFTBlur(shape, kernel=delta), y, sigma, args.seed
            )
            got[methods[-1]] = (psnr(out.x0, x), out.kernel, secs, secs)

            reference = got[REFERENCE][0]
            for method in methods:
                values, kernels, est_secs, total = got[method]
                ratios = ratio_of(values, reference)
                nccs = [
                    normalized_cross_correlation(a, b) for a, b in zip(kernels, k_true, strict=True)
                ]
                records += [
                    (sigma, method, q, v, v - r, c, total)
                    for q, v, r, c in zip(ratios, values, reference, nccs, strict=True)
                ]
                is_ref = method == REFERENCE
                row(
                    [
                        label,
                        f"{sigma:g}",
                        method,
                        format_stat(mean_ci(values)),
                        "–" if is_ref else paired(values, reference),
                        format_stat(mean_ci(nccs), digits=3),
                        "1 (def.)" if is_ref else f"{statistics.median(ratios):.2f}",
                        "–" if is_ref else share(ratios, 2),
                        "–" if is_ref else share(ratios, 3),
                        "–" if is_ref else share(ratios, 5),
                        f"{est_secs:.2f}" if est_secs else "–",
                        f"{total:.2f}" if total else "–",
                    ]
                )
    total_images = sum(1 for r in records if r[1] == REFERENCE)
    print(
        f"\nPooled over the run ({total_images} blurred images: {len(args.sizes)} size(s) x "
        f"{len(args.sigmas)} σ_y x {n} (photo, kernel) pairs), per σ_y and all together; error "
        "ratio = SSD(estimate) / SSD(true kernel), same noise and sampler seed; "
        "[95 % Wilson interval]:\n"
    )
    header(
        [
            "σ_y",
            "method",
            "PSNR (dB)",
            "Δ vs true k",
            "kernel NCC",
            "s / img",
            "ratio median",
            "≤ 2",
            "≤ 3",
            "≤ 5",
        ]
    )
    groups: list[tuple[str, list[float]]] = [(f"{s:g}", [s]) for s in args.sigmas]
    if len(args.sigmas) > 1:
        groups.append(("all", list(args.sigmas)))
    for group, sigmas in groups:
        for method in methods:
            if method == REFERENCE:
                continue
            sel = [r for r in records if r[1] == method and r[0] in sigmas]
            ratios = [r[2] for r in sel]
            secs = statistics.mean(r[6] for r in sel)
            cells = [
                group,
                method,
                format_stat(mean_ci(r[3] for r in sel)),
                format_stat(mean_ci(r[4] for r in sel)),
                format_stat(mean_ci(r[5] for r in sel), digits=3),
                f"{secs:.2f}" if secs else "–",
                f"{statistics.median(ratios):.2f}",
            ]
            for bound in (2, 3, 5):
                hits = sum(q <= bound for q in ratios)
                lo, hi = wilson(hits, len(ratios))
                cells.append(
                    f"{hits}/{len(ratios)} = {hits / len(ratios):.0%} [{lo:.0%}, {hi:.0%}]"
                )
            row(cells)


# ---- cost: FFT operator vs a dense SVD ----------------------------------------------------------
def dense_blur_matrix(kernel: Tensor, side: int) -> Tensor:
    """The (n, n) float64 matrix of the circular blur of one channel (column j = blur of e_j)."""
    n = side * side
    eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, side, side)
    return blur_circular(eye, kernel).reshape(n, n).T.contiguous()


def dense_from_lapack(kernel: Tensor, side: int, threshold: float) -> tuple[DenseSVD, float]:
    start = time.perf_counter()
    h = dense_blur_matrix(kernel, side)
    u, s, vh = torch.linalg.svd(h)
    s = torch.where(s < max(threshold, float(s[0]) * side * torch.finfo(torch.float64).eps), 0.0, s)
    op = DenseSVD((3, side, side), u.float(), s.float(), vh.T.float())
    return op, time.perf_counter() - start


def dense_from_fft(
    kernel: Tensor, side: int, threshold: float, chunk: int = 1024
) -> tuple[DenseSVD, float]:
    """The exact singular vectors of the circulant, read off FFTBlur's basis (no LAPACK)."""
    start = time.perf_counter()
    one = FFTBlur((1, side, side), kernel=kernel, zero_threshold=threshold)
    n = side * side
    mats = []
    for apply in (one.U, one.V):
        m = torch.empty(n, n, dtype=torch.float32)
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            basis = torch.zeros(hi - lo, n)
            basis[torch.arange(hi - lo), torch.arange(lo, hi)] = 1.0
            m[:, lo:hi] = apply(basis).T  # column k of U (V) is U e_k (V e_k)
        mats.append(m)
    op = DenseSVD((3, side, side), mats[0], one.singulars().float(), mats[1])
    return op, time.perf_counter() - start


def median_seconds(fn: Callable[[], Any], min_time: float) -> float:
    from torch.utils import benchmark

    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return float(timer.blocked_autorange(min_run_time=min_time).median)


def transform_calls(op: HFunctions, vec: Tensor) -> dict[str, Callable[[], Any]]:
    """The timed calls on one operator, by row name."""

    def step() -> None:
        op.Vt(vec)
        op.Vt(vec)
        op.V(vec)

    return {
        "Vt": lambda: op.Vt(vec),
        "V": lambda: op.V(vec),
        "Ut": lambda: op.Ut(vec),
        "U": lambda: op.U(vec),
        "H": lambda: op.H(vec),
        "Ht": lambda: op.Ht(vec),
        "DDRM step (2 Vt + V)": step,
    }


def run_cost(args: argparse.Namespace) -> None:
    kernel = motion_kernel(args.cost_kernel, args.intensity, generator=args.kernel_seed)
    k_rows, k_cols, _ = rank1_approximation(kernel)
    k_r1 = torch.outer(k_rows, k_cols)
    print(
        f"{args.cost_kernel}x{args.cost_kernel} motion kernel (seed {args.kernel_seed}), 3-channel "
        f"images, batch 1, float32, threads={torch.get_num_threads()}, CPU; ms per call (median); "
        f"dense = per-channel U, V (n x n, n = side²) of the circular blur\n",
        flush=True,
    )
    transforms = ["Vt", "V", "Ut", "U", "H", "Ht", "DDRM step (2 Vt + V)"]
    timings: list[tuple[int, str, float, float | None, float]] = []
    setups: list[tuple[int, str, str, str, str, str, str]] = []
    lapack_measured: dict[int, float] = {}
    for side in args.sides:
        shape = (3, side, side)
        n = side * side
        gen = torch.Generator().manual_seed(0)
        vec = torch.randn(1, 3 * n, generator=gen)
        start = time.perf_counter()
        fft = FFTBlur(shape, kernel=kernel)
        fft_setup = time.perf_counter() - start
        start = time.perf_counter()
        sep = operator_for_kernel(k_r1, shape, method="separable")
        sep_setup = time.perf_counter() - start
        uv_gib = 2 * n * n * 4 / 2**30
        dense: DenseSVD | None = None
        how, lapack_text, err_text = "skipped", "–", "–"
        if uv_gib > args.max_dense_gib:
            how = f"skipped: U, V need {uv_gib:.0f} GiB > {args.max_dense_gib:g}"
        elif side <= args.svd_max_side:
            dense, secs = dense_from_lapack(kernel, side, ZERO_THRESHOLD)
            lapack_measured[n] = secs
            how, lapack_text = "LAPACK SVD (float64)", f"{secs:.2f}"
        else:
            dense, secs = dense_from_fft(kernel, side, ZERO_THRESHOLD)
            how = f"U, V from the FFT basis ({secs:.1f} s)"
            if lapack_measured:
                n0 = max(lapack_measured)
                lapack_text = f"≈ {lapack_measured[n0] * (n / n0) ** 3:.0f} (n³ from n={n0})"
        if dense is not None:
            ref = fft.H(vec)
            err = float((dense.H(vec) - ref).norm() / ref.norm())
            err_text = f"{err:.1e}"
        setups.append(
            (
                side,
                f"{fft_setup * 1e3:.1f} ms",
                f"{sep_setup * 1e3:.1f} ms",
                how,
                lapack_text,
                f"{uv_gib * 1024:.0f} MiB" if uv_gib < 1 else f"{uv_gib:.1f} GiB",
                err_text,
            )
        )

        f_ops, s_ops = transform_calls(fft, vec), transform_calls(sep, vec)
        d_ops = transform_calls(dense, vec) if dense is not None else None
        with torch.no_grad():
            for name in transforms:
                t_fft = median_seconds(f_ops[name], args.min_time)
                t_sep = median_seconds(s_ops[name], args.min_time)
                t_dense = median_seconds(d_ops[name], args.min_time) if d_ops else None
                timings.append((side, name, t_fft, t_dense, t_sep))
        del dense, d_ops
        print(f"side {side} done", file=sys.stderr, flush=True)

    print()
    header(
        [
            "side",
            "transform",
            "FFT (ms)",
            "dense SVD (ms)",
            "dense / FFT",
            "separable rank-1 (ms)",
            "separable / FFT",
        ]
    )
    for side, name, t_fft, t_dense, t_sep in timings:
        row(
            [
                side,
                name,
                f"{t_fft * 1e3:.3f}",
                "–" if t_dense is None else f"{t_dense * 1e3:.3f}",
                "skipped (too large)" if t_dense is None else f"{t_dense / t_fft:.1f}x",
                f"{t_sep * 1e3:.3f}",
                f"{t_sep / t_fft:.2f}x",
            ]
        )
    print("\nSetup and memory (dense: U and V, float32; LAPACK SVD seconds on one thread):\n")
    header(
        [
            "side",
            "FFT setup",
            "separable setup",
            "dense built by",
            "LAPACK SVD (s)",
            "dense U+V",
            "‖H_dense x − H_fft x‖ / ‖H_fft x‖",
        ]
    )
    for s in setups:
        row(s)


# ---- CLI -----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="bench", required=True)

    def common(
        q: argparse.ArgumentParser, sizes: list[int], sigmas: list[float], per_photo: int
    ) -> None:
        q.add_argument("--sizes", type=int, nargs="+", default=sizes, help="motion kernel sides")
        q.add_argument("--sigmas", type=float, nargs="+", default=sigmas, help="σ_y, pixel units")
        q.add_argument("--splits", nargs="+", default=["heldout"], choices=["heldout", "train"])
        q.add_argument("--kernels-per-photo", type=int, default=per_photo)
        q.add_argument("--intensity", type=float, default=0.5, help="motion kernel intensity")
        q.add_argument("--kernel-seed", type=int, default=0, help="seed of image 0's kernel")
        q.add_argument("--timesteps", type=int, default=20)
        q.add_argument("--seed", type=int, default=0, help="noise and sampler seed")

    q = sub.add_parser("rank1", help="DDRM: FFT operator vs the kernel's rank-1 approximation")
    common(q, [9, 15], [0.0, 0.02], 5)
    q = sub.add_parser("estimators", help="error ratios and the estimators side by side")
    common(q, [9, 15], [0.0, 0.02], 3)
    q.add_argument(
        "--rank1",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the runner's default path for the classical estimate: rank 1, separable",
    )
    q = sub.add_parser("cost", help="FFT operator vs dense SVD operator, time ratios")
    q.add_argument("--sides", type=int, nargs="+", default=[32, 64, 128, 256])
    q.add_argument("--svd-max-side", type=int, default=64, help="largest side given LAPACK's SVD")
    q.add_argument("--max-dense-gib", type=float, default=4.0, help="memory cap of dense U+V")
    q.add_argument("--cost-kernel", type=int, default=15, help="motion kernel side")
    q.add_argument("--intensity", type=float, default=0.5)
    q.add_argument("--kernel-seed", type=int, default=0)
    q.add_argument("--min-time", type=float, default=0.3, help="seconds per timing block")
    args = p.parse_args(argv)
    if args.bench != "cost":
        for split in args.splits:
            split_names(split)
    {"rank1": run_rank1, "estimators": run_estimators, "cost": run_cost}[args.bench](args)


if __name__ == "__main__":
    main()
