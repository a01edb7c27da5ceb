"""Scanner effects for contrast augmentation: noise, coil bias, lost resolution.

Noise, bias and blur belong to the synthesized contrasts, not to the quantitative maps: the training
code synthesizes a weighted image from a slice's maps (one physics layer) and then applies
:func:`scanner_effects`.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..errors import InputError

__all__ = ["scanner_effects"]


def scanner_effects(image: torch.Tensor, rng: Optional[torch.Generator] = None, snr: Optional[float] = 30.0,
                    bias: float = 0.2, bias_grid: int = 4, resolution_loss: float = 1.0, spatial_dims: int = 2,
                    sigma: Optional[float] = None) -> torch.Tensor:
    """A synthesized magnitude image as a scanner would give it: blur, coil bias, Rician noise. Pure torch.

    ``image``: ``[..., H, W]`` (or ``[..., D, H, W]`` with ``spatial_dims=3``); every
    leading index gets its own bias field and noise. ``resolution_loss`` (>= 1)
    averages over that many pixels and interpolates back (a lower acquired
    resolution). ``bias``: standard deviation of the log of a smooth multiplicative
    field (a ``bias_grid``-point random grid, interpolated). ``snr``: mean foreground
    signal over the noise sigma of each complex channel, so the magnitude is
    Rician; ``None`` skips noise. ``sigma`` instead sets that noise level in absolute
    units (signal of PD 1, fully relaxed = 1), so a contrast that loses signal loses SNR
    with it, as on a scanner. Differentiable in ``image`` (noise is additive,
    the magnitude is kept away from the non-differentiable zero).
    """
    if spatial_dims not in (2, 3) or image.dim() < spatial_dims:
        raise InputError("scanner_effects needs spatial_dims 2 or 3 and an image with at least that many dimensions")
    size = image.shape[-spatial_dims:]
    batch = image.reshape(-1, 1, *size)
    mode = "bilinear" if spatial_dims == 2 else "trilinear"
    if resolution_loss > 1:
        low = [max(1, int(round(n / resolution_loss))) for n in size]
        batch = F.interpolate(F.interpolate(batch, size=low, mode="area"), size=size, mode=mode, align_corners=False)
    if bias > 0:
        knots = torch.randn((batch.shape[0], 1) + (bias_grid,) * spatial_dims, generator=rng, dtype=batch.dtype)
        field = F.interpolate(knots.to(batch.device), size=size, mode=mode, align_corners=True)
        batch = batch * torch.exp(bias * field)
    if sigma is not None or (snr is not None and snr > 0):
        if sigma is None:
            foreground = batch.detach() > 0
            counts = foreground.flatten(1).sum(dim=1).clamp(min=1)
            mean = (batch.detach() * foreground).flatten(1).sum(dim=1) / counts
            sigma = (mean / snr).view(-1, *([1] * (spatial_dims + 1)))
        noise = torch.randn((2,) + batch.shape, generator=rng, dtype=batch.dtype).to(batch.device)
        batch = torch.sqrt((batch + sigma * noise[0]) ** 2 + (sigma * noise[1]) ** 2 + 1e-12)
    return batch.reshape(image.shape)
