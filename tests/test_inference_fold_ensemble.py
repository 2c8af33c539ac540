"""FoldEnsemble: mean probabilities of folds, with the frozen encoder shared when it is identical."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from samunet.adapters import build_adapter
from samunet.inference.fold_ensemble import FoldEnsemble, encoder_is_frozen, encoders_identical
from samunet.inference.volume_predictor import predict_preprocessed_volume

pytestmark = pytest.mark.usefixtures("single_torch_thread")



def _decoder_fold(plans, head_seed: int):
    adapter = build_adapter("decoder", plans)
    generator = torch.Generator().manual_seed(head_seed)
    with torch.no_grad():  # a "trained" decoder: differs from fold to fold
        for p in adapter.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    assert encoder_is_frozen(adapter)
    return adapter.merge()


def test_shared_encoder_gives_the_mean_of_the_folds(hippocampus_preprocessed):
    plans = hippocampus_preprocessed.plans
    case = hippocampus_preprocessed.case_ids[0]
    image = np.asarray(np.load(hippocampus_preprocessed.cache_folder / f"{case}_image.npy", mmap_mode="r")[:, :5])
    folds = [_decoder_fold(plans, 1), _decoder_fold(plans, 2)]
    assert encoders_identical(folds)
    alone = [predict_preprocessed_volume(f, image, plans, mirror=False) for f in folds]
    assert np.abs(alone[0] - alone[1]).max() > 1e-3
    calls = []
    folds[1].sam.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    ensemble = FoldEnsemble(folds, shared_encoder=True)
    together = predict_preprocessed_volume(ensemble, image, plans, mirror=False)
    np.testing.assert_allclose(together, (alone[0] + alone[1]) / 2, atol=1e-5)
    # after sharing, fold 1 uses fold 0's encoder module: fold 1's own encoder is never run
    assert ensemble.members[1].sam.image_encoder is ensemble.members[0].sam.image_encoder and not calls


def test_different_encoders_are_not_shared(hippocampus_preprocessed):
    plans = hippocampus_preprocessed.plans
    folds = [_decoder_fold(plans, 1), _decoder_fold(plans, 1)]
    assert encoders_identical(folds)
    with torch.no_grad():  # e.g. other base weights: one encoder tensor differs
        next(folds[1].sam.image_encoder.parameters()).add_(1e-3)
    assert not encoders_identical(folds)
