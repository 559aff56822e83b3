"""``cookbook tokenizers list``: the model catalogue (Tinker's lineup first) and what is cached."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--families", action="store_true", help="list tokenizer families instead of models")


def run(args: argparse.Namespace) -> int:
    from cookbook.hyperparams import lr_recommendation
    from cookbook.tokenizers.catalogue import FAMILIES, MODELS, known_model_names
    from cookbook.tokenizers.provision import cache_root, is_built

    print(f"cache: {cache_root()}")
    if args.families:
        for name, fam in sorted(FAMILIES.items()):
            mark = "cached" if is_built(name) else "-"
            print(f"{name:<16} {mark:<7} {fam.description}")
        return 0
    names = known_model_names()
    print("lineup = in Tinker's lineup (tinker-cookbook 0.6.1); lr = recommended LoRA learning rate "
          "(* = uncalibrated base rate); cached: '-' = no tokenizer available offline")
    print(f"{'model':<52} {'lineup':<6} {'family':<16} {'cached':<6} {'lr':<9} renderers")
    for name in sorted(names, key=lambda n: (not MODELS[n].in_lineup, n)):
        m = MODELS[name]
        if m.family is not None:
            fam_name, mark = m.family, "yes" if is_built(m.family) else "no"
        elif m.tokenizer_path is not None:
            fam_name, mark = "(folder)", "yes"
        else:
            fam_name, mark = "-", "-"
        rec = lr_recommendation(name)
        lr = f"{rec.value:.2e}" + ("" if rec.calibrated else "*")
        print(f"{name:<52} {'yes' if m.in_lineup else '':<6} {fam_name:<16} {mark:<6} {lr:<9} {', '.join(m.renderers)}")
    return 0
