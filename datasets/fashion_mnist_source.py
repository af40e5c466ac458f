"""The unshifted source domain of bench/world (same images as FashionMNISTShift), `python -m bench.world.build`."""
from clip_adapt.engine.datasets import register_dataset

FashionMNISTSource = register_dataset("fashion_mnist_source")
