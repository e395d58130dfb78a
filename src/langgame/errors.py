"""User-facing errors: the CLI prints their message on one line and exits with status 2."""


class LanggameError(Exception):
    """Bad input or state a user can fix; the message names the file, line or key."""
