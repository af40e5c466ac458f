"""Linear-probe CLIP (CoOp's lpclip recipe; docs/BASELINES.md) as a Dassl trainer.

It runs on the few-shot data DAC uses (it inherits DAC's data handling, clip_adapt/engine/dac.py: the K-shot train
split, the min(K, VAL_SHOTS) val cut, features through the on-disk feature cache, evaluation on cached test
features). As in lpclip, every split is encoded once with the test transform (no augmentation). Nothing is trained
by gradient: the configs set OPTIM.MAX_EPOCH 0 and, after the empty loop, the logistic regression is fitted and its
C searched on val (clip_adapt/baselines/linear_probe.py), then the test split is evaluated. The chosen C and every
(C, val accuracy) tried go to `lp_search.json`; the classifier to `lp_final.pt` (read back by --eval-only
--model-dir); C and the val accuracy to `results.json`.
"""
import json
import os.path as osp

import numpy as np
import torch
from dassl.engine import TRAINER_REGISTRY

from clip_adapt import checkpoint as ckpt
from clip_adapt.baselines import BaselineConfigError
from clip_adapt.baselines.linear_probe import accuracy, fit_logistic, lpclip_search, probe_logits
from clip_adapt.engine.base import CLIPAdaptTrainer
from clip_adapt.engine.dac import DAC

SEARCH_JSON = "lp_search.json"
FINAL_STATE = "lp_final.pt"


@TRAINER_REGISTRY.register()
class LinearProbe(DAC):
    """Logistic regression on frozen CLIP image features; C from lpclip's val search (or TRAINER.LP.C)."""

    DATA_PARALLEL = False  # one process only (docs/DISTRIBUTED.md)

    MIN_EPOCHS = 0  # training-free: OPTIM.MAX_EPOCH 0

    @property
    def lc(self):
        return self.cfg.TRAINER.LP

    def check_cfg(self, cfg):
        lc = cfg.TRAINER.LP
        if cfg.OPTIM.MAX_EPOCH != 0:
            raise BaselineConfigError(f"LinearProbe fits a logistic regression, not epochs: OPTIM.MAX_EPOCH must be "
                                      f"0, got {cfg.OPTIM.MAX_EPOCH}")
        if lc.VAL_SHOTS == 0:
            raise BaselineConfigError("TRAINER.LP.VAL_SHOTS must be >= 1 (or -1 for the whole val split), got 0")
        if not lc.C_INIT or any(float(c) <= 0 for c in lc.C_INIT):
            raise BaselineConfigError(f"TRAINER.LP.C_INIT must be a non-empty list of positive values, got "
                                      f"{lc.C_INIT!r}")
        if lc.SEARCH_STEPS < 0:
            raise BaselineConfigError(f"TRAINER.LP.SEARCH_STEPS must be >= 0, got {lc.SEARCH_STEPS}")
        if lc.C != -1 and lc.C <= 0:
            raise BaselineConfigError(f"TRAINER.LP.C must be > 0 (a fixed C) or -1 (search it on val), got {lc.C}")
        if lc.MAX_ITER < 1:
            raise BaselineConfigError(f"TRAINER.LP.MAX_ITER must be >= 1, got {lc.MAX_ITER}")

    @property
    def val_shots(self):
        """min(K, VAL_SHOTS) (VAL_SHOTS when K < 1); -1 = the whole val split (lpclip: min(K, 4))."""
        cap, k = self.lc.VAL_SHOTS, self.cfg.DATASET.NUM_SHOTS
        if cap < 1:
            return -1
        return cap if k < 1 else min(k, cap)

    def train_features(self):
        """(features, labels) of the few-shot train split: one pass of the test transform (lpclip's extractor)."""
        if "train" not in self._features:
            if not self.fewshot:
                raise ValueError(f"LinearProbe: dataset {self.cfg.DATASET.NAME} has no labelled train images to fit "
                                 f"on (evaluating a fitted probe needs its {FINAL_STATE})")
            self._features["train"] = self._encode_split(self.fewshot, "train", self.test_tfm,
                                                         num_shots=self.cfg.DATASET.NUM_SHOTS,
                                                         seed=self.cfg.SEED * 1000)
        return self._features["train"]

    def build_model(self):
        self.clip_model = self.build_clip()
        self.clip_model.requires_grad_(False)
        self.clip_model.eval()
        self._features, self.probe, self.search = {}, None, None

    def before_train(self):
        CLIPAdaptTrainer.before_train(self)

    def forward_backward(self, batch):
        raise RuntimeError("LinearProbe trains no epochs (OPTIM.MAX_EPOCH 0)")

    def fit_probe(self):
        """Fit on the train features; C = TRAINER.LP.C, or lpclip's search on the val split (never test)."""
        lc = self.lc
        x, y = self.train_features()
        xv, yv = self.split_features("val")

        def fit(c):
            return fit_logistic(x, y, c, lc.MAX_ITER)

        def score(clf):
            return accuracy(clf, xv, yv)

        if lc.C > 0:
            clf = fit(lc.C)
            res_c, res_acc, history, clf_final = float(lc.C), score(clf), [], clf
        else:
            res = lpclip_search(fit, score, [float(c) for c in lc.C_INIT], lc.SEARCH_STEPS)
            res_c, res_acc, history, clf_final = res.c, res.val_accuracy, res.history, res.classifier
        self.probe = {"coef": torch.from_numpy(np.asarray(clf_final.coef_, dtype=np.float64)),
                      "intercept": torch.from_numpy(np.asarray(clf_final.intercept_, dtype=np.float64)),
                      "classes": torch.from_numpy(np.asarray(clf_final.classes_, dtype=np.int64)),
                      "classnames": self.classnames, "c": res_c, "num_shots": self.cfg.DATASET.NUM_SHOTS}
        self.search = {"c": res_c, "val_accuracy": 100.0 * res_acc, "split": "val", "val_images": int(yv.numel()),
                       "val_shots": self.val_shots, "searched": lc.C <= 0,
                       "history": [{"c": c, "val_accuracy": 100.0 * a} for c, a in history]}
        how = f"searched on val ({len(history)} fits)" if lc.C <= 0 else "fixed (TRAINER.LP.C)"
        print(f"LinearProbe: C = {res_c:.6g} {how}; val accuracy {100.0 * res_acc:.2f}% ({yv.numel()} images)")
        with open(osp.join(self.output_dir, SEARCH_JSON), "w") as f:
            json.dump(self.search, f, indent=2)
        ckpt.save(self.probe, osp.join(self.output_dir, FINAL_STATE))
        return clf_final

    def after_train(self):
        self.fit_probe()
        CLIPAdaptTrainer.after_train(self)

    @torch.no_grad()
    def logits_from_features(self, feats, alpha=None, beta=None):
        """The probe's decision values (float64; argmax = scikit-learn's predict)."""
        if self.probe is None:
            raise RuntimeError("LinearProbe: no fitted probe (train first, or --eval-only --model-dir a run folder)")
        p = self.probe
        if list(p["classnames"]) != self.classnames:
            raise ValueError(f"LinearProbe: the probe was fitted on {len(p['classnames'])} other classes; it can "
                             f"only classify the classes it was fitted on")
        return probe_logits(feats, p["coef"], p["intercept"], p["classes"], len(self.classnames))

    def write_results(self, **extra):
        shots = self.probe.get("num_shots") if self.probe else self.cfg.DATASET.NUM_SHOTS
        CLIPAdaptTrainer.write_results(self, c=self.probe["c"] if self.probe else None, num_shots=shots,
                                       val_accuracy=self.search["val_accuracy"] if self.search else None, **extra)

    def load_model(self, directory, epoch=None):
        final = osp.join(directory, FINAL_STATE) if directory else ""
        if not final or not osp.exists(final):
            raise FileNotFoundError(f"LinearProbe: no fitted probe {final or FINAL_STATE} (give --model-dir a "
                                    f"LinearProbe run folder)")
        self.probe = ckpt.load(final)
        print(f"LinearProbe: loaded the probe (C = {self.probe['c']:.6g}) from {final}")

    def extra_state(self):
        return {}

    def load_extra_state(self, state):
        pass
