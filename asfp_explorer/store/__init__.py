"""Run directories: written atomically while a run trains, read back into `RunData`.

    RUN_DIR/
      config.json           resolved configuration at the start (written last of the head)
      environment.json      versions, device, thread count, git revision, seed
      run_start.json        layer names and widths, input size, dense MACs (analytic and fvcore)
      metrics.jsonl         one JSON object per epoch (epoch 0 = the initial masks)
      layers/NNNNNN.npz     per epoch: l2 filter norms and kept masks of every prunable layer
      layers/NNNNNN.npz.sha256, checkpoint.pt.sha256   checksums, verified on every load
      events.jsonl          parameter changes, resumes and the run's end
      summary.json          status (running|finished|stopped|diverged|failed), the current
                            config, the parameter changes and the final numbers
      checkpoint.pt         state_dicts, masks and RNG states (tensors only: weights_only=True)
      lock                  held (flock) by the process writing the run; holds its pid

Every file is replaced atomically and JSON-lines files grow a whole line at a time, so a crash
loses at most the epoch in progress; a resume drops only what lies after the checkpoint.

Modules: files (atomic writes, JSON lines, paths), checksums, lock, layout (what a run dir
holds), record (RunData, reading), recorder (writing), checkpoint, environment.
"""

from .checkpoint import check_against_model, check_structure, load_checkpoint, load_model
from .checksums import ChecksumError, read_verified
from .environment import environment_info
from .errors import RunDirError
from .files import (
    append_line,
    atomic_savez,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_json,
    check_folder_path,
    check_path_names,
    cut_torn_tail,
    read_json_object,
    read_jsonl,
    remove_stale_temp_files,
)
from .layout import FILES, check_only_run_entries, clear_run_dir, recorded_entries
from .lock import RunLock, writer_alive
from .record import RunData, load_for_resume, load_run, read_config_file, summarise
from .recorder import RunRecorder

__all__ = [
    "FILES", "ChecksumError", "RunData", "RunDirError", "RunLock", "RunRecorder",
    "append_line", "atomic_savez", "atomic_torch_save", "atomic_write_bytes",
    "atomic_write_json", "check_against_model", "check_folder_path", "check_only_run_entries",
    "check_path_names", "check_structure", "clear_run_dir", "cut_torn_tail",
    "environment_info", "load_checkpoint", "load_for_resume", "load_model", "load_run",
    "read_config_file", "read_json_object", "read_jsonl", "read_verified", "recorded_entries",
    "remove_stale_temp_files", "summarise", "writer_alive",
]
