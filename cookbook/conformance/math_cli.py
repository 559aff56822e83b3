"""``cookbook conform math``: run the math specs against an implementation of one quantity.

Examples::

    cookbook conform math --impl mypkg.losses:ppo_loss --quantity ppo
    cookbook conform math --impl mypkg.losses:ppo_value --quantity ppo --signature value
    cookbook conform math --reference            # every quantity against cookbook's own implementation
"""

from __future__ import annotations

import argparse
from typing import Any

# Kept in sync with cookbook.conformance.math_runner.QUANTITIES (checked by a test); listed here so that
# ``--help`` does not import numpy.
QUANTITY_NAMES = (
    "cross_entropy", "importance_sampling", "ppo", "cispo", "dro", "gspo", "stable_reinforce", "dpo",
    "centred_advantages", "grpo_advantages", "rloo_advantages", "dr_grpo_advantages",
    "filter_constant_reward_groups", "kl_k1", "kl_k2", "kl_k3", "kl_sample_train", "discounted_future_sum",
    "kl_penalty", "distillation_advantages", "lr_multiplier", "lora_lr", "weighted_mean_nll", "bits_per_byte",
)

EPILOG = """\
quantities: """ + ", ".join(QUANTITY_NAMES) + """

signatures:
  kwargs      fn(**inputs, **config) with the reference's argument names (default)
  positional  fn(*inputs in the spec's order, **config)
  value       losses only: fn(...) returns the loss value; gradients by central finite differences
  tinker      losses only: fn(loss_fn, target_logprobs, loss_fn_inputs, loss_fn_config)
results may be an object with attributes (loss, grad, metrics, value, ...), a dict, a tuple in that
order, or a bare value. Exit status: 0 all checks pass, 1 a check failed, 2 usage or spec error.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Run the math specs (specs/math/*.yaml) against an implementation of one quantity."
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--impl", metavar="MODULE:FUNCTION", help="the implementation to check (importable)")
    who.add_argument("--reference", action="store_true", help="check cookbook's own reference implementation")
    parser.add_argument("--quantity", action="append", metavar="NAME", choices=QUANTITY_NAMES,
                        help="the quantity to check (required with --impl; repeatable with --reference)")
    parser.add_argument("--signature", default="kwargs", choices=("kwargs", "positional", "value", "tinker"),
                        help="how to call the implementation (default: kwargs)")
    parser.add_argument("--case", metavar="SUBSTRING", help="only cases whose id contains SUBSTRING")
    parser.add_argument("--specs", metavar="DIR", help="spec folder (default: the repository's specs/math)")
    parser.add_argument("--json", action="store_true", help="print a JSON report instead of the table")
    parser.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report to FILE")
    parser.add_argument("--skip-error-cases", action="store_true",
                        help="report input-validation cases (NaN, bad shapes, bad config) as SKIP, for an implementation "
                        "that deliberately validates nothing (any exception, or a non-finite result, meets them)")
    parser.add_argument("--only-failures", action="store_true", help="list only failing and skipped checks")


def run(args: Any) -> int:
    from pathlib import Path

    from cookbook.conformance.math_runner import QUANTITIES, load_callable, load_cases, run_quantity
    from cookbook.conformance.report import emit
    from cookbook.errors import ConfigurationError

    spec_dir = Path(args.specs) if args.specs else None
    cases = load_cases(spec_dir)
    if args.impl:
        if not args.quantity or len(args.quantity) != 1:
            raise ConfigurationError("--impl needs exactly one --quantity NAME (see --help for the list)")
        quantities = list(args.quantity)
        fn = load_callable(args.impl)
    else:
        quantities = list(args.quantity or sorted({c.quantity for c in cases}, key=list(QUANTITIES).index))
        fn = None
    results = []
    for name in quantities:
        results.extend(run_quantity(name, fn, signature=args.signature, spec_dir=spec_dir, case_filter=args.case,
                                    skip_error_cases=args.skip_error_cases, cases=cases))
    impl = args.impl or "reference"
    for r in results:
        r.implementation = impl
    meta = {"command": "conform math", "impl": impl, "quantities": quantities}
    return emit(results, suite="conform-math", meta=meta, json_to="-" if args.json else None, junit_to=args.junit,
                verbose=not args.only_failures, header=f"cookbook conform math: {args.impl or 'reference implementation'}")
