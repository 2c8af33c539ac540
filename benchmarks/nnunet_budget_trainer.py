"""nnU-Net v2 trained to a wall-clock budget, for ``bench_vs_nnunet.py``; runs in a Python that has ``nnunetv2``.

nnU-Net has no time limit: its poly schedule runs over 1,000 epochs of 250 iterations. ``nnUNetTrainerBudget``
checks the clock before every iteration (one Hippocampus epoch of batch 366 takes about 48 min on 2 CPU cores, so
an epoch-level check would overrun any short budget) and sets nnU-Net's poly learning rate from the share of the
budget used, so the decay ends at the budget as samunet's does. Everything else is nnU-Net's: plans, network,
augmentation, loss, its per-epoch pseudo-validation, and the final sliding-window validation after the budget.

    python benchmarks/nnunet_budget_trainer.py DATASET_ID FOLD BUDGET_MIN
    python benchmarks/nnunet_budget_trainer.py predict DATASET_ID FOLD INPUT_FOLDER OUTPUT_FOLDER

print one JSON line: training seconds, iterations, validation seconds and folder; or prediction seconds and cases.
``nnUNetv2_predict -tr nnUNetTrainerBudget`` cannot be used: it looks the trainer class up inside the nnunetv2
package, where this subclass is not; ``predict`` runs nnU-Net's own predictor with the lookup pointed here.
"""
from __future__ import annotations

import json
import os
import sys
import time

import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

POLY_EXPONENT = 0.9  # nnU-Net's PolyLRScheduler
LOG_EVERY = 10  # iterations


class nnUNetTrainerBudget(nnUNetTrainer):
    budget_s = 30 * 60.0

    def run_training(self):
        self.on_train_start()
        started = time.monotonic()
        self.iterations_done, stopped = 0, False
        while self.current_epoch < self.num_epochs and not stopped:
            self.on_epoch_start()
            self.on_train_epoch_start()
            outputs = []
            for _ in range(self.num_iterations_per_epoch):
                used = (time.monotonic() - started) / self.budget_s
                if used >= 1.0:
                    stopped = True
                    break
                for group in self.optimizer.param_groups:
                    group["lr"] = self.initial_lr * (1.0 - used) ** POLY_EXPONENT
                outputs.append(self.train_step(next(self.dataloader_train)))
                self.iterations_done += 1
                if self.iterations_done % LOG_EVERY == 0:  # nnU-Net itself logs once per epoch (48 min here)
                    self.print_to_log_file(f"iteration {self.iterations_done}: {time.monotonic() - started:.0f} s, "
                                           f"lr {self.optimizer.param_groups[0]['lr']:.5f}, "
                                           f"loss {float(outputs[-1]['loss']):.4f}")
            if outputs:
                self.on_train_epoch_end(outputs)
            if stopped:  # a cut epoch has no pseudo-validation: the final validation follows
                break
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [self.validation_step(next(self.dataloader_val))
                               for _ in range(self.num_val_iterations_per_epoch)]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()
        self.training_seconds = time.monotonic() - started
        self.on_train_end()


def predict(dataset: str, fold: int, input_folder: str, output_folder: str) -> None:
    """nnUNetv2_predict's defaults (mirroring, Gaussian tiles of step 0.5, 3 + 3 worker processes)."""
    from nnunetv2.inference import predict_from_raw_data
    from nnunetv2.paths import nnUNet_results

    find_class = predict_from_raw_data.recursive_find_trainer_class_by_name
    predict_from_raw_data.recursive_find_trainer_class_by_name = (
        lambda name: nnUNetTrainerBudget if name == nnUNetTrainerBudget.__name__ else find_class(name))
    name = maybe_convert_to_dataset_name(int(dataset) if dataset.isdigit() else dataset)
    predictor = predict_from_raw_data.nnUNetPredictor(device=torch.device(os.environ.get("SAMUNET_BENCH_DEVICE",
                                                                                         "cpu")))
    predictor.initialize_from_trained_model_folder(
        join(nnUNet_results, name, f"{nnUNetTrainerBudget.__name__}__nnUNetPlans__2d"), use_folds=(fold,))
    started = time.monotonic()
    predictor.predict_from_files(input_folder, output_folder, save_probabilities=False, overwrite=True,
                                 num_processes_preprocessing=3, num_processes_segmentation_export=3)
    print(json.dumps({"prediction_seconds": time.monotonic() - started,
                      "cases": len([f for f in os.listdir(output_folder) if f.endswith((".png", ".nii.gz"))])}))


def main(argv: list[str]) -> None:
    if argv and argv[0] == "predict":
        predict(argv[1], int(argv[2]), argv[3], argv[4])
        return
    dataset, fold, budget_min = argv[0], int(argv[1]), float(argv[2])
    folder = join(nnUNet_preprocessed, maybe_convert_to_dataset_name(int(dataset) if dataset.isdigit() else dataset))
    nnUNetTrainerBudget.budget_s = budget_min * 60.0
    plans = {**load_json(join(folder, "nnUNetPlans.json")), "continue_training": False}  # as run_training sets it
    trainer = nnUNetTrainerBudget(plans=plans, configuration="2d", fold=fold,
                                  dataset_json=load_json(join(folder, "dataset.json")),
                                  device=torch.device(os.environ.get("SAMUNET_BENCH_DEVICE", "cpu")))
    trainer.run_training()
    started = time.monotonic()
    trainer.perform_actual_validation(save_probabilities=False)
    validation_s = time.monotonic() - started
    print(json.dumps({"training_seconds": trainer.training_seconds, "iterations": trainer.iterations_done,
                      "validation_seconds": validation_s, "validation_folder": join(trainer.output_folder,
                                                                                    "validation")}))


if __name__ == "__main__":
    main(sys.argv[1:])
