"""Cached image-feature extraction (clip_adapt/features.py): the second run never calls the encoder."""
import torch
from torch.utils.data import DataLoader, Dataset

from clip_adapt.cache import FeatureCache
from clip_adapt.clip_loader import build_tiny_clip
from clip_adapt.dac import DACHead
from clip_adapt.features import cached_features, extract_features, feature_key
from clip_adapt.text import class_embeddings


class Images(Dataset):
    """Dassl-style items; with `augment`, a random flip and noise drawn from torch's RNG."""

    def __init__(self, n=10, augment=False):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, 32, 32, generator=g)
        self.labels = torch.arange(n) % 3
        self.augment = augment
        self.impaths = [f"img_{i}.png" for i in range(n)]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = self.images[i]
        if self.augment:
            img = img + 0.1 * torch.randn_like(img)
        return {"img": img, "label": self.labels[i], "index": i}


class CountingCLIP:
    """Wraps model.encode_image to count forward calls."""

    def __init__(self, model):
        self.calls = 0
        original = model.encode_image

        def counted(x):
            self.calls += 1
            return original(x)

        model.encode_image = counted


def _key(ds, aug_pass=0, backbone="sha-a", precision="fp32", transform="flip+noise"):
    return feature_key(backbone, "toy", "train", ds.impaths, ds.labels.tolist(), transform, aug_pass=aug_pass,
                       num_shots=2, fewshot_seed=1, precision=precision)


def test_second_run_reuses_the_cache_without_encoder_calls_and_gives_identical_logits(tmp_path):
    ds = Images()
    logits = []
    for run in range(2):  # two "runs": fresh model objects, fresh cache objects, same directory
        model = build_tiny_clip(seed=0).eval()
        counter = CountingCLIP(model)
        cache = FeatureCache(tmp_path / "cache")
        loader = DataLoader(ds, batch_size=4, shuffle=True)
        feats, labels = cached_features(cache, _key(ds), model, loader)
        assert counter.calls == (3 if run == 0 else 0)
        assert labels.tolist() == ds.labels.tolist()  # rows in dataset order whatever the sampler
        text = class_embeddings(model, ["a", "b", "c"], ["{}"])
        head = DACHead(text, 100.0)
        with torch.no_grad():
            logits.append(head(feats))
    assert torch.equal(logits[0], logits[1])


def test_cached_rows_match_a_direct_extraction_in_order(tmp_path):
    ds = Images()
    model = build_tiny_clip(seed=0).eval()
    direct, _ = extract_features(model, DataLoader(ds, batch_size=3))
    cached, _ = cached_features(FeatureCache(tmp_path), _key(ds), model, DataLoader(ds, batch_size=4, shuffle=True))
    torch.testing.assert_close(direct, cached)
    torch.testing.assert_close(direct.norm(dim=1), torch.ones(len(ds)))


def test_augmentation_passes_are_distinct_reproducible_and_leave_the_rng_alone(tmp_path):
    ds = Images(augment=True)
    model = build_tiny_clip(seed=0).eval()
    cache = FeatureCache(tmp_path)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    p0, _ = cached_features(cache, _key(ds, 0), model, DataLoader(ds, batch_size=5), seed=0)
    p1, _ = cached_features(cache, _key(ds, 1), model, DataLoader(ds, batch_size=5), seed=1)
    assert torch.equal(torch.rand(1), expected_next)  # the global RNG was not consumed
    assert not torch.allclose(p0, p1)  # each pass is its own cache entry with its own augmentation
    again, _ = cached_features(None, None, model, DataLoader(ds, batch_size=5), seed=1)
    torch.testing.assert_close(again, p1)


def test_key_names_backbone_pass_and_images():
    ds = Images()
    base = _key(ds)
    assert base != _key(ds, aug_pass=1) and base != _key(ds, backbone="sha-b")
    other = Images(n=9)
    assert _key(other)["items"] != base["items"]
    assert base["num_shots"] == 2 and base["fewshot_seed"] == 1


# ---- the key holds everything that changes a feature --------------------------------------------------------------
class Files(Dataset):
    """Dassl-style items read from real PNG files (so replacing a file changes what is encoded)."""

    def __init__(self, paths):
        self.impaths = [str(p) for p in paths]
        self.labels = torch.arange(len(paths)) % 2

    def __len__(self):
        return len(self.impaths)

    def __getitem__(self, i):
        import numpy as np
        from PIL import Image

        img = torch.from_numpy(np.asarray(Image.open(self.impaths[i]).convert("RGB"), dtype=np.float32) / 255.0)
        return {"img": img.permute(2, 0, 1), "label": self.labels[i], "index": i}


def _png(path, value):
    import numpy as np
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), value, dtype=np.uint8)).save(path)


def test_an_image_replaced_in_place_or_another_precision_or_transform_is_a_cache_miss(tmp_path):
    import os

    from torchvision import transforms as T

    paths = [tmp_path / f"img_{i}.png" for i in range(4)]
    for i, p in enumerate(paths):
        _png(p, 40 * i)
    ds = Files(paths)
    model = build_tiny_clip(seed=0).eval()
    counter = CountingCLIP(model)
    cache = FeatureCache(tmp_path / "cache")
    tfm = T.Compose([T.RandomResizedCrop(32, scale=(0.5, 1.0)), T.Normalize([0.5] * 3, [0.2] * 3)])

    def run(precision="fp32", transform=tfm):
        before = counter.calls
        key = _key(ds, precision=precision, transform=transform)
        feats, _ = cached_features(cache, key, model, DataLoader(ds, batch_size=4))
        return feats, counter.calls - before

    first, calls = run()
    assert calls == 1 and run()[1] == 0  # the same key: a hit
    # the same size and new content, with a new mtime: a miss, and the features of the new image
    st = os.stat(paths[2])
    _png(paths[2], 250)
    os.utime(paths[2], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert os.stat(paths[2]).st_size == st.st_size
    replaced, calls = run()
    assert calls == 1 and not torch.equal(replaced[2], first[2]) and torch.equal(replaced[0], first[0])
    assert run("fp16")[1] == 1 and run("amp")[1] == 1  # another precision: a miss
    other = T.Compose([T.RandomResizedCrop(32, scale=(0.8, 1.0)), T.Normalize([0.5] * 3, [0.2] * 3)])
    assert run(transform=other)[1] == 1  # another transform parameter: a miss
    assert run()[1] == 0 and cache.misses == 5


def test_the_transform_description_is_complete_and_never_an_object_address():
    from clip_adapt.features import describe_transform
    from torchvision import transforms as T

    class Jitter:  # a step without its own repr (like Dassl's Cutout)
        def __init__(self, amount):
            self.amount = amount

        def __call__(self, x):
            return x

    a = describe_transform(T.Compose([T.Resize(32), Jitter(0.1)]))
    assert "Resize(size=32" in a and "Jitter(amount=0.1)" in a and " at 0x" not in a
    assert a == describe_transform(T.Compose([T.Resize(32), Jitter(0.1)]))
    assert a != describe_transform(T.Compose([T.Resize(32), Jitter(0.2)]))
