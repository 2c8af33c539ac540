"""S-SAM's singular-value adaptation: W' = U diag(ReLU(a * s + b)) V^T, with a = 1, b = 0 at start.

Unlike the reference implementation:
- U, s, V^T are computed once (float32, autocast off) and kept as non-persistent buffers: they move with
  ``.to()``, are never saved (they follow from the frozen weight) and are never recomputed.
- Training never materialises W': y = ((x V) * s') U^T costs about 1.3x the frozen layer's forward and
  backward at any batch size, where rebuilding W' (one r x out x in product per layer per step) and then
  computing its full weight gradient costs about 2.2x at batch 4 and 256 px (measured on the project's 2-core CPU,
  ViT-B).
- Without gradients W' is built once and cached until a or b change; ``merged()`` folds it into a plain layer.
- Convolutions (the neck) are treated as out x (in * kh * kw) matrices.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from samunet.adapters.layers import encoder_linears, neck_convs, set_module


@contextmanager
def _single_cpu_thread(device: torch.device):
    """LAPACK's SVD synchronises its threads often: on a busy CPU (shared cores, other processes) two
    threads ran it 10-15x slower than one here. One thread is never much slower."""
    if device.type != "cpu":
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def svd_factors(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD in float32 whatever the ambient autocast; wide matrices are factored transposed (faster)."""
    with torch.autocast(matrix.device.type, enabled=False), _single_cpu_thread(matrix.device):
        m = matrix.detach().float()
        if m.shape[0] < m.shape[1]:
            v, s, ut = torch.linalg.svd(m.t(), full_matrices=False)
            return ut.t().contiguous(), s, v.t().contiguous()
        u, s, vh = torch.linalg.svd(m, full_matrices=False)
        return u, s, vh


def _cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.to(dtype)


class _SingularValueAdapted(nn.Module):
    """Holds U (out, r), s (r), V^T (r, in*k) and the trained scale a / shift b (length r)."""

    def __init__(self, weight_matrix: torch.Tensor, factors=None) -> None:
        super().__init__()
        if factors is not None and (factors[0].shape[0], factors[2].shape[1]) != tuple(weight_matrix.shape):
            factors = None  # cached factors of another layout: recompute
        u, s, vh = factors if factors is not None else svd_factors(weight_matrix)
        self.register_buffer("u", u, persistent=False)
        self.register_buffer("s", s, persistent=False)
        self.register_buffer("vh", vh, persistent=False)
        self.scale = nn.Parameter(torch.ones_like(s))
        self.shift = nn.Parameter(torch.zeros_like(s))
        self._cache_key = None
        self._cached_matrix = None

    def singular_values(self) -> torch.Tensor:
        return F.relu(self.scale * self.s + self.shift)

    def _train_path(self) -> bool:
        return torch.is_grad_enabled() and (self.scale.requires_grad or self.shift.requires_grad)

    def adapted_matrix(self) -> torch.Tensor:
        """W' (out, in*k) in float32; cached while a, b and the factors are unchanged (eval / no-grad)."""
        key = tuple((t.data_ptr(), t._version) for t in (self.scale, self.shift, self.u, self.vh))
        if self._cache_key != key or self._cached_matrix is None:
            with torch.no_grad(), torch.autocast(self.u.device.type, enabled=False):
                self._cached_matrix = (self.u * self.singular_values()) @ self.vh  # scale U's columns, no diag
            self._cache_key = key
        return self._cached_matrix

    def train(self, mode: bool = True):
        if mode:  # free the cached W' while training (it would be stale and costs a weight's memory)
            self._cached_matrix, self._cache_key = None, None
        return super().train(mode)


class SVDLinear(_SingularValueAdapted):
    def __init__(self, base: nn.Linear, factors=None) -> None:
        super().__init__(base.weight, factors)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.bias = None if base.bias is None else nn.Parameter(base.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._train_path():
            # (under autocast the casts below are the ones autocast would make anyway)
            z = F.linear(x, self.vh.to(x.dtype))
            z = z * self.singular_values().to(z.dtype)
            return F.linear(z, self.u.to(z.dtype), _cast(self.bias, z.dtype))
        return F.linear(x, self.adapted_matrix().to(x.dtype), _cast(self.bias, x.dtype))

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device=self.u.device)
        out.weight.copy_(self.adapted_matrix())
        if self.bias is not None:
            out.bias.copy_(self.bias)
        return out.requires_grad_(False)


class SVDConv2d(_SingularValueAdapted):
    """A conv as an out x (in * kh * kw) matrix; training runs conv(V) -> scale -> 1x1 conv(U)."""

    def __init__(self, base: nn.Conv2d, factors=None) -> None:
        if base.groups != 1:
            raise ValueError("SVDConv2d supports ungrouped convolutions only")
        super().__init__(base.weight.reshape(base.out_channels, -1), factors)
        self.in_channels, self.out_channels = base.in_channels, base.out_channels
        self.kernel_size, self.stride, self.padding, self.dilation = (
            base.kernel_size, base.stride, base.padding, base.dilation)
        self.bias = None if base.bias is None else nn.Parameter(base.bias.detach().clone(), requires_grad=False)

    def _conv(self, x, weight, bias=None, one_by_one=False):
        if one_by_one:
            return F.conv2d(x, weight, bias)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._train_path():
            rank = self.s.shape[0]
            vh = self.vh.view(rank, self.in_channels, *self.kernel_size)
            z = self._conv(x, vh.to(x.dtype))
            z = z * self.singular_values().to(z.dtype).view(1, -1, 1, 1)
            u = self.u.view(self.out_channels, rank, 1, 1)
            return self._conv(z, u.to(z.dtype), _cast(self.bias, z.dtype), one_by_one=True)
        weight = self.adapted_matrix().view(self.out_channels, self.in_channels, *self.kernel_size)
        return self._conv(x, weight.to(x.dtype), _cast(self.bias, x.dtype))

    @torch.no_grad()
    def merged(self) -> nn.Conv2d:
        out = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                        self.dilation, bias=self.bias is not None, device=self.u.device)
        out.weight.copy_(self.adapted_matrix().view_as(out.weight))
        if self.bias is not None:
            out.bias.copy_(self.bias)
        return out.requires_grad_(False)


def apply_svd_adaptation(encoder: nn.Module, factor_cache=None) -> list[str]:
    """Replace every encoder nn.Linear and neck conv by its singular-value-adapted version.

    ``factor_cache``: optional mapping name -> (U, s, V^T) (see ``svd_cache``) to skip the SVDs."""
    names = []
    for name, linear in encoder_linears(encoder):
        set_module(encoder, name, SVDLinear(linear, factor_cache.get(name) if factor_cache else None))
        names.append(name)
    for name, conv in neck_convs(encoder):
        set_module(encoder, name, SVDConv2d(conv, factor_cache.get(name) if factor_cache else None))
        names.append(name)
    return names


def svd_layers(root: nn.Module) -> list[tuple[str, _SingularValueAdapted]]:
    return [(n, m) for n, m in root.named_modules() if isinstance(m, _SingularValueAdapted)]


def merge_svd(root: nn.Module) -> int:
    layers = svd_layers(root)
    for name, module in layers:
        set_module(root, name, module.merged())
    return len(layers)
