"""Providers: where the master lives and where hollow nodes run.

Every provider, built in or third-party, is a Provider subclass registered under
the entry-point group `kubemark_up.providers` (see registry.py)."""

from kubemark_up.providers.base import MasterSite, Provider
from kubemark_up.providers.registry import available, load

__all__ = ["MasterSite", "Provider", "available", "load"]
