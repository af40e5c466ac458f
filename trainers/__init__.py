"""CoOp-style trainer files: each one registers a trainer of the installed `clip_adapt` package with Dassl.

Copy any of them into a CoOp checkout's trainers/ folder (docs/COOP.md), or register all of
them with one line, `import clip_adapt.plugin`. The trainers themselves live in clip_adapt/engine/.
"""
