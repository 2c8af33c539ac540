"""``samunet_adapters --backbone B --input-size S [--num-classes N] [--json]``: what each adapter trains.

Builds every adapter on the backbone (pretrained weights when present, otherwise random init, and says
so: parameter counts do not depend on the weights) and prints trainable / total parameters.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from samunet.utils.logs import setup_logging

log = logging.getLogger("samunet")
SYNAPSE_CLASSES = 9  # METHODS.md's reference figures (SAMed) are for Synapse: 8 organs + background


def parameter_table(backbone: str, input_size: int, num_classes: int, global_attention: bool = False) -> dict:
    from tqdm import tqdm

    from samunet.adapters.registry import ADAPTER_CLASSES, build_adapter_from_parts
    from samunet.modeling.build import build_sam
    from samunet.modeling.checkpoints import backbone_weights_present

    pretrained = backbone_weights_present(backbone)
    rows = []
    for name in tqdm(ADAPTER_CLASSES, desc="building adapters", leave=False):
        sam = build_sam(backbone, input_size, global_attention=global_attention, pretrained=pretrained)
        base_total = sum(p.numel() for p in sam.parameters())
        counts = build_adapter_from_parts(name, sam, num_classes).parameter_counts()
        rows.append({"adapter": name, **counts, "fraction_of_total": counts["trainable"] / counts["total"],
                     "fraction_of_backbone": counts["trainable"] / base_total})
    return {"backbone": backbone, "input_size": input_size, "num_classes": num_classes,
            "global_attention": global_attention, "weights": "pretrained" if pretrained else "random init",
            "backbone_parameters": base_total, "adapters": rows}


def format_table(table: dict) -> str:
    lines = [f"{table['backbone']} @ {table['input_size']} px, {table['num_classes']} classes "
             f"({table['weights']}; backbone {table['backbone_parameters']:,} parameters)",
             f"{'adapter':<11} {'trainable':>12} {'total':>13} {'% of total':>10} {'% of SAM':>9}"]
    for r in table["adapters"]:
        lines.append(f"{r['adapter']:<11} {r['trainable']:>12,} {r['total']:>13,} "
                     f"{100 * r['fraction_of_total']:>9.3f}% {100 * r['fraction_of_backbone']:>8.3f}%")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="samunet_adapters", description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", required=True, help="vit_b | vit_l | vit_h | medsam_vit_b | litemedsam | tiny")
    p.add_argument("--input-size", type=int, required=True, help="model input side (multiple of 16)")
    p.add_argument("--num-classes", type=int, default=SYNAPSE_CLASSES,
                   help=f"classes including background (default {SYNAPSE_CLASSES}, Synapse, as METHODS.md)")
    p.add_argument("--global-attention", action="store_true", help="S-SAM layout (ViT backbones)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    setup_logging(None, "samunet_adapters")
    from samunet.core.names import BACKBONE_NAMES as BACKBONES

    if args.backbone not in BACKBONES:
        print(f"samunet_adapters: unknown backbone '{args.backbone}' (known: {', '.join(BACKBONES)})", file=sys.stderr)
        sys.exit(1)
    try:
        table = parameter_table(args.backbone, args.input_size, args.num_classes, args.global_attention)
    except ValueError as e:
        print(f"samunet_adapters: {e}", file=sys.stderr)
        sys.exit(1)
    if table["weights"] == "random init":
        why = "has no pretrained weights" if args.backbone == "tiny" else "has no pretrained weights on this machine"
        log.info("%s %s: built at random init (parameter counts do not depend on the weights)", args.backbone, why)
    print(json.dumps(table, indent=2) if args.json else format_table(table))


if __name__ == "__main__":
    main()
