from dassl.data.datasets import DATASET_REGISTRY

from .base import CLIPAdaptDataset


@DATASET_REGISTRY.register()
class FashionMNISTShift(CLIPAdaptDataset):
    """The shifted Fashion-MNIST target domain of bench/world (blur + noise), built by `python -m bench.world.build`."""
    short_name = "fashion_mnist_shift"
