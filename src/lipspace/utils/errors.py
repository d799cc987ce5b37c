"""The one exception type users see: a message naming the file, what is wrong and how to fix it."""


class LipspaceError(Exception):
    """A user-facing error. CLI entry points print its message on one line and exit with status 2."""
