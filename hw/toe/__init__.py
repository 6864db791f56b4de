"""The TCP offload engine as a device: harness and the bridge to a Linux peer."""
