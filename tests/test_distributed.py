"""Several processes over one run: sharding, one output directory, results independent of N."""

from __future__ import annotations

import json
import stat
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra.core.utils as hydra_utils
import pytest
from helpers import one_thread, reap, run_job, spawn
from omegaconf import OmegaConf

from ddrm_exp.distributed import SINGLE, Shard, pin_hydra_clock

ARGS = [
    "metrics.lpips=false",
    "dataset.split=all",
    "dataset.limit=5",  # odd: the two shards differ in size
    "batch_size=2",
    "sampler.timesteps=4",
    "model=gaussian",
    "model.image_size=32",
    "grid_max_images=3",
]


@pytest.mark.parametrize("num_images", [0, 1, 5, 9])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_partition_the_dataset(num_images: int, world: int) -> None:
    shards = [Shard(rank=r, world_size=world).indices(num_images) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(num_images))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    assert SINGLE.indices(num_images) == list(range(num_images))


def test_pinned_clock_survives_hydra_reregistering_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hydra_utils, "datetime", hydra_utils.datetime)  # restored afterwards
    stamp = datetime(2001, 2, 3, 4, 5, 6)
    pin_hydra_clock(stamp)
    hydra_utils.setup_globals()  # what Hydra does at the start of every run and sweep
    cfg = OmegaConf.create({"dir": "${now:%Y-%m-%d}/${now:%H-%M-%S}"})
    assert cfg.dir == "2001-02-03/04-05-06"


def run_ok(cmd: list[str], cwd: Path, timeout: float = 240) -> str:
    """Run ``cmd`` in its own process group, so a hang cannot leave torchrun's workers behind."""
    rc, out = reap(spawn(cmd, cwd), timeout)
    assert rc == 0, out[-4000:]
    return out


def read(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


def test_torchrun_two_ranks_match_one_process(tmp_path: Path) -> None:
    single = tmp_path / "single"
    with one_thread():  # in process, as a CLI process would compute it
        run_job([*ARGS, "logger=none"], single)
    # Rank 1 starts 1.5 s late: the run directory is named by the clock (${now:...}), and both
    # ranks must still land in one directory.
    launcher = tmp_path / "late_rank1.sh"
    launcher.write_text(
        f'#!/bin/sh\n[ "$RANK" = 1 ] && sleep 1.5\nexec "{sys.executable}" -m ddrm_exp "$@"\n'
    )
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR)
    outputs = tmp_path / "outputs"
    log = run_ok(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",  # rendezvous on a free local port
            "--nproc_per_node=2",
            "--no-python",
            str(launcher),
            *ARGS,
            "logger=wandb",
            f"paths.output_root={outputs}",
        ],
        tmp_path,
    )
    assert "rank 0/2: 3 images" in log and "rank 1/2: 2 images" in log
    run_dirs = [p.parent for p in outputs.glob("runs/*/*/results.jsonl")]
    assert len(run_dirs) == 1, list(outputs.rglob("*"))
    dist = run_dirs[0]
    assert log.count("Outputs:") == 1 and f"Outputs: {dist}" in log

    one, two = read(single), read(dist)
    assert [r["index"] for r in two] == [0, 1, 2, 3, 4]
    for a, b in zip(one, two, strict=True):
        assert (a["name"], a["restored"], a["baseline"]) == (
            b["name"],
            b["restored"],
            b["baseline"],
        )
    assert sorted(p.name for p in dist.glob("results*.jsonl")) == ["results.jsonl"]
    s1 = json.loads((single / "summary.json").read_text())
    s2 = json.loads((dist / "summary.json").read_text())
    for key in ("count", "restored", "baseline", "config_hash", "nfe"):
        assert s1[key] == s2[key], key
    # The grid is the first grid_max_images images by dataset index, whichever rank made them.
    assert (single / "grid.png").read_bytes() == (dist / "grid.png").read_bytes()
    assert len(list((dist / "images").glob("*_restored.png"))) == 5
    # Logged once, by rank 0.
    assert len(list((dist / "wandb").glob("offline-run-*"))) == 1
    assert json.loads((dist / "wandb_run.json").read_text())["mode"] == "offline"
