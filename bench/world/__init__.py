"""A small real world: a CPU-sized CLIP trained on Fashion-MNIST and a shifted target domain on which
FAIR, ReCLIP and DAC must beat zero-shot. See bench/world/README.md; entry point `python -m bench.world.run`."""
