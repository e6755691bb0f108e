"""Below ``run/setup.py`` the run works with the checked objects, not the config (issue 18)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from helpers import compose_cfg

from ddrm_exp.datasets.bsd_mini import write_mini_bsd
from ddrm_exp.errors import ConfigError
from ddrm_exp.run import image
from ddrm_exp.run.setup import RunContext, Setup, setup
from ddrm_exp.video import runner as video_runner
from ddrm_exp.video.temporal import TemporalSettings

PACKAGE = Path(image.__file__).resolve().parents[1]
FAST = ["dataset.limit=1", "logger=none", "metrics.lpips=false", "sampler.timesteps=2"]


def test_the_task_entry_points_take_the_setup() -> None:
    for entry in (image.run_images, video_runner.run_video):
        first = next(iter(inspect.signature(entry).parameters.values()))
        assert first.annotation in ("Setup", Setup), entry.__name__


def test_no_module_below_setup_reads_the_config() -> None:
    below = [*sorted((PACKAGE / "run").glob("*.py")), *sorted((PACKAGE / "video").glob("*.py"))]
    readers = []
    for path in below:
        if path.name == "setup.py":
            continue
        tree = ast.parse(path.read_text())
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        names |= {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
        if names & {"cfg", "DictConfig"}:
            readers.append(path.name)
    assert readers == []


def test_setup_holds_what_the_entry_points_used_to_read(tmp_path: Path) -> None:
    ctx = RunContext(output_dir=tmp_path)
    s = setup(compose_cfg([*FAST, "threads=1"]), ctx)
    assert s.task == "image" and s.video is None and s.threads == 1
    assert "sampler:" in s.reporting.resolved_config()
    assert type(s.reporting.tracker(ctx)).__name__ == "NullTracker"
    write_mini_bsd(tmp_path / "bsd", sequences=1, frames=2, size=(40, 40))
    root = f"dataset.root={tmp_path / 'bsd'}"
    on_bsd = [*FAST, "task=video", "dataset=bsd_synthetic", root, "degradation=blur_given"]
    video = setup(compose_cfg([*on_bsd, "temporal=all", "video.fps=4"]), ctx)
    assert video.video is not None and video.video.fps == 4
    assert isinstance(video.video.temporal, TemporalSettings) and video.video.temporal.warm_start
    with pytest.raises(ConfigError, match="video.fps"):
        setup(compose_cfg([*on_bsd, "video.fps=0"]), ctx)
