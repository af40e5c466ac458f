"""Dassl datasets of this project (imported by train.py). One small file per dataset over one shared loader
(datasets/base.py -> trainers/clip_adapt/data/). Registry names are trainers.clip_adapt.prompts.DATASET_CLASSES.

This package lives at the repository root and is not installed by setup.py (a top-level `datasets` in
site-packages would shadow Hugging Face's `datasets`).
"""
from . import (  # noqa: F401  (each module registers its class)
    cub, birdsnap, stanford_dogs, nabirds, caltech101, oxford_pets,
    stanford_cars, oxford_flowers, food101, fgvc_aircraft, sun397, dtd,
    eurosat, ucf101, resisc45, imagenet, imagenet_v2, imagenet_sketch,
    imagenet_a, imagenet_r, cifar10, cifar100,
)
from . import fashion_mnist_shift  # noqa: F401,E402  bench/world's target domain (ISSUE 8)
from . import fashion_mnist_source  # noqa: F401,E402  bench/world's source domain

