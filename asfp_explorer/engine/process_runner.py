"""A run handle whose training runs in a child process: `ProcessRunHandle`.

It has `RunHandle`'s interface (start, wait, pause, resume, stop, queue_change, status,
epoch, config, held, trained_model), so the dashboard steers either the same way. Why a
process: in a notebook the kernel's main thread has already run parallel torch ops, and
libgomp then counts its idle OpenMP workers with the training thread's team; with more
threads than cores every barrier sleeps instead of spinning, and short ops (digits) train
up to 2x slower on a background thread. A child process has its own pool, its own GIL and
the parent's thread count, so it computes exactly what a thread would, at full speed. It
also keeps a crash (or an out-of-memory kill) of training away from the kernel.

The wire:
- parent -> child, a `Pipe`: ("start",), ("pause",), ("resume",), ("stop",), ("close",),
  ("queue_change", request_id, sections). The child's reader stops the run when the pipe
  closes (the parent died), so an orphan never trains on;
- child -> parent, a `multiprocessing.Queue` (its feeder thread pickles, so the training
  thread only appends): ("ready", device, config) or ("error", type, message), then
  ("event", kind, epoch, data), ("held", bool, epochs done), ("reply", request_id, ...),
  ("model", torch.save bytes of weights and masks, input_size, num_classes) for a finished
  or stopped run, then ("done", status, error).

Built-in or `package.module:factory` models and configured data sets only: a model or data
set object, or a name added by `register_model` in this process, is not known to the child
(the dashboard trains those on a thread). In a script, create it under
`if __name__ == "__main__":`: the spawned child imports the script again.
"""

from __future__ import annotations

import atexit
import io
import itertools
import multiprocessing
import multiprocessing.util  # registers its exit handler before ours: ours runs first
import os
import queue
import signal
import threading
import weakref
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..config import ConfigError, RunConfig
from .events import EpochSnapshot, Event, EventKind, Observer, frozen, notify, readonly

# libgomp's barrier spin count in the child (GOMP_SPINCOUNT; default 300,000). With the
# default, two processes whose OpenMP threads together outnumber the cores can spin against
# each other: digits epochs took 40 s instead of about 1 s beside another 2-thread torch
# process on 2 cores. 3,000 never did in our runs and is as fast as the default on an idle
# machine; 1,000 was 7 % slower there (docs/benchmarks.md). How threads wait changes no
# arithmetic. A GOMP_SPINCOUNT or OMP_WAIT_POLICY the user set is kept.
CHILD_SPIN_COUNT = "3000"
_environment_lock = threading.Lock()

POLL_SECONDS = 0.1  # how often the child's reader looks for commands and the paused state
REPLY_SECONDS = 60.0  # the longest a queued change waits for the child's answer

_live: "weakref.WeakSet[ProcessRunHandle]" = weakref.WeakSet()


def can_run_in_process(config: RunConfig, model: Any = None, dataset: Any = None) -> bool:
    """True when a child process can rebuild the run from `config` alone."""
    from .. import model_registry

    if model is not None or dataset is not None:
        return False
    name = config.model.name
    if model_registry.registered_builder(name) is not None:
        return False  # registered in this process only
    return not name.startswith("__main__:")


# ------------------------------------------------------------------ events on the wire

def _plain(data: Any) -> Any:
    """Event data as picklable builtins (read-only mappings become dicts)."""
    if isinstance(data, EpochSnapshot):
        return replace(data, extra=dict(data.extra))
    if isinstance(data, Mapping):
        return {k: _plain(v) for k, v in data.items()}
    return data


def _restored(data: Any) -> Any:
    """The read-only event data an in-process observer would have received."""
    if isinstance(data, EpochSnapshot):
        return replace(data, extra=frozen(data.extra),
                       norms=tuple(readonly(a) for a in data.norms),
                       masks=tuple(readonly(a) for a in data.masks))
    if isinstance(data, dict):
        return frozen(data)
    return data


# ------------------------------------------------------------------ the child

def _child_main(commands, out, config: dict, run_dir: str | None, overwrite: bool,
                threads: int) -> None:
    """The child process: build the run, say ready, train on its main thread when told."""
    import torch

    # A kernel interrupt reaches the whole process group; in a thread the run would not
    # see it, so neither does the child (Stop, or the pipe closing, ends it).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)  # the parent's count: the same arithmetic as a thread
    from .runner import RunHandle

    def observe(event: Event) -> None:
        item = ("event", event.kind.value, event.epoch, _plain(event.data))
        if event.kind is EventKind.PARAMETERS_CHANGED:
            item += (handle.config.to_dict(),)  # queued changes included
        out.put(item)

    try:
        handle = RunHandle(RunConfig.from_dict(config), run_dir, [observe], overwrite=overwrite)
    except BaseException as e:  # refused before training: the parent shows one line
        out.put(("error", type(e).__name__, str(e)))
        _flush(out)
        return
    out.put(("ready", handle.device, handle.config.to_dict()))
    try:
        first = commands.recv()
    except EOFError:
        first = ("close",)
    if first[0] != "start":
        handle._release()
        _flush(out)
        return
    ended = threading.Event()
    reader = threading.Thread(target=_child_reader, args=(handle, commands, out, ended),
                              name="asfp-commands", daemon=True)
    reader.start()
    error = None
    try:
        status = handle.run()
    except BaseException as e:  # RUN_END (failed) has been sent; the parent keeps the text
        status, error = handle.status, f"{type(e).__name__}: {e}"
    ended.set()
    reader.join(timeout=5)
    parent = multiprocessing.parent_process()
    if status in ("finished", "stopped") and (parent is None or parent.is_alive()):
        t = handle.trainer
        # As bytes: torch pickles tensors for a Queue as shared memory handed over by this
        # process, which is gone by the time the parent reads them.
        buffer = io.BytesIO()
        torch.save({"model": {k: v.detach().cpu() for k, v in t.model.state_dict().items()},
                    "masks": {k: v.detach().cpu() for k, v in t.pruning.masks.items()}},
                   buffer)
        out.put(("model", buffer.getvalue(), tuple(t.data.input_size), t.data.num_classes))
    out.put(("done", status, error))
    _flush(out)


def _flush(out) -> None:
    """Let everything reach the parent before the process exits; with the parent gone
    (nobody reads, so a full pipe would block the exit forever), drop what is left."""
    out.close()
    feeder = threading.Thread(target=out.join_thread, daemon=True)
    feeder.start()
    parent = multiprocessing.parent_process()
    while feeder.is_alive():
        feeder.join(timeout=0.5)
        if parent is not None and not parent.is_alive():
            out.cancel_join_thread()
            return


def _child_reader(handle, commands, out, ended: threading.Event) -> None:
    """The child's second thread: applies commands and reports the paused state."""
    held = False
    while not ended.is_set():
        try:
            ready = commands.poll(POLL_SECONDS)
            message = commands.recv() if ready else None
        except (EOFError, OSError):  # the parent has gone: stop (resumable), never train on
            handle.stop()
            handle.resume()
            return
        if message is not None:
            _apply_command(handle, message, out)
        if handle.held.is_set() != held:
            held = not held
            out.put(("held", held, handle.epoch))


def _apply_command(handle, message: tuple, out) -> None:
    what = message[0]
    if what == "pause":
        handle.pause()
    elif what == "resume":
        handle.resume()
    elif what == "stop":
        handle.stop()
        handle.resume()
    elif what == "queue_change":
        request, sections = message[1], message[2]
        try:
            first = handle.queue_change(**sections)
            out.put(("reply", request, True, first, handle.config.to_dict()))
        except Exception as e:  # refused: the parent raises it as the same kind of error
            out.put(("reply", request, False, type(e).__name__, str(e)))


# ------------------------------------------------------------------ the parent's handle

class ProcessRunHandle:
    """Build with a config (and optionally a run directory), then `start()`; observers run
    in this process, on a receiver thread, in the order the child emitted the events.

    Raises what `RunHandle` would (a `ConfigError` or `RunDirError` with its one line) when
    the child refuses to build the run. `overwrite` as for `RunHandle`.
    """

    def __init__(self, config: RunConfig, run_dir: str | Path | None = None,
                 observers: Iterable[Observer] = (), *, overwrite: bool = False):
        import torch

        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.observers: list[Observer] = list(observers)
        self.observer_errors: list[str] = []
        self.held = threading.Event()
        self.error: BaseException | None = None
        self._status = "created"
        self._epoch = 0
        self._paused = False
        self._model = None
        self._replies: dict[int, tuple] = {}
        self._reply_ready = threading.Condition()
        self._requests = itertools.count(1)
        self._send_lock = threading.Lock()
        self._done = threading.Event()
        self._receiver: threading.Thread | None = None
        ctx = multiprocessing.get_context("spawn")  # fork is unsafe with CUDA and OpenMP
        self._out = ctx.Queue()
        receive_end, self._commands = ctx.Pipe(duplex=False)  # the child reads, we write
        self._proc = ctx.Process(
            target=_child_main, name="asfp-train",
            args=(receive_end, self._out, config.to_dict(),
                  str(self.run_dir) if self.run_dir is not None else None, overwrite,
                  torch.get_num_threads()))
        with _environment_lock:  # the child's environment is the parent's, at start()
            own = "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ
            if not own:
                os.environ["GOMP_SPINCOUNT"] = CHILD_SPIN_COUNT
            try:
                self._proc.start()
            finally:
                if not own:
                    del os.environ["GOMP_SPINCOUNT"]
        receive_end.close()
        first = self._next_until_ready()
        if first[0] == "error":
            self._proc.join(timeout=10)
            raise _as_error(first[1], first[2])
        self._device, config_dict = first[1], first[2]
        self._config = RunConfig.from_dict(config_dict)
        _live.add(self)

    def _next_until_ready(self) -> tuple:
        while True:
            try:
                return self._out.get(timeout=0.5)
            except queue.Empty:
                if not self._proc.is_alive():
                    try:
                        return self._out.get(timeout=1.0)
                    except queue.Empty:
                        return ("error", "RuntimeError",
                                f"the training process exited with code "
                                f"{self._proc.exitcode} while building the run (in a "
                                "script: is it under `if __name__ == \"__main__\":`? "
                                "the child imports the script again)")

    # -------------------------------------------------------------- running

    def start(self) -> "ProcessRunHandle":
        """Start training in the child (the caller's thread returns at once)."""
        if self._receiver is not None:
            raise RuntimeError("run: already started; a handle runs once")
        self._status = "running"
        self._receiver = threading.Thread(target=self._receive, name="asfp-train-events",
                                          daemon=True)
        self._receiver.start()
        self._send(("start",))
        return self

    def run(self) -> str:
        """Train and wait for the end; returns the final status."""
        return self.start().wait()

    def wait(self, timeout: float | None = None) -> str:
        """Block until the run has ended and every event was delivered (or `timeout` s)."""
        if self._receiver is not None:
            self._done.wait(timeout)
        return self.status

    def close(self) -> None:
        """A handle never started: let the child go (it releases the run folder)."""
        if self._receiver is None and self._proc.is_alive():
            self._send(("close",))
            self._proc.join(timeout=10)

    def add_observer(self, observer: Observer) -> None:
        self.observers.append(observer)

    # -------------------------------------------------------------- state

    @property
    def status(self) -> str:
        s = self._status
        return "paused" if s == "running" and self._paused else s

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def config(self) -> RunConfig:
        """The configuration including changes still queued."""
        return self._config

    @property
    def device(self) -> str:
        return str(self._device)

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def trained_model(self):
        """The ended run's model (on the CPU) and masks, as `RunHandle.trained_model`."""
        from ..models import build_model
        from .runner import TrainedModel

        if self.status in ("running", "paused"):
            raise RuntimeError("trained_model: the run is still going; wait for it or stop it")
        if self._model is None:
            raise RuntimeError(f"trained_model: the run ended {self.status}; there is no "
                               "model to export")
        import torch

        blob, input_size, num_classes = self._model
        saved = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        model = build_model(self._config.model.name, num_classes, input_size[0])
        model.load_state_dict(saved["model"])
        return TrainedModel(model, saved["masks"], tuple(input_size), "cpu")

    # -------------------------------------------------------------- steering

    def pause(self) -> None:
        self._paused = True
        self._send(("pause",))

    def resume(self) -> None:
        self._paused = False
        self._send(("resume",))

    def stop(self) -> None:
        """Stop at the next epoch boundary (the run stays resumable)."""
        self._send(("stop",))

    def update(self, **sections: Mapping[str, Any]) -> RunConfig:
        """Queue changes (validated by the child); returns the config they lead to."""
        self.queue_change(**sections)
        return self._config

    def queue_change(self, **sections: Mapping[str, Any]) -> int:
        """Queue validated changes; returns the first epoch trained with them (the child's
        `RunHandle.queue_change` answers, under its boundary lock)."""
        if self._receiver is None:
            raise RuntimeError("queue_change: start the run first")
        if self._status != "running":
            raise RuntimeError(f"queue_change: the run has ended ({self._status})")
        request = next(self._requests)
        self._send(("queue_change", request, {k: dict(v) for k, v in sections.items()}))
        with self._reply_ready:
            if not self._reply_ready.wait_for(
                    lambda: request in self._replies or self._done.is_set(), REPLY_SECONDS):
                raise RuntimeError("queue_change: the training process did not answer in "
                                   f"{REPLY_SECONDS:g} s")
            reply = self._replies.pop(request, None)
        if reply is None:
            raise RuntimeError(f"queue_change: the run has ended ({self._status})")
        ok, a, b = reply
        if not ok:
            raise _as_error(a, b)
        self._config = RunConfig.from_dict(b)
        return int(a)

    def _send(self, message: tuple) -> None:
        with self._send_lock:
            try:
                self._commands.send(message)
            except (BrokenPipeError, OSError):
                pass  # the child has ended; the receiver reports how

    # -------------------------------------------------------------- the receiver thread

    def _receive(self) -> None:
        ended = False
        try:
            while True:
                try:
                    item = self._out.get(timeout=0.5)
                except queue.Empty:
                    if self._proc.is_alive():
                        continue
                    try:  # anything still in the pipe, then the verdict
                        item = self._out.get(timeout=1.0)
                    except queue.Empty:
                        if not ended:
                            self._lost()
                        return
                what = item[0]
                if what == "event":
                    ended = self._event(item) or ended
                elif what == "held":
                    self._epoch = item[2]
                    (self.held.set if item[1] else self.held.clear)()
                elif what == "reply":
                    with self._reply_ready:
                        self._replies[item[1]] = item[2:]
                        self._reply_ready.notify_all()
                elif what == "model":
                    self._model = item[1:]
                elif what == "done":
                    if item[2] is not None:
                        self.error = RuntimeError(item[2])
                    return
        finally:
            self.held.clear()
            self._proc.join(timeout=30)
            self._done.set()
            with self._reply_ready:
                self._reply_ready.notify_all()
            _live.discard(self)

    def _event(self, item: tuple) -> bool:
        kind = EventKind(item[1])
        event = Event(kind, item[2], _restored(item[3]))
        if kind is EventKind.EPOCH_END:
            self._epoch = event.epoch
        elif kind is EventKind.RUN_START:
            self._epoch = int(event.data["start_epoch"])
        elif kind is EventKind.PARAMETERS_CHANGED:
            self._config = RunConfig.from_dict(item[4])
        elif kind is EventKind.RUN_END:
            self._status = event.data["status"]
            self._paused = False
        self._deliver(event)
        return kind is EventKind.RUN_END

    def _deliver(self, event: Event) -> None:
        self.observer_errors += notify(self.observers, event)  # as in the trainer

    def _lost(self) -> None:
        """The child died without ending the run (killed, out of memory): say so as a
        RUN_END, so every observer shows an ended run."""
        code = self._proc.exitcode
        self._status = "failed"
        self._paused = False
        where = f" (run folder {self.run_dir}: resumable from its last checkpoint)" \
            if self.run_dir is not None else ""
        message = (f"the training process ended with exit code {code} after epoch "
                   f"{self._epoch}, before the run ended{where}")
        self.error = RuntimeError(message)
        self._deliver(Event(EventKind.RUN_END, self._epoch,
                            frozen({"status": "failed", "message": message,
                                    "epoch": self._epoch})))


def _as_error(type_name: str, message: str) -> Exception:
    """The child's refusal as the exception type the caller would get in-process."""
    from ..store import RunDirError

    kinds = {"ConfigError": ConfigError, "RunDirError": RunDirError,
             "ValueError": ValueError, "FileNotFoundError": FileNotFoundError,
             "TypeError": TypeError}
    cls = kinds.get(type_name)
    return cls(message) if cls is not None else RuntimeError(f"{type_name}: {message}")


@atexit.register
def _stop_children() -> None:
    """At interpreter exit, before multiprocessing joins its children: stop live runs at
    their next boundary (resumable) instead of waiting for them to finish."""
    for handle in list(_live):
        handle.stop()
        handle.resume()
        handle._proc.join(timeout=30)
        if handle._proc.is_alive():
            handle._proc.terminate()
