from dassl.data.datasets import DATASET_REGISTRY

from .base import CLIPAdaptDataset


@DATASET_REGISTRY.register()
class CUB(CLIPAdaptDataset):
    short_name = "cub"
