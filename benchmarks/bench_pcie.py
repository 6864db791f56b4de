"""Wall time of the PCIe calendar model per call, and of a saturating simulation.

An end-to-end simulation charges every DMA, doorbell and interrupt on the link, so these calls
sit on its hot path. Prints a table (microseconds per call on this machine); asserts nothing.
"""

import time

import simpy

from nicsim.sim.pcie import PcieConfig, PcieLink, simulate_bandwidth

CALLS = 200_000


def per_call_us(method, *args):
    start = time.perf_counter()
    for _ in range(CALLS):
        method(*args)
    return (time.perf_counter() - start) / CALLS * 1e6


def main():
    cases = [("dma_write", (0, 64)), ("dma_write", (0, 256)), ("dma_write", (0, 1500)),
             ("dma_read", (0, 64)), ("dma_read", (0, 1500)), ("msi", (0xFEE0_0000,)),
             ("mmio_write", (0x1000, 8)), ("mmio_read", (0x1000, 4))]
    print(f"{'call':24} us/call")
    for name, args in cases:
        env = simpy.Environment()
        link = PcieLink(env, PcieConfig(gen=3, lanes=8))
        label = f"{name}{args[1:] if len(args) > 1 else ''}"
        print(f"{label:24} {per_call_us(getattr(link, name), *args):.2f}")
    for op, size in (("write", 64), ("read", 1500)):
        start = time.perf_counter()
        simulate_bandwidth(PcieConfig(gen=3, lanes=8), op, size, 10_000)
        print(f"simulate {op} {size} B x 10,000: {time.perf_counter() - start:.3f} s")


if __name__ == "__main__":
    main()
