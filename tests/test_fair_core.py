"""FAIR's framework-free core (methods/FAIR.md): every "Expected behaviour" of the spec, plus the parts' contracts.

Runs without Dassl, on a tiny randomly initialised CLIP (32 px).
"""
import hashlib
import io
import json
import urllib.request
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from clip_adapt.cache import FeatureCache
from clip_adapt.clip_loader import build_tiny_clip
from clip_adapt.fair import (ClassDescriptionAnchors, DescriptionsError, DistributionAlignment, FAIRModel,
                                      FAIRSettings, TwoViewDataset, ambiguity_weight, crop_weights,
                                      description_embeddings, fair_loss, fairness_term, get_descriptions,
                                      margin_factor, match_descriptions, normalize_classname, pseudo_labels,
                                      sample_image_boxes, strong_transform, wca_scores, weak_transform)
from clip_adapt.fair import descriptions as desc_mod
from clip_adapt.optim import build_optimizer
from clip_adapt.text import class_embeddings

SHARED_DESCRIPTIONS = Path(__file__).resolve().parents[2] / "shared" / "descriptions"
CLASSES = ["cat", "dog", "bird"]
DESCRIPTIONS = [["a small furry animal with whiskers", "a cat sleeping", "a pointy-eared cat"],
                ["a loyal dog", "a dog with a wagging tail"],
                ["a bird with feathers", "a bird in flight", "a bird's beak", "a bird on a branch"]]
TAU_T = math.e ** 2


def _build(arch="vit", descriptions=DESCRIPTIONS, settings=None, seed=0, **kw):
    """(FAIRModel, clip model, name embeddings, description embeddings, mask) on a tiny CLIP."""
    clip_model = build_tiny_clip(seed=seed, arch=arch)
    name_emb = class_embeddings(clip_model, CLASSES, ["a photo of a {}."])
    desc_emb, mask = description_embeddings(clip_model, descriptions)
    cda = ClassDescriptionAnchors(desc_emb, mask, name_emb, TAU_T)
    model = FAIRModel(clip_model.visual, name_emb, cda, clip_model.logit_scale.exp(), settings or FAIRSettings(),
                      **kw)
    return model, clip_model, name_emb, desc_emb, mask


def _images(n=4, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _crops(n=4, n_crops=8, seed=100):
    """B x N x C x H x W crops as the data loader delivers them (their content does not matter here)."""
    return torch.randn(n, n_crops, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# ---- Expected behaviour 1: LAS at init equals the closed-form WCA score, computed independently here ----------
def test_las_at_init_equals_independently_computed_wca():
    settings = FAIRSettings(n_crops=5, topk_crops=3, tau_v=2.0)
    model, clip_model, name_emb, desc_emb, mask = _build(settings=settings)
    images, crops = _images(2), _crops(2, 5, seed=7)
    _, _, las_logits, _ = model.teacher(images, crops)

    # the same crops, encoded one by one, scored with plain Python loops
    with torch.no_grad():
        g = F.normalize(clip_model.encode_image(images).float(), dim=-1)
        f = F.normalize(torch.stack([clip_model.encode_image(c[None])[0] for c in crops.flatten(0, 1)]).float(),
                        dim=-1)
    f = f.view(2, 5, -1)
    t = F.normalize(desc_emb, dim=-1)
    tn = F.normalize(name_emb, dim=-1)
    for b in range(2):
        rel = [float(f[b, i] @ g[b]) for i in range(5)]
        kept = sorted(range(5), key=lambda i: -rel[i])[:3]
        z = sum(math.exp(2.0 * rel[i]) for i in kept)
        w = {i: math.exp(2.0 * rel[i]) / z for i in kept}
        for c, sentences in enumerate(DESCRIPTIONS):
            m = len(sentences)
            e = [math.exp(TAU_T * float(t[c, j] @ tn[c])) for j in range(m)]
            v = [x / sum(e) for x in e]
            wca = sum(w[i] * sum(v[j] * float(f[b, i] @ t[c, j]) for j in range(m)) for i in kept)
            assert las_logits[b, c].item() / model.logit_scale.item() == pytest.approx(wca, abs=1e-5)


def test_wca_scores_helper_matches_las_at_init_and_differs_after_training_the_anchors():
    model, _, _, desc_emb, mask = _build()
    f = F.normalize(torch.randn(3, 4, 32), dim=-1)
    w = torch.softmax(torch.randn(3, 4), dim=1)
    wca = wca_scores(f, w, desc_emb, model.cda.v)
    torch.testing.assert_close(model.las_logits(f, w) / model.logit_scale, wca)
    with torch.no_grad():
        model.cda.anchors.add_(0.5 * torch.randn_like(model.cda.anchors) * mask.unsqueeze(-1))
    assert not torch.allclose(model.las_logits(f, w) / model.logit_scale, wca, atol=1e-3)  # now learned


# ---- Expected behaviour 2: identical crops + one description per class -> zero-shot CLIP ----------------------
def test_las_reduces_to_zero_shot_with_identical_crops_and_one_description_per_class():
    clip_model = build_tiny_clip(seed=1)
    name_emb = class_embeddings(clip_model, CLASSES, ["a photo of a {}."])
    # one "description" per class: the class-name prompt itself
    desc_emb, mask = description_embeddings(clip_model, [[f"a photo of a {c}."] for c in CLASSES])
    cda = ClassDescriptionAnchors(desc_emb, mask, name_emb, TAU_T)
    model = FAIRModel(clip_model.visual, name_emb, cda, clip_model.logit_scale.exp(),
                      FAIRSettings(crop_scale=(1.0, 1.0), n_crops=4, topk_crops=2))
    images = _images(5)
    _, zs, las, w = model.teacher(images, images.unsqueeze(1).expand(-1, 4, -1, -1, -1))  # every crop IS the view
    with torch.no_grad():
        g = F.normalize(clip_model.encode_image(images).float(), dim=-1)
        zero_shot = clip_model.logit_scale.exp() * g @ name_emb.t()
    torch.testing.assert_close(las, zero_shot, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(zs, zero_shot, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(w.sum(1), torch.ones(5))


# ---- Expected behaviour 3: weights in [0, 1]; a tied sample weighs less than a clear one ----------------------
@pytest.mark.parametrize("mode", ["none", "margin", "ratio"])
def test_weights_lie_in_unit_interval(mode):
    gen = torch.Generator().manual_seed(0)
    zs, las = 30 * torch.randn(256, 10, generator=gen), 30 * torch.randn(256, 10, generator=gen)
    pl = pseudo_labels(zs, las, gamma=0.5, mode=mode)
    assert pl.weights.min() >= 0 and pl.weights.max() <= 1
    assert pl.weights.max() > 0.5  # not trivially zero
    assert torch.equal(pl.labels, pl.probs.argmax(1))


@pytest.mark.parametrize("mode", ["margin", "ratio"])
def test_tied_sample_gets_lower_weight_than_clear_one(mode):
    tied = torch.tensor([5.0, 5.0, 0.0, 0.0])  # two classes tied
    clear = torch.tensor([9.0, 1.0, 0.0, 0.0])
    logits = torch.stack([tied, clear])
    pl = pseudo_labels(logits, logits.clone(), gamma=0.5, mode=mode)
    assert pl.weights[0] < pl.weights[1]
    assert pl.weights[0] == pytest.approx(0.0, abs=1e-6)  # an exact tie carries no weight


def test_disagreeing_scores_lower_the_weight():
    zs = torch.tensor([[8.0, 0.0, 0.0], [8.0, 0.0, 0.0]])
    las = torch.tensor([[8.0, 0.0, 0.0], [0.0, 0.0, 8.1]])  # sample 1: LAS prefers class 2
    p, pz, pl_ = (zs.softmax(1) + las.softmax(1)) / 2, zs.softmax(1), las.softmax(1)
    w = ambiguity_weight(pz, pl_, p, p.argmax(1), mode="none")
    assert w[0] == pytest.approx(1.0) and w[1] < 0.1


def test_margin_factor_values():
    p = torch.tensor([[0.6, 0.3, 0.1]])
    assert margin_factor(p, "none").item() == 1.0
    assert margin_factor(p, "margin").item() == pytest.approx(0.3)
    assert margin_factor(p, "ratio").item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="TRAINER.FAIR.MARGIN"):
        margin_factor(p, "bogus")


# ---- Expected behaviour 4: a step changes only the visual norms and the CDA -------------------------------------
@pytest.mark.parametrize("arch", ["vit", "rn"])
def test_training_step_changes_only_norm_parameters_and_cda(arch):
    model, clip_model, *_ = _build(arch=arch)
    norm_types = (torch.nn.LayerNorm, torch.nn.BatchNorm2d)
    norm_names = {f"{m}.{n}" for m, mod in model.visual.named_modules() if isinstance(mod, norm_types)
                  for n, _ in mod.named_parameters(recurse=False)}
    assert norm_names == {n for n, p in model.visual.named_parameters() if p.requires_grad}
    visual_before = {k: v.clone() for k, v in model.visual.state_dict().items()}
    text_before = {k: v.clone() for k, v in clip_model.state_dict().items() if not k.startswith("visual.")}
    anchors_before = model.cda.anchors.detach().clone()
    classifier_before = model.classifier.clone()
    optim_cfg = type("O", (), dict(NAME="adamw", LR=1e-2, WEIGHT_DECAY=0.1, MOMENTUM=0.9, ADAM_BETA1=0.9,
                                   ADAM_BETA2=0.999))()
    opt = build_optimizer(model.param_groups(0.1), optim_cfg)
    model.train()
    assert not model.visual.training  # BatchNorm statistics stay frozen
    loss, _ = model.loss(_images(4), _images(4, seed=1), _crops(4, 8))
    opt.zero_grad()
    loss.backward()
    opt.step()
    changed = {k for k, v in model.visual.state_dict().items() if not torch.equal(v, visual_before[k])}
    assert changed, "no visual norm parameter moved"
    assert changed <= norm_names, f"frozen visual weights changed: {sorted(changed - norm_names)[:5]}"
    assert not torch.equal(model.cda.anchors.detach(), anchors_before)
    assert torch.equal(model.classifier, classifier_before)
    for k, v in clip_model.state_dict().items():
        if not k.startswith("visual."):
            assert torch.equal(v, text_before[k]), k


def test_fp16_weights_keep_trainable_norms_in_fp32():
    clip_model = build_tiny_clip().half()
    name_emb = torch.nn.functional.normalize(torch.randn(3, 32), dim=-1)
    desc_emb, mask = torch.nn.functional.normalize(torch.randn(3, 2, 32), dim=-1), torch.ones(3, 2, dtype=torch.bool)
    model = FAIRModel(clip_model.visual, name_emb, ClassDescriptionAnchors(desc_emb, mask, name_emb, TAU_T), 100.0)
    assert model.dtype == torch.float16
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    assert all(p.dtype == torch.float16 for p in model.visual.parameters() if not p.requires_grad)


def test_weight_decay_only_on_anchors_and_trainable_classifier():
    model, *_ = _build(train_classifier=True)
    decay, no_decay = model.param_groups(0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model.cda.anchors), id(model.classifier)}
    assert all(p.ndim == 1 for p in no_decay["params"])


# ---- parts: crops (cut from the full-resolution image: tests/test_fair_crops.py) --------------------------------
def test_crop_boxes_lie_inside_the_image_with_sides_in_range():
    gen = torch.Generator().manual_seed(0)
    boxes = torch.stack([sample_image_boxes(40, 30, 8, scale=(0.5, 0.9), generator=gen) for _ in range(64)])
    side, x0, y0 = boxes.unbind(-1)
    assert boxes.shape == (64, 8, 3) and boxes.dtype == torch.int64
    assert side.min() >= round(0.5 * 30) and side.max() <= round(0.9 * 30)
    assert x0.min() >= 0 and (x0 + side).max() <= 40 and x0.max() > 40 - 30  # anywhere along the long edge
    assert y0.min() >= 0 and (y0 + side).max() <= 30
    with pytest.raises(ValueError, match="CROP_SCALE"):
        sample_image_boxes(8, 8, 1, scale=(0.0, 0.5))


def test_all_crops_go_through_the_encoder_in_one_call():
    model, *_ = _build(settings=FAIRSettings(n_crops=6))
    calls = []
    original = model.visual.forward
    model.visual.forward = lambda x: (calls.append(x.shape[0]), original(x))[1]
    model.loss(_images(4), _images(4, seed=1), _crops(4, 6))
    assert calls == [4 * (6 + 1), 4]  # teacher: global + 6 crops per image in one call; student: strong view


def test_crop_weights_keep_the_top_k_and_sum_to_one():
    g = F.normalize(torch.randn(3, 16), dim=-1)
    f = F.normalize(torch.randn(3, 8, 16), dim=-1)
    w, r = crop_weights(f, g, topk=5, tau_v=1.0)
    assert ((w > 0).sum(1) == 5).all()
    torch.testing.assert_close(w.sum(1), torch.ones(3))
    kept_min = r.masked_fill(w == 0, float("inf")).min(1).values
    dropped_max = r.masked_fill(w > 0, float("-inf")).max(1).values
    assert (kept_min >= dropped_max).all()
    ratio = w.max(1).values / w.masked_fill(w == 0, float("inf")).min(1).values
    spread = r.masked_fill(w == 0, float("-inf")).max(1).values - kept_min
    torch.testing.assert_close(ratio, spread.exp())  # softmax(tau_v * r) over the kept crops


# ---- parts: CDA ------------------------------------------------------------------------------------------------
def test_description_weights_are_a_softmax_over_valid_descriptions_only():
    model, _, name_emb, desc_emb, mask = _build()
    v = model.cda.v
    assert mask.sum(1).tolist() == [3, 2, 4]
    torch.testing.assert_close(v.sum(1), torch.ones(3))
    assert (v[~mask] == 0).all()
    cos = F.normalize(desc_emb[1, :2], dim=-1) @ F.normalize(name_emb[1], dim=-1)
    torch.testing.assert_close(v[1, :2], torch.softmax(TAU_T * cos, 0))
    assert model.cda.anchors.requires_grad and model.cda.anchors.shape == (3, 4, 32)


def test_description_embeddings_are_cached(tmp_path):
    clip_model = build_tiny_clip()
    cache = FeatureCache(tmp_path)
    a, mask = description_embeddings(clip_model, DESCRIPTIONS, cache=cache, backbone_id="x")
    b, _ = description_embeddings(clip_model, DESCRIPTIONS, cache=cache, backbone_id="x")
    assert cache.misses == 1 and cache.hits == 1 and torch.equal(a, b)
    c, mask2 = description_embeddings(clip_model, DESCRIPTIONS, max_per_class=2, cache=cache, backbone_id="x")
    assert c.shape[1] == 2 and cache.misses == 2 and mask2.all()


# ---- parts: pseudo-labels and loss -----------------------------------------------------------------------------
def test_distribution_alignment_boosts_classes_the_running_mean_underpredicts():
    da = DistributionAlignment(3, momentum=0.0)
    p = torch.tensor([[0.5, 0.3, 0.2]])
    torch.testing.assert_close(da(p), p)  # uniform running mean: unchanged (then the mean becomes p)
    aligned = da(p, update=False)
    torch.testing.assert_close(aligned, torch.full((1, 3), 1 / 3))
    state = da.state_dict()
    other = DistributionAlignment(3)
    other.load_state_dict(state)
    torch.testing.assert_close(other.mean, da.mean)


def test_zero_weight_samples_do_not_affect_the_loss():
    logits = torch.randn(4, 5, requires_grad=True)
    w = torch.tensor([1.0, 0.0, 0.5, 0.0])
    a, _ = fair_loss(logits, torch.tensor([0, 1, 2, 3]), w, fairness_weight=0.0)
    b, _ = fair_loss(logits, torch.tensor([0, 4, 2, 0]), w, fairness_weight=0.0)
    torch.testing.assert_close(a, b)
    ce = F.cross_entropy(logits, torch.tensor([0, 1, 2, 3]), reduction="none")
    torch.testing.assert_close(a, (ce[0] + 0.5 * ce[2]) / 1.5)


def test_fairness_term_is_zero_when_balanced_and_grows_with_collapse():
    balanced = torch.eye(4) * 50
    collapsed = torch.zeros(4, 4)
    collapsed[:, 0] = 50
    assert fairness_term(balanced).item() == pytest.approx(0.0, abs=1e-6)
    assert fairness_term(collapsed).item() > 5
    _, parts = fair_loss(collapsed, torch.zeros(4, dtype=torch.long), torch.ones(4), fairness_weight=1.0)
    assert parts["fair"].item() == pytest.approx(fairness_term(collapsed).item())


def test_distribution_alignment_in_the_teacher_updates_its_running_mean():
    model, *_ = _build(settings=FAIRSettings(dist_align=True, dist_align_momentum=0.5))
    before = model.dist_align.mean.clone()
    model.teacher(_images(4), _crops(4, 8))
    assert not torch.allclose(model.dist_align.mean, before)
    torch.testing.assert_close(model.dist_align.mean.sum(), torch.tensor(1.0))


def test_inference_uses_the_given_crops_and_without_them_the_view_alone():
    model, *_ = _build(settings=FAIRSettings(n_crops=3, topk_crops=3))
    x, crops = _images(2), _crops(2, 3)
    with torch.no_grad():
        a, b, plain = model(x, crops), model(x, crops.clone()), model(x)
        only_view = model(x, x.unsqueeze(1))  # the view as its only crop: the same as no crops
    torch.testing.assert_close(a, b)
    assert a.shape == (2, 3) and not torch.allclose(a, plain)
    torch.testing.assert_close(only_view, plain)


def test_step_statistics_are_fractions():
    model, *_ = _build()
    _, out = model.loss(_images(4), _images(4, seed=2), _crops(4, 8))
    stats = model.step_statistics(out)
    assert set(stats) == {"weight", "ambiguous", "agree"}
    assert all(0.0 <= v <= 1.0 for v in stats.values())


# ---- views ------------------------------------------------------------------------------------------------------
def test_two_view_dataset_yields_no_label(tmp_path):
    from PIL import Image
    path = tmp_path / "a.png"
    Image.new("RGB", (40, 30), (120, 30, 200)).save(path)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    ds = TwoViewDataset([str(path)], weak_transform((32, 32), "bicubic", mean, std),
                        strong_transform((32, 32), "bicubic", mean, std, "randaugment", 2, 10))
    item = ds[0]
    assert set(item) == {"img_weak", "img_strong", "index"}
    assert item["img_weak"].shape == item["img_strong"].shape == (3, 32, 32)
    none = TwoViewDataset([str(path)], weak_transform((32, 32)), strong_transform((32, 32), kind="none"))[0]
    torch.testing.assert_close(none["img_weak"], none["img_strong"])
    with pytest.raises(ValueError, match="STRONG_AUG"):
        strong_transform((32, 32), kind="autoaugment")


# ---- descriptions provider --------------------------------------------------------------------------------------
def test_class_names_match_after_normalising_case_spaces_hyphens_underscores():
    assert normalize_classname("Black_footed_Albatross") == normalize_classname("black-footed  albatross")
    table = {"Black-footed Albatross": ["a", "b", "a"], "laysan albatross": ["c"]}
    out = match_descriptions(["Black_footed_Albatross", "Laysan_Albatross"], table)
    assert out == [["a", "b"], ["c"]]  # duplicates dropped, order kept


def test_missing_classes_are_all_listed():
    with pytest.raises(DescriptionsError) as e:
        match_descriptions(["cat", "dog", "emu", "yak"], {"cat": ["x"], "dog": ["y"]}, source="f.json")
    assert "'emu'" in str(e.value) and "'yak'" in str(e.value) and "2 of 4" in str(e.value)


def test_descriptions_from_file_and_folder(tmp_path):
    data = {"Cat": ["c1"], "DOG": ["d1", "d2"], "bird": ["b1"]}
    (tmp_path / "mine.json").write_text(json.dumps(data))
    out, source = get_descriptions(CLASSES, "whatever", path=str(tmp_path / "mine.json"))
    assert out == [["c1"], ["d1", "d2"], ["b1"]] and source == {
        "file": str(tmp_path / "mine.json"), "sha256": hashlib.sha256((tmp_path / "mine.json").read_bytes()).hexdigest()}
    (tmp_path / "pets.json").write_text(json.dumps(data))
    out, source = get_descriptions(CLASSES, "OxfordPets", path=str(tmp_path))
    assert out[1] == ["d1", "d2"] and source["file"].endswith("pets.json")
    with pytest.raises(DescriptionsError, match="TRAINER.FAIR.DESCRIPTIONS: file not found"):
        get_descriptions(CLASSES, "cub", path=str(tmp_path / "absent.json"))
    (tmp_path / "bad.json").write_text(json.dumps({"cat": [1, 2]}))
    with pytest.raises(DescriptionsError, match="bad.json"):
        get_descriptions(CLASSES, "cub", path=str(tmp_path / "bad.json"))


def test_template_fallback_only_when_asked_for_and_error_by_default():
    out, source = get_descriptions(CLASSES, "unknown_set", fallback="template",
                                   templates=["a photo of a {}.", "art of the {}."])
    assert source == "template" and out[0] == ["a photo of a cat.", "art of the cat."]
    with pytest.raises(DescriptionsError, match="DESCRIPTIONS_FALLBACK template") as e:
        get_descriptions(CLASSES, "unknown_set", templates=["a photo of a {}."])  # the default is "error"
    assert "'cat', 'dog', 'bird'" in str(e.value) and "TRAINER.FAIR.DESCRIPTIONS" in str(e.value)


class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def test_url_download_is_checksum_verified_and_cached(tmp_path, monkeypatch):
    payload = json.dumps({"cat": ["c"], "dog": ["d"], "bird": ["b"]}).encode()
    digest = hashlib.sha256(payload).hexdigest()
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append(url)
        return _FakeResponse(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    kw = dict(url="https://example.org/d.json", cache_dir=tmp_path)
    out, source = get_descriptions(CLASSES, "x", sha256=digest, **kw)
    assert out == [["c"], ["d"], ["b"]] and calls == ["https://example.org/d.json"]
    assert source == {"file": str(tmp_path / f"{digest}.json"), "sha256": digest, "url": "https://example.org/d.json"}
    get_descriptions(CLASSES, "x", sha256=digest, download=False, **kw)  # from the cache, no download
    assert len(calls) == 1
    with pytest.raises(DescriptionsError, match="sha256 mismatch"):
        get_descriptions(CLASSES, "x", sha256="0" * 64, fallback="error", **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{digest}.json"]  # the bad download was not kept


def test_dataset_default_url_is_used_and_offline_failure_falls_back(tmp_path, monkeypatch):
    seen = []

    def offline(url, timeout=None):
        seen.append(url)
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.warns(UserWarning, match="template"):
        out, source = get_descriptions(CLASSES, "CUB", cache_dir=tmp_path, templates=["a {}."], fallback="template")
    assert source == "template" and seen and seen[0].endswith("/cub.json")
    with pytest.raises(DescriptionsError, match="offline.*TRAINER.FAIR.DESCRIPTIONS /path/to/file.json"):
        get_descriptions(CLASSES, "CUB", cache_dir=tmp_path)


@pytest.mark.skipif(not SHARED_DESCRIPTIONS.is_dir(), reason=f"reference descriptions absent ({SHARED_DESCRIPTIONS})")
def test_reference_description_files_cover_their_datasets_with_folder_style_names():
    classes = json.loads((SHARED_DESCRIPTIONS / "classes.json").read_text())
    for short, key in [("cub", "cub"), ("oxford_pets", "pets"), ("food101", "food101"), ("stanford_cars", "cars")]:
        names = [c.replace(" ", "_") for c in classes[key]]  # folder-style names
        out, source = get_descriptions(names, short, path=str(SHARED_DESCRIPTIONS))
        assert len(out) == len(names) and all(out)
        fname, digest, url = desc_mod.DEFAULT_SOURCES[short]
        assert url.endswith("/" + fname) and source["sha256"] == digest
        assert hashlib.sha256((SHARED_DESCRIPTIONS / fname).read_bytes()).hexdigest() == digest


def test_core_does_not_import_dassl():
    assert "clip_adapt.fair" in sys.modules
    import subprocess
    code = "import sys, clip_adapt.fair; assert 'dassl' not in sys.modules"
    subprocess.run([sys.executable, "-W", "ignore", "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


# ---- configs ----------------------------------------------------------------------------------------------------
def test_settings_from_the_config_keys_are_the_spec_defaults():
    from yacs.config import CfgNode as CN

    from clip_adapt.config import extend_cfg
    cfg = CN()
    for node in ("MODEL", "TRAINER", "OPTIM", "DATASET"):
        cfg[node] = CN()
    cfg.MODEL.BACKBONE = CN()
    s = FAIRSettings.from_cfg(extend_cfg(cfg).TRAINER.FAIR)
    assert (s.n_crops, s.topk_crops, s.gamma, s.tau_v, tuple(s.crop_scale)) == (8, 6, 0.5, 1.0, (0.5, 0.9))
    assert cfg.TRAINER.FAIR.TAU_T == pytest.approx(math.e ** 2, rel=1e-6)


@pytest.mark.parametrize("name,backbone", [("rn50", "RN50"), ("vit_b32", "ViT-B/32"), ("vit_b16", "ViT-B/16"),
                                           ("vit_l14", "ViT-L/14")])
def test_trainer_configs_hold_the_spec_optimisation(name, backbone):
    import yaml
    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs/trainers/FAIR" / f"{name}.yaml").read_text())
    o = cfg["OPTIM"]
    assert cfg["MODEL"]["BACKBONE"]["NAME"] == backbone
    assert (o["NAME"], o["LR"], o["WEIGHT_DECAY"], o["MIN_LR"], o["WARMUP_EPOCH"], o["MAX_EPOCH"]) == \
        ("adamw", 1e-4, 0.1, 2e-6, 0, 15)
    assert o["LR_SCHEDULER"] == "cosine" and cfg["DATALOADER"]["TRAIN_X"]["BATCH_SIZE"] == 64
    f = cfg["TRAINER"]["FAIR"]
    assert (f["N_CROPS"], f["TOPK_CROPS"], f["GAMMA"], f["TAU_V"]) == (8, 6, 0.5, 1.0)


# ---- mean teacher (TRAINER.FAIR.TEACHER_EMA) --------------------------------------------------------------------
def _step(model, seed):
    optim_cfg = type("O", (), dict(NAME="adamw", LR=5e-2, WEIGHT_DECAY=0.0, MOMENTUM=0.9, ADAM_BETA1=0.9,
                                   ADAM_BETA2=0.999))()
    opt = build_optimizer(model.param_groups(0.0), optim_cfg)
    loss, _ = model.loss(_images(4, seed), _images(4, seed + 1), _crops(4, 3, seed))
    opt.zero_grad()
    loss.backward()
    opt.step()
    model.update_teacher()


def test_ema_teacher_labels_with_the_averaged_weights_and_gives_the_student_its_own_back():
    m = 0.75
    model, *_ = _build(settings=FAIRSettings(n_crops=3, topk_crops=2, teacher_ema=m))
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    _step(model, 0)
    after = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert any(not torch.equal(after[n], start[n]) for n in start)
    for n in start:  # EMA <- m * EMA + (1 - m) * current, the EMA starting from the initial weights
        assert torch.allclose(model.teacher_state[n], m * start[n] + (1 - m) * after[n], atol=1e-6)
    x = _images(4, seed=7)
    pl, zs, _, _ = model.teacher(x, _crops(4, 3, seed=3))
    # the student's weights are back, bit-identical, after the teacher pass
    assert all(torch.equal(p, after[n]) for n, p in model.named_parameters() if p.requires_grad)
    # the same pass on a copy that holds the EMA weights as its own gives the same logits
    twin, *_ = _build(settings=FAIRSettings(n_crops=3, topk_crops=2))
    with torch.no_grad():
        for n, p in twin.named_parameters():
            if n in model.teacher_state:
                p.copy_(model.teacher_state[n])
    pl_twin, zs_twin, _, _ = twin.teacher(x, _crops(4, 3, seed=3))
    assert torch.allclose(zs, zs_twin, atol=1e-5) and torch.equal(pl.labels, pl_twin.labels)
    # and differs from the current weights' pass
    current, *_ = _build(settings=FAIRSettings(n_crops=3, topk_crops=2))
    current.load_state_dict(model.state_dict())
    _, zs_current, _, _ = current.teacher(x, _crops(4, 3, seed=3))
    assert not torch.allclose(zs, zs_current, atol=1e-5)


def test_teacher_ema_zero_keeps_no_copy_and_out_of_range_is_named():
    model, *_ = _build(settings=FAIRSettings(n_crops=3, topk_crops=2))
    _step(model, 0)
    assert model.teacher_state is None
    with pytest.raises(ValueError, match="TEACHER_EMA"):
        _build(settings=FAIRSettings(teacher_ema=1.0))
