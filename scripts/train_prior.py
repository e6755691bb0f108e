"""Train a small DDPM prior on the photo corpus' train split, or the scikit-image photos.

    python scripts/train_prior.py data.corpus=data/corpus  # scripts/build_corpus.py's train split
    python scripts/train_prior.py                          # model=tiny, resumes if state exists
    python scripts/train_prior.py train.steps=40000 train.batch_size=32 device=cuda
    python scripts/train_prior.py export=ddrm_exp/assets/tiny.safetensors   # write EMA weights

The run directory (``out_dir``) holds ``state.pt`` (model, EMA, optimiser, step, RNG state),
written atomically every ``train.ckpt_every`` steps, so a killed run continues where it stopped
with the same command, and ``loss.jsonl`` (one line per ``train.log_every`` steps).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from safetensors.torch import save_file
from torch import Tensor
from tqdm import tqdm

from ddrm_exp.config import resolve_device
from ddrm_exp.datasets import load_sample_photos
from ddrm_exp.errors import ConfigError
from ddrm_exp.models.acceleration import set_matmul_precision
from ddrm_exp.models.ddpm_unet import DDPMUNet, ddpm_unet
from ddrm_exp.models.schedule import Schedule
from ddrm_exp.paths import CONF_DIR

log = logging.getLogger("train_prior")


class CropSampler:
    """Random square crops of the training photos at random scales, resized to ``size``.

    The scale is drawn log-uniformly between a crop of ``min_frac`` of the photo's short side and
    the whole short side, so the model sees both whole photos shrunk to ``size`` (what the
    evaluation images look like) and close-ups (more texture per step). A ``gray_fraction`` of
    the crops comes from the greyscale photos, and a colour crop is desaturated by a random
    factor with probability ``desaturate_prob``: the colour photos alone are strongly coloured,
    and a prior that has never seen a muted image invents saturated colours when colourising.
    With probability ``hue_rotate_prob`` a colour crop's chroma is rotated about the grey axis
    by a uniform random angle: the luminance (the mean of the channels, which is exactly what
    colourisation measures) is unchanged, and the few training photos' dominant hues (the
    orange retina, the brown-blue stain) stop being the only colours the prior knows.
    """

    def __init__(
        self,
        photos: list[np.ndarray],
        size: int,
        min_frac: float,
        seed: int,
        gray_photos: list[np.ndarray] | None = None,
        gray_fraction: float = 0.0,
        desaturate_prob: float = 0.0,
        device: torch.device | str = "cpu",
        hue_rotate_prob: float = 0.0,
    ) -> None:
        # The photos live on the training device so that cropping and resizing run there too
        # (on a GPU the CPU-side resizing would otherwise be the bottleneck). The random draws
        # stay on the host, so the crops are the same on every device.
        def tensors(arrays: list[np.ndarray]) -> list[torch.Tensor]:
            return [torch.from_numpy(np.array(p)).permute(2, 0, 1).to(device) for p in arrays]

        def weights(ts: list[torch.Tensor]) -> np.ndarray:
            w = np.sqrt([t.shape[1] * t.shape[2] for t in ts])  # larger photos hold more crops
            return w / w.sum()

        self.photos = tensors(photos)
        self.gray = tensors(gray_photos or [])
        self.weights = weights(self.photos)
        self.gray_weights = weights(self.gray) if self.gray else None
        self.gray_fraction = gray_fraction if self.gray else 0.0
        self.desaturate_prob = desaturate_prob
        self.hue_rotate_prob = hue_rotate_prob
        self.size = size
        self.min_frac = min_frac
        self.rng = np.random.default_rng(seed)

    def state(self) -> dict[str, Any]:
        return self.rng.bit_generator.state

    def load_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state

    def batch(self, n: int) -> torch.Tensor:
        out = []
        for _ in range(n):
            gray = self.rng.random() < self.gray_fraction
            pool, w = (self.gray, self.gray_weights) if gray else (self.photos, self.weights)
            photo = pool[self.rng.choice(len(pool), p=w)]
            _, h, w_ = photo.shape
            short = min(h, w_)
            lo = max(self.size, int(self.min_frac * short))
            side = int(round(math.exp(self.rng.uniform(math.log(lo), math.log(short)))))
            top = int(self.rng.integers(0, h - side + 1))
            left = int(self.rng.integers(0, w_ - side + 1))
            crop = photo[:, top : top + side, left : left + side].float().unsqueeze(0) / 255.0
            crop = F.interpolate(crop, size=(self.size, self.size), mode="bilinear", antialias=True)
            if self.rng.random() < 0.5:
                crop = crop.flip(-1)
            if not gray and self.rng.random() < self.desaturate_prob:
                luma = crop.mean(dim=1, keepdim=True)
                crop = luma + self.rng.uniform(0.0, 1.0) * (crop - luma)
            if not gray and self.hue_rotate_prob > 0 and self.rng.random() < self.hue_rotate_prob:
                crop = rotate_hue(crop, self.rng.uniform(0.0, 2 * math.pi))
            out.append(crop.clamp(0, 1) * 2 - 1)
        return torch.cat(out)


def corpus_photos(corpus: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The ``train`` pictures of a corpus built by ``scripts/build_corpus.py``: (colour, grey).

    Only the manifest's ``train`` split is read: its ``val`` and ``test`` pictures (and the
    test-only sources) never reach training.
    """
    manifest_path = corpus / "manifest.json"
    if not manifest_path.is_file():
        raise ConfigError(
            f"data.corpus={corpus} has no manifest.json; build it with "
            f"'python scripts/build_corpus.py --out {corpus}'."
        )
    manifest = json.loads(manifest_path.read_text())
    colour: list[np.ndarray] = []
    gray: list[np.ndarray] = []
    for entry in manifest["pictures"]:
        if entry["split"] != "train":
            continue
        with Image.open(corpus / entry["stored"]) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
        (gray if entry["gray"] else colour).append(arr)
    if not colour:
        raise ConfigError(f"The corpus {corpus} has no colour training pictures.")
    return colour, gray


def training_photos(data: DictConfig) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(colour, grey) training photos: a built corpus, or the scikit-image sample splits."""
    if data.get("corpus"):
        return corpus_photos(Path(str(data.corpus)))
    for key in ("split", "gray_split"):
        if data.get(key) in ("heldout", "all"):
            raise ConfigError(
                f"data.{key}={data.get(key)} would train on the held-out evaluation photos; "
                "use train (and train_gray)."
            )
    photos = [p for _, p in load_sample_photos(data.split)]
    gray_split = data.get("gray_split")
    gray = [p for _, p in load_sample_photos(gray_split)] if gray_split else []
    return photos, gray


def rotate_hue(images: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate RGB images (B, 3, H, W) about the grey axis (1, 1, 1) by ``angle`` radians.

    Rodrigues' formula about the unit grey axis: every pixel keeps its projection on that axis,
    so the channel mean (the luminance colourisation measures) is exactly preserved.
    """
    a = torch.full((3,), 1 / math.sqrt(3), dtype=images.dtype, device=images.device)
    cross = torch.tensor(
        [[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]],
        dtype=images.dtype,
        device=images.device,
    )
    eye = torch.eye(3, dtype=images.dtype, device=images.device)
    rot = (
        math.cos(angle) * eye + math.sin(angle) * cross + (1 - math.cos(angle)) * torch.outer(a, a)
    )
    return torch.einsum("ij,bjhw->bihw", rot, images)


def atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def export_ema(ema: DDPMUNet, path: Path, meta: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in ema.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def export_meta(cfg: DictConfig, step: int, elapsed: float, prediction: str) -> dict[str, str]:
    data = cfg.data
    source = (
        f"corpus {data.corpus} (train split)"
        if data.get("corpus")
        else f"scikit-image sample photos, split={data.split}"
    )
    return {
        "model": str(cfg.model.name),
        "steps": str(step),
        "train_seconds": f"{elapsed:.0f}",
        "data": source,
        "network": json.dumps(OmegaConf.to_container(cfg.model.network, resolve=True)),
        "prediction": prediction,
    }


def train(cfg: DictConfig) -> None:
    model_cfg = cfg.model
    if model_cfg.get("arch") != "ddpm":
        raise ConfigError(
            f"train_prior trains DDPM UNets (model.arch=ddpm), got {model_cfg.get('arch')!r}."
        )
    tc = cfg.train
    # The data first: a held-out split or a missing corpus fails before anything is written.
    photos, gray = training_photos(cfg.data)
    device = resolve_device(cfg.device)
    if tc.threads:
        torch.set_num_threads(int(tc.threads))
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out_dir / "train_config.yaml", resolve=True)

    st = TrainState.build(cfg, photos, gray, device)
    st.restore(cfg, out_dir)
    if tc.precision not in ("fp32", "bf16"):
        raise ConfigError(f"train.precision must be fp32 or bf16, got {tc.precision!r}.")
    prediction = str(model_cfg.get("prediction", "eps"))
    if prediction not in ("eps", "v"):
        raise ConfigError(f"model.prediction must be eps or v, got {prediction!r}.")
    # fp32 means fp32 on GPUs too (PyTorch lets cuDNN use TF32 by default): at the noisiest
    # steps x̂_0 divides the ε error by √ᾱ_t ≈ 0.01, so the ε-network must be accurate to
    # ~0.1 %, below bf16/TF32 rounding; bf16 is for fast early training only.
    set_matmul_precision("fp32")
    n_params = sum(p.numel() for p in st.net.parameters())
    log.info(
        "training %s: %.2fM parameters, %d steps, batch %d",
        model_cfg.name,
        n_params / 1e6,
        int(tc.steps),
        tc.batch_size,
    )
    train_loop(cfg, st, out_dir, prediction)
    st.save(out_dir / STATE_NAME)
    if cfg.export:
        export_ema(st.ema, Path(cfg.export), export_meta(cfg, st.step, st.elapsed, prediction))
        log.info("exported EMA weights to %s", cfg.export)


STATE_NAME = "state.pt"


class TrainState:
    """Everything a killed training resumes from exactly (``state.pt``).

    A plain class, not a dataclass: tests load this script by path, outside ``sys.modules``,
    where dataclasses cannot resolve string annotations."""

    def __init__(
        self,
        net: torch.nn.Module,
        ema: torch.nn.Module,
        opt: torch.optim.Optimizer,
        crops: CropSampler,
        gen: torch.Generator,
        device: torch.device,
    ) -> None:
        self.net, self.ema, self.opt, self.crops, self.gen = net, ema, opt, crops, gen
        self.device = device
        self.step = 0
        self.elapsed = 0.0

    @classmethod
    def build(cls, cfg: DictConfig, photos: Any, gray: Any, device: torch.device) -> TrainState:
        model_cfg, tc = cfg.model, cfg.train
        size = int(model_cfg.image_size)
        torch.manual_seed(int(tc.seed))
        net = ddpm_unet(size, **OmegaConf.to_container(model_cfg.network, resolve=True)).to(device)
        ema = ddpm_unet(size, **OmegaConf.to_container(model_cfg.network, resolve=True)).to(device)
        ema.load_state_dict(net.state_dict())
        ema.requires_grad_(False)
        opt = torch.optim.AdamW(net.parameters(), lr=float(tc.lr), weight_decay=0.0)
        crops = CropSampler(
            photos,
            size,
            float(cfg.data.min_crop_frac),
            int(tc.seed),
            gray_photos=gray,
            gray_fraction=float(cfg.data.get("gray_fraction", 0.0)),
            desaturate_prob=float(cfg.data.get("desaturate_prob", 0.0)),
            device=device,
            hue_rotate_prob=float(cfg.data.get("hue_rotate_prob", 0.0)),
        )
        gen = torch.Generator(device="cpu").manual_seed(int(tc.seed) + 1)
        return cls(net, ema, opt, crops, gen, device)

    def restore(self, cfg: DictConfig, out_dir: Path) -> None:
        """Resume from ``state.pt``, or start from exported weights (``init``) without one."""
        state_path = out_dir / STATE_NAME
        if not state_path.exists() and cfg.get("init"):
            # Continue from exported weights (e.g. the bundled ones) when the full training
            # state of an earlier session is gone: model and EMA start there, the optimiser
            # starts afresh.
            from ddrm_exp.models.checkpoints import load_state_dict

            weights = load_state_dict(Path(cfg.init))
            self.net.load_state_dict(weights)
            self.ema.load_state_dict(weights)
            self.step = int(cfg.get("init_step") or 0)
            log.info("initialised from %s, counting from step %d", cfg.init, self.step)
        if not state_path.exists():
            return
        # On the CPU first: the RNG states must stay CPU tensors; load_state_dict moves the rest.
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        self.net.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.step, self.elapsed = int(state["step"]), float(state["elapsed"])
        self.crops.load_state(state["crop_rng"])
        self.gen.set_state(state["gen"])
        log.info("resumed from %s at step %d", state_path, self.step)
        loss_path = out_dir / "loss.jsonl"
        if loss_path.exists():  # drop what was logged after the last checkpoint of a killed run
            kept = [
                line
                for line in loss_path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= self.step
            ]
            loss_path.write_text("".join(line + "\n" for line in kept))

    def save(self, path: Path) -> None:
        atomic_save(
            {
                "model": self.net.state_dict(),
                "ema": self.ema.state_dict(),
                "opt": self.opt.state_dict(),
                "step": self.step,
                "elapsed": self.elapsed,
                "crop_rng": self.crops.state(),
                "gen": self.gen.get_state(),
            },
            path,
        )

    def train_step(self, tc: DictConfig, abar: Tensor, prediction: str) -> tuple[float, float]:
        """One optimiser and EMA step; returns (loss, learning rate)."""
        device, gen = self.device, self.gen
        x0 = self.crops.batch(int(tc.batch_size)).to(device)
        t = torch.randint(0, abar.shape[0], (x0.shape[0],), generator=gen).to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        a = abar[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        lr = float(tc.lr) * min(1.0, (self.step + 1) / max(1, int(tc.warmup)))
        for group in self.opt.param_groups:
            group["lr"] = lr
        # bf16 autocast: ~1.6x faster steps on CPUs with AMX/AVX512-BF16 and on GPUs; the
        # weights, optimiser and loss stay float32.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=tc.precision == "bf16"):
            out = self.net(x_t, t.float())
        target = noise if prediction == "eps" else a.sqrt() * noise - (1 - a).sqrt() * x0
        loss = F.mse_loss(out.float(), target)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), float(tc.grad_clip))
        self.opt.step()
        with torch.no_grad():
            decay = min(float(tc.ema_decay), (1 + self.step) / (10 + self.step))
            torch._foreach_lerp_(
                list(self.ema.parameters()), list(self.net.parameters()), 1 - decay
            )
        self.step += 1
        return float(loss.detach()), lr


def train_loop(cfg: DictConfig, st: TrainState, out_dir: Path, prediction: str) -> None:
    """Steps until ``train.steps`` (or ``train.max_seconds``): loss log, snapshots, state."""
    tc = cfg.train
    total, max_seconds = int(tc.steps), tc.get("max_seconds")
    abar = Schedule.linear().alphas_cumprod.float().to(st.device)
    started = last_save = time.monotonic()
    bar = tqdm(
        total=total, initial=st.step, desc=f"train {cfg.model.name}", unit="step", file=sys.stderr
    )
    losses: list[float] = []
    with open(out_dir / "loss.jsonl", "a") as loss_log:
        while st.step < total:
            if max_seconds is not None and time.monotonic() - started > float(max_seconds):
                log.info("stopping at step %d: train.max_seconds=%s reached", st.step, max_seconds)
                break
            t0 = time.perf_counter()
            loss, lr = st.train_step(tc, abar, prediction)
            st.elapsed += time.perf_counter() - t0
            losses.append(loss)
            bar.update(1)
            step = st.step
            if step % int(tc.log_every) == 0 or step == total:
                mean = sum(losses) / len(losses)
                bar.set_postfix(loss=f"{mean:.4f}")
                row = {"step": step, "loss": mean, "lr": lr, "seconds": st.elapsed}
                loss_log.write(json.dumps(row) + "\n")
                loss_log.flush()
                losses.clear()
            snapshot_every = tc.get("snapshot_every")
            if snapshot_every and step % int(snapshot_every) == 0:
                # EMA snapshots to choose from on the validation split (scripts/prior_quality.py)
                path = out_dir / "snapshots" / f"ema_{step:06d}.safetensors"
                export_ema(st.ema, path, export_meta(cfg, step, st.elapsed, prediction))
            if (
                step % int(tc.ckpt_every) == 0
                or step == total
                or time.monotonic() - last_save > 600
            ):
                st.save(out_dir / STATE_NAME)
                last_save = time.monotonic()
    bar.close()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train_prior")
def main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except ConfigError as exc:
        print(f"train_prior: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
