"""Which prior restores photos it has never seen better, under the same sampler and seeds?

    python scripts/prior_quality.py --data test            # the corpus' test split (report here)
    python scripts/prior_quality.py --data samples --seeds 4   # the four held-out sample photos
    python scripts/prior_quality.py --data val --checkpoints RUN/snapshots/*.safetensors
    python scripts/prior_quality.py --unconditional grid.png   # the prior's own samples

``--data``: ``samples`` (scikit-image's held-out astronaut, chelsea, coffee, rocket), ``val`` or
``test`` (``<corpus>/eval/<split>`` of a corpus built by ``scripts/build_corpus.py``; choose
snapshots and defaults on ``val``, report on ``test``), or any directory of images.

DDRM at 20 NFE (η = 0.85, η_b = 1) on the seven tasks below, each image restored with ``--seeds``
noise draws; the same measurement and sampler noise for every prior (seeded per image as the
runner does). Prints mean PSNR ± 95 % CI per prior and task, the ``H⁺y`` baseline (for
colorization, the grey image) and the paired difference of the first two priors twice: over
images × seeds, and over *pictures* (each picture's views and seeds averaged first; a corpus
image is named ``<source>__<picture>__<view>``), the honest one where views of one picture are
not independent.

``--checkpoints`` scores several weights of the first prior (e.g. training snapshots) against the
second and prints one line each; the rule the model card uses to choose among them: the most
tasks with a positive mean difference, ties broken by the mean difference over the tasks.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import ddrm_exp
from ddrm_exp.datasets.folder import ImageFolderDataset
from ddrm_exp.datasets.samples import SampleImages
from ddrm_exp.metrics import format_stat, mean_ci, psnr
from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.run.seeding import STREAM_MEASUREMENT, STREAM_SAMPLER, image_generator
from ddrm_exp.samplers import DDRM
from ddrm_exp.samplers.ddrm import timestep_sequence

# (degradation, σ_y): the five tasks of the first quality table, plus compressed sensing and a
# box hole, which leave the most to the prior.
TASKS = [
    ("sr4", 0.05),
    ("deblur_gauss", 0.05),
    ("inpaint_random", 0.0),
    ("denoise", 0.1),
    ("colorize", 0.0),
    ("cs4", 0.05),
    ("inpaint_box", 0.0),
]


def load_images(data: str, corpus: Path, size: int) -> tuple[Tensor, list[str], list[str]]:
    """Images in [-1, 1], their names, and the picture each belongs to."""
    if data == "samples":
        dataset: Any = SampleImages(size, split="heldout")
    else:
        root = corpus / "eval" / data if data in ("val", "test") else Path(data)
        if not root.is_dir():
            sys.exit(
                f"prior_quality: error: {root} is not a directory; build the corpus with "
                "'python scripts/build_corpus.py' or pass --data samples or a folder."
            )
        dataset = ImageFolderDataset(size, root=root)
    items = [dataset[i] for i in range(len(dataset))]
    names = [str(item["name"]) for item in items]
    pictures = [n.rsplit("__", 1)[0] if n.count("__") >= 2 else n for n in names]
    return torch.stack([item["image"] for item in items]), names, pictures


def load_prior(name: str, checkpoint: str | None, device: torch.device) -> DiffusionPrior:
    """``model=<name>``, with other weights of the same architecture where given."""
    options = {"checkpoint": checkpoint} if checkpoint else {}
    return ddrm_exp.load_prior(name, device=device, **options)


def restore_scores(
    priors: dict[str, DiffusionPrior], x: Tensor, seeds: int, timesteps: int, device: torch.device
) -> dict[str, dict[str, list[float]]]:
    """PSNR per task and prior (and H⁺y), listed seed-major: [seed 0 images..., seed 1 ...]."""
    size = x.shape[-1]
    sampler = DDRM(timesteps, 0.85, 1.0)
    out: dict[str, dict[str, list[float]]] = {}
    for task, sigma_y in TASKS:
        op = ddrm_exp.load_operator(task, image_size=size, device=device)
        scores: dict[str, list[float]] = defaultdict(list)
        for seed in range(seeds):
            idx = range(len(x))
            y = op.measure(x, sigma_y, [image_generator(seed, i, STREAM_MEASUREMENT) for i in idx])
            scores["H⁺y"] += psnr(op.H_pinv(y).view_as(x), x)
            for name, prior in priors.items():
                gens = [image_generator(seed, i, STREAM_SAMPLER) for i in idx]
                scores[name] += psnr(sampler.sample(prior, op, y, sigma_y, generator=gens).x0, x)
        out[f"{task} (σ_y={sigma_y})"] = dict(scores)
        print(f"done {task}", file=sys.stderr)
    return out


def by_picture(values: list[float], pictures: list[str]) -> list[float]:
    """Each picture's mean over its views and seeds (values are seed-major over the images)."""
    groups: dict[str, list[float]] = defaultdict(list)
    for k, v in enumerate(values):
        groups[pictures[k % len(pictures)]].append(v)
    return [sum(g) / len(g) for g in groups.values()]


def paired(a: list[float], b: list[float]) -> list[float]:
    return [u - v for u, v in zip(a, b, strict=True)]


def quality_table(
    scores: dict[str, dict[str, list[float]]], names: list[str], pictures: list[str], title: str
) -> str:
    header = ["task", *names, "H⁺y"]
    if len(names) >= 2:
        header += [f"{names[0]} − {names[1]} (images × seeds)", "… (by picture)"]
    lines = [title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task, s in scores.items():
        cells = [task, *(format_stat(mean_ci(s[n])) for n in [*names, "H⁺y"])]
        if len(names) >= 2:
            diff = paired(s[names[0]], s[names[1]])
            cells += [format_stat(mean_ci(diff)), format_stat(mean_ci(by_picture(diff, pictures)))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def snapshot_line(path: str, scores: dict[str, dict[str, list[float]]], a: str, b: str) -> dict:
    diffs = {t: mean_ci(paired(s[a], s[b]))["mean"] for t, s in scores.items()}
    return {
        "checkpoint": path,
        "diff": diffs,
        "wins": sum(d > 0 for d in diffs.values()),
        "mean_diff": sum(diffs.values()) / len(diffs),
    }


@torch.no_grad()
def unconditional(prior: DiffusionPrior, n: int, steps: int, seed: int) -> Tensor:
    """Ancestral DDIM (η = 1) samples of the prior alone, on DDRM's step schedule."""
    abar = prior.schedule.alphas_cumprod.float()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *prior.shape, generator=gen)
    seq = timestep_sequence(steps, prior.schedule.num_timesteps)
    x0 = x
    for i, t in reversed(list(enumerate(seq))):
        a_t = abar[t]
        a_next = abar[seq[i - 1]] if i > 0 else torch.tensor(1.0)
        eps = prior.eps(x, torch.full((n,), float(t)))
        x0 = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
        if i == 0:
            break
        sigma = ((1 - a_next) / (1 - a_t) * (1 - a_t / a_next)).sqrt()
        noise = torch.randn(x.shape, generator=gen)
        x = a_next.sqrt() * x0 + (1 - a_next - sigma**2).sqrt() * eps + sigma * noise
    return x0


def save_unconditional(prior: DiffusionPrior, path: Path, n: int = 16) -> None:
    from torchvision.utils import make_grid, save_image

    rows = [unconditional(prior, n, steps, seed=0) for steps in (20, 100)]
    grid = make_grid(torch.cat(rows), nrow=n // 2, padding=2, pad_value=1.0)
    grid = torch.nn.functional.interpolate(grid[None], scale_factor=2, mode="nearest")[0]
    save_image((grid + 1) / 2, str(path))
    print(f"unconditional samples (top half: 20 steps, bottom half: 100 steps) in {path}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data", default="test", help="samples | val | test | a folder")
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--priors", nargs="+", default=["tiny", "gaussian"])
    parser.add_argument("--seeds", type=int, default=2, help="noise draws per image")
    parser.add_argument("--timesteps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpoint", default=None, help="weights for the first prior")
    parser.add_argument(
        "--checkpoints",
        nargs="*",
        default=None,
        help="score each of these weights of the first prior (snapshot choice)",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    parser.add_argument("--json", type=Path, default=None, help="per-image scores as JSON")
    parser.add_argument(
        "--unconditional",
        type=Path,
        default=None,
        help="write a grid of the first prior's own samples here and stop",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.checkpoints and len(args.priors) < 2:
        sys.exit("prior_quality: error: --checkpoints compares against a second prior (--priors).")

    if args.unconditional:
        save_unconditional(load_prior(args.priors[0], args.checkpoint, device), args.unconditional)
        return
    others = {p: load_prior(p, None, device) for p in args.priors[1:]}
    first = None if args.checkpoints else load_prior(args.priors[0], args.checkpoint, device)
    size = (first or next(iter(others.values()))).image_size[0]
    x, names, pictures = load_images(args.data, args.corpus, size)
    x = x.to(device)

    if args.checkpoints:
        a, b = args.priors[:2]
        base = restore_scores(others, x, args.seeds, args.timesteps, device)
        lines = []
        for path in args.checkpoints:
            s = restore_scores(
                {a: load_prior(a, path, device)}, x, args.seeds, args.timesteps, device
            )
            merged = {t: {**base[t], **s[t]} for t in s}
            line = snapshot_line(path, merged, a, b)
            lines.append(line)
            print(json.dumps(line), flush=True)
        best = max(lines, key=lambda r: (r["wins"], r["mean_diff"]))
        print(f"chosen (most tasks won, then mean difference): {best['checkpoint']}")
        return

    assert first is not None
    priors = {args.priors[0]: first, **others}
    scores = restore_scores(priors, x, args.seeds, args.timesteps, device)
    title = (
        f"PSNR (dB) on `--data {args.data}`: {len(x)} images of {len(set(pictures))} pictures × "
        f"{args.seeds} seeds, {size}×{size}, DDRM {args.timesteps} steps, η=0.85, η_b=1; "
        "mean ± half-width of the 95 % CI (Student t; n = images × seeds, or pictures)"
    )
    table = quality_table(scores, args.priors, pictures, title)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"names": names, "pictures": pictures, "seeds": args.seeds, "scores": scores}
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
