"""cocotb testbench behind ``nicsim rtl run --backend rtl``: frames in, results out.

The job (a pickle named by ``NICSIM_RUN_JOB``) holds the frames, their ``tuser`` words, the
register writes that configure the design and the name of its result stream; the outcome
(output frames, their ``tuser``, result words, counters) goes to ``NICSIM_RUN_OUT``.
"""

import os
import pickle

import cocotb
from cocotb.triggers import RisingEdge

from nicsim.hw.cocotb_tb import TB

__all__ = ["run_job"]

# Counters of the checksum-tx engine (rtl/checksum_tx.py REGISTERS).
TX_FRAMES_OUT = 0x04
TX_DROPS = (0x08, 0x0C, 0x10)


def _last_user(frame):
    user = frame.tuser
    if isinstance(user, list):
        return int(user[-1]) if user else 0
    return int(user or 0)


@cocotb.test()
async def run_job(dut):
    from cocotbext.axi import AxiStreamFrame

    job = pickle.loads(open(os.environ["NICSIM_RUN_JOB"], "rb").read())
    tb = TB(dut, result=job["result"])
    await tb.reset()
    for addr, value in job["writes"]:
        resp = await tb.write_reg(addr, value)
        if resp != 0:
            raise RuntimeError(f"register write 0x{addr:03x} = 0x{value:x} was rejected")
    frames = job["frames"]
    has_user = hasattr(dut, "s_axis_tuser")
    for data, user in zip(frames, job["users"], strict=True):
        await tb.source.send(AxiStreamFrame(data, tuser=user if has_user else None))
    total_beats = sum(len(f) // 8 + 1 for f in frames)
    budget = 50 * total_beats + 20_000
    out = {"frames": [], "users": [], "results": [], "registers": {}}
    if tb.result is not None:
        while len(out["results"]) < len(frames):
            if tb.result.empty():
                await RisingEdge(dut.clk)
                budget -= 1
                if budget <= 0:
                    raise RuntimeError(f"the design gave {len(out['results'])} results for "
                                       f"{len(frames)} frames and stopped")
                continue
            beat = await tb.result.recv()
            out["results"].append(int.from_bytes(bytes(beat.tdata), "little"))
    else:
        while True:
            await tb.cycles(64)
            budget -= 64
            done, _ = await tb.read_reg(TX_FRAMES_OUT)
            for reg in TX_DROPS:
                done += (await tb.read_reg(reg))[0]
            if done >= len(frames):
                break
            if budget <= 0:
                raise RuntimeError(f"the design finished {done} of {len(frames)} frames "
                                   "and stopped")
        emitted, _ = await tb.read_reg(TX_FRAMES_OUT)
        while len(out["frames"]) < emitted:
            rx = await tb.sink.recv()
            out["frames"].append(bytes(rx.tdata))
            out["users"].append(_last_user(rx))
        out["registers"] = {f"0x{a:02x}": (await tb.read_reg(a))[0]
                            for a in (0x00, TX_FRAMES_OUT, *TX_DROPS)}
    with open(os.environ["NICSIM_RUN_OUT"], "wb") as handle:
        pickle.dump(out, handle)
