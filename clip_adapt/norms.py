"""The normalisation layers FAIR and ReCLIP train, found in OpenAI CLIP and in open_clip towers.

OpenAI CLIP: LayerNorm (ViT, text transformer) and BatchNorm2d (ModifiedResNet). open_clip adds its LayerNorm
subclasses (LayerNorm, LayerNormFp32), timm towers (ViT / EVA / SigLIP: nn.LayerNorm and timm's LayerNorm;
ConvNeXt: LayerNorm2d; RMS-norm variants) and Hugging Face text towers (nn.LayerNorm). A layer counts when its
class is one of torch's norm classes or its class name ends in "Norm", "Norm2d" or "NormFp32" (timm's RmsNorm,
...), and it holds affine parameters of its own.
"""
import re

from torch import nn

_TORCH_NORMS = (nn.LayerNorm, nn.modules.batchnorm._BatchNorm, nn.GroupNorm)
_NAME = re.compile(r"(Norm|Norm2d|NormFp32|RMSNorm)$", re.IGNORECASE)


def is_norm_layer(module):
    return isinstance(module, _TORCH_NORMS) or bool(_NAME.search(type(module).__name__))


def norm_parameters(module, prefix=""):
    """(name, parameter) of the affine parameters of every normalisation layer under `module`, in module order."""
    out = []
    for mname, m in module.named_modules():
        if is_norm_layer(m):
            base = ".".join(p for p in (prefix, mname) if p)
            out += [(f"{base}.{n}", p) for n, p in m.named_parameters(recurse=False)]
    return out


def module_dtype(tower):
    """The weight dtype a tower computes in: its `conv1` (OpenAI CLIP, open_clip ViT/ResNet), else its first
    convolution or linear layer (timm towers)."""
    conv1 = getattr(tower, "conv1", None)
    if isinstance(conv1, nn.Conv2d):
        return conv1.weight.dtype
    for m in tower.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            return m.weight.dtype
    return next(tower.parameters()).dtype


def tower_name(tower):
    """How an error names a tower: its class (and the timm model's, for a timm tower)."""
    trunk = getattr(tower, "trunk", None)
    return type(tower).__name__ + (f" ({type(trunk).__name__})" if trunk is not None else "")
