"""Errors that the stages raise for bad input, each naming the input and the problem."""


class InputError(Exception):
    """Raw input that cannot be used: the message names the file (and line, where there is one)."""
