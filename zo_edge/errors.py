"""The one exception type users see.

Anything raised as ``ZoEdgeError`` is a problem with the user's input or setup. The CLI prints its
message on one line and exits non-zero, without a traceback; every other exception is a bug in
zo-edge and keeps its traceback.
"""


class ZoEdgeError(Exception):
    """A user-facing error: the message names the problem and the way out."""

    exit_code = 2
