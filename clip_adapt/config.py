"""The one place that declares every config key this project adds to Dassl's defaults.

`extend_cfg(cfg)` is called by `train.py` (and by tests) on Dassl's default config before any yaml file is merged,
so an unknown key in a yaml file or on the command line is rejected by yacs with the key's name.
Each trainer reads only its own section (`cfg.TRAINER.<NAME>`) plus the shared keys declared here.
Keys already present are left untouched (inside a CoOp checkout, CoOp's own `extend_cfg` runs too).
Only `yacs` is imported: this module is usable without Dassl.
"""
from yacs.config import CfgNode as CN


def extend_cfg(cfg):
    """Add the project's keys to a Dassl default config (in place) and return it; present keys are kept."""
    _add_missing(cfg, _declared())
    return cfg


def _add_missing(cfg, ours):
    for key, value in ours.items():
        if key not in cfg:
            cfg[key] = value
        elif isinstance(value, CN) and isinstance(cfg[key], CN):
            _add_missing(cfg[key], value)


def _declared():
    """Every key this project declares, with its default."""
    cfg = CN()
    for node in ("MODEL", "TRAINER", "OPTIM", "DATASET"):
        cfg[node] = CN()
    cfg.MODEL.BACKBONE = CN()
    # ---- shared: CLIP backbone and precision -------------------------------------------------------------
    # MODEL.BACKBONE.NAME (Dassl's key) holds a CLIP name ("ViT-B/16") or a path to a local checkpoint.
    cfg.MODEL.BACKBONE.CACHE_DIR = ""  # where named checkpoints live; "" = $CLIP_CACHE_DIR or ~/.cache/clip
    cfg.MODEL.BACKBONE.DOWNLOAD = True  # download a missing named checkpoint (sha256-verified)
    cfg.TRAINER.PREC = "fp16"  # fp16 | fp32 | amp (forced to fp32 on CPU)
    # ---- shared: open_clip backbones (MODEL.BACKBONE.NAME "open_clip:<arch>:<tag or weights file>", docs/OPENCLIP.md)
    cfg.MODEL.BACKBONE.OPENCLIP_PREPROCESS = True  # INPUT.SIZE/PIXEL_MEAN/PIXEL_STD/INTERPOLATION still at Dassl's
    #                                                defaults take the open_clip model's values; False: keep them
    cfg.TRAINER.FEATURE_CACHE_DIR = ""  # on-disk text/image feature caches; "" = $CLIP_ADAPT_CACHE or ~/.cache/clip_adapt

    # ---- shared: optimisation (torch-native schedulers, see clip_adapt/optim.py) ----------------
    cfg.OPTIM.MIN_LR = 0.0  # eta_min of the cosine schedule

    # ---- shared: data ------------------------------------------------------------------------------------
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"  # CoOp's key: all | base | new
    cfg.DATASET.VAL_FRACTION = 0.1  # val carved from train when a dataset has no official val split
    cfg.DATASET.SPLIT_SEED = 0  # seed of that carve (fixed, so the split file never changes)
    cfg.DATASET.ADAPT_SPLIT = ""  # unlabelled split an unsupervised trainer adapts on: train | test | "" (its default)
    cfg.DATASET.DOWNLOAD = False  # datasets: download what has a stable public URL (checksum-verified)
    cfg.DATASET.ALLOW_MISSING = False  # leave out listed-but-absent images (dead Birdsnap URLs), listed in
    #                                    <dataset>/missing_images.txt; False: such an image is an error
    cfg.DATASET.SPLIT_CACHE_DIR = ""  # where split / few-shot / missing-image files are written (and read after the
    #                                   dataset folder); "" = beside the data when writable, else
    #                                   <TRAINER.FEATURE_CACHE_DIR>/splits/ (a read-only DATA is never written)

    # ---- ZSCLIP ------------------------------------------------------------------------------------
    cfg.TRAINER.ZSCLIP = CN()
    # template set (clip_adapt/templates.py): single (CoOp's ZeroshotCLIP) | coop_ensemble (CoOp's ZeroshotCLIP2) |
    # clip (CLIP's per-dataset lists and class names, as ReCLIP uses them) | ensemble (this project's domain ensemble)
    cfg.TRAINER.ZSCLIP.TEMPLATES = "single"

    # ---- FAIR (methods/FAIR.md) --------------------------------------------------------------------------
    cfg.TRAINER.FAIR = CN()
    cfg.TRAINER.FAIR.DESCRIPTIONS = ""  # JSON file {"class": ["sentence", ...]}; "" = per-dataset default
    cfg.TRAINER.FAIR.DESCRIPTIONS_URL = ""  # CuPL-format URL (downloaded once, sha256-checked, cached)
    cfg.TRAINER.FAIR.DESCRIPTIONS_SHA256 = ""
    cfg.TRAINER.FAIR.DESCRIPTIONS_FALLBACK = "error"  # no description file found: error (listing the classes) | template
    cfg.TRAINER.FAIR.MAX_DESCRIPTIONS = 50  # M: at most this many descriptions per class (pad/mask the rest)
    cfg.TRAINER.FAIR.TEMPLATES = "ensemble"  # prompts for the zero-shot (class-name) classifier
    cfg.TRAINER.FAIR.N_CROPS = 8  # N random square crops per image
    cfg.TRAINER.FAIR.CROP_SCALE = (0.5, 0.9)  # crop side ~ U(a, b) x short edge
    cfg.TRAINER.FAIR.TOPK_CROPS = 6  # keep the top-k crops by relevance
    cfg.TRAINER.FAIR.TAU_V = 1.0  # crop-weight temperature
    cfg.TRAINER.FAIR.TAU_T = 7.389056  # description-weight temperature (e^2)
    cfg.TRAINER.FAIR.GAMMA = 0.5  # pseudo-label fusion weight of the zero-shot score
    cfg.TRAINER.FAIR.DIST_ALIGN = False  # DPA-style distribution alignment of pseudo-label probabilities
    cfg.TRAINER.FAIR.DIST_ALIGN_MOMENTUM = 0.999
    cfg.TRAINER.FAIR.MARGIN = "margin"  # ambiguity factor m: none | margin | ratio
    cfg.TRAINER.FAIR.FAIRNESS_WEIGHT = 1.0  # weight of the -mean_c log p_bar_c term
    cfg.TRAINER.FAIR.STUDENT_FUSION = 0.5  # student logits = (1-b) * global + b * LAS
    cfg.TRAINER.FAIR.TEST_CROPS = False  # also use crops at inference
    cfg.TRAINER.FAIR.STRONG_AUG = "randaugment"  # strong view: randaugment | none
    cfg.TRAINER.FAIR.RANDAUGMENT_N = 2
    cfg.TRAINER.FAIR.RANDAUGMENT_M = 10
    cfg.TRAINER.FAIR.STRONG_CROP_SCALE = (0.5, 1.0)  # strong view: RandomResizedCrop area range before RandAugment
    cfg.TRAINER.FAIR.DESCRIPTIONS_DOWNLOAD = True  # fetch the dataset's default description file if not cached
    cfg.TRAINER.FAIR.TRAIN_CLASSIFIER = False  # also train the class-name text classifier of the student
    cfg.TRAINER.FAIR.TEACHER_EMA = 0.0  # 0: pseudo-labels from the current weights; m > 0: from their EMA (momentum m)
    cfg.TRAINER.FAIR.AMBIGUITY_RATIO = 0.5  # logging: a sample is "ambiguous" when p_top2 / p_top1 >= this

    # ---- ReCLIP (methods/RECLIP.md) ----------------------------------------------------------------------
    cfg.TRAINER.RECLIP = CN()
    cfg.TRAINER.RECLIP.TEMPLATES = "clip"  # template set of T (clip_adapt/templates.py); clip = the official code's
    cfg.TRAINER.RECLIP.TEXT_TEMPLATE = "first"  # ReCLIP-T's training template: first (of TEMPLATES, official) | single
    cfg.TRAINER.RECLIP.LOSS_SCALE = "mean"  # ReCLIP-V loss: mean (over agreed samples) | official (that / batch size)
    cfg.TRAINER.RECLIP.CENTROIDS = "images"  # ReCLIP-V centroids: images (assigned images) | nodes (+ anchors, official)
    cfg.TRAINER.RECLIP.RANK = -1  # r: keep singular directions 1..r-1 (-1: D, or 250 when C > 500)
    cfg.TRAINER.RECLIP.KNN = 20  # k of the kNN graph
    cfg.TRAINER.RECLIP.ALPHA = 0.99  # label-propagation alpha
    cfg.TRAINER.RECLIP.CG_ITERS = 20  # conjugate-gradient iterations
    cfg.TRAINER.RECLIP.CHUNK = 4096  # rows per chunk of the top-k similarity search
    cfg.TRAINER.RECLIP.TEXT_LR = 1e-3  # lr of the text branch (the visual branch uses OPTIM.LR)
    cfg.TRAINER.RECLIP.AUTO_EPOCHS = True  # epochs = min(100, N/5000 + 2) instead of OPTIM.MAX_EPOCH

    # ---- DAC (methods/DAC.md) ----------------------------------------------------------------------------
    cfg.TRAINER.DAC = CN()
    cfg.TRAINER.DAC.TEMPLATES = "ensemble"  # prompts of the precomputed class text embeddings W
    cfg.TRAINER.DAC.AUG_PASSES = 10  # A augmentation passes of the few-shot set
    cfg.TRAINER.DAC.SAMPLER = "class_views"  # batches of the contrastive loss: class_views (each image once per epoch as
    #                                           VIEWS distinct cached passes, whole groups of IMAGES_PER_CLASS images
    #                                           of a class together: every anchor has a positive, also at K = 1) |
    #                                           random (shuffled views, EPOCH_VIEWS; anchors may lack a positive)
    cfg.TRAINER.DAC.VIEWS = 2  # class_views: distinct augmentation passes of each image in its batch (2 <= V <= A)
    cfg.TRAINER.DAC.IMAGES_PER_CLASS = 4  # class_views: images of one class kept together in a batch (0 = all K)
    cfg.TRAINER.DAC.EPOCH_VIEWS = "one"  # random sampler: each few-shot image once, as a random one of its A views | all
    cfg.TRAINER.DAC.ADAPTER_RESIDUAL = False  # g(f) = norm(f + s * Lf) instead of norm(Lf)
    cfg.TRAINER.DAC.CONTRAST_TEMP = 0.07  # temperature of the supervised intra-modal contrastive loss
    cfg.TRAINER.DAC.TEXT_MOD = "residual"  # residual (W + gamma*dW) | scale_shift (W*(1+a) + b)
    cfg.TRAINER.DAC.TEXT_GAMMA = 1.0  # gamma of the residual text modulation
    cfg.TRAINER.DAC.INIT_ALPHA = 1.0  # alpha/beta used before the val search has run (e.g. a test mid-training)
    cfg.TRAINER.DAC.INIT_BETA = 1.0
    cfg.TRAINER.DAC.SEARCH_ALPHA = (0.0, 10.0, 21)  # (low, high, steps) of the val grid search
    cfg.TRAINER.DAC.SEARCH_BETA = (0.1, 10.0, 21)
    cfg.TRAINER.DAC.VAL_SHOTS = 4  # val for the search: min(K, VAL_SHOTS) images per class (-1: the whole val split)
    cfg.TRAINER.DAC.BATCH_SIZE = 256  # cached views per step (DATALOADER.TRAIN_X.BATCH_SIZE is not used by DAC)

    # ---- TipAdapter / TipAdapterF (docs/BASELINES.md; Zhang et al., ECCV 2022) ------------------------------------
    cfg.TRAINER.TIPADAPTER = CN()
    cfg.TRAINER.TIPADAPTER.TEMPLATES = "single"  # template set of the zero-shot classifier W (clip_adapt/templates.py)
    cfg.TRAINER.TIPADAPTER.AUG_PASSES = 10  # augmentation passes of the few-shot set averaged into the keys (DAC's)
    cfg.TRAINER.TIPADAPTER.VAL_SHOTS = 4  # val for the search: min(K, VAL_SHOTS) images per class; -1: all of val
    cfg.TRAINER.TIPADAPTER.INIT_ALPHA = 1.0  # alpha while TipAdapterF trains (and before the search has run)
    cfg.TRAINER.TIPADAPTER.INIT_BETA = 1.0  # beta likewise
    cfg.TRAINER.TIPADAPTER.SEARCH_SCALE = (13.0, 13.0)  # (beta, alpha) tops of the search lists (Tip-Adapter's
    #                                                     search_scale); list = 0.1 + i (scale - 0.1) / steps
    cfg.TRAINER.TIPADAPTER.SEARCH_STEP = (200, 20)  # (beta, alpha) list lengths (Tip-Adapter's search_step)
    cfg.TRAINER.TIPADAPTER.BATCH_SIZE = 256  # TipAdapterF: cached views per step

    # ---- LinearProbe (docs/BASELINES.md; CoOp's lpclip) -------------------------------------------------------------
    cfg.TRAINER.LP = CN()
    cfg.TRAINER.LP.C_INIT = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)  # C values of the first scan (lpclip's search_list)
    cfg.TRAINER.LP.SEARCH_STEPS = 8  # rounds of lpclip's log-bisection around the best of the scan (its --num_step)
    cfg.TRAINER.LP.C = -1.0  # > 0: fit with this C and skip the search; -1: search C on val
    cfg.TRAINER.LP.MAX_ITER = 1000  # L-BFGS iterations of scikit-learn's LogisticRegression (lpclip's)
    cfg.TRAINER.LP.VAL_SHOTS = 4  # val for the search: min(K, VAL_SHOTS) images per class (lpclip's); -1: all of val

    # ---- SelfTraining (docs/BASELINES.md; the UPL / POUF / MUST family) ----------------------------------------------
    cfg.TRAINER.SELFTRAINING = CN()
    cfg.TRAINER.SELFTRAINING.TEMPLATES = "ensemble"  # template set of the zero-shot classifier W (templates.py)
    cfg.TRAINER.SELFTRAINING.THRESHOLD = 0.7  # tau: a weak-view prediction is a pseudo-label when its softmax >= tau
    cfg.TRAINER.SELFTRAINING.TEACHER = "zeroshot"  # labels the weak view: zeroshot (frozen CLIP) | current | ema
    cfg.TRAINER.SELFTRAINING.TEACHER_EMA = 0.999  # TEACHER ema: momentum of the teacher's moving average of the student
    cfg.TRAINER.SELFTRAINING.LOSS_MEAN = "batch"  # CE averaged over the batch (FixMatch) | selected (MUST)
    cfg.TRAINER.SELFTRAINING.FAIRNESS_WEIGHT = 0.0  # weight of FAIR's fairness term (MUST's regulariser: 1)
    cfg.TRAINER.SELFTRAINING.STRONG_AUG = "randaugment"  # strong view: randaugment | none (FAIR's views)
    cfg.TRAINER.SELFTRAINING.RANDAUGMENT_N = 2
    cfg.TRAINER.SELFTRAINING.RANDAUGMENT_M = 10
    cfg.TRAINER.SELFTRAINING.STRONG_CROP_SCALE = (0.5, 1.0)  # strong view: RandomResizedCrop area range

    # ---- DPA (docs/BASELINES.md; Ali et al., WACV 2025) -------------------------------------------------------------
    cfg.TRAINER.DPA = CN()
    cfg.TRAINER.DPA.TEMPLATES = "clip"  # template set of the initial text prototypes (DPA: CLIP's per-dataset lists)
    cfg.TRAINER.DPA.ALPHA = 0.5  # a: weight of the image-prototype probabilities in the fused pseudo-labels
    cfg.TRAINER.DPA.ALIGN_WEIGHT = 1.0  # weight of the prototype-alignment cross-entropy (DPA's `align`)
    cfg.TRAINER.DPA.ALIGN_SCALE = 100.0  # logit scale of that alignment, scale * P T^T (DPA's `w`)
    cfg.TRAINER.DPA.FAIRNESS_WEIGHT = 1.0  # weight of -mean_c log mean_b p (DPA's `reg`; FAIR's fairness term)
    cfg.TRAINER.DPA.HISTORY = 32  # batch means of p_t kept for the distribution alignment
    cfg.TRAINER.DPA.STRONG_AUG = "randaugment"  # strong view: randaugment | none (FAIR's views)
    cfg.TRAINER.DPA.RANDAUGMENT_N = 2
    cfg.TRAINER.DPA.RANDAUGMENT_M = 10
    cfg.TRAINER.DPA.STRONG_CROP_SCALE = (0.3, 1.0)  # strong view: RandomResizedCrop area range (DPA's train_crop_min)
    return cfg
