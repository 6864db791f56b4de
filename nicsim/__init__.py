"""nicsim: NIC hardware/software co-simulation."""
__version__ = "0.1.0"
