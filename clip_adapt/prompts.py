"""Prompt templates per dataset: CoOp's single hand-crafted template and CLIP-style ensembles.

Single templates are CoOp's `CUSTOM_TEMPLATES` (Zhou et al., IJCV 2022) for the datasets CoOp has, and the same
style for the others. `GENERIC_ENSEMBLE` is the 7-template subset CLIP's authors recommend for ImageNet
(Radford et al. 2021, prompt-engineering notebook); per-dataset ensembles add domain words, in the spirit of
CLIP's per-dataset prompt lists.
"""

SINGLE = {
    "oxford_pets": "a photo of a {}, a type of pet.",
    "oxford_flowers": "a photo of a {}, a type of flower.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
    "dtd": "{} texture.",
    "eurosat": "a centered satellite photo of {}.",
    "stanford_cars": "a photo of a {}.",
    "food101": "a photo of {}, a type of food.",
    "sun397": "a photo of a {}.",
    "caltech101": "a photo of a {}.",
    "ucf101": "a photo of a person doing {}.",
    "imagenet": "a photo of a {}.",
    "imagenet_v2": "a photo of a {}.",
    "imagenet_sketch": "a photo of a {}.",
    "imagenet_a": "a photo of a {}.",
    "imagenet_r": "a photo of a {}.",
    "cub": "a photo of a {}, a type of bird.",
    "birdsnap": "a photo of a {}, a type of bird.",
    "nabirds": "a photo of a {}, a type of bird.",
    "stanford_dogs": "a photo of a {}, a type of dog.",
    "resisc45": "satellite imagery of {}.",
    "cifar10": "a photo of a {}.",
    "cifar100": "a photo of a {}.",
}
DEFAULT_SINGLE = "a photo of a {}."

GENERIC_ENSEMBLE = [
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
]

_DOMAIN_ENSEMBLE = {
    "bird": ["a photo of a {}, a type of bird.", "a close-up photo of a {}, a type of bird.",
             "a photo of the {}, a bird species.", "a {} perched on a branch."],
    "dog": ["a photo of a {}, a type of dog.", "a photo of my {}, a dog breed.", "a close-up photo of a {} dog."],
    "pet": ["a photo of a {}, a type of pet.", "a photo of my {}.", "a close-up photo of a {}, a pet."],
    "flower": ["a photo of a {}, a type of flower.", "a close-up photo of a {} flower."],
    "aircraft": ["a photo of a {}, a type of aircraft.", "a photo of the {}, a type of aircraft."],
    "car": ["a photo of a {}.", "a photo of my {}.", "a photo of the {}, a type of car.", "a photo of a {} car."],
    "food": ["a photo of {}, a type of food.", "a close-up photo of {}, a dish."],
    "texture": ["{} texture.", "a photo of a {} texture.", "a photo of a {} pattern.", "a photo of a {} surface."],
    "satellite": ["a centered satellite photo of {}.", "satellite imagery of {}.", "an aerial photo of {}.",
                  "a satellite photo of the {}."],
    "action": ["a photo of a person doing {}.", "a video frame of a person doing {}.",
               "a photo of a person performing {}."],
    "scene": ["a photo of a {}.", "a photo of the {}, a type of place.", "a photo of a {} scene."],
}
_DATASET_DOMAIN = {
    "cub": "bird", "birdsnap": "bird", "nabirds": "bird", "stanford_dogs": "dog", "oxford_pets": "pet",
    "oxford_flowers": "flower", "fgvc_aircraft": "aircraft", "stanford_cars": "car", "food101": "food",
    "dtd": "texture", "eurosat": "satellite", "resisc45": "satellite", "ucf101": "action", "sun397": "scene",
}


def get_templates(dataset, mode="single"):
    """Templates for a dataset short name: `single` -> [one template]; `ensemble` -> a list of templates."""
    dataset = short_name(dataset)
    if mode == "single":
        return [SINGLE.get(dataset, DEFAULT_SINGLE)]
    if mode == "ensemble":
        domain = _DATASET_DOMAIN.get(dataset)
        return (_DOMAIN_ENSEMBLE[domain] if domain else [SINGLE.get(dataset, DEFAULT_SINGLE)]) + GENERIC_ENSEMBLE
    raise ValueError(f"template mode must be 'single' or 'ensemble', got {mode!r}")


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
