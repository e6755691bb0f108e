"""Which prior restores the held-out sample photos better under the same sampler and seeds?

    python scripts/prior_quality.py                       # tiny vs gaussian, the five tasks
    python scripts/prior_quality.py --priors tiny gaussian --seeds 4 --out table.md
    python scripts/prior_quality.py --checkpoint run/tiny.safetensors   # other weights for tiny

DDRM at 20 NFE (η = 0.85, η_b = 1) on the held-out photos, each restored with ``--seeds``
different noise draws; the same measurement and the same sampler noise for every prior (seeded
per image as the runner does). Prints mean PSNR ± 95 % CI per prior and task, the paired
difference of the first two priors with its CI, and the H⁺y baseline (for colorization, the
grey image).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ddrm_exp.metrics import format_stat, mean_ci, psnr
from ddrm_exp.paths import CONF_DIR
from ddrm_exp.runner import STREAM_MEASUREMENT, STREAM_SAMPLER, image_generator, measure
from ddrm_exp.samplers import DDRM

TASKS = [
    ("sr4", 0.05),
    ("deblur_gauss", 0.05),
    ("inpaint_random", 0.0),
    ("denoise", 0.1),
    ("colorize", 0.0),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--priors", nargs="+", default=["tiny", "gaussian"])
    parser.add_argument("--seeds", type=int, default=4, help="noise draws per image")
    parser.add_argument("--timesteps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clip-x0", action="store_true", help="clip_x0=true for all priors")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    parser.add_argument(
        "--checkpoint", default=None, help="weights for the first prior (model.checkpoint=PATH)"
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="model config overrides for the first prior, e.g. --set prediction=v",
    )
    args = parser.parse_args()

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfgs = {p: compose(config_name="config", overrides=[f"model={p}"]) for p in args.priors}
    if args.checkpoint:
        cfgs[args.priors[0]].model.checkpoint = args.checkpoint
    for item in args.set:
        key, _, value = item.partition("=")
        OmegaConf.update(cfgs[args.priors[0]].model, key, yaml.safe_load(value), merge=False)
    sizes = {int(c.model.image_size) for c in cfgs.values()}
    if len(sizes) != 1:
        sys.exit(f"priors have different image sizes {sizes}; compare priors of one size")
    size = sizes.pop()
    device = torch.device(args.device)
    first = next(iter(cfgs.values()))
    data = instantiate(first.dataset, image_size=(size, size))
    x = torch.stack([data[i]["image"] for i in range(len(data))]).to(device)
    priors = {p: instantiate(c.model).to(device).eval() for p, c in cfgs.items()}
    sampler = DDRM(args.timesteps, 0.85, 1.0, clip_x0=args.clip_x0)

    rows = []
    for task, sigma_y in TASKS:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            deg = compose(config_name="config", overrides=[f"degradation={task}"]).degradation
        op = instantiate(deg, shape=(3, size, size), device=device)
        scores: dict[str, list[float]] = {p: [] for p in priors}
        scores["H⁺y"] = []
        for seed in range(args.seeds):
            idx = range(len(data))
            y = measure(op, x, sigma_y, [image_generator(seed, i, STREAM_MEASUREMENT) for i in idx])
            scores["H⁺y"] += psnr(op.H_pinv(y).view_as(x), x)
            for name, prior in priors.items():
                gens = [image_generator(seed, i, STREAM_SAMPLER) for i in idx]
                x_hat = sampler.sample(prior, op, y, sigma_y, generator=gens).x0
                scores[name] += psnr(x_hat, x)
        row = {"task": f"{task} (σ_y={sigma_y})"}
        row.update({name: mean_ci(v) for name, v in scores.items()})
        if len(args.priors) >= 2:
            a, b = args.priors[:2]
            row["diff"] = mean_ci([u - v for u, v in zip(scores[a], scores[b], strict=True)])
        rows.append(row)
        print(f"done {task}", file=sys.stderr)

    names = [*args.priors, "H⁺y"]
    header = ["task", *names] + (
        [f"{args.priors[0]} − {args.priors[1]}"] if len(args.priors) >= 2 else []
    )
    lines = [
        f"PSNR (dB), mean ± 95 % CI over {len(data)} held-out photos × {args.seeds} seeds, "
        f"{size}×{size}, DDRM {args.timesteps} steps, η=0.85, η_b=1"
        + (", clip_x0" if args.clip_x0 else ""),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        cells = [row["task"], *(format_stat(row[n]) for n in names)]
        if "diff" in row:
            cells.append(format_stat(row["diff"]))
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
