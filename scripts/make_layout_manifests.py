"""Write the state-dict layout manifests under ``tests/data/manifests/`` from the reference code.

Why: the published checkpoints (hundreds of MB each) cannot ship with the tests, but their
layout — every parameter name and shape — is what ``load_state_dict(strict=True)`` checks. This
script records that layout by building the *reference* architectures on PyTorch's ``meta`` device
(no memory, no weights, no download) and dumping ``{name: shape}``; the tests then compare the
project's own networks against those files.

The reference code is not part of this project. Pass the path of a scratch checkout of DDRM
(https://github.com/bahjat-kawar/ddrm; it needs ``models/diffusion.py``, ``guided_diffusion/`` and
``configs/``), e.g.::

    mkdir -p /tmp/ref && git -C <ddrm clone> archive HEAD models guided_diffusion configs \
        | tar -x -C /tmp/ref
    python scripts/make_layout_manifests.py /tmp/ref --revision <commit>

Only torch, numpy and pyyaml are needed. Manifests written:

* ``ddpm_lsun_bedroom.json`` — ``models.diffusion.Model`` with ``configs/bedroom.yml`` (the
  CelebA-HQ, church and cat checkpoints share this layout);
* ``ddpm_cifar10.json`` — the same class with the CIFAR-10 model of the DDIM paper (ch 128,
  ch_mult 1,2,2,2, two res blocks, attention at 16, dropout 0.1, 32x32), which DDRM has no
  config file for;
* ``adm_imagenet256_uncond.json`` — ``guided_diffusion.script_util.create_model`` with the
  ``model:`` section of ``configs/imagenet_256.yml`` (``256x256_diffusion_uncond.pt``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import yaml

MANIFEST_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "manifests"

CIFAR10_MODEL = {
    "type": "simple",
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 2, 2, 2],
    "num_res_blocks": 2,
    "attn_resolutions": [16],
    "dropout": 0.1,
    "resamp_with_conv": True,
}


def _namespace(obj: Any) -> Any:
    """Turn nested dicts into attribute namespaces, the config form the reference reads."""
    if isinstance(obj, dict):
        return SimpleNamespace(**{k: _namespace(v) for k, v in obj.items()})
    return obj


def _layout(model: torch.nn.Module) -> dict[str, list[int]]:
    return {name: list(t.shape) for name, t in model.state_dict().items()}


def _ddpm_layout(reference: Path, model_section: dict[str, Any], resolution: int) -> dict:
    diffusion = importlib.import_module("models.diffusion")
    config = _namespace(
        {
            "model": model_section,
            "data": {"image_size": resolution},
            "diffusion": {"num_diffusion_timesteps": 1000},
        }
    )
    with torch.device("meta"):
        return _layout(diffusion.Model(config))


def _adm_layout(model_section: dict[str, Any]) -> dict:
    script_util = importlib.import_module("guided_diffusion.script_util")
    with torch.device("meta"):
        return _layout(script_util.create_model(**model_section))


def _write(name: str, source: str, keys: dict[str, list[int]], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    # One tensor per line, so that a layout change reads well in a diff.
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in keys.items()]
    body = ",\n".join(lines)
    path.write_text(f'{{\n "source": {json.dumps(source)},\n "keys": {{\n{body}\n }}\n}}\n')
    print(f"{path}: {len(keys)} tensors")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path, help="scratch checkout of bahjat-kawar/ddrm")
    parser.add_argument("--revision", default="HEAD", help="commit of that checkout, recorded")
    parser.add_argument("--out", type=Path, default=MANIFEST_DIR)
    args = parser.parse_args(argv)

    reference = args.reference.resolve()
    sys.path.insert(0, str(reference))
    origin = f"bahjat-kawar/ddrm@{args.revision}"

    bedroom = yaml.safe_load((reference / "configs" / "bedroom.yml").read_text())
    _write(
        "ddpm_lsun_bedroom",
        f"{origin} models/diffusion.py Model, configs/bedroom.yml (also CelebA-HQ, church, cat)",
        _ddpm_layout(reference, bedroom["model"], bedroom["data"]["image_size"]),
        args.out,
    )
    _write(
        "ddpm_cifar10",
        f"{origin} models/diffusion.py Model, DDIM CIFAR-10 model: {json.dumps(CIFAR10_MODEL)}",
        _ddpm_layout(reference, CIFAR10_MODEL, 32),
        args.out,
    )
    imagenet = yaml.safe_load((reference / "configs" / "imagenet_256.yml").read_text())
    _write(
        "adm_imagenet256_uncond",
        f"{origin} guided_diffusion/script_util.py create_model, configs/imagenet_256.yml "
        "(256x256_diffusion_uncond.pt)",
        _adm_layout(imagenet["model"]),
        args.out,
    )


if __name__ == "__main__":
    main()
