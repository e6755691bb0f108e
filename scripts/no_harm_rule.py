"""Choose (validation) and check (test) the no-harm rule of blind deblurring.

    OMP_NUM_THREADS=1 python scripts/no_harm_rule.py features VAL_TREE --out /tmp/h14/val_f.jsonl
    python scripts/no_harm_rule.py choose /tmp/h14/val_f.jsonl /tmp/h14/val64.jsonl
    python scripts/no_harm_rule.py apply /tmp/h14/test_f.jsonl /tmp/h14/test64.jsonl \
        --min-agreement A --min-spread S

``features``: for every frame of a 64x64 ``bsd_mini`` tree, what the pipeline knows without the
sharp frame: the estimated kernel's spread (``conf/kernel_estimator/classical_valid.yaml``) and
its :func:`~ddrm_exp.kernel_estimation.reliability.crop_agreement` with estimates on the four
corner crops (``--crops``, fractions of the side); and, for the record, its NCC with the true
kernel. ``choose`` joins them with ``scripts/border_models.py``'s per-frame PSNRs (``--arm``:
DDRM with the estimate, default ``cv:valid``) and sweeps the thresholds: the rule returns the
DDRM restoration or the blurry frame; the best mean PSNR on *validation* data picks them.
``apply`` reports a chosen rule on test data: rule − blurry, rule − DDRM, rule − Wiener/RL with
the same kernel, paired mean ± 95 % t-CI by frame and by sequence.

    OMP_NUM_THREADS=1 python scripts/no_harm_rule.py fallbacks TREE [TREE ...]

``fallbacks``: what each kept frame would return, per tree: Wiener and Richardson–Lucy with
the milder kernel ``(1 − mix)·k̂ + mix·δ`` of ``classical_valid``'s estimate, for each
``--motion-models`` and ``--mixes`` (with ``--min-agreement A``, frames whose crop agreement is
below ``A`` return the blurry frame, as the rule's unreliable kernels do), against the blurry
frame (paired mean ± 95 % t-CI by frame [by sequence], frames worse by > 0.2 dB, the worst
frame). Seconds a tree (no DDRM; a minute with ``--min-agreement``). A source
``views:SPLIT`` is the corpus eval views of that split validly blurred by seeded camera-shake
kernels (``--view-kernel-size`` taps, ``scripts/border_models.py views``' defaults otherwise).

    OMP_NUM_THREADS=1 python scripts/no_harm_rule.py fallbacks TREE ... --noise 0 0.005 0.02 \
        --motion-models line --mixes 0.5 --min-agreement 0.9 --jsonl sel.jsonl
    python scripts/no_harm_rule.py noise sel.jsonl --thresholds 0.004 0.0045 0.005

``noise``: the rule's noisy band from ``fallbacks --jsonl`` rows: a frame whose noise level,
``min(noise_sigma, assumed σ_y)`` (the added σ; ``--assumed-clean`` for rows with none added),
reaches the threshold is returned as it is, the others get Richardson–Lucy with mix 0.5 (or
the blurry frame for an unreliable kernel); per source and noise level: mean gain over the
blurry frame / frames worse by > 0.2 dB.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor

from ddrm_exp.degradations.kernels2d import normalized_cross_correlation
from ddrm_exp.kernel_estimation.classical import kernel_spread
from ddrm_exp.kernel_estimation.reliability import (
    NoHarmRule,
    crop_agreement,
    fallback_kernel,
    noise_sigma,
)
from ddrm_exp.metrics import format_stat, mean_ci
from ddrm_exp.metrics.image import psnr
from ddrm_exp.restoration import richardson_lucy_deconvolve, wiener_deconvolve

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from border_models import tree_frames, view_frames  # noqa: E402


def _estimator(overrides: Sequence[str]) -> Any:
    """``classical_valid``'s estimator (without its rule), with ``key=value`` overrides."""
    cfg = OmegaConf.load(ROOT / "conf" / "kernel_estimator" / "classical.yaml")
    cfg.merge_with(
        {k: v for k, v in OmegaConf.load(ROOT / "conf/kernel_estimator/classical_valid.yaml")
         .items() if k not in ("defaults", "no_harm")}
    )  # fmt: skip
    cfg.num_threads = 1
    for item in overrides:
        key, _, value = item.partition("=")
        OmegaConf.update(cfg, key, yaml.safe_load(value))
    return instantiate(cfg)


def features(args: argparse.Namespace) -> None:
    est = _estimator(args.est)
    with Path(args.out).open("w") as fh:
        for f in tree_frames(Path(args.root)):
            y = f.y[None]
            k = est.estimate(y).reduce(0.025).to(torch.float64).cpu()[0]
            rec: dict[str, Any] = {
                "name": f.name,
                "group": f.group,
                "spread": kernel_spread(k),
                "true_spread": kernel_spread(f.kernel),
                "ncc": normalized_cross_correlation(k, f.kernel),
            }
            for crop in args.crops:
                rec[f"agree{crop:g}"] = crop_agreement(est, y, k[None], crop)[0]
            # The Wiener fallback's PSNR with the milder kernel of each mix.
            for mix in args.mixes:
                out = wiener_deconvolve(y, fallback_kernel(k, mix), border="reflect")
                rec[f"wiener{mix:g}"] = psnr(out, f.x[None])[0]
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            print(rec, file=sys.stderr, flush=True)


def _join(feature_path: str, psnr_paths: Sequence[str]) -> list[dict[str, Any]]:
    psnr: dict[str, dict[str, float]] = defaultdict(dict)
    for p in psnr_paths:
        for line in Path(p).read_text().splitlines():
            r = json.loads(line)
            psnr[r["name"]][r["arm"]] = r["psnr"]
    rows = []
    for line in Path(feature_path).read_text().splitlines():
        r = json.loads(line)
        r["psnr"] = psnr.get(r["name"], {})
        rows.append(r)
    return rows


def _rule_psnr(
    rows: list[dict[str, Any]], rule: NoHarmRule, key: str, arm: str
) -> tuple[list[float], int]:
    """Each frame's PSNR under ``rule`` (DDRM's ``arm``, the blurry frame for an unreliable
    kernel, the fallback for mild blur: :meth:`NoHarmRule.returns`), and how many kept."""
    out, kept = [], 0
    fallback = "blurry" if rule.fallback == "blurry" else f"wiener{rule.fallback_mix:g}"
    for r in rows:
        why = rule.judge(r["spread"], r[key])
        kept += why is not None
        if why is None:
            out.append(r["psnr"][arm])
        elif rule.returns(why) == "blurry":
            out.append(r["psnr"]["blurry"])
        else:
            out.append(r[fallback])
    return out, kept


def _ci(values: Sequence[float], groups: Sequence[str]) -> str:
    by: dict[str, list[float]] = defaultdict(list)
    for v, g in zip(values, groups, strict=True):
        by[g].append(v)
    means = [sum(v) / len(v) for v in by.values()]
    return f"{format_stat(mean_ci(values))} [by seq. {format_stat(mean_ci(means))}]"


def choose(args: argparse.Namespace) -> None:
    rows = [r for r in _join(args.features, args.psnr) if args.arm in r["psnr"]]
    blurry = [r["psnr"]["blurry"] for r in rows]
    ddrm = [r["psnr"][args.arm] for r in rows]
    print(f"{len(rows)} frames; blurry {sum(blurry) / len(rows):.2f}, {args.arm} "
          f"{sum(ddrm) / len(rows):.2f}")  # fmt: skip
    keys = sorted(k for k in rows[0] if k.startswith("agree"))
    mixes = sorted(float(k[6:]) for k in rows[0] if k.startswith("wiener"))
    fallbacks = [("blurry", 0.5)] + [("wiener", m) for m in mixes]
    results = []
    for key in keys:
        for a in (0.0, *[x / 100 for x in range(50, 100, 2)], 0.985, 0.99, 0.995):
            for s in (0.0, *[x / 10 for x in range(5, 31)]):
                for fb, mix in fallbacks:
                    rule = NoHarmRule(a, s, fallback=fb, fallback_mix=mix)
                    vals, kept = _rule_psnr(rows, rule, key, args.arm)
                    gain = [v - b for v, b in zip(vals, blurry, strict=True)]
                    worse = sum(g < -0.2 for g in gain)
                    name = fb if fb == "blurry" else f"wiener {mix:g}"
                    results.append(
                        (sum(vals) / len(vals), key, a, s, name, sum(gain) / len(gain), worse, kept)
                    )
    results.sort(reverse=True)
    print("| agreement key | min_agreement | min_spread | fallback | PSNR | − blurry | "
          "worse by > 0.2 dB | kept |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for mean, key, a, s, name, g, worse, kept in results[: args.top]:
        print(f"| {key} | {a:.2f} | {s:.1f} | {name} | {mean:.2f} | {g:+.2f} | {worse} | {kept} |")


def apply(args: argparse.Namespace) -> None:
    rows = [r for r in _join(args.features, args.psnr) if args.arm in r["psnr"]]
    groups = [r["group"] for r in rows]
    rule = NoHarmRule(
        args.min_agreement, args.min_spread, fallback=args.fallback, fallback_mix=args.mix
    )
    vals, kept = _rule_psnr(rows, rule, args.key, args.arm)
    print(
        f"{len(rows)} frames ({len(set(groups))} sequences), {kept} not restored by DDRM "
        f"(fallback {args.fallback}, mix {args.mix:g}); rule min_agreement "
        f"{args.min_agreement:g} ({args.key}), min_spread {args.min_spread:g}\n"
    )
    print("| arm | PSNR | rule − arm (paired) |\n|---|---|---|")
    arms = ["blurry", args.arm, "true:valid", "wiener:cv", "rl:cv", "wiener:true", "rl:true"]
    print(f"| rule | {format_stat(mean_ci(vals))} | – |")
    for arm in arms:
        if not all(arm in r["psnr"] for r in rows):
            continue
        other = [r["psnr"][arm] for r in rows]
        d = [v - o for v, o in zip(vals, other, strict=True)]
        print(f"| {arm} | {format_stat(mean_ci(other))} | {_ci(d, groups)} |")
    ncc = [r["ncc"] for r in rows]
    print(f"\nkernel NCC {format_stat(mean_ci(ncc), 3)}")


def _noisy(frame_y: Tensor, sigma: float, seed: int) -> Tensor:
    """``frame + σ z`` in [-1, 1] (``σ`` in [0, 1] units, as ``noise.sigma_y`` adds it)."""
    if sigma == 0:
        return frame_y
    g = torch.Generator().manual_seed(seed)
    return frame_y + 2.0 * sigma * torch.randn(frame_y.shape, generator=g, dtype=frame_y.dtype)


def fallbacks(args: argparse.Namespace) -> None:
    methods = (("wiener", wiener_deconvolve), ("richardson_lucy", richardson_lucy_deconvolve))
    out = Path(args.jsonl).open("w") if args.jsonl else None
    for root in args.roots:
        if root.startswith("views:"):
            frames = view_frames(root[6:], args.view_kernel_size, 0.5, 1000)
        else:
            frames = tree_frames(Path(root))
        frames = frames[:: args.stride]
        for sigma in args.noise:
            gains: dict[tuple[str, str, float], list[float]] = defaultdict(list)
            unreliable: dict[str, int] = defaultdict(int)
            sig_hat: list[float] = []
            for model in args.motion_models:
                est = _estimator([*args.est, f"motion_model={model}"])
                for i, f in enumerate(frames):
                    y = _noisy(f.y[None], sigma, args.seed * 100003 + i)
                    k = est.estimate(y).reduce(0.025).to(torch.float64).cpu()[0]
                    blurry = psnr(y, f.x[None])[0]
                    agreement = (
                        crop_agreement(est, y, k[None], args.crop)[0]
                        if args.min_agreement > 0
                        else None
                    )
                    # The rule's unreliable kernel: the frame is returned as it is (gain 0).
                    kept = agreement is not None and agreement < args.min_agreement
                    unreliable[model] += kept
                    rec: dict[str, Any] = {
                        "root": root, "name": f.name, "group": f.group, "motion_model": model,
                        "sigma": sigma, "noise_sigma": noise_sigma(y)[0],
                        "agreement": agreement, "spread": kernel_spread(k), "blurry": blurry,
                    }  # fmt: skip
                    sig_hat.append(rec["noise_sigma"])
                    for mix in args.mixes:
                        for name, deconvolve in methods:
                            restored = deconvolve(y, fallback_kernel(k, mix), border="reflect")
                            value = psnr(restored, f.x[None])[0]
                            rec[f"{name}{mix:g}"] = value
                            gains[(model, name, mix)].append(0.0 if kept else value - blurry)
                    if out is not None:
                        out.write(json.dumps(rec) + "\n")
                        out.flush()
            groups = [f.group for f in frames]
            print(f"\n{root}: {len(frames)} frames, {len(set(groups))} sequences, noise σ "
                  f"{sigma:g} added (estimated {sum(sig_hat) / len(sig_hat):.4f})\n")  # fmt: skip
            if args.min_agreement > 0:
                print(f"min_agreement {args.min_agreement:g}: frames returned as they are "
                      f"{dict(unreliable)}\n")  # fmt: skip
            print("| kernel | fallback | mix | − blurry | worse by > 0.2 dB | worst |")
            print("|---|---|---|---|---|---|")
            for (model, name, mix), g in gains.items():
                worse = sum(v < -0.2 for v in g)
                print(f"| {model} | {name} | {mix:g} | {_ci(g, groups)}"
                      f" | {worse}/{len(g)} | {min(g):+.2f} |")  # fmt: skip
    if out is not None:
        out.close()


def noise_bands(args: argparse.Namespace) -> None:
    rows = [json.loads(line) for p in args.jsonl for line in Path(p).read_text().splitlines()]
    cells: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        cells[(Path(r["root"]).name or r["root"], r["sigma"])].append(r)
    keys = sorted(cells)

    def gain(r: dict[str, Any], threshold: float) -> float:
        if r["agreement"] is not None and r["agreement"] < args.min_agreement:
            return 0.0
        level = min(r["noise_sigma"], r["sigma"] if r["sigma"] > 0 else args.assumed_clean)
        return 0.0 if level >= threshold else r[f"richardson_lucy{args.mix:g}"] - r["blurry"]

    print("| noisy_sigma | " + " | ".join(f"{k[0]} σ {k[1]:g}" for k in keys) + " | worse | mean |")
    print("|---" * (len(keys) + 3) + "|")
    for threshold in args.thresholds:
        out, worse, every = [], 0, []
        for k in keys:
            g = [gain(r, threshold) for r in cells[k]]
            w = sum(v < -0.2 for v in g)
            worse += w
            every += g
            out.append(f"{sum(g) / len(g):+.2f} / {w}")
        mean = sum(every) / len(every)
        print(f"| {threshold:g} | " + " | ".join(out) + f" | {worse} | {mean:+.3f} |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("features")
    f.add_argument("root")
    f.add_argument("--out", required=True)
    f.add_argument("--crops", type=float, nargs="+", default=[0.6, 0.75])
    f.add_argument("--est", nargs="*", default=[], help="estimator overrides key=value")
    f.add_argument("--mixes", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    for name in ("choose", "apply"):
        p = sub.add_parser(name)
        p.add_argument("features")
        p.add_argument("psnr", nargs="+", help="scripts/border_models.py --out files")
        p.add_argument("--arm", default="cv:valid")
        if name == "choose":
            p.add_argument("--top", type=int, default=15)
        else:
            p.add_argument("--key", default="agree0.75")
            p.add_argument("--min-agreement", type=float, default=0.0)
            p.add_argument("--min-spread", type=float, default=0.0)
            p.add_argument("--fallback", default="blurry", choices=("blurry", "wiener"))
            p.add_argument("--mix", type=float, default=0.5, help="the Wiener fallback's mix")
    fb = sub.add_parser("fallbacks")
    fb.add_argument("roots", nargs="+", help="64x64 bsd_mini trees, or views:val / views:test")
    fb.add_argument("--view-kernel-size", type=int, default=5)
    fb.add_argument("--est", nargs="*", default=[], help="estimator overrides key=value")
    fb.add_argument("--motion-models", nargs="+", default=["free", "line"])
    fb.add_argument("--mixes", type=float, nargs="+", default=[0.0, 0.25, 0.5])
    fb.add_argument(
        "--min-agreement",
        type=float,
        default=0.0,
        help="the rule's crop agreement: frames below it are returned as they are (0: off)",
    )
    fb.add_argument("--crop", type=float, default=0.75, help="the crop agreement's crop side")
    fb.add_argument(
        "--noise",
        type=float,
        nargs="+",
        default=[0.0],
        help="white noise σ added to the frames ([0, 1] units, as noise.sigma_y), one pass each",
    )
    fb.add_argument("--seed", type=int, default=0, help="the added noise's seed")
    fb.add_argument("--stride", type=int, default=1, help="every N-th frame only")
    fb.add_argument("--jsonl", default=None, help="write every frame's numbers here")
    nb = sub.add_parser("noise")
    nb.add_argument("jsonl", nargs="+", help="fallbacks --jsonl files")
    nb.add_argument("--thresholds", type=float, nargs="+", default=[0.004, 0.0045, 0.005, 0.006])
    nb.add_argument("--assumed-clean", type=float, default=0.02, help="assumed σ_y, no noise")
    nb.add_argument("--min-agreement", type=float, default=0.9)
    nb.add_argument("--mix", type=float, default=0.5, help="the Richardson–Lucy fallback's mix")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    commands = {
        "features": features,
        "choose": choose,
        "apply": apply,
        "fallbacks": fallbacks,
        "noise": noise_bands,
    }
    commands[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
