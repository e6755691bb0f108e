"""scripts/train_prior.py: trains, resumes where it stopped, refuses held-out data, exports
weights that the model builder loads strictly."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import torch
from helpers import run_script

from ddrm_exp.models.pretrained import build_pretrained_prior

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "model.image_size=16",
    "model.network.ch=32",
    "model.network.ch_mult=[1,2]",
    "model.network.num_res_blocks=1",
    "train.batch_size=2",
    "train.log_every=1",
    "train.ckpt_every=1",
    "train.precision=fp32",
    "device=cpu",
]


def train(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_script("train_prior.py", [*SMALL, f"out_dir={out}", *extra])


def test_train_resume_and_export(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = train(out, "train.steps=2")
    assert first.returncode == 0, first.stderr[-2000:]
    export = tmp_path / "w.safetensors"
    second = train(out, "train.steps=3", f"export={export}")
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resumed from" in second.stderr + second.stdout
    steps = [json.loads(line)["step"] for line in (out / "loss.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["step"] == 3
    prior = build_pretrained_prior(
        name="tiny-test",
        arch="ddpm",
        image_size=16,
        network={"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": []},
        checkpoint=str(export),
    )
    eps = prior.eps(torch.zeros(1, 3, 16, 16), torch.tensor([10.0]))
    assert eps.shape == (1, 3, 16, 16) and torch.isfinite(eps).all()

    # a later session without state.pt continues from the exported weights
    again = train(tmp_path / "fresh", "train.steps=4", f"init={export}", "init_step=3")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "initialised from" in again.stderr + again.stdout
    fresh = [json.loads(line)["step"] for line in (tmp_path / "fresh" / "loss.jsonl").open()]
    assert fresh == [4]


def test_heldout_photos_are_refused(tmp_path: Path) -> None:
    proc = train(tmp_path / "run", "train.steps=1", "data.split=heldout")
    assert proc.returncode == 2
    assert "held-out" in proc.stderr and "Traceback" not in proc.stderr


def test_hue_rotation_keeps_luminance_and_inverts() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_prior", ROOT / "scripts/train_prior.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = module.rotate_hue(x, 2.0)
    # colourisation measures the channel mean: the augmentation must leave it unchanged
    torch.testing.assert_close(y.mean(1), x.mean(1), atol=1e-6, rtol=0)
    assert (y - x).abs().max() > 0.05
    torch.testing.assert_close(module.rotate_hue(y, -2.0), x, atol=1e-6, rtol=0)
    # a rotation: per-pixel colour vectors keep their length
    torch.testing.assert_close(y.norm(dim=1), x.norm(dim=1), atol=1e-6, rtol=0)
