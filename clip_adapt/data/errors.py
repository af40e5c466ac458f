"""The one error type of the dataset layer: it always names the path at fault (and, where known, how to obtain it)."""
from pathlib import Path


class DatasetError(RuntimeError):
    """A dataset folder, metadata file or image is missing, malformed or unreadable. The message names the path."""

    def __init__(self, message, path=None, hint=""):
        self.path = None if path is None else Path(path)
        self.hint = hint
        super().__init__(message + (f"\n  how to obtain it: {hint}" if hint else ""))

    def with_hint(self, hint):
        """The same error with a 'how to obtain it' line (added by the caller that knows the dataset)."""
        if self.hint or not hint:
            return self
        base = str(self)
        err = DatasetError(base, self.path, hint)
        return err


def require_dir(path, what="dataset folder"):
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"missing {what}: {path}", path)
    return path


def require_file(path, what="metadata file"):
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"missing {what}: {path}", path)
    return path
