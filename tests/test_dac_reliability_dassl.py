"""The DAC trainer on catalogued fixture datasets: gradient and positives at K = 1, the test-only-dataset error,
too many shots, CoOp's picks when the trainer draws them itself, and a run on a read-only DATA folder."""
import json
from pathlib import Path

import pytest
import torch

from tests.conftest import register_fixture_dataset
from tests.dataset_fixtures import build_fixture_dataset
from tests.test_datasets_fewshot import _tree, read_only

pytestmark = pytest.mark.dassl


@pytest.fixture
def build_dac(tmp_path, dassl_cfg):
    """build_dac(dataset_name, KEY, VALUE, ...) -> a DAC trainer on DATA = tmp_path / "data"."""
    from dassl.engine import build_trainer
    from dassl.utils import set_random_seed

    import clip_adapt.plugin  # noqa: F401  registers the trainers and the datasets

    def _build(dataset, *opts):
        cfg = dassl_cfg("configs/trainers/DAC/vit_b16.yaml", "TRAINER.NAME", "DAC", "DATASET.NAME", dataset,
                        "DATASET.ROOT", str(tmp_path / "data"), "DATASET.NUM_SHOTS", "1",
                        "TRAINER.DAC.AUG_PASSES", "2", "TRAINER.DAC.BATCH_SIZE", "4", "TRAINER.DAC.TEMPLATES",
                        "single", "OPTIM.MAX_EPOCH", "1", "OPTIM.LR", "0.01", "DATALOADER.TEST.BATCH_SIZE", "5",
                        "OUTPUT_DIR", str(tmp_path / "out"), *opts)
        set_random_seed(cfg.SEED)  # as train.py does
        return build_trainer(cfg)

    return _build


def test_at_one_shot_every_trainer_batch_has_positives_and_the_adapter_gets_gradient(build_dac, tmp_path):
    build_fixture_dataset(tmp_path / "data", "oxford_pets", n_classes=4, n_train=4, n_val=2)
    trainer = build_dac("OxfordPets")
    assert len(trainer.fewshot) == 4  # one image per class
    trainer.before_train()
    batches = list(trainer.train_loader_x)
    assert len(batches) == len(trainer.train_loader_x) == 2  # 4 images, 2 per batch of 4 views
    for batch in batches:
        rows = batch["index"]
        labels = trainer._flat_labels[rows]
        assert all((labels == y).sum() >= 2 for y in labels)  # every anchor has a positive
        trainer.head.zero_grad()
        loss, parts = trainer.head.loss(trainer._flat_views[rows], labels)
        loss.backward()
        assert parts["loss_con"] > 0 and trainer.head.adapter.linear.weight.grad.norm() > 0


def test_training_on_a_test_only_dataset_is_an_error_naming_it(build_dac, tmp_path):
    from clip_adapt.data.errors import DatasetError

    build_fixture_dataset(tmp_path / "data", "imagenet_v2", n_test=3)
    trainer = build_dac("ImageNetV2")  # building it (as an eval-only run does) is fine
    entries = sorted((tmp_path / "cache").glob("*.pt"))  # the class text embeddings only
    with pytest.raises(DatasetError, match=r"DAC cannot train on ImageNetV2: it is a test-only dataset.*ood\.sh"):
        trainer.train()
    assert sorted((tmp_path / "cache").glob("*.pt")) == entries  # stopped before encoding any image


def test_more_shots_than_a_class_has_is_an_error_naming_the_class_and_counts(build_dac, tmp_path):
    from clip_adapt.data.errors import DatasetError

    register_fixture_dataset(tmp_path / "images", "DACShort", n_train=6, n_val=3, n_test=3)  # 2 train per class
    with pytest.raises(DatasetError, match=r"NUM_SHOTS 4: class 'cat' \(label 0\) has only 2 train image"):
        build_dac("DACShort", "DATASET.NUM_SHOTS", "4")


def test_shots_the_trainer_draws_itself_are_coops_picks(build_dac, tmp_path):
    """A dataset handing over its whole train split: the trainer draws K per class, then val, as CoOp would."""
    from dassl.data.datasets import DatasetBase
    from dassl.utils import set_random_seed

    register_fixture_dataset(tmp_path / "images", "DACWhole", n_train=24, n_val=15, n_test=3)  # 8 / 5 per class
    trainer = build_dac("DACWhole", "DATASET.NUM_SHOTS", "3", "SEED", "2")
    ds = trainer.dm.dataset
    set_random_seed(2)
    base = DatasetBase(train_x=ds.train_x, val=ds.val, test=ds.test)
    expected_train = base.generate_fewshot_dataset(ds.train_x, num_shots=3)
    expected_val = base.generate_fewshot_dataset(ds.val, num_shots=3)
    assert [d.impath for d in trainer.fewshot] == [d.impath for d in expected_train]
    assert [d.impath for d in trainer.fewshot_val] == [d.impath for d in expected_val]


def test_dac_trains_on_a_read_only_data_folder(build_dac, tmp_path):
    build_fixture_dataset(tmp_path / "data", "oxford_pets", n_classes=3, n_train=4, n_val=2)
    before = _tree(tmp_path / "data")
    with read_only(tmp_path / "data"):
        trainer = build_dac("OxfordPets", "DATASET.NUM_SHOTS", "2")
        trainer.train()
        assert _tree(tmp_path / "data") == before
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["num_shots"] == 2 and results["accuracy"] == trainer.last_result
    written = list((tmp_path / "cache" / "splits").glob("oxford_pets-*/split_fewshot/shot_2-seed_1.json"))
    assert len(written) == 1
    assert [Path(p).name for p, _, _ in json.loads(written[0].read_text())["train"]] == \
        [Path(d.impath).name for d in trainer.fewshot]
