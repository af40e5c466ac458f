"""Text embeddings of class prompts: batched through CLIP's text encoder, averaged over templates, cached."""
import clip
import torch
import torch.nn.functional as F

from .prompts import fill


def tokenize(model, texts):
    """Token ids of `texts` for `model`: its own tokenizer (an open_clip model's, clip_adapt/openclip_loader.py),
    else `clip.tokenize` (truncating to 77 tokens)."""
    if hasattr(model, "tokenize"):
        return model.tokenize(texts)
    return clip.tokenize(texts, truncate=True)


def encode_texts(model, texts, batch_size=256, device=None, normalize=True):
    """Embed a list of strings with `model.encode_text` in batches (no gradient); returns N x D float32."""
    device = device or next(model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            tokens = tokenize(model, texts[i:i + batch_size]).to(device)
            out.append(model.encode_text(tokens).float())
    if not out:
        return torch.empty(0, getattr(model, "embed_dim", None) or model.text_projection.shape[1], device=device)
    feats = torch.cat(out)
    return F.normalize(feats, dim=-1) if normalize else feats


def class_embeddings(model, classnames, templates, batch_size=256, cache=None, backbone_id=None):
    """C x D class embeddings: each class's prompts embedded and normalised, averaged, re-normalised.

    This is the ensemble of both references: CoOp's ZeroshotCLIP2 (trainers/zsclip.py: per template, the class
    prompts' embeddings normalised; summed over templates, divided by their number, re-normalised) and ReCLIP
    (models.py, CLIP_LN_V/CLIP_LN_T.encode_text: per class, normalise, mean over templates, normalise), which is
    also CLIP's notebook's. With one template it is CoOp's ZeroshotCLIP (the normalised prompt embedding). The
    references normalise in the model's dtype (fp16 on GPU); here the encoder's output is cast to float32 first.

    With a `cache` (FeatureCache) and a `backbone_id` (checkpoint fingerprint), a second call with the same
    backbone, weight dtype, class names and templates reads the result from disk instead of running the text encoder.
    """
    def compute():
        prompts = [p for c in classnames for p in fill(templates, c)]
        feats = encode_texts(model, prompts, batch_size=batch_size)
        feats = feats.view(len(classnames), len(templates), -1).mean(1)
        return F.normalize(feats, dim=-1).cpu()

    if cache is None or backbone_id is None:
        return compute()
    dtype = getattr(model, "dtype", None) or next(model.parameters()).dtype  # fp16 and fp32 give other embeddings
    key = {"kind": "class_text", "backbone": backbone_id, "classnames": list(classnames),
           "templates": list(templates), "dtype": str(dtype)}
    return cache.get_or_compute(key, compute)
