"""A samunet_train start that fails writes nothing into the results folder, so the corrected command runs."""
from __future__ import annotations

import pytest

from samunet.training.cli import main
from tests.fixtures_pipeline import plan_and_preprocess, write_structured_dataset

pytestmark = pytest.mark.usefixtures("single_torch_thread")

DATASET = "Dataset903_Start"
FAST = ["--epochs", "1", "--iters-per-epoch", "1", "--batch-size", "2", "--num-workers", "0", "--disable-tta"]


def test_failed_start_leaves_no_model_folder_and_the_corrected_command_trains(tmp_path, monkeypatch, capsys):
    raw = write_structured_dataset(tmp_path / "raw" / DATASET, num_cases=5, shape=(8, 24, 20))
    dataset = plan_and_preprocess(raw, tmp_path / "work")
    dataset.set_env(monkeypatch)
    model_folder = dataset.results / DATASET / "decoder__samunetPlans"

    # base weights that do not exist: the adapter cannot be built (a model-defining override, like --backbone)
    with pytest.raises((SystemExit, Exception)):
        main([DATASET, "decoder", "0", "--checkpoint", str(tmp_path / "missing_sam.pth"), *FAST])
    assert not model_folder.exists(), sorted(p.name for p in model_folder.rglob("*"))

    # an unknown loss name in the plans is refused before anything is written, naming the field
    plans_text = dataset.plans_path.read_text()
    dataset.plans_path.write_text(plans_text.replace('"loss": "dice_ce"', '"loss": "dice_tversky"'))
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([DATASET, "decoder", "0", *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("adapters.decoder.loss 'dice_tversky' is unknown; "
                            "known: dice_bce, dice_ce, dice_focal"), err
    assert not model_folder.exists()
    dataset.plans_path.write_text(plans_text)

    main([DATASET, "decoder", "0", *FAST])
    assert ((model_folder / "plans.json").is_file()
            and (model_folder / "fold_0" / "checkpoint_final.safetensors").is_file())
