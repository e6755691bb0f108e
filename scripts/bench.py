"""Side-by-side cost of the samplers against the bare network, in one process.

    python scripts/bench.py                                   # tiny (random init ok), CPU
    python scripts/bench.py --models tiny gaussian --batches 1 8 --samplers ddrm mcg
    python scripts/bench.py --models lsun_bedroom --random-init --device cuda --batches 1 6

For each model × batch size it times, on the same shapes and in this order, repeated
``--repeats`` times (median reported):

* ``network``: ``--timesteps`` bare forward passes of the ε-network (the physical floor of a run);
* each sampler: a full restoration with the same number of network evaluations.

It prints seconds per step, NFE/s, seconds per image, peak memory, the sampler's overhead over
the bare network ``(full − network) / network``, and the per-step cost ratio of each sampler to
DDRM. Peak memory is exact on CUDA (``max_memory_allocated``); on the CPU it is the peak growth of
the process's resident memory during the run, sampled every millisecond — an approximation.
``--random-init`` builds a model's architecture without its weights (timing does not depend on
the weights), so the published models can be timed without downloading them.
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

from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.models.pretrained import build_network
from ddrm_exp.models.schedule import Schedule
from ddrm_exp.paths import CONF_DIR
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


def network_loop(prior: DiffusionPrior, x: torch.Tensor, t: torch.Tensor, nfe: int) -> None:
    with torch.no_grad():
        for _ in range(nfe):
            prior.eps(x, t)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, int]:
    fn()  # warm-up: allocator, lazy init, cudnn autotuning
    times, peaks = [], []
    for _ in range(repeats):
        with PeakMemory(device) as mem:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
        peaks.append(mem.peak)
    return statistics.median(times), max(peaks)


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
        "--random-init", action="store_true", help="time architectures without weights"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the table (Markdown) here"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        deg_cfg = compose(
            config_name="config", overrides=[f"degradation={args.degradation}"]
        ).degradation

    header = (
        "| model | batch | run | s/step | NFE/s | s/image | peak MB "
        "| overhead vs network | per-step ratio vs DDRM |"
    )
    lines = [
        f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, degradation "
        f"{args.degradation}, {args.timesteps} steps, median of {args.repeats}",
        "",
        header,
        "|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for model_name in args.models:
        prior = build_prior(model_name, args.random_init, device)
        c, h, w = prior.shape
        op = instantiate(deg_cfg, shape=(c, h, w), device=device)
        for batch in args.batches:
            x = torch.rand(batch, c, h, w, device=device) * 2 - 1
            y = op.H(x.reshape(batch, -1))
            sampler_ddrm = DDRM(args.timesteps, 0.85, 1.0)
            nfe = len(sampler_ddrm.sequence(prior))
            t = torch.full((batch,), 500.0, device=device)

            samplers: dict[str, DDRM] = {"ddrm": sampler_ddrm}
            if "mcg" in args.samplers:
                samplers["mcg"] = MCG(args.timesteps, 0.85, 1.0, grad_scale=1.0)
            runs: dict[str, Callable[[], object]] = {
                "network": partial(network_loop, prior, x, t, nfe)
            }
            for name in args.samplers:
                runs[name] = partial(samplers[name].sample, prior, op, y, 0.05)
            results = {name: timed(fn, device, args.repeats) for name, fn in runs.items()}
            net_time = results["network"][0]
            ddrm_time = results.get("ddrm", (None, 0))[0]
            for name, (seconds, peak) in results.items():
                overhead = (
                    "" if name == "network" else f"{(seconds - net_time) / net_time * 100:+.1f} %"
                )
                ratio = f"{seconds / ddrm_time:.2f}×" if ddrm_time and name != "network" else ""
                row = (
                    f"| {model_name} | {batch} | {name} | {seconds / nfe:.4f} "
                    f"| {nfe / seconds:.2f} | {seconds / batch:.3f} | {peak / 2**20:.0f} "
                    f"| {overhead} | {ratio} |"
                )
                lines.append(row)
                print(row, flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
