"""Where does blind deblurring lose against the blurry input? One table that attributes the loss.

    OMP_NUM_THREADS=1 python scripts/blind_diagnose.py tree /tmp/b2/mini64      # bsd_mini, 64 px
    OMP_NUM_THREADS=1 python scripts/blind_diagnose.py synthetic --split test   # corpus views
    OMP_NUM_THREADS=1 python scripts/blind_diagnose.py tune --tree /tmp/b2/val64  # Wiener/RL

Data with a known kernel, each frame restored several ways with the same sampler seed, so every
difference between two ways is paired:

* ``tree ROOT``: a BSD-layout tree written by ``python -m ddrm_exp.datasets.bsd_mini ROOT
  --height 64 --width 64 ...``. Its ``motion.json`` holds every frame's exact kernel; the Blur
  frame is a *valid* blur of the larger photo (real-blur borders), rounded to 8 bits. Groups
  (for the by-group CI) are sequences.
* ``synthetic``: ``data/corpus/eval/<split>/*.png`` (64 px views), each blurred by its own seeded
  camera-shake kernel (``motion_kernel(size, intensity, seed + i)``), ``--blur circular`` (the
  FFT operator's model) or ``reflect`` (a non-circular border), plus white noise of std
  ``--sigma-y``. Groups are pictures (``<source>__<picture>``: the full and detail views).

The ways (DDRM: the bundled ``tiny`` prior, conf/sampler/ddrm.yaml's defaults, ``--steps``):

* ``blurry``: the measurement itself (doing nothing);
* ``(a) true k, border-aware``: the true kernel on a measurement model of real (valid) borders
  (helper B1's operator, when ``ddrm_exp.degradations`` has it; else the row is left out);
* ``(b) true k, FFT``: the true kernel on the circular FFT operator;
* ``(o) true k, FFT, circular re-blur`` (valid-blur data only): the sharp frame blurred again
  *circularly* by the true kernel (and rounded to 8 bits like the tree), restored as (b): the
  prior's gain when the model is exact. Its measurement differs from the real one only near the
  borders (where the wrapped blur is worse than the valid one: ``blurry, circular``), so
  ``(b) − (o)`` is what the mismatch of the border model costs;
* ``(b1) true k → rank-1, separable``: its best rank-1 approximation on DDRM's zero-padded
  separable operator (the report's path given a perfect estimate);
* ``(c) estimated k, FFT``: the classical estimate (``conf/kernel_estimator/classical.yaml``,
  ``--kernel-size``), reduced by the 2.5 % rule, on the FFT operator;
* ``(d) estimated k → rank-1, separable``: ``degradation=blur_estimated``'s default (the report);
* Wiener and Richardson-Lucy (``ddrm_exp.restoration``) with the true and the estimated kernel.

The first table gives each way's PSNR/SSIM; the second the paired differences along the chain
blurry → (a) → (b) → (b1)/(c) → (d), by frame and by group (mean ± 95 % t-CI), with the kernel
NCC. ``tune`` chooses the Wiener balance and the Richardson-Lucy iterations: run it on
validation data only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torch import Tensor

import ddrm_exp
from ddrm_exp.datasets.bsd import blur_reflect
from ddrm_exp.datasets.bsd_mini import read_motion
from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.degradations.blur2d import operator_for_kernel
from ddrm_exp.degradations.fft_blur import FFTBlur, blur_circular
from ddrm_exp.degradations.kernels2d import (
    motion_kernel,
    normalized_cross_correlation,
    rank1_approximation,
)
from ddrm_exp.metrics import format_stat, mean_ci
from ddrm_exp.metrics.image import psnr, ssim
from ddrm_exp.restoration import (
    RL_ITERATIONS,
    WIENER_BALANCE,
    richardson_lucy_deconvolve,
    wiener_deconvolve,
)
from ddrm_exp.samplers import DDRM

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
EVAL = ROOT / "data" / "corpus" / "eval"


# ---- data ----------------------------------------------------------------------------------------
@dataclass
class Frames:
    """Frames with their true kernels, as one batch."""

    names: list[str]
    groups: list[str]
    x: Tensor  # (N, 3, H, W) sharp, [-1, 1]
    y: Tensor  # (N, 3, H, W) measurement, [-1, 1]
    kernels: list[Tensor]  # true kernel of each frame (odd-sided, sum 1)
    border: str  # how the measurement treats borders: circular | reflect (valid)
    describe: str


def _read(path: Path) -> Tensor:
    with Image.open(path) as img:
        a = np.asarray(img.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(a).permute(2, 0, 1).contiguous()


def tree_frames(root: Path, exposure: str = "1ms8ms", split: str = "test") -> Frames:
    split_dir = root / f"BSD_{exposure}" / split
    motion = read_motion(split_dir)
    names, groups, xs, ys, ks = [], [], [], [], []
    for seq, kernels in sorted(motion.items()):
        for t, k in enumerate(kernels):
            stem = f"{t:08d}.png"
            names.append(f"{seq}/{t}")
            groups.append(seq)
            xs.append(_read(split_dir / seq / "Sharp" / "RGB" / stem))
            ys.append(_read(split_dir / seq / "Blur" / "RGB" / stem))
            ks.append(torch.from_numpy(k))
    return Frames(
        names, groups, torch.stack(xs), torch.stack(ys), ks, "reflect",
        f"tree {root} ({len(motion)} sequences, {len(names)} frames; valid blur, 8-bit, no "
        "added noise)",
    )  # fmt: skip


def synthetic_frames(
    split: str, size: int, intensity: float, blur: str, sigma_y: float, seed: int
) -> Frames:
    files = sorted((EVAL / split).glob("*.png"))
    if not files:
        raise SystemExit(f"no images in {EVAL / split}: build the corpus (scripts/build_corpus.py)")
    x = torch.stack([_read(f) for f in files])
    ks = [motion_kernel(size, intensity, generator=seed + i) for i in range(len(files))]
    blurred = [
        (blur_circular if blur == "circular" else blur_reflect)(x[i : i + 1], ks[i].to(x.dtype))
        for i in range(len(files))
    ]
    y = torch.cat(blurred).to(x.dtype)
    if sigma_y > 0:
        g = torch.Generator().manual_seed(seed)
        y = y + 2.0 * sigma_y * torch.randn(y.shape, generator=g, dtype=y.dtype)
    return Frames(
        [f.stem for f in files],
        [f.stem.rsplit("__", 1)[0] for f in files],
        x, y, ks, blur,
        f"synthetic: data/corpus/eval/{split} ({len(files)} views), {size}x{size} motion "
        f"kernels (intensity {intensity:g}, seeds {seed}..), {blur} blur, σ_y {sigma_y:g}",
    )  # fmt: skip


# ---- kernels and operators -----------------------------------------------------------------------
def pad_to(k: Tensor, size: int) -> Tensor:
    """Centre ``k`` (odd sides) in a ``size x size`` kernel (or crop it), keeping its origin."""
    kh, kw = k.shape
    out = torch.zeros(size, size, dtype=torch.float64)
    for src in (kh, kw):
        if src % 2 == 0:
            raise ValueError("pad_to needs odd-sided kernels")
    ch, cw, c = kh // 2, kw // 2, size // 2
    r = min(c, ch), min(c, cw)
    out[c - r[0] : c + r[0] + 1, c - r[1] : c + r[1] + 1] = k[
        ch - r[0] : ch + r[0] + 1, cw - r[1] : cw + r[1] + 1
    ].double()
    return out / out.sum()


def build_estimator(kernel_size: int) -> Any:
    cfg = OmegaConf.load(CONF / "kernel_estimator" / "classical.yaml")
    cfg.kernel_size = kernel_size
    cfg.num_threads = 1
    return instantiate(cfg)


def estimate_kernels(y: Tensor, kernel_size: int) -> tuple[list[Tensor], float]:
    """The classical estimate of each frame, reduced as the runner does; seconds per frame."""
    est = build_estimator(kernel_size)
    start = time.perf_counter()
    out = est.estimate(y)
    reduce = getattr(out, "reduce", None)
    raw = reduce(0.025) if callable(reduce) else out.kernels
    raw = raw.to(torch.float64).cpu().reshape(y.shape[0], *raw.shape[-2:])
    return [k / k.sum() for k in raw], (time.perf_counter() - start) / y.shape[0]


def rank1(k: Tensor) -> Tensor:
    rows, cols, _ = rank1_approximation(k)
    return torch.outer(rows, cols)


def border_aware_operator() -> Callable[[Tensor, tuple[int, int, int]], HFunctions] | None:
    """Helper B1's operator for valid (non-circular) blur, when it exists."""
    factory = getattr(ddrm_exp.degradations, "valid_blur_operator", None)
    return factory if callable(factory) else None


# ---- restoration ---------------------------------------------------------------------------------
def ddrm_restore(
    prior: Any, sampler: DDRM, op: HFunctions, y: Tensor, sigma_y: float, seed: int
) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    out = sampler.sample(prior, op, y.reshape(1, -1), sigma_y, generator=[g])
    return out.x0.reshape(y.shape).clamp(-1, 1)


@dataclass
class Results:
    psnr: dict[str, list[float]] = field(default_factory=dict)
    ssim: dict[str, list[float]] = field(default_factory=dict)

    def add(self, arm: str, out: Tensor, x: Tensor) -> None:
        self.psnr.setdefault(arm, []).append(psnr(out, x)[0])
        self.ssim.setdefault(arm, []).append(ssim(out, x)[0])


BLURRY = "blurry (no restoration)"
BLURRY_O = "blurry, circular re-blur"
O = "(o) true k, FFT, on the circular re-blur (exact model)"
A = "(a) true k, border-aware"
B = "(b) true k, FFT (circular)"
B1 = "(b1) true k → rank-1, separable (zero-padded)"
AE = "(ae) estimated k, border-aware"
C = "(c) estimated k, FFT"
D = "(d) estimated k → rank-1, separable (report)"
WT, RT = "Wiener, true k", "Richardson-Lucy, true k"
WE, RE = "Wiener, estimated k", "Richardson-Lucy, estimated k"


ARMS = {"a": A, "ae": AE, "b": B, "b1": B1, "c": C, "d": D}


def operator(
    key: str, k_true: Tensor, k_est: Tensor, shape: tuple[int, ...], aware: Any, border: str
) -> HFunctions:
    """The DDRM operator of way ``key`` (see :data:`ARMS`)."""
    kernel = k_true if key in ("a", "b", "b1") else k_est
    if key in ("a", "ae"):
        return aware(kernel, shape, border=border)
    if key in ("b", "c"):
        return FFTBlur(shape, kernel=kernel)
    return operator_for_kernel(rank1(kernel), shape, method="separable")


def diagnose(frames: Frames, args: argparse.Namespace) -> tuple[Results, list[float]]:
    prior = ddrm_exp.load_prior("tiny")
    sampler = DDRM(args.steps)
    shape = tuple(frames.x.shape[1:])
    estimates, est_seconds = estimate_kernels(frames.y, args.kernel_size)
    ncc = [
        normalized_cross_correlation(e, t) for e, t in zip(estimates, frames.kernels, strict=True)
    ]
    aware = border_aware_operator()
    arms = set(args.arms.split(","))
    res = Results()
    for i in range(frames.x.shape[0]):
        x, y = frames.x[i : i + 1], frames.y[i : i + 1]
        k_true, k_est = frames.kernels[i].double(), estimates[i]
        seed = args.seed * 100003 + i
        res.add(BLURRY, y, x)
        if frames.border != "circular" and "o" in arms:
            y_o = blur_circular(x, k_true.to(x.dtype)).to(x.dtype)
            y_o = torch.round((y_o + 1) * 127.5) / 127.5 - 1  # 8 bits, as the tree's frames
            res.add(BLURRY_O, y_o, x)
            op_o = FFTBlur(shape, kernel=k_true)
            res.add(O, ddrm_restore(prior, sampler, op_o, y_o, args.assumed_sigma_y, seed), x)
        for key in ("a", "ae", "b", "b1", "c", "d"):
            if key not in arms or (key in ("a", "ae") and aware is None):
                continue
            op = operator(key, k_true, k_est, shape, aware, args.border_model)
            res.add(ARMS[key], ddrm_restore(prior, sampler, op, y, args.assumed_sigma_y, seed), x)
        if "classical" in arms:
            res.add(WT, wiener_deconvolve(y, k_true, border=frames.border), x)
            res.add(RT, richardson_lucy_deconvolve(y, k_true, border=frames.border), x)
            res.add(WE, wiener_deconvolve(y, k_est, border=frames.border), x)
            res.add(RE, richardson_lucy_deconvolve(y, k_est, border=frames.border), x)
        print(
            f"  {frames.names[i]}: NCC {ncc[i]:.3f}, "
            + ", ".join(f"{a.split(' ')[0]} {v[-1]:.2f}" for a, v in res.psnr.items()),
            file=sys.stderr,
            flush=True,
        )
    print(f"estimation: {est_seconds:.2f} s/frame", file=sys.stderr)
    return res, ncc


# ---- tables --------------------------------------------------------------------------------------
def by_group(values: Sequence[float], groups: Sequence[str]) -> list[float]:
    sums: dict[str, list[float]] = {}
    for v, g in zip(values, groups, strict=True):
        sums.setdefault(g, []).append(v)
    return [sum(v) / len(v) for v in sums.values()]


def diff(a: Sequence[float], b: Sequence[float]) -> list[float]:
    return [u - v for u, v in zip(a, b, strict=True)]


def print_tables(frames: Frames, res: Results, ncc: list[float], args: argparse.Namespace) -> None:
    n_groups = len(set(frames.groups))
    print(f"\nData: {frames.describe}. DDRM {args.steps} steps, assumed σ_y "
          f"{args.assumed_sigma_y:g}, tiny prior, seed {args.seed}; classical estimator, "
          f"kernel_size {args.kernel_size}; Wiener balance {WIENER_BALANCE:g}, RL "
          f"{RL_ITERATIONS} iterations, border '{frames.border}'.\n")  # fmt: skip
    print("| way | PSNR | SSIM | Δ vs blurry (by frame) | beats blurry |")
    print("|---|---|---|---|---|")
    base = res.psnr[BLURRY]
    for arm, vals in res.psnr.items():
        d = diff(vals, base)
        print(
            f"| {arm} | {format_stat(mean_ci(vals))} | {format_stat(mean_ci(res.ssim[arm]), 3)} "
            f"| {format_stat(mean_ci(d)) if arm != BLURRY else '–'} "
            f"| {sum(v > 0 for v in d)}/{len(d)} |"
        )
    print(f"\nKernel NCC (classical estimate vs true): {format_stat(mean_ci(ncc), 3)}\n")
    print(
        f"| step (paired PSNR difference) | by frame (n={len(base)}) | by "
        f"{'sequence' if frames.border == 'reflect' and 'tree' in frames.describe else 'picture'}"
        f" (n={n_groups}) |"
    )
    print("|---|---|---|")
    p = res.psnr
    steps = []
    if O in p:
        steps += [
            ("prior's gain, exact model: (o) − blurry", O, BLURRY),
            ("border model (valid measurement, circular operator): (b) − (o)", B, O),
        ]
    if A in p:
        steps += [
            ("prior's gain, border-aware model: (a) − blurry", A, BLURRY),
            ("border-aware vs circular operator: (a) − (b)", A, B),
        ]
    else:
        steps += [("prior's gain, true k on FFT: (b) − blurry", B, BLURRY)]
    steps += [
        ("rank-1 + zero padding, true k: (b) − (b1)", B, B1),
        ("kernel estimate: (b) − (c)", B, C),
        ("report's rank-1 path on the estimate: (c) − (d)", C, D),
        ("total, report's path: (d) − blurry", D, BLURRY),
        ("total, estimate on FFT: (c) − blurry", C, BLURRY),
        ("DDRM vs Wiener, true k: (b) − Wiener", B, WT),
        ("DDRM vs Richardson-Lucy, true k: (b) − RL", B, RT),
        ("DDRM vs Wiener, estimated k: (c) − Wiener", C, WE),
        ("DDRM vs Richardson-Lucy, estimated k: (c) − RL", C, RE),
    ]
    steps += [
        ("kernel estimate, border-aware: (a) − (ae)", A, AE),
        ("total, estimate on border-aware: (ae) − blurry", AE, BLURRY),
        ("DDRM vs Wiener, true k, border-aware: (a) − Wiener", A, WT),
        ("DDRM vs RL, true k, border-aware: (a) − RL", A, RT),
        ("DDRM vs Wiener, estimated k, border-aware: (ae) − Wiener", AE, WE),
        ("DDRM vs RL, estimated k, border-aware: (ae) − RL", AE, RE),
    ]
    for label, u, v in steps:
        if u not in p or v not in p:
            continue
        d = diff(p[u], p[v])
        print(
            f"| {label} | {format_stat(mean_ci(d))} | "
            f"{format_stat(mean_ci(by_group(d, frames.groups)))} |"
        )
    if B in p and C in p and len(set(ncc)) > 1:
        loss = diff(p[B], p[C])
        r = float(np.corrcoef(ncc, loss)[0, 1])
        print(f"\nCorrelation of NCC with the estimate's loss (b) − (c): r = {r:.2f}")


def dump(path: str | None, frames: Frames, res: Results, ncc: list[float], args: Any) -> None:
    if not path:
        return
    rows = [
        {
            "name": n,
            "group": g,
            "ncc": ncc[i],
            "psnr": {a: v[i] for a, v in res.psnr.items()},
            "ssim": {a: v[i] for a, v in res.ssim.items()},
        }
        for i, (n, g) in enumerate(zip(frames.names, frames.groups, strict=True))
    ]
    meta = {k: v for k, v in vars(args).items() if isinstance(v, int | float | str | None)}
    data = {"describe": frames.describe, "border": frames.border, "args": meta, "rows": rows}
    Path(path).write_text(json.dumps(data, indent=1))


def report(args: argparse.Namespace) -> None:
    """The tables again, from runs' ``--json`` files on the same frames (their ways merged; a
    list of rows is an older file)."""
    merged: dict[str, dict[str, Any]] = {}
    data: dict[str, Any] = {}
    for file in args.files:
        data = json.loads(Path(file).read_text())
        if isinstance(data, list):
            data = {"describe": f"{file} (tree, valid blur)", "border": "reflect", "rows": data}
        for r in data["rows"]:
            row = merged.setdefault(r["name"], {**r, "psnr": {}, "ssim": {}})
            row["psnr"].update(r["psnr"])
            row["ssim"].update(r["ssim"])
    for key, value in (data.get("args") or {}).items():
        if key in ("steps", "assumed_sigma_y", "seed", "kernel_size"):
            setattr(args, key, value)
    rows = list(merged.values())
    res = Results()
    for r in rows:
        for arm, v in r["psnr"].items():
            res.psnr.setdefault(arm, []).append(v)
            res.ssim.setdefault(arm, []).append(r["ssim"][arm])
    empty = torch.empty(0)
    frames = Frames(
        [r["name"] for r in rows], [r["group"] for r in rows], empty, empty, [],
        data["border"], data["describe"],
    )  # fmt: skip
    print_tables(frames, res, [r["ncc"] for r in rows], args)


# ---- tune: the classical baselines' parameters, on validation data ---------------------------
BALANCES = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3)
ITERATIONS = (5, 10, 20, 30, 50, 100)


def tune(args: argparse.Namespace) -> None:
    sets = []
    if args.tree:
        sets.append(tree_frames(Path(args.tree)))
    sets.append(
        synthetic_frames("val", args.size, args.intensity, args.blur, args.sigma_y, args.seed)
    )
    for frames in sets:
        estimates, _ = estimate_kernels(frames.y, args.kernel_size)
        print(f"\n{frames.describe}; PSNR (mean over {len(frames.names)} frames), blurry "
              f"{np.mean(psnr(frames.y, frames.x)):.2f}\n")  # fmt: skip
        print("| kernel | " + " | ".join(f"Wiener {b:g}" for b in BALANCES) + " | "
              + " | ".join(f"RL {n}" for n in ITERATIONS) + " |")  # fmt: skip
        print("|---" * (1 + len(BALANCES) + len(ITERATIONS)) + "|")
        for label, ks in (("true", frames.kernels), ("estimated", estimates)):
            k = torch.stack([pad_to(kk.double(), args.pad) for kk in ks])
            cells = [
                np.mean(psnr(wiener_deconvolve(frames.y, k, balance=b, border=frames.border),
                             frames.x))
                for b in BALANCES
            ]  # fmt: skip
            cells += [
                np.mean(psnr(richardson_lucy_deconvolve(frames.y, k, iterations=n,
                                                        border=frames.border), frames.x))
                for n in ITERATIONS
            ]  # fmt: skip
            print(f"| {label} | " + " | ".join(f"{c:.2f}" for c in cells) + " |", flush=True)


# ---- cli -----------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report")
    rep.add_argument("files", nargs="+", help="--json files of earlier runs on the same frames")
    for name in ("tree", "synthetic", "tune"):
        p = sub.add_parser(name)
        if name == "tree":
            p.add_argument("root", help="a bsd_mini tree written at 64x64 (has motion.json)")
            p.add_argument(
                "--sigma-y", type=float, default=0.0, help="white noise added to the frames"
            )
        if name == "tune":
            p.add_argument("--tree", help="a validation bsd_mini tree (64x64) to tune on too")
            p.add_argument("--pad", type=int, default=9, help="kernels padded to this size")
        if name in ("synthetic", "tune"):
            if name == "synthetic":
                p.add_argument("--split", default="test", choices=("val", "test"))
            p.add_argument("--size", type=int, default=15, help="motion kernel size")
            p.add_argument("--intensity", type=float, default=0.5)
            p.add_argument("--blur", default="circular", choices=("circular", "reflect"))
            p.add_argument("--sigma-y", type=float, default=0.02, help="noise added")
        p.add_argument("--kernel-size", type=int, default=None, help="estimated kernel size")
        p.add_argument("--assumed-sigma-y", type=float, default=0.02, help="DDRM's σ_y")
        p.add_argument("--steps", type=int, default=20)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--limit", type=int, default=None, help="first N frames only")
        p.add_argument("--json", default=None, help="write per-frame results here")
        p.add_argument(
            "--arms",
            default="o,a,ae,b,b1,c,d,classical",
            help="which ways to run (blurry always): o, a, ae, b, b1, c, d, classical",
        )
        p.add_argument(
            "--border-model", default="valid", help="the border-aware operator's border (B1's)"
        )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.command == "report":
        args.steps, args.assumed_sigma_y, args.seed, args.kernel_size = 20, 0.02, 0, 9
        report(args)
        return 0
    if args.kernel_size is None:
        args.kernel_size = 9 if args.command == "tree" else args.size
    if args.command == "tune":
        tune(args)
        return 0
    if args.command == "tree":
        frames = tree_frames(Path(args.root))
        if args.sigma_y > 0:  # as noise.sigma_y adds it: [0, 1] units, seeded
            g = torch.Generator().manual_seed(args.seed)
            noise = torch.randn(frames.y.shape, generator=g, dtype=frames.y.dtype)
            frames.y = frames.y + 2.0 * args.sigma_y * noise
            frames.describe += f", white noise σ {args.sigma_y:g} added"
    else:
        frames = synthetic_frames(
            args.split, args.size, args.intensity, args.blur, args.sigma_y, args.seed
        )
    if args.limit:
        n = args.limit
        frames = Frames(
            frames.names[:n], frames.groups[:n], frames.x[:n], frames.y[:n], frames.kernels[:n],
            frames.border, frames.describe + f" (first {n})",
        )  # fmt: skip
    res, ncc = diagnose(frames, args)
    print_tables(frames, res, ncc, args)
    dump(args.json, frames, res, ncc, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
