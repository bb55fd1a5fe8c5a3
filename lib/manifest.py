# micropython-lib style manifest for the aziot package (used by firmware/manifest.py).
metadata(description="Azure IoT Hub over MQTT and TLS 1.2 (X.509): telemetry, methods, twin, C2D", version="0.2.0")
require("umqtt.simple")
package("aziot")
