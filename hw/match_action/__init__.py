"""Match-action programs: format, checker, compiler to the RTL configuration, control plane."""
