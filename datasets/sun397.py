from dassl.data.datasets import DATASET_REGISTRY

from .base import CLIPAdaptDataset


@DATASET_REGISTRY.register()
class SUN397(CLIPAdaptDataset):
    short_name = "sun397"
