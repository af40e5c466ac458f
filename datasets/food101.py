from dassl.data.datasets import DATASET_REGISTRY

from .base import CLIPAdaptDataset


@DATASET_REGISTRY.register()
class Food101(CLIPAdaptDataset):
    short_name = "food101"
