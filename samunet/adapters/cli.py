"""samunet_adapters --backbone B --input-size S [--num-classes N] [--json]: what each adapter trains.

Builds every adapter on the backbone (pretrained weights when present, otherwise random init, and says
so: parameter counts do not depend on the weights) and prints trainable / total parameters.
"""
from __future__ import annotations

import json
import logging

from samunet.core.command import CommandParser, user_command
from samunet.core.errors import InvalidValueError
from samunet.core.names import BACKBONE_NAMES
from samunet.utils.logs import setup_logging

log = logging.getLogger("samunet")
PROG = "samunet_adapters"
# the published parameter counts (Zhang & Liu 2023, "Customized Segment Anything Model for Medical Image
# Segmentation" (SAMed)) are for Synapse multi-organ CT: 8 organs + background
SYNAPSE_CLASSES = 9


def parameter_table(backbone: str, input_size: int, num_classes: int, global_attention: bool = False) -> dict:
    from samunet.adapters.registry import ADAPTER_CLASSES, build_adapter_from_parts
    from samunet.modeling.build import build_sam
    from samunet.modeling.checkpoints import backbone_weights_present

    pretrained = backbone_weights_present(backbone)
    rows = []
    from samunet.utils.progress import progress

    for name in progress(ADAPTER_CLASSES, desc="building adapters", unit="adapter", leave=False, lines=False):
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


@user_command(PROG)
def main(argv: list[str] | None = None) -> None:
    p = CommandParser(prog=PROG, description=__doc__)
    p.add_argument("--backbone", required=True, help=" | ".join(BACKBONE_NAMES))
    p.add_argument("--input-size", type=int, required=True, help="model input side (multiple of 16)")
    p.add_argument("--num-classes", type=int, default=SYNAPSE_CLASSES,
                   help=f"classes including background (default {SYNAPSE_CLASSES}: Synapse, the dataset of SAMed's "
                   f"published parameter counts)")
    p.add_argument("--global-attention", action="store_true", help="S-SAM layout (ViT backbones)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    setup_logging(None, PROG)
    if args.backbone not in BACKBONE_NAMES:
        raise InvalidValueError(f"--backbone: unknown backbone '{args.backbone}' (known: {', '.join(BACKBONE_NAMES)})")
    try:
        table = parameter_table(args.backbone, args.input_size, args.num_classes, args.global_attention)
    except ValueError as e:  # build_sam / the adapters reject the size or class count in their own words
        raise InvalidValueError(str(e)) from None
    if table["weights"] == "random init":
        why = "has no pretrained weights" if args.backbone == "tiny" else "has no pretrained weights on this machine"
        # a note on stderr: stdout carries the table (or the JSON) alone
        log.warning("%s %s: built at random init (parameter counts do not depend on the weights)", args.backbone, why)
    print(json.dumps(table, indent=2) if args.json else format_table(table))


if __name__ == "__main__":
    main()
