"""Test time compression for the processes of the test workers (on their PYTHONPATH): Prefect renews a
concurrency lease at ``HUBPLOY_TEST_LEASE_RENEWAL_FRACTION`` of its duration instead of 75 %, so that a
test which must outlive the engine's first renewal of its 300 s deployment lease waits 30 s, not 225 s.
What is renewed, and what a renewal of a revoked lease does, stay Prefect's own."""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType

LEASES = "prefect.concurrency._leases"


class _RenewalFraction(importlib.abc.MetaPathFinder):
    def __init__(self, fraction: float) -> None:
        self.fraction = fraction

    def find_spec(self, name: str, path: object, target: object = None) -> ModuleSpec | None:
        if name != LEASES:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.loader is not None, name
        loader, fraction = spec.loader, self.fraction
        execute = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            execute(module)
            assert hasattr(module, "_RENEWAL_FRACTION"), f"{LEASES} no longer has _RENEWAL_FRACTION"
            module._RENEWAL_FRACTION = fraction  # type: ignore[attr-defined]

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if fraction := os.environ.get("HUBPLOY_TEST_LEASE_RENEWAL_FRACTION"):
    sys.meta_path.insert(0, _RenewalFraction(float(fraction)))
