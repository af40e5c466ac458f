"""open_clip backbones without Dassl: name resolution (offline), loading by path, identity, tokenizer, the logit
bias of sigmoid models, the norm layers FAIR and ReCLIP train, the INPUT rule. Models are tiny and random
(tests/openclip_fixtures.py); nothing is downloaded."""
import hashlib
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("open_clip", reason="open_clip is not installed (pip install 'clip-adapt[openclip]')")
pytest.importorskip("timm", reason="timm is not installed (pip install timm): the timm-tower tests need it")

from clip_adapt.clip_loader import CheckpointError, checkpoint_fingerprint, load_clip, resolve_checkpoint  # noqa
from clip_adapt import openclip_loader as ocl  # noqa: E402
from tests import openclip_fixtures as fx  # noqa: E402

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """{arch: weights file} of the tiny models (seed 0), in three file formats."""
    root = tmp_path_factory.mktemp("oc")
    return {fx.VIT: fx.save(root / "vit.pt", fx.VIT), fx.RN: fx.save(root / "rn.bin", fx.RN),
            fx.SIGMOID: fx.save(root / "sigmoid.safetensors", fx.SIGMOID),
            fx.CONVNEXT: fx.save(root / "convnext.pt", fx.CONVNEXT)}


def _load(arch, path):
    return load_clip(resolve_checkpoint(f"open_clip:{arch}:{path}"))


# ---- names and errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,match", [
    ("open_clip:ViT-B-16", r"expected open_clip:<architecture>:<pretrained tag or weights file>"),
    ("open_clip:No-Such-Arch:laion2b_s34b_b88k", r"no architecture 'No-Such-Arch'"),
    ("open_clip:ViT-B-16:no_such_tag",
     r"no pretrained tag 'no_such_tag' for ViT-B-16 \(MODEL.BACKBONE.NAME\); known tags: .*laion2b_s34b_b88k"),
    ("open_clip:ViT-B-16:/nowhere/weights.bin", r"weights file not found: /nowhere/weights.bin"),
    ("open_clip:ViT-L-14:dfn2b", r"trained with QuickGELU, which ViT-L-14 does not use: name "
                                 r"open_clip:ViT-L-14-quickgelu:dfn2b"),
])
def test_bad_names_are_one_checkpoint_error_naming_what_was_looked_for(name, match):
    with pytest.raises(CheckpointError, match=match):
        resolve_checkpoint(name)


def _fake_hub_file(cache, repo, filename, data=b"weights"):
    """A file laid out as huggingface_hub caches it: refs/main -> snapshots/<rev>/<file>, a link to blobs/<hash>."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    for sub in ("refs", "blobs", "snapshots/0123abcd"):
        (folder / sub).mkdir(parents=True)
    (folder / "refs" / "main").write_text("0123abcd")
    blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
    blob.write_bytes(data)
    link = folder / "snapshots" / "0123abcd" / filename
    link.symlink_to(blob)
    return link


def test_a_tag_resolves_from_the_hugging_face_cache_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("open_clip.download_pretrained", lambda *a, **k: pytest.fail("tried to download"))
    target = _fake_hub_file(tmp_path, "laion/CLIP-ViT-B-16-laion2B-s34B-b88K", "open_clip_model.safetensors")
    got = resolve_checkpoint("open_clip:ViT-B-16:laion2b_s34b_b88k", cache_dir=tmp_path)
    assert got == f"open_clip:ViT-B-16:{target}"  # the snapshot's name (its suffix tells safetensors), not the blob's
    sha = hashlib.sha256(b"weights").hexdigest()
    assert checkpoint_fingerprint(got) == f"open_clip:ViT-B-16:{sha}"


def test_a_tagged_model_in_the_hugging_face_cache_loads_with_its_tags_preprocessing(tmp_path, monkeypatch, saved):
    """A tiny model published under a (test) tag: found in the cache offline, read as safetensors through the
    snapshot's link, its outputs those of the model saved, its preprocessing the tag's."""
    import open_clip

    real = open_clip.get_pretrained_cfg
    tag_cfg = {"url": "", "hf_hub": "test-org/tiny-oc-vit/", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
               "interpolation": "bilinear", "resize_mode": "shortest"}
    monkeypatch.setattr(open_clip, "get_pretrained_cfg",
                        lambda arch, tag: dict(tag_cfg) if (arch, tag) == (fx.VIT, "testtag") else real(arch, tag))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    st = fx.save(tmp_path / "w.safetensors", fx.VIT)
    _fake_hub_file(tmp_path / "hub", "test-org/tiny-oc-vit", "open_clip_model.safetensors", st.read_bytes())
    name = f"open_clip:{fx.VIT}:testtag"
    model = load_clip(resolve_checkpoint(name, cache_dir=tmp_path / "hub"))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.encode_image(images), fx.build(fx.VIT).encode_image(images))
    assert ocl.preprocess_config(name) == {"size": (32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
                                           "interpolation": "bilinear", "resize_mode": "shortest"}


@pytest.mark.parametrize("offline,download,why", [("1", True, r"\$HF_HUB_OFFLINE is set"),
                                                  ("", False, r"MODEL.BACKBONE.DOWNLOAD False")])
def test_a_missing_tag_names_the_repo_file_and_cache_and_never_downloads(tmp_path, monkeypatch, offline, download,
                                                                         why):
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    monkeypatch.setattr("open_clip.download_pretrained", lambda *a, **k: pytest.fail("tried to download"))
    with pytest.raises(CheckpointError) as e:
        resolve_checkpoint("open_clip:ViT-B-16-SigLIP:webli", cache_dir=tmp_path, download=download)
    msg = str(e.value)
    assert "open_clip_model.safetensors or open_clip_pytorch_model.bin of the Hugging Face repo timm/ViT-B-16-SigLIP" \
        in msg and str(tmp_path) in msg and re.search(why, msg) and "\n" not in msg


def test_a_missing_hugging_face_tokenizer_is_one_error_naming_it(monkeypatch, tmp_path):
    """SigLIP's tokenizer comes from the Hugging Face hub: offline and uncached it is a CheckpointError."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(CheckpointError, match=r"ViT-B-16-SigLIP: cannot load the Hugging Face tokenizer "
                                              r"timm/ViT-B-16-SigLIP"):
        ocl.get_tokenizer("ViT-B-16-SigLIP")


# ---- loading by path ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", [fx.VIT, fx.RN, fx.SIGMOID, fx.CONVNEXT])
def test_a_saved_state_dict_loaded_by_path_gives_the_in_memory_models_outputs(saved, arch):
    ref = fx.build(arch, seed=0)
    model = _load(arch, saved[arch])
    assert isinstance(model, ocl.OpenCLIPModel) and model.arch == arch
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = model.tokenize(["a photo of a cat.", "a dog"])
    with torch.no_grad():
        assert torch.equal(model.encode_image(images), ref.encode_image(images))
        assert torch.equal(model.encode_text(tokens), ref.encode_text(tokens))
        logits = model.model(images, tokens)  # open_clip's own forward: features, scale (and bias)
        want = ref(images, tokens)
    assert all(torch.equal(a, b) for a, b in zip(logits, want)) and len(logits) == len(want)
    assert torch.equal(model.logit_scale, ref.logit_scale)
    other = fx.build(arch, seed=1)  # a different random model differs: the comparison can fail
    with torch.no_grad():
        assert not torch.equal(other.encode_image(images), ref.encode_image(images))


def test_weights_of_another_architecture_are_one_error_naming_the_file(saved):
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(saved[fx.VIT]))} does not hold weights of open_clip "
                                              rf"{fx.RN}"):
        _load(fx.RN, saved[fx.VIT])


def test_identity_names_the_architecture_and_the_files_sha256(saved):
    path = saved[fx.VIT]
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    resolved = resolve_checkpoint(f"open_clip:{fx.VIT}:{path}")
    assert checkpoint_fingerprint(resolved) == f"open_clip:{fx.VIT}:{sha}"
    from tools.results import backbone_label
    assert backbone_label(f"open_clip:{fx.VIT}:{path}", f"open_clip:{fx.VIT}:{sha}") == \
        f"open_clip:{fx.VIT}:vit.pt sha256:{sha[:8]}"
    assert backbone_label("open_clip:ViT-B-16:laion2b_s34b_b88k", f"open_clip:ViT-B-16:{sha}") == \
        f"open_clip:ViT-B-16:laion2b_s34b_b88k sha256:{sha[:8]}"


# ---- interface: tokenizer, dtype, logit bias ------------------------------------------------------------------
def test_text_is_tokenised_by_the_backbones_tokenizer(saved, tiny_clip_path):
    from clip_adapt.text import encode_texts, tokenize

    sigmoid = _load(fx.SIGMOID, saved[fx.SIGMOID])
    assert tokenize(sigmoid, ["a cat"]).shape == (1, 16)  # the architecture's context length, not CLIP's 77
    assert tokenize(load_clip(tiny_clip_path), ["a cat"]).shape == (1, 77)
    want = F.normalize(sigmoid.model.encode_text(sigmoid.tokenizer(["a cat", "a dog"])), dim=-1)
    assert torch.allclose(encode_texts(sigmoid, ["a cat", "a dog"]), want, atol=1e-6)
    assert encode_texts(sigmoid, []).shape == (0, 64)


def test_sigmoid_models_add_their_logit_bias_to_zero_shot_logits(saved):
    from clip_adapt.zeroshot import encode_images, zero_shot_logits

    model = _load(fx.SIGMOID, saved[fx.SIGMOID])
    with torch.no_grad():
        model.model.logit_bias.fill_(-3.5)
    assert model.logit_bias is model.model.logit_bias and _load(fx.VIT, saved[fx.VIT]).logit_bias is None
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        f = encode_images(model, images)
        t = F.normalize(model.encode_text(model.tokenize(["a cat", "a dog", "a bird"])), dim=-1)
        got = zero_shot_logits(f, t, model.logit_scale.exp(), model.logit_bias)
        img = F.normalize(model.model.encode_image(images), dim=-1)
    assert torch.allclose(got, model.logit_scale.exp() * img @ t.t() - 3.5, atol=1e-5)
    assert model.dtype == torch.float32 and type(model.visual).__name__ == "TimmModel"


# ---- the norm layers FAIR and ReCLIP train --------------------------------------------------------------------
def _independent_norm_names(module, types, prefix=""):
    return {".".join(x for x in (prefix, m, p) if x) for m, mod in module.named_modules() if isinstance(mod, types)
            for p, _ in mod.named_parameters(recurse=False)}


@pytest.mark.parametrize("arch,types,expect", [
    (fx.VIT, (nn.LayerNorm,), r"^(ln_pre|ln_post|transformer\.resblocks\.\d+\.ln_[12])\.(weight|bias)$"),
    (fx.RN, (nn.BatchNorm2d,), r"^layer\d\.\d+\.(bn\d|downsample\.1)\.(weight|bias)$|^bn[123]\.(weight|bias)$"),
    (fx.SIGMOID, (nn.LayerNorm,), r"^trunk\.(blocks\.\d+\.norm[12]|norm|attn_pool\.norm)\.(weight|bias)$"),
    (fx.CONVNEXT, (nn.LayerNorm,), r"^trunk\.(stem\.1|stages\.\d+\.downsample\.0|stages\.\d+\.blocks\.\d+\.norm|"
                                   r"head\.norm|norm_pre)\.(weight|bias)$"),
])
def test_fair_trains_exactly_the_image_towers_norm_layers(saved, arch, types, expect):
    from clip_adapt.fair.model import visual_norm_parameters

    visual = _load(arch, saved[arch]).visual
    names = [n for n, _ in visual_norm_parameters(visual)]
    assert names and len(names) == len(set(names))
    assert set(names) == _independent_norm_names(visual, types)
    assert all(re.match(expect, n) for n in names), [n for n in names if not re.match(expect, n)]


def test_an_image_tower_without_norm_layers_is_an_error_naming_it():
    from clip_adapt.fair.model import FAIRConfigError, visual_norm_parameters

    with pytest.raises(FAIRConfigError, match=r"image tower Sequential .*has no normalisation layers"):
        visual_norm_parameters(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()))


@pytest.mark.parametrize("arch,towers", [(fx.VIT, ("transformer", "ln_final")), (fx.SIGMOID, ("text",))])
def test_reclip_branches_train_exactly_their_towers_norm_layers(saved, arch, towers):
    from clip_adapt.reclip.branches import ReCLIPText, ReCLIPVisual

    model = _load(arch, saved[arch])
    text = torch.randn(3, model.embed_dim)
    v = ReCLIPVisual(model, text)
    trained_v = {n for n, p in v.named_parameters() if p.requires_grad}
    want_v = _independent_norm_names(model.visual, (nn.LayerNorm, nn.BatchNorm2d), "clip.model.visual")
    assert trained_v == want_v and trained_v
    model_t = _load(arch, saved[arch])
    t = ReCLIPText(model_t, ["cat", "dog"], "a photo of a {}.", ["a photo of a {}.", "a {}."])
    trained_t = {n for n, p in t.named_parameters() if p.requires_grad}
    want_t = set().union(*(_independent_norm_names(getattr(model_t.model, tower), (nn.LayerNorm,),
                                                   f"clip.model.{tower}") for tower in towers))
    assert trained_t == want_t and trained_t
    assert all(".visual." not in n for n in trained_t)
    assert t.tokens.shape[1] == (16 if arch == fx.SIGMOID else 77)


# ---- the INPUT rule ---------------------------------------------------------------------------------------------
def test_input_keys_at_the_defaults_take_the_models_preprocessing_and_set_ones_are_kept():
    from yacs.config import CfgNode as CN

    defaults = CN({"SIZE": (224, 224), "INTERPOLATION": "bilinear", "PIXEL_MEAN": [0.485, 0.456, 0.406],
                   "PIXEL_STD": [0.229, 0.224, 0.225]})
    pp = ocl.preprocess_config("open_clip:ViT-B-16-SigLIP:webli")
    assert pp == {"size": (224, 224), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic",
                  "resize_mode": "squash"}
    assert ocl.input_overrides(defaults.clone(), pp, defaults) == {"INTERPOLATION": "bicubic",
                                                                   "PIXEL_MEAN": [0.5, 0.5, 0.5],
                                                                   "PIXEL_STD": [0.5, 0.5, 0.5]}
    mine = defaults.clone()
    mine.SIZE, mine.PIXEL_MEAN = (32, 32), OPENAI_MEAN
    assert ocl.input_overrides(mine, pp, defaults) == {"INTERPOLATION": "bicubic", "PIXEL_STD": [0.5, 0.5, 0.5]}
    tiny = ocl.preprocess_config(f"open_clip:{fx.VIT}:/some/weights.pt")  # a file: open_clip's defaults
    assert ocl.input_overrides(defaults.clone(), tiny, defaults)["SIZE"] == (32, 32)
    assert ocl.input_overrides(defaults.clone(), tiny, defaults)["PIXEL_MEAN"] == OPENAI_MEAN
