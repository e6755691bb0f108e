"""Speed options for the ε-network only: precision, memory format and ``torch.compile``.

The sampler's spectral arithmetic (SVD transforms, the three cases of eq. (9)) always stays in
float32: reduced precision there would corrupt the measurement-consistent part of the update,
which is where DDRM's fidelity to ``y`` comes from. Only the network, which dominates the cost,
runs under autocast, and its output is cast back to float32.

``precision``:

* ``fp32``: true float32 (TF32 switched off for matmuls *and* cuDNN convolutions; PyTorch
  enables TF32 for convolutions by default, which would make "fp32" silently lossy on Ampere+);
* ``tf32``: float32 storage, TF32 tensor-core maths for matmuls and convolutions (CUDA only;
  on the CPU it is the same as fp32);
* ``bf16`` / ``fp16``: autocast of the network's forward pass.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ddrm_exp.errors import ConfigError
from ddrm_exp.models.base import DiffusionPrior

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Acceleration:
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision={self.precision!r} is not one of {', '.join(PRECISIONS)}."
            )

    @property
    def is_default(self) -> bool:
        return self == Acceleration()


def check_supported(acc: Acceleration, device: torch.device) -> None:
    """Fail before any work when the device cannot run the requested precision."""
    if acc.precision == "fp16" and device.type == "cpu":
        raise ConfigError(
            "precision=fp16 needs a CUDA device (CPU fp16 convolutions are slow and partly "
            "unsupported); use precision=bf16 on the CPU."
        )
    if acc.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"precision=bf16 is not supported by {torch.cuda.get_device_name(device)}."
        )


def set_matmul_precision(precision: str) -> None:
    """Process-wide TF32 switches (they are global in PyTorch, so set them for every run)."""
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


class AcceleratedNetwork(nn.Module):
    """Wraps an ε-network: inputs in the chosen memory format, forward under autocast.

    The wrapped module is kept as ``inner`` so its state dict keeps the checkpoint's key names
    under one prefix; random numbers are never drawn inside, so ``torch.compile`` sees a pure
    function of ``(x, t)``.
    """

    def __init__(self, network: nn.Module, acc: Acceleration) -> None:
        super().__init__()
        self.inner = network
        self.acc = acc
        if acc.channels_last:
            self.inner.to(memory_format=torch.channels_last)
        self._forward = torch.compile(self.inner, dynamic=False) if acc.compile else self.inner

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if self.acc.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = _AUTOCAST.get(self.acc.precision)
        ctx = (
            torch.autocast(x.device.type, dtype=dtype)
            if dtype is not None
            else contextlib.nullcontext()
        )
        with ctx:
            out = self._forward(x, t)
        return out.float().contiguous()


def accelerate(prior: DiffusionPrior, acc: Acceleration) -> DiffusionPrior:
    """The same prior with its network wrapped for ``acc`` (returned unchanged for defaults).

    Call after ``prior.to(device)``: the TF32 switches are set here for the whole process.
    """
    set_matmul_precision(acc.precision)
    check_supported(acc, prior.device)
    if acc.is_default:
        return prior
    return DiffusionPrior(
        AcceleratedNetwork(prior.network, acc),
        prior.schedule,
        prior.image_size,
        prior.channels,
        prior.name,
        prior.prediction,
    ).eval()
