"""The errors finerank raises: one base class, a few subclasses callers catch by kind."""


class FinerankError(Exception):
    """Base class of every error finerank raises on purpose."""


class CorpusError(FinerankError, ValueError):
    """A corpus, query or judgement file that cannot be read; names the file and line."""

    def __init__(self, message: str, path: object = None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        where = "" if path is None else f"{path}:{line}: " if line else f"{path}: "
        super().__init__(f"{where}{message}")


class IndexFormatError(FinerankError, ValueError):
    """An index folder that is missing, corrupt, or of another format version."""


class ModelError(FinerankError, ValueError):
    """A model that cannot be found or loaded (not a model directory, unknown name, download failed)."""


class InputTooLongError(FinerankError, ValueError):
    """A request larger than the limits allow (a query longer than the model's max_length, ...)."""

    def __init__(self, message: str, field: str | None = None):
        self.field = field
        super().__init__(message)


class NotFoundError(FinerankError, LookupError):
    """Something named in a request does not exist: a model name, a document id, a served index."""

    def __init__(self, message: str, field: str | None = None):
        self.field = field
        super().__init__(message)


class MissingDependencyError(FinerankError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, package: str, extra: str):
        super().__init__(f"{package} is not installed: pip install 'finerank[{extra}]'")
