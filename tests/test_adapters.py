"""Each adapter: what trains (counts from module shapes), identity at init, merge, outputs, precision."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from samunet.adapters import ADAPTER_NAMES, build_adapter_from_parts
from samunet.adapters.layers import is_layer_norm
from samunet.modeling import build_sam
from tests.fixtures_models import make_tiny_plans

INPUT = 64
NUM_CLASSES = 3


def tiny_adapter(name, checkpoint, num_classes=NUM_CLASSES, in_channels=3, global_attention=False):
    sam = build_sam("tiny", INPUT, checkpoint=checkpoint, global_attention=global_attention)
    plans = make_tiny_plans(num_classes=num_classes)
    return build_adapter_from_parts(name, sam, num_classes, plans.adapter_config(name), INPUT, in_channels)


def plain_sam(checkpoint):
    return build_sam("tiny", INPUT, checkpoint=checkpoint)


def expected_trainable(name, sam, num_classes, lora_rank=2, head_width=32):
    """Trainable parameter count from the un-adapted model's module shapes."""
    enc, dec = sam.image_encoder, sam.mask_decoder
    dim = dec.transformer_dim
    linears = [m for m in enc.modules() if type(m) is nn.Linear]
    lora = sum(2 * lora_rank * m.attn.qkv.in_features + 2 * lora_rank * m.attn.qkv.out_features // 3
               for m in enc.blocks)
    # multi-token decoder: stock parameters, with mask tokens / hypernetwork MLPs / IoU head resized
    per_token = sum(p.numel() for p in dec.output_hypernetworks_mlps[0].parameters()) + dim
    iou_last = dec.iou_prediction_head.layers[-1]
    outputs = num_classes  # softmax: one token per class incl. background, all of them outputs
    decoder = (sum(p.numel() for p in dec.parameters()) + (outputs - dec.num_mask_tokens) * per_token
               + (outputs - dec.num_mask_tokens) * (iou_last.in_features + 1)) + dim  # + no_mask_embed
    c = head_width
    head = (dim * c + 2 * c) + (c * 2 * c + 4 * c) + (2 * c * c * 9 + 2 * c) + (c * c // 2 * 9 + c) \
        + (c // 2 * c // 4 * 4 + c // 2) + (c // 4 * c // 8 * 4 + c // 4) + (c // 8 * num_classes + num_classes)
    if name == "ssam":
        svd = sum(2 * min(m.out_features, m.in_features) for m in linears)
        svd += sum(2 * min(m.out_channels, m.weight[0].numel()) for m in enc.neck if isinstance(m, nn.Conv2d))
        norms = sum(p.numel() for m in enc.modules() if is_layer_norm(m) for p in m.parameters())
        dec_norms = sum(p.numel() for m in dec.transformer.modules() if is_layer_norm(m) for p in m.parameters())
        return svd + norms + enc.pos_embed.numel() + dec_norms + (num_classes - 1) * dim
    if name == "fusion":  # the U-Net alone, built on its own from the tiny plans' widths
        from samunet.adapters.fusion_unet import FusionUNet

        return sum(p.numel() for p in FusionUNet(3, dim, num_classes, [8, 16, 32], 1).parameters())
    return {"samed": lora + decoder, "decoder": decoder, "cnnhead": head, "loramednet": lora + head,
            "full": sum(p.numel() for p in enc.parameters()) + decoder}[name]


@pytest.mark.parametrize("name", ADAPTER_NAMES)
def test_trainable_parameters_are_exactly_the_intended_ones(name, tiny_sam_checkpoint):
    adapter = tiny_adapter(name, tiny_sam_checkpoint)
    counts = adapter.parameter_counts()
    assert counts["trainable"] == expected_trainable(name, plain_sam(tiny_sam_checkpoint), NUM_CLASSES)
    trainable = {n for n, p in adapter.named_parameters() if p.requires_grad}
    assert set(adapter.trainable_state_dict()) == trainable
    # gradients reach every trainable parameter that the loss depends on, and nothing frozen gets one
    x = torch.rand(2, 3, 48, 40)
    logits = adapter(x)
    assert logits.shape == (2, adapter.num_outputs, 48, 40) and logits.dtype == torch.float32
    logits.square().mean().backward()
    frozen_with_grad = [n for n, p in adapter.named_parameters() if not p.requires_grad and p.grad is not None]
    assert not frozen_with_grad
    unused = {"sam.mask_decoder.iou_prediction_head"}  # the IoU head is not in the loss
    no_grad = [n for n in trainable if dict(adapter.named_parameters())[n].grad is None
               and not any(n.startswith(u) for u in unused)]
    assert not no_grad
    assert adapter.supports_embedding_cache == (name in ("decoder", "cnnhead", "fusion"))


def _perturb(adapter, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in adapter.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("name", ADAPTER_NAMES)
def test_merge_reproduces_the_unmerged_model(name, tiny_sam_checkpoint):
    adapter = tiny_adapter(name, tiny_sam_checkpoint)
    _perturb(adapter)
    x = torch.rand(2, 3, INPUT, INPUT)
    adapter.eval()
    train_path = adapter(x).detach()  # grad enabled: S-SAM's factorised path
    with torch.no_grad():
        before = adapter(x)  # no grad: the adapted weight built once
        adapter.merge()
        after = adapter(x)
    torch.testing.assert_close(train_path, before, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    assert not any(p.requires_grad for p in adapter.parameters())
    assert not any("lora_" in n or n.endswith((".scale", ".shift")) for n, _ in adapter.named_parameters())
    with pytest.raises(RuntimeError, match="before merg"):
        adapter.trainable_state_dict()


@pytest.mark.parametrize("name", ["ssam", "samed", "loramednet"])
def test_encoder_adaptation_starts_as_the_frozen_encoder(name, tiny_sam_checkpoint):
    """ssam with a = 1, b = 0 and LoRA with B = 0 reproduce the pretrained encoder exactly."""
    adapter = tiny_adapter(name, tiny_sam_checkpoint)
    base = plain_sam(tiny_sam_checkpoint).image_encoder
    x = adapter.prepare(torch.rand(2, 3, INPUT, INPUT))
    ref = base(x).detach()
    torch.testing.assert_close(adapter.sam.image_encoder(x).detach(), ref, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(adapter.sam.image_encoder(x), ref, rtol=1e-4, atol=1e-4)


def test_ssam_label_prompts_decode_each_label_independently(tiny_sam_checkpoint):
    adapter = tiny_adapter("ssam", tiny_sam_checkpoint, num_classes=4).eval()
    assert adapter.output_kind == "sigmoid_per_label" and adapter.num_outputs == 3
    x = torch.rand(3, 3, INPUT, INPUT)
    with torch.no_grad():
        emb = adapter.encode(x)
        all_labels = adapter.forward_from_embeddings(emb, x)
        tokens = adapter.label_tokens.data.clone()
        adapter.label_tokens.data = tokens[1:2]  # decode label 2 alone
        alone = adapter.forward_from_embeddings(emb, x)
        adapter.label_tokens.data = tokens
    torch.testing.assert_close(all_labels[:, 1:2], alone, rtol=1e-5, atol=1e-5)


def test_probabilities_are_distributions_with_the_ssam_rule(tiny_sam_checkpoint):
    ssam = tiny_adapter("ssam", tiny_sam_checkpoint, num_classes=3)
    logits = torch.tensor([[-3.0, -1.0], [2.0, 0.5], [-2.0, 1.0], [0.1, 3.0]]).view(4, 2, 1, 1)
    probs = ssam.probabilities(logits)
    assert probs.shape == (4, 3, 1, 1)
    torch.testing.assert_close(probs.sum(1), torch.ones(4, 1, 1))
    sig = torch.sigmoid(logits)
    rule = torch.where(sig.max(1).values < 0.5, 0, sig.argmax(1) + 1)  # S-SAM: background below 0.5
    assert torch.equal(probs.argmax(1), rule)
    binary = tiny_adapter("ssam", tiny_sam_checkpoint, num_classes=2).probabilities(logits[:, :1])
    torch.testing.assert_close(binary[:, 1], torch.sigmoid(logits[:, 0]))  # one label: exactly (1 - p, p)
    softmax = tiny_adapter("decoder", tiny_sam_checkpoint)
    torch.testing.assert_close(softmax.probabilities(logits.repeat(1, 2, 1, 1)[:, :3]).sum(1), torch.ones(4, 1, 1))


@pytest.mark.parametrize("name", ["ssam", "samed", "cnnhead"])
def test_bf16_autocast_forward_and_backward(name, tiny_sam_checkpoint):
    adapter = tiny_adapter(name, tiny_sam_checkpoint, global_attention=(name == "ssam"))
    x = torch.rand(2, 3, INPUT, INPUT)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = adapter(x)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    logits.mean().backward()
    grads = [p.grad for p in adapter.trainable_parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 for g in grads)
    ref = adapter(x).detach()
    assert (logits.detach() - ref).abs().max() < 0.1 * ref.abs().max() + 0.1  # bf16 close to fp32


def test_input_mixer_for_other_channel_counts(tiny_sam_checkpoint):
    adapter = tiny_adapter("cnnhead", tiny_sam_checkpoint, in_channels=4)
    assert not adapter.supports_embedding_cache  # the trained mixer sits before the encoder
    x = torch.rand(2, 4, INPUT, INPUT)
    mixed = adapter.input_mixer(x)
    torch.testing.assert_close(mixed, x.mean(1, keepdim=True).expand(-1, 3, -1, -1))  # starts as channel mean
    adapter(x).mean().backward()
    assert adapter.input_mixer.weight.grad is not None
    with pytest.raises(ValueError, match="expects 4 input channels, got 3"):
        adapter(torch.rand(1, 3, INPUT, INPUT))
    rgb = tiny_adapter("cnnhead", tiny_sam_checkpoint)
    one = torch.rand(1, 1, INPUT, INPUT)
    torch.testing.assert_close(rgb(one), rgb(one.expand(-1, 3, -1, -1)))  # 1 channel = repeat packing


def test_frozen_encoder_embedding_cache_gives_the_same_logits(tiny_sam_checkpoint):
    adapter = tiny_adapter("decoder", tiny_sam_checkpoint).eval()
    x = torch.rand(2, 3, 40, 56)
    with torch.no_grad():
        cached = adapter.encode(x)
        torch.testing.assert_close(adapter.forward_from_embeddings(cached, x), adapter(x))


@pytest.mark.parametrize("name", ["decoder", "cnnhead", "ssam"])
def test_a_frozen_encoder_stays_in_inference_mode_while_the_adapter_trains(name, tiny_sam_checkpoint):
    """The embedding cache encodes without switching modes: a frozen encoder is in eval whatever the adapter's mode
    (same output, no dropout, frozen BatchNorm); an encoder that trains follows the adapter."""
    from samunet.training.embedding_cache import EmbeddingCache

    adapter = tiny_adapter(name, tiny_sam_checkpoint).train()
    frozen = not any(p.requires_grad for p in adapter.sam.image_encoder.parameters())
    assert adapter.training and adapter.sam.image_encoder.training is not frozen
    assert adapter.sam.mask_decoder.training
    if frozen:
        x = torch.rand(2, 3, 40, 56)
        cache = EmbeddingCache(adapter, torch.device("cpu"))
        embedded = cache.embeddings(x)
        assert adapter.training and not adapter.sam.image_encoder.training  # no mode switch left behind
        with torch.no_grad():
            # the cache keeps float16 entries
            torch.testing.assert_close(embedded, adapter.eval().encode(x).half().float())
