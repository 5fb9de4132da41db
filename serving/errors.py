"""Errors raised by serving."""


class ServingError(Exception):
    """A model server could not be started, reached or stopped."""
