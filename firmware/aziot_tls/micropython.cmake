# aziot_tls as a MicroPython user C module, for CMake-based ports (rp2, esp32).
# The board folders in boards/ include this through USER_C_MODULES and set:
#   AZIOT_TLS_IN_LEN, AZIOT_TLS_OUT_LEN, AZIOT_TLS_ECC_ONLY, AZIOT_TLS_DEFAULT_MFL,
#   AZIOT_TLS_VARIABLE_BUFFERS
add_library(usermod_aziot_tls INTERFACE)

target_sources(usermod_aziot_tls INTERFACE ${CMAKE_CURRENT_LIST_DIR}/modaziot_tls.c
    ${CMAKE_CURRENT_LIST_DIR}/verify_cache.c ${CMAKE_CURRENT_LIST_DIR}/public_inverse.c)

# INTERFACE: the definitions and include path reach every source of the
# firmware target, mbedTLS's included (rp2 compiles it into the firmware).
target_include_directories(usermod_aziot_tls INTERFACE ${CMAKE_CURRENT_LIST_DIR})
target_compile_definitions(usermod_aziot_tls INTERFACE
    AZIOT_TLS_IN_LEN=${AZIOT_TLS_IN_LEN}
    AZIOT_TLS_OUT_LEN=${AZIOT_TLS_OUT_LEN}
    AZIOT_TLS_ECC_ONLY=${AZIOT_TLS_ECC_ONLY}
    AZIOT_TLS_DEFAULT_MFL=${AZIOT_TLS_DEFAULT_MFL}
    AZIOT_TLS_VARIABLE_BUFFERS=${AZIOT_TLS_VARIABLE_BUFFERS}
)
target_link_options(usermod_aziot_tls INTERFACE -Wl,--wrap=mbedtls_ssl_config_defaults
    -Wl,--wrap=mbedtls_ssl_set_bio -Wl,--wrap=mbedtls_ssl_handshake_wrapup -Wl,--wrap=mbedtls_pk_verify_ext
    -Wl,--wrap=mbedtls_ssl_free -Wl,--wrap=mbedtls_ecdsa_read_signature -Wl,--wrap=mbedtls_mpi_gcd_modinv_odd)

target_link_libraries(usermod INTERFACE usermod_aziot_tls)
