"""Adapter-only checkpoints: round trip, what is stored, refusals with clear messages."""
from __future__ import annotations

import json

import pytest
import torch

from samunet.adapters import build_adapter
from samunet.adapters.checkpoint import (AdapterCheckpointError, load_adapter_checkpoint, read_extra_tensors,
                                         save_adapter_checkpoint)
from samunet.modeling.checkpoints import CheckpointIntegrityError


def _trained(adapter, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.trainable_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return adapter


@pytest.mark.parametrize("name", ["ssam", "samed"])
def test_round_trip_restores_outputs_and_stores_only_trainable(name, tmp_path, tiny_plans, tiny_sam_checkpoint):
    plans = tiny_plans(num_classes=3, checkpoint=str(tiny_sam_checkpoint))
    trained = _trained(build_adapter(name, plans)).eval()
    path = save_adapter_checkpoint(trained, tmp_path / "checkpoint_best.safetensors", {"epoch": 7},
                                   extra_tensors={"optimizer.step": torch.tensor([3.0])})
    meta = json.loads((tmp_path / "checkpoint_best.json").read_text())
    assert meta["epoch"] == 7 and meta["adapter"] == name and meta["backbone"] == "tiny"
    assert meta["plans_sha256"] == plans.sha256() and meta["class_names"] == ["background", "label1", "label2"]
    assert meta["base_checkpoint_sha256"] == trained.sam.backbone_info.checkpoint_sha256
    assert meta["num_tensors"] == len(trained.trainable_state_dict()) + 1
    trainable_bytes = sum(p.numel() * 4 for p in trained.trainable_parameters())
    assert path.stat().st_size < trainable_bytes + 64 * 1024  # weights of the trainable part only
    fresh = build_adapter(name, plans).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(fresh(x), trained(x), atol=1e-4)
        returned = load_adapter_checkpoint(fresh, path)
        torch.testing.assert_close(fresh(x), trained(x))
    assert returned["epoch"] == 7
    assert torch.equal(read_extra_tensors(path)["optimizer.step"], torch.tensor([3.0]))
    loaded_again = build_adapter(name, plans, adapter_checkpoint=tmp_path / "checkpoint_best")
    with torch.no_grad():
        torch.testing.assert_close(loaded_again.eval()(x), trained(x))


def test_wrong_backbone_adapter_or_plans_are_refused(tmp_path, tiny_plans, tiny_sam_checkpoint):
    plans = tiny_plans(num_classes=3, checkpoint=str(tiny_sam_checkpoint))
    path = save_adapter_checkpoint(build_adapter("ssam", plans), tmp_path / "ckpt.safetensors")
    random_base = build_adapter("ssam", tiny_plans(num_classes=3), pretrained=False)
    assert random_base.identity["base_checkpoint_sha256"] is None  # random init: nothing to compare
    with pytest.raises(AdapterCheckpointError, match="adapter is 'ssam', expected 'samed'"):
        load_adapter_checkpoint(build_adapter("samed", plans), path)
    with pytest.raises(AdapterCheckpointError, match="plans_sha256"):
        load_adapter_checkpoint(build_adapter("ssam", tiny_plans(num_classes=3, checkpoint=str(tiny_sam_checkpoint),
                                                                 packing_mode="neighbours")), path)
    with pytest.raises(AdapterCheckpointError, match="num_classes"):
        load_adapter_checkpoint(build_adapter("ssam", tiny_plans(num_classes=4, checkpoint=str(tiny_sam_checkpoint))),
                                path)
    meta_path = tmp_path / "ckpt.json"
    meta = json.loads(meta_path.read_text())
    meta["backbone"] = "litemedsam"  # as if trained on another backbone
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(AdapterCheckpointError, match="backbone is 'litemedsam', expected 'tiny'"):
        load_adapter_checkpoint(build_adapter("ssam", plans), path)
    with pytest.raises(AdapterCheckpointError, match="fold is 0, expected 1"):
        meta["backbone"] = "tiny"
        meta["fold"] = 0
        meta_path.write_text(json.dumps(meta))
        load_adapter_checkpoint(build_adapter("ssam", plans), path, expected={"fold": 1})


def test_damaged_files_give_clear_errors(tmp_path, tiny_plans, tiny_sam_checkpoint):
    plans = tiny_plans(num_classes=3, checkpoint=str(tiny_sam_checkpoint))
    adapter = build_adapter("decoder", plans)
    path = save_adapter_checkpoint(adapter, tmp_path / "ckpt.safetensors")
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(AdapterCheckpointError, match="ckpt.safetensors: corrupted"):
        load_adapter_checkpoint(adapter, path)
    (tmp_path / "ckpt.json").write_text("{not json")
    with pytest.raises(AdapterCheckpointError, match="ckpt.json: damaged metadata"):
        load_adapter_checkpoint(adapter, path)
    (tmp_path / "ckpt.json").unlink()
    with pytest.raises(AdapterCheckpointError, match="metadata file missing"):
        load_adapter_checkpoint(adapter, path)
    with pytest.raises(CheckpointIntegrityError, match="adapter checkpoint, not base weights"):
        build_adapter("decoder", plans, checkpoint=path)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporaries
