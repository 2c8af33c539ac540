"""SAM-family backbones at any input size: building, base weights, position tables, batched decoding.

Exports resolve lazily so that ``samunet.modeling.checkpoints`` (used by the planner) does not pay for
importing segment_anything / timm.
"""
from importlib import import_module

_EXPORTS = {
    "batched_predict_masks": "samunet.modeling.batched_decoder",
    "BackboneInfo": "samunet.modeling.build",
    "build_sam": "samunet.modeling.build",
    "build_sam_architecture": "samunet.modeling.build",
    "CheckpointIntegrityError": "samunet.modeling.checkpoints",
    "CheckpointNotFoundError": "samunet.modeling.checkpoints",
    "backbone_weights_present": "samunet.modeling.checkpoints",
    "default_checkpoint_path": "samunet.modeling.checkpoints",
    "InputNormalizer": "samunet.modeling.input_normalizer",
    "input_normalization": "samunet.modeling.specs",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'samunet.modeling' has no attribute '{name}'")
