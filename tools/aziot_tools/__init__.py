"""Host-side tools for aziot: hub emulator, provisioning, device runner."""
