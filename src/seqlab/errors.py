"""The error type for problems a user can fix; the CLI prints these as one clear message, no traceback."""


class UserError(ValueError):
    """Bad input (config, file, checkpoint, command line): the message names the problem and what to do."""
