"""The one base of every error a user can meet and fix: its str() is one line that names the
problem and the fix. The command lines print it and exit 1; a worker reports it as its job's
failure. Each stage's errors derive from it (and keep ValueError or RuntimeError as a second
base where they had one, so code that catches those still does)."""


class UserError(Exception):
    """A problem the user can fix; str() says what and how, on one line."""
