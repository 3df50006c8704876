"""``tcsim models``: the shipped presets and their datapaths."""

from __future__ import annotations

import argparse
import json


def _cmd_models(args: argparse.Namespace) -> int:
    from ..presets import load_model, preset_names

    names = [args.name] if args.name else preset_names()
    models = [load_model(n) for n in names]
    if args.json:
        print(json.dumps([m.model_dump(mode="json") for m in models], indent=2))
        return 0
    for m in models:
        print(f"{m.name}: {m.description}")
        for p in m.paths:
            f = "exact" if p.fraction_bits is None else p.fraction_bits
            n = "K" if p.block_size is None else p.block_size
            extra = f", C {p.c_placement}" if p.c_placement != "inside" else ""
            if p.block_scale != "none":
                extra += (f", scales {'/'.join(p.scale_formats)} per "
                          f"{'/'.join(map(str, p.scale_blocks))} ({p.block_scale}"
                          f"{' of ' + str(p.group_size) if p.group_size else ''})")
            if p.lanes != 1:
                extra += f", {p.lanes} lanes (even/odd K)"
            if p.product_sum == "pairwise":
                extra += ", pairwise tree" + (" with FTZ at every node" if p.flush_nodes else "")
            if p.lowered_k is not None:
                extra += (f", lowered k{p.lowered_k}: {p.lowered_k // n} blocks from 0"
                          f"{' in k_order' if p.k_order else ''}, then + C")
            print(f"  {'/'.join(p.inputs):<28} -> {p.output:<4}  path {p.name:<9} n={n:<3} f={f:<5} "
                  f"out {p.effective_output_precision()} bits {p.output_rounding.upper()}"
                  f"{extra}  [{p.status}]")
        if args.name:
            for p in m.paths:
                for field, note in p.provenance.items():
                    print(f"    {p.name} {'/'.join(p.inputs)}->{p.output} {field}: {note}")
    return 0


def add_parser(sub) -> None:
    """Add the ``models`` command to ``sub`` (the subparsers of ``tcsim``)."""
    p = sub.add_parser("models", help="list presets and their datapaths",
                       description="List the shipped presets; with a NAME, also the provenance "
                                   "of every parameter.")
    p.add_argument("name", nargs="?", help="one preset name or TOML file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_models)
