"""
Errors a user can fix. Every command-line script turns a UserError into one line on stderr and exit code 2
(cli.main), so a wrong flag, a missing file or an unknown model never ends in a traceback.
"""


class UserError(Exception):
    """A mistake the user can fix; the message names the problem and the fix, in one line."""


def first_line(error, limit=150):
    """The first line of an exception's message (at most `limit` characters), or its type's name when it has none:
    what a one-line error quotes of a library's long message."""
    text = str(error)
    return text.splitlines()[0][:limit] if text.strip() else type(error).__name__
