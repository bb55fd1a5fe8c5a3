# The upstream ESP32 manifest, then umqtt.simple and aziot.
include("$(PORT_DIR)/boards/manifest.py")
include("../../firmware/manifest.py")
