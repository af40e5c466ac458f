"""The two views of an unlabelled training image (methods/FAIR.md, parts 5 and 7) and a dataset that yields them.

Weak view: CLIP's test preprocessing (resize the short edge, centre crop, normalise) -- the pseudo-labels' input.
Strong view: random resized crop, horizontal flip and RandAugment(N, M), then normalise -- the student's input.
Crops (part 3): N random squares of the full-resolution image, cut in the same worker (crops.RandomSquareCrops).
`TwoViewDataset` returns {"img_weak", "img_strong", "crops", "crop_boxes", "index"} and nothing else: labels never
reach training. `CropTestDataset` gives evaluation images with their crops (TRAINER.FAIR.TEST_CROPS).
"""
import torch
from torchvision import transforms as T

from ..data.errors import ImageReadError  # noqa: F401  (what open_image raises; part of this module's API)
from ..data.loader import open_image

_INTERPOLATION = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC,
                  "nearest": T.InterpolationMode.NEAREST}
STRONG_AUGS = ("randaugment", "none")


def _interp(name):
    try:
        return _INTERPOLATION[name]
    except KeyError:
        raise ValueError(f"INPUT.INTERPOLATION must be one of {tuple(_INTERPOLATION)}, got {name!r}") from None


def weak_transform(size, interpolation="bicubic", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)):
    """CLIP's preprocessing (the same as Dassl's test transform): resize short edge, centre crop, normalise."""
    size = tuple(size)
    return T.Compose([T.Resize(max(size), interpolation=_interp(interpolation)), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize(mean, std)])


def strong_transform(size, interpolation="bicubic", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                     kind="randaugment", num_ops=2, magnitude=10, crop_scale=(0.5, 1.0)):
    """RandAugment-style strong view; kind "none" gives the weak view (for ablations)."""
    if kind not in STRONG_AUGS:
        raise ValueError(f"TRAINER.FAIR.STRONG_AUG must be one of {STRONG_AUGS}, got {kind!r}")
    if kind == "none":
        return weak_transform(size, interpolation, mean, std)
    mode = _interp(interpolation)
    return T.Compose([T.RandomResizedCrop(tuple(size), scale=tuple(crop_scale), interpolation=mode),
                      T.RandomHorizontalFlip(), T.RandAugment(int(num_ops), int(magnitude), interpolation=mode),
                      T.ToTensor(), T.Normalize(mean, std)])


class TwoViewDataset(torch.utils.data.Dataset):
    """Images by path -> {"img_weak", "img_strong", "index"} (+ "crops", "crop_boxes" with a `crops` transform,
    e.g. RandomSquareCrops: N crops of the full-resolution image, drawn before the two views from torch's RNG,
    which the FAIR trainer seeds per image with clip_adapt.distributed.SeededItems). It is given paths only, so it
    cannot leak labels."""

    def __init__(self, impaths, weak, strong, crops=None):
        self.impaths = list(impaths)
        self.weak, self.strong, self.crops = weak, strong, crops

    def __len__(self):
        return len(self.impaths)

    def __getitem__(self, index):
        img = open_image(self.impaths[index])
        item = {}
        if self.crops is not None:
            item["crops"], item["crop_boxes"] = self.crops(img)
        item.update({"img_weak": self.weak(img), "img_strong": self.strong(img), "index": index})
        return item


class CropTestDataset(torch.utils.data.Dataset):
    """Labelled evaluation images -> {"img", "crops", "label", "index"} (TRAINER.FAIR.TEST_CROPS): the test view and
    N crops of the full-resolution image. The crops of image i come from a generator seeded with (seed, i), so an
    evaluation is reproducible whatever the order, batching or number of workers."""

    def __init__(self, impaths, labels, transform, crops, seed=0):
        self.impaths, self.labels = list(impaths), list(labels)
        self.transform, self.crops, self.seed = transform, crops, max(int(seed), 0)

    def __len__(self):
        return len(self.impaths)

    def __getitem__(self, index):
        img = open_image(self.impaths[index])
        # torch's CPU generator keeps 32 bits of a seed: (seed, index) folded into them
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + index) % 2 ** 32)
        crops, _ = self.crops(img, generator=generator)
        return {"img": self.transform(img), "crops": crops, "label": self.labels[index], "index": index}
