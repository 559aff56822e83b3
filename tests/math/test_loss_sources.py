"""Every built-in loss's defaults and config keys are cited in its spec, and the code uses exactly those.

The spec files (``specs/math/<loss>.yaml``) are the oracle here: each ``sources`` entry and each
``config_keys.<key>.source`` carries a URL and the quoted text that states the formula or default; a default
the documentation does not give is marked with a ``deviation`` that says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from cookbook import losses
from cookbook.conformance.math_runner import default_spec_dir, load_cases

LOSSES = tuple(losses.LOSS_INPUTS)


def _spec(loss: str) -> dict[str, Any]:
    path = Path(default_spec_dir()) / f"{loss}.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert data["quantity"] == loss
    return data


def _cited(entry: Any, where: str) -> None:
    assert isinstance(entry, dict), f"{where}: expected a mapping with url and quote, got {entry!r}"
    assert str(entry.get("url", "")).startswith("https://"), f"{where}: needs an https url"
    assert isinstance(entry.get("quote"), str) and len(entry["quote"].strip()) >= 8, f"{where}: needs a quotation"


@pytest.mark.parametrize("loss", LOSSES)
def test_sources_are_quoted(loss: str) -> None:
    spec = _spec(loss)
    assert spec.get("sources"), f"{loss}.yaml has no sources"
    for i, entry in enumerate(spec["sources"]):
        _cited(entry, f"{loss}.yaml sources[{i}]")


@pytest.mark.parametrize("loss", LOSSES)
def test_every_config_key_and_default_is_cited_and_used(loss: str) -> None:
    keys = _spec(loss)["config_keys"]
    assert set(keys) == set(losses.LOSS_CONFIG_KEYS[loss]), "the spec lists exactly the keys the loss accepts"
    assert set(losses.LOSS_CONFIG_DEFAULTS[loss]) == set(keys)
    for key, entry in keys.items():
        _cited(entry.get("source"), f"{loss}.yaml config_keys.{key}.source")
        assert losses.LOSS_CONFIG_DEFAULTS[loss][key] == entry["default"], (loss, key)


@pytest.mark.parametrize("loss", [name for name in LOSSES if losses.LOSS_CONFIG_KEYS[name]])
def test_spec_cases_cover_defaults_and_non_default_values(loss: str) -> None:
    """Some case relies on the defaults and, for every key, some case passes a non-default value, so the
    dispatcher test (tests/math/test_losses_spec.py, signature 'tinker') exercises both through tinker_loss."""
    cases = [c for c in load_cases(quantity=loss) if "raises" not in c.expected]
    defaults = losses.LOSS_CONFIG_DEFAULTS[loss]
    assert any(not c.config and not set(c.inputs) & set(defaults) for c in cases), f"{loss}: no case uses the defaults"
    for key, default in defaults.items():
        values = [c.config.get(key, c.inputs.get(key)) for c in cases]
        assert any(v is not None and not np.all(np.asarray(v) == default) for v in values), (loss, key)


def _ratio_inputs(n: int, **extra: np.ndarray) -> dict[str, np.ndarray]:
    adv = np.array([1.0, -1.0, 1.0])[:n]
    return {"target_tokens": np.zeros(n, dtype=np.int64), "logprobs": np.zeros(n), "advantages": adv, **extra}


@pytest.mark.parametrize(("loss", "key"), [(n, k) for n in LOSSES for k in losses.LOSS_CONFIG_KEYS[n]])
def test_tinker_loss_forwards_every_config_key(loss: str, key: str) -> None:
    """Changing one config key changes tinker_loss's answer exactly as calling the loss with it does."""
    lp = np.array([np.log(3.0), np.log(0.25), -0.5])  # ratios 3, 1/4 and e^-0.5 against q = 0
    # gspo: the sequence ratio is 3 (token 0 alone, A > 0) to move the upper bound, 1/4 (token 1, A < 0) the lower
    mask = np.array([1.0, 0.0, 0.0]) if key == "clip_high_threshold" else np.array([0.0, 1.0, 0.0])
    extra = {"sequence_ratio_mask": mask} if loss == "gspo" else {}
    inputs = _ratio_inputs(3, **extra)
    value = {"clip_low_threshold": 0.5, "clip_high_threshold": 2.5, "beta": 0.7, "kl_coeff": 0.7}[key]
    via_dispatcher = losses.tinker_loss(loss, lp, inputs, {key: value})
    kwargs = {**losses.LOSS_CONFIG_DEFAULTS[loss], key: value}
    direct = getattr(losses, loss)(lp, inputs["logprobs"], inputs["advantages"], *extra.values(), **kwargs)
    assert via_dispatcher.loss == direct.loss
    np.testing.assert_array_equal(via_dispatcher.grad, direct.grad)
    default_run = losses.tinker_loss(loss, lp, inputs, None)
    assert default_run.loss != via_dispatcher.loss or not np.array_equal(default_run.grad, via_dispatcher.grad)
