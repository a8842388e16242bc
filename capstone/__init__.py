"""capstone: load event files into SQL so nothing is lost, nothing stale wins, and reruns are safe.

Use it from Python without the CLI::

    from capstone import RunOptions, run
    summary = run("data/sample_input.txt", "capstone.db", RunOptions())
    print(summary.loaded, summary.watermark)
"""

from capstone.errors import CapstoneError
from capstone.pipeline import RunOptions, run
from capstone.summary import RunSummary

__version__ = "0.1.0"

__all__ = ["CapstoneError", "RunOptions", "RunSummary", "__version__", "run"]
