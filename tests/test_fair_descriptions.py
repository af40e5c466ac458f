"""FAIR's class descriptions for the official-archive datasets: Stanford Dogs from an ImageNet-format file (by
WordNet id), NABirds' error listing its classes (methods/FAIR.md, part 1). No Dassl."""
import hashlib
import json

import pytest

from clip_adapt.data.official import dogs_classname, read_nabirds, read_stanford_dogs
from clip_adapt.fair import DescriptionsError, get_descriptions
from clip_adapt.fair import descriptions as desc_mod
from tests.official_fixtures import build_official_fixture

# a few Stanford Dogs folders and the class ImageNet (CuPL's imagenet_classes.py) has for the same WordNet id;
# written out here as the facts the table must reproduce
KNOWN = {"n02085782-Japanese_spaniel": "Japanese Chin", "n02086646-Blenheim_spaniel": "King Charles Spaniel",
         "n02088238-basset": "Basset Hound", "n02109961-Eskimo_dog": "husky",
         "n02116738-African_hunting_dog": "African wild dog", "n02096585-Boston_bull": "Boston Terrier"}


def _imagenet_file(path, names):
    """A small ImageNet-format (CuPL) file: the given ImageNet class names, plus unrelated ImageNet classes."""
    table = {name: [f"a photo showing the {name}, sentence {k}." for k in range(3)] for name in names}
    table.update({"tench": ["a fish"], "goldfish": ["an orange fish"]})
    path.write_text(json.dumps(table))
    return path


def test_stanford_dogs_classes_are_described_by_their_imagenet_names_given_by_path(tmp_path):
    table = desc_mod.STANFORD_DOGS_IMAGENET
    assert len(table) == 120 and len(set(table.values())) == 120
    assert len({folder.split("-")[0] for folder in table}) == 120
    assert all(table[folder] == name for folder, name in KNOWN.items())
    classnames = [dogs_classname(folder) for folder in table]  # the dataset's own class names
    path = _imagenet_file(tmp_path / "imagenet.json", table.values())
    out, source = get_descriptions(classnames, "StanfordDogs", path=str(path))
    assert len(out) == 120 and all(len(s) == 3 for s in out)
    for folder, sentences in zip(table, out):
        assert sentences[0] == f"a photo showing the {table[folder]}, sentence 0."
    assert source["file"] == str(path) and source["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    # a folder holding imagenet.json works too (TRAINER.FAIR.DESCRIPTIONS <folder>)
    out2, _ = get_descriptions(classnames, "stanford_dogs", path=str(tmp_path))
    assert out2 == out


def test_stanford_dogs_read_from_its_archive_layout_get_imagenet_descriptions(tmp_path):
    build_official_fixture(tmp_path, "stanford_dogs", n_classes=5)  # its first 5 folders are real breeds
    split = read_stanford_dogs(tmp_path / "stanford_dogs")
    assert split.classnames[:2] == ["Chihuahua", "Japanese spaniel"]
    path = _imagenet_file(tmp_path / "imagenet.json", ["Chihuahua", "Japanese Chin", "Maltese", "Pekingese",
                                                       "Shih Tzu"])
    out, _ = get_descriptions(split.classnames, "stanford_dogs", path=str(path))
    assert out[1][0] == "a photo showing the Japanese Chin, sentence 0."
    assert out[4][0] == "a photo showing the Shih Tzu, sentence 0."  # folder 'Shih-Tzu'


def test_stanford_dogs_default_source_is_cupls_imagenet_file_checksum_pinned(tmp_path):
    fname, digest, url = desc_mod.DEFAULT_SOURCES["stanford_dogs"]
    assert fname == "imagenet.json" and url == desc_mod.IMAGENET_URL and digest == desc_mod.IMAGENET_SHA256
    assert "sarahpratt/CuPL/719619c829792ff8f37298266e941b7f077c7f5c" in url and len(digest) == 64
    with pytest.raises(DescriptionsError, match="downloading is off.*TRAINER.FAIR.DESCRIPTIONS /path/to/file.json"):
        get_descriptions(["Chihuahua"], "stanford_dogs", cache_dir=tmp_path, download=False)


def test_a_dogs_file_keyed_by_the_breed_folder_names_still_works(tmp_path):
    path = tmp_path / "dogs.json"
    path.write_text(json.dumps({"Chihuahua": ["c"], "Japanese_spaniel": ["j"]}))
    out, _ = get_descriptions(["Chihuahua", "Japanese spaniel"], "stanford_dogs", path=str(path))
    assert out == [["c"], ["j"]]
    with pytest.raises(DescriptionsError, match=r"'Maltese dog \(looked up as Maltese / Maltese dog\)'"):
        get_descriptions(["Chihuahua", "Maltese dog"], "stanford_dogs", path=str(path))


def test_nabirds_error_lists_its_classes_and_how_to_supply_a_file(tmp_path):
    build_official_fixture(tmp_path, "nabirds", n_classes=4)
    classnames = read_nabirds(tmp_path / "nabirds").classnames
    assert len(classnames) == 4
    with pytest.raises(DescriptionsError) as e:
        get_descriptions(classnames, "NABirds", cache_dir=tmp_path / "cache")
    message = str(e.value)
    assert "no description file is known for dataset 'nabirds'" in message
    assert f"all {len(classnames)} classes have no descriptions" in message
    assert ", ".join(repr(c) for c in classnames) in message
    assert "TRAINER.FAIR.DESCRIPTIONS /path/to/file.json" in message and '{"class name": ["sentence", ...]}' in message
    assert "\n" not in message
    # supplied by path, it works
    path = tmp_path / "nabirds.json"
    path.write_text(json.dumps({c: [f"a {c}"] for c in classnames}))
    out, _ = get_descriptions(classnames, "NABirds", path=str(path))
    assert out == [[f"a {c}"] for c in classnames]
