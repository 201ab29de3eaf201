"""Print the path of a Python interpreter of one minor version (default 3.13, the functions' runtime).

    python3 tools/find_python.py          # e.g. /root/.pyenv/versions/3.13.0/bin/python3.13
    python3 tools/find_python.py 3.12

Looks on PATH first (`python3.13`), then in pyenv's versions ($PYENV_ROOT or ~/.pyenv, newest patch
release first). A pyenv shim on PATH counts only if it really runs that version: a shim whose version
is not selected exits with an error. Exit 2 with a message on stderr when none is found.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path


def _runs(candidate: str, version: str) -> bool:
    try:
        result = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return False
    return result.returncode == 0 and result.stdout.strip() == version


def _patch_level(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.parent.name))


def find_python(version: str = "3.13") -> str | None:
    on_path = shutil.which(f"python{version}")
    if on_path and _runs(on_path, version):
        return on_path
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    installed = sorted(pyenv_root.glob(f"versions/{version}.*/bin/python{version}"), key=_patch_level, reverse=True)
    return next((str(path) for path in installed if _runs(str(path), version)), None)


def main(argv: list[str]) -> int:
    version = argv[1] if len(argv) > 1 else "3.13"
    found = find_python(version)
    if found is None:
        print(f"find_python: no python{version} on PATH or in pyenv's versions; install one", file=sys.stderr)
        return 2
    print(found)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
