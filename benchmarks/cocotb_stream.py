"""cocotb side of bench_engines.py: stream frames with cocotbext-axi and time it."""

import json
import os
import time

import cocotb
from cocotb.triggers import RisingEdge

from nicsim.hw.cocotb_tb import TB


@cocotb.test()
async def stream(dut):
    from cocotbext.axi import AxiStreamFrame

    blob = open(os.environ["BENCH_FRAMES"], "rb").read()
    frames, off = [], 0
    while off < len(blob):
        n = int.from_bytes(blob[off:off + 4], "little")
        frames.append(blob[off + 4:off + 4 + n])
        off += 4 + n
    result = next((n[len("m_axis_"):-len("_tdata")] for n in dir(dut)
                   if n.startswith("m_axis_") and n.endswith("_tdata") and n != "m_axis_tdata"),
                  None)
    tb = TB(dut, result=result)
    await tb.reset()
    has_user = hasattr(dut, "s_axis_tuser")
    start = time.perf_counter()
    for f in frames:
        await tb.source.send(AxiStreamFrame(f, tuser=(2 << 32) if has_user else None))
    got = 0
    while got < len(frames):
        if tb.result is not None:
            await tb.result.recv()
        else:
            await tb.sink.recv()
        got += 1
    await RisingEdge(dut.clk)
    seconds = time.perf_counter() - start
    with open(os.environ["BENCH_OUT"], "w") as handle:
        json.dump({"seconds": seconds}, handle)
