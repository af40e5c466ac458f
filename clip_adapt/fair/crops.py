"""Localised image features: random square crops, their relevance and weights (methods/FAIR.md, part 3).

Crops are cut from the (already preprocessed) image tensors of a batch with one `affine_grid`/`grid_sample` call:
side = U(a, b) x the short edge, uniform position inside the image, resized (bilinear) to the input size. The
global view and all crops of a batch then go through the image encoder in ONE call (`encode_with_crops`).
"""
import torch
import torch.nn.functional as F


def sample_crop_boxes(batch, n, height, width, scale=(0.5, 0.9), generator=None):
    """B x N x 3 boxes (side, x0, y0) in pixels: side ~ U(scale) x min(H, W), top-left uniform inside the image.

    Drawn on the CPU (with `generator`, if given) so the same seed gives the same crops on any device.
    """
    lo, hi = float(scale[0]), float(scale[1])
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"TRAINER.FAIR.CROP_SCALE must satisfy 0 < a <= b <= 1, got {scale}")
    u = torch.rand(batch, n, 3, generator=generator)
    side = (lo + (hi - lo) * u[..., 0]) * min(height, width)
    x0 = u[..., 1] * (width - side)
    y0 = u[..., 2] * (height - side)
    return torch.stack([side, x0, y0], dim=-1)


def crop_and_resize(images, boxes, out_size=None):
    """(B*N) x C x S x S crops of `images` (B x C x H x W) at `boxes` (B x N x 3), bilinear, in one call.

    Crop k of image b is row b*N + k. `out_size` defaults to the images' own size (H, W).
    """
    b, c, h, w = images.shape
    n = boxes.shape[1]
    oh, ow = out_size or (h, w)
    boxes = boxes.to(device=images.device, dtype=torch.float32).reshape(b * n, 3)
    side, x0, y0 = boxes.unbind(-1)
    # affine_grid maps output coords in [-1, 1] to input coords in [-1, 1] (align_corners=False)
    theta = torch.zeros(b * n, 2, 3, device=images.device)
    theta[:, 0, 0] = side / w
    theta[:, 1, 1] = side / h
    theta[:, 0, 2] = (2 * x0 + side) / w - 1
    theta[:, 1, 2] = (2 * y0 + side) / h - 1
    grid = F.affine_grid(theta, (b * n, c, oh, ow), align_corners=False).to(images.dtype)
    src = images.repeat_interleave(n, dim=0)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_square_crops(images, n, scale=(0.5, 0.9), generator=None, out_size=None):
    """N random square crops per image (FAIR.md, part 3), (B*N) x C x S x S."""
    b, _, h, w = images.shape
    return crop_and_resize(images, sample_crop_boxes(b, n, h, w, scale, generator), out_size)


def encode_with_crops(encode, images, crops):
    """(B x D global features, B x N x D crop features) from ONE call of `encode` on [images; crops]."""
    b = images.shape[0]
    feats = encode(torch.cat([images, crops.to(images.dtype)]))
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
