"""The two views of an unlabelled training image (methods/FAIR.md, parts 5 and 7) and a dataset that yields them.

Weak view: CLIP's test preprocessing (resize the short edge, centre crop, normalise) -- the pseudo-labels' input.
Strong view: random resized crop, horizontal flip and RandAugment(N, M), then normalise -- the student's input.
`TwoViewDataset` returns {"img_weak", "img_strong", "index"} and nothing else: labels never reach training.
"""
import torch
from PIL import Image
from torchvision import transforms as T

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
    """Images by path -> {"img_weak", "img_strong", "index"}; it is given paths only, so it cannot leak labels."""

    def __init__(self, impaths, weak, strong):
        self.impaths = list(impaths)
        self.weak, self.strong = weak, strong

    def __len__(self):
        return len(self.impaths)

    def __getitem__(self, index):
        with Image.open(self.impaths[index]) as im:
            img = im.convert("RGB")
        return {"img_weak": self.weak(img), "img_strong": self.strong(img), "index": index}
