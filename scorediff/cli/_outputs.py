"""Where the reading commands (``sample``, ``eval``) put their files: never into a run folder.

- Default: ``outputs/<run folder name>/<file>`` under the current directory (created as needed).
- ``--out DIR`` naming an existing folder: the default file name inside it.
- ``--out FILE``: that file; its folder is created only when the folder's own parent exists (one level), so a
  typo such as ``/nonexistent/dir/x.png`` is one line instead of a tree of new folders.
- ``--out`` inside the run folder read (or one of the runs it reads) is refused: a reader never writes a run.
"""

from __future__ import annotations

from pathlib import Path

OUTPUTS = "outputs"


def output_path(out: str | None, run_dir: Path, name: str, option: str = "--out",
                reads: tuple[Path, ...] = ()) -> Path:
    """The file a reading command writes (see the module docstring); ValueError in one line when refused.

    Checks only: nothing is created here (the writer creates the folder), so a command that fails later leaves
    nothing behind.
    """
    if out is None:
        path = Path(OUTPUTS) / run_dir.resolve().name / name
    else:
        path = Path(out)
        if path.is_dir():
            path = path / name
    for folder in (run_dir, *reads):
        if path.resolve().is_relative_to(folder.resolve()):
            raise ValueError(f"{option} {str(path)!r} lies inside the run folder {str(folder)!r}; a reader never "
                             f"writes into a run (default: {OUTPUTS}/{run_dir.resolve().name}/)")
    parent = path.parent
    if out is not None and not parent.is_dir():
        if parent.exists():
            raise ValueError(f"{option} {str(path)!r}: {str(parent)!r} is not a folder")
        if not parent.parent.is_dir():
            raise ValueError(f"{option} {str(path)!r}: folder {str(parent)!r} does not exist, nor its parent "
                             f"{str(parent.parent)!r}; create it first")
    return path


def png_output_path(out: str | None, run_dir: Path, name: str, **options) -> Path:
    """``output_path`` for a picture: the path always ends in .png."""
    p = output_path(out, run_dir, name, **options)
    return p if p.suffix.lower() == ".png" else p.with_suffix(p.suffix + ".png" if p.suffix else ".png")
