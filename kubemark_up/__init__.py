"""kubemark-up: bring up Kubemark clusters, a real master plus hollow nodes, and tear them down."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kubemark-up")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
