"""aziot: Azure IoT Hub over MQTT and TLS 1.2 for MicroPython (ESP32, Pico W, Unix port)."""

__version__ = "0.2.0"
