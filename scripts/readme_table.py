"""Regenerate the README's table of blocks from benchmarks/results/*.json."""

import json
from pathlib import Path

TOP = Path(__file__).resolve().parents[1]
START, END = "<!-- blocks-table:start -->", "<!-- blocks-table:end -->"
#: The legend of a flow option, shown where some row's ``nextpnr_args`` has it.
FLOW_LEGENDS = [
    ("router2", " \u2020 routed with nextpnr's router2 (`nicsim synth --router router2`), where "
                "its default router did not finish."),
    ("--placer static", " \u2021 placed with nextpnr's electrostatic placer (`nicsim synth "
                        "--placer static`), where HeAP's placement did not route."),
]


def _load(name):
    path = TOP / "benchmarks" / "results" / name
    return json.loads(path.read_text()) if path.exists() else {"results": []}


def table():
    synth = _load("synth.json")
    engines = {(r["engine"], r["width"]): r for r in _load("engines.json")["results"]}
    device = synth.get("device", "ecp5-85k")
    lines = [
        f"| block | width | fmax ({device}) | LUT4 | FF | BRAM | beats/cycle, 60 B frames "
        "| beats/cycle, 256 B frames |",
        "|---|---|---|---|---|---|---|---|",
    ]
    seen = set()
    for r in synth["results"]:
        key = (r["design"], r["params"]["width"])
        seen.add(key)
        e = engines.get(key, {})
        args = r.get("nextpnr_args") or ""
        mark = ((" *" if "timingweight" in args else "")
                + (" \u2021" if "--placer static" in args else "")
                + (" \u2020" if "router2" in args else ""))
        program = r["params"].get("program")  # match-action: one row per program
        name = f"{key[0]} ({Path(program).stem})" if program else key[0]
        lines.append(f"| {name} | {key[1]} | {r['fmax_mhz']} MHz{mark} | {r['luts']} | "
                     f"{r['ffs']} | {r['brams']} | {e.get('beats_per_cycle_60B', '-')} | "
                     f"{e.get('beats_per_cycle_256B', '-')} |")
    for key, e in sorted(engines.items()):
        if key not in seen:
            lines.append(f"| {key[0]} | {key[1]} | - | - | - | - | "
                         f"{e.get('beats_per_cycle_60B', '-')} | "
                         f"{e.get('beats_per_cycle_256B', '-')} |")
    lines.append("")
    lines.append("Synthesis: yosys + nextpnr out of context, figures from `make synth` (the "
                 "match-action programs' from `nicsim synth match-action --program P --record "
                 "benchmarks/results/synth.json`); "
                 "line rate from `make bench` (1.0 = one beat every clock cycle). "
                 "\\* placed with HeAP's timing weight at 52 (`hw/synth.py`, the flow now); "
                 "the other rows predate it (nextpnr's default, 10)."
                 + "".join(legend for needle, legend in FLOW_LEGENDS
                           if any(needle in (r.get("nextpnr_args") or "")
                                  for r in synth["results"])))
    return "\n".join(lines)


def main():
    readme = TOP / "README.md"
    text = readme.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{table()}\n{END}{tail}")
    print("README.md table updated")


if __name__ == "__main__":
    main()
