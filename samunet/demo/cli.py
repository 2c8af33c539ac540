"""samunet_demo: the whole pipeline on a built-in default, in a few minutes on a CPU.

It runs the same commands a user runs (printed as it goes), each in its own process:
make data -> samunet_plan -> samunet_train (fold 0) -> samunet_predict (held-out cases) -> samunet_evaluate.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from samunet.core.command import CommandParser, user_command
from samunet.core.errors import InvalidValueError, SamunetUserError
from samunet.core.layout import plans_file
from samunet.core.names import DATASET_JSON_FILE, DEFAULT_PLANS_NAME, SPLITS_FILE
from samunet.core.paths import DATASET_FOLDER_RE
from samunet.utils.logs import get_logger, setup_logging

log = get_logger()
PROG = "samunet_demo"


class DemoStepFailed(SamunetUserError):
    """A step's own command already printed why it failed; the demo adds which step it was."""


def _command(name: str) -> str:
    """The console script installed next to this interpreter (falls back to PATH)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _run(args: list[str], env: dict[str, str]) -> None:
    printable = " ".join([Path(args[0]).name] + args[1:])
    log.info("\n$ %s", printable)
    started = time.time()
    result = subprocess.run([_command(args[0])] + args[1:], env=env)
    if result.returncode != 0:
        raise DemoStepFailed(f"'{printable}' failed with exit code {result.returncode} (its error is above)")
    log.info("  (%.0f s)", time.time() - started)


def _use_real_dataset(data: Path, raw_root: Path, env: dict[str, str]) -> str:
    """--data: an nnU-Net raw dataset folder (DatasetXXX_Name) is linked in; an MSD task is converted."""
    data = data.resolve()
    if DATASET_FOLDER_RE.match(data.name) and (data / DATASET_JSON_FILE).is_file():
        target = raw_root / data.name
        if not target.exists():
            target.symlink_to(data, target_is_directory=True)
        return data.name
    if (data / DATASET_JSON_FILE).is_file() and data.name.startswith("Task"):
        from samunet.dataset.convert_msd import convert_msd_task

        log.info("Converting the MSD task %s (samunet_convert_msd) ...", data)
        return convert_msd_task(data, raw_root).name
    raise InvalidValueError(f"--data {data}: is neither a DatasetXXX_Name raw folder nor an MSD TaskXX_Name folder")


def _held_out_cases(raw_dataset: Path, preprocessed_dataset: Path, out: Path) -> tuple[Path, Path]:
    """The cases to predict and evaluate: imagesTs/labelsTs when present, else fold 0's validation cases
    (linked into ``out/held_out``), which training never saw."""
    images, labels = raw_dataset / "imagesTs", raw_dataset / "labelsTs"
    if images.is_dir() and labels.is_dir():
        return images, labels
    validation_cases = json.loads((preprocessed_dataset / SPLITS_FILE).read_text())[0]["val"]
    images, labels = out / "held_out" / "images", out / "held_out" / "labels"
    for folder in (images, labels):
        folder.mkdir(parents=True, exist_ok=True)
    for case in validation_cases:
        for source in (raw_dataset / "imagesTr").glob(f"{case}_[0-9][0-9][0-9][0-9]*"):
            if not (images / source.name).exists():
                (images / source.name).symlink_to(source.resolve())
        for source in (raw_dataset / "labelsTr").glob(f"{case}.*"):
            if not (labels / source.name).exists():
                (labels / source.name).symlink_to(source.resolve())
    return images, labels


@user_command(PROG)
def main(argv: list[str] | None = None) -> None:
    parser = CommandParser(prog=PROG, description=__doc__)
    parser.add_argument("-o", "--output", type=Path, default=Path("samunet_demo_output"),
                        help="folder for everything the demo writes (default: ./samunet_demo_output)")
    parser.add_argument("--data", type=Path, default=None,
                        help="use a real dataset instead of the synthetic one: a DatasetXXX_Name raw folder "
                             "with imagesTs/labelsTs, or an MSD task folder")
    parser.add_argument("--backbone", default="litemedsam", help="default: litemedsam (pretrained, ships with pip)")
    parser.add_argument("--adapter", default=None, help="default: the adapter the plans recommend")
    parser.add_argument("--minutes", type=float, default=3.0, help="training time limit (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke-test mode: tiny random backbone, a few iterations (used by the tests)")
    parser.add_argument("--fresh", action="store_true", help="delete the output folder first")
    args = parser.parse_args(argv)

    out = args.output.resolve()
    if args.fresh and out.exists():
        shutil.rmtree(out)
    log_file = setup_logging(out, prefix="demo")
    log.info("samunet demo: writing everything into %s (log: %s)", out, log_file.name)
    started = time.time()
    roots = {"SAMUNET_RAW": out / "raw", "SAMUNET_PREPROCESSED": out / "preprocessed",
             "SAMUNET_RESULTS": out / "results"}
    for folder in roots.values():
        folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **{k: str(v) for k, v in roots.items()})
    backbone = "tiny" if args.quick else args.backbone

    if args.data is None:
        from samunet.demo.synthetic import DEMO_DATASET_NAME, write_demo_dataset

        log.info("Writing a synthetic MR-like dataset (16 training + 4 held-out volumes) ...")
        num_train, num_test = (8, 2) if args.quick else (16, 4)
        write_demo_dataset(roots["SAMUNET_RAW"], num_train=num_train, num_test=num_test,
                           shape=(12, 48, 48) if args.quick else (20, 64, 64))
        dataset = DEMO_DATASET_NAME
    else:
        dataset = _use_real_dataset(args.data, roots["SAMUNET_RAW"], env)
    dataset_id = str(int(dataset[7:10]))

    _run(["samunet_plan", "-d", dataset_id, "--backbone", backbone], env)
    plans = json.loads((plans_file(roots["SAMUNET_PREPROCESSED"] / dataset, DEFAULT_PLANS_NAME)).read_text())
    adapter = args.adapter or plans["model"]["adapter"]
    log.info("The plans recommend adapter '%s': %s", plans["model"]["adapter"], plans["model"]["adapter_reason"])

    # mirroring TTA quadruples encoder work; the demo skips it to stay within minutes on a CPU
    train = ["samunet_train", dataset_id, adapter, "0", "--time-limit-min", str(args.minutes), "--disable-tta"]
    if args.quick:
        train += ["--epochs", "2", "--iters-per-epoch", "3", "--batch-size", "2"]
    _run(train, env)

    images, labels = _held_out_cases(roots["SAMUNET_RAW"] / dataset, roots["SAMUNET_PREPROCESSED"] / dataset, out)
    predictions = out / "predictions"
    _run(["samunet_predict", "-i", str(images), "-o", str(predictions), "-d", dataset_id, "-a", adapter,
          "-f", "0", "-chk", "final", "--disable-tta"], env)
    summary_file = out / "evaluation_summary.json"
    _run(["samunet_evaluate", "-ref", str(labels), "-pred", str(predictions), "-d", dataset_id,
          "-o", str(summary_file)], env)

    summary = json.loads(summary_file.read_text())
    log.info("\n==== samunet demo finished in %.1f min ====", (time.time() - started) / 60)
    label_names = {str(v): k for k, v in plans["labels"].items()}
    for label, metrics in summary["mean"].items():
        log.info("  Dice %-12s %.3f", label_names.get(str(label), label), metrics["Dice"])
    log.info("  mean foreground Dice %.3f", summary["foreground_mean"]["Dice"])
    log.info("Outputs:\n  raw data       %s\n  plans          %s\n  model          %s\n"
             "  predictions    %s\n  evaluation     %s",
             roots["SAMUNET_RAW"] / dataset, plans_file(roots["SAMUNET_PREPROCESSED"] / dataset, DEFAULT_PLANS_NAME),
             roots["SAMUNET_RESULTS"] / dataset, predictions, summary_file)


if __name__ == "__main__":
    main()
