"""The one exception type whose message is shown to the user as it is."""


class PipelineError(Exception):
    """A problem the user can fix; its message names the problem and the fix, in one line."""
