"""The small world's pieces that need no Fashion-MNIST files (bench/world)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.world import shift, train_clip


def _features(n=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(n, d, generator=g), dim=-1), F.normalize(torch.randn(n, d, generator=g), dim=-1))


def test_multi_positive_loss_is_infonce_when_every_label_differs():
    img, txt = _features()
    labels = torch.arange(6)
    a = train_clip.multi_positive_loss(img, txt, labels, torch.tensor(10.0))
    b = train_clip.infonce_loss(img, txt, labels, torch.tensor(10.0))
    assert torch.allclose(a, b, atol=1e-6)


def test_shift_is_deterministic_keeps_background_and_blurs():
    rng = np.random.default_rng(0)
    img = np.zeros((2, 28, 28), np.uint8)
    img[:, 10:18, 10:18] = rng.integers(100, 256, size=(2, 8, 8))
    canvas = shift.to_canvas(img)
    assert canvas.shape == (2, 32, 32) and canvas[:, :2].max() == 0
    a, b = shift.apply_shift(canvas, seed=3), shift.apply_shift(canvas, seed=3)
    assert a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(a, shift.apply_shift(canvas, seed=4))
    # background stays dark on average; the blur spreads the square's mass beyond its edge
    assert a[:, :6].mean() < 20
    blurred = shift.apply_shift(canvas, seed=0, noise_sigma=0.0)
    assert blurred[:, 11, 9].min() > 0 and canvas[:, 11, 9].max() == 0


def test_train_clip_checkpoint_round_trips_through_our_loader(tmp_path, monkeypatch):
    """Two steps on random 'Fashion-MNIST' images with a tiny arch; load_clip rebuilds the same tensors."""
    pytest.importorskip("clip")
    from clip_adapt.clip_loader import load_clip

    rng = np.random.default_rng(0)
    fake = (rng.integers(0, 256, size=(60, 28, 28), dtype=np.uint8), np.arange(60) % 10)
    monkeypatch.setattr(train_clip.fashion_mnist, "load", lambda split: fake)
    monkeypatch.setattr(train_clip, "HOLDOUT", 20)
    arch = dict(train_clip.ARCH, embed_dim=16, vision_layers=1, transformer_layers=1, vision_width=64,
                transformer_width=64, transformer_heads=1)
    out = tmp_path / "clip.pt"
    model = train_clip.train(out, steps=2, batch_size=8, warmup=1, threads=1, arch=arch, loss="infonce")
    loaded = load_clip(str(out))
    ref = model.state_dict()
    assert set(loaded.state_dict()) == set(ref)
    assert all(torch.equal(loaded.state_dict()[k].float(), ref[k].float()) for k in ref)
    with pytest.raises(ValueError, match="'nope'"):
        train_clip.train(tmp_path / "x.pt", steps=1, batch_size=8, warmup=1, threads=1, arch=arch, loss="nope")


def test_named_worlds_override_only_their_keys_and_unknown_names_are_named():
    from bench.world import build

    base, clip0, noisy = (build.world_params(n) for n in ("world", "world_clip0", "world_noise"))
    assert base["shift"] == {"blur_sigma": shift.BLUR_SIGMA, "noise_sigma": shift.NOISE_SIGMA, "seed": 0}
    assert base["clip"]["seed"] == build.CLIP_SEED != 0
    # world_clip0: only the CLIP seed differs from the default world; world_noise: its CLIP, another shift
    assert clip0["clip"] == dict(base["clip"], seed=0) and clip0["shift"] == base["shift"]
    assert noisy["shift"]["noise_sigma"] > base["shift"]["noise_sigma"]
    assert noisy["clip"] == clip0["clip"] and noisy["splits"] == clip0["splits"] == base["splits"]
    assert build.PARAMS["shift"]["blur_sigma"] == shift.BLUR_SIGMA  # the module's PARAMS is not mutated
    with pytest.raises(ValueError, match="'world_x'"):
        build.world_params("world_x")


def test_every_named_world_has_its_configs_and_a_search_grid():
    from pathlib import Path

    from bench.world import build, search

    repo = Path(__file__).resolve().parents[1]
    for name in build.WORLDS:
        for trainer in ("ZSCLIP", "FAIR", "ReCLIP", "DAC"):
            assert (repo / "configs" / "trainers" / trainer / f"{name}.yaml").is_file(), (name, trainer)
        assert set(search.GRIDS[name]) >= {"ZSCLIP", "FAIR", "ReCLIP", "DAC"}


def test_a_named_world_finds_the_clip_of_a_sibling_world_with_the_same_clip_parameters(tmp_path):
    import json

    from bench.world import build

    clip_params = build.world_params("world")["clip"]
    (tmp_path / "world").mkdir()
    (tmp_path / "world" / build.CHECKPOINT).write_bytes(b"weights")
    (tmp_path / "world" / "world.json").write_text(json.dumps({"params": build.world_params("world")}))
    found = build._sibling_clip(tmp_path / "world_noise", json.loads(json.dumps(clip_params)))
    assert found == tmp_path / "world" / build.CHECKPOINT
    assert build._sibling_clip(tmp_path / "world_noise", dict(clip_params, steps=1)) is None
    assert build._sibling_clip(tmp_path / "world", clip_params) is None  # never itself


def test_an_output_folder_of_another_world_stops_the_command_and_keeps_its_runs(tmp_path):
    from bench.world import build, run

    out = tmp_path / "out"
    run.claim_output(out, build.world_params("world"))  # a new folder is claimed
    run.claim_output(out, build.world_params("world"))  # the same world again: fine
    (out / "fashion_mnist_shift" / "FAIR" / "world" / "seed1").mkdir(parents=True)
    with pytest.raises(SystemExit, match="clip"):  # same folder, another CLIP seed
        run.claim_output(out, build.world_params("world_clip0"))
    with pytest.raises(SystemExit, match="clip/shift"):
        run.claim_output(out, build.world_params("world_noise"))
    assert (out / "fashion_mnist_shift" / "FAIR" / "world" / "seed1").is_dir()  # nothing deleted
    legacy = tmp_path / "legacy"  # runs made before folders were stamped
    (legacy / "fashion_mnist_shift" / "DAC" / "world_4shots" / "seed2").mkdir(parents=True)
    with pytest.raises(SystemExit, match=str(legacy)):
        run.claim_output(legacy, build.world_params("world"))
    assert not (legacy / run.STAMP).exists()
