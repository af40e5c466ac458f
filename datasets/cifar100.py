from dassl.data.datasets import DATASET_REGISTRY

from .base import CLIPAdaptDataset


@DATASET_REGISTRY.register()
class CIFAR100CLIP(CLIPAdaptDataset):
    short_name = "cifar100"
