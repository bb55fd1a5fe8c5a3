# aziot firmware for ESP32 modules: the upstream ESP32_GENERIC board
# (ports/esp32/boards/ESP32_GENERIC) plus the aziot_tls hook and the library
# frozen in. Use as the esp32 port's BOARD_DIR, with ESP-IDF in the
# environment (IDF_PATH):
#   make -C $MPY_DIR/ports/esp32 BOARD_DIR=<repo>/boards/ESP32_GENERIC
# Written from ESP-IDF's documented Kconfig options and MicroPython's board
# files; not built by this project's CI, which has no ESP-IDF.

include(${MICROPY_PORT_DIR}/boards/ESP32_GENERIC/mpconfigboard.cmake)

set(AZIOT_DIR ${CMAKE_CURRENT_LIST_DIR}/../..)

# ESP-IDF compiles mbedTLS as its own component from sdkconfig, so the record
# buffers come from sdkconfig.aziot rather than aziot_mbedtls_config.h. The
# hook (a link-time --wrap) works the same: MicroPython's modtls calls IDF's
# mbedtls_ssl_config_defaults() from another object file.
list(APPEND SDKCONFIG_DEFAULTS ${CMAKE_CURRENT_LIST_DIR}/sdkconfig.aziot)

set(MICROPY_FROZEN_MANIFEST ${CMAKE_CURRENT_LIST_DIR}/manifest.py)

set(AZIOT_TLS_IN_LEN 16384)  # informational here: sdkconfig.aziot sets the real sizes
set(AZIOT_TLS_OUT_LEN 4096)
set(AZIOT_TLS_DEFAULT_MFL 2048)
set(AZIOT_TLS_VARIABLE_BUFFERS 1)  # shrink both buffers to an agreed MFL after the handshake
set(AZIOT_TLS_ECC_ONLY 0)
set(USER_C_MODULES ${AZIOT_DIR}/firmware/aziot_tls/micropython.cmake)
