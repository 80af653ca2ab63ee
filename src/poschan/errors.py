"""The one exception type for bad user input (CLI exit code 2)."""


class UserError(ValueError):
    """Invalid input from the user: the message is one line saying what was wrong and what is allowed."""
