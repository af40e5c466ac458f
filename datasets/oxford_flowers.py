from dassl.data.datasets import DATASET_REGISTRY

from .base import CLIPAdaptDataset


@DATASET_REGISTRY.register()
class OxfordFlowers(CLIPAdaptDataset):
    short_name = "oxford_flowers"
