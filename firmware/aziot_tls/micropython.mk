# aziot_tls as a MicroPython user C module, for make-based ports (unix):
#   make USER_C_MODULES=<repo>/firmware MBEDTLS_CONFIG_FILE='"aziot_mbedtls_config.h"'
# The Makefile's `unix-mfl` target passes all of this.
AZIOT_TLS_DIR := $(USERMOD_DIR)

AZIOT_TLS_IN_LEN ?= 16384
AZIOT_TLS_OUT_LEN ?= 4096
AZIOT_TLS_ECC_ONLY ?= 0
AZIOT_TLS_DEFAULT_MFL ?= 0
AZIOT_TLS_VARIABLE_BUFFERS ?= 1
AZIOT_TLS_GC_HEAP ?= 0

SRC_USERMOD_C += $(AZIOT_TLS_DIR)/modaziot_tls.c $(AZIOT_TLS_DIR)/verify_cache.c \
	$(AZIOT_TLS_DIR)/public_inverse.c

# What the export of remembered signatures is tagged with (verify_cache.c): these sources' checksum, so
# that a file remembered by a build with other verification code is not believed. verify_cache.c is
# compiled again whenever one of them changes.
AZIOT_TLS_SOURCES := $(wildcard $(AZIOT_TLS_DIR)/*.c $(AZIOT_TLS_DIR)/*.h)
AZIOT_TLS_SOURCE_ID := $(shell cat $(AZIOT_TLS_SOURCES) | cksum | cut -d' ' -f1)
$(BUILD)/aziot_tls/verify_cache.o: $(AZIOT_TLS_SOURCES)

# CFLAGS_USERMOD reach every compile unit (mbedTLS and modtls_mbedtls.c too),
# which the config header needs: it changes mbedtls_ssl_config's layout.
CFLAGS_USERMOD += -I$(AZIOT_TLS_DIR) \
	-DAZIOT_TLS_IN_LEN=$(AZIOT_TLS_IN_LEN) -DAZIOT_TLS_OUT_LEN=$(AZIOT_TLS_OUT_LEN) \
	-DAZIOT_TLS_ECC_ONLY=$(AZIOT_TLS_ECC_ONLY) -DAZIOT_TLS_DEFAULT_MFL=$(AZIOT_TLS_DEFAULT_MFL) \
	-DAZIOT_TLS_VARIABLE_BUFFERS=$(AZIOT_TLS_VARIABLE_BUFFERS) -DAZIOT_TLS_GC_HEAP=$(AZIOT_TLS_GC_HEAP) \
	-DAZIOT_TLS_SOURCE_ID=$(AZIOT_TLS_SOURCE_ID)

# The hooks: every mbedtls_ssl_config_defaults() call goes through aziot_tls first; certificate
# signature checks go through verify_cache.c; inverses inside ECDSA verification through public_inverse.c.
LDFLAGS_USERMOD += -Wl,--wrap=mbedtls_ssl_config_defaults \
	-Wl,--wrap=mbedtls_ssl_set_bio -Wl,--wrap=mbedtls_ssl_handshake_wrapup \
	-Wl,--wrap=mbedtls_pk_verify_ext -Wl,--wrap=mbedtls_ssl_free \
	-Wl,--wrap=mbedtls_ecdsa_read_signature -Wl,--wrap=mbedtls_mpi_gcd_modinv_odd \
	-Wl,--wrap=mbedtls_ssl_handshake
