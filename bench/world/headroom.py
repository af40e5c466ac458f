"""How much a world lets adaptation gain, measured on the shifted VAL split only (bench/world/README.md).

    python -m bench.world.headroom [--root data/world] [--ln-epochs 10]

Reference points that use labels the methods never see, so they bound what the methods can reach with the world's
CLIP (frozen features, or only the visual LayerNorms trained, as FAIR and ReCLIP do):
    zero-shot                         class-name prompts (single template and the ensemble)
    oracle linear probe               a linear classifier on the frozen features of all 1,000 labelled train images
    K-shot probe + zero-shot          K labelled train images per class (seeds 1-3), probe softmax + zero-shot softmax
    K-shot Tip-Adapter (optimistic)   training-free cache of the K shots, alpha/beta picked on val itself (an upper
                                      bound on what a val search of 40 images can pick)
    label propagation                 ReCLIP's pseudo-labels of the unlabelled train images from the text anchors
    oracle LayerNorm fine-tuning      the visual LayerNorm affine parameters trained with the train labels
The test split is never read.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import build, fashion_mnist, shift


def _images(root, split, name):
    folder = Path(root) / build.DATASET_DIR / "images"
    x = np.stack([np.array(Image.open(folder / rel).convert("L")) for rel, _, _ in split[name]])
    return shift.to_tensor(x), torch.tensor([label for _, label, _ in split[name]])


def _acc(logits, labels):
    return 100.0 * (logits.argmax(1) == labels).float().mean().item()


def _probe(x, y, epochs=300, lr=1e-2, weight_decay=1e-3):
    """Logistic regression on normalised features (scaled by 10), full batch Adam."""
    w = torch.zeros(int(y.max()) + 1, x.shape[1], requires_grad=True)
    b = torch.zeros(int(y.max()) + 1, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        loss = F.cross_entropy(10 * x @ w.t() + b, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return lambda q: (10 * q @ w.t() + b).detach()


def headroom(root="data/world", shots=(4, 16), seeds=(1, 2, 3), ln_epochs=10, threads=2):
    from clip_adapt.clip_loader import load_clip
    from clip_adapt.dac.cache_model import cache_logits, cache_values
    from clip_adapt.prompts import get_templates
    from clip_adapt.reclip.label_propagation import label_propagation
    from clip_adapt.text import class_embeddings

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rows = []
    model = load_clip(str(Path(root) / build.CHECKPOINT)).eval()
    split = json.loads((Path(root) / build.DATASET_DIR / build.SPLIT_FILE).read_text())
    xtr, ytr = _images(root, split, "train")
    xva, yva = _images(root, split, "val")
    with torch.no_grad():
        ftr = F.normalize(model.encode_image(xtr), dim=-1)
        fva = F.normalize(model.encode_image(xva), dim=-1)
        texts = {m: class_embeddings(model, fashion_mnist.CLASSNAMES, get_templates(build.DATASET_DIR, m))
                 for m in ("single", "ensemble")}
    scale = model.logit_scale.exp().item()
    for mode, t in texts.items():
        rows.append((f"zero-shot ({mode} template)", _acc(fva @ t.t(), yva)))
    train_zero_shot = _acc(ftr @ texts["ensemble"].t(), ytr)
    t = texts["ensemble"]
    zs = (scale * fva @ t.t()).softmax(1)
    zero_shot = rows[-1][1]
    rows.append(("oracle linear probe (1,000 labelled train images)", _acc(_probe(ftr, ytr)(fva), yva)))
    for k in shots:
        probe, tip = [], []
        for seed in seeds:
            rng = np.random.default_rng(seed)
            idx = torch.from_numpy(np.concatenate([rng.choice(np.flatnonzero(ytr.numpy() == c), k, replace=False)
                                                   for c in range(len(t))]))
            probe.append(_acc(_probe(ftr[idx], ytr[idx])(fva).softmax(1) + zs, yva))
            values = cache_values(ytr[idx], len(t))  # DAC's cache model with the identity adapter = Tip-Adapter
            tip.append(max(_acc(scale * fva @ t.t() + a * cache_logits(fva, ftr[idx], values, b), yva)
                           for a in (0.5, 1, 2, 4, 8) for b in (1, 3, 5.5, 10)))
        rows.append((f"{k}-shot linear probe + zero-shot (mean of seeds {seeds})", float(np.mean(probe))))
        rows.append((f"{k}-shot Tip-Adapter, alpha/beta picked on val (optimistic)", float(np.mean(tip))))
    for k in (10, 20):
        lp = label_propagation(ftr, t, k=k)
        rows.append((f"label propagation k={k}: pseudo-labels of the 1,000 train images (gain over their "
                     f"zero-shot {train_zero_shot:.1f})", _acc(lp.scores, ytr), train_zero_shot))
    if ln_epochs:
        for p in model.parameters():
            p.requires_grad_(False)
        ln = [p for n, p in model.visual.named_parameters() if "ln" in n]
        for p in ln:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(ln, lr=1e-3, weight_decay=0.0)
        best = (0.0, 0)
        for epoch in range(ln_epochs):
            for b in torch.randperm(len(xtr)).split(64):
                f = F.normalize(model.encode_image(xtr[b]), dim=-1)
                loss = F.cross_entropy(scale * f @ t.t(), ytr[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                acc = _acc(model.encode_image(xva) @ t.t(), yva)
            best = max(best, (acc, epoch + 1))
        rows.append((f"oracle visual-LayerNorm fine-tuning with train labels (best of {ln_epochs} epochs: "
                     f"epoch {best[1]})", best[0]))
    print(f"{'reference point (shifted val, 500 images, unless named)':90s} {'val %':>6s} {'vs zero-shot':>12s}")
    for name, acc, *ref in rows:
        print(f"{name:90s} {acc:6.1f} {acc - (ref[0] if ref else zero_shot):+12.1f}")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.world.headroom", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="data/world")
    p.add_argument("--ln-epochs", type=int, default=10, help="0 skips the LayerNorm oracle")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    headroom(a.root, ln_epochs=a.ln_epochs, threads=a.threads)


if __name__ == "__main__":
    main()
