from dassl.data.datasets import DATASET_REGISTRY

from .base import CLIPAdaptDataset


@DATASET_REGISTRY.register()
class ImageNetV2(CLIPAdaptDataset):
    short_name = "imagenet_v2"
