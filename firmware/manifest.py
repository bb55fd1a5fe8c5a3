# Frozen modules this project adds to a firmware: aziot and umqtt.simple (from
# micropython-lib, through lib/manifest.py's require). A board's manifest
# includes its upstream board manifest first, then this (see boards/*/manifest.py).
include("../lib/manifest.py")
