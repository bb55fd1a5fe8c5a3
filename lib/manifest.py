# micropython-lib style manifest for the aziot package (used by firmware/manifest.py).
metadata(description="Azure IoT Hub over MQTT and TLS 1.2 (X.509) for MicroPython", version="0.1.0")
require("umqtt.simple")
package("aziot")
