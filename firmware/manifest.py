# Frozen-module manifest for this project's firmware: the port's own modules,
# umqtt.simple from micropython-lib, and the aziot library.
# Used as FROZEN_MANIFEST by the board folders in boards/ (see README).
include("$(PORT_DIR)/boards/manifest.py")
include("../lib/manifest.py")
