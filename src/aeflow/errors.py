"""Errors the user can act on. Each message names the problem and the fix."""


class AeflowError(Exception):
    """Base class for errors reported to the user without a traceback."""


class ConfigError(AeflowError):
    """The composed config is invalid (unknown key, wrong type, impossible value)."""


class DataError(AeflowError):
    """Data files are missing, corrupt, or could not be fetched from any source."""


class TrackingError(AeflowError):
    """The MLflow tracking store cannot be reached or used."""


class TrainingError(AeflowError):
    """Training diverged or could not finish."""
