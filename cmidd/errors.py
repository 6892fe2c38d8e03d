"""Errors that are the user's to fix: reported as one line, without a traceback."""


class UserError(Exception):
    """Bad input or a missing prerequisite; the message names the key, the value and the fix."""
