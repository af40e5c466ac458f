"""The catalog of every dataset the project reads: one entry per short name (the `<dataset>` argument of scripts).

Each entry says where the dataset lives under DATA, which reader builds its split, the split file it reads or
writes, the official image counts per split, and how to obtain it (official URL; gdown id for CoOp's split files;
a checksum-verified download where a stable public archive exists).

Layouts of the 11 CoOp datasets and the 4 ImageNet variants follow CoOp's DATASETS.md (Zhou et al.); the 7 others
(cub, nabirds, birdsnap, stanford_dogs, resisc45, cifar10, cifar100) read their official archives
(`official.py`: OFFICIAL_DIRS, OFFICIAL_COUNTS, READERS).
"""
from dataclasses import dataclass, field

from ..prompts import DATASET_CLASSES
from . import official

# readers (see loader.py)
COOP_SPLIT = "coop_split"  # CoOp's split_zhou_*.json + an image folder
FGVC = "fgvc_aircraft"  # FGVC-Aircraft's own images_variant_{train,val,test}.txt (as CoOp reads them)
IMAGENET = "imagenet"  # images/train/<wnid>/, images/val/<wnid>/, classnames.txt
IMAGENET_V2 = "imagenet_v2"  # <format-val>/<label>/..., classnames.txt (label = its line number)
IMAGENET_WNID = "imagenet_wnid"  # <image_dir>/<wnid>/..., classnames.txt (labels = sorted wnid folders)
OFFICIAL = "official"  # official archive layout, read by official.READERS[name]

GDRIVE = "https://drive.google.com/file/d/{}/view"


@dataclass(frozen=True)
class Download:
    """An archive with a stable public URL and a published checksum, extracted into DATA (or the dataset folder)."""
    url: str
    md5: str
    filename: str
    extract_into: str = "root"  # root: $DATA; dataset: $DATA/<folder>


@dataclass(frozen=True)
class DatasetInfo:
    short: str
    folder: str  # folder under DATA
    reader: str
    url: str  # official page
    obtain: str  # one line: how to get it
    image_dir: str = ""  # folder (under `folder`) that paths of a CoOp split file are relative to
    split_file: str = ""  # CoOp's split file (COOP_SPLIT only)
    split_gdown: str = ""  # gdown id of that split file (CoOp's DATASETS.md)
    metadata: tuple = ()  # further required files/folders under `folder` (other than the split file)
    counts: dict = field(default_factory=dict)  # official images per split: train, val (None: carved), test, classes
    downloads: tuple = ()
    test_only: bool = False

    @property
    def registry_name(self):
        return DATASET_CLASSES[self.short]

    @property
    def coop_split(self):
        return self.reader == COOP_SPLIT

    def hint(self):
        """The 'how to obtain it' line of errors and of the check command."""
        parts = [self.obtain, f"official source: {self.url}"]
        if self.split_gdown:
            parts.append(f"split file {self.split_file}: `gdown {self.split_gdown}` ({GDRIVE.format(self.split_gdown)})")
        if self.downloads:
            parts.append("or run `python -m tools.check_dataset --root $DATA --download " + self.short + "`")
        parts.append("see docs/DATASETS.md")
        return "; ".join(parts)


def _world(short):
    """A domain of bench/world: written by `python -m bench.world.build`, CoOp's split format."""
    return DatasetInfo(short=short, folder=short, reader=COOP_SPLIT,
                       url="https://github.com/zalandoresearch/fashion-mnist",
                       obtain="apt-get install dataset-fashion-mnist, then `python -m bench.world.build --root $DATA` "
                              "(see bench/world/README.md)",
                       image_dir="images", split_file=f"split_{short}.json",
                       counts={"train": 1000, "val": 500, "test": 2000, "classes": 10})


def _coop(short, folder, image_dir, split_name, gdown, url, obtain, counts, metadata=()):
    return DatasetInfo(short=short, folder=folder, reader=COOP_SPLIT, url=url, obtain=obtain, image_dir=image_dir,
                       split_file=f"split_zhou_{split_name}.json", split_gdown=gdown, metadata=metadata,
                       counts=dict(zip(("train", "val", "test", "classes"), counts)))


_IMAGENET_CLASSNAMES_GDOWN = "1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF"  # CoOp's classnames.txt (CLIP's class names)
_CLASSNAMES_HINT = (f"classnames.txt is CoOp's ImageNet class-name file (`gdown {_IMAGENET_CLASSNAMES_GDOWN}`), "
                    "copied next to the images")

_ENTRIES = [
    _coop("caltech101", "caltech-101", "101_ObjectCategories", "Caltech101", "1hyarUivQE36mY6jSomru6Fjd-JzwcCzN",
          "https://data.caltech.edu/records/mzrjq-6wc02",
          "extract 101_ObjectCategories.tar.gz (inside caltech-101.zip) into $DATA/caltech-101/",
          (4128, 1649, 2465, 100)),
    _coop("oxford_pets", "oxford_pets", "images", "OxfordPets", "1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs",
          "https://www.robots.ox.ac.uk/~vgg/data/pets/",
          "extract images.tar.gz and annotations.tar.gz into $DATA/oxford_pets/", (2944, 736, 3669, 37)),
    _coop("stanford_cars", "stanford_cars", "", "StanfordCars", "1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT",
          "https://ai.stanford.edu/~jkrause/cars/car_dataset.html",
          "put cars_train/, cars_test/ and devkit/ (cars_train.tgz, cars_test.tgz, car_devkit.tgz) in "
          "$DATA/stanford_cars/", (6509, 1635, 8041, 196)),
    _coop("oxford_flowers", "oxford_flowers", "jpg", "OxfordFlowers", "1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT",
          "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/",
          "extract 102flowers.tgz into $DATA/oxford_flowers/ (jpg/)", (4093, 1633, 2463, 102)),
    _coop("food101", "food-101", "images", "Food101", "1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl",
          "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/",
          "extract food-101.tar.gz into $DATA (gives $DATA/food-101/images/)", (50500, 20200, 30300, 101)),
    DatasetInfo(short="fgvc_aircraft", folder="fgvc_aircraft", reader=FGVC,
                url="https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/",
                obtain="extract fgvc-aircraft-2013b.tar.gz and move its data/ folder to $DATA/fgvc_aircraft/",
                image_dir="images",
                metadata=("variants.txt", "images_variant_train.txt", "images_variant_val.txt",
                          "images_variant_test.txt"),
                counts={"train": 3334, "val": 3333, "test": 3333, "classes": 100}),
    _coop("sun397", "sun397", "SUN397", "SUN397", "1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq",
          "https://vision.princeton.edu/projects/2010/SUN/",
          "extract SUN397.tar.gz into $DATA/sun397/ (gives SUN397/)", (15880, 3970, 19850, 397)),
    _coop("dtd", "dtd", "images", "DescribableTextures", "1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x",
          "https://www.robots.ox.ac.uk/~vgg/data/dtd/",
          "extract dtd-r1.0.1.tar.gz into $DATA (gives $DATA/dtd/images/)", (2820, 1128, 1692, 47)),
    _coop("eurosat", "eurosat", "2750", "EuroSAT", "1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o",
          "https://github.com/phelber/EuroSAT",
          "extract the RGB EuroSAT.zip into $DATA/eurosat/ (gives 2750/)", (13500, 5400, 8100, 10)),
    _coop("ucf101", "ucf101", "UCF-101-midframes", "UCF101", "1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y",
          "https://www.crcv.ucf.edu/data/UCF101.php",
          "extract CoOp's UCF-101-midframes.zip (`gdown 10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O`) into $DATA/ucf101/",
          (7639, 1898, 3783, 101)),
    DatasetInfo(short="imagenet", folder="imagenet", reader=IMAGENET, url="https://image-net.org/",
                obtain="extract ILSVRC2012 train and val (val sorted into <wnid>/ folders) to "
                       f"$DATA/imagenet/images/{{train,val}}/; {_CLASSNAMES_HINT} ($DATA/imagenet/classnames.txt)",
                image_dir="images", metadata=("classnames.txt", "images/train", "images/val"),
                counts={"train": 1281167, "val": None, "test": 50000, "classes": 1000}),
    DatasetInfo(short="imagenet_v2", folder="imagenetv2", reader=IMAGENET_V2,
                url="https://github.com/modestyachts/ImageNetV2",
                obtain="extract imagenetv2-matched-frequency.tar.gz into $DATA/imagenetv2/ and copy "
                       "$DATA/imagenet/classnames.txt there",
                image_dir="imagenetv2-matched-frequency-format-val", metadata=("classnames.txt",),
                counts={"train": 0, "val": 0, "test": 10000, "classes": 1000}, test_only=True),
    DatasetInfo(short="imagenet_sketch", folder="imagenet-sketch", reader=IMAGENET_WNID,
                url="https://github.com/HaohanWang/ImageNet-Sketch",
                obtain="extract ImageNet-Sketch into $DATA/imagenet-sketch/images/<wnid>/ and copy "
                       "$DATA/imagenet/classnames.txt to $DATA/imagenet-sketch/",
                image_dir="images", metadata=("classnames.txt",),
                counts={"train": 0, "val": 0, "test": 50889, "classes": 1000}, test_only=True),
    DatasetInfo(short="imagenet_a", folder="imagenet-adversarial", reader=IMAGENET_WNID,
                url="https://github.com/hendrycks/natural-adv-examples",
                obtain="extract imagenet-a.tar into $DATA/imagenet-adversarial/ (gives imagenet-a/<wnid>/) and copy "
                       "$DATA/imagenet/classnames.txt to $DATA/imagenet-adversarial/",
                image_dir="imagenet-a", metadata=("classnames.txt",),
                counts={"train": 0, "val": 0, "test": 7500, "classes": 200}, test_only=True),
    DatasetInfo(short="imagenet_r", folder="imagenet-rendition", reader=IMAGENET_WNID,
                url="https://github.com/hendrycks/imagenet-r",
                obtain="extract imagenet-r.tar into $DATA/imagenet-rendition/ (gives imagenet-r/<wnid>/) and copy "
                       "$DATA/imagenet/classnames.txt to $DATA/imagenet-rendition/",
                image_dir="imagenet-r", metadata=("classnames.txt",),
                counts={"train": 0, "val": 0, "test": 30000, "classes": 200}, test_only=True),
    # the small world of bench/world: its shifted target and unshifted source domain
    _world("fashion_mnist_shift"),
    _world("fashion_mnist_source"),
]

# The official-archive datasets: folders, counts, URLs, checksums and how-to-obtain lines live in official.py
# (OFFICIAL_DIRS, OFFICIAL_COUNTS, OFFICIAL_URLS, OFFICIAL_MD5, OFFICIAL_HINTS); the catalog only adds where a
# verified archive is extracted (CUB's archive holds CUB_200_2011/; CIFAR's hold cifar-*-py*/ that go in the
# dataset folder).
OFFICIAL_NAMES = ("cub", "nabirds", "birdsnap", "stanford_dogs", "resisc45", "cifar10", "cifar100")
_EXTRACT_INTO = {"cub": "root", "cifar10": "dataset", "cifar100": "dataset"}


def _official_entry(short):
    url = official.OFFICIAL_URLS[short]
    downloads = ()
    if short in official.OFFICIAL_MD5:
        downloads = (Download(url, official.OFFICIAL_MD5[short], url.rsplit("/", 1)[-1], _EXTRACT_INTO[short]),)
    counts = dict(official.OFFICIAL_COUNTS[short])
    counts.setdefault("val", None)
    return DatasetInfo(short=short, folder=official.OFFICIAL_DIRS[short], reader=OFFICIAL, url=url,
                       obtain=official.OFFICIAL_HINTS[short], counts=counts, downloads=downloads)


_CATALOG = {e.short: e for e in _ENTRIES}
NAMES = tuple(DATASET_CLASSES)  # every short name, in DATASET_CLASSES order
COOP_NAMES = tuple(n for n in NAMES if n in _CATALOG)
_CATALOG.update((short, _official_entry(short)) for short in OFFICIAL_NAMES)


def get(short):
    """The catalog entry of a dataset short name (or registry class name)."""
    from ..prompts import short_name

    key = short_name(short)
    if key in _CATALOG:
        return _CATALOG[key]
    raise KeyError(f"unknown dataset {short!r}; known: {', '.join(NAMES)}")


assert set(_CATALOG) == set(DATASET_CLASSES), "catalog and prompts.DATASET_CLASSES disagree"
