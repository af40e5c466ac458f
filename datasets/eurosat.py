from dassl.data.datasets import DATASET_REGISTRY

from .base import CLIPAdaptDataset


@DATASET_REGISTRY.register()
class EuroSAT(CLIPAdaptDataset):
    short_name = "eurosat"
