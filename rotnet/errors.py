class RotnetError(Exception):
    """A problem the user can fix; the message says what was wrong and how to fix it."""
