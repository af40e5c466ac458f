"""Install the CLIP-adaptation plugin (FAIR, ReCLIP, DAC, zero-shot CLIP) for the CoOp/Dassl ecosystem.

Only the `trainers` package (with its framework-free core `trainers.clip_adapt`) and `tools` are installed.
The `datasets/` folder is *not* installed as a top-level package: a site-packages `datasets` would shadow
Hugging Face's `datasets`. `train.py` imports it from the repository root, as CoOp does.

Dassl (the host framework) is not on PyPI; install it from its repository (see README, "Install").
"""
from setuptools import find_packages, setup

setup(
    name="clip-adapt",
    version="0.1.0",
    description="FAIR, ReCLIP and DAC: CLIP adaptation trainers for CoOp/Dassl",
    python_requires=">=3.9",
    packages=find_packages(include=["trainers", "trainers.*", "tools", "tools.*"]),
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
        "test": ["pytest", "submitit"],  # submitit: the SLURM path of tools.sweep, run locally in tests
        "slurm": ["submitit"],
    },
)
