from dassl.data.datasets import DATASET_REGISTRY

from .base import CLIPAdaptDataset


@DATASET_REGISTRY.register()
class UCF101(CLIPAdaptDataset):
    short_name = "ucf101"
