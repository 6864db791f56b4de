"""The NIC as a device: register map, descriptor formats and the model backend."""
