"""One exception hierarchy for the whole toolkit.

Every message says what was wrong, where, and what to do about it. Every class subclasses
``ValueError`` or ``RuntimeError`` (as tinker-cookbook's do), so ``pytest.raises(ValueError)`` written
against upstream behaviour keeps working.
"""

from __future__ import annotations


class CookbookError(Exception):
    """Base class of every error raised on purpose by cookbook."""


class ConfigurationError(CookbookError, ValueError):
    """A setting, name or argument is invalid (unknown model, unknown renderer, bad option)."""


class RendererError(CookbookError, ValueError):
    """A conversation cannot be rendered or parsed by this renderer."""


class DataError(CookbookError, ValueError):
    """Input data is malformed: wrong shapes, lengths, dtypes, NaN/inf, bad JSON."""


class LossInputError(DataError):
    """Inputs to a loss function are inconsistent or missing."""


class SpecError(CookbookError, ValueError):
    """A spec or golden file is malformed."""


class ProvisioningError(CookbookError, RuntimeError):
    """Tokenizer provisioning failed (download, hash mismatch, missing tool)."""


class TokenizerNotAvailable(ProvisioningError):
    """A tokenizer is not in the cache and cannot be fetched right now."""


class TrainingError(CookbookError, RuntimeError):
    """A training loop failed (e.g. every rollout worker crashed)."""
