"""FAIR's crops come from the full-resolution image (methods/FAIR.md, part 3; WCA's crops), cut in the data loader.

No Dassl: the datasets of clip_adapt/fair/views.py on PNG files written here.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clip_adapt.data.errors import DatasetError
from clip_adapt.fair import (CropTestDataset, ImageReadError, RandomSquareCrops, TwoViewDataset, sample_image_boxes,
                             strong_transform, weak_transform)

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)  # CLIP's
SIZE = 224


def _checkerboard(path, n=512):
    """A 512 x 512 one-pixel checkerboard (plus a colour ramp): detail that only exists at full resolution."""
    y, x = np.mgrid[:n, :n]
    board = ((x + y) % 2 * 255).astype(np.uint8)
    img = np.stack([board, (x // 2).astype(np.uint8), (255 - board) // 2 + (y // 4).astype(np.uint8)], -1)
    Image.fromarray(img).save(path)
    return path


def _reference_crop(path, box, size=SIZE):
    """The crop computed here, independently: numpy slice of the full-resolution pixels -> PIL bicubic resize ->
    x / 255, (x - mean) / std."""
    side, x0, y0 = (int(v) for v in box)
    pixels = np.asarray(Image.open(path).convert("RGB"))[y0:y0 + side, x0:x0 + side]
    patch = Image.fromarray(pixels)
    if patch.size != (size, size):
        patch = patch.resize((size, size), Image.Resampling.BICUBIC)
    t = torch.from_numpy(np.array(patch)).permute(2, 0, 1).float() / 255
    return (t - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def _views(path, scale=(0.5, 0.9), n=4):
    return TwoViewDataset([str(path)], weak_transform((SIZE, SIZE), "bicubic", MEAN, STD),
                          strong_transform((SIZE, SIZE), "bicubic", MEAN, STD),
                          RandomSquareCrops(n, scale, (SIZE, SIZE), "bicubic", MEAN, STD))


def test_crops_are_cut_from_the_full_resolution_image_exactly(tmp_path):
    path = _checkerboard(tmp_path / "board.png")
    torch.manual_seed(0)
    item = _views(path)[0]
    crops, boxes = item["crops"], item["crop_boxes"]
    assert crops.shape == (4, 3, SIZE, SIZE) and boxes.shape == (4, 3)
    assert item["img_weak"].shape == item["img_strong"].shape == (3, SIZE, SIZE)
    side = boxes[:, 0]
    assert (side >= 256).all() and (side <= 461).all()  # U(0.5, 0.9) x the short edge of the 512 px image
    for crop, box in zip(crops, boxes):
        assert torch.equal(crop, _reference_crop(path, box))


def test_full_resolution_detail_survives_where_the_old_centre_crop_path_destroys_it(tmp_path):
    path = _checkerboard(tmp_path / "board.png")
    scale = (SIZE / 512, SIZE / 512)  # side 224 of the 512 px image: the crop IS the original pixels
    torch.manual_seed(1)
    item = _views(path, scale=scale, n=2)[0]
    crop, (side, x0, y0) = item["crops"][0], item["crop_boxes"][0].tolist()
    assert side == SIZE
    assert torch.equal(crop, _reference_crop(path, (side, x0, y0)))  # no resampling at all
    board = crop[0]  # the checkerboard channel: +-1 pixel to pixel, intact
    assert (board[:, 1:] - board[:, :-1]).abs().mean() > 3.0

    # the old path: the same region cut from the 224 px centre-cropped weak view and upsampled (bilinear)
    weak = item["img_weak"]
    k = SIZE / 512  # the weak view is the whole (square) image resized to 224
    s, x, y = round(side * k), round(x0 * k), round(y0 * k)
    old = F.interpolate(weak[None, :, y:y + s, x:x + s], size=(SIZE, SIZE), mode="bilinear",
                        align_corners=False)[0]
    old_board = old[0]
    assert (old_board[:, 1:] - old_board[:, :-1]).abs().mean() < 0.1 * (board[:, 1:] - board[:, :-1]).abs().mean()
    assert not torch.allclose(old, crop, atol=0.5)


def test_crops_anywhere_in_the_image_not_only_in_its_centre_crop(tmp_path):
    gen = torch.Generator().manual_seed(0)
    boxes = torch.cat([sample_image_boxes(640, 320, 8, (0.5, 0.5), gen) for _ in range(50)])
    x0 = boxes[:, 1]
    assert (boxes[:, 0] == 160).all()
    assert x0.min() < 160 - 80 and x0.max() + 160 > 160 + 320 + 80  # beyond the 320 px wide centre square


def test_crops_are_reproducible_with_worker_seeding(tmp_path):
    paths = [_checkerboard(tmp_path / f"{i}.png", n=96 + 16 * i) for i in range(4)]
    ds = TwoViewDataset([str(p) for p in paths], weak_transform((32, 32), "bicubic", MEAN, STD),
                        strong_transform((32, 32), "bicubic", MEAN, STD),
                        RandomSquareCrops(3, (0.5, 0.9), (32, 32), "bicubic", MEAN, STD))

    def epoch(seed):
        torch.manual_seed(seed)  # the base seed of the workers comes from the main process's RNG
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, shuffle=True)
        return [(b["index"], b["crop_boxes"], b["crops"]) for b in loader]

    a, b, c = epoch(5), epoch(5), epoch(6)
    for (ia, ba, ca), (ib, bb, cb) in zip(a, b):
        assert torch.equal(ia, ib) and torch.equal(ba, bb) and torch.equal(ca, cb)
    assert any(not torch.equal(x[1], y[1]) for x, y in zip(a, c))
    for index, boxes, crops in a:  # each batch: B x N crops of the input size, boxes of its own image
        assert crops.shape == (2, 3, 3, 32, 32) and boxes.shape == (2, 3, 3)


def test_test_crops_are_seeded_per_image_whatever_the_order(tmp_path):
    paths = [str(_checkerboard(tmp_path / f"{i}.png", n=64)) for i in range(3)]
    crops = RandomSquareCrops(4, (0.5, 0.9), (32, 32), "bicubic", MEAN, STD)
    ds = CropTestDataset(paths, [2, 0, 1], weak_transform((32, 32), "bicubic", MEAN, STD), crops, seed=3)
    first = [ds[i] for i in range(3)]
    again = [ds[i] for i in reversed(range(3))][::-1]
    for x, y in zip(first, again):
        assert torch.equal(x["crops"], y["crops"]) and torch.equal(x["img"], y["img"])
    assert [x["label"] for x in first] == [2, 0, 1] and first[0]["crops"].shape == (4, 3, 32, 32)
    other = CropTestDataset(paths, [2, 0, 1], ds.transform, crops, seed=4)[0]
    assert not torch.equal(other["crops"], first[0]["crops"])


@pytest.mark.parametrize("workers", [0, 1])
def test_an_unreadable_training_image_is_one_message_naming_its_path(tmp_path, workers):
    good = _checkerboard(tmp_path / "good.png", n=64)
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[:100])  # truncated
    ds = TwoViewDataset([str(good), str(bad)], weak_transform((32, 32)), strong_transform((32, 32)),
                        RandomSquareCrops(2, (0.5, 0.9), (32, 32)))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=workers)
    with pytest.raises(DatasetError) as e:
        next(iter(loader))
    message = str(e.value)
    assert isinstance(e.value, ImageReadError)
    assert message.startswith(f"unreadable image {bad}: ") and "\n" not in message and "Traceback" not in message
