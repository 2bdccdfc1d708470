"""Exceptions with messages meant for users: the CLI prints them as one line, the API as a 4xx body."""


class LsrError(Exception):
    """Base class of every error lsr-engine raises on purpose."""


class IndexFormatError(LsrError):
    """An index folder is missing, partial, corrupted or of another format version."""


class CorpusError(LsrError):
    """A corpus file is unreadable or has a bad record (the message names file and line)."""


class ModelNotFoundError(LsrError):
    """A model name or path cannot be resolved to weights (offline, not installed, wrong path)."""
