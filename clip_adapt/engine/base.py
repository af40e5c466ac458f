"""The Dassl edge: a `TrainerX` base class every trainer of this project subclasses.

What it changes in Dassl's behaviour, so our trainers work on current torch without patching Dassl
(DESIGN.md, "The Dassl edge"):
- LR schedules are torch's own (clip_adapt/optim.py), built by `register_trainable`.
- Checkpoints hold state dicts only and are loaded with torch's default `weights_only=True`.
- A checkpoint (models, optimisers, schedulers, RNG states, `extra_state()`) is written atomically after EVERY
  epoch, so an interrupted run resumes from its output folder at the last finished epoch. `TRAIN.CHECKPOINT_FREQ`
  only decides which older epoch files are kept.
- Schedulers are stepped once per epoch: by the trainer's own `self.update_lr()` call at the last batch (CoOp
  style) or, if it did not call it, by `after_epoch`.
- The final test uses the last-epoch model (no model selection on test labels) and writes `results.json`
  beside log.txt; CoOp's log lines (`Finish training`, `=> result`, `* accuracy: X%`) are kept.
- A non-finite loss stops the run with an error naming the epoch and the batch.
- Every data loader reads images through `CheckedDatasetWrapper`: an unreadable image (corrupt, truncated,
  vanished) is a DatasetError naming its path instead of a bare PIL error.
"""
import contextlib
import datetime
import json
import os
import os.path as osp
import time

import torch
from dassl.data.data_manager import DataManager, DatasetWrapper, build_data_loader
from dassl.engine import TrainerX

from clip_adapt import checkpoint as ckpt
from clip_adapt.cache import FeatureCache
from clip_adapt.data.errors import DatasetError
from clip_adapt.engine.backbone import apply_backbone_preprocessing
from clip_adapt.clip_loader import checkpoint_fingerprint, load_clip, resolve_checkpoint, resolve_precision
from clip_adapt.optim import build_optimizer, build_scheduler
from clip_adapt.prompts import short_name

TRAINER_STATE = "trainer_state.pth.tar"
RESULTS = "results.json"


class CheckedDatasetWrapper(DatasetWrapper):
    """Dassl's DatasetWrapper whose failures to read an image are a DatasetError naming the image's path.
    Pass it as `dataset_wrapper=` to Dassl's DataManager / build_data_loader (CLIPAdaptTrainer does)."""

    def __getitem__(self, idx):
        try:
            return super().__getitem__(idx)
        except (OSError, ValueError, SyntaxError) as e:  # PIL raises these for unreadable files
            path = self.data_source[idx].impath
            raise DatasetError(f"unreadable image {path}: {type(e).__name__}: {e}", path) from e


def default_feature_cache_dir():
    return os.environ.get("CLIP_ADAPT_CACHE") or osp.join(osp.expanduser("~"), ".cache", "clip_adapt")


class CLIPAdaptTrainer(TrainerX):
    """Base trainer: CLIP loading, torch-native schedules, weights_only checkpoints, exact resume."""

    def __init__(self, cfg):
        self._save_filters = {}
        self._lr_stepped_epoch = -1
        self.backbone_id = None
        self.precision = "fp32"
        self.last_result = None
        super().__init__(cfg)

    def build_data_loader(self):
        """Dassl's data attributes, with images read through CheckedDatasetWrapper (errors name the image)."""
        apply_backbone_preprocessing(self.cfg)  # an open_clip model's own preprocessing (engine/backbone.py)
        dm = DataManager(self.cfg, dataset_wrapper=CheckedDatasetWrapper)
        self.train_loader_x, self.train_loader_u = dm.train_loader_x, dm.train_loader_u
        self.val_loader, self.test_loader = dm.val_loader, dm.test_loader
        self.num_classes, self.num_source_domains, self.lab2cname = dm.num_classes, dm.num_source_domains, \
            dm.lab2cname
        self.dm = dm

    def make_loader(self, data_source, sampler_type, batch_size, tfm, is_train=False):
        """One more Dassl loader over `data_source` (a list of Datum), reading images through CheckedDatasetWrapper."""
        return build_data_loader(self.cfg, sampler_type=sampler_type, data_source=data_source, batch_size=batch_size,
                                 tfm=tfm, is_train=is_train, dataset_wrapper=CheckedDatasetWrapper)

    # ---- things every trainer needs -------------------------------------------------------------------
    @property
    def classnames(self):
        return list(self.dm.dataset.classnames)

    @property
    def dataset_short(self):
        return short_name(self.cfg.DATASET.NAME)

    @property
    def feature_cache(self):
        if getattr(self, "_feature_cache", None) is None:
            self._feature_cache = FeatureCache(self.cfg.TRAINER.FEATURE_CACHE_DIR or default_feature_cache_dir())
        return self._feature_cache

    def build_clip(self):
        """CLIP from MODEL.BACKBONE.NAME (name or file) in TRAINER.PREC; sets backbone_id and precision."""
        bb = self.cfg.MODEL.BACKBONE
        path = resolve_checkpoint(bb.NAME, cache_dir=bb.CACHE_DIR or None, download=bb.DOWNLOAD)
        self.backbone_id = checkpoint_fingerprint(path)
        self.precision = resolve_precision(self.cfg.TRAINER.PREC, self.device)
        print(f"Loading CLIP {bb.NAME} ({path}, sha256 {self.backbone_id[:12]}) in {self.precision}")
        return load_clip(path, device=self.device, precision=self.precision)

    def autocast(self):
        """Mixed precision for TRAINER.PREC amp on CUDA; a no-op otherwise."""
        if self.precision == "amp" and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def register_trainable(self, name, module, params=None, optim_cfg=None, max_epoch=None, save="all"):
        """Build an optimiser and a torch-native schedule for `module` and register it with Dassl.

        params: parameters or param groups to optimise (default: those of `module` with requires_grad).
        save: "all" saves the module's whole state dict; "trainable" saves only the parameters that require
        grad (for a frozen CLIP with a few trainable LayerNorms, so checkpoints stay small).
        """
        optim_cfg = optim_cfg or self.cfg.OPTIM
        if params is None:
            params = [p for p in module.parameters() if p.requires_grad]
        optim = build_optimizer(params, optim_cfg)
        sched = build_scheduler(optim, optim_cfg, max_epoch or self.max_epoch)
        if save == "trainable":
            self._save_filters[name] = {n for n, p in module.named_parameters() if p.requires_grad}
        elif save != "all":
            raise ValueError(f"save must be 'all' or 'trainable', got {save!r}")
        self.register_model(name, module, optim, sched)
        return optim, sched

    def extra_state(self):
        """Non-module state a resume must restore (e.g. pseudo-label statistics). Override in trainers."""
        return {}

    def load_extra_state(self, state):
        """Restore what `extra_state()` returned. Override in trainers."""

    # ---- loss checks ----------------------------------------------------------------------------------
    def check_loss(self, loss):
        if not torch.isfinite(loss).all():
            batch = getattr(self, "batch_idx", 0) + 1
            nb = getattr(self, "num_batches", "?")
            raise FloatingPointError(
                f"non-finite loss ({loss.detach().float().cpu().tolist()}) at epoch {self.epoch + 1}/"
                f"{self.max_epoch}, batch {batch}/{nb}; stopping (the last checkpoint is kept in "
                f"{self.output_dir})"
            )

    def detect_anomaly(self, loss):  # Dassl's model_backward calls this
        self.check_loss(loss)

    # ---- LR stepping ----------------------------------------------------------------------------------
    def update_lr(self, names=None):
        super().update_lr(names)
        self._lr_stepped_epoch = self.epoch

    def after_epoch(self):
        if self._lr_stepped_epoch != self.epoch:
            self.update_lr()
        self.save_model(self.epoch, self.output_dir)

    # ---- checkpoints ----------------------------------------------------------------------------------
    def _model_state(self, name):
        state = self._models[name].state_dict()
        keep = self._save_filters.get(name)
        if keep is not None:
            state = {k: v for k, v in state.items() if k in keep}
        return {k.removeprefix("module."): v for k, v in state.items()}

    def _load_model_state(self, name, state):
        model = self._models[name]
        strict = name not in self._save_filters
        missing, unexpected = model.load_state_dict(state, strict=strict)
        if unexpected or (not strict and set(self._save_filters[name]) - set(state)):
            raise RuntimeError(f"checkpoint of {name!r} does not match the model (unexpected: {unexpected[:5]})")

    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        """Save every registered model as `<dir>/<name>/model.pth.tar-<epoch+1>`, then the trainer state.

        The trainer state is written last, so its presence means the model files of that epoch are complete.
        """
        n_epoch = epoch + 1
        freq = self.cfg.TRAIN.CHECKPOINT_FREQ
        for name in self.get_model_names():
            optim, sched = self._optims[name], self._scheds[name]
            state = {
                "state_dict": self._model_state(name),
                "epoch": n_epoch,
                "optimizer": optim.state_dict() if optim is not None else None,
                "scheduler": sched.state_dict() if sched is not None else None,
                "val_result": val_result,
            }
            folder = osp.join(directory, name)
            fname = model_name or f"model.pth.tar-{n_epoch}"
            ckpt.save(state, osp.join(folder, fname))
            with open(osp.join(folder, "checkpoint"), "w") as f:
                f.write(fname + "\n")
            previous = osp.join(folder, f"model.pth.tar-{n_epoch - 1}")
            keep_previous = freq > 0 and (n_epoch - 1) % freq == 0
            if n_epoch > 1 and not keep_previous and osp.exists(previous):
                os.remove(previous)
        ckpt.save({"epoch": n_epoch, "rng": ckpt.rng_state(), "extra": self.extra_state()},
                  osp.join(directory, TRAINER_STATE))

    def resume_model_if_exist(self, directory):
        state_file = osp.join(directory, TRAINER_STATE)
        if not osp.exists(state_file):
            print("No checkpoint found, train from scratch")
            return 0
        state = ckpt.load(state_file)
        epoch = int(state["epoch"])
        for name in self.get_model_names():
            path = osp.join(directory, name, f"model.pth.tar-{epoch}")
            saved = ckpt.load(path, map_location=self.device)
            self._load_model_state(name, saved["state_dict"])
            if self._optims[name] is not None and saved["optimizer"] is not None:
                self._optims[name].load_state_dict(saved["optimizer"])
            if self._scheds[name] is not None and saved["scheduler"] is not None:
                self._scheds[name].load_state_dict(saved["scheduler"])
        self.load_extra_state(state.get("extra", {}))
        ckpt.set_rng_state(state["rng"])
        print(f"Found checkpoint at {directory} (will resume training from epoch {epoch + 1})")
        return epoch

    def load_model(self, directory, epoch=None):
        """Load registered models (and the trainer's extra state) for --eval-only; last epoch by default."""
        if not directory:
            if self.get_model_names():
                print("Note: no --model-dir given; evaluating the model as built")
            return
        state_file = osp.join(directory, TRAINER_STATE)
        if epoch is None and osp.exists(state_file):
            epoch = int(ckpt.load(state_file)["epoch"])
        for name in self.get_model_names():
            if epoch is None:
                pointer = osp.join(directory, name, "checkpoint")
                if not osp.exists(pointer):
                    raise FileNotFoundError(f"no checkpoint of {name!r} in {directory} (missing {pointer})")
                fname = open(pointer).read().strip()
            else:
                fname = f"model.pth.tar-{epoch}"
            path = osp.join(directory, name, fname)
            saved = ckpt.load(path, map_location=self.device)
            print(f"Load {path} to {name} (epoch={saved['epoch']})")
            self._load_model_state(name, saved["state_dict"])
        if osp.exists(state_file):
            self.load_extra_state(ckpt.load(state_file).get("extra", {}))

    # ---- train / test ---------------------------------------------------------------------------------
    def test(self, split=None):
        result = super().test(split)
        self.last_result = float(result)
        return result

    def after_train(self):
        print("Finish training")
        if not self.cfg.TEST.NO_TEST:
            print("Deploy the last-epoch model")
            self.test()
            self.write_results()
        elapsed = str(datetime.timedelta(seconds=round(time.time() - self.time_start)))
        print(f"Elapsed: {elapsed}")
        self.close_writer()

    def write_results(self, **extra):
        """`results.json` beside log.txt: the last test accuracy and what produced it."""
        data = {"accuracy": self.last_result, "trainer": self.cfg.TRAINER.NAME, "dataset": self.cfg.DATASET.NAME,
                "backbone": self.cfg.MODEL.BACKBONE.NAME, "backbone_sha256": self.backbone_id,
                "seed": self.cfg.SEED, "epochs": self.max_epoch, **extra}
        os.makedirs(self.output_dir, exist_ok=True)
        with open(osp.join(self.output_dir, RESULTS), "w") as f:
            json.dump(data, f, indent=2)
