"""CLIP loading: local files, name resolution through the cache, checksum checks, the offline error."""
import hashlib
import io
import urllib.request

import pytest
import torch

from clip_adapt import clip_loader as cl


def _image():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_load_state_dict_by_path_gives_the_same_model(tiny_clip_path):
    ref = cl.build_tiny_clip(seed=0)
    model = cl.load_clip(tiny_clip_path, precision="fp32")
    assert type(model) is type(ref)
    assert model.visual.input_resolution == 32
    assert torch.equal(model.encode_image(_image()), ref.encode_image(_image()))


def test_load_resnet_tower(tiny_rn_clip_path):
    ref = cl.build_tiny_clip(seed=0, arch="rn")
    model = cl.load_clip(tiny_rn_clip_path, precision="fp32")
    assert torch.equal(model.encode_image(_image()), ref.encode_image(_image()))


def test_torchscript_archive_is_read(tmp_path):
    ref = cl.build_tiny_clip(seed=1)
    holder = torch.nn.Module()
    for k, v in ref.state_dict().items():  # a TorchScript archive whose state_dict() is CLIP's
        holder.register_buffer(k.replace(".", "__"), v.clone())
    scripted = torch.jit.script(holder)
    path = tmp_path / "scripted.pt"
    scripted.save(str(path))
    sd = cl.read_state_dict(path)
    assert "visual__conv1__weight" in sd or "visual.conv1.weight" in sd


def test_dict_with_state_dict_key_and_module_prefix(tmp_path):
    ref = cl.build_tiny_clip(seed=2)
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in ref.state_dict().items()}}, path)
    model = cl.load_clip(path)
    assert torch.equal(model.encode_image(_image()), ref.encode_image(_image()))


def test_fp16_on_cpu_falls_back_to_fp32(tiny_clip_path):
    assert cl.resolve_precision("fp16", "cpu") == "fp32"
    assert cl.resolve_precision("amp", "cpu") == "fp32"
    assert cl.load_clip(tiny_clip_path, precision="fp16").dtype == torch.float32
    with pytest.raises(ValueError, match="TRAINER.PREC"):
        cl.resolve_precision("bf17", "cpu")


def test_not_a_clip_checkpoint_is_named(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(cl.CheckpointError, match="other.pt"):
        cl.load_clip(path)


def test_missing_path_names_the_file(tmp_path):
    with pytest.raises(cl.CheckpointError, match="nope.pt"):
        cl.resolve_checkpoint(tmp_path / "nope.pt")


def test_unknown_name_lists_available():
    with pytest.raises(cl.CheckpointError, match="ViT-B/16"):
        cl.resolve_checkpoint("ViT-Q/99")


def test_name_resolves_to_cache_file_when_checksum_matches(tmp_path, monkeypatch):
    content = b"pretend checkpoint bytes"
    monkeypatch.setitem(cl.CLIP_MODELS, "ViT-B/16", hashlib.sha256(content).hexdigest() + "/ViT-B-16.pt")
    (tmp_path / "ViT-B-16.pt").write_bytes(content)
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("must not download"))
    assert cl.resolve_checkpoint("ViT-B/16", cache_dir=tmp_path) == tmp_path / "ViT-B-16.pt"


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIP_CACHE_DIR", str(tmp_path))
    assert cl.default_cache_dir() == tmp_path


def test_cached_file_with_wrong_checksum_is_rejected(tmp_path):
    (tmp_path / "RN50.pt").write_bytes(b"not the real RN50")
    with pytest.raises(cl.CheckpointError, match="sha256"):
        cl.resolve_checkpoint("RN50", cache_dir=tmp_path)


def test_offline_error_names_expected_file(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(cl.CheckpointError) as err:
        cl.resolve_checkpoint("ViT-B/32", cache_dir=tmp_path)
    assert str(tmp_path / "ViT-B-32.pt") in str(err.value)
    with pytest.raises(cl.CheckpointError, match="DOWNLOAD"):
        cl.resolve_checkpoint("ViT-B/32", cache_dir=tmp_path, download=False)


class _FakeResponse(io.BytesIO):
    headers = {"Content-Length": "0"}

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_download_with_sha256_mismatch_is_rejected_and_not_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: _FakeResponse(b"tampered bytes"))
    with pytest.raises(cl.CheckpointError, match="sha256 mismatch"):
        cl.resolve_checkpoint("RN101", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_with_matching_sha256_is_kept(tmp_path, monkeypatch):
    content = b"good bytes"
    monkeypatch.setitem(cl.CLIP_MODELS, "RN101", hashlib.sha256(content).hexdigest() + "/RN101.pt")
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: _FakeResponse(content))
    path = cl.resolve_checkpoint("RN101", cache_dir=tmp_path)
    assert path.read_bytes() == content


def test_fingerprint_is_memoised_and_tracks_changes(tmp_path):
    path = tmp_path / "f.pt"
    path.write_bytes(b"abc")
    assert cl.checkpoint_fingerprint(path) == hashlib.sha256(b"abc").hexdigest()
    path.write_bytes(b"abcd")
    assert cl.checkpoint_fingerprint(path) == hashlib.sha256(b"abcd").hexdigest()


def test_tiny_factory_size_and_class():
    from clip.model import CLIP

    model = cl.build_tiny_clip()
    n = sum(p.numel() for p in model.parameters())
    assert isinstance(model, CLIP) and 2e5 < n < 5e6
    assert cl.build_tiny_clip(arch="rn").visual.input_resolution == 32


def test_a_garbage_checkpoint_file_is_an_error_naming_the_file(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(cl.CheckpointError, match=r"cannot read CLIP checkpoint .*broken\.pt \(MODEL\.BACKBONE\.NAME\)"):
        cl.load_clip(bad)
