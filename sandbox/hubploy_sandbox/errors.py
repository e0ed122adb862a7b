"""The sandbox's one error: part of hubploy's hierarchy, so the CLI reports it like every other."""

from __future__ import annotations

from hubploy.errors import HubployError


class SandboxError(HubployError):
    """The local sandbox platform cannot be installed, started or used."""
