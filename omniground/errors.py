"""The base of every error a user can cause and fix (bad file, bad flag, missing model).

The CLI shows these as one line with exit code 2; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with what the user gave or asked for; str(e) is one line fit to show as is."""
