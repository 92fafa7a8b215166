"""Image paths of a MIMIC-format dataset: safe joins and the mention image lookup.

File names from the dataset are never trusted: absolute paths, ``..`` parts and
NUL bytes are refused whichever separator they use. Mention images are found the
way MIMIC and M3EL do (basename of ``imgPath`` with ``.jpg`` forced).
"""

import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Optional, Tuple

from ..kb import ImageRef
from .mimic_files import MENTION_IMAGE_DIRS


def is_unsafe_name(name: str) -> bool:
    """Whether a file name could point outside its folder.

    Absolute paths (POSIX or Windows), ``..`` components and NUL bytes are unsafe,
    whichever separator they use.

    name (str): The file name from the dataset.
    RETURNS (bool): True if the name must not be opened.
    """
    if "\0" in name:
        return True
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    return (
        posix.is_absolute() or bool(windows.anchor) or ".." in posix.parts or ".." in windows.parts
    )


def safe_join(folder: Path, name: str) -> Optional[Path]:
    """Join a dataset file name to its folder, or return None if it is unsafe.

    folder (Path): The image folder.
    name (str): A relative file name, possibly with subfolders.
    RETURNS (Optional[Path]): The path inside ``folder``, or None.
    """
    if is_unsafe_name(name):
        return None
    path = Path(os.path.normpath(folder / name))
    return path if path.is_relative_to(os.path.normpath(folder)) else None


def _basename(name: str) -> str:
    # Datasets may carry Windows-style paths; split on both separators.
    return PureWindowsPath(name).name


def _usable_file(path: Path) -> bool:
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def _image_value(path: Path, embed: bool) -> ImageRef:
    return path.read_bytes() if embed else str(path.absolute())


def find_mention_image_folder(dataset_dir: Path) -> Tuple[Optional[Path], bool]:
    """Return the mention image folder and whether it is the ``mention_images`` fallback.

    dataset_dir (Path): The dataset folder.
    RETURNS (Tuple[Optional[Path], bool]): The folder (None if neither exists) and the flag.
    """
    for i, name in enumerate(MENTION_IMAGE_DIRS):
        if (dataset_dir / name).is_dir():
            return dataset_dir / name, i > 0
    return None, False


def resolve_mention_image(img_path: Any, folder: Optional[Path]) -> Tuple[str, Optional[Path]]:
    """Find a mention image the way MIMIC and M3EL do: basename with ``.jpg`` forced.

    If the ``.jpg`` file does not exist but the original basename does, that is used.

    img_path (Any): The record's ``imgPath``.
    folder (Optional[Path]): The mention image folder, if there is one.
    RETURNS (Tuple[str, Optional[Path]]): A status (``"found"``, ``"missing"``,
        ``"empty_path"`` or ``"unsafe"``) and the file if found.
    """
    if not isinstance(img_path, str) or not img_path.strip():
        return "empty_path", None
    img_path = img_path.strip()
    if is_unsafe_name(img_path):
        return "unsafe", None
    base = _basename(img_path)
    if folder is None or base in ("", ".", ".."):
        return "missing", None
    forced_jpg = os.path.splitext(base)[0] + ".jpg"
    for candidate in dict.fromkeys((forced_jpg, base)):
        path = safe_join(folder, candidate)
        if path is not None and _usable_file(path):
            return "found", path
    return "missing", None
