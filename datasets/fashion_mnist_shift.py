"""The shifted Fashion-MNIST target domain of bench/world (blur + noise), built by `python -m bench.world.build`."""
from clip_adapt.engine.datasets import register_dataset

FashionMNISTShift = register_dataset("fashion_mnist_shift")
