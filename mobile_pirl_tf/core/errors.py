"""The one error type the tools turn into a one-line message (free of TensorFlow)."""


class UsageError(ValueError):
    """A bad flag, path or data set: the message is one actionable line for the user."""
