# The upstream Pico W manifest (networking, Bluetooth), then umqtt.simple and aziot.
include("$(PORT_DIR)/boards/RPI_PICO_W/manifest.py")
include("../../firmware/manifest.py")
