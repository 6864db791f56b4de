"""eBPF: object loader, verifier, interpreter, maps and helpers, as XDP runs them."""
