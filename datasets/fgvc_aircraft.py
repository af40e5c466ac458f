from dassl.data.datasets import DATASET_REGISTRY

from .base import CLIPAdaptDataset


@DATASET_REGISTRY.register()
class FGVCAircraft(CLIPAdaptDataset):
    short_name = "fgvc_aircraft"
