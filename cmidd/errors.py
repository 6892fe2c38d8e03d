"""Errors that are the user's to fix: reported as one line, without a traceback."""


class UserError(Exception):
    """Bad input or a missing prerequisite; the message names the key, the value and the fix."""


class NonFiniteError(UserError):
    """A loss or the synthetic set became NaN or infinite; the message names the iteration and
    the term, so that its weight or learning rate can be lowered."""
