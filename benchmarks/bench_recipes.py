"""Recipe smoke-run timings (run by ``nox -s bench``; ``python benchmarks/bench_recipes.py [NAME ...]``).

Each recipe runs once with its defaults, offline, as ``python -m cookbook.recipes.NAME log_path=<tmp>`` in a
fresh subprocess (embedded mock Tinker, toy ``cookbook/tiny-chat`` model), exactly what the smoke tests in
``tests/loops/`` run. Reported per recipe: wall seconds of the whole process (interpreter start, mock server,
warm-up / teacher SFT where the recipe has one, training, report), the number of training steps logged, and
the first -> last value of the recipe's key metric. The baseline for the ratio column is ``sl_basic`` measured
in the same run (so the figures compare across machines). No assertions: the numbers are printed for the README.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPES: dict[str, str] = {  # recipe -> key metric
    "sl_basic": "train_mean_nll",
    "chat_sl": "test/nll",
    "rl_basic": "env/all/reward/total",
    "math_rl": "env/all/reward/total",
    "dpo": "dpo_loss",
    "distillation": "teacher_kl",
}


def _metric(log_path: Path, key: str) -> tuple[int, float | None, float | None]:
    rows = [json.loads(line) for line in (log_path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    vals = [r[key] for r in rows if isinstance(r.get(key), int | float)]
    steps = len({r["step"] for r in rows})
    return steps, (vals[0] if vals else None), (vals[-1] if vals else None)


def time_recipe(name: str) -> tuple[float, int, float | None, float | None]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TINKER_TELEMETRY": "0"}
    env.pop("TINKER_API_KEY", None)
    env.pop("TINKER_BASE_URL", None)
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        log_path = Path(tmp) / "run"
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", f"cookbook.recipes.{name}", f"log_path={log_path}"],
                             env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if out.returncode != 0:
            raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
        steps, first, last = _metric(log_path, RECIPES[name])
    return wall, steps, first, last


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def main(argv: list[str]) -> None:
    names = argv or list(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipe(s) {unknown}; choose from {', '.join(RECIPES)}")
    if "sl_basic" not in names:
        names = ["sl_basic", *names]
    print(f"recipe smoke runs, offline (embedded mock, cookbook/tiny-chat); {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus, python {platform.python_version()}")
    results = {n: time_recipe(n) for n in names}
    base = results["sl_basic"][0]
    print(f"{'recipe':<14}{'wall s':>8}{'x sl_basic':>12}{'steps':>7}  key metric (first -> last)")
    for n, (wall, steps, first, last) in results.items():
        print(f"{n:<14}{wall:>8.1f}{wall / base:>12.1f}{steps:>7}  {RECIPES[n]}: {_fmt(first)} -> {_fmt(last)}")




def bench_rl_requests(steps: int = 4) -> None:
    """rl_basic's rollouts (its default batches: 16 groups of 8, max_tokens 6) on one embedded mock, two
    ways in the same run: one sampling request per sample (what the RL loop did before: 8 requests per
    group) and one request per group (``num_samples = group_size``, spec R6). Reports wall seconds, request
    counts and the ratio. ``python benchmarks/bench_recipes.py --rl-requests``."""
    import asyncio

    import tinker

    from cookbook.mock import MockTinker
    from cookbook.recipes.common import make_renderer
    from cookbook.rl.envs import ArithmeticDataset
    from cookbook.rl.rollouts import TinkerTokenCompleter, _OneByOne, rollout_groups

    with tempfile.TemporaryDirectory(prefix="bench-rl-requests-") as tmp:
        mock = MockTinker(state_dir=Path(tmp) / "state").start()
        try:
            client = tinker.ServiceClient(base_url=mock.base_url, api_key=mock.api_key)
            tc = client.create_lora_training_client(base_model="cookbook/tiny-chat", rank=32, seed=0).result()
            sampler = tc.save_weights_and_get_sampling_client().result()
            renderer = make_renderer("cookbook/tiny-chat", "llama3")
            dataset = ArithmeticDataset(renderer, 16, 8, steps, 4, 0)
            results = {}
            for name in ("per sample", "per group"):
                completer = TinkerTokenCompleter(sampler, 6, 1.0, seed=0)
                policy: object = _OneByOne(completer) if name == "per sample" else completer
                calls = {"n": 0}
                original = sampler.sample

                def counting(*a: object, _orig: object = original, _calls: dict[str, int] = calls, **k: object) -> object:
                    _calls["n"] += 1
                    return _orig(*a, **k)  # type: ignore[operator]

                sampler.sample = counting  # type: ignore[method-assign]
                t0 = time.perf_counter()
                for i in range(steps):
                    asyncio.run(rollout_groups(dataset.get_batch(i), policy, 64, seed_key=(0, i)))  # type: ignore[arg-type]
                results[name] = (time.perf_counter() - t0, calls["n"])
                sampler.sample = original  # type: ignore[method-assign]
        finally:
            mock.stop()
    before, after = results["per sample"], results["per group"]
    print(f"rl_basic rollouts, {steps} steps of 16 groups x 8 (embedded mock, cookbook/tiny-chat)")
    for name, (wall, n) in results.items():
        print(f"  {name:<11} {wall:8.2f} s  {n:5d} requests")
    print(f"  ratio per sample / per group: {before[0] / after[0]:.2f}x wall, {before[1] / after[1]:.0f}x requests")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rl-requests"]:
        bench_rl_requests()
    else:
        main(sys.argv[1:])
