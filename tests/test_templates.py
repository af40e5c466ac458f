"""The named template sets against the reference lists, and class embeddings against the reference ensemble
(CoOp's ZeroshotCLIP / ZeroshotCLIP2, ReCLIP's CLIP_LN_V.encode_text) written out here on a tiny CLIP."""
import ast
import json
import os
from pathlib import Path

import clip
import pytest
import torch
import torch.nn.functional as F

from clip_adapt.clip_loader import build_tiny_clip
from clip_adapt.clip_prompt_lists import CLIP_PROMPTS
from clip_adapt.prompts import get_prompt_set, get_templates
from clip_adapt.templates import COOP_CUSTOM_TEMPLATES, IMAGENET_TEMPLATES_SELECT, TEMPLATE_SETS
from clip_adapt.text import class_embeddings

# checkouts of the reference repositories, for the exact-list comparisons (skipped without them)
COOP = Path(os.environ.get("COOP_SRC", "/nonexistent/CoOp"))
RECLIP = Path(os.environ.get("RECLIP_SRC", "/nonexistent/ReCLIP_WACV"))
COOP_NAMES = {"OxfordPets": "oxford_pets", "OxfordFlowers": "oxford_flowers", "FGVCAircraft": "fgvc_aircraft",
              "DescribableTextures": "dtd", "EuroSAT": "eurosat", "StanfordCars": "stanford_cars",
              "Food101": "food101", "SUN397": "sun397", "Caltech101": "caltech101", "UCF101": "ucf101",
              "ImageNet": "imagenet", "ImageNetSketch": "imagenet_sketch", "ImageNetV2": "imagenet_v2",
              "ImageNetA": "imagenet_a", "ImageNetR": "imagenet_r"}
RECLIP_KEYS = {"oxford_flowers": "flowers102", "fgvc_aircraft": "fgvc", "stanford_cars": "standford_cars"}


# ---- the lists ----------------------------------------------------------------------------------------------


def test_single_is_coops_custom_template():
    assert get_templates("OxfordPets", "single") == ["a photo of a {}, a type of pet."]
    assert get_templates("dtd", "single") == ["{} texture."]
    assert get_templates("eurosat", "single") == ["a centered satellite photo of {}."]
    assert get_templates("ucf101", "single") == ["a photo of a person doing {}."]
    assert get_templates("cub", "single") == ["a photo of a {}, a type of bird."]  # the project's, CoOp lacks CUB


def test_coop_ensemble_is_zeroshotclip2_list():
    assert get_templates("imagenet", "coop_ensemble") == IMAGENET_TEMPLATES_SELECT  # exactly the 7, nothing added
    assert len(IMAGENET_TEMPLATES_SELECT) == 7
    assert IMAGENET_TEMPLATES_SELECT[0] == "itap of a {}." and IMAGENET_TEMPLATES_SELECT[-1] == "a photo of the small {}."
    dtd = get_templates("DescribableTextures", "coop_ensemble")
    assert len(dtd) == 8 and dtd[:7] == IMAGENET_TEMPLATES_SELECT and dtd[-1] == "{} texture."
    v2 = get_templates("imagenet_v2", "coop_ensemble")  # CoOp only leaves ImageNet itself without the custom one
    assert len(v2) == 8 and v2[-1] == "a photo of a {}."


def test_clip_lists_have_the_published_lengths_and_ends():
    imagenet = get_templates("imagenet", "clip")
    # CLIP's 80 ImageNet templates, preceded by "a photo of a {}." in ReCLIP's list (ReCLIP-T trains on it)
    assert len(imagenet) == 81 and imagenet[0] == "a photo of a {}." and imagenet[1] == "a bad photo of a {}."
    assert imagenet[-1] == "a tattoo of the {}." and set(IMAGENET_TEMPLATES_SELECT) <= set(imagenet)
    ucf = get_templates("ucf101", "clip")
    assert len(ucf) == 48 and ucf[0] == "a photo of a person {}."
    assert ucf[-1] == "a demonstration of the person practicing {}."
    dtd = get_templates("dtd", "clip")
    assert len(dtd) == 8 and dtd[0] == "a photo of a {} texture." and dtd[-1] == "a photo of the {} object."
    assert get_templates("oxford_pets", "clip") == ["a photo of a {}, a type of pet."]
    assert get_templates("food101", "clip") == ["a photo of {}, a type of food."]
    assert get_templates("oxford_flowers", "clip") == ["a photo of a {}, a type of flower."]
    assert len(get_templates("caltech101", "clip")) == 34 and len(get_templates("eurosat", "clip")) == 3
    assert get_templates("imagenet_sketch", "clip") == imagenet  # variants use ImageNet's list
    assert get_templates("cub", "clip") == get_templates("cub", "single")  # no CLIP list: the single template
    names = CLIP_PROMPTS["imagenet"]["classes"]
    assert len(names) == 1000 and names[0] == "tench" and names[-1] == "toilet paper"
    assert len(CLIP_PROMPTS["oxford_pets"]["classes"]) == 37 and CLIP_PROMPTS["sun397"]["classes"][0] == "abbey"


def test_unknown_set_is_named():
    with pytest.raises(ValueError, match="TEMPLATES.*coop_ensemble.*'many'"):
        get_templates("dtd", "many")


def test_clip_class_names_replace_the_datasets_only_in_label_order():
    eurosat = [f"c{i}" for i in range(10)]
    ps = get_prompt_set("EuroSAT", "clip", eurosat)
    assert ps.classnames == CLIP_PROMPTS["eurosat"]["classes"] and ps.classnames[2] == "brushland or shrubland"
    assert get_prompt_set("eurosat", "clip", eurosat[:3]).classnames == eurosat[:3]  # counts differ: keep ours
    caltech = [f"c{i}" for i in range(101)]  # same count, but CLIP's Caltech order is not the loader's
    assert get_prompt_set("caltech101", "clip", caltech).classnames == caltech
    assert get_prompt_set("eurosat", "single", eurosat).classnames == eurosat  # other sets never rename
    assert get_prompt_set("cub", "clip", ["a", "b"]).classnames == ["a", "b"]


@pytest.mark.skipif(not (COOP / "trainers" / "zsclip.py").exists(),
                    reason="set COOP_SRC to a checkout of CoOp's repository: the exact-list comparison reads its source")
def test_coop_lists_equal_coops_source():
    tree = ast.parse((COOP / "trainers" / "zsclip.py").read_text())
    custom = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                  and n.targets[0].id == "CUSTOM_TEMPLATES")
    assert {COOP_NAMES[k]: v for k, v in custom.items()} == COOP_CUSTOM_TEMPLATES
    tree = ast.parse((COOP / "trainers" / "imagenet_templates.py").read_text())
    select = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                  and n.targets[0].id == "IMAGENET_TEMPLATES_SELECT")
    assert select == IMAGENET_TEMPLATES_SELECT


@pytest.mark.skipif(not (RECLIP / "prompts" / "clip_prompts").exists(),
                    reason="set RECLIP_SRC to a checkout of the official ReCLIP repository: the exact-list comparison reads it")
def test_clip_lists_equal_reclips_file():
    ref = json.loads((RECLIP / "prompts" / "clip_prompts").read_text())
    for ours, entry in CLIP_PROMPTS.items():
        assert entry == ref[RECLIP_KEYS.get(ours, ours)], ours


# ---- the ensemble embedding ---------------------------------------------------------------------------------


def coop_zeroshot_weights(model, classnames, templates):
    """CoOp's ZeroshotCLIP2 (and, with one template, ZeroshotCLIP) written out: per template, the class prompts'
    embeddings normalised and summed; the sum divided by the number of templates, then normalised."""
    total = 0
    with torch.no_grad():
        for t in templates:
            tokens = torch.cat([clip.tokenize(t.format(c.replace("_", " "))) for c in classnames])
            feats = model.encode_text(tokens).float()
            total = total + feats / feats.norm(dim=-1, keepdim=True)
    mean = total / len(templates)
    return mean / mean.norm(dim=-1, keepdim=True)


def reclip_zeroshot_weights(model, classnames, templates):
    """ReCLIP's CLIP_LN_V.encode_text written out: per class, all its prompts embedded, normalised, averaged,
    normalised (returned here as C x D instead of D x C)."""
    rows = []
    with torch.no_grad():
        for c in classnames:
            feats = model.encode_text(clip.tokenize([t.format(c) for t in templates])).float()
            rows.append(F.normalize(F.normalize(feats, dim=-1).mean(0), dim=-1))
    return torch.stack(rows)


@pytest.mark.parametrize("dataset,mode", [("dtd", "single"), ("dtd", "coop_ensemble"), ("dtd", "clip"),
                                          ("imagenet", "coop_ensemble"), ("imagenet", "clip"), ("eurosat", "clip")])
def test_class_embeddings_equal_the_reference_ensembles(mode, dataset):
    model = build_tiny_clip(seed=3)
    n = {"eurosat": len(CLIP_PROMPTS["eurosat"]["classes"]), "imagenet": 2}.get(dataset, 5)
    ps = get_prompt_set(dataset, mode, [f"class {i}" for i in range(n)])  # ReCLIP keeps underscores
    ours = class_embeddings(model, ps.classnames, ps.templates)
    coop = coop_zeroshot_weights(model, ps.classnames, ps.templates)
    reclip = reclip_zeroshot_weights(model, ps.classnames, ps.templates)
    torch.testing.assert_close(ours, coop, rtol=0, atol=2e-6)
    torch.testing.assert_close(ours, reclip, rtol=0, atol=2e-6)
    assert ours.shape == (n, 32)
