"""``loopkit.__version__``: read from the installed package's metadata, so pyproject.toml is the one place it is set."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__: str = version("loopkit")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"
