"""DAC training on cached features vs one encoding pass of the same images (methods/DAC.md, part 4).

Training: `train_on_cache` (clip_adapt/dac/model.py: the step the Dassl trainer runs: adapter + supervised
contrastive loss, text modulation + CE, AdamW, cosine) for C = 1000 classes, K = 16 shots, D = 512, 20 epochs, over
A = 10 cached augmentation passes (the configs' default: 160,000 views, batch 256; an epoch sees each of the 16,000
images once as 2 distinct views, TRAINER.DAC.SAMPLER class_views; --sampler random: once as one of its views,
EPOCH_VIEWS "one", or all views with --epoch-views all), followed by the cache model
and the 21 x 21 alpha/beta search on a min(K, 4)-shot val set (4,000 images), on random normalised features.
Encoding: a real ViT-B/16-shaped `clip.model.CLIP` (embed 512, vision width 768, 12 layers, patch 16, 224 px; text
tower of the same model; random initialisation, nothing downloaded) in fp32; `encode_image` is timed on batches of 32
(after one warm-up batch) and extrapolated to the C x K = 16,000 few-shot images (one pass; the A passes of a real
run cost A times this, once, then live in the cache).

    python -W ignore -m bench.dac_train [--classes 1000] [--shots 16] [--epochs 20] [--passes 10] [--batches 3]
                                        [--threads N] [--sampler class_views|random] [--epoch-views one|all]

Target: training on the cache costs less than 5% of one encoding pass.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from clip.model import CLIP

from clip_adapt.dac import EPOCH_VIEWS, SAMPLERS, DACHead, epoch_length, grid, search_alpha_beta, train_on_cache

TARGET = 0.05


def vit_b16_clip():
    """clip.model.CLIP with ViT-B/16's dimensions (random weights)."""
    return CLIP(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
                context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8,
                transformer_layers=12).eval()


def time_training(classes, shots, dim, epochs, passes, batch_size, epoch_views="one", seed=0, sampler="class_views"):
    """Seconds of train_on_cache + cache model + val search, and the losses of the first and last epoch."""
    g = torch.Generator().manual_seed(seed)
    text = F.normalize(torch.randn(classes, dim, generator=g), dim=-1)
    labels = torch.arange(classes).repeat_interleave(shots)
    centres = F.normalize(torch.randn(classes, dim, generator=g), dim=-1)
    views = F.normalize(centres[labels] + 0.8 * torch.randn(passes, len(labels), dim, generator=g), dim=-1)
    val_labels = torch.arange(classes).repeat_interleave(min(shots, 4))
    val = F.normalize(centres[val_labels] + 0.8 * torch.randn(len(val_labels), dim, generator=g), dim=-1)
    head = DACHead(text, 100.0)
    start = time.perf_counter()
    history = train_on_cache(head, views, labels, epochs=epochs, batch_size=batch_size, lr=1e-3, weight_decay=0.01,
                             generator=g, epoch_views=epoch_views, sampler=sampler)
    train_s = time.perf_counter() - start
    with torch.no_grad():
        keys, values = head.build_cache(views, labels, classes)
        res = search_alpha_beta(head.text_logits(val), head.adapter(val), keys, values, val_labels,
                                grid((0.0, 10.0, 21)), grid((0.1, 10.0, 21)))
    total_s = time.perf_counter() - start
    return train_s, total_s, history[0], history[-1], res


@torch.no_grad()
def time_encoder(batches, batch_size=32):
    """Median seconds of encode_image on one batch of `batch_size` 224 px images."""
    torch.manual_seed(0)
    model = vit_b16_clip()
    images = torch.randn(batch_size, 3, 224, 224)
    model.encode_image(images)  # warm-up
    times = []
    for _ in range(batches):
        start = time.perf_counter()
        model.encode_image(images)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--passes", type=int, default=10, help="A cached augmentation passes (configs' default 10)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--sampler", choices=SAMPLERS, default="class_views", help="TRAINER.DAC.SAMPLER")
    p.add_argument("--epoch-views", choices=EPOCH_VIEWS, default="one", help="TRAINER.DAC.EPOCH_VIEWS (random sampler)")
    p.add_argument("--batches", type=int, default=3, help="timed encoder batches of 32")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads for both parts (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    n = args.classes * args.shots
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    train_s, total_s, first, last, res = time_training(args.classes, args.shots, args.dim, args.epochs, args.passes,
                                                       args.batch_size, args.epoch_views, sampler=args.sampler)
    print(f"DAC on cached features: C={args.classes}, K={args.shots}, D={args.dim}, A={args.passes} "
          f"({args.passes * n:,} views), {args.epochs} epochs of {epoch_length(n, args.passes, args.epoch_views, args.sampler):,} views, batch {args.batch_size}: training {train_s:.1f} s "
          f"(loss {first:.3f} -> {last:.3f}); with cache model + 21x21 val search {total_s:.1f} s "
          f"(alpha {res.alpha:.3g}, beta {res.beta:.3g})")
    per_batch, times = time_encoder(args.batches)
    encode_s = per_batch * n / 32
    print(f"ViT-B/16 CLIP encode_image, batch 32, fp32: {per_batch:.2f} s per batch (median of "
          f"{', '.join(f'{t:.2f}' for t in times)}) -> {encode_s:.0f} s for {n:,} images (one pass)")
    ratio = total_s / encode_s
    print(f"ratio (training + search) / one encoding pass: {100 * ratio:.2f}% "
          f"(training alone {100 * train_s / encode_s:.2f}%); target < {100 * TARGET:.0f}%: "
          f"{'met' if ratio < TARGET else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
