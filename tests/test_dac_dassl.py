"""The DAC Dassl trainer (trainers/dac.py) on a tiny CLIP and a few 32 px images: the spec's expected behaviour that
needs the trainer (methods/DAC.md), few-shot splits, val-only search, feature-cache reuse, exact resume, eval-only on
another class set, and scripts/dac/main.sh end to end. Needs Dassl (skipped with a reason without it)."""
import json
import subprocess
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, register_fixture_dataset

pytestmark = pytest.mark.dassl

K = 2


class Crash(Exception):
    pass


class _Untouchable:
    """Stands in for the test split (or its loader) while the alpha/beta search runs: any use fails."""

    def _fail(self, *a, **k):
        raise AssertionError("the alpha/beta search touched the test split")

    __iter__ = __len__ = __getitem__ = __bool__ = _fail


@pytest.fixture
def build(tmp_path, dassl_cfg):
    """build(output_dir, KEY, VALUE, ..., dataset=...) -> a DAC trainer on the shared fixture dataset, in process."""
    from dassl.engine import build_trainer
    from dassl.utils import set_random_seed

    import clip_adapt.plugin  # noqa: F401  registers the trainers

    register_fixture_dataset(tmp_path / "images", "DACFixture")

    def _build(out, *opts, dataset="DACFixture"):
        cfg = dassl_cfg("configs/trainers/DAC/vit_b16.yaml", "TRAINER.NAME", "DAC", "DATASET.NAME", dataset,
                        "DATASET.NUM_SHOTS", str(K), "TRAINER.DAC.AUG_PASSES", "2", "TRAINER.DAC.BATCH_SIZE", "4",
                        "OPTIM.MAX_EPOCH", "3", "OPTIM.LR", "0.01", "DATALOADER.TEST.BATCH_SIZE", "5",
                        "OUTPUT_DIR", str(out), *opts)
        set_random_seed(cfg.SEED)  # as train.py does
        return build_trainer(cfg)

    return _build


def _state(trainer):
    return {k: v.clone() for k, v in trainer.head.state_dict().items() if isinstance(v, torch.Tensor)}


def _count_encoder_calls(monkeypatch):
    """Count every image- and text-encoder forward of any clip.model.CLIP."""
    from clip.model import CLIP

    calls = {"image": 0, "text": 0}
    for kind, name in (("image", "encode_image"), ("text", "encode_text")):
        original = getattr(CLIP, name)

        def wrapped(self, *args, _original=original, _kind=kind, **kwargs):
            calls[_kind] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(CLIP, name, wrapped)
    return calls


# ---- few-shot splits --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shots,val_per_class", [(1, 1), (2, 2), (8, 2)])  # the fixture's val has 2 per class
def test_few_shot_train_and_val_splits(build, tmp_path, shots, val_per_class):
    from collections import Counter

    trainer = build(tmp_path / "out", "DATASET.NUM_SHOTS", str(shots))
    train_paths = {d.impath for d in trainer.dm.dataset.train_x}
    assert Counter(d.label for d in trainer.fewshot) == {0: shots, 1: shots, 2: shots}
    assert {d.impath for d in trainer.fewshot} <= train_paths
    assert Counter(d.label for d in trainer.fewshot_val) == {c: val_per_class for c in range(3)}
    again = build(tmp_path / "out2", "DATASET.NUM_SHOTS", str(shots))
    assert [d.impath for d in again.fewshot] == [d.impath for d in trainer.fewshot]  # seeded
    other = build(tmp_path / "out3", "DATASET.NUM_SHOTS", str(shots), "SEED", "2")
    if shots < 8:
        assert [d.impath for d in other.fewshot] != [d.impath for d in trainer.fewshot]


# ---- the spec's expected behaviour ------------------------------------------------------------------------------
def _direct_test_features(trainer):
    """Test images encoded by the frozen CLIP, outside the trainer's cache."""
    from clip_adapt.zeroshot import encode_images

    feats, labels = [], []
    with torch.no_grad():
        for batch in trainer.test_loader:
            feats.append(encode_images(trainer.clip_model, batch["img"]))
            labels.append(batch["label"])
    return torch.cat(feats), torch.cat(labels)


def test_untrained_with_alpha_zero_predicts_exactly_zero_shot_clip(build, tmp_path):
    from clip_adapt.prompts import get_templates
    from clip_adapt.text import class_embeddings
    from clip_adapt.zeroshot import zero_shot_logits

    trainer = build(tmp_path / "out", "TRAINER.DAC.INIT_ALPHA", "0.0")
    feats, labels = trainer.split_features("test")
    direct, direct_labels = _direct_test_features(trainer)
    torch.testing.assert_close(feats, direct)
    assert torch.equal(labels, direct_labels)
    text = class_embeddings(trainer.clip_model, trainer.classnames, get_templates("DACFixture", "ensemble"))
    zs = zero_shot_logits(direct, text, trainer.clip_model.logit_scale.exp().item())
    ours = trainer.logits_from_features(feats)
    torch.testing.assert_close(ours, zs)
    assert torch.equal(ours.argmax(1), zs.argmax(1))
    expected_acc = 100.0 * (zs.argmax(1) == labels).float().mean().item()
    assert trainer.test() == pytest.approx(expected_acc)


def test_identity_adapter_image_logits_are_the_tip_adapter_formula(build, tmp_path):
    trainer = build(tmp_path / "out")
    views, view_labels = trainer.train_views()
    assert views.shape[:2] == (2, 3 * K)
    feats, _ = trainer.split_features("test")
    alpha, beta = 1.5, 4.0
    keys = views.mean(0)
    keys = keys / keys.norm(dim=1, keepdim=True)
    one_hot = torch.zeros(len(view_labels), 3)
    one_hot[torch.arange(len(view_labels)), view_labels] = 1.0
    tip = torch.exp(-beta * (1.0 - feats @ keys.t())) @ one_hot
    expected = trainer.head.text_logits(feats) + alpha * tip
    torch.testing.assert_close(trainer.logits_from_features(feats, alpha=alpha, beta=beta), expected)


def test_training_run_logs_saves_and_reports(build, tmp_path, capsys):
    out = tmp_path / "out"
    trainer = build(out)
    clip_before = {k: v.clone() for k, v in trainer.clip_model.state_dict().items()}
    head_before = _state(trainer)
    trainer.train()
    log = capsys.readouterr().out
    for line in ("Finish training", "=> result", "* accuracy:", "DAC: alpha/beta searched on val"):
        assert line in log
    # only the head trained; CLIP is frozen
    assert all(torch.equal(v, clip_before[k]) for k, v in trainer.clip_model.state_dict().items())
    changed = {k for k, v in _state(trainer).items() if not torch.equal(v, head_before[k])}
    assert {"adapter.linear.weight", "text_mod.delta"} <= changed
    search = json.loads((out / "dac_search.json").read_text())
    assert search["split"] == "val" and search["val_images"] == 3 * min(K, 4)
    assert (search["alpha"], search["beta"]) == (trainer.alpha, trainer.beta)
    assert 0.0 <= search["alpha"] <= 10.0 and 0.1 <= search["beta"] <= 10.0
    assert f"alpha = {search['alpha']:.4g}, beta = {search['beta']:.4g}" in log
    results = json.loads((out / "results.json").read_text())
    assert results["alpha"] == search["alpha"] and results["beta"] == search["beta"]
    assert results["num_shots"] == K and results["accuracy"] == trainer.last_result
    final = torch.load(out / "dac_final.pt")  # weights_only
    assert final["classnames"] == trainer.classnames and final["keys"].shape == (3 * K, trainer.head.text_mod.base.shape[1])


def test_alpha_beta_are_searched_on_val_and_never_touch_test(build, tmp_path, monkeypatch):
    import clip_adapt.engine.dac as dac_mod

    seen = {}
    core_search = dac_mod.search_alpha_beta

    def spy(text_logits, query, keys, values, labels, alphas, betas):
        seen["labels"] = labels.clone()
        return core_search(text_logits, query, keys, values, labels, alphas, betas)

    monkeypatch.setattr(dac_mod, "search_alpha_beta", spy)
    trainer = build(tmp_path / "out")
    dataset = trainer.dm.dataset
    real_test, real_loader = dataset._test, trainer.test_loader
    dataset._test, trainer.test_loader = _Untouchable(), _Untouchable()
    search = trainer.search_alpha_beta

    def guarded():
        result = search()  # fails if anything reads the test split or its loader
        dataset._test, trainer.test_loader = real_test, real_loader
        return result

    trainer.search_alpha_beta = guarded
    trainer.train()
    assert torch.equal(seen["labels"].cpu(), torch.tensor([d.label for d in trainer.fewshot_val]))
    assert trainer.last_result is not None  # the test ran after the search

    # test labels changed -> the same alpha/beta (the search cannot depend on them)
    from dassl.data.datasets import Datum

    other = build(tmp_path / "out2")
    other.dm.dataset._test = [Datum(impath=d.impath, label=(d.label + 1) % 3, classname="x")
                              for d in other.dm.dataset.test]
    other.train()
    assert (other.alpha, other.beta) == (trainer.alpha, trainer.beta)


def test_second_run_reuses_the_feature_cache_without_encoder_calls(build, tmp_path, monkeypatch):
    first = build(tmp_path / "first")
    first.train()
    calls = _count_encoder_calls(monkeypatch)
    second = build(tmp_path / "second")
    second.train()
    assert calls == {"image": 0, "text": 0}
    assert second.feature_cache.hits >= 2 + 2 and second.feature_cache.misses == 0  # 2 passes, val, test, text
    s1, s2 = _state(first), _state(second)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert (second.alpha, second.beta, second.last_result) == (first.alpha, first.beta, first.last_result)
    f1, f2 = first.split_features("test")[0], second.split_features("test")[0]
    assert torch.equal(f1, f2)
    assert torch.equal(first.logits_from_features(f1), second.logits_from_features(f2))


def test_interrupted_run_resumes_to_the_same_result(build, tmp_path, capsys):
    full = build(tmp_path / "full")
    full.train()
    cut = build(tmp_path / "cut")
    step = cut.forward_backward

    def crashing(batch):
        if (cut.epoch, cut.batch_idx) == (1, 1):
            raise Crash
        return step(batch)

    cut.forward_backward = crashing
    with pytest.raises(Crash):
        cut.train()
    assert (tmp_path / "cut" / "trainer_state.pth.tar").exists()
    assert not (tmp_path / "cut" / "dac_search.json").exists()
    capsys.readouterr()
    resumed = build(tmp_path / "cut")
    resumed.train()
    assert "will resume training from epoch 2" in capsys.readouterr().out
    s_full, s_res = _state(full), _state(resumed)
    assert all(torch.equal(s_full[k], s_res[k]) for k in s_full)
    assert (resumed.alpha, resumed.beta, resumed.last_result) == (full.alpha, full.beta, full.last_result)
    a = json.loads((tmp_path / "full" / "dac_search.json").read_text())
    b = json.loads((tmp_path / "cut" / "dac_search.json").read_text())
    assert a == b


def test_eval_only_loads_the_model_and_its_searched_alpha_beta(build, tmp_path):
    trained = build(tmp_path / "train")
    trained.train()
    fresh = build(tmp_path / "eval")
    fresh.load_model(str(tmp_path / "train"))
    assert (fresh.alpha, fresh.beta) == (trained.alpha, trained.beta)
    feats = trained.split_features("test")[0]
    torch.testing.assert_close(fresh.logits_from_features(feats, alpha=2.0, beta=3.0),
                               trained.logits_from_features(feats, alpha=2.0, beta=3.0))
    assert fresh.test() == trained.last_result
    with pytest.raises(ValueError, match="epoch 3"):
        build(tmp_path / "eval2").load_model(str(tmp_path / "train"), epoch=2)


def test_eval_on_another_class_set_maps_classes_by_name(build, tmp_path, capsys):
    """The OOD protocol: a model trained on one class set evaluated on a subset in another order."""
    trained = build(tmp_path / "train")
    trained.train()
    register_fixture_dataset(tmp_path / "images_sub", "DACFixtureSub", n_train=4, n_val=2, n_test=6,
                             classes=["bird", "cat"])
    ev = build(tmp_path / "eval", dataset="DACFixtureSub")
    ev.load_model(str(tmp_path / "train"))
    assert "mapping them by name" in capsys.readouterr().out
    feats, _ = ev.split_features("test")
    cols = [trained.classnames.index(c) for c in ("bird", "cat")]
    for alpha, beta in ((0.0, 1.0), (2.0, 3.0)):
        torch.testing.assert_close(ev.logits_from_features(feats, alpha=alpha, beta=beta),
                                   trained.logits_from_features(feats, alpha=alpha, beta=beta)[:, cols])
    acc = ev.test()
    assert 0.0 <= acc <= 100.0
    register_fixture_dataset(tmp_path / "images_fish", "DACFixtureFish", n_train=4, n_val=2, n_test=4,
                             classes=["cat", "fish"])
    with pytest.raises(KeyError, match="fish"):
        build(tmp_path / "eval_fish", dataset="DACFixtureFish").load_model(str(tmp_path / "train"))


@pytest.mark.parametrize("key,value", [("TRAINER.DAC.TEXT_MOD", "bogus"), ("TRAINER.DAC.VAL_SHOTS", "0"),
                                       ("TRAINER.DAC.AUG_PASSES", "0"), ("TRAINER.DAC.SEARCH_BETA", "(1.0, 0.5, 3)"),
                                       ("TRAINER.DAC.SAMPLER", "bogus"), ("TRAINER.DAC.VIEWS", "3")])
def test_bad_config_values_name_the_key(build, tmp_path, key, value):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build(tmp_path / "out", key, value)


def test_configs_hold_the_spec_defaults():
    from dassl.config import get_cfg_default

    from clip_adapt.config import extend_cfg

    for name, backbone in (("rn50", "RN50"), ("vit_b32", "ViT-B/32"), ("vit_b16", "ViT-B/16"),
                           ("vit_l14", "ViT-L/14")):
        cfg = extend_cfg(get_cfg_default())
        cfg.merge_from_file(str(REPO / "configs" / "trainers" / "DAC" / f"{name}.yaml"))
        assert cfg.MODEL.BACKBONE.NAME == backbone
        assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.LR_SCHEDULER) == ("adamw", 1e-3, "cosine")
        assert 20 <= cfg.OPTIM.MAX_EPOCH <= 100
        dc = cfg.TRAINER.DAC
        assert (dc.BATCH_SIZE, dc.AUG_PASSES, dc.CONTRAST_TEMP, dc.VAL_SHOTS) == (256, 10, 0.07, 4)
        assert "random_resized_crop" in cfg.INPUT.TRANSFORMS


# ---- scripts/dac/main.sh end to end (needs the project's dataset fixtures) -------------------------------------


@pytest.mark.slow
def test_main_sh_end_to_end(script_env, tiny_clip_path):
    from tests import dataset_fixtures

    name = dataset_fixtures.build_fixture_dataset(Path(script_env["DATA"]))
    cmd = ["bash", "scripts/dac/main.sh", name, "vit_b16", "2", "MODEL.BACKBONE.NAME", str(tiny_clip_path),
           "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH", "2",
           "TRAINER.DAC.AUG_PASSES", "2"]
    proc = subprocess.run(cmd, cwd=REPO, env=script_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = Path(script_env["OUTPUT"]) / name / "DAC" / "vit_b16_2shots" / "seed1"
    log = (run / "log.txt").read_text()
    assert "Finish training" in log and "* accuracy:" in log and "alpha/beta searched on val" in log
    assert (run / "dac" / "model.pth.tar-2").exists() and (run / "dac_final.pt").exists()
    search = json.loads((run / "dac_search.json").read_text())
    results = json.loads((run / "results.json").read_text())
    assert search["split"] == "val" and results["num_shots"] == 2 and results["alpha"] == search["alpha"]
    again = subprocess.run(cmd, cwd=REPO, env=script_env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "skipping" in again.stdout
    # eval-only with --model-dir (what scripts/dac/ood.sh runs per target) reads the model and its alpha/beta
    ev_dir = Path(script_env["OUTPUT"]) / "eval"
    ev = subprocess.run([script_env["PYTHON"], "train.py", "--root", script_env["DATA"], "--seed", "1",
                         "--trainer", "DAC", "--dataset-config-file", f"configs/datasets/{name}.yaml",
                         "--config-file", "configs/trainers/DAC/vit_b16.yaml", "--output-dir", str(ev_dir),
                         "--eval-only", "--model-dir", str(run), *cmd[5:]],
                        cwd=REPO, env=script_env, capture_output=True, text=True, timeout=600)
    assert ev.returncode == 0, ev.stdout[-3000:] + ev.stderr[-3000:]
    assert json.loads((ev_dir / "results.json").read_text())["accuracy"] == results["accuracy"]


@pytest.mark.slow
def test_ood_sh_end_to_end(script_env, tiny_clip_path):
    """ImageNet fixture (3 classes) -> ImageNet-V2 (same classes) and ImageNet-A (a 2-class subset), real train.py."""
    from tests import dataset_fixtures

    data = Path(script_env["DATA"])
    dataset_fixtures.build_fixture_dataset(data, "imagenet", n_train=4, n_val=2)
    dataset_fixtures.build_fixture_dataset(data, "imagenet_v2", n_test=3)
    dataset_fixtures.build_fixture_dataset(data, "imagenet_a", n_classes=2, n_test=3)
    env = dict(script_env, OOD_TARGETS="imagenet_v2 imagenet_a")
    cmd = ["bash", "scripts/dac/ood.sh", "vit_b16", "2", "MODEL.BACKBONE.NAME", str(tiny_clip_path),
           "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH", "1",
           "TRAINER.DAC.AUG_PASSES", "2", "TRAINER.DAC.TEMPLATES", "single"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = Path(script_env["OUTPUT"])
    trained = out / "imagenet" / "DAC" / "vit_b16_2shots" / "seed1"
    search = json.loads((trained / "dac_search.json").read_text())
    for target, n_classes in (("imagenet_v2", 3), ("imagenet_a", 2)):
        run = out / target / "DAC" / "vit_b16_from_imagenet_2shots" / "seed1"
        log = (run / "log.txt").read_text()
        assert "* accuracy:" in log and f"model_dir: {trained}" in log and "eval_only: True" in log
        results = json.loads((run / "results.json").read_text())
        assert results["eval_only"] and results["model_dir"] == str(trained) and results["num_shots"] == 2
        assert (results["alpha"], results["beta"]) == (search["alpha"], search["beta"])
        assert ("mapping them by name" in log) == (n_classes == 2)
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("skipping") == 3
