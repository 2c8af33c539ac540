"""``samunet_export_model -d D -a ADAPTER [-f FOLDS] [-chk final|best] [-p PLANS] -o model.zip`` and
``samunet_install_model model.zip [--force]``."""
from __future__ import annotations

import argparse
from pathlib import Path

from samunet.core.command import CommandParser, user_command
from samunet.core.names import DEFAULT_PLANS_NAME


def build_export_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="samunet_export_model",
        description="Write a zip with trained adapter weights (adapter-only safetensors + JSON sidecars), plans, "
        "dataset.json, find_best's inference_information.json and a README naming the base backbone and its "
        "sha256. The base SAM weights are never included. Like nnUNetv2_export_model_to_zip.")
    p.add_argument("-d", dest="dataset", required=True, help="dataset id or name")
    p.add_argument("-a", dest="adapters", required=True, nargs="+", help="adapter(s) to export")
    p.add_argument("-o", dest="output", required=True, type=Path, help="output file (.zip)")
    p.add_argument("-f", dest="folds", nargs="+", help="folds (numbers or 'all'; default: every fold that has the "
                   "checkpoint(s))")
    p.add_argument("-chk", dest="checkpoints", nargs="+", default=["final"], help="checkpoint(s): final, best "
                   "(default: final)")
    p.add_argument("-p", dest="plans", default=DEFAULT_PLANS_NAME, help=f"plans name (default {DEFAULT_PLANS_NAME})")
    return p


def build_install_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="samunet_install_model",
        description="Check a zip written by samunet_export_model (sha256 of every file, safe paths) and unpack it "
        "into $SAMUNET_RESULTS. Like nnUNetv2_install_pretrained_model_from_zip.")
    p.add_argument("zip", type=Path, help="model zip")
    p.add_argument("--force", action="store_true", help="replace model folders that already exist")
    return p


@user_command("samunet_export_model")
def export_main(argv: list[str] | None = None) -> None:
    args = build_export_parser().parse_args(argv)
    from samunet.sharing.export import export_model
    from samunet.utils.logs import setup_logging

    setup_logging(args.output.parent, "export_model")
    export_model(args.dataset, args.adapters, args.output, args.plans, args.folds, args.checkpoints)


@user_command("samunet_install_model")
def install_main(argv: list[str] | None = None) -> None:
    args = build_install_parser().parse_args(argv)
    from samunet.core.paths import results_root
    from samunet.sharing.install import install_model
    from samunet.utils.logs import setup_logging

    results = results_root()
    setup_logging(results, "install_model")
    install_model(args.zip, results, force=args.force)
