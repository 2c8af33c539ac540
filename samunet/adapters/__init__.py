"""Parameter-efficient ways to adapt SAM: ssam, samed, loramednet, cnnhead, decoder, full.

``build_adapter(name, plans)`` gives an ``Adapter`` (see ``base.py`` and documentation/adapters.md).
Exports resolve lazily, so that ``samunet_adapters --help`` does not import torch.
"""
from importlib import import_module

from samunet.core.names import ADAPTER_NAMES

_EXPORTS = {
    "Adapter": "samunet.adapters.base",
    "ADAPTER_CLASSES": "samunet.adapters.registry",
    "build_adapter": "samunet.adapters.registry",
    "build_adapter_from_parts": "samunet.adapters.registry",
}
__all__ = sorted([*_EXPORTS, "ADAPTER_NAMES"])


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'samunet.adapters' has no attribute '{name}'")
