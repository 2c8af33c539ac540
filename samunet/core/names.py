"""Names written once: adapters, backbones, and the file and folder names each stage writes."""
from __future__ import annotations

ADAPTER_NAMES = ("ssam", "samed", "loramednet", "cnnhead", "decoder", "full", "fusion")
BACKBONE_NAMES = ("vit_b", "vit_l", "vit_h", "medsam_vit_b", "litemedsam", "tiny")
# how a frozen encoder runs (samunet.modeling.encoder_runtime)
ENCODER_RUNTIMES = ("eager", "channels_last", "compile", "jit_freeze", "openvino", "onnxruntime")

DEFAULT_PLANS_NAME = "samunetPlans"

# image and label files (nnU-Net's file_ending); 2D images become single-slice volumes
VOLUME_FILE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha")
IMAGE_2D_FILE_ENDINGS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
SUPPORTED_FILE_ENDINGS = VOLUME_FILE_ENDINGS + IMAGE_2D_FILE_ENDINGS
LOSSY_FILE_ENDINGS = (".jpg", ".jpeg")  # never for label maps: they would change label values

# raw and preprocessed dataset folders
DATASET_JSON_FILE = "dataset.json"
FINGERPRINT_FILE = "dataset_fingerprint.json"
SPLITS_FILE = "splits_final.json"  # nnU-Net's name and format
COST_MODEL_CACHE_FILE = "cost_model_cache.json"  # under the preprocessed root: this machine's measured timings

# the preprocessed cache: <preprocessed>/<dataset>/<plans_name>/CASE{suffix}
CACHE_IMAGE_SUFFIX = "_image.npy"  # (C, S, H, W) float32
CACHE_SEG_SUFFIX = "_seg.npy"  # (S, H, W)
CACHE_PROPERTIES_SUFFIX = ".json"  # CaseProperties

# results: <results>/<dataset>/<adapter>__<plans_name>/fold_N/
MODEL_FOLDER_SEPARATOR = "__"
MODEL_PLANS_FILE = "plans.json"  # the plans copy prediction reads
NUM_FOLDS = 5  # nnU-Net's 5-fold cross-validation
ALL_FOLD = "all"  # fold_all: trained on every case (nnU-Net's convention), no validation of its own
CHECKPOINT_CHOICES = ("final", "best", "latest")
CHECKPOINT_SUFFIX = ".safetensors"  # adapter-only weights; a .json sidecar beside each
TRAINING_STATE_FILE = "checkpoint_latest_state.pt"  # resume state (optimizer, scaler, schedule)
DEBUG_FILE = "debug.json"
TEST_TIME_MIRRORING_FILE = "test_time_mirroring.json"  # per fold: did mirroring help its final validation
VALIDATION_FOLDER = "validation"
SUMMARY_FILE = "summary.json"
INFERENCE_INFORMATION_FILE = "inference_information.json"
PROGRESS_PLOT_FILE = "progress.png"

# samunet_compare: <results>/<dataset>/compare/ (every adapter x fold of one comparison)
COMPARE_FOLDER = "compare"
LEADERBOARD_CSV_FILE = "leaderboard.csv"
LEADERBOARD_MARKDOWN_FILE = "leaderboard.md"
LEADERBOARD_PLOT_FILE = "leaderboard.png"

# a shared model (samunet_export_model / samunet_install_model): a zip whose payload paths are relative to the
# results root (<dataset>/<adapter>__<plans>/...), as nnU-Net's, plus these two files at the zip's root
MODEL_ZIP_MANIFEST_FILE = "samunet_model_manifest.json"  # sha256 and size of every payload file
MODEL_ZIP_README_FILE = "README.md"  # what the model is, which base weights it needs (name + sha256)

# evaluation: the default tolerance of the normalised surface Dice (here so --help needs no metrics import)
DEFAULT_NSD_TOLERANCE_MM = 1.0


def model_folder_name(adapter: str, plans_name: str) -> str:
    return f"{adapter}{MODEL_FOLDER_SEPARATOR}{plans_name}"


def fold_folder_name(fold: int | str) -> str:
    return f"fold_{fold}"


def checkpoint_file_name(which: str) -> str:
    return f"checkpoint_{which}{CHECKPOINT_SUFFIX}"
