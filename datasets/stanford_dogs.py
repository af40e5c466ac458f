from dassl.data.datasets import DATASET_REGISTRY

from .base import CLIPAdaptDataset


@DATASET_REGISTRY.register()
class StanfordDogs(CLIPAdaptDataset):
    short_name = "stanford_dogs"
