"""Templates per dataset and the batched, cached class text embeddings."""
import clip
import pytest
import torch

from clip_adapt.cache import FeatureCache
from clip_adapt.clip_loader import build_tiny_clip
from clip_adapt.prompts import DATASET_CLASSES, fill, get_templates, short_name
from clip_adapt.text import class_embeddings, encode_texts


def test_single_templates_are_coop_style_and_contain_a_slot():
    assert get_templates("oxford_pets") == ["a photo of a {}, a type of pet."]
    assert get_templates("DescribableTextures") == ["{} texture."]  # registry class name works too
    for name in DATASET_CLASSES:
        (t,) = get_templates(name, "single")
        assert t.count("{}") == 1


def test_ensemble_has_several_templates_including_generic_ones():
    ens = get_templates("cub", "ensemble")
    assert len(ens) > 5 and "itap of a {}." in ens and all("{}" in t for t in ens)
    with pytest.raises(ValueError, match="single"):
        get_templates("cub", "many")


def test_short_name_maps_registry_names():
    for short, cls in DATASET_CLASSES.items():
        assert short_name(cls) == short and short_name(short) == short


def test_fill_replaces_underscores():
    assert fill(["a photo of a {}."], "Black_footed_Albatross") == ["a photo of a Black footed Albatross."]


def test_batched_encoding_equals_one_batch():
    model = build_tiny_clip()
    texts = [f"a photo of class {i}." for i in range(7)]
    a = encode_texts(model, texts, batch_size=3)
    b = encode_texts(model, texts, batch_size=100)
    assert a.shape == (7, 32)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a.norm(dim=-1), torch.ones(7), atol=1e-5)


def test_class_embeddings_average_templates_and_normalise():
    model = build_tiny_clip()
    templates = ["a photo of a {}.", "art of the {}."]
    emb = class_embeddings(model, ["cat", "dog"], templates)
    per = encode_texts(model, fill(templates, "cat"))
    expected = per.mean(0) / per.mean(0).norm()
    assert torch.allclose(emb[0], expected, atol=1e-5)


def test_class_embeddings_cache_skips_the_encoder_on_reuse(tmp_path, monkeypatch):
    model = build_tiny_clip()
    cache = FeatureCache(tmp_path)
    first = class_embeddings(model, ["cat", "dog"], ["a {}."], cache=cache, backbone_id="abc")
    calls = []
    monkeypatch.setattr(model, "encode_text", lambda *a: calls.append(1))
    again = class_embeddings(model, ["cat", "dog"], ["a {}."], cache=FeatureCache(tmp_path), backbone_id="abc")
    assert calls == [] and torch.equal(first, again)
    with pytest.raises(AttributeError):  # a different key (backbone) must not hit the cache: encoder called
        class_embeddings(model, ["cat", "dog"], ["a {}."], cache=FeatureCache(tmp_path), backbone_id="xyz")


def test_class_text_cache_is_keyed_by_the_weights_dtype(tmp_path):
    from clip_adapt.cache import FeatureCache
    from clip_adapt.clip_loader import build_tiny_clip
    from clip_adapt.text import class_embeddings

    model = build_tiny_clip()
    cache = FeatureCache(tmp_path)
    first = class_embeddings(model, ["cat", "dog"], ["a photo of a {}."], cache=cache, backbone_id="x")
    again = class_embeddings(model, ["cat", "dog"], ["a photo of a {}."], cache=cache, backbone_id="x")
    assert (cache.hits, cache.misses) == (1, 1) and torch.equal(first, again)
    clip.model.convert_weights(model)  # fp16 weights, as on GPU: another entry, never served the fp32 ones
    class_embeddings(model, ["cat", "dog"], ["a photo of a {}."], cache=cache, backbone_id="x")
    assert cache.misses == 2
