"""Reading ahead: a second process reads, decompresses, parses and validates while this one writes.

Validation is Python (Pydantic's model per record) and so is the writer's side of SQLite, and the
GIL lets one thread of them run at a time: a writer thread bought nothing (notes.md, section 5).
A forked process does: it inherits the opened source and the run's classifier as they are (no
pickling of either), produces the run's batches in order, and sends each, pickled, through a
pipe. A queue of `_AHEAD_BATCHES` batches and the pipe's buffer are the back-pressure: the
reader is at most that far ahead, so memory stays bounded however large the file. They also
tell the reader how the writer fares (`_Pace`): batches not yet taken mean the writer is behind,
and the reader does more of the shared work itself (pipeline.py validates a batch there or
leaves it to the writer by it).

The writer keeps the run's one transaction and all of its failure semantics:
- an error in the reader (bad input, MemoryError, a bug) is sent over and raised in the writer,
  which rolls the run back as if it had read the file itself;
- Ctrl-C and SIGTERM are the writer's to handle: the reader ignores SIGINT, is killed when the
  writer leaves (normally or not), and dies with it (PR_SET_PDEATHSIG), so a kill -9 of the writer
  leaves no reader behind and the database as it was;
- a reader that dies without a word (killed, crashed) fails the run with one line.
"""

import array
import contextlib
import ctypes
import fcntl
import os
import pickle
import queue
import signal
import sys
import termios
import threading
import warnings
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any, Generic, TypeVar

from capstone.errors import CapstoneError, InputError

__all__ = ["ReadAhead", "available", "read_ahead"]

T = TypeVar("T")
F = TypeVar("F")

_ITEM, _DONE, _ERROR, _MEMORY = range(4)
_PR_SET_PDEATHSIG = 1
_AHEAD_BATCHES = 16
"""Batches the reader may hold sent but not yet taken by the writer (about 1 MB each, pickled)."""
_PIPE_BYTES = 1 << 20
"""The pipe's buffer where the system allows (Linux's default limit for a pipe): about one
batch, so the reader is not held at each send until the writer has taken the one before."""


def available() -> bool:
    """Whether this platform can fork a reader (Linux, macOS and the BSDs; not Windows)."""
    return hasattr(os, "fork")


class ReadAhead(Generic[T, F]):
    """The writer's end: iterate for the reader's items, then read `finished` for its last word."""

    def __init__(self, receive: Connection, reader: int) -> None:
        self._receive = receive
        self.reader = reader
        """The reader's process id."""
        self.exitcode: int | None = None
        self._finished: F | None = None
        self._done = False

    def __iter__(self) -> Iterator[T]:
        while True:
            kind, payload = self._next()
            if kind == _ITEM:
                yield payload
            elif kind == _DONE:
                self._finished, self._done = payload, True
                return
            elif kind == _MEMORY:
                raise MemoryError
            else:
                raise payload

    @property
    def finished(self) -> F:
        """What the reader's `finish` returned, once every item was taken."""
        assert self._done, "iterate the read-ahead to its end first"
        return self._finished  # type: ignore[return-value]

    def _next(self) -> tuple[int, Any]:
        try:
            return self._receive.recv()  # type: ignore[no-any-return]
        except (EOFError, OSError):
            code = self.wait()
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            raise InputError(
                f"the process reading the input {how} before it finished; nothing was kept, "
                "run again (or pass --no-read-ahead to read in one process)"
            ) from None

    def wait(self) -> int:
        """Wait for the reader to end; its exit code (minus the signal that killed it)."""
        if self.exitcode is None:
            _, status = os.waitpid(self.reader, 0)
            self.exitcode = os.waitstatus_to_exitcode(status)
        return self.exitcode

    def stop(self) -> None:
        """End the reader, done or not, and reap it."""
        if self.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.reader, signal.SIGKILL)
            self.wait()


@contextlib.contextmanager
def read_ahead(
    produce: Callable[[Callable[[], bool]], Iterator[T]], finish: Callable[[], F]
) -> Iterator[ReadAhead[T, F]]:
    """Run `produce` in a forked reader and yield the writer's end of it; `finish` runs in the
    reader after the last item and its result comes over as `finished`. Leaving the block (an
    error, an interrupt) stops the reader. `produce` is given `writer_busy` (see `_Pace`)
    to decide, item by item, how much of the work to do itself.

    A bare fork, not multiprocessing's Process: that one closes standard input in the child,
    which is what `--input -` reads, and runs exit handlers the writer owns."""
    receive, send = os.pipe()
    if hasattr(fcntl, "F_SETPIPE_SZ"):
        with contextlib.suppress(OSError):  # a lower system limit keeps the default buffer
            fcntl.fcntl(send, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    writer = os.getpid()
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking a process that has threads (a progress display's):
        # the reader only reads and validates, and never takes a lock such a thread holds.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the reader: it never returns into the writer's code
        code = 1
        try:
            os.close(receive)
            _read(produce, finish, Connection(send, readable=False), writer)
            code = 0
        finally:
            os._exit(code)
    os.close(send)
    ahead: ReadAhead[T, F] = ReadAhead(Connection(receive, writable=False), pid)
    try:
        yield ahead
    finally:
        ahead._receive.close()
        ahead.stop()


def _read(
    produce: Callable[[Callable[[], bool]], Iterator[Any]],
    finish: Callable[[], Any],
    send: Connection,
    writer: int,
) -> None:
    """The reader's life: produce, send, and say how it ended. A writer gone (its end of the pipe
    closed) ends it quietly."""
    _detach(writer)
    pace = _Pace(send)
    try:
        try:
            for item in produce(pace.writer_busy):
                pace.send((_ITEM, item))
            pace.send((_DONE, finish()))
        except (BrokenPipeError, ConnectionResetError):
            raise
        except MemoryError:
            pace.send((_MEMORY, None))
        except CapstoneError as error:
            pace.send((_ERROR, _portable(error)))
        except Exception as error:
            pace.send((_ERROR, RuntimeError(f"{type(error).__name__}: {error}")))
        pace.close()
    except (BrokenPipeError, ConnectionResetError):
        return


class _Pace:
    """The reader's sending, and its view of the writer for sharing the work.

    Batches go out through a sender thread from a queue of up to `_AHEAD_BATCHES`, so the reader
    keeps reading and validating while the writer is not taking any: while it merges a feed's
    file, the reader of the next one gets that far ahead. The writer is busy while the queue
    or the pipe holds what it has not taken (the pipe's unread bytes: FIONREAD, which Linux
    answers on either end), or when the last batch had to wait for room in the queue."""

    def __init__(self, send: Connection) -> None:
        self._send = send
        self._unread = array.array("i", [0])
        self._ask = self._asked() is not None
        self._queue: queue.Queue[bytes | memoryview | None] = queue.Queue(_AHEAD_BATCHES)
        self._broken: BaseException | None = None
        self._waited = False
        self._sender = threading.Thread(target=self._send_all, daemon=True)
        self._sender.start()

    def send(self, message: Any) -> None:
        """Queue `message` for the writer; BrokenPipeError once the writer is gone."""
        if self._broken is not None:
            raise BrokenPipeError
        data = ForkingPickler.dumps(message)
        try:
            self._queue.put_nowait(data)
            self._waited = False
        except queue.Full:
            self._queue.put(data)
            self._waited = True

    def close(self) -> None:
        """Wait until everything queued is sent; BrokenPipeError if the writer left first."""
        self._queue.put(None)
        self._sender.join()
        if self._broken is not None:
            raise BrokenPipeError

    def writer_busy(self) -> bool:
        return self._waited or not self._queue.empty() or (self._ask and bool(self._asked()))

    def _send_all(self) -> None:
        while (data := self._queue.get()) is not None:
            try:
                self._send.send_bytes(data)
            except OSError as error:  # the writer is gone (a broken pipe, most often)
                self._broken = error
                # Unblock a producer waiting for room; nothing more is sent.
                with contextlib.suppress(queue.Empty):
                    while True:
                        self._queue.get_nowait()
                return

    def _asked(self) -> int | None:
        """The bytes sent and not yet received, if the system tells."""
        try:
            fcntl.ioctl(self._send.fileno(), termios.FIONREAD, self._unread, True)
        except OSError:
            return None
        return self._unread[0]


def _detach(writer: int) -> None:
    """Leave Ctrl-C and SIGTERM to the writer, and die with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != writer:  # the writer died before the line above
            os._exit(1)


def _portable(error: CapstoneError) -> CapstoneError:
    """The error as it can cross the pipe: its own class when that pickles, else an InputError."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return InputError(str(error))
    return error
