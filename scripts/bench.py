"""Side-by-side cost of the samplers against the bare network, in one process.

    python scripts/bench.py                                   # tiny (random init ok), CPU
    python scripts/bench.py --models tiny gaussian --batches 1 8 --samplers ddrm mcg
    python scripts/bench.py --models lsun_bedroom --random-init --device cuda --batches 1 6
    python scripts/bench.py --device cuda --precisions fp32 tf32 bf16 fp16 --quality --sync-check

For each model × batch size it times, on the same shapes, interleaved run by run and repeated
``--repeats`` times (median reported):

* ``network``: ``--timesteps`` bare forward passes of the ε-network (the physical floor of a run);
* each sampler: a full restoration with the same number of network evaluations.

It prints seconds per step, NFE/s, seconds per image, peak memory, the sampler's overhead over
the bare network ``(full − network) / network``, and the per-step cost ratio of each sampler to
DDRM. Peak memory is exact on CUDA (``max_memory_allocated``); on the CPU it is the peak growth of
the process's resident memory during the run, sampled every millisecond — an approximation.
``--random-init`` builds a model's architecture without its weights (timing does not depend on
the weights), so the published models can be timed without downloading them.

``--precisions``, ``--channels-last`` and ``--compile`` time every combination given (see
``ddrm_exp.models.acceleration``). ``--quality`` restores the held-out sample photos with the
bundled ``tiny`` model under each precision and prints the mean PSNR change against fp32 (same
measurements and noise). ``--noise-inline`` adds DDRM drawing its per-step noise in line
instead of one step ahead on a host thread (the default on CUDA, ``DDRM.prefetch_noise``).
``--sync-check`` (CUDA) runs each sampler once under
``torch.cuda.set_sync_debug_mode`` and counts the host synchronisations of the whole run.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import statistics
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ddrm_exp.metrics import psnr
from ddrm_exp.models.acceleration import Acceleration, accelerate
from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.models.pretrained import build_network
from ddrm_exp.models.schedule import Schedule
from ddrm_exp.paths import CONF_DIR
from ddrm_exp.run.seeding import STREAM_MEASUREMENT, STREAM_SAMPLER, image_generator
from ddrm_exp.samplers import DDRM, MCG


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class PeakMemory:
    """Peak memory of a block: CUDA allocator stats, or sampled RSS growth on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            try:  # hand freed heap back to the OS so RSS growth reflects this block
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            except OSError:
                pass
            self.base = rss_bytes()
            self._stop = threading.Event()
            self._max = self.base
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._max, rss_bytes()) - self.base


def build_prior(name: str, random_init: bool, device: torch.device) -> DiffusionPrior:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"model={name}"])
    model_cfg = cfg.model
    if random_init and "arch" in model_cfg:
        size = int(model_cfg.image_size)
        net = build_network(model_cfg.arch, size, OmegaConf.to_container(model_cfg.network))
        if model_cfg.get("fp16"):
            net.convert_to_fp16()
        prior = DiffusionPrior(net.eval().requires_grad_(False), Schedule.linear(), size, 3, name)
    else:
        prior = instantiate(model_cfg)
    return prior.to(device).eval()


class Replay(torch.nn.Module):
    """A stand-in network that returns one precomputed output, at no cost."""

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out = out

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.out


def network_loop(prior: DiffusionPrior, x: torch.Tensor, t: torch.Tensor, nfe: int) -> None:
    with torch.no_grad():
        for _ in range(nfe):
            prior.eps(x, t)


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def peak_once(fn: Callable[[], object], device: torch.device) -> int:
    with PeakMemory(device) as mem:
        fn()
    return mem.peak


def timed_interleaved(
    runs: dict[str, Callable[[], object]], device: torch.device, repeats: int
) -> dict[str, tuple[float, int]]:
    """Median time and peak memory of each run, the runs interleaved repeat by repeat.

    Interleaving (network, ddrm, mcg, network, ddrm, ...) spreads clock and load drift of a
    shared machine over every run alike instead of charging it to whichever ran last. Peak
    memory is measured in a separate pass after the timed ones: on the CPU it samples RSS from
    a thread every millisecond, and that thread's wake-ups take the GIL from the run, which
    slowed DDRM's many small operations more than the network's (+10-17 % "overhead" on the
    2-core CPU with it, +4.6 % without).
    """
    for fn in runs.values():
        fn()  # warm-up: allocator, lazy init, cudnn autotuning
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            times[name].append(time_once(fn, device))
    return {
        name: (statistics.median(times[name]), peak_once(fn, device)) for name, fn in runs.items()
    }


def count_syncs(fn: Callable[[], object]) -> int:
    """Host synchronisations while ``fn`` runs, as reported by CUDA's sync debug mode."""
    import warnings

    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def compose_config(overrides: list[str]):  # noqa: ANN201 (a DictConfig)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


QUALITY_TASKS = [("sr4", 0.05), ("deblur_gauss", 0.05), ("inpaint_random", 0.0), ("colorize", 0.0)]


def quality(device: torch.device, accs: list[Acceleration], timesteps: int) -> list[str]:
    """Mean PSNR of the bundled model under each setting, and its change against fp32."""
    cfg = compose_config(["model=tiny"])
    size = int(cfg.model.image_size)
    data = instantiate(cfg.dataset, image_size=(size, size))
    x = torch.stack([data[i]["image"] for i in range(len(data))]).to(device)
    base = instantiate(cfg.model).to(device).eval()
    reference = Acceleration()
    settings = [reference, *(a for a in accs if a != reference)]
    sampler = DDRM(timesteps, 0.85, 1.0)
    lines = [
        "",
        f"quality: model=tiny, {len(data)} held-out photos, DDRM {timesteps} steps; mean PSNR "
        "(dB) and its change against fp32 (same measurements and noise)",
        "",
        "| setting | " + " | ".join(t for t, _ in QUALITY_TASKS) + " | mean Δ vs fp32 |",
        "|---|" + "---|" * (len(QUALITY_TASKS) + 1),
    ]
    means: dict[Acceleration, list[float]] = {}
    for acc in settings:
        prior = accelerate(base, acc)
        row = []
        for task, sigma_y in QUALITY_TASKS:
            deg = compose_config([f"degradation={task}"]).degradation
            op = instantiate(deg, shape=(3, size, size), device=device)
            idx = range(len(data))
            y = op.measure(x, sigma_y, [image_generator(0, i, STREAM_MEASUREMENT) for i in idx])
            gens = [image_generator(0, i, STREAM_SAMPLER) for i in idx]
            x_hat = sampler.sample(prior, op, y, sigma_y, generator=gens).x0
            row.append(statistics.mean(psnr(x_hat, x)))
        means[acc] = row
        delta = statistics.mean(a - b for a, b in zip(row, means[reference], strict=True))
        cells = " | ".join(f"{v:.2f}" for v in row)
        line = f"| {describe(acc)} | {cells} | {delta:+.3f} |"
        lines.append(line)
        print(line, flush=True)
    set_default_precision()
    return lines


def describe(acc: Acceleration) -> str:
    parts = [acc.precision]
    if acc.channels_last:
        parts.append("channels_last")
    if acc.compile:
        parts.append("compile")
    return "+".join(parts)


def set_default_precision() -> None:
    from ddrm_exp.models.acceleration import set_matmul_precision

    set_matmul_precision("fp32")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["tiny"])
    parser.add_argument("--samplers", nargs="+", default=["ddrm", "mcg"], choices=["ddrm", "mcg"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--degradation", default="sr4")
    parser.add_argument("--timesteps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precisions", nargs="+", default=["fp32"], choices=["fp32", "tf32", "bf16", "fp16"]
    )
    parser.add_argument("--channels-last", action="store_true", help="also time channels_last")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--quality", action="store_true", help="PSNR change of each precision")
    parser.add_argument(
        "--noise-inline", action="store_true", help="also time DDRM without noise drawn ahead"
    )
    parser.add_argument("--sync-check", action="store_true", help="count host syncs (CUDA)")
    parser.add_argument(
        "--random-init", action="store_true", help="time architectures without weights"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the table (Markdown) here"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    accs = [Acceleration(p) for p in args.precisions]
    if args.channels_last:
        accs += [Acceleration(a.precision, channels_last=True) for a in list(accs)]
    if args.compile:
        accs += [Acceleration(a.precision, a.channels_last, compile=True) for a in list(accs)]

    deg_cfg = compose_config([f"degradation={args.degradation}"]).degradation
    header = (
        "| model | setting | batch | run | s/step | NFE/s | s/image | peak MB "
        "| overhead vs network | per-step ratio vs DDRM |"
        + (" host syncs |" if args.sync_check else "")
    )
    lines = [
        f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, degradation "
        f"{args.degradation}, {args.timesteps} steps, median of {args.repeats}",
        "",
        header,
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if args.sync_check else ""),
    ]
    print("\n".join(lines), flush=True)
    for model_name in args.models:
        base = build_prior(model_name, args.random_init, device)
        c, h, w = base.shape
        op = instantiate(deg_cfg, shape=(c, h, w), device=device)
        for acc in accs:
            prior = accelerate(base, acc)
            for batch in args.batches:
                lines += bench_one(args, device, prior, op, model_name, describe(acc), batch)
        set_default_precision()
    if args.quality:
        lines += quality(device, accs, args.timesteps)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


def bench_one(
    args: argparse.Namespace,
    device: torch.device,
    prior: DiffusionPrior,
    op: object,
    model_name: str,
    setting: str,
    batch: int,
) -> list[str]:
    c, h, w = prior.shape
    x = torch.rand(batch, c, h, w, device=device) * 2 - 1
    y = op.H(x.reshape(batch, -1))  # type: ignore[attr-defined]
    sampler_ddrm = DDRM(args.timesteps, 0.85, 1.0)
    nfe = len(sampler_ddrm.sequence(prior))
    t = torch.full((batch,), 500.0, device=device)
    # Per-image CPU generators, as the runner uses: their noise reaches the device without a
    # blocking copy (pinned memory), which is part of what is measured.
    gens = [torch.Generator().manual_seed(i) for i in range(batch)]

    samplers: dict[str, DDRM] = {"ddrm": sampler_ddrm}
    if "mcg" in args.samplers:
        samplers["mcg"] = MCG(args.timesteps, 0.85, 1.0, grad_scale=1.0)
    runs: dict[str, Callable[[], object]] = {"network": partial(network_loop, prior, x, t, nfe)}
    for name in args.samplers:
        runs[name] = partial(samplers[name].sample, prior, op, y, 0.05, generator=gens)
    if args.noise_inline:
        # DDRM drawing each step's noise in line on the launching thread, not one step ahead
        # on a worker (DDRM.prefetch_noise; ahead is the default on CUDA): what that saves.
        inline = DDRM(args.timesteps, 0.85, 1.0)
        inline.prefetch_noise = False
        runs["ddrm, noise inline"] = partial(inline.sample, prior, op, y, 0.05, generator=gens)
    # DDRM's own work alone: the same loop with the network replaced by a replay of one
    # precomputed output. Robust where (full - network) drowns in the network's run-to-run
    # noise (a shared CPU), since it never runs the network.
    with torch.no_grad():
        replay = Replay(prior.network(x, t))
    replayed = DiffusionPrior(
        replay, prior.schedule, prior.image_size, prior.channels, prior.name, prior.prediction
    )
    runs["ddrm own work"] = partial(sampler_ddrm.sample, replayed, op, y, 0.05, generator=gens)
    results = timed_interleaved(runs, device, args.repeats)
    syncs = (
        {name: count_syncs(fn) for name, fn in runs.items()}
        if args.sync_check and device.type == "cuda"
        else {}
    )
    net_time = results["network"][0]
    ddrm_time = results.get("ddrm", (None, 0))[0]
    rows = []
    for name, (seconds, peak) in results.items():
        if name == "network":
            overhead, ratio = "", ""
        elif name == "ddrm own work":
            overhead, ratio = f"{seconds / net_time * 100:.1f} % of network", ""
        else:
            overhead = f"{(seconds - net_time) / net_time * 100:+.1f} %"
            ratio = f"{seconds / ddrm_time:.2f}×" if ddrm_time else ""
        row = (
            f"| {model_name} | {setting} | {batch} | {name} | {seconds / nfe:.4f} "
            f"| {nfe / seconds:.2f} | {seconds / batch:.3f} | {peak / 2**20:.0f} "
            f"| {overhead} | {ratio} |"
        )
        if args.sync_check:
            row += f" {syncs.get(name, 'n/a')} |"
        rows.append(row)
        print(row, flush=True)
    return rows


if __name__ == "__main__":
    main()
