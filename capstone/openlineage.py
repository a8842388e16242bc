"""OpenLineage events of runs: START, then COMPLETE, FAIL or ABORT, through the official client.

The client (`pip install 'capstone[openlineage]'`) is configured the way it is everywhere:
`OPENLINEAGE_URL` (+ `OPENLINEAGE_API_KEY`), `OPENLINEAGE_CONFIG` or an `openlineage.yml` (in
the working folder or ~/.openlineage), or `OPENLINEAGE__TRANSPORT__TYPE=file|console|...` and the
other `OPENLINEAGE__` variables; `OPENLINEAGE_DISABLED=true` turns it off. When nothing
configures it, `run_events()` returns events that do nothing and the client is never imported:
a run pays one look at the environment and two `stat` calls.

Sending never fails a run: whatever goes wrong is one warning line on stderr per run.
"""

import os
import sys
from collections.abc import Callable, Mapping
from typing import Protocol

from capstone.sources import SourceFile
from capstone.spec import PipelineSpec
from capstone.store import Store
from capstone.summary import RunSummary

__all__ = ["DEFAULT_NAMESPACE", "RunEvents", "configured", "run_events"]

DEFAULT_NAMESPACE = "capstone"
"""The job namespace of capstone's runs, unless `OPENLINEAGE_NAMESPACE` names another."""

Warn = Callable[[str], None]


class RunEvents(Protocol):
    """What the pipeline tells about one run; only the first of complete, fail and abort counts."""

    def start(
        self, run: RunSummary, spec: PipelineSpec, source: SourceFile | None, store: Store
    ) -> None:
        """The run has begun: its input (a file, or the pipeline's dead letters when `source` is
        None) and its output, the pipeline's target in `store`."""

    def complete(self, summary: RunSummary, reasons: Mapping[str, int]) -> None:
        """The run committed; `reasons` counts its rejects by reason."""

    def fail(self, run: RunSummary, error: str) -> None:
        """The run failed and was rolled back."""

    def abort(self, run: RunSummary) -> None:
        """The run was interrupted and rolled back."""


class _Silent:
    """The events of a process where OpenLineage is not configured: nothing is sent."""

    def start(
        self, run: RunSummary, spec: PipelineSpec, source: SourceFile | None, store: Store
    ) -> None:
        return

    def complete(self, summary: RunSummary, reasons: Mapping[str, int]) -> None:
        return

    def fail(self, run: RunSummary, error: str) -> None:
        return

    def abort(self, run: RunSummary) -> None:
        return


_SILENT = _Silent()

_CONFIG_FILES = ("openlineage.yml", os.path.join("~", ".openlineage", "openlineage.yml"))
"""Where the client looks for its configuration file, after `OPENLINEAGE_CONFIG`."""


def configured() -> str | None:
    """What configures the OpenLineage client in this process (as messages name it), or None."""
    env = os.environ
    if env.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return None
    for name in ("OPENLINEAGE_URL", "OPENLINEAGE_CONFIG"):
        if env.get(name):
            return name
    if variables := sorted(name for name in env if name.startswith("OPENLINEAGE__")):
        return (
            "OPENLINEAGE__TRANSPORT__TYPE"
            if "OPENLINEAGE__TRANSPORT__TYPE" in env
            else variables[0]
        )
    for path in _CONFIG_FILES:
        if os.path.isfile(os.path.expanduser(path)):
            return path
    return None


def _warn(message: str) -> None:
    sys.stderr.write(f"capstone: warning: {message}\n")


def run_events(warn: Warn = _warn) -> RunEvents:
    """The events of one run: sent through the client when OpenLineage is configured, else none.

    `warn` receives the one line that says why events are not sent (default: stderr)."""
    how = configured()
    if how is None:
        return _SILENT
    try:
        from capstone._openlineage_events import ClientEvents
    except ImportError:
        warn(
            f"OpenLineage is configured ({how}) but its client is not installed, so no events "
            "are sent; install it with: pip install 'capstone[openlineage]'"
        )
        return _SILENT
    try:
        return ClientEvents(warn, os.environ.get("OPENLINEAGE_NAMESPACE") or DEFAULT_NAMESPACE)
    except Exception as error:  # a configuration the client refuses must not stop the run
        warn(f"OpenLineage events are not sent: the client's configuration failed ({error})")
        return _SILENT
