"""Cost of one FAIR training step vs the bare encoder work it contains.

FAIR step (clip_adapt/fair/model.py, as the trainer runs it): the weak view and its N crops (ready-made, as the
data loader delivers them) through the image encoder in one no-grad call, the strong view with gradient, LAS / zero-shot scores,
pseudo-labels and weights, the loss, backward, an AdamW step on the visual norms + CDA, and the logged statistics.
Bare work: the same N + 2 encoder passes (one no-grad call on B x (N + 1) ready-made images, one call on B images
with gradient to the norm parameters) plus one backward of a trivial loss -- nothing else.

Real ViT-B/32 and ViT-B/16 image towers (clip.model.VisionTransformer at 224 px, width 768, 12 layers, output 512)
with random weights, CUB-like C = 200 classes x M = 40 descriptions, batch 8, on the CPU by default. Measurements
are interleaved (bare, FAIR, bare, FAIR, ...) after one warm-up of each, and the ratio of the medians is printed.

The crops are cut in the data loader's workers from the full-resolution image (crops.RandomSquareCrops), off the
step: the bench also times that per image (a --image-size photo-sized PIL image -> N crops at 224 px), the work
each loader worker does per sample on top of the two views.

    python -W ignore -m bench.fair_step [--arch vit_b32 vit_b16] [--batch 8] [--repeats 3] [--device cpu]
"""
import argparse
import statistics
import time

import torch
from clip.model import VisionTransformer
from PIL import Image

from clip_adapt.fair import ClassDescriptionAnchors, FAIRModel, FAIRSettings, RandomSquareCrops
from clip_adapt.optim import build_optimizer

ARCHS = {"vit_b32": 32, "vit_b16": 16}
TARGET = 1.2


class _Optim:  # the fields of cfg.OPTIM that build_optimizer reads (configs/trainers/FAIR/*.yaml values)
    NAME, LR, WEIGHT_DECAY, MOMENTUM, ADAM_BETA1, ADAM_BETA2 = "adamw", 1e-4, 0.1, 0.9, 0.9, 0.999


def build(arch, classes, descriptions, device, seed=0):
    torch.manual_seed(seed)
    visual = VisionTransformer(input_resolution=224, patch_size=ARCHS[arch], width=768, layers=12, heads=12,
                               output_dim=512).to(device)
    name_emb = torch.nn.functional.normalize(torch.randn(classes, 512), dim=-1)
    desc_emb = torch.nn.functional.normalize(torch.randn(classes, descriptions, 512), dim=-1)
    mask = torch.ones(classes, descriptions, dtype=torch.bool)
    mask[::3, descriptions - 3:] = False  # some classes have fewer descriptions (padded + masked)
    cda = ClassDescriptionAnchors(desc_emb, mask, name_emb, tau_t=7.389056)
    model = FAIRModel(visual, name_emb, cda, 100.0, FAIRSettings()).to(device)
    model.train()
    return model, build_optimizer(model.param_groups(_Optim.WEIGHT_DECAY), _Optim)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def fair_step(model, optim, weak, strong, crops):
    loss, out = model.loss(weak, strong, crops)
    optim.zero_grad(set_to_none=True)
    loss.backward()
    optim.step()
    return model.step_statistics(out)  # the trainer logs these every step


def bare_step(model, weak_and_crops, strong):
    visual = model.visual
    with torch.no_grad():
        visual(weak_and_crops)
    visual.zero_grad(set_to_none=True)
    visual(strong).float().sum().backward()


def timed(fn, device):
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def bench(arch, batch, n_crops, classes, descriptions, repeats, device):
    model, optim = build(arch, classes, descriptions, device)
    n_crops = model.settings.n_crops if n_crops is None else n_crops
    model.settings.n_crops = n_crops
    gen = torch.Generator().manual_seed(1)
    weak = torch.randn(batch, 3, 224, 224, generator=gen).to(device)
    strong = torch.randn(batch, 3, 224, 224, generator=gen).to(device)
    crops = torch.randn(batch, n_crops, 3, 224, 224, generator=gen).to(device)
    weak_and_crops = torch.randn(batch * (n_crops + 1), 3, 224, 224, generator=gen).to(device)
    fair = lambda: fair_step(model, optim, weak, strong, crops)  # noqa: E731
    bare = lambda: bare_step(model, weak_and_crops, strong)  # noqa: E731
    timed(bare, device), timed(fair, device)  # warm-up
    t_bare, t_fair = [], []
    for r in range(repeats):
        t_bare.append(timed(bare, device))
        t_fair.append(timed(fair, device))
        print(f"  {arch} repeat {r + 1}/{repeats}: bare {t_bare[-1]:.3f}s  FAIR {t_fair[-1]:.3f}s", flush=True)
    mb, mf = statistics.median(t_bare), statistics.median(t_fair)
    return mb, mf, mf / mb


def loader_crop_time(n_crops, image_size, repeats):
    """Median seconds to cut N crops (224 px, bicubic, normalised) from one image_size PIL image (a loader worker's
    extra work per sample)."""
    w, h = image_size
    img = Image.frombytes("RGB", (w, h), torch.randint(0, 256, (h, w, 3), dtype=torch.uint8).numpy().tobytes())
    crops = RandomSquareCrops(n_crops, (0.5, 0.9), (224, 224), "bicubic", (0.48, 0.46, 0.41), (0.27, 0.26, 0.28))
    crops(img)  # warm-up
    times = []
    for _ in range(max(repeats, 3)):
        t = time.perf_counter()
        crops(img)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crops", type=int, default=None, help="N (default: FAIRSettings().n_crops = 8)")
    p.add_argument("--classes", type=int, default=200)
    p.add_argument("--descriptions", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    p.add_argument("--image-size", type=int, nargs=2, default=(500, 375), metavar=("W", "H"),
                   help="full-resolution image of the loader-side crop timing (default 500 x 375, CUB-like)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.crops if args.crops is not None else FAIRSettings().n_crops
    print(f"FAIR step vs bare encoder work ({n} + 2 passes + 1 backward); batch {args.batch}, {args.classes} classes "
          f"x {args.descriptions} descriptions, device {args.device}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    rows = []
    for arch in args.arch:
        rows.append((arch, *bench(arch, args.batch, args.crops, args.classes, args.descriptions, args.repeats,
                                  args.device)))
    print(f"\n{'arch':8s} {'bare (s)':>9s} {'FAIR (s)':>9s} {'ratio':>6s}  (target <= {TARGET})")
    for arch, mb, mf, ratio in rows:
        print(f"{arch:8s} {mb:9.3f} {mf:9.3f} {ratio:6.3f}  {'OK' if ratio <= TARGET else 'ABOVE TARGET'}")
    t = loader_crop_time(n, tuple(args.image_size), args.repeats)
    print(f"\nloader side (off the step, in the workers): {n} crops of one {args.image_size[0]}x{args.image_size[1]} "
          f"image -> {t * 1000:.1f} ms per sample, {t * args.batch:.3f} s per batch of {args.batch} on one worker")


if __name__ == "__main__":
    main()
