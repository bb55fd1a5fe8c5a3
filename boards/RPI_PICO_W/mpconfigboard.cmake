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

# TLS: records from the hub fragmented to 2048 bytes by default (RFC 6066);
# the receive buffer holds the hub's whole Certificate message (RSA chain:
# 3.3 KB; ECC: 1.9 KB, measured on the emulator's hub-shaped chains); the send
# buffer holds the device's Certificate message (0.4 KB for a self-signed
# P-256 certificate, ~1 KB with a fleet CA) and records of at most the MFL.
set(AZIOT_TLS_IN_LEN 4096)
set(AZIOT_TLS_OUT_LEN 2048)
set(AZIOT_TLS_DEFAULT_MFL 2048)
set(AZIOT_TLS_VARIABLE_BUFFERS 1)  # shrink both buffers to the MFL after the handshake
set(AZIOT_TLS_ECC_ONLY 0)  # 1 drops the RSA fallback for ECC-only hubs
set(MBEDTLS_CONFIG_FILE ${AZIOT_DIR}/firmware/aziot_tls/aziot_mbedtls_config.h)
add_compile_definitions(AZIOT_PORT_MBEDTLS_CONFIG="${MICROPY_PORT_DIR}/mbedtls/mbedtls_config_port.h")
set(USER_C_MODULES ${AZIOT_DIR}/firmware/aziot_tls/micropython.cmake)
