from dassl.data.datasets import DATASET_REGISTRY

from .base import CLIPAdaptDataset


@DATASET_REGISTRY.register()
class FashionMNISTSource(CLIPAdaptDataset):
    """The unshifted source domain of bench/world (same images as FashionMNISTShift), `python -m bench.world.build`."""
    short_name = "fashion_mnist_source"
