"""``python -m ddrm_exp``: the Hydra entry point; ``torchrun ... -m ddrm_exp`` for several ranks."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from ddrm_exp import cli_help, distributed
from ddrm_exp.cli_check import check_output_dir, check_overrides
from ddrm_exp.errors import ConfigError
from ddrm_exp.paths import CONF_DIR

log = logging.getLogger("ddrm_exp")
# Before Hydra reads the help template, whose option lists come from the config files.
cli_help.register()


def _check_launcher(hc: DictConfig) -> None:
    """A job is one process (or one torchrun): several submitit tasks would each run all of it."""
    launcher = hc.get("launcher") or {}
    for key in ("tasks_per_node", "nodes"):
        value = launcher.get(key)
        if isinstance(value, int) and value > 1:
            raise ConfigError(
                f"hydra.launcher.{key}={value}: each task would compute the whole job. Keep "
                f"{key}=1 (one GPU per job), or run one job over several GPUs with torchrun "
                "(README, 'Scaling out')."
            )


def _context(cfg: DictConfig):  # noqa: ANN202 - returns runner.RunContext, imported lazily
    from ddrm_exp.runner import RunContext

    hc = HydraConfig.get()
    _check_launcher(hc)
    shard = distributed.current()
    output_dir = distributed.agree_output_dir(Path(hc.runtime.output_dir), shard)
    if hc.mode == RunMode.MULTIRUN:
        sweep = Path(hc.sweep.dir)
        group = f"{sweep.parent.name}_{sweep.name}"
        job_name = f"{group}/{hc.job.num}"
    else:
        group = None
        job_name = f"{output_dir.parent.name}_{output_dir.name}"
    choices = {k: str(v) for k, v in hc.runtime.choices.items() if not k.startswith("hydra")}
    return RunContext(
        output_dir=output_dir, job_name=job_name, group=group, choices=choices, shard=shard
    )


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        from ddrm_exp.run_header import apply_threads
        from ddrm_exp.runner import format_summary, run

        apply_threads(cfg)
        ctx = _context(cfg)
        summary = run(cfg, ctx)
    except ConfigError as exc:
        print(f"ddrm_exp: error: {exc}", file=sys.stderr)
        sys.exit(2)
    if ctx.shard.is_main:
        print(format_summary(summary))
        print(f"Outputs: {ctx.output_dir}")


if __name__ == "__main__":
    # Before Hydra, whose own message for a misspelt key is multi-line and exits 1, and which
    # creates the output directory before any of our code runs (a file there: a traceback).
    problem = check_overrides(sys.argv[1:]) or check_output_dir(sys.argv[1:])
    if problem is not None:
        print(f"ddrm_exp: error: {problem}", file=sys.stderr)
        sys.exit(2)
    # Before Hydra: the ranks of a torchrun must agree on the clock Hydra names directories by.
    distributed.init_from_env()
    try:
        main()
    finally:
        distributed.shutdown()
