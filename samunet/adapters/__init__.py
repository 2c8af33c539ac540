"""Parameter-efficient ways to adapt SAM: ssam, samed, loramednet, cnnhead, decoder, full.

``build_adapter(name, plans)`` gives an ``Adapter`` (see ``base.py`` and documentation/adapters.md)."""
from samunet.adapters.base import Adapter
from samunet.adapters.registry import ADAPTER_CLASSES, build_adapter, build_adapter_from_parts

from samunet.core.names import ADAPTER_NAMES

__all__ = ["ADAPTER_CLASSES", "ADAPTER_NAMES", "Adapter", "build_adapter", "build_adapter_from_parts"]
