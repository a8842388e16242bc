"""Watch mode: keep loading the files of folders and globs as they appear or change.

Polling, on purpose: it works the same on every file system (network mounts and containers'
bind mounts included, where change notifications are often missing), and a landing folder is
checked every few seconds at the cost of one directory walk. Each file is taken once its size and
modification time have stood still for `settle` seconds, and loaded as its own run through the
manifest, exactly as `run_many` would.

At start, the files the pipeline already loaded are recognised without a run: by their path, size
and modification time when those match the manifest (no read at all), else by their content's
hash. A restart then adds nothing to the run log for them, and prints one line, not one per file.
"""

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from capstone.errors import ConfigError, InputError, LockError
from capstone.inputs import fingerprint
from capstone.manifest import unchanged_since_load
from capstone.pipeline import RunOptions, feed_files, load_file, resolve_pipeline
from capstone.spec import PipelineSpec
from capstone.store import Store, open_store
from capstone.summary import RunSummary

__all__ = ["Watcher", "already_loaded", "watch"]

Signature = tuple[int, int]
"""(size, modification time in ns): a file is taken again only when this changes."""


@dataclass
class Watcher:
    """Which files are settled and not yet taken; one `poll` at a time."""

    inputs: Sequence[str]
    db: str
    settle: float
    clock: Callable[[], float] = time.time
    taken: dict[str, Signature] = field(default_factory=dict)
    """Each file's signature when it was last loaded or failed: a failed file is retried only
    once it changes."""
    _last: dict[str, tuple[Signature, float]] = field(default_factory=dict)
    """Each file's signature at the last poll, and since when it has been so."""

    def files(self) -> list[str]:
        """The files the inputs name now, in `run_many`'s order."""
        try:
            return feed_files(self.inputs, self.db)
        except (ConfigError, InputError):
            return []  # nothing there yet: a landing folder may start empty

    def prime(self, known: Callable[[str, os.stat_result], bool]) -> tuple[int, int]:
        """Count the files there are now as taken when `known` says their content is loaded,
        so they are never offered while they stay as they are; returns (files, known ones)."""
        files, count = self.files(), 0
        for path in files:
            try:
                stat = os.stat(path)
            except OSError:
                continue  # gone between the listing and now
            if known(path, stat):
                self.taken[path] = (stat.st_size, stat.st_mtime_ns)
                count += 1
        return len(files), count

    def ready(self) -> list[str]:
        """Files whose size and mtime have not changed for `settle` seconds and that were not
        taken with that signature, in `run_many`'s order."""
        files = self.files()
        now, found = self.clock(), []
        for path in files:
            try:
                stat = os.stat(path)
            except OSError:
                continue  # gone between the listing and now
            signature = (stat.st_size, stat.st_mtime_ns)
            previous = self._last.get(path)
            since = previous[1] if previous and previous[0] == signature else now
            self._last[path] = (signature, since)
            quiet = min(now - since, now - stat.st_mtime) if previous else now - stat.st_mtime
            if quiet >= self.settle and self.taken.get(path) != signature:
                found.append(path)
        return found

    def signature(self, path: str) -> Signature | None:
        entry = self._last.get(path)
        return None if entry is None else entry[0]


def already_loaded(store: Store, pipeline: str, path: str, stat: os.stat_result) -> bool:
    """Whether the pipeline loaded this file's content: by the manifest row of its path when its
    size and mtime still match (no read), else by the SHA-256 of its bytes (under any path)."""
    row = store.loaded_file(pipeline, resolved_path=os.path.realpath(path))
    if row is not None and unchanged_since_load(path, stat, row):
        return True
    try:
        sha256 = fingerprint(path)
    except InputError:
        return False  # unreadable now: its run will say why
    return store.loaded_file(pipeline, sha256=sha256) is not None


def watch(
    inputs: Sequence[str],
    db: str = "capstone.db",
    options: RunOptions | None = None,
    *,
    spec: PipelineSpec | None = None,
    interval: float = 10.0,
    settle: float = 5.0,
    on_file: Callable[[RunSummary], None] | None = None,
    on_busy: Callable[[str, LockError], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> list[RunSummary]:
    """Poll `inputs` (folders and globs, as `run_many` takes them) every `interval` seconds and
    load each settled new or changed file as its own run, until `stop()` is true; returns the
    runs. A file that fails is reported through `on_file` and retried only when it changes; one
    that finds the pipeline or database busy (`on_busy`) is retried at the next poll.

    Ctrl-C or SIGTERM (as KeyboardInterrupt) rolls back the file in progress and raises
    InterruptedRun (between files: KeyboardInterrupt); committed runs stay.

    Files whose content the pipeline loaded before are recognised at start without a run (see
    `already_loaded`); `on_start` is called with (files found, already loaded ones).
    """
    options = options or RunOptions()
    pipeline = resolve_pipeline(options, spec)
    watcher = Watcher(inputs, db, settle)
    done: list[RunSummary] = []
    with open_store(db) as store, store.feed():
        found, known = watcher.prime(
            lambda path, stat: already_loaded(store, pipeline.name, path, stat)
        )
        if on_start is not None:
            on_start(found, known)
        while not stop():
            for path in watcher.ready():
                signature = watcher.signature(path)
                try:
                    summary = load_file(store, path, options, pipeline)
                except LockError as error:
                    if on_busy is not None:
                        on_busy(path, error)
                    continue
                if signature is not None:
                    watcher.taken[path] = signature
                done.append(summary)
                if on_file is not None:
                    on_file(summary)
                if stop():
                    return done
            deadline = time.monotonic() + interval
            while not stop() and time.monotonic() < deadline:
                time.sleep(min(0.2, interval))
    return done
