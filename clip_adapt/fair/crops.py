"""Localised image features: random square crops, their relevance and weights (methods/FAIR.md, part 3).

Crops are cut from the image at its ORIGINAL resolution (as WCA does, whose training-free score LAS equals at
initialisation): a square of side U(a, b) x the short edge at a uniform position inside the image, resized to the
input size and normalised like the global view. This runs on the PIL image in the data loader's workers
(`RandomSquareCrops`), so only the N input-size crops travel to the device, never the full-resolution image. The
global view and all crops of a batch then go through the image encoder in ONE call (`encode_with_crops`).
"""
import torch
from PIL import Image
from torchvision.transforms import functional as TF

# PIL resampling filters of INPUT.INTERPOLATION (the same filters torchvision's Resize uses on PIL images)
PIL_INTERPOLATION = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
                     "nearest": Image.Resampling.NEAREST}


def check_crop_scale(scale):
    lo, hi = float(scale[0]), float(scale[1])
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"TRAINER.FAIR.CROP_SCALE must satisfy 0 < a <= b <= 1, got {tuple(scale)}")
    return lo, hi


def sample_image_boxes(width, height, n, scale=(0.5, 0.9), generator=None):
    """N x 3 int64 boxes (side, x0, y0) in pixels of a width x height image: side = round(U(a, b) x short edge)
    (at least 1), top-left uniform over the positions that keep the square inside the image.

    Draws from `generator`, or from torch's global RNG (seeded per DataLoader worker) when None.
    """
    lo, hi = check_crop_scale(scale)
    short = min(int(width), int(height))
    u = torch.rand(n, 3, generator=generator, dtype=torch.float64)
    side = (short * (lo + (hi - lo) * u[:, 0])).round().clamp(1, short).long()
    x0 = (u[:, 1] * (int(width) - side + 1)).floor().long().clamp_max(int(width) - side)
    y0 = (u[:, 2] * (int(height) - side + 1)).floor().long().clamp_max(int(height) - side)
    return torch.stack([side, x0, y0], dim=-1)


def crop_image(img, boxes, size, interpolation="bicubic", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)):
    """N x C x H x W crops of a PIL image at `boxes` (N x 3: side, x0, y0), each resized to `size` (H, W) from the
    full-resolution pixels with PIL's `interpolation` filter, then ToTensor + Normalize(mean, std)."""
    h, w = tuple(size)
    try:
        resample = PIL_INTERPOLATION[interpolation]
    except KeyError:
        raise ValueError(f"INPUT.INTERPOLATION must be one of {tuple(PIL_INTERPOLATION)}, got "
                         f"{interpolation!r}") from None
    out = []
    for side, x0, y0 in boxes.tolist():
        crop = img.crop((x0, y0, x0 + side, y0 + side)).resize((w, h), resample)
        out.append(TF.normalize(TF.to_tensor(crop), mean, std))
    return torch.stack(out)


class RandomSquareCrops:
    """PIL image -> (N x C x H x W crops, N x 3 boxes) (FAIR.md, part 3): N random squares of side U(scale) x the
    short edge of the original image, resized to `size` (INPUT.SIZE) and normalised (INPUT.PIXEL_MEAN / _STD)."""

    def __init__(self, n, scale, size, interpolation="bicubic", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)):
        if int(n) < 1:
            raise ValueError(f"TRAINER.FAIR.N_CROPS must be >= 1, got {n}")
        check_crop_scale(scale)
        if interpolation not in PIL_INTERPOLATION:
            raise ValueError(f"INPUT.INTERPOLATION must be one of {tuple(PIL_INTERPOLATION)}, got "
                             f"{interpolation!r}")
        self.n, self.scale, self.size = int(n), tuple(scale), tuple(size)
        self.interpolation, self.mean, self.std = interpolation, tuple(mean), tuple(std)

    def __call__(self, img, generator=None):
        boxes = sample_image_boxes(img.width, img.height, self.n, self.scale, generator)
        return crop_image(img, boxes, self.size, self.interpolation, self.mean, self.std), boxes


def encode_with_crops(encode, images, crops):
    """(B x D global features, B x N x D crop features) from ONE call of `encode` on [images; crops].

    crops: B x N x C x H x W (crop k of image b at [b, k]).
    """
    b = images.shape[0]
    feats = encode(torch.cat([images, crops.flatten(0, 1).to(images.dtype)]))
    return feats[:b], feats[b:].reshape(b, -1, feats.shape[-1])


def crop_weights(crop_feats, global_feats, topk, tau_v):
    """Relevance r_i = cos(f_i, g), keep the top-k crops, w_i = softmax(tau_v * r_i) over the kept ones.

    crop_feats: B x N x D, global_feats: B x D (both normalised). Returns (B x N weights, 0 for dropped crops;
    B x N relevance).
    """
    r = torch.einsum("bnd,bd->bn", crop_feats, global_feats)
    k = max(1, min(int(topk), r.shape[1]))
    kept = torch.zeros_like(r, dtype=torch.bool).scatter_(1, r.topk(k, dim=1).indices, True)
    w = torch.softmax((tau_v * r).masked_fill(~kept, float("-inf")), dim=1)
    return w, r
