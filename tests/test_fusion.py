"""The fusion adapter: a U-Net at the patch's resolution fed with the cached frozen embedding."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from samunet.adapters.fusion_unet import FusionUNet
from samunet.adapters.registry import build_adapter_from_parts
from samunet.core.adapter_defaults import default_adapter_config
from samunet.modeling.build import build_sam
from samunet.planning.model_planner import fusion_stage, plan_fusion_unet
from samunet.preprocessing.grid_symmetry import apply_symmetry
from samunet.training.data_loader import BatchSpec, TrainingBatches
from samunet.training.embedding_cache import EmbeddingCache, head_inputs
from samunet.training.slice_dataset import CaseSlices
from tests.fixtures_models import make_tiny_plans

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def tiny_fusion(num_classes: int = 3):
    config = default_adapter_config("fusion", unet_widths=[8, 16, 32], fusion_stage=1)
    return build_adapter_from_parts("fusion", build_sam("tiny", 64, pretrained=False), num_classes, config, 64)


def test_logits_have_the_patch_resolution_and_read_the_image_there():
    adapter = tiny_fusion().eval()
    images = torch.rand(2, 3, 50, 38)  # sides that are not multiples of the U-Net's deepest stride
    with torch.no_grad():
        embeddings = adapter.encode(images)
        logits = adapter.forward_from_embeddings(embeddings, images)
        assert logits.shape == (2, 3, 50, 38) and logits.dtype == torch.float32
        torch.testing.assert_close(adapter(images), logits)
        # one pixel changed, the embedding kept: the logits change around that pixel, at full resolution
        changed = images.clone()
        changed[:, :, 20, 17] = 1.0 - changed[:, :, 20, 17]
        difference = (adapter.forward_from_embeddings(embeddings, changed) - logits).abs().amax(dim=(0, 1))
    # far away only InstanceNorm's statistics move
    assert difference[18:23, 15:20].max() > 5 * max(difference[:8].max(), difference[32:].max())


def test_deep_supervision_adds_coarser_logits_in_training_only():
    torch.manual_seed(0)
    net = FusionUNet(1, 4, 3, [4, 8, 16, 32, 32], 2, deep_supervision=True)
    assert net.supervised_strides == [1, 2, 4]  # the coarsest decoder stage (stride 8) has no classifier
    images, embeddings = torch.rand(2, 1, 50, 38), torch.rand(2, 4, 4, 4)
    outputs = net.train()(images, embeddings)
    assert [tuple(x.shape) for x in outputs] == [(2, 3, 50, 38), (2, 3, 25, 19), (2, 3, 13, 10)]
    with torch.no_grad():
        # InstanceNorm keeps no running statistics: the full-resolution logits are the same in both modes
        torch.testing.assert_close(net.eval()(images, embeddings), outputs[0].detach())
    plain = FusionUNet(1, 4, 3, [4, 8, 16, 32, 32], 2).train()
    assert isinstance(plain(images, embeddings), torch.Tensor) and plain.supervised_strides == [1]
    three = FusionUNet(1, 4, 3, [4, 8, 16], 1, deep_supervision=True).train()  # 3 stages: nothing to supervise
    assert three.supervised_strides == [1] and isinstance(three(images, embeddings), torch.Tensor)


def test_deep_supervision_loss_weighs_each_output_against_labels_on_its_grid():
    from samunet.training.losses import DeepSupervisionLoss, DiceCELoss

    torch.manual_seed(0)
    seg = torch.randint(0, 3, (2, 16, 12))
    fine, coarse = torch.randn(2, 3, 16, 12), torch.randn(2, 3, 8, 6)
    plain = DiceCELoss(0.5, 0.5)
    supervised = DeepSupervisionLoss(plain)
    expected = (plain(fine, seg) + 0.5 * plain(coarse, seg[:, ::2, ::2])) / 1.5
    torch.testing.assert_close(supervised([fine, coarse], seg), expected)
    torch.testing.assert_close(supervised(fine, seg), plain(fine, seg))  # evaluation: one tensor, the plain loss
    # the coarse output counts: a perfect coarse prediction lowers the loss
    perfect = torch.nn.functional.one_hot(seg[:, ::2, ::2], 3).permute(0, 3, 1, 2).float() * 20
    assert supervised([fine, perfect], seg) < supervised([fine, coarse], seg)


def test_the_embedding_joins_the_stage_whose_grid_matches_it():
    assert fusion_stage((64, 64), 16, 4) == 2  # LiteMedSAM at 64: a 16x16 grid, stride 4
    assert fusion_stage((512, 512), 64, 6) == 3  # SAM ViT-B at 1024: a 64x64 grid on a 512 patch
    assert fusion_stage((48, 40), 64, 4) == 0  # an embedding finer than the patch joins at full resolution
    assert fusion_stage((1024, 1024), 8, 4) == 3  # never past the deepest stage
    config = plan_fusion_unet(default_adapter_config("fusion"), [56, 40], "litemedsam", 64)
    assert config.unet_widths == [32, 64, 128, 256] and config.fusion_stage == 2  # 40 / 8 = 5 px at the bottom
    config = plan_fusion_unet(default_adapter_config("fusion"), [224, 224], "litemedsam", 224)
    assert config.unet_widths == [32, 64, 128, 256, 256, 256] and config.fusion_stage == 2
    assert "stage 2" in config.reason


def test_the_embedding_on_the_stage_grid_flips_with_its_image():
    """Projection (1x1, InstanceNorm) and bilinear resizing onto the stage grid commute with flips and transposes,
    so an embedding flipped with its image lands on the flipped image's stage grid."""
    torch.manual_seed(0)
    net = FusionUNet(1, 4, 2, [4, 8, 16], 1).eval()
    embeddings = torch.rand(1, 4, 5, 5)
    with torch.no_grad():
        plain = net._embedding_at(embeddings, (16, 16), (8, 8), 1)
        for code in (1, 2, 3, 4, 7):
            flipped = net._embedding_at(apply_symmetry(embeddings, code), (16, 16), (8, 8), 1)
            torch.testing.assert_close(flipped, apply_symmetry(plain, code), rtol=1e-5, atol=1e-6)


class IdentityEncoder(torch.nn.Module):
    """An encoder whose embedding is the image itself: any transform of the image must reach it unchanged."""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images.clone()


def _square_case(tmp_path, size: int = 32, slices: int = 4) -> CaseSlices:
    """Binary images whose label is the image: image, label and embedding can be checked against each other."""
    rng = np.random.default_rng(0)
    seg = np.zeros((slices, size, size), dtype=np.uint8)
    for s in range(slices):  # an off-centre, asymmetric shape, so that every flip moves it
        y, x = rng.integers(2, 10, size=2)
        seg[s, y:y + 12, x:x + 6] = 1
        seg[s, y:y + 3, x:x + 16] = 1
    image_path, seg_path = tmp_path / "case_image.npy", tmp_path / "case_seg.npy"
    np.save(image_path, seg[None].astype(np.float32))
    np.save(seg_path, seg)
    return CaseSlices("case", image_path, seg_path, slices, {1: np.arange(slices)}, 0, (size, size))


def _fusion_batches(tmp_path, variants: int, intensity: bool, seed: int = 0) -> TrainingBatches:
    plans = copy.deepcopy(make_tiny_plans(input_size=32, num_classes=2, num_channels=1))
    aug = plans.augmentation
    aug.cached_augmentation, aug.cached_variants, aug.mirror_axes = "grid", variants, [0, 1]
    if not intensity:
        aug.noise_std = aug.brightness = aug.contrast = 0.0
        aug.gamma_range = [1.0, 1.0]
    return TrainingBatches(BatchSpec([_square_case(tmp_path)], plans, 8, seed=seed, cached=True, image_branch=True))


@pytest.mark.parametrize("variants", [1, 3])
def test_embedding_image_and_label_follow_the_same_spatial_augmentation(tmp_path, variants):
    batches = _fusion_batches(tmp_path, variants, intensity=False)
    cache = EmbeddingCache(IdentityEncoder(), torch.device("cpu"))
    codes, kinds = set(), set()
    for index in range(6):
        batch = batches[(0, index)]
        embeddings, images = head_inputs(cache, batch)
        codes |= set(batch["grid_symmetries"].tolist())
        kinds |= set(batch["keys"][:, 5].tolist())
        # the embedding moved exactly as the U-Net's image (up to the cache's float16 rounding)
        torch.testing.assert_close(embeddings, images, rtol=0, atol=1e-3)
        label = batch["seg"].float()
        for image, target, key in zip(images, label, batch["keys"].tolist()):
            agreement = ((image[0] > 0.5).float() == target).float().mean()
            # flips and quarter turns are exact; rotated and scaled variants interpolate image and label alike
            assert agreement == 1.0 if key[5] == 0 else agreement > 0.97
    assert len(codes) >= 4  # flips and transposes were drawn
    assert kinds == ({0} if variants == 1 else {0, 1, 2})


def test_intensity_augmentation_reaches_the_image_branch_only(tmp_path):
    cache = EmbeddingCache(IdentityEncoder(), torch.device("cpu"))
    plain = [head_inputs(cache, _fusion_batches(tmp_path, 1, intensity=False)[(0, i)]) for i in range(4)]
    varied = [head_inputs(cache, _fusion_batches(tmp_path, 1, intensity=True)[(0, i)]) for i in range(4)]
    for (emb_plain, _), (emb_varied, img_varied) in zip(plain, varied):
        torch.testing.assert_close(emb_varied, emb_plain)  # the cached embedding is the plain input's
    assert any(not torch.equal(img, emb) for emb, img in varied)  # the U-Net's image was augmented


def test_train_then_predict_round_trip(hippocampus_preprocessed, tmp_path, monkeypatch):
    """samunet_train fusion (cached embeddings, grid augmentation, image branch) then samunet_predict with
    mirroring: label maps in the input geometry."""
    import SimpleITK as sitk

    from samunet.inference.cli import main as predict_main
    from samunet.training.cli import main as train_main
    from tests.training_helpers import DATASET, fold_folder, private_roots

    roots = private_roots(hippocampus_preprocessed, tmp_path)
    for key, value in roots.items():
        monkeypatch.setenv(key, value)
    plans = hippocampus_preprocessed.plans
    assert plans.adapters["fusion"].unet_widths and plans.adapters["fusion"].fusion_stage is not None
    train_main(["4", "fusion", "0", "--epochs", "2", "--iters-per-epoch", "3", "--batch-size", "4",
                "--num-workers", "0"])
    folder = fold_folder(roots, "fusion", "0")
    assert (folder / "checkpoint_final.safetensors").is_file()
    assert (folder / "validation" / "summary.json").is_file()
    case = hippocampus_preprocessed.case_ids[0]
    source = hippocampus_preprocessed.raw / DATASET / "imagesTr" / f"{case}_0000.nii.gz"
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    (inputs / source.name).write_bytes(source.read_bytes())
    predict_main(["-i", str(inputs), "-o", str(outputs), "-d", "4", "-a", "fusion", "-f", "0"])
    predicted, image = sitk.ReadImage(str(outputs / f"{case}.nii.gz")), sitk.ReadImage(str(source))
    assert predicted.GetSize() == image.GetSize() and predicted.GetSpacing() == image.GetSpacing()
    assert set(np.unique(sitk.GetArrayFromImage(predicted))) <= {0, 1, 2}


def test_regions_get_one_sigmoid_per_region():
    config = default_adapter_config("fusion", unet_widths=[8, 16], fusion_stage=1, output="sigmoid_per_label")
    adapter = build_adapter_from_parts("fusion", build_sam("tiny", 64, pretrained=False), 4, config, 64)
    adapter.use_region_outputs()
    with torch.no_grad():
        probabilities = adapter.probabilities(adapter(torch.rand(1, 3, 32, 32)))
    assert probabilities.shape == (1, 3, 32, 32) and 0 <= probabilities.min() and probabilities.max() <= 1
