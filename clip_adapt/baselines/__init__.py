"""Prior methods run in this project's harness as baselines (docs/BASELINES.md): their math, pure torch/numpy."""
