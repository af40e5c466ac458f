from dassl.data.datasets import DATASET_REGISTRY

from .base import CLIPAdaptDataset


@DATASET_REGISTRY.register()
class ImageNetSketch(CLIPAdaptDataset):
    short_name = "imagenet_sketch"
