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
    """A one-line progress display on stderr with a few key metrics (plain lines when not a TTY)."""

    def __init__(self, keys: Sequence[str], stream: Any = None, every: int = 1):
        self.keys = list(keys)
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = max(1, every)
        self.t0 = time.perf_counter()

    def __call__(self, step: int, total: int, metrics: Mapping[str, Any]) -> None:
        if not self.tty and step % self.every and step + 1 != total:
            return
        shown = " ".join(f"{k}={_fmt(metrics[k])}" for k in self.keys if k in metrics)
        width = 24
        done = int(width * (step + 1) / max(total, 1))
        line = f"[{'#' * done}{'.' * (width - done)}] {step + 1}/{total} {shown} ({time.perf_counter() - self.t0:.0f}s)"
        if self.tty:
            self.stream.write("\r" + line + ("\n" if step + 1 == total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


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


def resolve_model(model_name: str | None, renderer_name: str | None, service: Service, online_default: str) -> tuple[str, str, Any]:
    """(model name, renderer name, renderer). On the embedded mock the default model is the toy
    ``cookbook/tiny-chat`` (fast, and a random policy can find its single-token stop); on a real service it
    is ``online_default``."""
    from cookbook.mock.tiny_chat import TINY_CHAT, tiny_chat_dir
    from cookbook.renderers import get_renderer
    from cookbook.tokenizers import model_entry

    name = model_name or (TINY_CHAT if service.kind == "mock" else online_default)
    if name == TINY_CHAT:
        rname = renderer_name or "llama3"
        return name, rname, get_renderer(rname, str(tiny_chat_dir()))
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
