"""Named prompt-template sets (data) and how a set resolves to (templates, class names) for a dataset.

Sets (`TEMPLATE_SETS`), selected by each method's `TRAINER.<METHOD>.TEMPLATES` key:
- `single`: one template per dataset, CoOp's `CUSTOM_TEMPLATES` (CoOp's ZeroshotCLIP). Datasets CoOp lacks get this
  project's template in the same style (`PROJECT_SINGLE_TEMPLATES`).
- `coop_ensemble`: CoOp's ZeroshotCLIP2: the 7 `IMAGENET_TEMPLATES_SELECT` plus the dataset's `single` template,
  except for ImageNet itself, which gets the 7 alone.
- `clip`: CLIP's published per-dataset prompt list and cleaned class names, as ReCLIP uses them
  (clip_adapt/clip_prompt_lists.py). ImageNet variants use ImageNet's list; datasets CLIP's lists do not cover
  fall back to the `single` template. CLIP's class names replace the dataset's only where the list's class order
  is the dataset's label order (`CLIP_NAMES_IN_LABEL_ORDER`) and the class counts agree; otherwise the dataset's
  own class names are kept.
- `ensemble`: this project's own variant (not a reference list): a few templates with the dataset domain's words
  followed by the 7 `IMAGENET_TEMPLATES_SELECT`.
Every set's class embedding is the reference ensemble (clip_adapt/text.py): each prompt's embedding normalised,
averaged over the templates, re-normalised.
"""
from dataclasses import dataclass

from .clip_prompt_lists import CLIP_PROMPTS

TEMPLATE_SETS = ("single", "coop_ensemble", "clip", "ensemble")

# CoOp (Zhou et al., IJCV 2022), trainers/zsclip.py CUSTOM_TEMPLATES (github.com/KaiyangZhou/CoOp, commit
# ff61507c790454bce7c5052c3ac39e60772f1f89), keyed here by this project's short name instead of the Dassl name.
COOP_CUSTOM_TEMPLATES = {
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
    "imagenet_sketch": "a photo of a {}.",
    "imagenet_v2": "a photo of a {}.",
    "imagenet_a": "a photo of a {}.",
    "imagenet_r": "a photo of a {}.",
}
# This project's single templates for the datasets CoOp does not have, in CoOp's style (not from a reference).
PROJECT_SINGLE_TEMPLATES = {
    "cub": "a photo of a {}, a type of bird.",
    "birdsnap": "a photo of a {}, a type of bird.",
    "nabirds": "a photo of a {}, a type of bird.",
    "stanford_dogs": "a photo of a {}, a type of dog.",
    "resisc45": "satellite imagery of {}.",
    "cifar10": "a photo of a {}.",
    "cifar100": "a photo of a {}.",
}
DEFAULT_SINGLE = "a photo of a {}."  # any other dataset (this project's choice; CoOp's ImageNet template)

# CoOp trainers/imagenet_templates.py IMAGENET_TEMPLATES_SELECT: the 7 templates CLIP's prompt-engineering notebook
# (github.com/openai/CLIP, notebooks/Prompt_Engineering_for_ImageNet.ipynb) selects from its 80 ImageNet templates.
IMAGENET_TEMPLATES_SELECT = [
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
]

# `clip` for datasets absent from CLIP's lists: the ImageNet variants are evaluated with ImageNet's prompts (as in
# CLIP's robustness evaluation); any other dataset falls back to its `single` template.
CLIP_LIST_OF = {"imagenet_v2": "imagenet", "imagenet_sketch": "imagenet", "imagenet_a": "imagenet",
                "imagenet_r": "imagenet"}
# Datasets whose loader's label order is the order of CLIP's class-name list (CoOp's split files and this
# project's official-archive readers use the datasets' official label orders, the orders CLIP's lists follow).
# Not here: caltech101 (CLIP's list has 101 classes, with faces first; CoOp's has 100 in folder order), birdsnap
# (this project orders species by id, CLIP's list is sorted by name), imagenet_a / imagenet_r (200-class subsets).
CLIP_NAMES_IN_LABEL_ORDER = frozenset({
    "imagenet", "imagenet_v2", "imagenet_sketch", "oxford_pets", "oxford_flowers", "fgvc_aircraft", "dtd", "eurosat",
    "stanford_cars", "food101", "sun397", "ucf101", "resisc45", "cifar10", "cifar100",
})

# ---- `ensemble`: this project's domain ensembles (not a reference list) ------------------------------------
DOMAIN_ENSEMBLE = {
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
DATASET_DOMAIN = {
    "cub": "bird", "birdsnap": "bird", "nabirds": "bird", "stanford_dogs": "dog", "oxford_pets": "pet",
    "oxford_flowers": "flower", "fgvc_aircraft": "aircraft", "stanford_cars": "car", "food101": "food",
    "dtd": "texture", "eurosat": "satellite", "resisc45": "satellite", "ucf101": "action", "sun397": "scene",
}


@dataclass
class PromptSet:
    """What a template set gives a dataset: the templates, the class names to fill them with, and a note saying
    where both came from (for the log)."""
    name: str
    templates: list
    classnames: list
    source: str


def check_set(name, key="TEMPLATES"):
    if name not in TEMPLATE_SETS:
        raise ValueError(f"{key} must be one of {TEMPLATE_SETS}, got {name!r}")
    return name


def single_template(dataset):
    """CoOp's CUSTOM_TEMPLATES entry, else this project's template in the same style, else DEFAULT_SINGLE."""
    return COOP_CUSTOM_TEMPLATES.get(dataset) or PROJECT_SINGLE_TEMPLATES.get(dataset, DEFAULT_SINGLE)


def clip_list(dataset):
    """(key, entry) of CLIP's list a dataset uses, or (None, None) when none covers it."""
    key = dataset if dataset in CLIP_PROMPTS else CLIP_LIST_OF.get(dataset)
    return (key, CLIP_PROMPTS[key]) if key else (None, None)


def templates_of(dataset, name):
    """The template list of set `name` for a dataset short name."""
    check_set(name)
    if name == "single":
        return [single_template(dataset)]
    if name == "coop_ensemble":
        # CoOp's ZeroshotCLIP2 appends the custom template for every dataset except ImageNet
        return list(IMAGENET_TEMPLATES_SELECT) + ([] if dataset == "imagenet" else [single_template(dataset)])
    if name == "clip":
        _, entry = clip_list(dataset)
        return list(entry["templates"]) if entry else [single_template(dataset)]
    domain = DATASET_DOMAIN.get(dataset)
    return (DOMAIN_ENSEMBLE[domain] if domain else [single_template(dataset)]) + list(IMAGENET_TEMPLATES_SELECT)


def prompt_set(dataset, name, classnames):
    """Templates and class names of set `name` for a dataset short name whose labels are named `classnames`."""
    templates = templates_of(dataset, name)
    classnames = list(classnames)
    if name != "clip":
        return PromptSet(name, templates, classnames, f"{name} templates, the dataset's class names")
    key, entry = clip_list(dataset)
    if entry is None:
        return PromptSet(name, templates, classnames,
                         f"no CLIP list for {dataset!r}: its single template and the dataset's class names")
    if dataset in CLIP_NAMES_IN_LABEL_ORDER and len(entry["classes"]) == len(classnames):
        return PromptSet(name, templates, list(entry["classes"]), f"CLIP's {key!r} templates and class names")
    why = ("its class order is not the dataset's label order" if dataset not in CLIP_NAMES_IN_LABEL_ORDER
           else f"it has {len(entry['classes'])} classes, the dataset {len(classnames)}")
    return PromptSet(name, templates, classnames,
                     f"CLIP's {key!r} templates; the dataset's class names ({why})")
