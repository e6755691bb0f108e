"""How far the official blur operators as published are from the blurs they build.

For each DDRM blur (deblur_uniform, deblur_gauss, deblur_aniso) on the bundled sample photos,
prints the relative difference ``‖H₁x − H₂x‖ / ‖H₂x‖`` of:

* ``compat vs blur``: ``official_compat=true`` against the correct operator (the default);
* ``compat vs toeplitz``: ``official_compat=true`` against ``official_toeplitz=true`` (the same
  dropped-tap matrix, its singular values paired right);
* ``compat vs fp32``: ours against the same recipe computed the official way in float32
  (``torch.svd`` in float32, products and sort in float32), i.e. how much of the official
  operator is fixed by its recipe rather than by float32 round-off in near-degenerate
  singular subspaces.

    python scripts/official_blur_gap.py [--size 256] [--split heldout]
"""

from __future__ import annotations

import argparse

import torch

from ddrm_exp.config import instantiate_config
from ddrm_exp.datasets.samples import SampleImages
from ddrm_exp.degradations.separable import Deblurring, official_tiled_grid
from ddrm_exp.paths import CONF_DIR

BLURS = ("deblur_uniform", "deblur_gauss", "deblur_aniso")


def _build(name: str, size: int, **flags: bool) -> Deblurring:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONF_DIR / "degradation" / f"{name}.yaml")
    for key, value in flags.items():
        cfg[key] = value
    return instantiate_config("degradation", cfg, shape=(3, size, size), dtype=torch.float64)


def _fp32_official(op: Deblurring, x: torch.Tensor) -> torch.Tensor:
    """H x with the official recipe in float32, reusing only ``op``'s Toeplitz matrices."""
    u_r, s_r, v_r = torch.svd(op.matrix_rows.float(), some=False)
    u_c, s_c, v_c = torch.svd(op.matrix_cols.float(), some=False)
    s_r = torch.where(s_r < 3e-2, torch.zeros_like(s_r), s_r)
    s_c = torch.where(s_c < 3e-2, torch.zeros_like(s_c), s_c)
    grid = official_tiled_grid(s_r, s_c, 3)  # (C, H, W) values per (c, i, j) mode
    z = v_r.T @ x.float() @ v_c
    return (u_r @ (grid * z) @ u_c.T).double()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--split", default="heldout")
    args = parser.parse_args()
    data = SampleImages(args.size, split=args.split)
    items = [data[i] for i in range(len(data))]
    images = [item["image"].to(torch.float64) for item in items]
    names = [str(item["name"]) for item in items]

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / b.norm())

    print(
        f"{'blur':15s} {'image':12s} {'compat vs blur':>15s} {'compat vs toeplitz':>19s} "
        f"{'compat vs fp32':>15s}"
    )
    for name in BLURS:
        correct = _build(name, args.size)
        toeplitz = _build(name, args.size, official_toeplitz=True)
        compat = _build(name, args.size, official_compat=True)
        for label, x in zip(names, images, strict=True):
            flat = x.reshape(1, -1)
            h_compat = compat.H(flat)
            print(
                f"{name:15s} {label:12s} {rel(h_compat, correct.H(flat)):15.4f} "
                f"{rel(h_compat, toeplitz.H(flat)):19.4f} "
                f"{rel(h_compat, _fp32_official(compat, x).reshape(1, -1)):15.2e}"
            )


if __name__ == "__main__":
    main()
