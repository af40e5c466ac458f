from dassl.data.datasets import DATASET_REGISTRY

from .base import CLIPAdaptDataset


@DATASET_REGISTRY.register()
class Birdsnap(CLIPAdaptDataset):
    short_name = "birdsnap"
