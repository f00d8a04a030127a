"""The pipeline's error types. Library code raises PipelineError, or the subclass naming the kind of
failure, with a message saying what failed and what to do; `cli.main` turns it into that message on
stderr (the traceback too with --debug) and the kind's exit code, once. Standard library only (the
cibuildwheel hooks import it)."""


class PipelineError(Exception):
    """A pipeline step cannot go on; str() is the whole message for the user."""

    return_code = 1  # anything not classified below


class ConfigurationError(PipelineError):
    """ci/declaration/matrix.toml, an argument or the environment asks for something that cannot be."""

    return_code = 2


class NothingToDo(PipelineError):
    """The inputs hold nothing to act on (no wheel, no artifact)."""

    return_code = 3


class CheckFailed(PipelineError):
    """A gate said no: an audit, a smoke test, a lane's verification, the release guard."""

    return_code = 4


class NetworkError(PipelineError):
    """A server or the network failed, or sent what we refuse (a download, an index, a mirror)."""

    return_code = 5


# exit codes a user may see, for `python -m ci --help`
EXIT_CODES = {0: "success", 1: "other pipeline error", 2: "configuration", 3: "nothing to do",
              4: "a check failed", 5: "network or server"}
