"""Zero-shot CLIP classification: normalised image features against normalised class text embeddings."""
import torch.nn.functional as F


def encode_images(model, images, normalize=True):
    """`model.encode_image` in the model's weight dtype; returns float32 (normalised by default)."""
    feats = model.encode_image(images.to(dtype=model.dtype)).float()
    return F.normalize(feats, dim=-1) if normalize else feats


def zero_shot_logits(image_features, text_features, logit_scale, logit_bias=None):
    """CLIP's logits s * f . t_c (both normalised), s = exp(logit_scale) (Radford et al. 2021, Fig. 3); a sigmoid
    model's (SigLIP, Zhai et al. 2023, Eq. 1) add its learnt bias b: s * f . t_c + b."""
    logits = logit_scale * image_features @ text_features.t()
    return logits if logit_bias is None else logits + logit_bias
