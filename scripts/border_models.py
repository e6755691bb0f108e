"""Which border model restores real (valid) blur best, with the true and the estimated kernel.

    OMP_NUM_THREADS=1 python scripts/border_models.py tree /tmp/b1/val64 --out /tmp/b1/tree.jsonl
    OMP_NUM_THREADS=1 python scripts/border_models.py views val --out /tmp/b1/views.jsonl
    python scripts/border_models.py table /tmp/b1/tree.jsonl [--ref true:circular]

Data (issue 14's protocol; say which split every number comes from):

* ``tree ROOT``: a ``bsd_mini`` tree written at the model's size (``--height 64 --width 64``),
  whose ``motion.json`` holds every frame's exact kernel; Blur frames are valid blur of the
  larger photo, 8-bit, no added noise. Groups: sequences.
* ``views SPLIT``: the corpus eval views (``data/corpus/eval/<split>``, 64x64) remade with a
  margin from the stored pictures, so a seeded motion kernel (``motion_kernel(--kernel-size,
  --intensity, seed)``) blurs them *validly*: the view plus ``size//2`` model pixels around it
  is resized to ``64 + 2·(size//2)``, blurred (:func:`blur_valid`), rounded to 8 bits. Where the
  picture has no room around a "full" view (its short side is the whole view), the view is
  zoomed in by that margin. Groups: pictures.

Arms, all DDRM (``conf/sampler/ddrm.yaml``: 20 steps, η 0.85, η_b 1) on the bundled ``tiny``
prior with assumed ``--sigma-y``, the same sampler seed per frame in every arm (paired):

* ``blurry``: the measurement itself;
* ``true:<border>``: the true kernel with the border model ``circular`` (today's FFT operator),
  ``taper`` (edge tapering + FFT), ``valid`` (ring unmeasured, exact), ``zero``, ``reflect``
  (:func:`ddrm_exp.degradations.valid_blur.valid_blur_operator`);
* ``est:<border>``: the same with the classical estimate (``conf/kernel_estimator/classical.yaml``
  with ``--est-kernel-size`` taps and ``--est key=value`` overrides), and its NCC with the truth.
* ``wiener:<true|tag>``, ``rl:<true|tag>``: Wiener and Richardson-Lucy with the same kernel
  (``ddrm_exp.restoration``, reflect borders); the ``ncc:<tag>`` line holds the estimate itself.

Each (frame, arm) PSNR goes to ``--out`` as one JSON line as soon as it exists (a rerun skips
what is there); ``table`` prints mean PSNR per arm and paired differences with 95 % t-CIs by
frame and by group.

Measured (2026-12-06, this 2-core CPU, DDRM 20 steps, assumed σ_y 0.02, PSNR dB, mean ± 95 %
t-CI; paired differences by frame, by sequence in brackets). Trees written at 64x64 by
``python -m ddrm_exp.datasets.bsd_mini DIR --sequences 6 --frames 8 --height 64 --width 64
[--photos DIR]`` (kernels of 3-5 taps):

| data (split) | blurry | true:circular | true:taper | true:valid | valid − blurry |
|---|---|---|---|---|---|
| tree of corpus val photos (val,48) | 28.30 | 23.56 | 26.18 | **30.53** | +2.23 ± 0.97 [± 3.14] |
| tree of corpus test photos (test,48) | 26.82 | 22.23 | 24.79 | **28.58** | +1.76 ± 0.91 [± 3.45] |
| tree of bundled photos (test, 24) | 24.18 | 24.21 | 26.67 | **28.23** | +4.05 ± 0.59 |
| corpus val views, 9-tap shake (val, 12) | 24.90 | 19.97 | **27.21** | 25.69 | +0.79 ± 1.13 |

(reflect 27.13 and zero 22.74 (n=4) on the views.) valid − circular on the test tree: +6.35 ±
0.78 [± 2.61]. Valid is the default for real frames (``degradation.border=auto``); with 9-tap
kernels its unmeasured ring (4 px a side) costs more than tapering's approximation.

Estimated kernel (validation tree, classical, 5 taps): kernel NCC 0.709 (``fit_region=all``,
``kernel_reg`` 0.05) -> 0.745 (``valid``) -> 0.787 (``kernel_reg`` 0.003; every 4th frame: 0.805);
with the estimate DDRM stays below the blurry frame: est:valid − blurry −1.70 ± 2.45 (n=5,
σ_y 0.02), −1.50 ± 2.70 (σ_y 0.05); Levin error ratio (vs the same DDRM with the true kernel)
median 2.33, 2/5 under 2. Kernel NCC on the test tree (48 frames, paired by frame): classical
9 taps 0.700, 5 taps 0.766, + fit_region=valid 0.815, + kernel_reg 0.003 (classical_valid) 0.845:
+0.079 ± 0.036 over 5 taps, +0.145 over the 9 taps the issue used.
Sharp frames (views, no blur): any DDRM pass, even with the exact identity operator, ends
near 31 dB (the tiny prior's ceiling), hence ``keep_sharp``; 2-px motion: true:valid 28.4
against blurry 32.7 (n=2).
The default pipeline's estimate (classical_valid, border valid) on the test tree, every 4th
frame (n=12): NCC 0.860, est:valid − blurry −0.76 ± 1.39 [± 2.39], Levin ratio median 1.43,
8/12 under 2, 10/12 under 3.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torch import Tensor

import ddrm_exp
from ddrm_exp.datasets.bsd_mini import read_motion
from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.degradations.kernels2d import motion_kernel, normalized_cross_correlation
from ddrm_exp.degradations.valid_blur import BORDERS, blur_valid, valid_blur_operator
from ddrm_exp.metrics import format_stat, mean_ci
from ddrm_exp.metrics.image import psnr
from ddrm_exp.restoration import richardson_lucy_deconvolve, wiener_deconvolve
from ddrm_exp.samplers import DDRM

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
CORPUS = ROOT / "data" / "corpus"
SIZE = 64


@dataclass
class Frame:
    name: str
    group: str
    x: Tensor  # (3, H, W) in [-1, 1]
    y: Tensor
    kernel: Tensor  # (kh, kw) float64, odd sides, sum 1


def _to_tensor(img: Image.Image) -> Tensor:
    a = np.asarray(img.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(a).permute(2, 0, 1).contiguous()


def _quantise(t: Tensor) -> Tensor:
    return torch.round((t.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1


def tree_frames(root: Path, exposure: str = "1ms8ms", split: str = "test") -> list[Frame]:
    split_dir = root / f"BSD_{exposure}" / split
    frames = []
    for seq, kernels in sorted(read_motion(split_dir).items()):
        for t, k in enumerate(kernels):
            stem = f"{t:08d}.png"
            with Image.open(split_dir / seq / "Sharp" / "RGB" / stem) as s:
                x = _to_tensor(s)
            with Image.open(split_dir / seq / "Blur" / "RGB" / stem) as b:
                y = _to_tensor(b)
            frames.append(Frame(f"{seq}/{t}", seq, x, y, torch.from_numpy(k)))
    return frames


def view_frames(
    split: str, size: int, intensity: float, seed: int, length: float | None = None
) -> list[Frame]:
    """Validly blurred corpus views (see the module docstring); ``length``: a straight motion
    of that many pixels instead (0: no blur, a sharp frame)."""
    if length is not None:
        size = 1 if length == 0 else 2 * math.ceil(length / 2) + 1
    manifest = json.loads((CORPUS / "manifest.json").read_text())
    pictures = sorted(
        (p for p in manifest["pictures"] if p["split"] == split), key=lambda p: p["id"]
    )
    margin = size // 2
    ext = SIZE + 2 * margin
    frames = []
    for p in pictures:
        with Image.open(CORPUS / p["stored"]) as raw:
            img = raw.convert("RGB")
        for view, frac in (("full", 1.0), ("detail", 0.5)):
            side = max(SIZE, int(min(img.size) * frac))
            side_ext = min(side * ext / SIZE, min(img.size))
            left, top = (img.width - side_ext) / 2, (img.height - side_ext) / 2
            crop = img.crop((left, top, left + side_ext, top + side_ext))
            scene = _to_tensor(crop.resize((ext, ext), Image.Resampling.LANCZOS)).double()
            if length == 0:
                k = torch.ones(1, 1, dtype=torch.float64)
            elif length is not None:
                k = motion_kernel(size, 0.0, length=length, generator=seed + len(frames))
            else:
                k = motion_kernel(size, intensity, generator=seed + len(frames))
            y = _quantise(blur_valid(scene[None], k)[0]).float()
            x = scene[:, margin : margin + SIZE, margin : margin + SIZE].float()
            frames.append(Frame(f"{p['id']}__{view}", p["id"], x, y, k))
    return frames


def build_estimator(kernel_size: int, overrides: Sequence[str]) -> Any:
    cfg = OmegaConf.load(CONF / "kernel_estimator" / "classical.yaml")
    cfg.kernel_size = kernel_size
    cfg.num_threads = 1
    for item in overrides:
        key, _, value = item.partition("=")
        OmegaConf.update(cfg, key, yaml.safe_load(value) if value else None)
    return instantiate(cfg)


def restore(
    prior: Any, sampler: DDRM, op: HFunctions, y: Tensor, sigma_y: float, seed: int
) -> Tensor:
    prepare = getattr(op, "prepare_measurement", None)
    flat = y.reshape(1, -1)
    if callable(prepare):
        flat = prepare(flat)
    g = torch.Generator().manual_seed(seed)
    out = sampler.sample(prior, op, flat, sigma_y, generator=[g])
    return out.x0.reshape(y.shape).clamp(-1, 1)


def arm_name(arm: str, sigma: float, threshold: float) -> str:
    """``arm``, with ``@σ`` for σ_y other than 0.02 and ``~t`` for a zero_threshold other
    than 0.03."""
    return (
        arm
        + ("" if sigma == 0.02 else f"@{sigma:g}")
        + ("" if threshold == 0.03 else f"~{threshold:g}")
    )


def names(arm: str, sigmas: Sequence[float], thresholds: Sequence[float] = (0.03,)) -> list[str]:
    return [arm_name(arm, s, t) for s in sigmas for t in thresholds]


def run(frames: list[Frame], args: argparse.Namespace) -> None:
    """Every (frame, arm) result as one JSON line, written as soon as it exists."""
    out_path = Path(args.out)
    done: set[tuple[str, str]] = set()
    if out_path.exists():
        for line in out_path.read_text().splitlines():
            rec = json.loads(line)
            done.add((rec["name"], rec["arm"]))
    prior = ddrm_exp.load_prior("tiny")
    sampler = instantiate(OmegaConf.load(CONF / "sampler" / "ddrm.yaml"))
    estimator = build_estimator(args.est_kernel_size, args.est) if args.est_borders else None
    shape = (3, SIZE, SIZE)
    fh = out_path.open("a")

    def emit(f: Frame, arm: str, value: float, **extra: Any) -> None:
        rec = {"name": f.name, "group": f.group, "arm": arm, "psnr": value, **extra}
        fh.write(json.dumps(rec) + "\n")
        fh.flush()

    # (arm, kernel) -> frames, so each dense SVD is computed once per distinct kernel.
    jobs: dict[tuple[str, bytes], list[tuple[int, Frame, Tensor]]] = defaultdict(list)

    def classical(f: Frame, tag: str, k: Tensor) -> None:
        # Wiener and Richardson-Lucy with the same kernel (the runner's parameters, reflect
        # borders), the classical baselines beside DDRM.
        for arm, deconvolve in (("wiener", wiener_deconvolve), ("rl", richardson_lucy_deconvolve)):
            if (f.name, f"{arm}:{tag}") not in done:
                out = deconvolve(f.y[None], k, border="reflect")
                emit(f, f"{arm}:{tag}", psnr(out, f.x[None])[0])

    for i, f in enumerate(frames):
        if (f.name, "blurry") not in done:
            emit(f, "blurry", psnr(f.y[None], f.x[None])[0])
        classical(f, "true", f.kernel)
        for border in args.true_borders:
            if not all(
                (f.name, n) in done
                for n in names(f"true:{border}", args.sigma_y, args.zero_threshold)
            ):
                jobs[(f"true:{border}", f.kernel.numpy().tobytes())].append((i, f, f.kernel))
        todo_est = [
            b
            for b in args.est_borders
            if not all(
                (f.name, n) in done
                for n in names(f"{args.tag}:{b}", args.sigma_y, args.zero_threshold)
            )
        ]
        if estimator is not None and todo_est:
            start = time.perf_counter()
            k = estimator.estimate(f.y[None]).reduce(0.025)[0].to(torch.float64)
            seconds = time.perf_counter() - start
            ncc = normalized_cross_correlation(k, f.kernel)
            for border in todo_est:
                key = (f"{args.tag}:{border}", k.numpy().tobytes() + f.name.encode())
                jobs[key].append((i, f, k))
            emit(f, f"ncc:{args.tag}", ncc, seconds=seconds, kernel=k.tolist())
            classical(f, args.tag, k)
    n_jobs = sum(len(v) for v in jobs.values())
    print(f"{len(frames)} frames, {n_jobs} restorations to do -> {out_path}", file=sys.stderr)
    for (arm, _), items in jobs.items():
        border = arm.split(":", 1)[1]
        for threshold in args.zero_threshold:
            start = time.perf_counter()
            op = valid_blur_operator(items[0][2], shape, border=border, zero_threshold=threshold)
            build = time.perf_counter() - start
            for i, f, _k in items:
                for sigma in args.sigma_y:
                    name = arm_name(arm, sigma, threshold)
                    if (f.name, name) in done:
                        continue
                    x_hat = restore(prior, sampler, op, f.y, sigma, args.seed + i)
                    emit(f, name, psnr(x_hat[None], f.x[None])[0], build_seconds=build)
        print(f"{arm} {len(items)} frame(s), operator {build:.1f} s", file=sys.stderr, flush=True)
    fh.close()


def table(paths: Sequence[str], ref: str) -> None:
    lines = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines()]
    by_frame: dict[str, dict[str, Any]] = {}
    for rec in lines:
        frame = by_frame.setdefault(rec["name"], {"group": rec["group"], "psnr": {}})
        if rec["arm"].startswith("ncc:"):
            frame.setdefault("ncc", {})[rec["arm"][4:]] = (rec["psnr"], rec.get("seconds"))
        else:
            frame["psnr"][rec["arm"]] = rec["psnr"]
    recs = list(by_frame.values())
    arms = sorted({a for r in recs for a in r["psnr"]}, key=lambda a: (a != "blurry", a))
    print(f"{len(recs)} frames, {len({r['group'] for r in recs})} groups ({', '.join(paths)})\n")
    print(f"| arm | n | PSNR | − {ref} (by frame) | − {ref} (by group) | − blurry (by frame) |")
    print("|---|---|---|---|---|---|")
    for arm in arms:
        have = [r for r in recs if arm in r["psnr"]]
        both = [r for r in have if ref in r["psnr"]]
        diffs = [r["psnr"][arm] - r["psnr"][ref] for r in both]
        by_group: dict[str, list[float]] = defaultdict(list)
        for r, d in zip(both, diffs, strict=True):
            by_group[r["group"]].append(d)
        group_means = [sum(v) / len(v) for v in by_group.values()]
        vs_blurry = [r["psnr"][arm] - r["psnr"]["blurry"] for r in have]
        print(
            f"| {arm} | {len(have)} | {format_stat(mean_ci(r['psnr'][arm] for r in have))} "
            f"| {format_stat(mean_ci(diffs))} | {format_stat(mean_ci(group_means))} "
            f"| {format_stat(mean_ci(vs_blurry))} |"
        )
    # Levin et al. 2009: error ratio = SSD(estimated kernel) / SSD(true kernel) of the same
    # non-blind restoration, 10^(ΔPSNR/10); the share of frames under 2 and 3.
    print("\n| estimated arm | n | error ratio median | ≤ 2 | ≤ 3 |\n|---|---|---|---|---|")
    for arm in arms:
        tag, _, rest = arm.partition(":")
        if tag in ("true", "blurry") or not rest:
            continue
        true_arm = f"true:{rest}"
        ratios = sorted(
            10 ** ((r["psnr"][true_arm] - r["psnr"][arm]) / 10)
            for r in recs
            if arm in r["psnr"] and true_arm in r["psnr"]
        )
        if ratios:
            n = len(ratios)
            print(
                f"| {arm} | {n} | {ratios[n // 2]:.2f} | {sum(x <= 2 for x in ratios)}/{n} "
                f"| {sum(x <= 3 for x in ratios)}/{n} |"
            )
    tags = sorted({t for r in recs for t in r.get("ncc", {})})
    for tag in tags:
        ncc = [r["ncc"][tag][0] for r in recs if tag in r.get("ncc", {})]
        secs = [r["ncc"][tag][1] for r in recs if tag in r.get("ncc", {})]
        print(
            f"\n{tag}: kernel NCC {format_stat(mean_ci(ncc), 3)}, "
            f"{format_stat(mean_ci(secs))} s per frame"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("tree", "views"):
        p = sub.add_parser(name)
        p.add_argument("source", help="tree root" if name == "tree" else "corpus split")
        p.add_argument("--out", required=True)
        p.add_argument(
            "--sigma-y",
            type=float,
            nargs="+",
            default=[0.02],
            help="assumed noise level(s); arms of levels other than 0.02 are named arm@level",
        )
        p.add_argument("--seed", type=int, default=0)
        p.add_argument(
            "--zero-threshold",
            type=float,
            nargs="+",
            default=[0.03],
            help="the operators' zero_threshold(s); others than 0.03 are named arm~t",
        )
        p.add_argument("--true-borders", nargs="*", default=["circular", "taper", "valid"])
        p.add_argument("--est-borders", nargs="*", default=[])
        p.add_argument("--est-kernel-size", type=int, default=9)
        p.add_argument("--est", nargs="*", default=[], help="estimator overrides key=value")
        p.add_argument("--limit", type=int, default=None)
        p.add_argument("--stride", type=int, default=1, help="every stride-th frame")
        p.add_argument("--tag", default="est", help="name of the estimated-kernel arms")
        if name == "views":
            p.add_argument("--kernel-size", type=int, default=9)
            p.add_argument("--intensity", type=float, default=0.5)
            p.add_argument("--kernel-seed", type=int, default=1000)
            p.add_argument(
                "--length",
                type=float,
                default=None,
                help="straight motion of this many px "
                "(0: sharp frames) instead of --kernel-size/--intensity camera shake",
            )
    t = sub.add_parser("table")
    t.add_argument("paths", nargs="+")
    t.add_argument("--ref", default="true:circular")
    args = parser.parse_args(argv)
    if args.cmd == "table":
        table(args.paths, args.ref)
        return 0
    for b in (*args.true_borders, *args.est_borders):
        if b not in BORDERS:
            parser.error(f"unknown border {b!r}; use {', '.join(BORDERS)}")
    torch.set_num_threads(1)
    if args.cmd == "tree":
        frames = tree_frames(Path(args.source))
    else:
        frames = view_frames(
            args.source, args.kernel_size, args.intensity, args.kernel_seed, args.length
        )
    frames = frames[:: args.stride]
    if args.limit is not None:
        frames = frames[: args.limit]
    run(frames, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
