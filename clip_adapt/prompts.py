"""Prompt templates per dataset (the sets are data in clip_adapt/templates.py), prompt filling, dataset names."""
from .templates import DEFAULT_SINGLE, IMAGENET_TEMPLATES_SELECT, TEMPLATE_SETS, prompt_set, single_template, \
    templates_of

GENERIC_ENSEMBLE = IMAGENET_TEMPLATES_SELECT  # the 7 templates CLIP's notebook selects (templates.py)
__all__ = ["DATASET_CLASSES", "DEFAULT_SINGLE", "GENERIC_ENSEMBLE", "TEMPLATE_SETS", "fill", "get_prompt_set",
           "get_templates", "short_name", "single_template"]


def get_templates(dataset, mode="single"):
    """The templates of set `mode` (templates.TEMPLATE_SETS) for a dataset short name or registry class name."""
    return templates_of(short_name(dataset), mode)


def get_prompt_set(dataset, mode, classnames):
    """templates.PromptSet (templates, class names, source note) of set `mode` for a dataset and its class names."""
    return prompt_set(short_name(dataset), mode, classnames)


def fill(templates, classname):
    """The prompts of one class: each template with the class name (underscores as spaces)."""
    name = classname.replace("_", " ")
    return [t.format(name) for t in templates]


# Short names (the `<dataset>` argument of every script and the name of configs/datasets/<name>.yaml) and the
# Dassl registry class names (CoOp's where CoOp has the dataset; Dassl itself owns CIFAR10/CIFAR100).
DATASET_CLASSES = {
    "cub": "CUB", "birdsnap": "Birdsnap", "stanford_dogs": "StanfordDogs", "nabirds": "NABirds",
    "caltech101": "Caltech101", "oxford_pets": "OxfordPets", "stanford_cars": "StanfordCars",
    "oxford_flowers": "OxfordFlowers", "food101": "Food101", "fgvc_aircraft": "FGVCAircraft", "sun397": "SUN397",
    "dtd": "DescribableTextures", "eurosat": "EuroSAT", "ucf101": "UCF101", "resisc45": "RESISC45",
    "imagenet": "ImageNet", "imagenet_v2": "ImageNetV2", "imagenet_sketch": "ImageNetSketch",
    "imagenet_a": "ImageNetA", "imagenet_r": "ImageNetR", "cifar10": "CIFAR10CLIP", "cifar100": "CIFAR100CLIP",
    "fashion_mnist_shift": "FashionMNISTShift",  # bench/world: the shifted target domain
    "fashion_mnist_source": "FashionMNISTSource",  # bench/world: the same images, unshifted (source domain)
}
_CLASS_TO_SHORT = {v.lower(): k for k, v in DATASET_CLASSES.items()}


def short_name(dataset):
    """Short name of a dataset given its short name or its registry class name (cfg.DATASET.NAME)."""
    key = dataset.lower()
    return _CLASS_TO_SHORT.get(key, key)
