"""User-facing errors.

A :class:`ConfigError` is raised for anything the user can fix (a bad option, a missing file, an
image of the wrong size). The CLI prints its message as one paragraph and exits non-zero without
a traceback, so the message must say what was wrong and what to do.
"""


class ConfigError(Exception):
    """An error in what the user asked for, with a message meant to be read by them."""
