"""Train the world's small CLIP contrastively on clean Fashion-MNIST.

    python -m bench.world.train_clip --out data/world/clip_fashion_mnist.pt [--steps 880]

The model is the real `clip.model.CLIP` class: a ViT image tower (6 layers, width 64, patch 4, 32 px) and a text
tower (3 layers, width 128, CLIP's 49408-token vocabulary, context 77), embedding dimension 64. Each image is paired
with one caption of its class drawn at random (a template filled with the class name or a hand-written
description, bench/world/captions.py). The loss is CLIP's symmetric InfoNCE with a learnable temperature, except
that pairs of the same class in a batch count as positives (soft targets spread evenly over them): with 10 classes
a batch of 128 holds many same-class pairs, which plain InfoNCE would push apart.

Images: the official train split minus its last HOLDOUT images, which are kept out of pre-training (the world's
target train/val splits are drawn from them). Fixed seed, fixed number of steps, AdamW with linear warmup and
cosine decay: on a 2-core CPU the default (880 steps of 128) takes about 5 minutes and is reproducible there.
The checkpoint is a plain state dict that `clip_adapt.clip_loader.load_clip(path)` (MODEL.BACKBONE.NAME
<path>) rebuilds through `clip.model.build_model`.
"""
import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import fashion_mnist, shift
from .captions import class_captions

HOLDOUT = 10000  # last images of the official train split: never seen in pre-training
ARCH = dict(embed_dim=64, image_resolution=32, vision_layers=6, vision_width=64, vision_patch_size=4,
            context_length=77, vocab_size=49408, transformer_width=128, transformer_heads=2, transformer_layers=3)


def build_model(seed, arch=None):
    from clip.model import CLIP

    torch.manual_seed(seed)
    return CLIP(**(arch or ARCH)).float()


def multi_positive_loss(image_features, text_features, labels, logit_scale):
    """Symmetric cross-entropy of CLIP with every same-class (image, caption) pair as a positive."""
    logits = logit_scale * image_features @ text_features.t()
    pos = (labels[:, None] == labels[None, :]).float()
    targets = pos / pos.sum(1, keepdim=True)
    # pos is symmetric (images and captions share the labels), so the same targets serve both directions
    loss_i = -(targets * F.log_softmax(logits, 1)).sum(1).mean()
    loss_t = -(targets * F.log_softmax(logits.t(), 1)).sum(1).mean()
    return (loss_i + loss_t) / 2


@torch.no_grad()
def zero_shot_accuracy(model, images, labels, template="a photo of a {}.", batch=500):
    """Accuracy (%) of the class-name prompts `template` on uint8 N x 32 x 32 images."""
    import clip

    model.eval()
    tokens = clip.tokenize([template.format(c) for c in fashion_mnist.CLASSNAMES])
    text = F.normalize(model.encode_text(tokens), dim=-1)
    correct = 0
    for i in range(0, len(images), batch):
        feats = F.normalize(model.encode_image(shift.to_tensor(images[i:i + batch])), dim=-1)
        correct += (feats @ text.t()).argmax(1).eq(torch.from_numpy(labels[i:i + batch])).sum().item()
    return 100.0 * correct / len(images)


def infonce_loss(image_features, text_features, labels, logit_scale):
    """CLIP's plain symmetric InfoNCE: only the i-th caption is the i-th image's positive (labels unused)."""
    logits = logit_scale * image_features @ text_features.t()
    target = torch.arange(len(logits))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


LOSSES = {"multi_positive": multi_positive_loss, "infonce": infonce_loss}


def train(out, steps=880, batch_size=128, lr=1e-3, weight_decay=0.1, warmup=50, seed=0, threads=2, log_every=50,
          loss="multi_positive", arch=None):
    if loss not in LOSSES:
        raise ValueError(f"unknown CLIP training loss {loss!r} (params['clip']['loss']); one of {sorted(LOSSES)}")
    torch.set_num_threads(threads)
    import clip

    images, labels = fashion_mnist.load("train")
    images, labels = shift.to_canvas(images[:-HOLDOUT]), labels[:-HOLDOUT]
    captions = class_captions()
    tokens = [clip.tokenize(c) for c in captions]  # per class: n_captions x 77

    model = build_model(seed, arch)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                               {"params": other, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98), eps=1e-6)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup))))
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(images)) for _ in range(steps * batch_size // len(images) + 1)])
    model.train()
    t0 = time.time()
    for step in range(steps):
        idx = order[step * batch_size:(step + 1) * batch_size]
        y = labels[idx]
        pick = rng.integers(0, len(captions[0]), size=len(idx))
        text = torch.stack([tokens[c][k] for c, k in zip(y, pick)])
        img_f = F.normalize(model.encode_image(shift.to_tensor(images[idx])), dim=-1)
        txt_f = F.normalize(model.encode_text(text), dim=-1)
        value = LOSSES[loss](img_f, txt_f, torch.from_numpy(y), model.logit_scale.exp())
        optim.zero_grad(set_to_none=True)
        value.backward()
        optim.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if (step + 1) % log_every == 0 or step == 0:
            print(f"step {step + 1}/{steps} loss {value.item():.4f} lr {sched.get_last_lr()[0]:.2e} "
                  f"({time.time() - t0:.0f} s)", flush=True)
    model.eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    torch.save(model.state_dict(), tmp)
    tmp.replace(out)
    print(f"saved {out} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
          f"{time.time() - t0:.0f} s)")
    return model


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.world.train_clip", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="checkpoint file to write")
    p.add_argument("--steps", type=int, default=880)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--loss", choices=sorted(LOSSES), default="multi_positive")
    p.add_argument("--embed-dim", type=int, default=ARCH["embed_dim"])
    a = p.parse_args(argv)
    model = train(a.out, steps=a.steps, batch_size=a.batch_size, lr=a.lr, seed=a.seed, threads=a.threads,
                  loss=a.loss, arch=dict(ARCH, embed_dim=a.embed_dim))
    # diagnostics on 2000 held-out train images (never on the official test split, which the world's test uses)
    images, labels = fashion_mnist.load("train")
    x, y = shift.to_canvas(images[-2000:]), labels[-2000:]
    print(f"zero-shot on 2000 held-out clean images: {zero_shot_accuracy(model, x, y):.2f}%")
    print(f"zero-shot on the same images shifted: {zero_shot_accuracy(model, shift.apply_shift(x, seed=123), y):.2f}%")

if __name__ == "__main__":
    main()
