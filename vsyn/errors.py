"""One exception type for every user-facing failure, so the CLI can print one clear line instead of a traceback."""


class VsynError(Exception):
    """A problem the user can fix (bad config key, missing file, unreadable image, ...)."""
