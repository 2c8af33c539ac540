"""Planner decision rules, on hand-made fingerprints whose answer is known."""
from __future__ import annotations

import pytest

from samunet.planning import model_planner
from samunet.planning.fingerprint import CaseFingerprint, ChannelIntensity, ClassInCase, DatasetFingerprint
from samunet.planning.hardware import GIB, Hardware
from samunet.planning.planner import plan
from samunet.core.names import ADAPTER_NAMES
from samunet.core.plans import Plans

CPU = Hardware("cpu", 16 * GIB, 16 * GIB, 2, False)
GPU = Hardware("cuda", 40 * GIB, 64 * GIB, 16, True)


def make_case(i, spacing=(1.0, 1.0, 1.0), shape=(40, 50, 36), crop=None, fg=None, slices_with_fg=None):
    crop = crop or [[0, s] for s in shape]
    fg = fg if fg is not None else [[a + 2, b - 2] for a, b in crop]
    runs = [[list(r)] for r in fg] if slices_with_fg is None else slices_with_fg
    return CaseFingerprint(
        case_id=f"case_{i:03d}", spacing=list(spacing), shape=list(shape), nonzero_bbox=crop,
        shape_after_crop=[b - a for a, b in crop], foreground_bbox=fg,
        classes={"1": ClassInCase(voxels=100, extent=[b - a for a, b in fg], slice_runs=runs)})


def make_fingerprint(cases, channel_names=("MRI",), reduction=0.0, labels=None):
    intensities = [ChannelIntensity(c, n, 50.0, 45.0, 20.0, -1000.0, 3000.0, -900.0, 1500.0, 1000)
                   for c, n in enumerate(channel_names)]
    return DatasetFingerprint(
        dataset_name="Dataset900_Test", labels=labels or {"background": 0, "thing": 1},
        channel_names={str(c): n for c, n in enumerate(channel_names)}, file_ending=".nii.gz", cases=cases,
        intensities=intensities, classes={}, median_spacing=[float(s) for s in cases[0].spacing],
        median_shape_after_crop=[float(s) for s in cases[0].shape_after_crop], mean_crop_volume_reduction=reduction)


def test_anisotropic_data_is_sliced_along_the_coarsest_axis():
    fp = make_fingerprint([make_case(i, spacing=(0.8, 0.8, 5.0), shape=(200, 180, 20)) for i in range(3)])
    plans = plan(fp, hardware=CPU)
    assert plans.slicing.axis == 2 and plans.slicing.transpose == [2, 0, 1]
    assert plans.resampling.target_spacing == [5.0, 0.8, 0.8]
    assert plans.packing.mode == "repeat"  # 5 mm slices on 0.8 mm pixels: neighbours differ too much


def test_isotropic_data_is_sliced_where_the_foreground_cross_section_is_largest():
    # foreground 10 (z) x 30 (y) x 20 (x): the plane across z shows 30 x 20, the largest cross-section
    fp = make_fingerprint([make_case(i, fg=[[5, 15], [5, 35], [5, 25]]) for i in range(3)])
    plans = plan(fp, hardware=CPU)
    assert plans.slicing.axis == 0 and plans.slicing.transpose == [0, 1, 2]
    # make x the thin axis instead
    fp = make_fingerprint([make_case(i, fg=[[5, 35], [5, 30], [5, 12]]) for i in range(3)])
    assert plan(fp, hardware=CPU).slicing.transpose == [2, 0, 1]


def test_near_ties_keep_the_lower_axis():
    fp = make_fingerprint([make_case(i, fg=[[0, 20], [0, 21], [0, 20]]) for i in range(3)])  # within 10 %
    assert plan(fp, hardware=CPU).slicing.axis == 0


def test_patch_covers_the_slices_and_input_size_follows_it():
    fp = make_fingerprint([make_case(i, shape=(36, 50 + i, 35)) for i in range(5)])
    plans = plan(fp, backbone="litemedsam", hardware=CPU)
    h, w = plans.crop.patch_size
    assert h % 8 == 0 and w % 8 == 0
    assert h >= 50 + 4 - 8 and h <= 56 and w in (40,)  # p95 of 50..54 -> 56, 35 -> 40
    assert plans.model.input_size == 64  # LiteMedSAM (4-pixel tokens): smallest multiple of 16 >= 56
    assert not plans.model.global_attention  # TinyViT has no SAM windows
    assert plan(fp, backbone="vit_b", hardware=CPU).model.input_size == 112  # ViT (16-pixel tokens): >= 2 * 56


def test_input_size_is_capped_by_the_backbone():
    fp = make_fingerprint([make_case(i, shape=(30, 512, 512)) for i in range(3)])
    assert plan(fp, backbone="litemedsam", hardware=CPU).model.input_size == 256
    vit = plan(fp, backbone="vit_b", hardware=CPU).model
    assert vit.input_size == 1024 and not vit.global_attention
    small = plan(make_fingerprint([make_case(i, shape=(30, 20, 20)) for i in range(3)]), backbone="vit_b",
                 hardware=CPU).model
    assert small.input_size == 64 and small.global_attention  # at least 64; ViT below 1024: global attention


def test_huge_slices_get_a_window_around_the_foreground():
    fp = make_fingerprint([make_case(i, shape=(1, 3000, 3000), spacing=(999.0, 1.0, 1.0),
                                     fg=[[0, 1], [100, 400], [100, 300]]) for i in range(3)])
    patch = plan(fp, hardware=CPU).crop.patch_size
    assert max(patch) <= 1024 and patch[0] >= 300 and patch[1] >= 200


def test_normalization_schemes():
    fp = make_fingerprint([make_case(i) for i in range(2)], channel_names=("CT", "T2", "R"), reduction=0.4)
    ct, t2, red = plan(fp, hardware=CPU).normalization
    assert (ct.scheme, ct.clip_low, ct.clip_high, ct.mean, ct.std) == ("ct", -900.0, 1500.0, 50.0, 20.0)
    assert t2.scheme == "zscore" and t2.use_nonzero_mask  # cropping removed 40 % > 25 %
    assert red.scheme == "rgb"
    fp = make_fingerprint([make_case(i) for i in range(2)], reduction=0.1)
    assert not plan(fp, hardware=CPU).normalization[0].use_nonzero_mask


@pytest.mark.parametrize("names,spacing,shape,mode", [
    (("MRI",), (1.0, 1.0, 1.0), (30, 40, 40), "neighbours"),
    (("MRI",), (999.0, 1.0, 1.0), (1, 40, 40), "repeat"),
    (("R", "G", "B"), (999.0, 1.0, 1.0), (1, 40, 40), "direct"),
    (("T1", "T2"), (1.0, 1.0, 1.0), (30, 40, 40), "mix"),
])
def test_channel_packing(names, spacing, shape, mode):
    fp = make_fingerprint([make_case(i, spacing=spacing, shape=shape, fg=[[0, shape[0]], [5, 30], [5, 30]])
                           for i in range(2)], channel_names=names)
    packing = plan(fp, hardware=CPU).packing
    assert packing.mode == mode and packing.num_channels == len(names)


def test_slicing_mode_thresholds():
    few = make_fingerprint([make_case(i, shape=(40, 50, 36)) for i in range(10)])
    assert plan(few, hardware=CPU).slicing.mode == "all"
    # 30,000 z slices
    many = make_fingerprint([make_case(i, spacing=(2.0, 1.0, 1.0), shape=(300, 64, 64)) for i in range(100)])
    slicing = plan(many, hardware=CPU).slicing
    assert slicing.mode == "foreground" and 0 < slicing.background_fraction < 1
    sparse = make_fingerprint([make_case(i, shape=(30, 64, 64), fg=[[7, 8], [5, 30], [5, 30]]) for i in range(3)])
    assert plan(sparse, hardware=CPU).slicing.mode == "max_slice"  # one annotated slice per volume


def test_backbone_choice(monkeypatch):
    fp = make_fingerprint([make_case(i) for i in range(3)])
    assert plan(fp, backbone="vit_l", hardware=GPU).model.backbone == "vit_l"
    monkeypatch.setattr(model_planner, "weights_present", lambda name: False)
    assert plan(fp, hardware=GPU).model.backbone == "litemedsam"
    monkeypatch.setattr(model_planner, "weights_present", lambda name: name in ("vit_b", "medsam_vit_b"))
    assert plan(fp, hardware=GPU).model.backbone == "medsam_vit_b"
    assert plan(fp, hardware=CPU).model.backbone == "litemedsam"  # a CPU cannot afford ViT-B
    with pytest.raises(ValueError, match="unknown backbone"):
        plan(fp, backbone="resnet", hardware=CPU)


def test_adapter_recommendation_and_configs(monkeypatch):
    monkeypatch.setattr(model_planner, "weights_present", lambda name: False)
    few = make_fingerprint([make_case(i) for i in range(5)])
    many = make_fingerprint([make_case(i) for i in range(40)])
    assert plan(few, hardware=CPU).model.adapter == "fusion"
    assert plan(few, hardware=GPU).model.adapter == "loramednet"
    plans = plan(many, hardware=GPU)
    assert plans.model.adapter == "samed"
    assert set(plans.adapters) == set(ADAPTER_NAMES)
    ssam, samed = plans.adapters["ssam"], plans.adapters["samed"]
    assert (ssam.loss, ssam.output, ssam.learning_rate) == ("dice_focal", "sigmoid_per_label", 1e-3)
    assert (samed.loss_weights, samed.learning_rate, samed.warmup_iterations) == ([0.2, 0.8], 0.005, 250)
    assert plans.adapters["cnnhead"].cache_embeddings and plans.adapters["decoder"].cache_embeddings
    assert not plans.adapters["full"].cache_embeddings


def test_training_plan_follows_the_hardware():
    fp = make_fingerprint([make_case(i, shape=(30, 512, 512)) for i in range(3)])
    roomy = plan(fp, backbone="vit_b", hardware=GPU).training
    tight = plan(fp, backbone="vit_b", hardware=Hardware("cuda", 6 * GIB, 64 * GIB, 16, False)).training
    assert tight.batch_size < roomy.batch_size and tight.batch_size >= 1
    assert (roomy.precision, tight.precision) == ("bf16", "fp16")
    cpu_plans = plan(fp, backbone="litemedsam", hardware=CPU)
    cpu = cpu_plans.training
    assert cpu.device == "cpu" and cpu.precision == "fp32"
    assert cpu.time_budget_min == 30 and cpu_plans.cost.source.startswith("estimated")
    assert 1 <= cpu.validate_every
    assert cpu.num_workers <= CPU.cpu_count


def test_plans_round_trip_and_every_section_has_a_reason():
    plans = plan(make_fingerprint([make_case(i) for i in range(3)], channel_names=("CT",)), hardware=CPU)
    assert Plans.from_dict(plans.to_dict()) == plans
    for section in (plans.slicing, plans.crop, plans.resampling, plans.packing, plans.model, plans.augmentation,
                    plans.training, *plans.normalization, *plans.adapters.values()):
        assert section.reason.strip(), type(section).__name__
    assert plans.model.adapter_reason.strip()
    assert plans.fingerprint_sha256


def test_bf16_class_is_read_from_the_cpu_flags():
    from samunet.planning.hardware import AMX, AVX512_BF16, NO_NATIVE_BF16, bf16_capability_from_flags

    assert bf16_capability_from_flags("flags\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile") == AMX
    assert bf16_capability_from_flags("flags\t: fpu avx512f avx512_bf16 avx512_vnni") == AVX512_BF16
    # AVX-512 without its bf16 extension emulates bf16 (slower than fp32): not native
    assert bf16_capability_from_flags("flags\t: fpu avx2 avx512f avx512bw") == NO_NATIVE_BF16
