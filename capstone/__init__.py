"""capstone: load event files into SQL so nothing is lost, nothing stale wins, and reruns are safe.

Use it from Python without the CLI::

    from capstone import RunOptions, run
    summary = run("data/sample_input.txt", "capstone.db", RunOptions())
    print(summary.loaded, summary.watermark)
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from capstone.errors import CapstoneError
    from capstone.pipeline import RunOptions, run
    from capstone.summary import RunSummary

__version__ = "0.1.0"

__all__ = ["CapstoneError", "RunOptions", "RunSummary", "__version__", "run"]

_EXPORTS = {
    "CapstoneError": "capstone.errors",
    "RunOptions": "capstone.pipeline",
    "RunSummary": "capstone.summary",
    "run": "capstone.pipeline",
}


def __getattr__(name: str) -> Any:
    # Imported on first use: the CLI's entry point starts from a bare package, so Ctrl-C during
    # the second or so of imports is still caught and reported in one line (capstone.__main__).
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'capstone' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
