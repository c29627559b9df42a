"""Device selection and mixed precision."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``/``"cpu"``/``"cuda"``/``"cuda:1"``/``"mps"`` into a :class:`torch.device`.

    ``"auto"`` picks CUDA when available, then Apple MPS, then CPU.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        msg = (
            f"device={device!r} is not a valid torch device; use 'auto', 'cpu', 'cuda' or 'cuda:N'."
        )
        raise ValueError(msg) from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        msg = f"device={device!r} was requested but CUDA is not available; use device='cpu' or 'auto'."
        raise ValueError(msg)
    return dev


@contextlib.contextmanager
def inference_autocast(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """Mixed precision for inference on GPU (bf16 where supported, else fp16); no-op on CPU."""
    if not enabled or device.type != "cuda":
        yield
        return
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    with torch.autocast(device_type="cuda", dtype=dtype):
        yield
