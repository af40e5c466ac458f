"""The baselines in tools.sweep / tools.runs: their scripts, run folders and the `ours` origin label (no Dassl)."""
import pytest

from tools import runs, sweep


@pytest.mark.parametrize("method,trainer", [("tipadapter", "TipAdapter"), ("tipadapterf", "TipAdapterF"),
                                            ("linearprobe", "LinearProbe")])
def test_few_shot_baselines_take_shots_and_name_the_run_folder(tmp_path, method, trainer):
    job = sweep.plan(method, ["dtd"], ["rn50"], [2], shots=[4], output=tmp_path)[0]
    assert job.seed_dir.parts[-4:] == ("dtd", trainer, "rn50_4shots", "seed2")
    assert job.argv[-3:] == ["dtd", "rn50", "4"] and job.argv[1].endswith(f"scripts/{method}/main.sh")
    with pytest.raises(ValueError, match="--shots is required"):
        sweep.plan(method, ["dtd"], ["rn50"], [1], output=tmp_path)


@pytest.mark.parametrize("method,trainer", [("selftraining", "SelfTraining"), ("dpa", "DPA")])
def test_unsupervised_baselines_keep_the_transductive_protocol_apart(tmp_path, method, trainer):
    plain = sweep.plan(method, ["cub"], ["vit_b16"], [1], output=tmp_path)[0]
    trans = sweep.plan(method, ["cub"], ["vit_b16"], [1], opts=["DATASET.ADAPT_SPLIT", "test"], output=tmp_path)[0]
    assert plain.seed_dir.parts[-3:] == (trainer, "vit_b16", "seed1")
    assert trans.seed_dir.parts[-3:] == (trainer, "vit_b16_transductive", "seed1")
    with pytest.raises(ValueError, match="--shots is only for"):
        sweep.plan(method, ["cub"], ["vit_b16"], [1], shots=[1], output=tmp_path)


def test_baseline_rows_are_labelled_ours_and_other_trainers_by_name():
    for trainer in ("TipAdapter", "TipAdapterF", "LinearProbe", "SelfTraining", "DPA"):
        assert runs.origin(trainer) == runs.OURS
    assert runs.origin("CoOp") == "CoOp"


def test_every_registered_trainer_has_a_script_and_a_config_per_backbone():
    from tests.conftest import REPO

    for method, trainer in runs.METHOD_TRAINERS.items():
        assert (REPO / "scripts" / method / "main.sh").is_file(), method
        for cfg in ("rn50", "vit_b32", "vit_b16", "vit_l14"):
            assert (REPO / "configs" / "trainers" / trainer / f"{cfg}.yaml").is_file(), (trainer, cfg)


@pytest.mark.dassl
@pytest.mark.parametrize("trainer", ["TipAdapter", "TipAdapterF", "LinearProbe", "SelfTraining", "DPA"])
def test_every_config_merges_into_the_declared_keys(trainer):
    from dassl.config import get_cfg_default

    from clip_adapt.config import extend_cfg
    from tests.conftest import REPO

    for path in sorted((REPO / "configs" / "trainers" / trainer).glob("*.yaml")):
        cfg = extend_cfg(get_cfg_default())
        cfg.merge_from_file(str(path))  # an undeclared key or a wrong type raises, naming it
        assert cfg.MODEL.BACKBONE.NAME
