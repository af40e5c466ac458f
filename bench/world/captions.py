"""Captions of the world's CLIP: class names in CoOp-style templates, and hand-written class descriptions.

The descriptions live in bench/world/descriptions.json (CuPL's format {"class": ["sentence", ...]}); the same file
is FAIR's TRAINER.FAIR.DESCRIPTIONS in the world's config, so the descriptions FAIR anchors on are in the language the
CLIP was trained with (as CuPL's GPT descriptions are for a web-trained CLIP).
"""
import json
from pathlib import Path

from clip_adapt.prompts import GENERIC_ENSEMBLE

from .fashion_mnist import CLASSNAMES

DESCRIPTIONS_FILE = Path(__file__).resolve().with_name("descriptions.json")

# CoOp/CLIP-style templates: the default single template, CLIP's 7-template ensemble, and clothing variants.
TEMPLATES = [
    "a photo of a {}.",
    *GENERIC_ENSEMBLE,
    "a photo of a {}, a type of clothing.",
    "a black and white photo of a {}.",
    "a low resolution photo of a {}.",
    "a picture of the {}.",
    "a product photo of a {}.",
    "a {}.",
    "{}.",
]


def load_descriptions(path=DESCRIPTIONS_FILE):
    data = json.loads(Path(path).read_text())
    missing = [c for c in CLASSNAMES if not data.get(c)]
    if missing:
        raise ValueError(f"{path}: no descriptions for classes {missing}")
    return {c: list(data[c]) for c in CLASSNAMES}


def class_captions():
    """Per class (label order) the list of its captions: every template filled with the name, then descriptions."""
    desc = load_descriptions()
    return [[t.format(c) for t in TEMPLATES] + desc[c] for c in CLASSNAMES]
