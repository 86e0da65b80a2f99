"""Exceptions a user can cause; each message says what was wrong and how to fix it."""


class StyleTransferError(ValueError):
    """Bad input or settings for a style-transfer run."""


class WeightsError(StyleTransferError):
    """VGG19 weights that cannot be found, downloaded or read."""


class OutOfMemoryError(StyleTransferError):
    """The run does not fit in the device's memory."""
