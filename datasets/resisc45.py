from dassl.data.datasets import DATASET_REGISTRY

from .base import CLIPAdaptDataset


@DATASET_REGISTRY.register()
class RESISC45(CLIPAdaptDataset):
    short_name = "resisc45"
