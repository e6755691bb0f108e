"""Blind deblurring with the kernel estimated inside DDRM's loop, against two non-blind runs.

    OMP_NUM_THREADS=1 python scripts/blind_bench.py
    python scripts/blind_bench.py --sizes 13 --seeds 0 1 2 3 --timesteps 20

The 4 held-out sample photos at 64x64 (``SampleImages(64, "heldout")``) are blurred circularly
by seeded camera-shake motion kernels (``motion_kernel(size, intensity, seed)``, one seed per
photo) plus white noise of std ``σ_y`` (pixel units), and restored with the bundled ``tiny``
model by

* DDRM with the true kernel (the non-blind upper bound);
* DDRM with a Gaussian guess (σ = size / 6: a plausible blur of the right extent);
* InLoopKernelDDRM (``conf/sampler/ddrm_blind.yaml`` defaults, kernel_size = the true size)
  started from a delta kernel.

The Markdown table gives PSNR (mean ± 95 % CI over photos) against the blurry input's, the
kernel's normalised cross-correlation with the true kernel (the delta's for reference), and the
seconds per image (sampling, this machine, one batch of all photos).

``scripts/blind_deblur_bench.py`` measures more on the same kind of data: FFT vs rank-1 operators,
the error ratios of every estimator side by side, and the operators' cost.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ddrm_exp.datasets import SampleImages
from ddrm_exp.datasets.samples import split_names
from ddrm_exp.degradations.fft_blur import FFTBlur, blur_circular
from ddrm_exp.degradations.kernels2d import (
    gaussian_kernel2d,
    motion_kernel,
    normalized_cross_correlation,
)
from ddrm_exp.metrics import format_stat, mean_ci
from ddrm_exp.metrics.image import psnr
from ddrm_exp.samplers import DDRM, InLoopKernelDDRM

CONF = Path(__file__).resolve().parents[1] / "conf"


def ncc(kernels: torch.Tensor, k_true: torch.Tensor) -> str:
    """Mean ± CI over images of the kernel NCC (max over shifts) with the true kernels."""
    scores = [normalized_cross_correlation(k, t) for k, t in zip(kernels, k_true, strict=True)]
    return format_stat(mean_ci(scores), digits=3)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[9, 13])
    p.add_argument("--sigma-y", type=float, default=0.02)
    p.add_argument("--intensity", type=float, default=0.5, help="motion kernel intensity")
    p.add_argument("--timesteps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0, help="noise and sampler seed")
    args = p.parse_args(argv)

    cfg = OmegaConf.load(CONF / "model" / "tiny.yaml")
    cfg.cache_dir = "."  # bundled weights
    prior = instantiate(cfg).eval()
    data = SampleImages(image_size=64, split="heldout")
    x = torch.stack([data[i]["image"] for i in range(len(data))])
    n = x.shape[0]
    blind_params = OmegaConf.to_container(OmegaConf.load(CONF / "sampler" / "ddrm_blind.yaml"))
    assert isinstance(blind_params, dict)
    blind_params = {k: v for k, v in blind_params.items() if k != "_target_"}
    blind_params["timesteps"] = args.timesteps
    print(
        f"model=tiny, {n} held-out photos ({', '.join(split_names('heldout'))}) at 64x64, "
        f"σ_y={args.sigma_y:g}, {args.timesteps} steps, threads={torch.get_num_threads()}\n"
    )
    print("| kernel | method | PSNR (dB) | kernel NCC | s / image |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        k_true = torch.stack([motion_kernel(size, args.intensity, generator=s) for s in range(n)])
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1000 + args.seed))
        y = blur_circular(x, k_true) + 2 * args.sigma_y * noise  # images in [-1, 1]
        shape = (3, 64, 64)
        delta = torch.zeros(size, size, dtype=torch.float64)
        delta[size // 2, size // 2] = 1.0
        guess = gaussian_kernel2d(size, size / 6)

        label = f"motion {size}x{size}"
        print(
            f"| {label} | blurry input | {format_stat(mean_ci(psnr(y, x)))} | "
            f"{ncc(delta.expand(n, -1, -1), k_true)} (delta) | – |",
            flush=True,
        )
        runs = {
            "DDRM, true kernel": (DDRM(args.timesteps), FFTBlur(shape, kernel=k_true)),
            f"DDRM, Gaussian guess σ={size / 6:.2g}": (
                DDRM(args.timesteps),
                FFTBlur(shape, kernel=guess),
            ),
            "InLoopKernelDDRM (from delta)": (
                InLoopKernelDDRM(**{**blind_params, "kernel_size": size}),
                FFTBlur(shape, kernel=delta),
            ),
        }
        for method, (sampler, op) in runs.items():
            gens = [torch.Generator().manual_seed(args.seed * 100 + i) for i in range(n)]
            start = time.perf_counter()
            out = sampler.sample(prior, op, y.flatten(1), args.sigma_y, generator=gens)
            secs = (time.perf_counter() - start) / n
            if out.kernel is not None:
                kernels = out.kernel
            elif method.startswith("DDRM, true"):
                kernels = k_true
            else:
                kernels = guess.expand(n, -1, -1)
            print(
                f"| {label} | {method} | {format_stat(mean_ci(psnr(out.x0, x)))} | "
                f"{ncc(kernels, k_true)} | {secs:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
