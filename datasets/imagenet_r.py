from dassl.data.datasets import DATASET_REGISTRY

from .base import CLIPAdaptDataset


@DATASET_REGISTRY.register()
class ImageNetR(CLIPAdaptDataset):
    short_name = "imagenet_r"
