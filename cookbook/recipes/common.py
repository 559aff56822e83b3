"""What every recipe shares: choosing real Tinker or the embedded mock, progress, the final summary.

Service selection (:func:`tinker_service`):

* ``TINKER_API_KEY`` set (and no explicit ``base_url``): the real Tinker service (or ``TINKER_BASE_URL``).
* ``base_url`` given (e.g. a ``cookbook mock serve`` you started): that server.
* otherwise: an embedded mock Tinker server (:class:`cookbook.mock.MockTinker`) whose state lives in
  ``<log_path>/mock_state``, so a re-run of the same command finds its checkpoints and resumes.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cookbook.errors import ConfigurationError


@dataclass
class Service:
    client: Any  # tinker.ServiceClient
    kind: str  # "tinker" | "mock" | "server"
    base_url: str | None


@contextlib.contextmanager
def tinker_service(log_path: str | Path, base_url: str | None = None) -> Iterator[Service]:
    import tinker

    real_key = os.environ.get("TINKER_API_KEY")
    if base_url:
        client = tinker.ServiceClient(base_url=base_url, api_key=real_key or "tml-mock")
        kind = "server"
        mock = None
    elif real_key:
        client = tinker.ServiceClient()
        kind = "tinker"
        mock = None
    else:
        from cookbook.mock import MockTinker

        mock = MockTinker(state_dir=Path(log_path) / "mock_state").start()
        client = tinker.ServiceClient(base_url=mock.base_url, api_key=mock.api_key)
        kind, base_url = "mock", mock.base_url
    status: Literal["success", "errored", "interrupted"] = "errored"
    try:
        yield Service(client, kind, base_url)
        status = "success"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        with contextlib.suppress(Exception):
            client.close(status).result(timeout=10)
        if mock is not None:
            mock.stop()


class Progress:
    """A progress display on stderr: ``[####....] step/total metrics | ETA, tokens/s``.

    On a TTY it is one line rewritten in place (``\\r`` + clear-to-end-of-line, so a shorter line leaves no
    debris) and cleared at the end, leaving a one-line summary; otherwise plain lines every ``every`` steps.
    ETA = mean seconds per step so far × steps left. tokens/s counts the tokens the step processed:
    ``num_tokens`` (SFT, DPO), else ``env/all/total_ac_tokens`` + ``env/all/total_ob_tokens`` or, failing
    those, ``env/all/ac_tokens_per_turn`` × ``env/all/total_episodes`` × ``env/all/turns_per_episode`` (RL).
    """

    def __init__(self, keys: Sequence[str], stream: Any = None, every: int = 1):
        self.keys = list(keys)
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = max(1, every)
        self.t0 = time.perf_counter()
        self.first_step: int | None = None
        self.tokens = 0.0

    @staticmethod
    def step_tokens(metrics: Mapping[str, Any]) -> float:
        def num(k: str) -> float | None:
            v = metrics.get(k)
            return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

        if num("num_tokens") is not None:
            return num("num_tokens") or 0.0
        ac, ob = num("env/all/total_ac_tokens"), num("env/all/total_ob_tokens")
        if ac is not None:
            return ac + (ob or 0.0)
        per_turn, episodes = num("env/all/ac_tokens_per_turn"), num("env/all/total_episodes")
        if per_turn is not None and episodes is not None:
            return per_turn * episodes * (num("env/all/turns_per_episode") or 1.0)
        return 0.0

    def __call__(self, step: int, total: int, metrics: Mapping[str, Any]) -> None:
        if self.first_step is None:
            self.first_step = step
        self.tokens += self.step_tokens(metrics)
        elapsed = time.perf_counter() - self.t0
        done_here = step + 1 - self.first_step
        last = step + 1 == total
        if not self.tty and step % self.every and not last:
            return
        shown = " ".join(f"{k}={_fmt(metrics[k])}" for k in self.keys if k in metrics)
        width = 24
        done = int(width * (step + 1) / max(total, 1))
        eta = elapsed / max(done_here, 1) * (total - step - 1)
        rate = f" {_si(self.tokens / elapsed)} tok/s" if self.tokens and elapsed > 0 else ""
        line = (f"[{'#' * done}{'.' * (width - done)}] {step + 1}/{total} {shown} | "
                f"{_duration(elapsed)} elapsed, ETA {_duration(eta)}{rate}")
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
            if last:
                self.stream.write("\r\x1b[2K" + f"{total} steps in {_duration(elapsed)}{rate} · {shown}\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


def _si(x: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def print_summary(name: str, log_path: str | Path, service: Service, keys: Sequence[str]) -> dict[str, Any]:
    """Print where the run's files are and the first/last value of the key metrics."""
    from cookbook.report import write_report
    from cookbook.runlog import RunLog

    log = RunLog(log_path)
    rows = log.metrics()
    report = write_report(log_path, title=f"{name} ({service.kind})")
    summary: dict[str, Any] = {}
    print(f"\n{name}: finished on {service.kind}" + (f" ({service.base_url})" if service.base_url else ""))
    for k in keys:
        vals = [r[k] for r in rows if isinstance(r.get(k), int | float)]
        if vals:
            summary[k] = {"first": vals[0], "last": vals[-1]}
            print(f"  {k}: {_fmt(vals[0])} -> {_fmt(vals[-1])}")
    print(f"  metrics:     {log.metrics_path}")
    print(f"  checkpoints: {log.checkpoints_path}")
    print(f"  config:      {log.config_path}")
    print(f"  report:      {report}")
    return summary


def resolve_model(
    model_name: str | None, renderer_name: str | None, service: Service, online_default: str,
    mock_default: str | None = None,
) -> tuple[str, str, Any]:
    """(model name, renderer name, renderer). On the embedded mock the default model is ``mock_default``
    (default: the toy ``cookbook/tiny-chat``: fast, and a random policy can find its single-token stop); on a
    real service it is ``online_default``. The toy models use the renderer whose tokens they carry
    (``llama3``; ``qwen3_instruct`` for ``cookbook/tiny-chat-tools``)."""
    from cookbook.mock.tiny_chat import TINY_CHAT, TINY_CHAT_TOOLS, tiny_chat_dir
    from cookbook.renderers import get_renderer
    from cookbook.tokenizers import model_entry

    name = model_name or ((mock_default or TINY_CHAT) if service.kind == "mock" else online_default)
    toy_renderers = {TINY_CHAT: "llama3", TINY_CHAT_TOOLS: "qwen3_instruct"}
    if name in toy_renderers:
        rname = renderer_name or toy_renderers[name]
        return name, rname, get_renderer(rname, str(tiny_chat_dir(model=name)))
    rname = renderer_name or model_entry(name).default_renderer
    return name, rname, get_renderer(rname, name)


def parse_config(cls: Any, argv: Sequence[str]) -> Any:
    """``key=value`` arguments into a chz config, with a readable error."""
    import chz

    try:
        return chz.Blueprint(cls).make_from_argv(list(argv))
    except Exception as exc:  # chz raises its own exception types
        fields = ", ".join(sorted(chz.chz_fields(cls)))
        raise ConfigurationError(f"bad recipe argument: {exc}. Valid keys: {fields}") from exc


def bundled(name: str) -> Path:
    path = Path(__file__).parent / "data" / name
    if not path.exists():
        raise ConfigurationError(f"bundled dataset {name!r} is missing from the installation ({path})")
    return path
