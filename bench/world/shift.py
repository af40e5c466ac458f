"""Image pipeline of the world and its distribution shift.

`to_canvas`: a 28 x 28 Fashion-MNIST image padded with black to the CLIP's 32 x 32 input (no resampling, so a
PNG written at 32 px passes Dassl's Resize(32) / CenterCrop(32) unchanged).
`apply_shift` (the target domain): Gaussian blur (sigma BLUR_SIGMA, zero padding, kernel cut at 4 sigma) followed
by additive Gaussian noise (std NOISE_SIGMA on the [0, 1] scale), clipped to [0, 1] and rounded to uint8. The
noise comes from a numpy Generator seeded per split, so a world is rebuilt bit-identically. Both keep the black
background black on average, which is what keeps the shift a domain shift rather than a collapse.
"""
import numpy as np
import torch
import torch.nn.functional as F

CANVAS = 32
BLUR_SIGMA = 1.5
NOISE_SIGMA = 0.1
# CLIP's normalisation (the world's configs use the same INPUT.PIXEL_MEAN / PIXEL_STD)
PIXEL_MEAN = (0.48145466, 0.4578275, 0.40821073)
PIXEL_STD = (0.26862954, 0.26130258, 0.27577711)


def to_canvas(images):
    """uint8 N x 28 x 28 -> uint8 N x 32 x 32 (black border of 2 px)."""
    pad = (CANVAS - images.shape[-1]) // 2
    return np.pad(images, ((0, 0), (pad, CANVAS - images.shape[-1] - pad), (pad, CANVAS - images.shape[-2] - pad)))


def gaussian_blur(x, sigma):
    """Separable Gaussian blur of float64 N x H x W images, zero padding."""
    if sigma <= 0:
        return x
    radius = int(np.ceil(4 * sigma))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k = torch.from_numpy(k / k.sum())
    y = torch.from_numpy(x)[:, None]
    y = F.conv2d(y, k.view(1, 1, 1, -1), padding=(0, radius))
    y = F.conv2d(y, k.view(1, 1, -1, 1), padding=(radius, 0))
    return y[:, 0].numpy()


def apply_shift(images, seed, blur_sigma=BLUR_SIGMA, noise_sigma=NOISE_SIGMA):
    """uint8 N x H x W -> uint8 N x H x W: blur, then noise (seeded), clip, round."""
    x = images.astype(np.float64) / 255.0
    x = gaussian_blur(x, blur_sigma)
    if noise_sigma > 0:
        x = x + np.random.default_rng(seed).normal(0.0, noise_sigma, size=x.shape)
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def to_tensor(images):
    """uint8 N x 32 x 32 -> float N x 3 x 32 x 32, normalised as the world's configs do (grey -> RGB)."""
    x = torch.from_numpy(images).float().div_(255.0)[:, None].expand(-1, 3, -1, -1)
    mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    return (x - mean) / std
