"""TCP offload engine: ARP, ICMP echo, IPv4 and per-session TCP."""
