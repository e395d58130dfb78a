"""langgame: language models as players in two-player language games."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("langgame")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"
