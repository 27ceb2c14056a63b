"""The one exception type users see: a one-line message naming the problem and the fix."""


class UserError(Exception):
    """A problem the user can fix (bad input, missing data, no Java, ...).

    The CLI prints ``error: <message>`` on one line and exits with status 2.
    """


class DMLError(UserError):
    """A DML script failed inside SystemDS (which itself exits 0 in that case)."""
