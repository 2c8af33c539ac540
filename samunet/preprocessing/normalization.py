"""Per-channel intensity normalisation, as the plans say (``plans.normalization``).

- ``ct``: clip to the dataset's foreground 0.5/99.5 percentiles, then z-score with the dataset's foreground
  mean and std (one global transform, so Hounsfield units keep their meaning across cases).
- ``zscore``: per-image mean and std; inside the nonzero mask (and 0 outside) when ``use_nonzero_mask``.
- ``rgb``: 0-255 -> 0-1.
- ``none``: unchanged.
"""
from __future__ import annotations

import numpy as np

from samunet.core.errors import SamunetUserError
from samunet.core.plans import ChannelNormalization

SCHEMES = ("ct", "zscore", "rgb", "none")
_EPS = 1e-8


class NormalizationError(SamunetUserError, ValueError):
    pass


def normalize_channel(channel: np.ndarray, scheme: ChannelNormalization,
                      nonzero_mask: np.ndarray | None = None) -> tuple[np.ndarray, float, float]:
    """Returns (normalised float32 array, mean used, std used); mean 0 / std 1 when nothing was subtracted."""
    x = channel.astype(np.float32, copy=True)
    if scheme.scheme == "ct":
        if None in (scheme.clip_low, scheme.clip_high, scheme.mean, scheme.std):
            raise NormalizationError(f"channel {scheme.channel} ({scheme.name}): scheme 'ct' needs clip_low, "
                                     "clip_high, mean and std in the plans")
        np.clip(x, scheme.clip_low, scheme.clip_high, out=x)
        mean, std = float(scheme.mean), float(scheme.std)
        x -= mean
        x /= max(std, _EPS)
        return x, mean, std
    if scheme.scheme == "zscore":
        use_mask = scheme.use_nonzero_mask and nonzero_mask is not None and nonzero_mask.any()
        values = x[nonzero_mask] if use_mask else x
        mean, std = float(values.mean()), float(values.std())
        x -= mean
        x /= max(std, _EPS)
        if use_mask:
            x[~nonzero_mask] = 0.0
        return x, mean, std
    if scheme.scheme == "rgb":
        x /= 255.0
        np.clip(x, 0.0, 1.0, out=x)
        return x, 0.0, 255.0
    if scheme.scheme == "none":
        return x, 0.0, 1.0
    raise NormalizationError(f"channel {scheme.channel} ({scheme.name}): unknown normalisation scheme "
                             f"'{scheme.scheme}' (known: {', '.join(SCHEMES)})")


def normalize_image(image: np.ndarray, schemes: list[ChannelNormalization],
                    nonzero_mask: np.ndarray | None = None) -> tuple[np.ndarray, list[float], list[float]]:
    """Normalise every channel of ``image`` (C, ...) with the scheme whose ``channel`` names it; returns the image
    and the per-channel mean/std used."""
    channels = sorted(int(s.channel) for s in schemes)
    if channels != list(range(image.shape[0])):
        raise NormalizationError(f"the plans normalise channel(s) {channels} but the image has {image.shape[0]} "
                                 f"channel(s) (0-{image.shape[0] - 1})")
    out = np.empty(image.shape, dtype=np.float32)
    means, stds = [0.0] * len(schemes), [1.0] * len(schemes)
    for scheme in schemes:
        c = int(scheme.channel)
        out[c], means[c], stds[c] = normalize_channel(image[c], scheme, nonzero_mask)
    return out, means, stds
