"""What the three scripts share: user errors printed as one line, and the wrapper around their Hydra mains.

    def main() -> int:
        return run_main("sample.py", hydra_main)      # hydra_main's task runs inside guarded(task, cfg)

A ``diffusion.errors.UserError`` (data, checkpoint, config, training and evaluation errors derive from it) and
Hydra's own composition errors (unknown key, wrong type, missing group option) end the program with
``<prog>: error: <one line>`` on stderr and exit code 2. Anything else is a bug and keeps its traceback.
``HYDRA_FULL_ERROR=1`` shows the traceback of user errors too.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable

from diffusion.errors import UserError

# lines of Hydra's messages that only repeat what the first line says
_NOISE = ("reference_type", "object_type", "To append to your config", "Config search path", "provider=")


def user_errors() -> tuple[type[BaseException], ...]:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return UserError, HydraException, OmegaConfBaseException


def one_line(error: BaseException) -> str:
    """An exception (Hydra's multi-line ones included) as one line; an instantiation error shows its user-error cause."""
    from hydra.errors import InstantiationException, MissingConfigException

    cause = error.__cause__
    if isinstance(error, InstantiationException) and isinstance(cause, user_errors()):
        return one_line(cause)
    if isinstance(error, MissingConfigException) and error.options:
        options = [o for o in error.options if not o.endswith("_schema")]
        return f"{str(error).splitlines()[0]}; available: {', '.join(options)}"
    parts = [str(error) or type(error).__name__]
    if cause is not None and str(cause) not in parts[0]:
        parts.append(str(cause))
    lines: list[str] = []
    for line in (ln.strip().rstrip(".") for part in parts for ln in part.splitlines()):
        if not line or line.startswith(_NOISE) or line in lines:
            continue
        if line.startswith("full_key:") and line.split(":", 1)[1].strip() in " ".join(lines):
            continue
        lines.append(line)
    return "; ".join(lines)


def _elsewhere(message: str) -> str:
    """For an unknown top-level key that a section of the config has (``sample.py steps=5``, ``train.py lr=1e-3``):
    where it lives, from the schemas' sections and the config groups' files."""
    import re
    import typing
    from dataclasses import fields, is_dataclass
    from pathlib import Path

    from diffusion.config import TrainConfig
    from diffusion.evaluation.config import EvaluateConfig, SampleConfig

    found = re.match(r"Could not override '(\w+)'; Key '\1' not in '(\w+)'", message)
    if found is None:
        return ""
    key, schema = found.groups()
    top = {c.__name__: c for c in (TrainConfig, SampleConfig, EvaluateConfig)}.get(schema)
    sections = set()
    if top is not None:
        for name, kind in typing.get_type_hints(top).items():
            if is_dataclass(kind) and key in {f.name for f in fields(kind)}:
                sections.add(name)
    # the config groups beside the script (or the package: a source checkout), for keys no schema names
    for configs in (Path(sys.argv[0]).resolve().parent / "configs", Path(__file__).resolve().parents[1] / "configs"):
        if configs.is_dir():
            sections |= {f.parent.name for f in configs.glob("*/*.yaml")
                         if re.search(rf"^{key}:", f.read_text(encoding="utf-8"), re.MULTILINE)}
            break
    return f" (did you mean {' or '.join(f'{s}.{key}' for s in sorted(sections))}?)" if sections else ""


_failures: list[BaseException] = []
_full_error = [False]


def guarded(task: Callable[[Any], Any], cfg: Any) -> Any:
    """Run a script's task inside its @hydra.main function, keeping a user error for ``run_main`` to print as one
    line (raised through Hydra, it would first print its own "Error executing job ..." line)."""
    from diffusion.runlock import lock_scope

    try:
        with lock_scope():  # the folders the task writes are its alone until it returns (diffusion.runlock)
            return task(cfg)
    except user_errors() as error:
        if _full_error[0]:
            raise
        _failures.append(error)
        return None
    except (OSError, RuntimeError) as error:
        full = disk_full_error(error)
        if full is None or _full_error[0]:
            raise
        _failures.append(full)
        return None


def disk_full_error(error: BaseException) -> BaseException | None:
    """A full disk met by a write that does not go through ``diffusion.utils.write_atomic`` (which says it
    itself): the errno in ``error``'s chain as a one-line ``DiskFullError``; None for any other error."""
    from diffusion.errors import DiskFullError
    from diffusion.files import NO_SPACE, disk_full

    if isinstance(error, DiskFullError):
        return error
    seen, chain = set(), error
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        if isinstance(chain, OSError) and chain.errno in NO_SPACE:
            return disk_full(chain.filename or "a file", chain.errno)
        chain = chain.__cause__ or chain.__context__
    return None


def run_main(prog: str, hydra_main: Callable[[], Any], interrupted: str = "interrupted") -> int:
    """Run a @hydra.main function whose task goes through ``guarded``; print a user error, from the task or from
    composing the config, as ``<prog>: error: <one line>`` on stderr and return 2 (130 on Ctrl-C)."""
    from diffusion.allocator import keep_freed_memory
    from diffusion.evaluation import config

    keep_freed_memory()  # CPU tensors: reuse freed blocks instead of mapping them anew (allocator.py)
    _full_error[0] = os.environ.get("HYDRA_FULL_ERROR") == "1"
    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises composition errors; we print the one line ourselves
    config.register()
    _failures.clear()
    try:
        hydra_main()
        if _failures:
            raise _failures.pop()
    except user_errors() as error:
        if _full_error[0]:
            raise
        message = one_line(error)
        print(f"{prog}: error: {message}{_elsewhere(message)}", file=sys.stderr, flush=True)
        return 2
    except (OSError, RuntimeError) as error:  # a full disk met outside the task (Hydra writing .hydra/)
        full = disk_full_error(error)
        if full is None or _full_error[0]:
            raise
        print(f"{prog}: error: {full}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous
    return 0


__all__ = ["user_errors", "one_line", "guarded", "run_main", "disk_full_error"]
