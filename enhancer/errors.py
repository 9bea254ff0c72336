"""User-facing errors: the CLI prints these as one line and exits non-zero."""


class LikenessError(Exception):
    """An error caused by the user's input or environment, with a message fit to show as-is."""

    exit_code = 2


class InputError(LikenessError):
    """Unreadable, corrupt or unsuitable input file."""


class ModelError(LikenessError):
    """Missing, corrupt or incompatible weights or identity files."""
