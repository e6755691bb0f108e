"""What many test files need: a composed config, the CLI in a subprocess (one run, a sweep),
fast overrides, in-process jobs and config errors, a markdown table's row, and for sampler
tests a float64 operator from its config, a tiny ε-network prior, a seeded measurement and
the dense SVD (LAPACK's, not the operator's) that reference samplers work on.

Imported as ``from helpers import ...`` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor, nn

from ddrm_exp.degradations.base import HFunctions
from ddrm_exp.models.base import DiffusionPrior
from ddrm_exp.models.schedule import Schedule
from ddrm_exp.paths import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]

# Small, fast runs of the real pipeline: few steps, no LPIPS network, two images in one batch.
FAST_RUN = ["sampler.timesteps=4", "metrics.lpips=false", "dataset.limit=2", "batch_size=2"]
# The closed-form Gaussian prior at 32 px, no tracking: no weights to load, seconds per run.
GAUSSIAN_32 = ["logger=none", "model=gaussian", "model.image_size=32", "metrics.lpips=false"]


def compose_cfg(
    overrides: list[str], *, hydra: bool = False, conf_dir: Path = CONF_DIR
) -> DictConfig:
    """``conf/config.yaml`` (of ``conf_dir``) with ``overrides``, as the CLI composes it
    (``hydra=True`` keeps the ``hydra`` node: runtime choices, sweeper params, callbacks)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=hydra)


def cli_env(**extra: str) -> dict[str, str]:
    """The environment a CLI subprocess gets: no wandb or Hydra settings of the caller
    (HYDRA_FULL_ERROR would print tracebacks), one OpenMP thread (two processes' threads
    crawl on a 2-core box)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "WANDB_"))}
    env["OMP_NUM_THREADS"] = "1"
    env["WANDB_SILENT"] = "true"
    env.update(extra)
    return env


def run_cli(
    args: list[str],
    cwd: Path,
    *,
    module: str = "ddrm_exp",
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE ARGS`` in ``cwd``; the caller checks the return code."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env if env is not None else cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_cli_ok(
    args: list[str], cwd: Path, *, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """:func:`run_cli` that fails the test, with the end of stderr, unless it exits 0."""
    proc = run_cli(args, cwd, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def run_sweep(args: list[str], sweep: Path, cwd: Path, *, timeout: float = 300) -> list[Path]:
    """``python -m ddrm_exp -m ARGS hydra.sweep.dir=SWEEP``, which must succeed: its job
    directories, in job order."""
    run_cli_ok(["-m", *args, f"hydra.sweep.dir={sweep}"], cwd, timeout=timeout)
    jobs = (p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    return sorted(jobs, key=lambda p: int(p.name))


def run_script(
    script: str, args: list[str], *, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python scripts/SCRIPT ARGS``; the caller checks the return code."""
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A request handler for :func:`local_server` that keeps the test log clean."""

    def send_body(self, body: bytes, content_type: str | None = None) -> None:
        self.send_response(200)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@contextlib.contextmanager
def local_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 in a thread, for download code; yields its base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def spawn(cmd: list[str], cwd: Path, *, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``cmd`` started in its own process group (so a hang cannot leave workers behind), its
    stderr merged into stdout; collect it with :func:`reap`."""
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env if env is not None else cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def reap(proc: subprocess.Popen[str], timeout: float = 240) -> tuple[int, str]:
    """The return code and output of a :func:`spawn` process; fails the test (and kills the
    whole process group) when it runs past ``timeout``."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"timed out: {' '.join(map(str, proc.args))}\n{out[-3000:]}")
    return proc.returncode, out


def blind_bsd(root: Path, *extra: str) -> list[str]:
    """A blind run on the BSD-layout tree at ``root`` with the tiny model and the estimator for
    small real-blur frames (classical_valid, its no-harm rule), noise-free as written, 3 steps."""
    return [
        "logger=none",
        "model=tiny",
        "metrics.lpips=false",
        "dataset=bsd",
        f"dataset.root={root}",
        "degradation=blur_estimated",
        "kernel_estimator=classical_valid",
        "noise=none",
        "noise.assumed_sigma_y=0.02",
        "sampler.timesteps=3",
        *extra,
    ]


def run_job(overrides: list[str], out_dir: Path, *, conf_dir: Path = CONF_DIR) -> dict[str, Any]:
    """One job of ``python -m ddrm_exp OVERRIDES`` in-process, with the runtime choices Hydra
    would give it; returns the run's summary."""
    from ddrm_exp.runner import RunContext, run

    cfg = compose_cfg(overrides, hydra=True, conf_dir=conf_dir)
    choices = {k: str(v) for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra")}
    with open_dict(cfg):
        del cfg["hydra"]  # as the CLI's job config: the hydra node is Hydra's own
    return run(cfg, RunContext(output_dir=out_dir, choices=choices))


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread, as in CLI processes (:func:`cli_env`): an in-process run beside a
    CLI run then gives its results to the bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def config_error(overrides: list[str], out_dir: Path) -> str:
    """The one-paragraph error ``python -m ddrm_exp OVERRIDES`` would print before exiting 2,
    found in-process: the command-line check first, then the run's own (a ConfigError)."""
    from ddrm_exp.cli_check import check_overrides
    from ddrm_exp.errors import ConfigError

    problem = check_overrides(overrides)
    if problem is not None:
        return problem
    with pytest.raises(ConfigError) as info:
        run_job(overrides, out_dir)
    return str(info.value)


def table_row(markdown: str, header_start: str, row_start: str) -> dict[str, str]:
    """The cells of the markdown table row starting with ``row_start``, by the column names
    of the header line starting with ``header_start``."""
    lines = markdown.splitlines()
    header = next(line for line in lines if line.startswith(header_start))
    row = next(line for line in lines if line.startswith(row_start))
    cols = [c.strip() for c in header.strip("|").split("|")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cols) == len(cells), (header, row)
    return dict(zip(cols, cells, strict=True))


# ---- sampler tests: a real operator config and a tiny network, in float64 -------------------


def dense_h(op: HFunctions) -> Tensor:
    """The explicit m x n matrix of ``op`` (column j = H e_j), written by the operator itself."""
    return op.H(torch.eye(op.n, dtype=torch.float64)).T


def dense_svd(op: HFunctions) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``op``'s dense H (m x n) and the full SVD of it computed by LAPACK, not by ``op``:
    U (m x m), the singular values padded with zeros to n (those < 1e-9 set to zero) and Vᵀ
    (n x n), so reference samplers can work component by component on all n coordinates."""
    h = dense_h(op)
    u, s_m, vh = torch.linalg.svd(h, full_matrices=True)
    s = torch.zeros(op.n, dtype=torch.float64)
    s[: s_m.shape[0]] = torch.where(s_m < 1e-9, 0.0, s_m)
    return h, u, s, vh


@dataclass(frozen=True)
class Spectral:
    """A batch of measurements in the coordinates of ``op``'s dense SVD (:func:`dense_svd`):
    what the reference samplers, written coordinate by coordinate, start from."""

    vh: Tensor  # (n, n) Vᵀ
    s: Tensor  # (n,) singular values, zero-padded
    ut_y: Tensor  # (batch, n) Uᵀy, zero-padded
    sigma_0: float  # the noise level of y in [-1, 1] units: 2 σ_y

    @classmethod
    def of(cls, op: HFunctions, y: Tensor, sigma_y: float) -> Spectral:
        _, u, s, vh = dense_svd(op)
        ut_y = torch.zeros(y.shape[0], op.n, dtype=torch.float64)
        ut_y[:, : u.shape[0]] = y @ u
        return cls(vh=vh, s=s, ut_y=ut_y, sigma_0=2 * sigma_y)


def make_operator(name: str, shape: tuple[int, int, int] = (3, 8, 8)) -> HFunctions:
    """``conf/degradation/<name>.yaml``'s operator at ``shape``, in float64."""
    cfg = OmegaConf.load(CONF_DIR / "degradation" / f"{name}.yaml")
    return instantiate(cfg, shape=shape, dtype=torch.float64)


def measurement(
    op: HFunctions,
    sigma_y: float,
    *,
    batch: int = 2,
    shape: tuple[int, int, int] = (3, 8, 8),
    seed: int = 1,
) -> tuple[Tensor, Tensor]:
    """Seeded float64 images ``x`` in [-1, 1] and ``y = Hx + 2 σ_y z`` (the noise seeded by
    ``seed + 1``): the same problem every time a test asks for it."""
    x = (
        2
        * torch.rand(
            (batch, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64
        )
        - 1
    )
    y = op.H(x.flatten(1))
    noise = torch.randn(
        y.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64
    )
    return x, y + 2 * sigma_y * noise


class TinyEps(nn.Module):
    """A small nonlinear, time-dependent ε-network (its Jacobian is neither symmetric nor
    constant), so sampler tests exercise a real network path."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=True).double()
        with torch.no_grad():
            self.conv.weight.copy_(0.2 * torch.randn(self.conv.weight.shape, generator=g))
            self.conv.bias.copy_(0.1 * torch.randn(self.conv.bias.shape, generator=g))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        scale = (1.0 + t.double() / 1000.0).view(-1, 1, 1, 1)
        return torch.tanh(self.conv(x) * scale)


def tiny_eps_prior(shape: tuple[int, int, int] = (3, 8, 8)) -> DiffusionPrior:
    """:class:`TinyEps` as a float64 prior of ``shape`` (not the bundled model: conftest's
    ``tiny_prior`` fixture)."""
    return DiffusionPrior(TinyEps(shape[0]), Schedule.linear(), shape[1:], shape[0], "tiny")
