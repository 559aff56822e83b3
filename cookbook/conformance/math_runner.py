"""Run the math specs (``specs/math/*.yaml``) against any implementation of a quantity.

A spec file is YAML: ``quantity`` (the default for its cases), ``description``, optional ``tolerance``
(``rtol``, ``atol``) and ``cases``. Each case has ``id``, ``description``, ``inputs``, ``config``,
``expected`` and a ``derivation`` (the hand calculation), optionally its own ``quantity`` and ``tolerance``.
Numbers may be written as expressions in a string, evaluated in float64 by a tiny whitelist evaluator:
``"-3/5*ln(3/2)"``, ``"1/(1+exp(-0.1))"``, ``"sqrt(2)"`` (functions ln, log, exp, sqrt, log1p, expm1, cos,
sin; constants pi, e, inf, nan).

``expected`` keys are the quantity's outputs (``loss``, ``grad``, ``metrics``, ``value``,
``chosen_grads``, ``rejected_grads``), or ``raises: ExceptionName`` (any class in the raised exception's
MRO, e.g. ``ValueError``) with an optional ``message_contains``.

The implementation is called according to a *signature*:

* ``kwargs`` (default): ``fn(**inputs, **config)`` with the reference's argument names;
* ``positional``: ``fn(*inputs_in_declared_order, **config)``;
* ``value`` (losses only): ``fn(**inputs, **config)`` returns the loss value alone; the gradient is taken
  by central finite differences of ``fn`` (not possible for stop-gradient losses: cispo, gspo);
* ``tinker`` (losses only): ``fn(loss_fn, target_logprobs, loss_fn_inputs, loss_fn_config)`` like
  :func:`cookbook.losses.tinker_loss` (scalar config values go to ``loss_fn_config``, per-token arrays to
  ``loss_fn_inputs``).

A loss's spec file also lists ``config_keys``: each key it accepts with its ``default`` and a ``source``
(``url`` + ``quote``); ``sources`` entries are ``url`` + ``quote`` too.

Results are normalised from an object with attributes named like the outputs, a mapping, a tuple in the
declared output order, or a bare value.
"""

from __future__ import annotations

import ast
import copy
import importlib
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cookbook.conformance.report import CheckResult
from cookbook.errors import ConfigurationError, SpecError

Kind = Literal["loss", "dpo", "value"]
SIGNATURES: tuple[str, ...] = ("kwargs", "positional", "value", "tinker")

DEFAULT_RTOL = 1e-10
DEFAULT_ATOL = 1e-12
FD_STEP = 1e-6


@dataclass(frozen=True)
class Quantity:
    """A quantity the specs cover: its reference implementation and calling convention."""

    name: str
    reference: str  # "module:function"
    kind: Kind
    inputs: tuple[str, ...]  # argument names, in positional order
    outputs: tuple[str, ...]
    summary: str
    text_args: tuple[str, ...] = ()  # string-valued arguments (not expressions)
    list_args: tuple[str, ...] = ()  # sequences of per-datum / per-pair arrays (kept as lists)
    stop_gradient: bool = False


_LOSS_OUT = ("loss", "grad", "metrics")
_RATIO = ("target_logprobs", "sampling_logprobs", "advantages")
_KL_BATCH = ("advantages_D", "sampling_logprobs_D")

QUANTITIES: dict[str, Quantity] = {
    q.name: q
    for q in (
        Quantity("cross_entropy", "cookbook.losses:cross_entropy", "loss", ("target_logprobs", "weights"), _LOSS_OUT,
                 "Tinker cross_entropy, -Σ w·lp (1-D or top-K 2-D)"),
        Quantity("importance_sampling", "cookbook.losses:importance_sampling", "loss", _RATIO, _LOSS_OUT,
                 "Tinker importance_sampling, -Σ r·A"),
        Quantity("ppo", "cookbook.losses:ppo", "loss", _RATIO, _LOSS_OUT, "Tinker ppo, -Σ min(rA, clip(r)A)"),
        Quantity("cispo", "cookbook.losses:cispo", "loss", _RATIO, _LOSS_OUT,
                 "Tinker cispo, -Σ sg(clip(r))·lp·A", stop_gradient=True),
        Quantity("dro", "cookbook.losses:dro", "loss", _RATIO, _LOSS_OUT, "Tinker dro, -Σ [lp·A - ½β(lp-q)²]"),
        Quantity("gspo", "cookbook.losses:gspo", "loss", (*_RATIO, "sequence_ratio_mask"), _LOSS_OUT,
                 "Tinker gspo, PPO clip on the sequence ratio", stop_gradient=True),
        Quantity("stable_reinforce", "cookbook.losses:stable_reinforce", "loss", (*_RATIO, "sampled_mask"), _LOSS_OUT,
                 "stable_reinforce stand-in, -Σ r·A + κ·Σ m·½(lp-q)² (the formula is not public)"),
        Quantity("dpo", "cookbook.losses:dpo_loss", "dpo",
                 ("chosen_logprobs", "rejected_logprobs", "chosen_ref_logprobs", "rejected_ref_logprobs",
                  "chosen_weights", "rejected_weights"),
                 ("loss", "chosen_grads", "rejected_grads", "metrics"),
                 "DPO (sigmoid/ipo/hinge/robust), mean over pairs", text_args=("loss_type",),
                 list_args=("chosen_logprobs", "rejected_logprobs", "chosen_ref_logprobs", "rejected_ref_logprobs",
                            "chosen_weights", "rejected_weights")),
        Quantity("centred_advantages", "cookbook.rl.advantages:group_centred_advantages", "value", ("rewards",),
                 ("value",), "R - mean(R) (tinker-cookbook default)"),
        Quantity("grpo_advantages", "cookbook.rl.advantages:grpo_advantages", "value", ("rewards",), ("value",),
                 "(R - mean)/(std + eps), Bessel explicit", text_args=("singleton",)),
        Quantity("rloo_advantages", "cookbook.rl.advantages:rloo_advantages", "value", ("rewards",), ("value",),
                 "leave-one-out baseline"),
        Quantity("dr_grpo_advantages", "cookbook.rl.advantages:dr_grpo_advantages", "value", ("rewards",), ("value",),
                 "Dr.GRPO: centring without std"),
        Quantity("filter_constant_reward_groups", "cookbook.rl.advantages:filter_constant_reward_groups", "value",
                 ("rewards_per_group",), ("value",), "indices of non-constant groups over the batch",
                 list_args=("rewards_per_group",)),
        Quantity("kl_k1", "cookbook.rl.kl:k1", "value", ("logp", "logq"), ("value",), "k1 = -log r"),
        Quantity("kl_k2", "cookbook.rl.kl:k2", "value", ("logp", "logq"), ("value",), "k2 = ½ (log r)²"),
        Quantity("kl_k3", "cookbook.rl.kl:k3", "value", ("logp", "logq"), ("value",), "k3 = r - 1 - log r"),
        Quantity("kl_sample_train", "cookbook.rl.kl:kl_sample_train", "value",
                 ("sampling_logprobs_D", "training_logprobs_D", "mask_D"), ("metrics",),
                 "optim/kl_sample_train_v1, _v2, optim/entropy",
                 list_args=("sampling_logprobs_D", "training_logprobs_D", "mask_D")),
        Quantity("discounted_future_sum", "cookbook.rl.kl:discounted_future_sum", "value", ("x",), ("value",),
                 "y_t = x_t + γ y_{t+1}"),
        Quantity("kl_penalty", "cookbook.rl.kl:incorporate_kl_penalty", "value",
                 (*_KL_BATCH, "base_logprobs_D", "mask_D"), ("value", "metrics"),
                 "KL penalty centred on the batch mean",
                 list_args=(*_KL_BATCH, "base_logprobs_D", "mask_D")),
        Quantity("distillation_advantages", "cookbook.rl.kl:distillation_reverse_kl_advantages", "value",
                 (*_KL_BATCH, "teacher_logprobs_D", "mask_D"), ("value", "metrics"),
                 "on-policy distillation reverse-KL advantages",
                 list_args=(*_KL_BATCH, "teacher_logprobs_D", "mask_D")),
        Quantity("lr_multiplier", "cookbook.schedules:compute_schedule_lr_multiplier", "value",
                 ("schedule", "step", "total"), ("value",), "constant / linear / cosine (+ warmup)",
                 text_args=("schedule",)),
        Quantity("lora_lr", "cookbook.schedules:get_lr", "value", ("model_name",), ("value",),
                 "5e-5·10·(2000/hidden)^e", text_args=("model_name",)),
        Quantity("weighted_mean_nll", "cookbook.supervised.nll:weighted_mean_nll", "value",
                 ("logprobs_list", "weights_list"), ("value",), "-Σ lp·w / Σ w",
                 list_args=("logprobs_list", "weights_list")),
        Quantity("bits_per_byte", "cookbook.supervised.nll:bits_per_byte", "value", ("nll_nats", "num_bytes"),
                 ("value",), "nll / (ln 2 · bytes)"),
    )
}


# --------------------------------------------------------------------------------------------------
# expressions

_FUNCS: dict[str, Callable[[float], float]] = {
    "ln": math.log, "log": math.log, "exp": math.exp, "sqrt": math.sqrt, "log1p": math.log1p,
    "expm1": math.expm1, "cos": math.cos, "sin": math.sin,
}
_CONSTS = {"pi": math.pi, "e": math.e, "inf": math.inf, "nan": math.nan}
_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}


def evaluate(expr: str, where: str = "") -> float:
    """A numeric expression of a spec (``"-3/5*ln(3/2)"``) as a float."""
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise SpecError(f"{where}: cannot parse expression {expr!r}: {exc.msg}") from exc

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return float(_BINOPS[type(node.op)](ev(node.left), ev(node.right)))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.Name) and node.id in _CONSTS:
            return _CONSTS[node.id]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS and len(node.args) == 1:
            return _FUNCS[node.func.id](ev(node.args[0]))
        raise SpecError(f"{where}: unsupported element {ast.dump(node)[:60]} in expression {expr!r}")

    try:
        return ev(tree)
    except (ValueError, ZeroDivisionError, OverflowError) as exc:
        raise SpecError(f"{where}: cannot evaluate {expr!r}: {exc}") from exc


def _numbers(value: Any, where: str) -> Any:
    """Evaluate every expression string in a nested list/dict structure; ints stay ints."""
    if isinstance(value, str):
        return evaluate(value, where)
    if isinstance(value, list):
        return [_numbers(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _numbers(v, f"{where}.{k}") for k, v in value.items()}
    return value


def _to_arrays(value: Any, as_list: bool) -> Any:
    """Numeric lists -> float64 arrays (``as_list``: a list of arrays, one per datum / pair / group)."""
    if as_list and isinstance(value, list):
        return [_to_arrays(v, False) for v in value]
    if isinstance(value, list):
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            return np.asarray(value, dtype=np.float64)
        if all(isinstance(v, list) for v in value):
            try:
                return np.asarray(value, dtype=np.float64)
            except ValueError:
                return [_to_arrays(v, False) for v in value]
    return value


# --------------------------------------------------------------------------------------------------
# spec files


@dataclass(frozen=True)
class Case:
    """One spec case, inputs and expectations evaluated."""

    file: str
    quantity: str
    id: str
    description: str
    inputs: dict[str, Any]
    config: dict[str, Any]
    expected: dict[str, Any]
    rtol: float
    atol: float
    derivation: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


_CASE_KEYS = {"id", "description", "inputs", "config", "expected", "derivation", "quantity", "tolerance", "notes"}
_FILE_KEYS = {"quantity", "description", "tolerance", "cases", "notes", "conventions", "sources", "config_keys"}


def default_spec_dir() -> Path:
    """``specs/math`` of the installed package (:func:`cookbook.data.specs_dir`)."""
    from cookbook.data import specs_dir

    return specs_dir("math")


def _convert_inputs(q: Quantity, raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if k in q.text_args:
            out[k] = v
        else:
            out[k] = _to_arrays(_numbers(v, f"{where}.{k}"), k in q.list_args)
    return out


def _tolerance(raw: Any, rtol: float, atol: float, where: str) -> tuple[float, float]:
    if raw is None:
        return rtol, atol
    if not isinstance(raw, dict) or set(raw) - {"rtol", "atol"}:
        raise SpecError(f"{where}: tolerance must be a mapping with rtol and/or atol")
    return float(raw.get("rtol", rtol)), float(raw.get("atol", atol))


def load_spec_file(path: Path) -> list[Case]:
    """The cases of one spec file; raises :class:`SpecError` naming the file and case when malformed."""
    import yaml

    from cookbook.conformance.spec import parse_yaml

    try:
        data = parse_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise SpecError(f"{path}: expected a mapping with a 'cases' list")
    extra = set(data) - _FILE_KEYS
    if extra:
        raise SpecError(f"{path}: unknown top-level key(s) {sorted(extra)}; allowed {sorted(_FILE_KEYS)}")
    rtol, atol = _tolerance(data.get("tolerance"), DEFAULT_RTOL, DEFAULT_ATOL, str(path))
    cases: list[Case] = []
    seen: set[str] = set()
    for i, raw in enumerate(data["cases"]):
        where = f"{path.name} case #{i}"
        if not isinstance(raw, dict) or "id" not in raw:
            raise SpecError(f"{where}: every case needs an 'id'")
        where = f"{path.name} case {raw['id']!r}"
        extra = set(raw) - _CASE_KEYS
        if extra:
            raise SpecError(f"{where}: unknown key(s) {sorted(extra)}; allowed {sorted(_CASE_KEYS)}")
        if raw["id"] in seen:
            raise SpecError(f"{where}: duplicate id")
        seen.add(raw["id"])
        qname = raw.get("quantity", data.get("quantity"))
        if qname not in QUANTITIES:
            raise SpecError(f"{where}: unknown quantity {qname!r}; known: {', '.join(QUANTITIES)}")
        q = QUANTITIES[qname]
        expected = raw.get("expected")
        if not isinstance(expected, dict) or not expected:
            raise SpecError(f"{where}: 'expected' must be a non-empty mapping")
        allowed = {*q.outputs, "raises", "message_contains"}
        if set(expected) - allowed:
            raise SpecError(f"{where}: unknown expected key(s) {sorted(set(expected) - allowed)}; allowed {sorted(allowed)}")
        if not isinstance(raw.get("description", ""), str) or not raw.get("description"):
            raise SpecError(f"{where}: a case needs a 'description'")
        inputs = _convert_inputs(q, raw.get("inputs") or {}, f"{where} inputs")
        config = _convert_inputs(q, raw.get("config") or {}, f"{where} config")
        exp: dict[str, Any] = {}
        for k, v in expected.items():
            if k in ("raises", "message_contains"):
                exp[k] = v
            else:
                exp[k] = _to_arrays(_numbers(v, f"{where} expected.{k}"), k in ("chosen_grads", "rejected_grads"))
        c_rtol, c_atol = _tolerance(raw.get("tolerance"), rtol, atol, where)
        cases.append(
            Case(path.name, qname, str(raw["id"]), raw["description"], inputs, config, exp, c_rtol, c_atol,
                 str(raw.get("derivation", "")), raw)
        )
    return cases


def load_cases(spec_dir: Path | None = None, quantity: str | None = None) -> list[Case]:
    """Every case of every ``*.yaml`` in ``spec_dir`` (default :func:`default_spec_dir`), optionally one quantity."""
    directory = spec_dir or default_spec_dir()
    if not directory.is_dir():
        raise SpecError(f"spec folder {directory} not found; pass --specs DIR (the repository's specs/math)")
    cases = [c for p in sorted(directory.glob("*.yaml")) for c in load_spec_file(p)]
    return [c for c in cases if quantity is None or c.quantity == quantity]


# --------------------------------------------------------------------------------------------------
# calling an implementation


def load_callable(ref: str) -> Callable[..., Any]:
    """``module:function`` (dots allowed in the attribute path) -> the callable, importable from the current
    folder without PYTHONPATH."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"--impl: expected 'module:function', got {ref!r}")
    import sys

    here = str(Path.cwd().resolve())
    if here not in sys.path and "" not in sys.path:  # importable from the current folder, as with python -m
        sys.path.insert(0, here)
    importlib.invalidate_caches()
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"--impl: cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigurationError(f"--impl: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigurationError(f"--impl: {ref!r} is not callable")
    return obj  # type: ignore[no-any-return]


def _call(fn: Callable[..., Any], q: Quantity, case: Case, signature: str) -> Any:
    inputs, config = copy.deepcopy(case.inputs), copy.deepcopy(case.config)  # an impl may write into its inputs
    if signature in ("kwargs", "value"):
        return fn(**inputs, **config)
    if signature == "positional":
        extra = [k for k in inputs if k not in q.inputs]
        return fn(*[inputs[k] for k in q.inputs if k in inputs], **{k: inputs[k] for k in extra}, **config)
    # tinker
    lp = np.asarray(inputs["target_logprobs"], dtype=np.float64)
    names = {"sampling_logprobs": "logprobs"}
    loss_fn_inputs: dict[str, Any] = {"target_tokens": np.zeros(lp.shape, dtype=np.int64)}
    loss_fn_inputs.update({names.get(k, k): v for k, v in inputs.items() if k != "target_logprobs"})
    # scalar config values are loss_fn_config keys; per-token arrays (thresholds) travel as loss_fn_inputs
    loss_fn_inputs.update({k: v for k, v in config.items() if np.ndim(v) > 0})
    return fn(q.name, lp, loss_fn_inputs, {k: float(v) for k, v in config.items() if np.ndim(v) == 0})


def _normalise(result: Any, q: Quantity) -> dict[str, Any]:
    if all(hasattr(result, name) for name in q.outputs) and not isinstance(result, Mapping):
        return {name: getattr(result, name) for name in q.outputs}
    if q.outputs == ("value",):
        return {"value": result}
    if isinstance(result, Mapping):
        if any(name in result for name in q.outputs):
            return {name: result[name] for name in q.outputs if name in result}
        if q.outputs == ("metrics",):
            return {"metrics": dict(result)}
    if isinstance(result, tuple | list) and len(result) <= len(q.outputs):
        return dict(zip(q.outputs, result))
    if q.kind == "loss" and np.ndim(result) == 0:
        return {"loss": result}
    return {q.outputs[0]: result}


def _fd_grad(fn: Callable[..., Any], case: Case, h: float = FD_STEP) -> tuple[np.ndarray, list[int]]:
    """Central differences of a value-only loss with respect to ``target_logprobs``.

    Also returns the flat indices where the one-sided differences disagree (a kink of the value, e.g. a
    ratio exactly on a clip bound): there the gradient is a convention the value cannot decide.
    """
    base = np.asarray(case.inputs["target_logprobs"], dtype=np.float64)
    f0 = float(fn(**case.inputs, **case.config))
    grad = np.zeros_like(base)
    kinks: list[int] = []
    for flat, idx in enumerate(np.ndindex(base.shape)):
        vals = []
        for sign in (1.0, -1.0):
            x = base.copy()
            x[idx] += sign * h
            vals.append(float(fn(**{**case.inputs, "target_logprobs": x}, **case.config)))
        grad[idx] = (vals[0] - vals[1]) / (2 * h)
        right, left = (vals[0] - f0) / h, (f0 - vals[1]) / h
        if abs(right - left) > 1e-3 * max(1.0, abs(right), abs(left)):
            kinks.append(flat)
    return grad, kinks


# --------------------------------------------------------------------------------------------------
# comparing


def _fmt(x: Any) -> str:
    if isinstance(x, float | np.floating):
        return f"{float(x):.15g}"
    if isinstance(x, np.ndarray):
        return np.array2string(x, precision=12, separator=", ", max_line_width=200, threshold=20)
    return repr(x)


def _close(a: float, b: float, rtol: float, atol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= atol + rtol * abs(a)


def compare(expected: Any, actual: Any, rtol: float, atol: float) -> str | None:
    """``None`` when ``actual`` matches ``expected``, else a readable explanation."""
    if isinstance(expected, dict):
        if not isinstance(actual, Mapping):
            return f"expected a mapping with keys {sorted(expected)}, got {type(actual).__name__}"
        for key, exp in expected.items():
            if key not in actual:
                return f"missing key {key!r} (got keys {sorted(actual)})"
            msg = compare(exp, actual[key], rtol, atol)
            if msg:
                return f"[{key!r}] {msg}"
        return None
    if isinstance(expected, list) and not all(isinstance(v, int | float) for v in expected):
        if not isinstance(actual, Sequence | np.ndarray) or len(actual) != len(expected):
            n = len(actual) if hasattr(actual, "__len__") else "no"
            return f"expected {len(expected)} entries, got {n} ({type(actual).__name__})"
        for i, (exp, act) in enumerate(zip(expected, actual)):
            msg = compare(exp, act, rtol, atol)
            if msg:
                return f"[{i}] {msg}"
        return None
    try:
        act = np.asarray(actual, dtype=np.float64)
    except (TypeError, ValueError):
        return f"expected {_fmt(expected)}, got non-numeric {actual!r}"
    exp = np.asarray(expected, dtype=np.float64)
    if exp.shape != act.shape:
        return f"shape mismatch: expected {list(exp.shape)}, got {list(act.shape)}: {_fmt(act)}"
    for idx in np.ndindex(exp.shape):
        e, a = float(exp[idx]), float(act[idx])
        if not _close(e, a, rtol, atol):
            where = f" at index {idx[0] if len(idx) == 1 else idx}" if idx else ""
            rel = abs(a - e) / abs(e) if e not in (0.0,) and math.isfinite(e) and math.isfinite(a) else float("nan")
            detail = f"first difference{where}: expected {_fmt(e)}, got {_fmt(a)}"
            if not math.isnan(rel):
                detail += f" (relative error {rel:.2e})"
            if exp.ndim:
                detail += f"\n  expected {_fmt(exp)}\n  actual   {_fmt(act)}"
            return detail
    return None


# --------------------------------------------------------------------------------------------------
# running


def _is_error_value(result: Any) -> bool:
    """A non-finite number anywhere in the result: the documented error value of an implementation that returns
    NaN instead of raising."""
    try:
        values = [result] if np.ndim(result) == 0 and not isinstance(result, Mapping | tuple | list) else None
    except Exception:
        values = None
    items: list[Any] = []
    if isinstance(result, Mapping):
        items = list(result.values())
    elif isinstance(result, tuple | list):
        items = list(result)
    elif values is not None:
        items = values
    else:
        items = [getattr(result, k) for k in ("loss", "value") if hasattr(result, k)]
    for v in items:
        try:
            arr = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            continue
        if arr.size and not np.all(np.isfinite(arr)):
            return True
    return False


def _check_raises(q: Quantity, case: Case, fn: Callable[..., Any], signature: str) -> list[CheckResult]:
    """An expected refusal is met by ANY exception (or a non-finite result, the error value); the exception's
    type and message are shown, never matched (``raises`` / ``message_contains`` document what the reference
    says)."""
    try:
        result = _call(fn, q, case, signature)
    except Exception as exc:  # the implementation under test may raise anything
        return [CheckResult(q.name, case.id, "raises", "PASS", f"refused: {type(exc).__name__}: {exc}")]
    if _is_error_value(result):
        return [CheckResult(q.name, case.id, "raises", "PASS", f"refused with a non-finite result {_fmt(result)[:120]}")]
    return [CheckResult(q.name, case.id, "raises", "FAIL",
                        f"expected a refusal ({case.description}), but the call returned {_fmt(result)[:200]}",
                        cause=f"not refused: {case.description}")]


def run_case(
    q: Quantity, case: Case, fn: Callable[..., Any], signature: str = "kwargs", *, skip_error_cases: bool = False
) -> list[CheckResult]:
    """Run one case; one :class:`CheckResult` per expected output (plus metric-name checks for losses).

    ``skip_error_cases`` reports input-validation cases (``expected.raises``) as SKIP, for implementations
    that compute the maths but deliberately do not validate their inputs (an implementation that refuses with its
    own exception type or wording passes without it).
    """
    if signature not in SIGNATURES:
        raise ConfigurationError(f"--signature: expected one of {SIGNATURES}, got {signature!r}")
    if signature in ("value", "tinker") and q.kind != "loss":
        raise ConfigurationError(f"--signature {signature} applies to the built-in losses only, not {q.name!r}")
    return [_one_line(r) for r in _run_case(q, case, fn, signature, skip_error_cases)]


def _one_line(r: CheckResult) -> CheckResult:
    if "\n" in r.message:
        r.detail, r.message = r.message, r.message.splitlines()[0]
    return r


def _run_case(q: Quantity, case: Case, fn: Callable[..., Any], signature: str, skip_error_cases: bool) -> list[CheckResult]:
    if "raises" in case.expected:
        if skip_error_cases:
            return [CheckResult(q.name, case.id, "raises", "SKIP", "input-validation case skipped (--skip-error-cases)")]
        return _check_raises(q, case, fn, signature)
    try:
        result = _call(fn, q, case, signature)
    except Exception as exc:  # report, do not crash the run
        return [CheckResult(q.name, case.id, "call", "FAIL", f"raised {type(exc).__name__}: {exc}")]
    outputs = _normalise(result, q)
    if signature == "value":
        outputs = {"loss": result if np.ndim(result) == 0 else outputs.get("loss")}
    results: list[CheckResult] = []
    for key, exp in case.expected.items():
        if key == "message_contains":
            continue
        if signature == "value" and key == "metrics":
            results.append(CheckResult(q.name, case.id, key, "SKIP", "value-only signature returns no metrics"))
            continue
        if signature == "value" and key == "grad":
            if q.stop_gradient:
                results.append(CheckResult(q.name, case.id, "grad", "SKIP",
                                           "stop-gradient loss: the value alone does not determine the gradient"))
                continue
            try:
                outputs["grad"], kinks = _fd_grad(fn, case)
            except Exception as exc:
                results.append(CheckResult(q.name, case.id, "grad", "FAIL", f"finite differences failed: {exc}"))
                continue
            if kinks:
                results.append(CheckResult(q.name, case.id, "grad", "SKIP",
                                           f"the value has a kink at token(s) {kinks} (e.g. a ratio on a clip bound); "
                                           "the gradient there is a convention the value cannot show"))
                continue
            tol = (max(case.rtol, 1e-6), max(case.atol, 1e-6))
        else:
            tol = (case.rtol, case.atol)
        if key == "metrics" and outputs.get(key) is None:
            results.append(CheckResult(q.name, case.id, key, "SKIP", "the implementation returns no metrics"))
            continue
        if key not in outputs or outputs[key] is None:
            results.append(CheckResult(q.name, case.id, key, "FAIL", f"the implementation returned no {key!r}"))
            continue
        msg = compare(exp, outputs[key], *tol)
        results.append(CheckResult(q.name, case.id, key, "FAIL" if msg else "PASS", msg or ""))
    if q.kind == "loss" and signature != "value" and isinstance(outputs.get("metrics"), Mapping):
        bad = [k for k in outputs["metrics"] if str(k).count(":") != 1]
        results.append(CheckResult(q.name, case.id, "metric-names", "FAIL" if bad else "PASS",
                                   f"Tinker metric keys need exactly one ':' (e.g. 'loss:sum'); bad: {bad}" if bad else ""))
    return results


def run_quantity(
    quantity: str,
    fn: Callable[..., Any] | None = None,
    *,
    signature: str = "kwargs",
    spec_dir: Path | None = None,
    case_filter: str | None = None,
    skip_error_cases: bool = False,
    cases: Sequence[Case] | None = None,
) -> list[CheckResult]:
    """Run every spec case of ``quantity`` against ``fn`` (default: the reference implementation).

    ``cases`` (already loaded, e.g. by :func:`load_cases`) saves re-reading the spec folder.
    """
    if quantity not in QUANTITIES:
        raise ConfigurationError(f"--quantity: unknown quantity {quantity!r}; known: {', '.join(QUANTITIES)}")
    q = QUANTITIES[quantity]
    impl = fn if fn is not None else load_callable(q.reference)
    pool = load_cases(spec_dir, quantity) if cases is None else [c for c in cases if c.quantity == quantity]
    selected = [c for c in pool if case_filter is None or case_filter in c.id]
    if not selected:
        raise SpecError(f"no spec case for quantity {quantity!r}" + (f" matching {case_filter!r}" if case_filter else ""))
    return [r for c in selected for r in run_case(q, c, impl, signature, skip_error_cases=skip_error_cases)]
