"""Class descriptions provider (methods/FAIR.md, part 1).

Per class, M sentences describing its look, in CuPL's format `{"<class name>": ["sentence", ...]}`.
Resolution order (`get_descriptions`):
1. TRAINER.FAIR.DESCRIPTIONS names a JSON file -> that file; names a folder -> `<folder>/<dataset file>.json`
   (the file names of `DEFAULT_SOURCES`, e.g. `cub.json`, `cars.json`, `imagenet.json` for Stanford Dogs).
2. TRAINER.FAIR.DESCRIPTIONS_URL (+ DESCRIPTIONS_SHA256) -> downloaded once, sha256-checked, cached.
3. The dataset's public CuPL-format file (`DEFAULT_SOURCES`), cached / downloaded the same way.
4. No file found: an error (DESCRIPTIONS_FALLBACK "error", the default) listing the classes without descriptions
   and how to supply a file, or template sentences from the class name when DESCRIPTIONS_FALLBACK is "template".
Class names are matched after normalising case, spaces, hyphens and underscores ("Black_footed_Albatross" ==
"Black-footed Albatross"); a class left without descriptions is an error that lists every such class. Stanford
Dogs' classes are ImageNet classes: they are looked up under their ImageNet names (`STANFORD_DOGS_IMAGENET`, by
WordNet id) in an ImageNet-format file, then under their own names.
The source is reported as {"file", "sha256"[, "url"][, "class_names"]} or "template" (results.json).
"""
import json
import re
import warnings
from pathlib import Path

from ..data.official import dogs_classname
from ..download import ChecksumError, download_verified, file_digest
from ..prompts import fill, short_name

# Public CuPL-format description files (github.com/sathiiii/microCLIP, MIT; sentences from CuPL, GPT-3),
# pinned to one commit so the sha256 below stays valid. dataset short name -> (file name, sha256, url).
DEFAULT_BASE_URL = ("https://raw.githubusercontent.com/sathiiii/microCLIP/"
                    "977ad314ca8f1b103347a5584ddcd915d39cbfbe/all_prompts/train_prompts/")
# CuPL's own ImageNet descriptions (github.com/sarahpratt/CuPL, all_prompts/base_prompts/imagenet_prompts_base.json
# at commit 719619c8; sha256 of that file as stored in the repository). Keys: CuPL's ImageNet class names
# (imagenet_classnames/imagenet_classes.py of the same commit). Used for Stanford Dogs (STANFORD_DOGS_IMAGENET).
IMAGENET_URL = ("https://raw.githubusercontent.com/sarahpratt/CuPL/719619c829792ff8f37298266e941b7f077c7f5c/"
                "all_prompts/base_prompts/imagenet_prompts_base.json")
IMAGENET_SHA256 = "f8962ec2a4c4355406eb1b2cf695179f7269c512e130b623444b1a3eb4e3fe2c"
_MICROCLIP = {
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
DEFAULT_SOURCES = {name: (fname, digest, DEFAULT_BASE_URL + fname) for name, (fname, digest) in _MICROCLIP.items()}
DEFAULT_SOURCES["stanford_dogs"] = ("imagenet.json", IMAGENET_SHA256, IMAGENET_URL)
FALLBACKS = ("error", "template")

# Stanford Dogs class folder (Images/<WordNet id>-<breed> of images.tar, vision.stanford.edu/aditya86/ImageNetDogs;
# the dataset's class name is its breed part, clip_adapt.data.official.dogs_classname) -> the ImageNet class name
# that CuPL's ImageNet file uses for that WordNet id. Derived from CuPL (commit 719619c8):
# imagenet_classnames/sense_to_idx.py gives the ImageNet index of each WordNet id (the comment),
# imagenet_classnames/imagenet_classes.py the name at that index.
STANFORD_DOGS_IMAGENET = {
    "n02085620-Chihuahua": "Chihuahua",  # 151
    "n02085782-Japanese_spaniel": "Japanese Chin",  # 152
    "n02085936-Maltese_dog": "Maltese",  # 153
    "n02086079-Pekinese": "Pekingese",  # 154
    "n02086240-Shih-Tzu": "Shih Tzu",  # 155
    "n02086646-Blenheim_spaniel": "King Charles Spaniel",  # 156
    "n02086910-papillon": "Papillon",  # 157
    "n02087046-toy_terrier": "toy terrier",  # 158
    "n02087394-Rhodesian_ridgeback": "Rhodesian Ridgeback",  # 159
    "n02088094-Afghan_hound": "Afghan Hound",  # 160
    "n02088238-basset": "Basset Hound",  # 161
    "n02088364-beagle": "Beagle",  # 162
    "n02088466-bloodhound": "Bloodhound",  # 163
    "n02088632-bluetick": "Bluetick Coonhound",  # 164
    "n02089078-black-and-tan_coonhound": "Black and Tan Coonhound",  # 165
    "n02089867-Walker_hound": "Treeing Walker Coonhound",  # 166
    "n02089973-English_foxhound": "English foxhound",  # 167
    "n02090379-redbone": "Redbone Coonhound",  # 168
    "n02090622-borzoi": "borzoi",  # 169
    "n02090721-Irish_wolfhound": "Irish Wolfhound",  # 170
    "n02091032-Italian_greyhound": "Italian Greyhound",  # 171
    "n02091134-whippet": "Whippet",  # 172
    "n02091244-Ibizan_hound": "Ibizan Hound",  # 173
    "n02091467-Norwegian_elkhound": "Norwegian Elkhound",  # 174
    "n02091635-otterhound": "Otterhound",  # 175
    "n02091831-Saluki": "Saluki",  # 176
    "n02092002-Scottish_deerhound": "Scottish Deerhound",  # 177
    "n02092339-Weimaraner": "Weimaraner",  # 178
    "n02093256-Staffordshire_bullterrier": "Staffordshire Bull Terrier",  # 179
    "n02093428-American_Staffordshire_terrier": "American Staffordshire Terrier",  # 180
    "n02093647-Bedlington_terrier": "Bedlington Terrier",  # 181
    "n02093754-Border_terrier": "Border Terrier",  # 182
    "n02093859-Kerry_blue_terrier": "Kerry Blue Terrier",  # 183
    "n02093991-Irish_terrier": "Irish Terrier",  # 184
    "n02094114-Norfolk_terrier": "Norfolk Terrier",  # 185
    "n02094258-Norwich_terrier": "Norwich Terrier",  # 186
    "n02094433-Yorkshire_terrier": "Yorkshire Terrier",  # 187
    "n02095314-wire-haired_fox_terrier": "Wire Fox Terrier",  # 188
    "n02095570-Lakeland_terrier": "Lakeland Terrier",  # 189
    "n02095889-Sealyham_terrier": "Sealyham Terrier",  # 190
    "n02096051-Airedale": "Airedale Terrier",  # 191
    "n02096177-cairn": "Cairn Terrier",  # 192
    "n02096294-Australian_terrier": "Australian Terrier",  # 193
    "n02096437-Dandie_Dinmont": "Dandie Dinmont Terrier",  # 194
    "n02096585-Boston_bull": "Boston Terrier",  # 195
    "n02097047-miniature_schnauzer": "Miniature Schnauzer",  # 196
    "n02097130-giant_schnauzer": "Giant Schnauzer",  # 197
    "n02097209-standard_schnauzer": "Standard Schnauzer",  # 198
    "n02097298-Scotch_terrier": "Scottish Terrier",  # 199
    "n02097474-Tibetan_terrier": "Tibetan Terrier",  # 200
    "n02097658-silky_terrier": "Australian Silky Terrier",  # 201
    "n02098105-soft-coated_wheaten_terrier": "Soft-coated Wheaten Terrier",  # 202
    "n02098286-West_Highland_white_terrier": "West Highland White Terrier",  # 203
    "n02098413-Lhasa": "Lhasa Apso",  # 204
    "n02099267-flat-coated_retriever": "Flat-Coated Retriever",  # 205
    "n02099429-curly-coated_retriever": "Curly-coated Retriever",  # 206
    "n02099601-golden_retriever": "Golden Retriever",  # 207
    "n02099712-Labrador_retriever": "Labrador Retriever",  # 208
    "n02099849-Chesapeake_Bay_retriever": "Chesapeake Bay Retriever",  # 209
    "n02100236-German_short-haired_pointer": "German Shorthaired Pointer",  # 210
    "n02100583-vizsla": "Vizsla",  # 211
    "n02100735-English_setter": "English Setter",  # 212
    "n02100877-Irish_setter": "Irish Setter",  # 213
    "n02101006-Gordon_setter": "Gordon Setter",  # 214
    "n02101388-Brittany_spaniel": "Brittany dog",  # 215
    "n02101556-clumber": "Clumber Spaniel",  # 216
    "n02102040-English_springer": "English Springer Spaniel",  # 217
    "n02102177-Welsh_springer_spaniel": "Welsh Springer Spaniel",  # 218
    "n02102318-cocker_spaniel": "Cocker Spaniel",  # 219
    "n02102480-Sussex_spaniel": "Sussex Spaniel",  # 220
    "n02102973-Irish_water_spaniel": "Irish Water Spaniel",  # 221
    "n02104029-kuvasz": "Kuvasz",  # 222
    "n02104365-schipperke": "Schipperke",  # 223
    "n02105056-groenendael": "Groenendael dog",  # 224
    "n02105162-malinois": "Malinois",  # 225
    "n02105251-briard": "Briard",  # 226
    "n02105412-kelpie": "Australian Kelpie",  # 227
    "n02105505-komondor": "Komondor",  # 228
    "n02105641-Old_English_sheepdog": "Old English Sheepdog",  # 229
    "n02105855-Shetland_sheepdog": "Shetland Sheepdog",  # 230
    "n02106030-collie": "collie",  # 231
    "n02106166-Border_collie": "Border Collie",  # 232
    "n02106382-Bouvier_des_Flandres": "Bouvier des Flandres dog",  # 233
    "n02106550-Rottweiler": "Rottweiler",  # 234
    "n02106662-German_shepherd": "German Shepherd Dog",  # 235
    "n02107142-Doberman": "Dobermann",  # 236
    "n02107312-miniature_pinscher": "Miniature Pinscher",  # 237
    "n02107574-Greater_Swiss_Mountain_dog": "Greater Swiss Mountain Dog",  # 238
    "n02107683-Bernese_mountain_dog": "Bernese Mountain Dog",  # 239
    "n02107908-Appenzeller": "Appenzeller Sennenhund",  # 240
    "n02108000-EntleBucher": "Entlebucher Sennenhund",  # 241
    "n02108089-boxer": "Boxer",  # 242
    "n02108422-bull_mastiff": "Bullmastiff",  # 243
    "n02108551-Tibetan_mastiff": "Tibetan Mastiff",  # 244
    "n02108915-French_bulldog": "French Bulldog",  # 245
    "n02109047-Great_Dane": "Great Dane",  # 246
    "n02109525-Saint_Bernard": "St. Bernard",  # 247
    "n02109961-Eskimo_dog": "husky",  # 248
    "n02110063-malamute": "Alaskan Malamute",  # 249
    "n02110185-Siberian_husky": "Siberian Husky",  # 250
    "n02110627-affenpinscher": "Affenpinscher",  # 252
    "n02110806-basenji": "Basenji",  # 253
    "n02110958-pug": "pug",  # 254
    "n02111129-Leonberg": "Leonberger",  # 255
    "n02111277-Newfoundland": "Newfoundland dog",  # 256
    "n02111500-Great_Pyrenees": "Great Pyrenees dog",  # 257
    "n02111889-Samoyed": "Samoyed",  # 258
    "n02112018-Pomeranian": "Pomeranian",  # 259
    "n02112137-chow": "Chow Chow",  # 260
    "n02112350-keeshond": "Keeshond",  # 261
    "n02112706-Brabancon_griffon": "brussels griffon",  # 262
    "n02113023-Pembroke": "Pembroke Welsh Corgi",  # 263
    "n02113186-Cardigan": "Cardigan Welsh Corgi",  # 264
    "n02113624-toy_poodle": "Toy Poodle",  # 265
    "n02113712-miniature_poodle": "Miniature Poodle",  # 266
    "n02113799-standard_poodle": "Standard Poodle",  # 267
    "n02113978-Mexican_hairless": "Mexican hairless dog (xoloitzcuintli)",  # 268
    "n02115641-dingo": "dingo",  # 273
    "n02115913-dhole": "dhole",  # 274
    "n02116738-African_hunting_dog": "African wild dog",  # 275
}


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


def description_keys(dataset, classnames):
    """Per class, the names to look it up under in a description file, in order of preference: for Stanford Dogs
    its ImageNet name (STANFORD_DOGS_IMAGENET), then its own; for every other dataset its own name."""
    if short_name(dataset) != "stanford_dogs":
        return [[name] for name in classnames]
    imagenet = {normalize_classname(dogs_classname(folder)): name for folder, name in STANFORD_DOGS_IMAGENET.items()}
    return [[imagenet[normalize_classname(c)], c] if normalize_classname(c) in imagenet else [c]
            for c in classnames]


def match_descriptions(classnames, table, source="descriptions", max_per_class=None, keys=None):
    """Per class (in `classnames` order) its list of sentences from `table`, matched by normalised name.

    keys: per class, the names to try in order (default: the class name; see `description_keys`); the first that
    has sentences is used. Sentences are stripped and de-duplicated (order kept), then cut to `max_per_class`. Keys
    of `table` that normalise to the same name are merged. Raises DescriptionsError listing EVERY class without
    descriptions.
    """
    index = {}
    for key, sentences in table.items():
        index.setdefault(normalize_classname(key), []).extend(sentences)
    keys = keys or [[name] for name in classnames]
    out, missing = [], []
    for name, names in zip(classnames, keys):
        sentences = []
        for key in names:
            sentences = list(dict.fromkeys(s.strip() for s in index.get(normalize_classname(key), []) if s.strip()))
            if sentences:
                break
        if not sentences:
            missing.append(name if names == [name] else f"{name} (looked up as {' / '.join(names)})")
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


HOW_TO_SUPPLY = ("supply a JSON file in CuPL's format {\"class name\": [\"sentence\", ...]} (one key per class) "
                 "with TRAINER.FAIR.DESCRIPTIONS /path/to/file.json, or allow template sentences built from the class "
                 "names with TRAINER.FAIR.DESCRIPTIONS_FALLBACK template (scripts/fair/main.sh then names the run "
                 "<cfg>_templatedesc)")


def _file_source(path, url=None, dataset=None):
    """The record of a description file for results.json: its path and sha256 (and the URL it came from)."""
    out = {"file": str(path), "sha256": file_digest(path)}
    if url:
        out["url"] = url
    if short_name(dataset or "") == "stanford_dogs":
        out["class_names"] = "ImageNet names by WordNet id (STANFORD_DOGS_IMAGENET), else the dataset's own"
    return out


def source_label(source):
    """One-line text of a source record (for logs)."""
    if not isinstance(source, dict):
        return str(source)
    return f"{source.get('url') or source['file']} (sha256 {source['sha256'][:12]})"


def get_descriptions(classnames, dataset, path="", url="", sha256="", fallback="error", cache_dir=None,
                     download=True, templates=None, max_per_class=None):
    """(sentences per class, source) following the resolution order of the module docstring; source is
    {"file", "sha256"[, "url"][, "class_names"]} or "template"."""
    if fallback not in FALLBACKS:
        raise DescriptionsError(f"TRAINER.FAIR.DESCRIPTIONS_FALLBACK must be one of {FALLBACKS}, got {fallback!r}")
    dataset = short_name(dataset)
    default = DEFAULT_SOURCES.get(dataset)
    keys = description_keys(dataset, classnames)
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
        return match_descriptions(classnames, table, str(p), max_per_class, keys), _file_source(p, dataset=dataset)
    if not url and default is not None:
        url, sha256 = default[2], default[1]
    if url:
        cache_dir = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "clip_adapt" / "descriptions"
        try:
            local = fetch_description_file(url, sha256, cache_dir, download=download)
        except DescriptionsError as e:
            if fallback == "error":
                raise DescriptionsError(f"{e}; or {HOW_TO_SUPPLY}") from e
            reason = str(e)
        else:
            table = load_description_file(local)
            return (match_descriptions(classnames, table, f"{url} ({local})", max_per_class, keys),
                    _file_source(local, url, dataset))
    else:
        reason = f"no description file is known for dataset {dataset!r}"
        if fallback == "error":
            raise DescriptionsError(
                f"{reason}, so all {len(classnames)} classes have no descriptions: "
                f"{', '.join(repr(c) for c in classnames)}; {HOW_TO_SUPPLY}")
    if not templates:
        raise DescriptionsError("template fallback needs templates")
    warnings.warn(f"FAIR: {reason}; using template sentences built from the class names instead "
                  f"(TRAINER.FAIR.DESCRIPTIONS_FALLBACK 'template')")
    print(f"WARNING: FAIR class descriptions: {reason}; falling back to {len(templates)} template sentences "
          f"per class")
    return [s[:max_per_class] if max_per_class else s for s in template_descriptions(classnames, templates)], \
        "template"
