// aziot firmware for the Raspberry Pi Pico W: the upstream board's settings.
#include "boards/RPI_PICO_W/mpconfigboard.h"
