"""Run device code under the MicroPython Unix port with a flash image."""

import os
import subprocess
from dataclasses import dataclass

from . import deps, paths


@dataclass
class DeviceRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def prepare_unix_lib(lib_dir: str = paths.UNIX_LIB) -> str:
    """build/unix-lib: a link to lib/aziot and the pinned umqtt.simple."""
    os.makedirs(lib_dir, exist_ok=True)
    link = os.path.join(lib_dir, "aziot")
    if not os.path.islink(link):
        os.symlink(os.path.relpath(os.path.join(paths.LIB, "aziot"), lib_dir), link)
    deps.fetch_umqtt(lib_dir)
    return lib_dir


def run(image: str, app: str = None, *app_args, timeout: float = 60, heap: str = None,
        lib_dir: str = paths.UNIX_LIB, env: dict = None) -> DeviceRun:
    """Run app (a .py path, with app_args as sys.argv[1:]) or the image's /main.py.

    heap, e.g. "160K", gives MicroPython a board-sized heap.
    """
    cmd = [paths.micropython()]
    if heap:
        cmd += ["-X", "heapsize=" + heap]
    cmd += [paths.FLASHRUN, image, lib_dir]
    if app:
        cmd += [app, *app_args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))
    return DeviceRun(proc.returncode, proc.stdout, proc.stderr)
