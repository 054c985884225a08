"""One exception type for everything a user can fix: the tools print its
message as one line on stderr and exit non-zero, never a traceback."""


class UserError(Exception):
    exit_code = 2


class EnvError(UserError):
    """The machine cannot run the tool (not root, no bcc, no kprobes...)."""
    exit_code = 1
