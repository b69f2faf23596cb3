"""Noti: Kubernetes-native iOS push notifications at scale."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("noti")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"
