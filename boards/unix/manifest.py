# The unix-mfl builds marked "frozen" (boards/unix/aziot_tls.json): the Unix port's standard
# modules plus aziot and umqtt.simple, frozen as a board's firmware freezes them.
include("$(PORT_DIR)/variants/standard/manifest.py")
include("../../firmware/manifest.py")
