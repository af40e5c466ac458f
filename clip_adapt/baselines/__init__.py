"""Prior methods run in this project's harness as baselines (docs/BASELINES.md): their math, pure torch/numpy."""
from ..checkpoint import ConfigError


class BaselineConfigError(ConfigError):
    """A TRAINER.TIPADAPTER / LP / SELFTRAINING / DPA value (or another key a baseline reads) is invalid; the
    message names the key and the value."""
