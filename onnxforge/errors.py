"""Errors users see: each names where the problem is and what was expected."""


class RecipeError(ValueError):
    """Bad input, found before any work starts: the message names the file and the field."""


class StageError(RuntimeError):
    """A stage failed mid-run: the message names the stage, the variant and the provider."""

    def __init__(self, stage: str, reason: str, variant: str = "-", provider: str = "-") -> None:
        self.stage, self.variant, self.provider, self.reason = stage, variant, provider, reason
        super().__init__(f"stage {stage} failed (variant {variant}, provider {provider}): {reason}")


class OnnxforgeError(Exception):
    """Base of the errors below: refusals that users see as one line."""


class IntegrityError(OnnxforgeError):
    """A registered file does not match the sha256 its version records (or nothing is recorded)."""


class Sha256Mismatch(IntegrityError):
    """The file exists and its version records a sha256, and they differ: the file was changed."""


class RefusedError(OnnxforgeError):
    """A registry operation was refused: what is missing or unsafe is named in one line."""


class UsageError(OnnxforgeError, ValueError):
    """A malformed argument (reference, provider, alias name): the message says what was expected."""
