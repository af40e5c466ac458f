"""open_clip backbones: `open_clip:<arch>:<pretrained tag | weights file>` -> a model used like `clip.model.CLIP`.

MODEL.BACKBONE.NAME forms (docs/OPENCLIP.md):
- `open_clip:ViT-B-16:laion2b_s34b_b88k` -- an architecture and a pretrained tag open_clip knows; the weights are
  read from the Hugging Face cache (or, for URL-hosted tags, the cache directory), downloaded only when
  MODEL.BACKBONE.DOWNLOAD is on and $HF_HUB_OFFLINE is not set.
- `open_clip:ViT-B-16:/path/to/weights.(bin|safetensors|pt|pth)` -- an architecture and a local state dict.

`OpenCLIPModel` gives an open_clip model the attributes the rest of the project reads from an OpenAI CLIP:
encode_image, encode_text, logit_scale, logit_bias (SigLIP; None otherwise), visual, dtype, and a `tokenizer`
chosen by the architecture (clip_adapt/text.py tokenises through it). open_clip is imported only here.
"""
import json
import os
from pathlib import Path

import torch.nn as nn

PREFIX = "open_clip:"
WEIGHT_SUFFIXES = (".bin", ".safetensors", ".pt", ".pth")
# open_clip's default preprocessing (open_clip/transform.py, PreprocessCfg): OpenAI's mean/std, bicubic
_DEFAULT_PREPROCESS = {"mean": (0.48145466, 0.4578275, 0.40821073), "std": (0.26862954, 0.26130258, 0.27577711),
                       "interpolation": "bicubic", "resize_mode": "shortest"}


def _error(message):
    from .clip_loader import CheckpointError
    return CheckpointError(message)


def is_openclip_name(name):
    return str(name).startswith(PREFIX)


def _open_clip():
    try:
        import open_clip
    except ImportError as e:
        raise _error("MODEL.BACKBONE.NAME names an open_clip model, but open_clip is not installed "
                     "(pip install 'clip-adapt[openclip]' or pip install open-clip-torch)") from e
    return open_clip


def parse_name(name):
    """(arch, weights) of `open_clip:<arch>:<weights>`; weights is a tag or a file path (which may hold ':')."""
    parts = str(name)[len(PREFIX):].split(":", 1)
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise _error(f"MODEL.BACKBONE.NAME {name!r}: expected open_clip:<architecture>:<pretrained tag or weights "
                     f"file>, e.g. open_clip:ViT-B-16:laion2b_s34b_b88k")
    return parts[0], parts[1]


def _is_path(weights):
    return os.sep in weights or weights.startswith((".", "~")) or weights.endswith(WEIGHT_SUFFIXES)


def model_config(arch):
    """open_clip's config of `arch` (its built-in configs plus any added with open_clip.add_model_config)."""
    open_clip = _open_clip()
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        known = open_clip.list_models()
        near = [m for m in known if m.lower().startswith(arch.split("-")[0].lower())][:12]
        raise _error(f"open_clip has no architecture {arch!r} (MODEL.BACKBONE.NAME); {len(known)} are known"
                     + (f", e.g. {', '.join(near)}" if near else ""))
    return cfg


def _pretrained_cfg(arch, tag):
    open_clip = _open_clip()
    pcfg = open_clip.get_pretrained_cfg(arch, tag)
    if not pcfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise _error(f"open_clip knows no pretrained tag {tag!r} for {arch} (MODEL.BACKBONE.NAME); known tags: "
                     f"{', '.join(tags) if tags else 'none (give a weights file path instead)'}")
    return pcfg


def _hf_candidates(hf_hub):
    """(repo id, filenames to look for) of a pretrained cfg's `hf_hub` entry ('org/repo/' or 'org/repo/file')."""
    repo, filename = os.path.split(hf_hub)
    filename = filename or "open_clip_pytorch_model.bin"
    names = [filename]
    if filename == "open_clip_pytorch_model.bin":
        names.insert(0, "open_clip_model.safetensors")  # open_clip prefers the safetensors copy
    elif filename.endswith((".bin", ".pth")):
        names.insert(0, filename.rsplit(".", 1)[0] + ".safetensors")
    return repo, names


def _hf_cache_dir(cache_dir):
    if cache_dir:
        return str(cache_dir)
    try:
        from huggingface_hub import constants
        return constants.HF_HUB_CACHE
    except ImportError:
        return os.path.join(os.path.expanduser("~"), ".cache", "huggingface", "hub")


def _offline():
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_weights(name, cache_dir=None, download=True):
    """The local weights file of an open_clip name (never downloads when DOWNLOAD is off or $HF_HUB_OFFLINE)."""
    arch, weights = parse_name(name)
    model_config(arch)
    if _is_path(weights):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise _error(f"open_clip weights file not found: {path} (MODEL.BACKBONE.NAME {name!r})")
        return path
    pcfg = _pretrained_cfg(arch, weights)
    if bool(pcfg.get("quick_gelu", False)) != bool(model_config(arch).get("quick_gelu", False)):
        want = f"{arch}-quickgelu" if pcfg.get("quick_gelu") else arch.removesuffix("-quickgelu")
        raise _error(f"open_clip {arch} weights {weights!r} were trained with"
                     f"{'' if pcfg.get('quick_gelu') else 'out'} QuickGELU, which {arch} does"
                     f"{' not' if pcfg.get('quick_gelu') else ''} use: name open_clip:{want}:{weights} "
                     f"(MODEL.BACKBONE.NAME)")
    looked = []
    if pcfg.get("hf_hub"):
        repo, files = _hf_candidates(pcfg["hf_hub"])
        hub_dir = _hf_cache_dir(cache_dir)
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        for f in files:
            if try_to_load_from_cache is not None:
                hit = try_to_load_from_cache(repo, f, cache_dir=hub_dir)
                if isinstance(hit, str) and os.path.isfile(hit):
                    return Path(hit)
        looked.append(f"{' or '.join(files)} of the Hugging Face repo {repo} in the cache {hub_dir}")
    if pcfg.get("url"):
        from .clip_loader import default_cache_dir
        url_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        target = url_dir / os.path.basename(pcfg["url"])
        if target.is_file():
            return target
        looked.append(str(target))
    where = "; ".join(looked)
    if not download or _offline():
        why = "$HF_HUB_OFFLINE is set" if _offline() else "downloading is off (MODEL.BACKBONE.DOWNLOAD False)"
        raise _error(f"open_clip {arch} weights {weights!r}: expected {where}; not found and {why}. Copy the file "
                     f"there, or set MODEL.BACKBONE.NAME to open_clip:{arch}:/path/to/weights")
    try:
        path = _open_clip().download_pretrained(pcfg, cache_dir=cache_dir or None)
    except Exception as e:
        raise _error(f"open_clip {arch} weights {weights!r}: expected {where}; not found and the download "
                     f"failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). On an offline "
                     f"machine copy the file there, or set MODEL.BACKBONE.NAME to open_clip:{arch}:/path/to/weights"
                     ) from e
    if not path or not os.path.isfile(path):
        raise _error(f"open_clip {arch} weights {weights!r}: no file after the download (expected {where})")
    return Path(path)


def resolved_name(name, path):
    """`open_clip:<arch>:<absolute weights file>`: what `resolve_checkpoint` hands to `load_clip`. Symbolic links
    are kept (the Hugging Face cache links each snapshot file to a blob without its suffix and folder)."""
    arch, _ = parse_name(name)
    return f"{PREFIX}{arch}:{os.path.abspath(os.path.expanduser(str(path)))}"


def fingerprint(name, sha256_of):
    """`open_clip:<arch>:<sha256 of the weights file>`: the backbone identity of feature-cache keys and results."""
    arch, weights = parse_name(name)
    return f"{PREFIX}{arch}:{sha256_of(Path(weights))}"


def preprocess_config(name):
    """{size, mean, std, interpolation, resize_mode} of a name, known without loading weights: the size from the
    architecture's config, the rest from the pretrained tag's config, or from an `open_clip_config.json` beside a
    weights file (Hugging Face layout), else open_clip's defaults."""
    arch, weights = parse_name(name)
    cfg = model_config(arch)
    out = dict(_DEFAULT_PREPROCESS)
    size = cfg.get("vision_cfg", {}).get("image_size", 224)
    if _is_path(weights):
        side = Path(weights).expanduser().parent / "open_clip_config.json"
        try:
            extra = json.loads(side.read_text()).get("preprocess_cfg", {})
        except (OSError, ValueError):
            extra = {}
    else:
        extra = _pretrained_cfg(arch, weights)
    out.update({k: extra[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in extra})
    out["size"] = tuple(size) if isinstance(size, (list, tuple)) else (int(size), int(size))
    return out


def _precision_arg(precision):
    """open_clip's create_model precision: fp16 builds fp32-computing norm layers and half weights."""
    return "fp16" if precision == "fp16" else "fp32"


def build_model(arch, precision="fp32", device="cpu"):
    """An open_clip model of `arch`, randomly initialised (no weights are looked up or downloaded).

    fp16 is open_clip's own half model (its towers' norm layers compute in fp32); timm image towers and Hugging Face
    text towers have plain norm layers that fail on half inputs with fp32 weights, so they are built in fp32
    (use TRAINER.PREC amp for mixed precision, as the oc_* configs do)."""
    open_clip = _open_clip()
    cfg = model_config(arch)
    if precision == "fp16" and ("timm_model_name" in cfg.get("vision_cfg", {})
                                or "hf_model_name" in cfg.get("text_cfg", {})):
        print(f"Note: open_clip {arch} has a timm or Hugging Face tower: built in fp32 (TRAINER.PREC amp for mixed "
              f"precision)")
        precision = "fp32"
    return open_clip.create_model(arch, pretrained=None, precision=_precision_arg(precision), device=device,
                                  pretrained_image=False, pretrained_text=False)


def get_tokenizer(arch, folder=""):
    """open_clip's tokenizer of `arch`; Hugging Face tokenizers (SigLIP, ...) are read offline from `folder` or
    the Hugging Face cache. A missing one is a CheckpointError naming what was looked for."""
    open_clip = _open_clip()
    text_cfg = model_config(arch).get("text_cfg", {})
    hf_name = text_cfg.get("hf_tokenizer_name") or ""
    try:
        if folder:
            return open_clip.tokenizer.HFTokenizer(folder, context_length=text_cfg.get("context_length", 77),
                                                   **text_cfg.get("tokenizer_kwargs", {}))
        return open_clip.get_tokenizer(arch)
    except Exception as e:
        what = f"the folder {folder}" if folder else (f"the Hugging Face tokenizer {hf_name} (Hugging Face cache "
                                                       f"{_hf_cache_dir(None)})" if hf_name else "its tokenizer")
        raise _error(f"open_clip {arch}: cannot load {what}: {type(e).__name__}: "
                     f"{(str(e).splitlines() or [''])[0]}. Offline, put the tokenizer files (tokenizer.json, "
                     f"tokenizer_config.json, ...) beside the weights file, or in the Hugging Face cache; "
                     f"Hugging Face tokenizers need `pip install transformers`") from e


def read_weights(path):
    """The state dict of a weights file (safetensors or torch.save'd, `weights_only`), errors naming the file."""
    open_clip = _open_clip()
    try:
        return open_clip.factory.load_state_dict(str(path))
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise _error(f"cannot read open_clip weights {path} (MODEL.BACKBONE.NAME): {first}") from e


def _tokenizer_folder(path, arch):
    """The weights' folder when it holds a Hugging Face tokenizer (a downloaded hub repo does) and `arch` uses one."""
    if not model_config(arch).get("text_cfg", {}).get("hf_tokenizer_name"):
        return ""
    folder = Path(path).parent
    return str(folder) if any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")) else ""


def load_openclip(name, device="cpu", precision="fp32", tokenizer=None):
    """`open_clip:<arch>:<weights file>` -> an OpenCLIPModel in eval mode (the file is read, never downloaded).

    tokenizer: a callable (texts -> token ids) to use instead of the architecture's own (tests use stand-ins);
    by default the architecture's, a Hugging Face one read from the weights' folder if it is there."""
    open_clip = _open_clip()
    arch, weights = parse_name(name)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise _error(f"open_clip weights file not found: {path} (MODEL.BACKBONE.NAME {name!r})")
    model = build_model(arch, precision)
    try:
        open_clip.load_checkpoint(model, str(path))
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise _error(f"{path} does not hold weights of open_clip {arch} (MODEL.BACKBONE.NAME): {first[:500]}") from e
    pp = preprocess_config(name if not _is_path(weights) else f"{PREFIX}{arch}:{path}")
    model.visual.preprocess_cfg = pp
    tok = tokenizer if tokenizer is not None else get_tokenizer(arch, _tokenizer_folder(path, arch))
    return OpenCLIPModel(model, tok, arch).to(device).eval()


class OpenCLIPModel(nn.Module):
    """An open_clip CLIP / CustomTextCLIP seen through OpenAI CLIP's interface (clip/model.py, class CLIP).

    The open_clip model is the only child (`model`), so a state dict holds its tensors once, under `model.`;
    `visual`, `logit_scale`, `logit_bias` are views of its attributes. SigLIP models (sigmoid loss) carry a
    learnt `logit_bias`: their zero-shot logits are exp(logit_scale) * cos + logit_bias (Zhai et al. 2023, Eq. 1).
    """

    def __init__(self, model, tokenizer, arch):
        super().__init__()
        self.model = model
        self.arch = arch
        self.tokenizer = tokenizer
        self.embed_dim = int(model_config(arch)["embed_dim"])

    @property
    def visual(self):
        return self.model.visual

    @property
    def logit_scale(self):
        return self.model.logit_scale

    @property
    def logit_bias(self):
        return getattr(self.model, "logit_bias", None)


    @property
    def preprocess_cfg(self):
        return dict(getattr(self.model.visual, "preprocess_cfg", {}))

    @property
    def dtype(self):
        from .norms import module_dtype
        return module_dtype(self.model.visual)

    def text_towers(self):
        """(prefix, module) of the text encoder's parts: `text` (CustomTextCLIP), or transformer and ln_final."""
        if hasattr(self.model, "text"):
            return [("model.text", self.model.text)]
        return [("model.transformer", self.model.transformer), ("model.ln_final", self.model.ln_final)]

    def tokenize(self, texts):
        """LongTensor of token ids, truncated to the text tower's context length."""
        return self.tokenizer(list(texts)).long()

    def encode_image(self, images):
        return self.model.encode_image(images)

    def encode_text(self, tokens):
        return self.model.encode_text(tokens)

    def forward(self, images, tokens):
        return self.encode_image(images), self.encode_text(tokens)


# ---- the data pipeline follows the model's preprocessing ------------------------------------------------------
INPUT_KEYS = {"SIZE": "size", "PIXEL_MEAN": "mean", "PIXEL_STD": "std", "INTERPOLATION": "interpolation"}
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def _same(a, b):
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    try:
        return len(a) == len(b) and all(abs(float(x) - float(y)) < 1e-9 for x, y in zip(a, b))
    except TypeError:
        return a == b


def input_overrides(inp, preprocess, defaults):
    """{INPUT key: value} taking the model's preprocessing (`preprocess_config`) for every INPUT key whose value
    is still the host framework's default (`defaults`, Dassl's INPUT node): a key a yaml file or the command line
    set to anything else is kept. Keys: SIZE (the model's image size), PIXEL_MEAN, PIXEL_STD, INTERPOLATION (when
    it is one the loaders know)."""
    out = {}
    for key, pkey in INPUT_KEYS.items():
        value = preprocess.get(pkey)
        if value is None or not _same(inp[key], defaults[key]):
            continue
        if key == "SIZE":
            value = tuple(int(v) for v in value)
        elif key == "INTERPOLATION":
            if value not in INTERPOLATIONS:
                continue
        else:
            value = [float(v) for v in value]
        if not _same(value, inp[key]):
            out[key] = value
    return out
