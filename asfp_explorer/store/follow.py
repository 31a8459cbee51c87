"""Following a run directory that another process is writing (a torchrun job, a run on a
server, a synced folder): new epochs as they land, resumes, restarts and the end.

    follower = RunFollower("runs/r56")
    for item in follower.items(idle_timeout=3600):   # blocks; ends after the run's end
        print(item.kind, item.epoch, item.message)
    follower.run                                       # the RunData read so far

It only reads, takes no lock and polls (works on network and synced folders where file
notifications do not). It relies on how the recorder writes (store/recorder.py): layer files
before their metrics line, whole JSON lines appended, other files replaced atomically, the
`run_end` event after the last epoch, and the lock released after that. A line without its
final newline is a write in progress: it is read once it is complete.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import RunDirError
from .files import read_json_object
from .lock import writer_alive
from .record import RUN_START_KEYS, RunData, read_config_file, read_layer_file

POLL_SECONDS = 0.5  # between looks at the folder while nothing is new

# Kinds of FollowItem, in the order they can happen:
#   started      the head (config.json, run_start.json) appeared: layers and config known
#   epoch        one more epoch (item.metrics is its metrics.jsonl line)
#   changed      parameters changed at an epoch boundary
#   interrupted  the writer is gone without ending the run (killed?); following goes on
#   resumed      a process continues the run from its checkpoint
#   rewound      epochs after the checkpoint were dropped by a resume (recomputed next)
#   restarted    the folder was cleared and a new run started in it (overwrite/restart)
#   ended        the run ended: item.status is finished|stopped|diverged|failed
KINDS = ("started", "epoch", "changed", "interrupted", "resumed", "rewound", "restarted",
         "ended")


@dataclass(frozen=True)
class FollowItem:
    """Something that happened to the followed run. `epoch`: epochs completed at the time."""

    kind: str
    epoch: int | None = None
    message: str = ""
    metrics: dict[str, Any] | None = None
    status: str | None = None  # for "ended" (and "interrupted")
    data: dict[str, Any] = field(default_factory=dict)


class _LineTail:
    """Complete lines of a growing JSON-lines file, read incrementally.

    A file replaced (another inode) or shorter than what was read is read again from the
    start; `read()` then reports how many of the lines already taken are no longer there.
    """

    def __init__(self, path: Path):
        self.path = path
        self.lines: list[str] = []
        self._inode: tuple[int, int] | None = None
        self._offset = 0

    def reset(self) -> None:
        self.lines, self._inode, self._offset = [], None, 0

    def read(self) -> tuple[int, list[str]]:
        """(lines taken before that are gone, new complete lines)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            gone = len(self.lines)
            self.reset()
            return gone, []
        inode = (st.st_dev, st.st_ino)
        if inode != self._inode or st.st_size < self._offset:
            with open(self.path, "rb") as f:
                raw = f.read()
            complete = raw[: raw.rfind(b"\n") + 1]
            lines = complete.decode("utf-8", errors="replace").splitlines(keepends=True)
            same = 0
            while same < min(len(lines), len(self.lines)) and lines[same] == self.lines[same]:
                same += 1
            gone = len(self.lines) - same
            self.lines = lines
            self._inode, self._offset = inode, len(complete)
            return gone, lines[same:]
        if st.st_size == self._offset:
            return 0, []
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            raw = f.read()
        complete = raw[: raw.rfind(b"\n") + 1]  # a torn tail waits for its newline
        new = complete.decode("utf-8", errors="replace").splitlines(keepends=True)
        self._offset += len(complete)
        self.lines.extend(new)
        return 0, new

    def unread(self, n: int) -> None:
        """Give back the last `n` lines taken (their content could not be used yet)."""
        if n:
            dropped = "".join(self.lines[-n:]).encode("utf-8")
            del self.lines[-n:]
            self._offset -= len(dropped)


class RunFollower:
    """Reads a run directory incrementally; `poll()` returns what is new since the last call.

    `run` is the record read so far (a `RunData`, the same structure `load_run` returns).
    `ended` is True after the run's `run_end` event (until a resume continues it).
    Writer liveness comes from the run's lock file (a pid): on a folder written by another
    machine it cannot be told, so an end there is only seen through the `run_end` event.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir)
        self.run = RunData(path=self.path)
        self.ended = False
        self.interrupted = False
        self._head_id: tuple[int, int, int] | None = None
        self._metrics = _LineTail(self.path / "metrics.jsonl")
        self._events = _LineTail(self.path / "events.jsonl")
        self._summary_id: tuple[int, int, int] | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------------ public

    @property
    def started(self) -> bool:
        return self._head_id is not None

    @property
    def epochs(self) -> int:
        """Epochs completed so far (the last metrics line's epoch; 0 before any)."""
        return self.run.metrics[-1]["epoch"] if self.run.metrics else 0

    def poll(self) -> list[FollowItem]:
        """Read what is new; never blocks (one stat per file when nothing changed)."""
        items: list[FollowItem] = []
        # Liveness first: a writer found gone now wrote everything before this poll reads.
        alive = writer_alive(self.path)
        head = self._head_identity()
        if head != self._head_id:
            if self._head_id is not None:
                items.append(FollowItem("restarted", 0, "the run directory was cleared; "
                                        "a new run starts in it" if head else
                                        "the run directory was cleared"))
                self._forget()
            if head is None:
                return items
            try:
                self._read_head()
            except (RunDirError, OSError):
                return items  # a head being written or cleared right now: next poll
            self._head_id = head
            self.ended = self.interrupted = False
            c = self.run.config
            items.append(FollowItem(
                "started", 0,
                f"{c['model']['name']} on {c['data']['name']}, {c['pruning']['method']} "
                f"P={c['pruning']['prune_ratio']:g}, {c['training']['epochs']} epochs, "
                f"{len(self.run.layer_names)} prunable layers"))
        if self._head_id is None:
            return items  # no run in the folder (yet)
        happened = self._read_events()  # before the metrics: see `_read_events`
        items += _in_order(happened, self._read_metrics())
        self._read_summary()
        if items and any(i.kind in ("epoch", "resumed") for i in items):
            self.interrupted = False
        if not self.ended and not alive and not self.interrupted and self._lock_file_seen():
            self.interrupted = True
            last = self.epochs
            message = (f"the writing process ended without closing the run (killed?) after "
                       f"epoch {last}; waiting for it to be resumed (--resume)")
            self.run.summary = {**self.run.summary, "status": "interrupted", "message": message}
            items.append(FollowItem("interrupted", last, message, status="interrupted"))
        return items

    def items(self, idle_timeout: float | None = None, poll_seconds: float = POLL_SECONDS
              ) -> Iterator[FollowItem]:
        """Yield items as they happen until the run has ended (after the "ended" item).

        `idle_timeout`: seconds without anything new after which TimeoutError is raised
        (None: wait as long as it takes). `stop()` from another thread ends the iteration.
        """
        import time

        quiet_since = time.monotonic()
        while not self._stop.is_set():
            new = self.poll()
            for item in new:
                yield item
            if self.ended:
                return
            if new:
                quiet_since = time.monotonic()
            elif idle_timeout is not None and time.monotonic() - quiet_since > idle_timeout:
                raise TimeoutError(f"{self.path}: nothing new for {idle_timeout:g} s "
                                   f"(epoch {self.epochs}, status {self.run.status})")
            # A poll interval, not a synchronisation: the folder may be on another machine.
            self._stop.wait(poll_seconds)

    def stop(self) -> None:
        """End `items()` at its next poll (from another thread)."""
        self._stop.set()

    # ------------------------------------------------------------------ reading

    def _head_identity(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path / "config.json")
            os.stat(self.path / "run_start.json")
        except (FileNotFoundError, NotADirectoryError):
            return None
        return (st.st_dev, st.st_ino, st.st_mtime_ns)

    def _read_head(self) -> None:
        run = RunData(path=self.path)
        run.config = read_config_file(self.path / "config.json")
        run.environment = read_json_object(self.path / "environment.json", required=False)
        run.info = read_json_object(self.path / "run_start.json")
        missing = [k for k in RUN_START_KEYS if k not in run.info]
        if missing:
            raise RunDirError(f"{self.path / 'run_start.json'}: lacks {', '.join(missing)}")
        self.run = run

    def _forget(self) -> None:
        self.run = RunData(path=self.path)
        self._head_id = self._summary_id = None
        self._metrics.reset()
        self._events.reset()
        self.ended = self.interrupted = False

    def _read_events(self) -> list[FollowItem]:
        """Events are read before the metrics: the writer appends `run_end` only after the
        last epoch's line, so a run seen ended here has every epoch on disk already."""
        gone, lines = self._events.read()
        if gone:  # events are only appended; fewer means the folder was cleared
            return []
        items = []
        for line in lines:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if not isinstance(e, dict):
                continue
            self.run.events.append(e)
            kind, epoch = e.get("event"), e.get("epoch")
            if kind == "resumed":
                self.ended = False
                if isinstance(e.get("config"), dict):
                    self.run.config = e["config"]
                items.append(FollowItem("resumed", epoch, f"resumed from the checkpoint of "
                                        f"epoch {epoch}", data=e))
            elif kind == "parameters_changed":
                if isinstance(e.get("config"), dict):
                    self.run.config = e["config"]
                ch = ", ".join(f"{s}.{k}={v}" for s, f in (e.get("changes") or {}).items()
                               for k, v in f.items())
                items.append(FollowItem("changed", epoch, f"after epoch {epoch}: {ch}", data=e))
            elif kind == "run_end":
                self.ended = True
                status = e.get("status", "ended")
                self.run.summary = {**self.run.summary, "status": status,
                                    "message": e.get("message", "")}
                items.append(FollowItem("ended", epoch, e.get("message", ""), status=status,
                                        data=e))
        return items

    def _read_metrics(self) -> list[FollowItem]:
        items = []
        gone, lines = self._metrics.read()
        if gone:
            keep = len(self.run.metrics) - gone
            self.run.truncate(keep - 1)
            items.append(FollowItem("rewound", keep - 1, f"epochs after {keep - 1} were "
                                    "dropped by a resume; they are trained again"))
        sizes = self.run.info["layer_sizes"]
        for i, line in enumerate(lines):
            try:
                m = json.loads(line)
                epoch = m["epoch"]
                if epoch != len(self.run.metrics):
                    raise RunDirError(f"metrics line of epoch {epoch}, expected "
                                      f"{len(self.run.metrics)}")
                norms, masks = read_layer_file(self.path, epoch, sizes)
            except (ValueError, KeyError, TypeError, RunDirError, OSError):
                # Its layer file is missing or being replaced (a resume in progress): this
                # line and those after it are read again at the next poll.
                self._metrics.unread(len(lines) - i)
                break
            self.run.metrics.append(m)
            self.run.norms.append(norms)
            self.run.masks.append(masks)
            items.append(FollowItem("epoch", epoch, metrics=m))
        return items

    def _read_summary(self) -> None:
        path = self.path / "summary.json"
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return
        ident = (st.st_ino, st.st_mtime_ns, st.st_size)
        if ident == self._summary_id:
            return
        try:
            summary = read_json_object(path)
        except RunDirError:
            return
        self._summary_id = ident
        if self.interrupted and summary.get("status") == "running":
            return  # the file still says running; the writer is gone
        self.run.summary = summary

    def _lock_file_seen(self) -> bool:
        """A writer ever took the lock (a run directory copied without one: unknown)."""
        return (self.path / "lock").exists()


def _in_order(events: list[FollowItem], epochs: list[FollowItem]) -> list[FollowItem]:
    """Events and epochs of one poll as they happened: an event after `e` completed epochs
    follows epoch e's item (a rewind first: it refers to the lines read before)."""
    out = [i for i in epochs if i.kind == "rewound"]
    pending = [i for i in epochs if i.kind != "rewound"]
    for ev in events:
        while pending and ev.epoch is not None and pending[0].epoch <= ev.epoch:
            out.append(pending.pop(0))
        out.append(ev)
    return out + pending


def epoch_line(m: dict[str, Any], dense_macs: float | None = None) -> str:
    """One line for one epoch (what `show --follow` prints)."""
    def pct(key: str) -> str:
        v = m.get(key)
        return "-" if v is None else f"{100 * v:.2f} %"

    parts = [f"epoch {m['epoch']}/{m['total_epochs']}"]
    if m.get("train_loss") is not None:
        parts.append(f"loss {m['train_loss']:.4f}")
    parts += [f"train {pct('train_acc')}", f"masked {pct('test_acc_masked')}",
              f"unmasked {pct('test_acc_unmasked')}", f"P {pct('prune_ratio')}"]
    if dense_macs:
        parts.append(f"MACs -{100 * (1 - m['exact_macs'] / dense_macs):.1f} %")
    parts.append(f"{m.get('epoch_seconds', 0.0):.2f} s")
    return "  ".join(parts)
