"""User-facing errors.

A :class:`ConfigError` is raised for anything the user can fix (a bad option, a missing file, an
image of the wrong size). The CLI prints its message as one paragraph and exits non-zero without
a traceback, so the message must say what was wrong and what to do.
"""


class ConfigError(Exception):
    """An error in what the user asked for, with a message meant to be read by them."""


class RunError(ConfigError):
    """A run that cannot go on for a reason the user can act on (a full disk, a read-only
    directory, a restoration that became NaN), found after work started.

    A subclass of :class:`ConfigError` so the CLI prints it the same way: one paragraph, no
    traceback, a non-zero exit code. Its message says what was kept and how to resume.
    """
