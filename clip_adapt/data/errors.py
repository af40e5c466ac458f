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


class ImageReadError(DatasetError):
    """An image cannot be read; the message names its path.

    Raised in a DataLoader worker, torch re-raises it in the main process as `ImageReadError(text)`, the text being
    the worker's whole traceback; the constructor keeps only the original message, so the error stays one line.
    """

    def __init__(self, message, path=None, hint=""):
        marker = f"{type(self).__name__}: "
        if message.startswith("Caught ") and marker in message:  # re-raised from a worker: drop the traceback
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message, path, hint)


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
