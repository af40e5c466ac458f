from dassl.data.datasets import DATASET_REGISTRY

from .base import CLIPAdaptDataset


@DATASET_REGISTRY.register()
class Caltech101(CLIPAdaptDataset):
    short_name = "caltech101"
