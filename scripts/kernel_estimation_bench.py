"""Accuracy and speed of the blind kernel estimators on synthetically blurred sample photos.

    python scripts/kernel_estimation_bench.py                       # classical, CPU, 1 thread
    python scripts/kernel_estimation_bench.py --sizes 15 --sigmas 0 --photos 2
    python scripts/kernel_estimation_bench.py --estimator classical_local --boundary reflect
    python scripts/kernel_estimation_bench.py --device cuda

Each photo (scikit-image samples, held-out then train split, centre-cropped to
``--image-size``) is blurred by each kernel -- a Gaussian of sigma ``size / 8`` and camera-shake
motion kernels from ``kernel2d_from_spec({type: motion, ...})`` with fixed seeds -- plus white
noise of std ``sigma_y`` (pixel units in [0, 1]). The estimator named by ``--estimator`` (a
file of ``conf/kernel_estimator``, with ``kernel_size`` set to the true kernel's size) then
estimates the kernel; a local estimator's kernels are reduced as the report does (>2.5 %
coverage, summed). The Markdown table gives, per kernel size, noise and kernel type, the
normalised cross-correlation (max over shifts) of the estimate with the true kernel -- mean and
worst over photos -- beside that of a delta guess (what "no estimation" scores), and the
estimation time per image.

``--boundary circular`` blurs with wrap-around (the model the estimator assumes);
``reflect`` blurs a reflect-padded image and crops, as a real camera would, so the borders do
not fit the circular model.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from torch import Tensor

from ddrm_exp.datasets import load_sample_photos
from ddrm_exp.degradations.fft_blur import blur_circular
from ddrm_exp.degradations.kernels2d import kernel2d_from_spec, normalized_cross_correlation
from ddrm_exp.kernel_estimation import KernelEstimator, reduce_kernels
from ddrm_exp.paths import CONF_DIR


def photos(count: int, size: int) -> list[tuple[str, Tensor]]:
    """``count`` photos as (3, size, size) float64 in [0, 1]."""
    out = []
    for split in ("heldout", "train"):
        for name, arr in load_sample_photos(split):
            x = torch.from_numpy(arr.copy()).permute(2, 0, 1).double() / 255
            h, w = x.shape[-2:]
            s = size / min(h, w)
            x = F.interpolate(
                x[None], size=(round(h * s), round(w * s)), mode="bilinear", antialias=True
            )[0].clamp(0, 1)
            top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
            out.append((name, x[:, top : top + size, left : left + size]))
    return out[:count]


def kernels(size: int, motion_seeds: list[int], intensity: float) -> dict[str, Tensor]:
    out = {
        f"gaussian σ={size / 8:g}": kernel2d_from_spec(
            {"type": "gaussian", "size": size, "sigma": size / 8}
        )
    }
    for seed in motion_seeds:
        spec = {"type": "motion", "size": size, "intensity": intensity, "seed": seed}
        out[f"motion seed {seed}"] = kernel2d_from_spec(spec)
    return out


def blur(x: Tensor, k: Tensor, boundary: str) -> Tensor:
    if boundary == "circular":
        return blur_circular(x, k)
    kh, kw = k.shape
    padded = F.pad(x[None], (kw // 2, kw - 1 - kw // 2, kh // 2, kh - 1 - kh // 2), "reflect")
    weight = k.flip(0, 1).to(x)[None, None].expand(x.shape[0], 1, kh, kw)
    return F.conv2d(padded, weight, groups=x.shape[0])[0]


def build(option: str, kernel_size: int, threads: int | None) -> KernelEstimator:
    """The estimator of ``conf/kernel_estimator/<option>.yaml`` for this kernel size."""
    GlobalHydra.instance().clear()
    node = "kernel_estimator.inner" if option.endswith("_local") else "kernel_estimator"
    overrides = [f"+kernel_estimator={option}", f"{node}.kernel_size={kernel_size}"]
    if threads is not None:
        overrides.append(f"{node}.num_threads={threads}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return instantiate(cfg.kernel_estimator)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--estimator", default="classical", help="file of conf/kernel_estimator")
    p.add_argument("--sizes", type=int, nargs="+", default=[15, 31])
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.02])
    p.add_argument("--photos", type=int, default=4)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--motion-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--intensity", type=float, default=0.5, help="motion kernel intensity")
    p.add_argument("--boundary", choices=["circular", "reflect"], default="circular")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (0: torch default)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    images = photos(args.photos, args.image_size)
    names = ", ".join(n for n, _ in images)
    print(
        f"estimator={args.estimator}, {len(images)} photos ({names}) at "
        f"{args.image_size}x{args.image_size}, boundary={args.boundary}, device={args.device}, "
        f"threads={args.threads or torch.get_num_threads()}\n",
        flush=True,
    )
    print("| kernel size | σ_y | kernel | NCC mean | NCC min | delta NCC | s / image |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        est = build(args.estimator, size, args.threads or None)
        delta = torch.zeros(size, size, dtype=torch.float64)
        delta[size // 2, size // 2] = 1
        for sigma in args.sigmas:
            for kname, k in kernels(size, args.motion_seeds, args.intensity).items():
                gen = torch.Generator().manual_seed(1234)
                scores, secs = [], []
                for _, x in images:
                    y = blur(x, k, args.boundary)
                    y = y + sigma * torch.randn(y.shape, generator=gen, dtype=y.dtype)
                    inp = (y * 2 - 1).float().to(args.device)
                    out = est.estimate(inp)
                    k_est = out.kernels[0, 0] if out.num_kernels == 1 else reduce_kernels(out)[0]
                    scores.append(normalized_cross_correlation(k_est, k))
                    secs.append(out.seconds[0])
                print(
                    f"| {size} | {sigma:g} | {kname} | {statistics.mean(scores):.3f} | "
                    f"{min(scores):.3f} | {normalized_cross_correlation(delta, k):.3f} | "
                    f"{statistics.mean(secs):.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main(sys.argv[1:])
