# aziot_tls as a MicroPython user C module, for CMake-based ports (rp2, esp32).
# The board folders in boards/ include this through USER_C_MODULES and set:
#   AZIOT_TLS_IN_LEN, AZIOT_TLS_OUT_LEN, AZIOT_TLS_ECC_ONLY, AZIOT_TLS_DEFAULT_MFL,
#   AZIOT_TLS_VARIABLE_BUFFERS
add_library(usermod_aziot_tls INTERFACE)

target_sources(usermod_aziot_tls INTERFACE ${CMAKE_CURRENT_LIST_DIR}/modaziot_tls.c
    ${CMAKE_CURRENT_LIST_DIR}/verify_cache.c ${CMAKE_CURRENT_LIST_DIR}/public_inverse.c)

# What the export of remembered signatures is tagged with (verify_cache.c): these sources' hash, so that
# a file remembered by a build with other verification code is not believed. A change to one of them
# configures again, and the changed definition compiles verify_cache.c again.
file(GLOB AZIOT_TLS_SOURCES ${CMAKE_CURRENT_LIST_DIR}/*.c ${CMAKE_CURRENT_LIST_DIR}/*.h)
set(AZIOT_TLS_HASHES "")
foreach(source ${AZIOT_TLS_SOURCES})
    file(SHA256 ${source} hash)
    string(APPEND AZIOT_TLS_HASHES ${hash})
endforeach()
string(SHA256 AZIOT_TLS_HASH "${AZIOT_TLS_HASHES}")
string(SUBSTRING ${AZIOT_TLS_HASH} 0 8 AZIOT_TLS_SOURCE_ID)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${AZIOT_TLS_SOURCES})

# INTERFACE: the definitions and include path reach every source of the
# firmware target, mbedTLS's included (rp2 compiles it into the firmware).
target_include_directories(usermod_aziot_tls INTERFACE ${CMAKE_CURRENT_LIST_DIR})
target_compile_definitions(usermod_aziot_tls INTERFACE
    AZIOT_TLS_IN_LEN=${AZIOT_TLS_IN_LEN}
    AZIOT_TLS_OUT_LEN=${AZIOT_TLS_OUT_LEN}
    AZIOT_TLS_ECC_ONLY=${AZIOT_TLS_ECC_ONLY}
    AZIOT_TLS_DEFAULT_MFL=${AZIOT_TLS_DEFAULT_MFL}
    AZIOT_TLS_VARIABLE_BUFFERS=${AZIOT_TLS_VARIABLE_BUFFERS}
    AZIOT_TLS_SOURCE_ID=0x${AZIOT_TLS_SOURCE_ID}
)
target_link_options(usermod_aziot_tls INTERFACE -Wl,--wrap=mbedtls_ssl_config_defaults
    -Wl,--wrap=mbedtls_ssl_set_bio -Wl,--wrap=mbedtls_ssl_handshake_wrapup -Wl,--wrap=mbedtls_pk_verify_ext
    -Wl,--wrap=mbedtls_ssl_free -Wl,--wrap=mbedtls_ecdsa_read_signature -Wl,--wrap=mbedtls_mpi_gcd_modinv_odd
    -Wl,--wrap=mbedtls_ssl_handshake)

target_link_libraries(usermod INTERFACE usermod_aziot_tls)
