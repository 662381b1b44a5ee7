"""Errors raised by mfdyn for bad input."""


class InputError(ValueError):
    """A bad argument: the message names the argument and the offending value, on one line."""
