"""CoOp-compatible entry point: same flags as CoOp's train.py, plus this project's trainers and datasets.

    python train.py --root DATA --seed 1 --trainer FAIR \
        --dataset-config-file configs/datasets/cub.yaml --config-file configs/trainers/FAIR/vit_b16.yaml \
        --output-dir output/cub/FAIR/vit_b16/seed1 [KEY VALUE ...]

Other Dassl trainers (CoOp, CoCoOp, ...) run through it with `--import MODULE_OR_FILE` (repeatable), e.g.
`--import /path/to/CoOp/train.py` (registers CoOp's trainers and datasets and declares their config keys).

Data-parallel: `torchrun --nproc_per_node N train.py ...` (docs/DISTRIBUTED.md). Only rank 0 prints and writes;
the other ranks' stdout is dropped and their stderr keeps error lines only, prefixed with the rank.
"""
import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

import torch

from clip_adapt.config import extend_cfg


def _import_dassl():
    os.environ.setdefault("OUTDATED_IGNORE", "1")  # wilds (imported by dassl) would check PyPI for a newer version
    try:
        import dassl  # noqa: F401  (pulls wilds, pandas, sklearn, tensorboard; disables logging)
    except ImportError as e:
        _fail(f"Dassl is not installed ({e}). It is not on PyPI: `bash scripts/install.sh` clones and installs it "
                 "(or installs a local checkout: DASSL_SRC=/path/to/Dassl.pytorch bash scripts/install.sh).")
    logging.disable(logging.NOTSET)  # `import dassl` calls logging.disable(logging.WARNING) process-wide


def _fail(message, code=2):
    """One message on stderr, no traceback. Exit code 2: an input error every seed would hit (scripts/common.sh stops
    its seed loop); 1: this run failed."""
    if code != 2 or int(os.environ.get("RANK", "0") or 0) == 0:  # an input error: every rank has it, rank 0 says it
        print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _merge(cfg, source, merge):
    try:
        merge()
    except KeyError as e:
        _fail(f"config error in {source}: {e.args[0] if e.args else e}")
    except (ValueError, AssertionError, TypeError) as e:
        _fail(f"config error in {source}: {e}")


def import_extra(specs):
    """`--import`: modules imported before the config is built, in order; returns their `extend_cfg(cfg)` hooks.

    A spec is a dotted module name, or a .py file: that file is imported under its package path (the folder above
    its outermost package is put first on sys.path, as if the command ran there), so a CoOp checkout's own train.py
    or trainers/coop.py imports its `trainers`, `datasets` and `clip` packages. They run before
    `clip_adapt.plugin`, which then registers only the dataset names still free.
    """
    hooks = []
    for spec in specs or ():
        try:
            if spec.endswith(".py") or os.sep in spec:
                path = Path(spec).resolve()
                if not path.is_file():
                    raise ImportError(f"no such file {path}")
                top, parts = path.parent, [path.stem]
                while (top / "__init__.py").is_file():
                    parts.insert(0, top.name)
                    top = top.parent
                if str(top) in sys.path:
                    sys.path.remove(str(top))
                sys.path.insert(0, str(top))
                module = importlib.import_module(".".join(parts))
                if Path(module.__file__).resolve() != path:
                    raise ImportError(f"module name '{module.__name__}' is already taken by {module.__file__}")
            else:
                module = importlib.import_module(spec)
        except Exception as e:  # noqa: BLE001  (whatever the module raises, reported as one line naming it)
            _fail(f"--import {spec}: {type(e).__name__}: {e}")
        hook = getattr(module, "extend_cfg", None)
        if callable(hook):
            hooks.append((spec, hook))
    return hooks


def setup_cfg(args, hooks=()):
    from dassl.config import get_cfg_default

    cfg = get_cfg_default()
    for spec, hook in hooks:  # the imported modules' own keys first; ours then fill in only what is absent
        _merge(cfg, f"extend_cfg of --import {spec}", lambda h=hook: h(cfg))
    cfg = extend_cfg(cfg)
    for path in (args.dataset_config_file, args.config_file):
        if path:
            _merge(cfg, path, lambda p=path: cfg.merge_from_file(p))
    # command-line flags (CoOp's reset_cfg)
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed:
        cfg.SEED = args.seed
    if args.source_domains:
        cfg.DATASET.SOURCE_DOMAINS = args.source_domains
    if args.target_domains:
        cfg.DATASET.TARGET_DOMAINS = args.target_domains
    if args.transforms:
        cfg.INPUT.TRANSFORMS = args.transforms
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone
    if args.head:
        cfg.MODEL.HEAD.NAME = args.head
    if len(args.opts) % 2:
        _fail(f"config error in command-line opts: expected KEY VALUE pairs, got {args.opts}")
    _merge(cfg, "command-line opts", lambda: cfg.merge_from_list(args.opts))
    if not torch.cuda.is_available():
        cfg.USE_CUDA = False
    cfg.freeze()
    return cfg


def check_cfg(cfg):
    """Values every trainer reads (clip_adapt.engine.base.check_generic_cfg) and the registry names."""
    from dassl.data.datasets import DATASET_REGISTRY
    from dassl.engine import TRAINER_REGISTRY

    from clip_adapt.engine.base import check_generic_cfg

    trainer = TRAINER_REGISTRY._obj_map.get(cfg.TRAINER.NAME)
    check_generic_cfg(cfg, getattr(trainer, "MIN_EPOCHS", 1))  # training-free trainers accept 0 epochs
    for key, value, registry in (("TRAINER.NAME", cfg.TRAINER.NAME, TRAINER_REGISTRY),
                                 ("DATASET.NAME", cfg.DATASET.NAME, DATASET_REGISTRY)):
        known = sorted(registry._obj_map)
        if value not in known:
            raise _config_error(f"{key}: unknown name {value!r} (registered: {', '.join(known)})")


def _config_error(message):
    from clip_adapt.checkpoint import ConfigError

    return ConfigError(message)


def check_output_dir(cfg, identity):
    """Before anything is written: OUTPUT_DIR must be a folder (or absent) holding no other run. Returns True when
    it holds this very run, finished (the caller skips it). Raises ConfigError / RunIdentityError."""
    from clip_adapt import checkpoint as ckpt
    from clip_adapt.engine.base import check_output_folder
    from tools import runs

    out = cfg.OUTPUT_DIR
    for folder in [out, *[str(p) for p in Path(out).absolute().parents]]:
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise _config_error(f"the output folder {out} (--output-dir / OUTPUT) cannot be made: {folder} is a "
                                f"file")
    if not os.path.isdir(out):
        return False
    check_output_folder(out, identity)
    if not runs.is_finished(out):
        return False
    if ckpt.read_identity(out) is None:
        from clip_adapt.checkpoint import RunIdentityError

        raise RunIdentityError(f"{out} holds a finished run but no {ckpt.RUN_FILE} recording the config and backbone "
                               f"it was made with, so it cannot be verified to be this run. To run this config, "
                               + ckpt.FORCE_FRESH_HINT.format(folder=out))
    return True


def setup_logging(output_dir):
    """Dassl's logger (stdout tee'd to <output_dir>/log.txt), its file made line-buffered so that a killed run's
    log keeps every line printed before the kill."""
    from dassl.utils import setup_logger

    setup_logger(output_dir)
    logger = sys.stdout
    if getattr(logger, "file", None) is not None:
        name = logger.file.name
        logger.file.close()
        logger.file = open(name, "a", buffering=1)
    return logger


def log_only(text):
    """Write to log.txt only (not the terminal): the argument, config and environment dumps, the error line."""
    f = getattr(sys.stdout, "file", None)
    if f is not None:
        f.write(text if text.endswith("\n") else text + "\n")


def _created_dirs(path):
    """`path` and its ancestors that do not exist yet (the ones this run creates), deepest first."""
    created = []
    p = Path(path).absolute()
    while not p.exists():
        created.append(p)
        p = p.parent
    return created


def _remove_failed_folder(created):
    """A folder this run created holding nothing but its log: removed (with the emptied parents it created), so
    no seed folder is left behind that lists as unfinished."""
    if not created or not created[0].is_dir():
        return
    logger = sys.stdout
    if getattr(logger, "file", None) is not None:
        logger.file.close()
        logger.file = None
    entries = list(created[0].iterdir())
    if all(e.is_file() and e.name.startswith("log.txt") for e in entries):
        for e in entries:
            e.unlink()
        for d in created:
            try:
                d.rmdir()
            except OSError:
                break


class _RankStderr:
    """stderr of a rank > 0: progress bars (lines redrawn with '\r') dropped, other lines prefixed with the rank."""

    def __init__(self, stream, rank):
        self.stream, self.prefix = stream, f"[rank {rank}] "

    def write(self, text):
        if "\r" in text or not text.strip():
            return len(text)
        return self.stream.write("".join(self.prefix + line for line in text.splitlines(True)))

    def flush(self):
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _quiet_other_ranks():
    """Under torchrun, ranks > 0 print nothing (rank 0 speaks for the run)."""
    rank = int(os.environ.get("RANK", "0") or 0)
    if rank > 0:
        sys.stdout = open(os.devnull, "w")
        sys.stderr = _RankStderr(sys.stderr, rank)
    return rank


def main(args):
    rank = _quiet_other_ranks()
    try:
        _main(args, rank)
    finally:
        from clip_adapt import distributed

        distributed.shutdown()


def _main(args, rank):
    _import_dassl()
    from dassl.engine import build_trainer
    from dassl.utils import collect_env_info, set_random_seed

    hooks = import_extra(getattr(args, "imports", ()))  # before the config (keys) and our plugin (datasets)
    cfg = setup_cfg(args, hooks)  # a config error is reported before anything heavy is imported

    import clip_adapt.plugin  # noqa: F401  registers our trainers and every dataset
    from clip_adapt import checkpoint as ckpt

    try:
        check_cfg(cfg)
        mode = dict(eval_only=args.eval_only, model_dir=args.model_dir, load_epoch=args.load_epoch)
        identity = ckpt.run_identity(cfg, ckpt.backbone_sha256(cfg.MODEL.BACKBONE.NAME), **mode)
        if check_output_dir(cfg, identity):
            print(f"finished run in {cfg.OUTPUT_DIR} (same config and backbone), skipping")
            return
    except _input_errors() as e:
        _fail(e)
    created = _created_dirs(cfg.OUTPUT_DIR) if rank == 0 else []
    from clip_adapt import distributed

    try:  # under torchrun: join the process group (NCCL on GPUs, gloo on CPU)
        backend = distributed.init_from_env(cfg.USE_CUDA)
    except (RuntimeError, ValueError) as e:
        _fail(f"cannot start the data-parallel run: {e}")
    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    try:
        if rank == 0:  # one log.txt, written by rank 0
            setup_logging(cfg.OUTPUT_DIR)
    except OSError as e:
        _fail(f"cannot write the log in {cfg.OUTPUT_DIR}: {e}")
    if backend:
        print(f"Data-parallel: {distributed.world_size()} processes ({backend}); global batch as configured, "
              f"split over the processes")
    if torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True
    print(f"Log: {os.path.join(cfg.OUTPUT_DIR, 'log.txt')} (the full config is written there)")
    log_only("** Arguments **\n" + "".join(f"{key}: {getattr(args, key)}\n" for key in sorted(vars(args))))
    log_only(f"** Config **\n{cfg}")
    log_only(f"Collecting env info ...\n** System info **\n{collect_env_info()}\n")

    try:
        trainer = build_trainer(cfg)
        if args.eval_only:
            trainer.begin_run(**mode)
            trainer.load_model(args.model_dir, epoch=args.load_epoch)
            trainer.test()
            trainer.write_results(eval_only=True, model_dir=args.model_dir)
            return
        if not args.no_train:
            trainer.train()
    except (_input_errors() + _run_errors()) as e:  # the message names the file, key or value at fault
        log_only(f"ERROR: {e}")  # into log.txt (the terminal gets it once, on stderr)
        code = 2 if isinstance(e, _input_errors()) else 1
        if code == 2:
            _remove_failed_folder(created)
        _fail(e, code)


def _input_errors():
    """Errors about the user's inputs (dataset files, CLIP checkpoint, class descriptions, config values, an output
    folder holding another run): reported as one message naming the file, key or value, without a traceback; every
    seed would hit them (exit code 2)."""
    from clip_adapt.checkpoint import ConfigError, RunIdentityError
    from clip_adapt.clip_loader import CheckpointError
    from clip_adapt.data.errors import DatasetError
    from clip_adapt.fair.descriptions import DescriptionsError

    return DatasetError, CheckpointError, DescriptionsError, ConfigError, RunIdentityError


def _run_errors():
    """Errors of this run, reported as one message (exit code 1): a non-finite loss, parameter or logit (naming
    epoch and batch), an unreadable checkpoint (naming the file), a failed write (full disk; the previous
    checkpoint is intact)."""
    from clip_adapt.checkpoint import ResumeError

    return FloatingPointError, ResumeError, OSError


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=str, default="", help="path to dataset")
    p.add_argument("--output-dir", type=str, default="", help="output directory")
    p.add_argument("--resume", type=str, default="", help="checkpoint directory (from which the training resumes)")
    p.add_argument("--seed", type=int, default=-1, help="only positive value enables a fixed seed")
    p.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    p.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    p.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    p.add_argument("--config-file", type=str, default="", help="path to config file")
    p.add_argument("--dataset-config-file", type=str, default="", help="path to config file for dataset setup")
    p.add_argument("--trainer", type=str, default="", help="name of trainer")
    p.add_argument("--backbone", type=str, default="", help="name of CNN backbone")
    p.add_argument("--head", type=str, default="", help="name of head")
    p.add_argument("--eval-only", action="store_true", help="evaluation only")
    p.add_argument("--model-dir", type=str, default="", help="load model from this directory for eval-only mode")
    p.add_argument("--load-epoch", type=int, help="load model weights at this epoch for evaluation")
    p.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE_OR_FILE",
                   help="also import this module (dotted name or .py file, e.g. a CoOp checkout's train.py) before "
                        "the config is built: it registers its trainers/datasets, and its extend_cfg(cfg), if any, "
                        "declares its config keys (repeatable)")
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="modify config options using the command-line")
    return p


if __name__ == "__main__":
    main(build_parser().parse_args())
