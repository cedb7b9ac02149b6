"""Batched JPEG decoding on the GPU (`executors.gpu_decode`), falling back on the CPU.

Decoding is the ingress's main CPU cost; nvJPEG through `torchvision.io.decode_jpeg(device="cuda")`
decodes a whole batch on the GPU, and resizing + normalising there too means only the compressed
bytes cross PCIe. Every image first passes the same checks as the CPU path (`check_image`: type,
size, pixel limit from the header, end marker), so the GPU path refuses what the CPU path refuses.
PNGs, and everything when there is no CUDA, are decoded on the CPU with the strict decoder.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from stemcell.imaging import ImageError, ImageLimits, check_image, decode_for_model, decode_image
from stemcell.models import normalised, to_input

log = logging.getLogger(__name__)


class FrameDecoder:
    def __init__(self, device: torch.device | str, *, gpu: bool, limits: ImageLimits = ImageLimits()) -> None:
        self.device = torch.device(device)
        self.gpu = gpu and self.device.type == "cuda"
        if gpu and not self.gpu:
            log.warning("executors.gpu_decode needs CUDA (device %s): decoding on the CPU", self.device)
        self.limits = limits

    def _on_gpu(self, images: Sequence[bytes], content_type: str) -> bool:
        """Check every image as the CPU path does (before decoding any); True when the batch goes to nvJPEG."""
        fmt, _, _ = check_image(images[0], content_type, self.limits) if images else ("jpeg", 0, 0)
        for data in images[1:]:
            check_image(data, content_type, self.limits)
        return self.gpu and fmt == "jpeg"

    def _gpu_decode(self, images: Sequence[bytes]) -> list[torch.Tensor]:
        from torchvision.io import ImageReadMode, decode_jpeg

        raw = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in images]
        try:
            return list(decode_jpeg(raw, mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError as exc:  # nvJPEG's refusal of a corrupt stream
            raise ImageError("corrupt", f"JPEG image is corrupt: {str(exc)[:200]}") from exc

    def decode(self, images: Sequence[bytes], content_type: str = "image/jpeg") -> list[torch.Tensor]:
        """uint8 RGB (3,H,W) per image: on the GPU for JPEGs when enabled, else on the CPU."""
        if self._on_gpu(images, content_type):
            return self._gpu_decode(images)
        return [torch.from_numpy(decode_image(d, content_type, self.limits)).permute(2, 0, 1) for d in images]

    def to_input(
        self, images: Sequence[bytes], size: int, content_type: str = "image/jpeg", *,
        mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
    ) -> torch.Tensor:
        """The model input (N,3,size,size) of `images`, resized and normalised (the package's mean/std)
        where they were decoded: on the CPU exactly as the ingress does it (`decode_for_model`: the
        DCT-scaled decode and the one resize), on the GPU in float there."""
        if self._on_gpu(images, content_type):
            return torch.cat([normalised(img[None], size, mean=mean, std=std) for img in self._gpu_decode(images)])
        frames = np.stack([decode_for_model(d, content_type, size, self.limits) for d in images])
        return to_input(frames, size, mean=mean, std=std)
