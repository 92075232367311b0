"""Where the bundle's configs are, and the bundle root a config run writes under.

The package never walks up from its own file into a checkout. The configs come, in
this order, from ``$LIVER_TUMOR_CONFIGS``, from ``bundles/liver_tumor/configs`` under the
current folder (a checkout), or from the copy installed with the package
(``pipeline.bundle_configs``, mapped from the bundle in ``setup.cfg``).
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

CONFIGS_ENV = "LIVER_TUMOR_CONFIGS"
CHECKOUT_CONFIGS = Path("bundles") / "liver_tumor" / "configs"


def config_dir() -> Path:
    """The folder holding ``common.yaml``, ``train.yaml``, ``inference.yaml`` and the overlays."""
    if os.environ.get(CONFIGS_ENV):
        return Path(os.environ[CONFIGS_ENV]).resolve()
    if (Path.cwd() / CHECKOUT_CONFIGS / "common.yaml").is_file():
        return (Path.cwd() / CHECKOUT_CONFIGS).resolve()
    installed = Path(str(resources.files("pipeline"))) / "bundle_configs"
    if (installed / "common.yaml").is_file():
        return installed
    # An editable install maps no configs into the package folder.
    raise FileNotFoundError(
        f"no bundle configs found: run from the repository root (it holds "
        f"{CHECKOUT_CONFIGS}) or set {CONFIGS_ENV} to the configs folder"
    )


def config_file(name: str) -> Path:
    """A config of the bundle by file name, e.g. ``config_file("inference.yaml")``."""
    return config_dir() / name


def config_files_from_command_line(argv: Sequence[str] | None = None) -> list[str]:
    """The ``--config_file`` list of a ``python -m monai.bundle run`` command (or [])."""
    argv = list(sys.argv if argv is None else argv)
    for i, arg in enumerate(argv):
        if arg.startswith("--config_file"):
            if "=" in arg:
                value = arg.split("=", 1)[1]
            else:
                value = argv[i + 1] if i + 1 < len(argv) else ""
            if value.startswith("["):
                return [str(f) for f in ast.literal_eval(value)]
            return [value] if value else []
    return []


def bundle_root_from_command_line(argv: Sequence[str] | None = None) -> str:
    """The bundle root of a ``python -m monai.bundle run ... --config_file F`` command.

    MONAI takes the first config file's folder as the config root (for metadata.json and
    logging.conf) but does not give the config its bundle root; this reads the same
    command-line argument: the parent of the first file's ``configs`` folder. Without a
    config file on the command line (a notebook, a test) it is the current folder.
    """
    files = config_files_from_command_line(argv)
    if not files:
        return str(Path.cwd())
    return bundle_root_of(files)


def check_command_line_configs(argv: Sequence[str] | None = None) -> None:
    """Refuse a bundle command whose ``--config_file`` list lacks common.yaml.

    train.yaml and inference.yaml hold only what is theirs; without common.yaml every
    shared id (network, geometry, pre-processing) is undefined, and MONAI would only name
    the first reference it happens to resolve. Without config files on the command line
    (a notebook, a test building the workflow itself) there is nothing to check.

    Raises:
        SystemExit: naming the files given and the fix; SystemExit, not an Exception,
            so that MONAI does not bury the message under "Failed to evaluate
            ConfigExpression" and it is the last line the user sees.
    """
    files = config_files_from_command_line(argv)
    if files:
        report_the_cause_last()
    if files and "common.yaml" not in [Path(f).name for f in files]:
        fixed = [str(Path(files[0]).parent / "common.yaml"), *files]
        raise SystemExit(
            f"--config_file {files} lacks common.yaml, which holds the network, geometry and "
            f'pre-processing: list it first, --config_file "{fixed}"'
        )


def root_cause(error: BaseException) -> BaseException:
    """The innermost error of the chain ``error`` was raised from."""
    seen = {id(error)}
    while (inner := error.__cause__ or error.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        error = inner
    return error


def report_the_cause_last() -> None:
    """Make a bundle command's last line of output the error the user can act on.

    MONAI wraps an error raised while it builds a component in "RuntimeError: Failed to
    evaluate ConfigExpression ...", which Python prints last, below the real message (a
    checkpoint that does not fit, a scan that cannot be read). After Python's own report
    of the whole chain, this hook repeats the innermost error as the last line.
    """
    previous = sys.excepthook
    if getattr(previous, "reports_the_cause_last", False):
        return

    def hook(kind: type[BaseException], error: BaseException, traceback) -> None:
        previous(kind, error, traceback)
        cause = root_cause(error)
        if cause is not error:
            print(f"\nerror: {type(cause).__name__}: {cause}", file=sys.stderr)

    hook.reports_the_cause_last = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def bundle_root_of(config_files: Sequence[str | Path]) -> str:
    """The bundle root for a list of config files: the parent of the first's ``configs``."""
    folder = Path(config_files[0]).resolve().parent
    return str(folder.parent if folder.name == "configs" else folder)
