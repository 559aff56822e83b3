"""Renderer throughput, as ratios measured in one run on the same conversations.

For each renderer: tokens/s of ``build_supervised_example`` (ours), of ``apply_chat_template(tokenize=True)``
(the template baseline) and of the raw fast tokenizer's ``encode`` of the same rendered text (the floor: no
rendering at all). Targets: ours >= 0.7x raw encode, >= 3x apply_chat_template.

Contenders in the same run, on the same conversations: tinker-cookbook's and tml-renderers' renderers for the same
name, where they are installed (the ``[peers]`` extra; tml-renderers needs torch) and offer the name, through the
conformance adapters of ``cookbook.conformance.impls`` (their time includes the adapters' message translation,
which is a dict copy per message). Each is printed as its ratio to the raw encode, like ours; no target applies.

    python benchmarks/bench_renderers.py [--n 1000] [--renderers llama3 qwen3] [--peers/--no-peers] [--profile]

Every built-in renderer that has a spec is measured (by default) with its spec's tokenizer and the spec's pinned
template kwargs; the conversations are plain system/user/assistant text, so every family's template can render them.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable, Collection
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had by word "
    "but not what all were we when your can said there use an each which she do how their if will up other about "
    "out many then them these so some her would make like him into time has look two more write go see number no "
    "way could people my than first water been call who oil its now find long down day did get come made may part "
    "你好 世界 数学 🙂 👋 café naïve — 2+2=4 x² {\"k\": 1} ```python print(1)```"
).split()

def spec_targets() -> dict[str, tuple[str, dict[str, Any], bool]]:
    """``renderer -> (model, template kwargs, template is an oracle)`` for every built-in renderer with a spec."""
    from cookbook.conformance.spec import load_spec, spec_path_for
    from cookbook.renderers import builtin_renderer_names

    out: dict[str, tuple[str, dict[str, Any], bool]] = {}
    for name in builtin_renderer_names():
        path = spec_path_for(name)
        if path.exists():
            spec = load_spec(path)
            out[name] = (spec.tokenizer, dict(spec.oracle.template_kwargs), spec.oracle.kind == "chat_template")
    return out


def make_conversations(n: int, seed: int = 0) -> list[list[dict[str, Any]]]:
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    convs = []
    for _ in range(n):
        msgs: list[dict[str, Any]] = []
        if rng.random() < 0.5:
            msgs.append({"role": "system", "content": text(5, 30)})
        for _t in range(rng.randint(1, 4)):
            msgs.append({"role": "user", "content": text(5, 80)})
            msgs.append({"role": "assistant", "content": text(10, 200)})
        convs.append(msgs)
    return convs


def timed_together(
    fns: dict[str, Callable[[], int]], repeat: int = 3, optional: Collection[str] = ()
) -> dict[str, tuple[float, int]]:
    """Best wall time of ``repeat`` runs and the token count of each function. The runs are interleaved (one of each
    per round), so a slow spell of a shared machine falls on all of them and the ratios between them hold. An
    ``optional`` function that raises (a peer refusing a conversation) is reported once and left out; any other
    raises."""
    best: dict[str, tuple[float, int]] = {key: (float("inf"), 0) for key in fns}
    for _ in range(repeat):
        for key in list(best):
            t0 = time.perf_counter()
            try:
                count = fns[key]()
            except Exception as exc:
                if key not in optional:
                    raise
                print(f"  ({key}: not measured: {type(exc).__name__}: {exc})")
                del best[key]
                continue
            best[key] = (min(best[key][0], time.perf_counter() - t0), count)
    return best


#: peer implementations measured as contenders (``--impl`` keys of the conformance runner)
CONTENDERS = ("tinker-cookbook", "tml-renderers")


def peer_renderers(name: str, tokenizer: Any) -> dict[str, Any]:
    """The contenders that offer ``name`` here, built through the conformance adapters; a peer that is not
    installed, does not have the name or fails to build is left out with a one-line note."""
    from cookbook.conformance.impls import get_implementation

    out: dict[str, Any] = {}
    for key in CONTENDERS:
        impl = get_implementation(key)
        if impl.available() is not None or not impl.offers([name]):
            continue
        try:
            out[key] = impl.make(name, tokenizer)
        except Exception as exc:  # a peer's own limitation (Unsupported) or a failing import
            print(f"  ({key} {name}: not measured: {type(exc).__name__}: {exc})")
    return out


def bench(
    name: str,
    model: str,
    convs: list[list[dict[str, Any]]],
    repeat: int,
    template_kwargs: dict[str, Any] | None = None,
    has_oracle: bool = True,
    peers: bool = True,
) -> dict[str, float]:
    from cookbook.renderers import get_renderer
    from cookbook.tokenizers import MODELS, get_tokenizer

    tok = get_tokenizer(model)
    renderer = get_renderer(name, tok)
    kwargs = dict(MODELS[model].template_kwargs) if model in MODELS else {}
    kwargs.update(template_kwargs or {})
    backend = tok.backend_tokenizer
    texts = [renderer.decode(renderer.supervised_tokens(c)[0]) for c in convs]  # type: ignore[attr-defined]

    def ours() -> int:
        return sum(len(renderer.build_supervised_example(c)[1]) for c in convs)

    def raw() -> int:
        return sum(len(backend.encode(t, add_special_tokens=False).ids) for t in texts)

    def template() -> int:
        total = 0
        for c in convs:
            r = tok.apply_chat_template(c, tokenize=True, add_generation_prompt=False, **kwargs)
            total += len(r["input_ids"] if hasattr(r, "keys") else r)
        return total

    has_template = bool(getattr(tok, "chat_template", None)) and has_oracle
    fns: dict[str, Callable[[], int]] = {"ours": ours, "raw": raw}
    if has_template:
        fns["template"] = template
    for key, peer in (peer_renderers(name, tok) if peers else {}).items():

        def contender(peer: Any = peer) -> int:
            return sum(len(peer.build_supervised_example(c)[0]) for c in convs)

        fns[f"{key} {name}"] = contender
    got = timed_together(fns, repeat, optional={f"{key} {name}" for key in CONTENDERS})
    rate = {key: n / t for key, (t, n) in got.items()}
    res = {
        "ours_tok_s": rate["ours"],
        "raw_tok_s": rate["raw"],
        "template_tok_s": rate.get("template", float("nan")),
    }
    res["vs_raw"] = res["ours_tok_s"] / res["raw_tok_s"]
    res["vs_template"] = res["ours_tok_s"] / res["template_tok_s"]
    for key in CONTENDERS:
        if f"{key} {name}" in rate:
            res[f"{key}_vs_raw"] = rate[f"{key} {name}"] / res["raw_tok_s"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000, help="conversations (>= 1000 for the reported numbers)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--renderers", nargs="*", default=None, help="default: every built-in renderer with a spec")
    ap.add_argument("--profile", action="store_true", help="cProfile build_supervised_example (first renderer)")
    ap.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure tinker-cookbook and tml-renderers where installed (default: on)")
    args = ap.parse_args()
    targets = spec_targets()
    names = args.renderers if args.renderers is not None else sorted(targets)
    convs = make_conversations(args.n)
    print(f"{args.n} conversations, best of {args.repeat}")
    print(f"{'renderer':<28} {'ours tok/s':>12} {'raw encode':>12} {'template':>12} {'vs raw':>8} {'vs tmpl':>8}  targets"
          f"   contenders (tok/s ÷ raw encode)")
    missed = []
    for name in names:
        if name not in targets:
            print(f"{name:<28} (skipped: not a built-in renderer with a spec)")
            continue
        model, tkw, oracle = targets[name]
        try:
            r = bench(name, model, convs, args.repeat, tkw, oracle, args.peers)
        except Exception as exc:  # a renderer still being written
            print(f"{name:<28} (skipped: {type(exc).__name__}: {exc})")
            continue
        ok_raw = r["vs_raw"] >= 0.7
        ok_tpl = r["vs_template"] != r["vs_template"] or r["vs_template"] >= 3.0
        print(
            f"{name:<28} {r['ours_tok_s']:>12,.0f} {r['raw_tok_s']:>12,.0f} {r['template_tok_s']:>12,.0f} "
            f"{r['vs_raw']:>7.2f}x {r['vs_template']:>7.2f}x  {'ok' if ok_raw else 'MISS >=0.7x raw'}"
            f"{'' if ok_tpl else ', MISS >=3x template'}"
            + "".join(f"   {key} {r[f'{key}_vs_raw']:.2f}x" for key in CONTENDERS if f"{key}_vs_raw" in r)
        )
        if not (ok_raw and ok_tpl):
            missed.append(name)
    if args.profile or missed:
        import cProfile
        import pstats

        from cookbook.renderers import get_renderer
        from cookbook.tokenizers import get_tokenizer

        name = (missed or names)[0]
        renderer = get_renderer(name, get_tokenizer(targets[name][0]))
        prof = cProfile.Profile()
        prof.enable()
        for c in convs:
            renderer.build_supervised_example(c)  # type: ignore[arg-type]
        prof.disable()
        print(f"\nprofile of {name}.build_supervised_example over {len(convs)} conversations (top 15 by own time):")
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
