from setuptools import find_packages, setup

setup(
    name="instseg",
    version="0.1.0",
    description="Instance segmentation with Detectron2's Mask R-CNN: fine-tune, predict, annotate videos",
    packages=find_packages(include=["instseg", "instseg.*"]),
    python_requires=">=3.10",
    # Detectron2 is not on PyPI: scripts/install_detectron2.py installs it (see README).
    install_requires=[
        "torch>=2.14,<2.15",  # as requirements.txt; weights_only loading is explicit anyway
        "torchvision>=0.29,<0.30",
        "numpy",
        "opencv-python-headless",
        "pycocotools",
        "fvcore",
        "iopath",
        "tqdm",
        "matplotlib",
        "av",
        "faster-coco-eval",
        "iterative-stratification",  # stratified dataset splits
        "scipy",  # Hungarian matching of Detectron2's video trackers
        "segmentation-models-pytorch",  # U-Net & co. as a Detectron2 meta-architecture
    ],
    extras_require={"test": ["pytest", "ruff", "supervision", "motmetrics"]},
    entry_points={"console_scripts": ["instseg = instseg.cli.commands:main"]},
)
