"""Prefect flows (and, in flows.tasks, the Prefect tasks they are made of).

The ``hubploy.*`` library loggers report progress (each command run, image checks, helm upgrade, health
checks) at INFO. Prefect attaches its API handler to them when PREFECT_LOGGING_EXTRA_LOGGERS=hubploy
(the worker env of `hubploy up`), but leaves their level to the root logger's WARNING; so the level
is set here when that is asked for, unless configured otherwise."""

import logging as _logging
import os as _os

if (
    "hubploy" in _os.environ.get("PREFECT_LOGGING_EXTRA_LOGGERS", "").replace(" ", "").split(",")
    and _logging.getLogger("hubploy").level == _logging.NOTSET
):
    _logging.getLogger("hubploy").setLevel(_logging.INFO)
