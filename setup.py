"""Install the CLIP-adaptation plugin (FAIR, ReCLIP, DAC, zero-shot CLIP) for the CoOp/Dassl ecosystem.

Only the `clip_adapt` package is installed: its framework-free core and, in `clip_adapt.engine`, the Dassl edge.
The CoOp-style folders `trainers/` and `datasets/` are not installed (CoOp has folders of these names, and a
site-packages `datasets` would shadow Hugging Face's); neither is `tools/`, run from the repository root.

Dassl (the host framework) is not on PyPI; install it from its repository (see README, "Install").
"""
from setuptools import find_packages, setup

setup(
    name="clip-adapt",
    version="0.1.0",
    description="FAIR, ReCLIP and DAC: CLIP adaptation trainers for CoOp/Dassl",
    python_requires=">=3.9",
    packages=find_packages(include=["clip_adapt", "clip_adapt.*"]),
    install_requires=[
        "torch>=2.0",
        "torchvision",
        "setuptools<81",  # openai-clip imports pkg_resources
        "openai-clip",
        "ftfy",
        "regex",
        "yacs",
        "gdown",
        "tabulate",
        "tqdm",
        "numpy",
        "scipy",
        "Pillow",
        "matplotlib",
    ],
    extras_require={
        # what `import dassl` pulls in (Dassl itself: see README)
        "dassl": ["wilds", "pandas", "scikit-learn", "tensorboard", "future"],
        "openclip": ["open-clip-torch>=2.24", "timm", "safetensors", "huggingface_hub"],  # open_clip backbones
        # submitit: the SLURM path of tools.sweep, run locally in tests; open_clip/timm: the open_clip tests
        "test": ["pytest", "submitit", "open-clip-torch>=2.24", "timm"],
        "slurm": ["submitit"],
    },
)
