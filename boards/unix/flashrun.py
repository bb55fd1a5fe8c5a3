"""Run a device app under the MicroPython Unix port with a board's filesystem.

    micropython flashrun.py FLASH_IMAGE LIB_DIR [APP.py]

Mounts the littlefs2 image at / and LIB_DIR (aziot, umqtt) at /lib, the
paths a board uses, then runs APP.py or, like a board, /main.py from flash.
"""

import sys
import vfs


class FileBlockDevice:
    """A littlefs block device backed by an image file (vfs block protocol)."""

    BLOCK_SIZE = 4096

    def __init__(self, path):
        self._f = open(path, "r+b")
        self._f.seek(0, 2)
        self._blocks = self._f.tell() // self.BLOCK_SIZE

    def readblocks(self, block, buf, offset=0):
        self._f.seek(block * self.BLOCK_SIZE + offset)
        self._f.readinto(buf)

    def writeblocks(self, block, buf, offset=0):
        self._f.seek(block * self.BLOCK_SIZE + offset)
        self._f.write(buf)
        self._f.flush()

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self._blocks
        if op == 5:  # block size
            return self.BLOCK_SIZE
        if op == 6:  # erase: littlefs overwrites whole blocks, nothing to do
            return 0
        return None


def main(argv):
    if len(argv) < 3:
        print("usage: micropython flashrun.py FLASH_IMAGE LIB_DIR [APP.py]")
        sys.exit(2)
    image, lib_dir = argv[1], argv[2]
    app = None
    if len(argv) > 3:
        with open(argv[3]) as f:  # read before the host filesystem is unmounted
            app = f.read()
    device = FileBlockDevice(image)
    vfs.umount("/")
    vfs.mount(vfs.VfsLfs2(device), "/")
    vfs.mount(vfs.VfsPosix(lib_dir), "/lib")
    sys.path[:] = ["", "/lib", ".frozen"]
    sys.argv[:] = [argv[3] if app else "/main.py"] + argv[4:]
    if app is None:
        with open("/main.py") as f:
            app = f.read()
    exec(compile(app, sys.argv[0], "exec"), {"__name__": "__main__"})


main(sys.argv)
