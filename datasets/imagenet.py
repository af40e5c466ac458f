from dassl.data.datasets import DATASET_REGISTRY

from .base import CLIPAdaptDataset


@DATASET_REGISTRY.register()
class ImageNet(CLIPAdaptDataset):
    short_name = "imagenet"
