# aziot firmware for the Raspberry Pi Pico W: the upstream RPI_PICO_W board
# (ports/rp2/boards/RPI_PICO_W) plus the aziot_tls hook, the aziot mbedTLS
# configuration and the library frozen in. Use as the rp2 port's BOARD_DIR:
#   make -C $MPY_DIR/ports/rp2 BOARD_DIR=<repo>/boards/RPI_PICO_W
# (`make firmware BOARD=RPI_PICO_W MPY_DIR=...` does that.)

include(${MICROPY_PORT_DIR}/boards/RPI_PICO_W/mpconfigboard.cmake)

set(AZIOT_DIR ${CMAKE_CURRENT_LIST_DIR}/../..)

# Frozen: the upstream board's modules, umqtt.simple and aziot.
set(MICROPY_FROZEN_MANIFEST ${CMAKE_CURRENT_LIST_DIR}/manifest.py)
set(MICROPY_BOARD_PINS ${MICROPY_PORT_DIR}/boards/RPI_PICO_W/pins.csv)

# TLS: a standard IoT Hub ignores Maximum Fragment Length and sends records of
# up to 16 KB, so the receive buffer holds 16 KB (as upstream's does). Where a
# preview-mode hub agrees to MFL (asked for at 2048 by default), both buffers
# shrink to it after the handshake (variable buffers; aziot_tls keeps the
# receive buffer whole when the hub did not agree). The send buffer holds the
# device's Certificate message (0.4 KB self-signed P-256, ~1 KB with a fleet CA).
set(AZIOT_TLS_IN_LEN 16384)
set(AZIOT_TLS_OUT_LEN 4096)
set(AZIOT_TLS_DEFAULT_MFL 2048)
set(AZIOT_TLS_VARIABLE_BUFFERS 1)  # shrink both buffers to an agreed MFL after the handshake
set(AZIOT_TLS_ECC_ONLY 0)  # 1 drops the RSA fallback for ECC-only hubs
set(MBEDTLS_CONFIG_FILE ${AZIOT_DIR}/firmware/aziot_tls/aziot_mbedtls_config.h)
add_compile_definitions(AZIOT_PORT_MBEDTLS_CONFIG="${MICROPY_PORT_DIR}/mbedtls/mbedtls_config_port.h")
set(USER_C_MODULES ${AZIOT_DIR}/firmware/aziot_tls/micropython.cmake)
