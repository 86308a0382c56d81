"""Exceptions raised by vrm-pyro.

Every error a user can cause (a bad data row, an unknown prior name, a checkpoint
for another encoder) is a :class:`VRMError` whose message says what was wrong,
where (file, line, field) and what to do. The CLI prints these messages without a
traceback.
"""

from __future__ import annotations


class VRMError(Exception):
    """Base class for user-facing errors."""


class DataError(VRMError, ValueError):
    """A data file or row is missing, malformed or inconsistent.

    Attributes give the location so that callers can aggregate errors.
    """

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None,
                 field: str | None = None):
        where = ""
        if source is not None:
            where = f"{source}"
            if line is not None:
                where += f":{line}"
            where += ": "
        if field is not None:
            where += f"field '{field}': "
        super().__init__(where + message)
        self.source, self.line, self.field = source, line, field
        self.reason = message


class ConfigError(VRMError, ValueError):
    """An option has a value the library cannot use (unknown name, bad range)."""


class ModelGuideMismatch(VRMError, ValueError):
    """A model and a guide do not declare the same latent sample sites."""


class CheckpointError(VRMError, ValueError):
    """A checkpoint directory is missing, incomplete or made for something else."""


class NumericalError(VRMError, FloatingPointError):
    """A NaN or Inf appeared in the loss, a gradient or a parameter during training."""
