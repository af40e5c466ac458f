"""The Dassl edge: a `TrainerX` base class every trainer of this project subclasses.

What it changes in Dassl's behaviour, so our trainers work on current torch without patching Dassl
(DESIGN.md, "The Dassl edge"):
- LR schedules are torch's own (clip_adapt/optim.py), built by `register_trainable`.
- Checkpoints hold state dicts only and are loaded with torch's default `weights_only=True`.
- A run's identity is its resolved config and its backbone's sha256, recorded in `run.json` at its start; a
  folder holding another run is never resumed or overwritten (RunIdentityError naming each differing key).
- A checkpoint (models, optimisers, schedulers, RNG states, `extra_state()`) is written after EVERY epoch in an
  order that survives a kill at any moment (`save_model`), so an interrupted run resumes from its output folder at
  the last complete epoch. `TRAIN.CHECKPOINT_FREQ` only decides which older epoch files are kept.
- Schedulers are stepped once per epoch: by the trainer's own `self.update_lr()` call at the last batch (CoOp
  style) or, if it did not call it, by `after_epoch`.
- The final test uses the last-epoch model (no model selection on test labels) and writes `results.json`
  beside log.txt; CoOp's log lines (`Finish training`, `=> result`, `* accuracy: X%`) are kept.
- A non-finite loss, non-finite trainable parameters after an optimiser step, or non-finite test logits stop
  the run with an error naming the epoch and the batch; no result is written.
- Generic config values (TRAINER.PREC, OPTIM.NAME, ...) are checked before anything is built (ConfigError).
- Every data loader reads images through `CheckedDatasetWrapper`: an unreadable image (corrupt, truncated,
  vanished) is a DatasetError naming its path instead of a bare PIL error.
- Data-parallel under torchrun (clip_adapt/distributed.py, docs/DISTRIBUTED.md): the config's training batch is the
  global batch (an indivisible one is a ConfigError naming both numbers); gradients are summed over processes
  before every optimiser step; evaluation is sharded by batches and gathered; only rank 0 writes run.json, logs,
  tensorboard, checkpoints and results.json. With one process nothing of this changes a number.
"""
import contextlib
import datetime
import glob
import json
import math
import os
import os.path as osp
import re
import time

import torch
from tqdm import tqdm
from dassl.data.data_manager import DataManager, DatasetWrapper, build_data_loader
from dassl.engine import TrainerX

from clip_adapt import checkpoint as ckpt
from clip_adapt import distributed
from clip_adapt.atomic import write_text
from clip_adapt.checkpoint import CheckpointWriteError, ConfigError, ResumeError, RunIdentityError
from clip_adapt.cache import FeatureCache
from clip_adapt.data.errors import ImageReadError
from clip_adapt.engine.backbone import apply_backbone_preprocessing
from clip_adapt.clip_loader import (PRECISIONS, checkpoint_fingerprint, load_clip, resolve_checkpoint,
                                    resolve_precision)
from clip_adapt.optim import OPTIMIZERS, SCHEDULERS, build_optimizer, build_scheduler
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
            raise ImageReadError(f"unreadable image {path}: {type(e).__name__}: {e}", path) from e


# Generic config values every trainer of this project reads: key -> allowed values (compared in lower case).
CFG_CHOICES = {
    "TRAINER.PREC": PRECISIONS,
    "OPTIM.NAME": OPTIMIZERS,
    "OPTIM.LR_SCHEDULER": SCHEDULERS,
    "OPTIM.WARMUP_TYPE": ("constant", "linear"),
    "TEST.SPLIT": ("val", "test"),
    "TEST.FINAL_MODEL": ("last_step",),  # the last-epoch model is tested (no model selection)
    "DATASET.SUBSAMPLE_CLASSES": ("all", "base", "new"),
}
PLAIN_NAME_KEYS = ("DATASET.NAME", "TRAINER.NAME")  # registry names, also used in file and folder names


def is_plain_name(name):
    """A plain name: letters, digits, `_`, `.`, `-`, and no `..` (cannot point outside a folder)."""
    return bool(re.fullmatch(r"[A-Za-z0-9_.-]+", str(name))) and ".." not in str(name)


def check_generic_cfg(cfg, min_epochs=1):
    """Raise ConfigError naming the key, the value and what is allowed, for the config values shared by every
    trainer (CFG_CHOICES, plain names, a finite positive OPTIM.LR, OPTIM.MAX_EPOCH >= min_epochs: the trainer's
    MIN_EPOCHS, 0 for training-free ones). Called by train.py after the merge and by CLIPAdaptTrainer before
    anything is built."""
    def get(key):
        node = cfg
        for part in key.split("."):
            node = node[part]
        return node

    for key, allowed in CFG_CHOICES.items():
        value = get(key)
        if str(value).lower() not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")
    for key in PLAIN_NAME_KEYS:
        value = get(key)
        if value and not is_plain_name(value):
            raise ConfigError(f"{key} must be a plain name ([A-Za-z0-9_.-]+, no '..'); got {value!r}")
    lr = cfg.OPTIM.LR
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"OPTIM.LR must be a finite number > 0; got {lr!r}")
    if int(cfg.OPTIM.MAX_EPOCH) < min_epochs:
        raise ConfigError(f"OPTIM.MAX_EPOCH must be >= {min_epochs}; got {cfg.OPTIM.MAX_EPOCH!r}")


def check_output_folder(directory, identity, what="run"):
    """`directory` holds no run, or this very run (same config and backbone, see clip_adapt.checkpoint.run_identity);
    else RunIdentityError naming each differing key, old -> new, and how to start this run fresh."""
    ckpt.check_identity(directory, identity, what)
    if ckpt.read_identity(directory) is None:
        found = [f for f in (TRAINER_STATE, RESULTS) if osp.exists(osp.join(directory, f))]
        if found:
            raise RunIdentityError(
                f"{directory} holds {' and '.join(found)} but no {ckpt.RUN_FILE} recording the config and "
                f"backbone they were made with, so it cannot be verified to be this run. To run this config, "
                + ckpt.FORCE_FRESH_HINT.format(folder=directory))


def default_feature_cache_dir():
    return os.environ.get("CLIP_ADAPT_CACHE") or osp.join(osp.expanduser("~"), ".cache", "clip_adapt")


class CLIPAdaptTrainer(TrainerX):
    """Base trainer: CLIP loading, torch-native schedules, weights_only checkpoints, exact resume."""

    MIN_EPOCHS = 1  # the smallest OPTIM.MAX_EPOCH a trainer accepts (0: training-free, e.g. TipAdapter)
    DATA_PARALLEL = True  # runs under torchrun with several processes (False: one process only)

    def __init__(self, cfg):
        self._save_filters = {}
        self._lr_stepped_epoch = -1
        self.backbone_id = None
        self.precision = "fp32"
        self.last_result = None
        check_generic_cfg(cfg, self.MIN_EPOCHS)
        if distributed.world_size() > 1 and not self.DATA_PARALLEL:
            raise ConfigError(f"TRAINER.NAME {cfg.TRAINER.NAME} runs in one process only, not data-parallel "
                              f"({distributed.world_size()} processes): run it without torchrun (NPROC unset or 1)")
        try:  # a trainer's own checks (Dassl calls check_cfg again): a bad value is a ConfigError
            self.check_cfg(cfg)
            for key, value in self.global_batches(cfg).items():
                distributed.per_rank_batch(value, key)
        except ConfigError:
            raise
        except ValueError as e:
            raise ConfigError(str(e)) from e
        super().__init__(cfg)

    def global_batches(self, cfg):
        """{config key: value} of the training batches, which are global batches (split over the processes)."""
        return {"DATALOADER.TRAIN_X.BATCH_SIZE": cfg.DATALOADER.TRAIN_X.BATCH_SIZE}

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
        print(f"Loading CLIP {bb.NAME} ({path}, sha256 {self.backbone_id.rsplit(':', 1)[-1][:12]}) in {self.precision}")
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
        names = {id(p): n for n, p in module.named_parameters()}
        optim.register_step_post_hook(lambda opt, args, kwargs: self.check_finite_params(name, opt, names))
        self.register_model(name, module, optim, sched)
        return optim, sched

    def extra_state(self):
        """Non-module state a resume must restore (e.g. pseudo-label statistics). Override in trainers."""
        return {}

    def load_extra_state(self, state):
        """Restore what `extra_state()` returned. Override in trainers."""

    # ---- non-finite checks: no result from a broken state ---------------------------------------------
    def _where(self):
        batch = getattr(self, "batch_idx", 0) + 1
        return f"epoch {self.epoch + 1}/{self.max_epoch}, batch {batch}/{getattr(self, 'num_batches', '?')}"

    def _stopping(self):
        return f"stopping; no result is written (the last complete checkpoint is kept in {self.output_dir})"

    def check_loss(self, loss):
        if not torch.isfinite(loss).all():
            raise FloatingPointError(
                f"non-finite loss ({loss.detach().float().cpu().tolist()}) at {self._where()}; {self._stopping()}")

    def check_finite_params(self, name, optim, param_names=None):
        """After every optimiser step (a hook register_trainable installs): its parameters must be finite."""
        params = [p for group in optim.param_groups for p in group["params"]]
        # the max-abs norm is finite iff every entry is (no overflow, unlike a 2-norm); one sync per step
        if not params or bool(torch.isfinite(torch.stack(torch._foreach_norm(params, float("inf")))).all()):
            return
        bad = next(p for p in params if not torch.isfinite(p).all())
        pname = (param_names or {}).get(id(bad), f"a {tuple(bad.shape)} tensor")
        raise FloatingPointError(f"non-finite trainable parameters ({pname} of {name!r}) after the optimiser step "
                                 f"at {self._where()}; {self._stopping()}")

    def check_logits(self, logits, split, batch):
        """Every evaluation batch's logits must be finite (called on each test batch)."""
        if not torch.isfinite(logits).all():
            raise FloatingPointError(
                f"non-finite logits in the evaluation on the {split} split, batch {batch} (model after epoch "
                f"{self.epoch + 1}/{self.max_epoch}); stopping; no result is written")

    def optimizer_step(self, loss, optim, scaler=None):
        """Check the loss, then backward and step `optim` (through the AMP GradScaler `scaler` when given); the
        gradients are summed over processes first (data-parallel)."""
        self.check_loss(loss)
        optim.zero_grad(set_to_none=True)
        if loss.requires_grad:
            (loss if scaler is None else scaler.scale(loss)).backward()
        distributed.all_reduce_grads(_params(optim))
        if scaler is None:
            optim.step()
        else:
            scaler.step(optim)
            scaler.update()

    def detect_anomaly(self, loss):  # Dassl's model_backward calls this
        self.check_loss(loss)

    def model_backward(self, loss):
        """Dassl's backward; a loss without a graph (data-parallel: no sample of this process took part) adds no
        gradient."""
        self.detect_anomaly(loss)
        if loss.requires_grad:
            loss.backward()

    def model_update(self, names=None):
        """Dassl's optimiser steps, after the gradients are summed over processes (data-parallel)."""
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                distributed.all_reduce_grads(_params(self._optims[name]))
        super().model_update(names)

    def run_epoch(self):
        """Dassl's epoch, after the epoch is set on the training loader's sampler and seeded dataset."""
        loader = self.train_loader_x
        if hasattr(getattr(loader, "batch_sampler", None), "set_epoch"):
            loader.batch_sampler.set_epoch(self.epoch)
        if isinstance(getattr(loader, "dataset", None), distributed.SeededItems):
            loader.dataset.epoch = self.epoch
        super().run_epoch()

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
        """Save epoch `epoch + 1`, crash-safe: a kill at any moment leaves a folder that resumes exactly.

        1. every registered model as `<dir>/<name>/model.pth.tar-<n>` (each written atomically, durable);
        2. the commit: `<dir>/trainer_state.pth.tar` naming epoch n (RNG states, `extra_state()`), written only
           once all of epoch n's model files are on disk -- resume reads the epoch from it;
        3. Dassl's `<dir>/<name>/checkpoint` pointer; 4. older epoch files (unless kept by TRAIN.CHECKPOINT_FREQ)
           and leftovers of interrupted writes are removed, never before their successor is committed.
        A failed write (full disk) is a CheckpointWriteError naming the file; the previous epoch stays intact.
        """
        n_epoch = epoch + 1
        if not distributed.is_main():  # every process holds the same weights; rank 0 writes them
            return
        target = None
        try:
            fnames = {}
            for name in self.get_model_names():
                optim, sched = self._optims[name], self._scheds[name]
                state = {
                    "state_dict": self._model_state(name),
                    "epoch": n_epoch,
                    "optimizer": optim.state_dict() if optim is not None else None,
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "val_result": val_result,
                }
                fnames[name] = model_name or f"model.pth.tar-{n_epoch}"
                target = osp.join(directory, name, fnames[name])
                ckpt.save(state, target)
            if model_name:  # a named extra checkpoint is not a resume point
                return
            target = osp.join(directory, TRAINER_STATE)
            ckpt.save({"epoch": n_epoch, "rng": ckpt.rng_state(), "extra": self.extra_state()}, target)
            for name, fname in fnames.items():
                target = osp.join(directory, name, "checkpoint")
                write_text(target, fname + "\n")
        except OSError as e:
            raise CheckpointWriteError(
                f"cannot write {target}: {e.strerror or e}; the last complete checkpoint (epoch {n_epoch - 1}) in "
                f"{directory} is intact: fix this (e.g. free disk space) and rerun the same command to resume"
            ) from e
        self._prune_checkpoints(directory, n_epoch)

    def _prune_checkpoints(self, directory, n_epoch):
        """Remove model files of epochs before `n_epoch` (except every TRAIN.CHECKPOINT_FREQ-th) and temporary
        files of interrupted writes; only called after epoch `n_epoch` is committed."""
        freq = self.cfg.TRAIN.CHECKPOINT_FREQ
        leftovers = glob.glob(osp.join(directory, TRAINER_STATE + ".*.part"))
        for name in self.get_model_names():
            folder = osp.join(directory, name)
            leftovers += glob.glob(osp.join(folder, "*.part"))
            for path in glob.glob(osp.join(folder, "model.pth.tar-*")):
                tail = path.rsplit("-", 1)[1]
                if tail.isdigit() and int(tail) < n_epoch and not (freq > 0 and int(tail) % freq == 0):
                    leftovers.append(path)
        for path in leftovers:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)

    def run_identity(self, **mode):
        """This run's identity (clip_adapt.checkpoint.run_identity): resolved config + backbone sha256 [+ mode]."""
        return ckpt.run_identity(self.cfg, self.backbone_id, **mode)

    def begin_run(self, **mode):
        """Check OUTPUT_DIR holds no other run, then record this run's identity there (`run.json`).

        Called at the start of training (`before_train`) and by train.py before an evaluation (mode: eval_only,
        model_dir, load_epoch)."""
        identity = self.run_identity(**mode)
        check_output_folder(self.output_dir, identity)
        if not distributed.is_main():
            return
        try:
            ckpt.record_identity(self.output_dir, identity)
        except OSError as e:
            raise CheckpointWriteError(f"cannot write {osp.join(self.output_dir, ckpt.RUN_FILE)}: "
                                       f"{e.strerror or e}") from e

    def before_train(self):
        self.begin_run()
        super().before_train()

    def init_writer(self, log_dir):
        """Tensorboard on rank 0 only (write_scalar is a no-op without a writer)."""
        if distributed.is_main():
            super().init_writer(log_dir)

    def resume_model_if_exist(self, directory):
        """Resume from the epoch `<dir>/trainer_state.pth.tar` names, after checking the folder was made by this
        very run (same config and backbone, see begin_run); an unreadable or incomplete checkpoint is a
        ResumeError naming the file."""
        state_file = osp.join(directory, TRAINER_STATE)
        if not osp.exists(state_file):
            print("No checkpoint found, train from scratch")
            return 0
        check_output_folder(directory, self.run_identity(), "checkpoint")
        fresh = (f"to start fresh, delete {directory} or write this run elsewhere (scripts: OUTPUT=<another folder>;"
                 f" train.py: --output-dir <another folder>)")
        try:
            state = ckpt.load(state_file)
            epoch = int(state["epoch"])
            for name in self.get_model_names():
                path = osp.join(directory, name, f"model.pth.tar-{epoch}")
                if not osp.exists(path):
                    raise ResumeError(f"the checkpoint of epoch {epoch} in {directory} is incomplete: {path} is "
                                      f"missing; {fresh}")
                saved = ckpt.load(path, map_location=self.device)
                self._load_model_state(name, saved["state_dict"])
                if self._optims[name] is not None and saved["optimizer"] is not None:
                    self._optims[name].load_state_dict(saved["optimizer"])
                if self._scheds[name] is not None and saved["scheduler"] is not None:
                    self._scheds[name].load_state_dict(saved["scheduler"])
            self.load_extra_state(state.get("extra", {}))
            ckpt.set_rng_state(state["rng"])
        except ResumeError:
            raise
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:
            raise ResumeError(f"cannot resume from {directory}: {e}; {fresh}") from e
        print(f"Found checkpoint at {directory} (will resume training from epoch {epoch + 1})")
        return epoch

    def load_model(self, directory, epoch=None):
        """Load registered models (and the trainer's extra state) for --eval-only; last epoch by default."""
        if not directory:
            if self.get_model_names():
                print("Note: no --model-dir given; evaluating the model as built")
            return
        state_file = osp.join(directory, TRAINER_STATE)
        try:
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
        except (OSError, RuntimeError) as e:
            raise ResumeError(f"cannot load the model to evaluate from {directory} (--model-dir): {e}") from e

    # ---- train / test ---------------------------------------------------------------------------------
    @torch.no_grad()
    def test(self, split=None):
        """Dassl's test loop, every batch's logits checked to be finite (check_logits). Data-parallel, each
        process runs every N-th batch of the 1-process loader and the outputs are gathered back into their order
        before the evaluator sees them, so the accuracy is the 1-process one exactly."""
        self.set_model_mode("eval")
        self.evaluator.reset()
        split = split or self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            loader = self.val_loader
        else:
            split, loader = "test", self.test_loader  # Dassl's rule: no val loader -> test
        print(f"Evaluate on the *{split}* set")
        outputs, labels = [], []
        for batch in tqdm(distributed.shard_batches(loader)):
            input, label = self.parse_batch_test(batch)
            outputs.append(self.model_inference(input))
            labels.append(label)
        outputs, labels = distributed.gather_batches(outputs, labels)
        evaluator = _FiniteLogits(self.evaluator, self, split)
        for output, label in zip(outputs, labels):
            evaluator.process(output, label)
        results = self.evaluator.evaluate()
        for k, v in results.items():
            self.write_scalar(f"{split}/{k}", v, self.epoch)
        result = list(results.values())[0]
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
        if self.last_result is None or not math.isfinite(self.last_result):
            raise FloatingPointError(f"no finite test accuracy to write (got {self.last_result}); no result is written")
        if distributed.world_size() > 1:
            data["processes"] = distributed.world_size()
        if not distributed.is_main():
            return
        path = osp.join(self.output_dir, RESULTS)
        try:
            write_text(path, json.dumps(data, indent=2))
        except OSError as e:
            raise CheckpointWriteError(f"cannot write {path}: {e.strerror or e}; rerun the same command to "
                                       f"write it (the checkpoints are intact)") from e


def _params(optim):
    return [p for group in optim.param_groups for p in group["params"]]


class _FiniteLogits:
    """Wraps Dassl's evaluator during `test`: each batch's output goes through trainer.check_logits first."""

    def __init__(self, evaluator, trainer, split):
        self._evaluator, self._trainer, self._split, self._batch = evaluator, trainer, split, 0

    def process(self, output, label):
        self._batch += 1
        self._trainer.check_logits(output, self._split, self._batch)
        return self._evaluator.process(output, label)

    def __getattr__(self, name):
        return getattr(self._evaluator, name)
