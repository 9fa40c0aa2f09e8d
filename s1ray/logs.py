"""What a command prints: s1ray's own messages, and Ray's only with ``--verbose``.

Ray's INFO output (streaming-executor plans, progress dumps every few seconds when stdout is
not a terminal, Ray Train's worker-group lines, the PlacementGroupCleaner's "Failed to query
Ray Train Controller actor state" warning repeated while training runs without the State API)
buries s1ray's own lines. By default:

- s1ray's loggers (``s1ray.*``) get one stderr handler, ``[s1ray] message`` at INFO;
- Ray Data keeps its INFO lines (execution plans, the progress dumps of a non-terminal stdout)
  in its log file (``ray-data.log`` in the session folder), not on the console;
- Ray Train's INFO lines are off (``RunConfig(logging_config=train_logging_config())``);
- the driver's ``ray`` logger shows warnings and errors only (``ray.init(logging_level=...)``);
- forwarded worker lines that are Ray's own INFO/DEBUG records, or known noise, are dropped;
  everything else a worker prints (s1ray's progress, tracebacks, warnings) still comes through.

``--verbose`` (or ``S1RAY_VERBOSE=1``) leaves Ray exactly as it is.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any

VERBOSE_ENV = "S1RAY_VERBOSE"
_HANDLER_NAME = "s1ray-console"

# Worker lines dropped in quiet mode: Ray-formatted INFO/DEBUG records ("... INFO file.py:12 --"),
# Ray's C++ info/warning lines, and Ray messages that repeat without telling the user anything
# they can act on. Ray Train's own INFO lines are dropped at the source (``train_logging_config``).
RAY_RECORD = re.compile(r"\b(INFO|DEBUG)\s+[\w./-]+\.py:\d+\s+--\s")
RAY_CPP_INFO = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,.]+ [IW] \d+ \d+\] \S+:\d+:")
NOISE = (
    "Failed to query Ray Train Controller actor state",  # PlacementGroupCleaner without the State API
    "State API may be temporarily unavailable",
    "has constructor arguments in the object store and max_restarts > 0",  # Train's PreemptionWatcher
    "Progress bars disabled. To enable",
    "Progress bars for operators disabled",
    "RayDeprecationWarning: `ExecutionOptions.exclude_resources`",
    "self.exclude_resources = exclude_resources",  # the source line Python's warning echoes
)
DATASET_DONE = re.compile(r"Dataset \S+ execution finished in [\d.]+ seconds"
                          r"|^Reporting training result \d+: TrainingReport\(")  # every report, metrics dict and all
# Ray's own helper actors: their output is Ray bookkeeping (a PlacementGroupCleaner that cannot
# reach the State API prints a traceback per run on a machine with several Ray instances).
INTERNAL_ACTORS = ("PlacementGroupCleaner", "DatasetManager", "SplitCoordinator", "_StatsActor",
                   "AutoscalingRequester", "PreemptionWatcher")
# Driver-side Ray warnings that are notices, not problems, for a private local instance.
DRIVER_NOISE = ("Token authentication is enabled for this Ray cluster",)


class _DropDriverNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(n in message for n in DRIVER_NOISE)


def is_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0", "false", "False")


def setup_logging(verbose: bool = False) -> None:
    """Call once per command before Ray starts (the CLI does); idempotent."""
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
    log = logging.getLogger("s1ray")
    if not any(h.get_name() == _HANDLER_NAME for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(logging.Formatter("[s1ray] %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.DEBUG if is_verbose() else logging.INFO)
    # Records still propagate: the root logger has no handler in a command (nothing is printed
    # twice), and tests' log capture keeps seeing s1ray's records.


def ray_init_kwargs() -> dict[str, Any]:
    """Extra ``ray.init`` arguments: Ray's driver-side logger at WARNING unless verbose."""
    if is_verbose():
        return {}
    for handler in logging.getLogger("ray").handlers:
        if not any(isinstance(f, _DropDriverNoise) for f in handler.filters):
            handler.addFilter(_DropDriverNoise())
    return {"logging_level": logging.WARNING}


def train_logging_config():
    """``RunConfig(logging_config=...)`` for Ray Train: its INFO lines only with ``--verbose``."""
    from ray.train import LoggingConfig

    return LoggingConfig(log_level="INFO" if is_verbose() else "WARNING")


def quiet_line(line: str, actor: str | None = None) -> bool:
    """True when a forwarded worker line is Ray's own output or known noise (not s1ray's)."""
    if actor in INTERNAL_ACTORS or not line.strip():
        return True
    return (bool(RAY_RECORD.search(line)) or bool(RAY_CPP_INFO.search(line)) or bool(DATASET_DONE.search(line))
            or any(n in line for n in NOISE))


def after_ray_init() -> None:
    """Quiet Ray Data's console and the forwarded worker lines (no-op with ``--verbose``)."""
    if is_verbose():
        return
    quiet_ray_data()
    _filter_worker_lines()


def quiet_ray_data() -> None:
    """Ray Data: INFO to its log file only (progress bars in a terminal stay)."""
    import ray.data
    from ray.data._internal.logging import SessionFileHandler

    ray.data.DataContext.get_current().print_on_execution_start = False
    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, SessionFileHandler):
            handler.setLevel(logging.WARNING)


def _filter_worker_lines() -> None:
    """Swap Ray's worker-log printer for one that drops ``quiet_line`` lines first."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    for name, handler in list(dispatcher.handlers):
        if name != "ray_print_logs" or getattr(handler, "s1ray_quiet", False):
            continue

        def filtered(data: dict, _print=handler) -> None:
            actor = data.get("actor_name")
            lines = [line for line in data.get("lines", []) if not quiet_line(line, actor)]
            if lines:
                _print({**data, "lines": lines})

        filtered.s1ray_quiet = True  # type: ignore[attr-defined]
        dispatcher.remove_handler(name)
        dispatcher.add_handler(name, filtered)
        return


def worker_lines_filtered() -> bool:
    """Whether the forwarded worker lines currently pass through ``quiet_line``."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    return any(getattr(h, "s1ray_quiet", False) for n, h in dispatcher.handlers if n == "ray_print_logs")
