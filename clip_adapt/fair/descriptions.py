"""Class descriptions provider (methods/FAIR.md, part 1).

Per class, M sentences describing its look, in CuPL's format `{"<class name>": ["sentence", ...]}`.
Resolution order (`get_descriptions`):
1. TRAINER.FAIR.DESCRIPTIONS names a JSON file -> that file; names a folder -> `<folder>/<dataset file>.json`
   (the file names of `DEFAULT_SOURCES`, e.g. `cub.json`, `cars.json`).
2. TRAINER.FAIR.DESCRIPTIONS_URL (+ DESCRIPTIONS_SHA256) -> downloaded once, sha256-checked, cached.
3. The dataset's public CuPL-format file (`DEFAULT_SOURCES`), cached / downloaded the same way.
4. No file found: template sentences from the class name when DESCRIPTIONS_FALLBACK is "template", else an error.
Class names are matched after normalising case, spaces, hyphens and underscores ("Black_footed_Albatross" ==
"Black-footed Albatross"); a class left without descriptions is an error that lists every such class.
"""
import json
import re
import warnings
from pathlib import Path

from ..download import ChecksumError, download_verified, file_digest
from ..prompts import fill, short_name

# Public CuPL-format description files (github.com/sathiiii/microCLIP, MIT; sentences from CuPL, GPT-3),
# pinned to one commit so the sha256 below stays valid. dataset short name -> (file name, sha256).
DEFAULT_BASE_URL = ("https://raw.githubusercontent.com/sathiiii/microCLIP/"
                    "977ad314ca8f1b103347a5584ddcd915d39cbfbe/all_prompts/train_prompts/")
DEFAULT_SOURCES = {
    "cub": ("cub.json", "c18b307f05d30513b94cf2a15905808c1236432212b9fee572cf8c992eeb16b2"),
    "birdsnap": ("birdsnap.json", "830d654a8ad729b7aa211dcf7d6a4dc33b6e0ff68bcb848115faf7c3d12d93b5"),
    "caltech101": ("caltech101.json", "a121c0e2c80127c119a02e645099e98e7e31af0b4b3c0f361085ef764fd796d9"),
    "stanford_cars": ("cars.json", "8a4a07d81fb1f8cb2f7fe7161dfb05fe6840c4d7f3c6c0e6fca412d4c87dba6c"),
    "cifar10": ("cifar10.json", "c624136b3e25b016df3f8634e15472d415f85fc425e34471433c5c80a6e1a233"),
    "cifar100": ("cifar100.json", "cbecac9d1d8a39341a27160d5760f360380e613bdf1317ca4662b495a021c2f2"),
    "dtd": ("dtd.json", "dabdcafded7babd67046d0f90abeb510b648bdaaf397b884f265f3460a7942a9"),
    "eurosat": ("eurosat.json", "fe1076499e4fb8c019e83e677af2e9ecc302cb2240edcca0a1ed7fbb35af2110"),
    "fgvc_aircraft": ("fgvc.json", "d86833c2483c1d12907abeb6198412f1d0a020bd12999a3f170967a7f549e3b8"),
    "oxford_flowers": ("flowers.json", "439e88a1ac5f7058da59d0bcdc4fa848283e4e8f29fc8711ebac4274137a2bbf"),
    "food101": ("food101.json", "b4052c0aaa3b4b884b94864c624d2704d9baaa422034dbed980baf75ec25cf7c"),
    "oxford_pets": ("pets.json", "b53cbe7f37e807c13a3f02e511c6058e6a50bafea3f8c4363cb85bf32920c6c6"),
    "resisc45": ("resisc45.json", "c63269cd327f6c2c9015bdee1bcec1ad2a1a1da22bf596754b246a2f90c8351b"),
    "sun397": ("sun397.json", "e6b1a95febe8e9420799fcf3be6647a73dc1aa9a6a9ac100d264c3ff78faf011"),
    "ucf101": ("ucf101.json", "3acc805cbcd115331cc975f6146b24de2fc1732c45ee54a57c25259facbc6b9a"),
}
FALLBACKS = ("template", "error")


class DescriptionsError(ValueError):
    """Descriptions are missing, malformed, or do not cover every class."""


def normalize_classname(name):
    """Case-, space-, hyphen- and underscore-insensitive key of a class name."""
    return re.sub(r"[\s_\-]+", " ", str(name).lower()).strip()


def load_description_file(path):
    """Read a CuPL-format JSON file; errors name the file and what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DescriptionsError(f"cannot read class descriptions from {path}: {e}") from e
    if not isinstance(data, dict):
        raise DescriptionsError(f"{path}: expected a JSON object {{\"class name\": [\"sentence\", ...]}}, "
                                f"got {type(data).__name__}")
    for key, value in data.items():
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise DescriptionsError(f"{path}: descriptions of {key!r} must be a list of strings")
        data[key] = value
    return data


def match_descriptions(classnames, table, source="descriptions", max_per_class=None):
    """Per class (in `classnames` order) its list of sentences from `table`, matched by normalised name.

    Sentences are stripped and de-duplicated (order kept), then cut to `max_per_class`. Keys of `table` that
    normalise to the same name are merged. Raises DescriptionsError listing EVERY class without descriptions.
    """
    index = {}
    for key, sentences in table.items():
        index.setdefault(normalize_classname(key), []).extend(sentences)
    out, missing = [], []
    for name in classnames:
        sentences = list(dict.fromkeys(s.strip() for s in index.get(normalize_classname(name), []) if s.strip()))
        if not sentences:
            missing.append(name)
        out.append(sentences[:max_per_class] if max_per_class else sentences)
    if missing:
        raise DescriptionsError(
            f"{len(missing)} of {len(classnames)} classes have no descriptions in {source}: "
            f"{', '.join(repr(m) for m in missing)} (names are matched ignoring case, spaces, hyphens and "
            f"underscores; add them to the file, or set TRAINER.FAIR.DESCRIPTIONS to another file)"
        )
    return out


def template_descriptions(classnames, templates):
    """Fallback: one sentence per template, built from the class name."""
    return [fill(templates, name) for name in classnames]


def fetch_description_file(url, sha256, cache_dir, download=True):
    """Local copy of `url` in `cache_dir` (named by its sha256); downloaded once and checked against `sha256`."""
    if not sha256:
        raise DescriptionsError(f"TRAINER.FAIR.DESCRIPTIONS_URL {url}: set TRAINER.FAIR.DESCRIPTIONS_SHA256 too "
                                f"(downloads are checksum-verified)")
    cache_dir = Path(cache_dir)
    target = cache_dir / f"{sha256}.json"
    if target.is_file() and file_digest(target) == sha256:
        return target
    if not download:
        raise DescriptionsError(f"class descriptions {url} are not cached ({target}) and downloading is off "
                                f"(TRAINER.FAIR.DESCRIPTIONS_DOWNLOAD False)")
    try:
        download_verified(url, target, sha256, "sha256", progress=False)
    except ChecksumError as e:
        raise DescriptionsError(str(e)) from e
    except OSError as e:
        raise DescriptionsError(f"downloading class descriptions from {url} failed ({e}); on an offline machine "
                                f"set TRAINER.FAIR.DESCRIPTIONS to a local copy") from e
    return target


def get_descriptions(classnames, dataset, path="", url="", sha256="", fallback="template", cache_dir=None,
                     download=True, templates=None, max_per_class=None):
    """(sentences per class, source string) following the resolution order of the module docstring."""
    if fallback not in FALLBACKS:
        raise DescriptionsError(f"TRAINER.FAIR.DESCRIPTIONS_FALLBACK must be one of {FALLBACKS}, got {fallback!r}")
    dataset = short_name(dataset)
    default = DEFAULT_SOURCES.get(dataset)
    if path:
        p = Path(path).expanduser()
        if p.is_dir():
            if default is None:
                raise DescriptionsError(f"TRAINER.FAIR.DESCRIPTIONS is a folder ({p}) but dataset {dataset!r} has no "
                                        f"default file name; name the JSON file itself")
            p = p / default[0]
        if not p.is_file():
            raise DescriptionsError(f"TRAINER.FAIR.DESCRIPTIONS: file not found: {p}")
        table = load_description_file(p)
        return match_descriptions(classnames, table, str(p), max_per_class), str(p)
    if not url and default is not None:
        url, sha256 = DEFAULT_BASE_URL + default[0], default[1]
    reason = f"no description file is known for dataset {dataset!r}"
    if url:
        cache_dir = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "clip_adapt" / "descriptions"
        try:
            local = fetch_description_file(url, sha256, cache_dir, download=download)
        except DescriptionsError as e:
            if fallback == "error":
                raise
            reason = str(e)
        else:
            table = load_description_file(local)
            return match_descriptions(classnames, table, f"{url} ({local})", max_per_class), url
    if fallback == "error":
        raise DescriptionsError(f"{reason}; set TRAINER.FAIR.DESCRIPTIONS to a JSON file "
                                f"{{\"class name\": [\"sentence\", ...]}} (DESCRIPTIONS_FALLBACK is 'error')")
    if not templates:
        raise DescriptionsError("template fallback needs templates")
    warnings.warn(f"FAIR: {reason}; using template sentences built from the class names instead "
                  f"(TRAINER.FAIR.DESCRIPTIONS_FALLBACK 'template')")
    print(f"WARNING: FAIR class descriptions: {reason}; falling back to {len(templates)} template sentences "
          f"per class")
    return [s[:max_per_class] if max_per_class else s for s in template_descriptions(classnames, templates)], \
        "template"
