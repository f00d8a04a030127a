"""The one error type of the pipeline. Library code raises PipelineError (or a subclass naming its
stage) with a message saying what failed and what to do; `cli.main` turns it into that message on
stderr and exit code 1, once. Standard library only (the cibuildwheel hooks import it)."""


class PipelineError(Exception):
    """A pipeline step cannot go on; str() is the whole message for the user."""
