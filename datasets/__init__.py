"""CoOp-style dataset files: each registers one dataset of the installed `clip_adapt` package with Dassl (the
class and its loader live in clip_adapt/engine/datasets.py and clip_adapt/data/). Registry names are
clip_adapt.prompts.DATASET_CLASSES; `import clip_adapt.plugin` registers all of them at once.
"""
