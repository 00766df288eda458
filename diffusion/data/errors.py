"""The one exception the data sets raise for anything a user can fix (missing files, bad arguments)."""
from __future__ import annotations


class DataError(ValueError):
    """A data set cannot be built; the message is one line that names the fix.

    Entry points catch it and print the message instead of a traceback.
    """
