"""CLIP backbone loading: a name or a local file -> a `clip.model.CLIP` on a device, in a precision.

Resolution order (DESIGN.md, "CLIP weights"): an explicit local file -> the cache directory -> a download
verified against the sha256 that OpenAI publishes in each checkpoint's URL. Nothing is downloaded when the file
is already cached, and an offline machine without the file gets an error naming the expected file.
"""
import json
import os
import zipfile
from pathlib import Path

import torch

from . import openclip_loader
from .download import ChecksumError, download_verified, file_digest
from .openclip_loader import is_openclip_name

# Facts from the openai-clip package (clip/clip.py): the sha256 is the second-to-last URL component.
_BASE = "https://openaipublic.azureedge.net/clip/models"
CLIP_MODELS = {
    "RN50": "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
    "RN101": "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599/RN101.pt",
    "RN50x4": "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd/RN50x4.pt",
    "RN50x16": "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa/RN50x16.pt",
    "RN50x64": "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c/RN50x64.pt",
    "ViT-B/32": "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B/16": "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L/14": "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    "ViT-L/14@336px": "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
}
PRECISIONS = ("fp16", "fp32", "amp")


class CheckpointError(RuntimeError):
    """A CLIP checkpoint is missing, corrupt, or fails its checksum."""


def model_url(name):
    return f"{_BASE}/{CLIP_MODELS[name]}"


def model_sha256(name):
    return CLIP_MODELS[name].split("/")[0]


def default_cache_dir():
    """`$CLIP_CACHE_DIR`, else `~/.cache/clip` (where openai-clip itself caches)."""
    return Path(os.environ.get("CLIP_CACHE_DIR") or Path.home() / ".cache" / "clip")


def checkpoint_fingerprint(path):
    """sha256 of a checkpoint file, memoised in a `<file>.sha256.json` stamp keyed by size and mtime.

    Used to verify cached files cheaply and as the backbone part of feature-cache keys. For an open_clip name
    (`open_clip:<arch>:<file>`, as `resolve_checkpoint` returns it): `open_clip:<arch>:<sha256 of the file>`.
    """
    if is_openclip_name(path):
        return openclip_loader.fingerprint(path, checkpoint_fingerprint)
    path = Path(path)
    st = path.stat()
    stamp = path.with_name(path.name + ".sha256.json")
    key = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        data = json.loads(stamp.read_text())
        if data.get("size") == key["size"] and data.get("mtime_ns") == key["mtime_ns"]:
            return data["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = file_digest(path, "sha256")
    try:
        stamp.write_text(json.dumps({**key, "sha256": digest}))
    except OSError:  # read-only location: fine, just not memoised
        pass
    return digest


def _download(url, target, expected_sha256):
    """Download `url` to `target`, kept only if its sha256 matches (clip_adapt/download.py)."""
    try:
        return download_verified(url, target, expected_sha256, "sha256", timeout=None)
    except ChecksumError as e:
        raise CheckpointError(str(e)) from e


def resolve_checkpoint(name_or_path, cache_dir=None, download=True):
    """Return the local file for a CLIP name or a checkpoint path (see module docstring).

    An open_clip name (`open_clip:<arch>:<tag or file>`, clip_adapt/openclip_loader.py) resolves to
    `open_clip:<arch>:<absolute weights file>`, which `checkpoint_fingerprint` and `load_clip` accept.
    """
    name_or_path = str(name_or_path)
    if is_openclip_name(name_or_path):
        path = openclip_loader.resolve_weights(name_or_path, cache_dir=cache_dir, download=download)
        return openclip_loader.resolved_name(name_or_path, path)
    if name_or_path in CLIP_MODELS:
        cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        target = cache_dir / CLIP_MODELS[name_or_path].split("/")[1]
        expected = model_sha256(name_or_path)
        if target.is_file():
            got = checkpoint_fingerprint(target)
            if got != expected:
                raise CheckpointError(
                    f"{target} does not match the published sha256 of {name_or_path} "
                    f"(expected {expected}, got {got}); delete it to download it again"
                )
            return target
        if not download:
            raise CheckpointError(
                f"CLIP {name_or_path}: expected the file {target} (cache dir {cache_dir}); it is missing and "
                f"downloading is off (MODEL.BACKBONE.DOWNLOAD False). Copy {model_url(name_or_path)} there, or "
                f"set MODEL.BACKBONE.NAME to a local checkpoint path."
            )
        try:
            return _download(model_url(name_or_path), target, expected)
        except OSError as e:  # URLError, timeouts, DNS failures (offline)
            raise CheckpointError(
                f"CLIP {name_or_path}: expected the file {target} (cache dir {cache_dir}); it is missing and "
                f"the download from {model_url(name_or_path)} failed ({e}). On an offline machine copy the "
                f"file there (or set MODEL.BACKBONE.CACHE_DIR / $CLIP_CACHE_DIR), or set MODEL.BACKBONE.NAME "
                f"to a local checkpoint path."
            ) from e
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if path.suffix in (".pt", ".pth", ".bin", ".tar") or path.parent.is_dir() and path.parent != Path("."):
        raise CheckpointError(f"CLIP checkpoint file not found: {path} (MODEL.BACKBONE.NAME)")
    raise CheckpointError(
        f"unknown CLIP backbone {name_or_path!r} (MODEL.BACKBONE.NAME): neither a file nor one of "
        f"{', '.join(CLIP_MODELS)}"
    )


def _is_torchscript(path):
    """TorchScript archives are zip files with a `code/` folder; `torch.save` zips have none."""
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in n or n.startswith("code/") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def read_state_dict(path):
    """State dict of a checkpoint: OpenAI's TorchScript archive, or a `torch.save`d (state) dict.

    A plain state dict is read with torch's default `weights_only=True`.
    """
    path = Path(path)
    if _is_torchscript(path):
        try:
            jit = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:
            raise CheckpointError(f"cannot read TorchScript CLIP checkpoint {path}: {e}") from e
        return {k: v for k, v in jit.state_dict().items()}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"cannot read CLIP checkpoint {path} (MODEL.BACKBONE.NAME): expected OpenAI's "
                              f"TorchScript .pt or a state dict saved with torch.save; torch.load said: {first}") from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or "visual.conv1.weight" not in {k.removeprefix("module.") for k in obj}:
        raise CheckpointError(f"{path} is not a CLIP checkpoint (no 'visual.conv1.weight' in its state dict)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def resolve_precision(precision, device):
    """fp16 | fp32 | amp; anything but fp32 becomes fp32 on CPU (half matmuls are slow or missing there)."""
    if precision not in PRECISIONS:
        raise ValueError(f"TRAINER.PREC must be one of {PRECISIONS}, got {precision!r}")
    return precision if torch.device(device).type == "cuda" else "fp32"


def load_clip(name_or_path, device="cpu", precision="fp32", cache_dir=None, download=True):
    """Build a `clip.model.CLIP` from a name or file, in eval mode, on `device`.

    fp16 keeps CLIP's half weights (as OpenAI ships them); fp32 and amp hold fp32 weights (amp autocasts).
    An open_clip name gives an `OpenCLIPModel` (clip_adapt/openclip_loader.py) with the same interface.
    """
    from clip.model import build_model

    path = resolve_checkpoint(name_or_path, cache_dir=cache_dir, download=download)
    if is_openclip_name(path):
        return openclip_loader.load_openclip(path, device=device, precision=resolve_precision(precision, device))
    state_dict = read_state_dict(path)
    try:
        model = build_model(state_dict)  # converts weights to fp16
    except Exception as e:
        raise CheckpointError(f"{path}: state dict does not build a CLIP model: {e}") from e
    precision = resolve_precision(precision, device)
    if precision in ("fp32", "amp"):
        model = model.float()
        # reload the original tensors so an fp32 checkpoint is not rounded through fp16
        model.load_state_dict({k: v for k, v in state_dict.items() if k in model.state_dict()})
    return model.to(device).eval()


def build_tiny_clip(seed=0, arch="vit", embed_dim=32, image_resolution=32, width=64, layers=2, patch_size=8,
                    text_width=64, text_layers=2):
    """A tiny randomly initialised `clip.model.CLIP` (the real class) for tests: ~3.5M parameters, 32 px.

    Widths are multiples of 64 because `clip.model.build_model` infers heads as width // 64 when reloading.
    The vocabulary stays at 49408 so that `clip.tokenize` ids are valid.
    """
    from clip.model import CLIP

    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        vision_layers = (1, 1, 1, 1) if arch == "rn" else layers
        width = 16 if arch == "rn" and width == 64 else width  # a ResNet's channels grow to 32 x width
        model = CLIP(embed_dim=embed_dim, image_resolution=image_resolution, vision_layers=vision_layers,
                     vision_width=width, vision_patch_size=patch_size, context_length=77, vocab_size=49408,
                     transformer_width=text_width, transformer_heads=max(1, text_width // 64),
                     transformer_layers=text_layers)
    finally:
        torch.random.set_rng_state(gen_state)
    return model.float().eval()


def save_tiny_clip(path, **kwargs):
    """Save a tiny CLIP's state dict (loadable by `load_clip(path)`); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(build_tiny_clip(**kwargs).state_dict(), path)
    return path
