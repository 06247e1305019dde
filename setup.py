"""pomp_plugins: POMP prompt pre-training and its zero-shot plugins for Detectron2 and MMSegmentation."""

from setuptools import find_packages, setup

setup(
    name="pomp_plugins",
    version="0.1.0",
    description="POMP soft prompts for CLIP: pre-training, zero-shot classification, Detectron2 and MMSeg plugins",
    packages=find_packages(include=["pomp_plugins", "pomp_plugins.*"]),
    package_data={"pomp_plugins": ["prompt/model_configs/*.json", "data/*.json", "data/splits/*.json"]},
    python_requires=">=3.10",
    install_requires=["torch>=2.1", "open_clip_torch>=3.3,<3.4", "timm", "numpy", "tqdm", "pillow"],
    extras_require={
        "detectron2": ["pycocotools", "lvis", "fvcore", "iopath", "centernet2"],  # centernet2: CenterNet proposals
        "mmseg": ["mmengine>=0.10", "mmsegmentation>=1.2", "scipy"],
        "dev": ["pytest"],
    },
)
