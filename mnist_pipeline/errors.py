"""The one exception type whose message is shown to the user as it is."""


class PipelineError(Exception):
    """A problem the user can fix; its message names the problem and the fix, in one line."""


def first_line(error: Exception) -> str:
    """The first line of an exception's message (its type when empty), short enough to quote
    inside a one-line error."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def last_line(text: str | None) -> str:
    """The last non-blank line of a tool's output: where pip, git and DVC say what went wrong."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"
