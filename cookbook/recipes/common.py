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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cookbook.errors import ConfigurationError


@dataclass
class Service:
    client: Any  # tinker.ServiceClient
    kind: str  # "tinker" | "mock" | "server"
    base_url: str | None


def service_kind(base_url: str | None) -> str:
    """Which service a run will use, decided before anything starts (see the module docstring)."""
    if base_url:
        return "server"
    return "tinker" if os.environ.get("TINKER_API_KEY") else "mock"


def describe_service(kind: str, base_url: str | None) -> str:
    if kind == "mock":
        return "embedded mock Tinker (offline; cookbook/tiny-chat unless model_name is set)" + (
            f" at {base_url}" if base_url else "")
    if kind == "server":
        return f"Tinker-compatible server at {base_url}"
    return f"Tinker at {os.environ.get('TINKER_BASE_URL') or 'the default service URL'}"


#: SDK default service root (tinker/lib/base_url.py: ``DEFAULT_BASE_URL = "https://tinker.thinkingmachines.dev/services/tinker-prod"``)
DEFAULT_TINKER_URL = "https://tinker.thinkingmachines.dev/services/tinker-prod"
#: connect timeout of one attempt: the SDK's own (tinker/_constants.py: ``httpx.Timeout(timeout=60, connect=5.0)``)
PREFLIGHT_CONNECT_S = 5.0
PREFLIGHT_READ_S = 8.0  # per read / write of one attempt
PREFLIGHT_ATTEMPTS = 2  # a refused connection, a timeout, 408/429/5xx are retried once, 0.5 s later
PREFLIGHT_WATCHDOG_S = 29.0  # outer bound for what timeouts do not cover (a stalled DNS lookup)
_URL_HINT = "check the URL (base_url / TINKER_BASE_URL) and that the server is running and reachable from here"
_KEY_HINT = ("check TINKER_API_KEY (a key of this service, starting with tml-); unset TINKER_API_KEY (and "
             "base_url) to run offline on the embedded mock")


def service_url(kind: str, base_url: str | None) -> str:
    """The root the SDK will talk to: ``base_url``, else ``$TINKER_BASE_URL``, else the SDK's default."""
    return (base_url or (os.environ.get("TINKER_BASE_URL") if kind == "tinker" else None) or DEFAULT_TINKER_URL).rstrip("/")


def preflight(url: str, api_key: str, what: str, *, connect_s: float = PREFLIGHT_CONNECT_S,
              read_s: float = PREFLIGHT_READ_S, attempts: int = PREFLIGHT_ATTEMPTS) -> None:
    """One authenticated request (``GET /api/v1/get_server_capabilities`` with ``X-API-Key``, the SDK's header)
    before any session exists, so that an unreachable service or a rejected key fails at once with what to
    check instead of the SDK's minutes of retries (10 retries with back-off, tinker/_constants.py).

    The bound is by construction: ``attempts`` tries, each at most ``connect_s`` to connect and ``read_s`` per
    read, 0.5 s apart (defaults: 2 × (5 + 8) + 0.5 = 26.5 s); a 401/403 (the key), 402 (billing) or 404 (not
    a Tinker root) is final at once. The request runs in a daemon thread joined for at most
    :data:`PREFLIGHT_WATCHDOG_S`, the one wait the timeouts do not bound (name resolution)."""
    import threading

    if not api_key.startswith(("tml-", "eyJ")):  # what the SDK refuses before sending (tinker_protocol.md)
        raise ConfigurationError(f"the API key for {what} does not start with tml- (the SDK refuses it); {_KEY_HINT}")
    outcome: list[ConfigurationError | None] = []
    worker = threading.Thread(target=lambda: outcome.append(_probe(url, api_key, what, connect_s, read_s, attempts)),
                              name="cookbook-preflight", daemon=True)
    worker.start()
    worker.join(PREFLIGHT_WATCHDOG_S)
    if not outcome:
        raise ConfigurationError(f"{what} ({url}) did not answer within {PREFLIGHT_WATCHDOG_S:.0f} s; {_URL_HINT}")
    if outcome[0] is not None:
        raise outcome[0]


def _probe(url: str, api_key: str, what: str, connect_s: float, read_s: float,
           attempts: int) -> ConfigurationError | None:
    import httpx

    endpoint = f"{url}/api/v1/get_server_capabilities"
    where = what if url in what else f"{what} at {url}"
    timeout = httpx.Timeout(read_s, connect=connect_s)
    last = ""
    for attempt in range(max(1, attempts)):
        if attempt:
            time.sleep(0.5)
        try:
            with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=True) as http:
                resp = http.get(endpoint, headers={"X-API-Key": api_key, "Accept": "application/json"})
        except httpx.TimeoutException as exc:
            last = f"no answer within the timeout ({type(exc).__name__})"
            continue
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
            continue
        except Exception as exc:
            return ConfigurationError(f"{what}: cannot send a request to {url} ({type(exc).__name__}: {exc}); {_URL_HINT}")
        code = resp.status_code
        body = " ".join(resp.text.split())[:200]
        if 200 <= code < 300:
            return None
        if code in (401, 403):
            return ConfigurationError(f"{where} rejected the API key (HTTP {code}: {body}); {_KEY_HINT}")
        if code == 402:
            return ConfigurationError(f"{where} refused the account (HTTP 402, billing: {body}); check the "
                                      "account's billing in the Tinker console, or unset TINKER_API_KEY to run offline")
        if code in (408, 429) or code >= 500:
            last = f"HTTP {code}: {body}"
            continue
        return ConfigurationError(f"{what}: {endpoint} answered HTTP {code} ({body}), so {url} is not a Tinker API root; "
                                  f"{_URL_HINT}")
    return ConfigurationError(f"{where} could not be reached after {max(1, attempts)} attempts ({last}); {_URL_HINT}")


@contextlib.contextmanager
def tinker_service(log_path: str | Path, base_url: str | None = None) -> Iterator[Service]:
    import tinker

    real_key = os.environ.get("TINKER_API_KEY")
    kind = service_kind(base_url)
    mock = None
    if kind == "server":
        client = tinker.ServiceClient(base_url=base_url, api_key=real_key or "tml-mock")
    elif kind == "tinker":
        client = tinker.ServiceClient()
    else:
        from cookbook.mock import MockTinker

        mock = MockTinker(state_dir=Path(log_path) / "mock_state").start()
        client = tinker.ServiceClient(base_url=mock.base_url, api_key=mock.api_key)
        base_url = mock.base_url
    if mock is None:  # before any session exists: nothing to close
        preflight(service_url(kind, base_url), real_key or "tml-mock", describe_service(kind, base_url))
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


def _toy_renderers() -> dict[str, str]:
    from cookbook.mock.tiny_chat import TINY_CHAT, TINY_CHAT_TOOLS

    return {TINY_CHAT: "llama3", TINY_CHAT_TOOLS: "qwen3_instruct"}


def resolve_model_names(model_name: str | None, renderer_name: str | None, kind: str, online_default: str,
                        online_renderer: str | None = None, mock_default: str | None = None) -> tuple[str, str]:
    """(model name, renderer name). On the embedded mock the default model is ``mock_default`` (default: the toy
    ``cookbook/tiny-chat``: fast, and a random policy can find its single-token stop); on a real service it is
    ``online_default`` with its recommended renderer. The toy models use the renderer whose tokens they carry
    (``llama3``; ``qwen3_instruct`` for ``cookbook/tiny-chat-tools``)."""
    from cookbook.mock.tiny_chat import TINY_CHAT
    from cookbook.tokenizers import model_entry

    name = model_name or ((mock_default or TINY_CHAT) if kind == "mock" else online_default)
    toys = _toy_renderers()
    if name in toys:
        return name, renderer_name or toys[name]
    if renderer_name:
        return name, renderer_name
    if online_renderer and not model_name:
        return name, online_renderer
    try:
        return name, model_entry(name).default_renderer
    except Exception as exc:
        raise ConfigurationError(f"model_name={name!r}: {exc}; set renderer_name=") from None


def make_renderer(model_name: str, renderer_name: str) -> Any:
    """The renderer for ``model_name`` (a toy model's tokenizer comes from its bundled folder)."""
    from cookbook.mock.tiny_chat import tiny_chat_dir
    from cookbook.renderers import get_renderer

    toy = model_name in _toy_renderers()
    return get_renderer(renderer_name, str(tiny_chat_dir(model=model_name)) if toy else model_name)


def with_models(cfg: Any, kind: str, online_default: str, online_renderer: str | None = None, **defaults: Any) -> Any:
    """``cfg`` with model_name / renderer_name resolved and every ``None`` key in ``defaults`` filled with
    ``defaults[key] = (mock value, online value)``."""
    import chz

    model, renderer = resolve_model_names(cfg.model_name, cfg.renderer_name, kind, online_default, online_renderer)
    fills = {k: (mock if kind == "mock" else online) for k, (mock, online) in defaults.items()
             if getattr(cfg, k) is None}
    return chz.replace(cfg, model_name=model, renderer_name=renderer, **fills)


def parse_config(cls: Any, argv: Sequence[str]) -> Any:
    """``key=value`` arguments into a chz config; an unknown key gets chz's "did you mean"."""
    import chz

    try:
        return chz.Blueprint(cls).make_from_argv(list(argv))
    except Exception as exc:  # chz raises its own exception types
        first = "\n".join(line for line in str(exc).splitlines() if line.strip() and "--help" not in line)
        raise ConfigurationError(f"bad recipe argument: {first}\n(--help lists every key)") from exc


def _type_name(t: Any) -> str:
    name = getattr(t, "__name__", None) if not hasattr(t, "__args__") else None
    return name or str(t).replace("typing.", "").replace("cookbook.rl.train.", "")


def config_help(cls: Any, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """``(key, type, default, doc)`` of every key of a chz config, nested configs expanded (``async_config.*``)."""
    import typing

    import chz

    rows: list[tuple[str, str, str, str]] = []
    for f in chz.chz_fields(cls).values():
        default = f._default if f._default is not chz_missing() else (
            "[]" if f._default_factory is not chz_missing() else "(required)")
        rows.append((prefix + f.logical_name, _type_name(f.final_type), repr(default) if isinstance(default, str | int | float | bool | type(None)) else str(default), f._doc or ""))
        for arg in typing.get_args(f.final_type) or (f.final_type,):
            if hasattr(arg, "__chz_fields__"):
                rows += config_help(arg, prefix + f.logical_name + ".")
    return rows


def chz_missing() -> Any:
    from chz.util import MISSING

    return MISSING


def recipe_help(name: str, cls: Any, doc: str | None) -> str:
    rows = config_help(cls)
    w1 = max(len(r[0]) for r in rows)
    w2 = min(28, max(len(r[1]) for r in rows))
    lines = [f"usage: cookbook run {name} [key=value ...] [--debug]", ""]
    if doc:
        lines += [doc.strip().splitlines()[0], ""]
    lines += ["keys (type, default, description):"]
    lines += [f"  {k:<{w1}}  {t:<{w2}}  {d:<12}  {doc_}" for k, t, d, doc_ in rows]
    lines += ["", "Rerunning the same command resumes the run in log_path; --debug shows tracebacks."]
    return "\n".join(lines)


def run_recipe(
    name: str,
    cls: Any,
    argv: Sequence[str],
    body: Callable[[Any, Service, Any], dict[str, Any]],
    *,
    kind: str,
    resolve: Callable[[Any, str], Any] | None = None,
    validate: Callable[[Any], None] | None = None,
    prepare: Callable[[Any], Any] | None = None,
    doc: str | None = None,
) -> dict[str, Any]:
    """The recipe skeleton: parse and validate the config and load the data (before anything starts), open
    the run directory (lock, ``behavior_if_log_dir_exists``, config comparison), print the banner, start the
    service, run ``body(cfg, service, prepare(cfg))``. ``resolve(cfg, service_kind)`` fills service-dependent
    defaults (model, renderer, learning rate)."""
    import chz

    from cookbook.loop import expand_path, logging_spec_of, opened

    argv = [a for a in argv if a != "--debug"]
    if any(a in ("--help", "-h") for a in argv):
        print(recipe_help(name, cls, doc))
        return {}
    cfg = parse_config(cls, argv)
    cfg = chz.replace(cfg, log_path=expand_path(cfg.log_path))
    skind = service_kind(cfg.base_url)
    if resolve is not None:
        cfg = resolve(cfg, skind)
    if validate is not None:
        validate(cfg)
    prepared = prepare(cfg) if prepare is not None else None
    with opened(cfg.log_path, kind, cfg, cfg.behavior_if_log_dir_exists, logging_spec_of(cfg)):
        print(f"{name}: {describe_service(skind, cfg.base_url)}; model {getattr(cfg, 'model_name', None)}; "
              f"log_path {cfg.log_path}", file=sys.stderr)
        with tinker_service(cfg.log_path, cfg.base_url) as service:
            return body(cfg, service, prepared)


def main_guard(run: Callable[[Sequence[str]], Any], argv: Sequence[str], name: str) -> int:
    """Exit codes and messages for a recipe command: a :class:`~cookbook.errors.CookbookError` is one line
    (exit 2), Ctrl-C names the step and how to resume (exit 130), any other error is one line (exit 1);
    ``--debug`` shows tracebacks."""
    from cookbook.errors import CookbookError
    from cookbook.loop import current_steps

    debug = "--debug" in argv or os.environ.get("COOKBOOK_DEBUG") == "1"
    try:
        run(argv)
        return 0
    except KeyboardInterrupt:
        steps = [s for s in current_steps().values() if s is not None]
        where = f" at step {steps[-1]}" if steps else ""
        print(f"\n{name}: interrupted{where}; rerun the same command to resume", file=sys.stderr)
        return 130
    except CookbookError as exc:
        if debug:
            raise
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if debug:
            raise
        print(f"{name}: error: {type(exc).__name__}: {exc}\n(rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def bundled(name: str) -> Path:
    path = Path(__file__).parent / "data" / name
    if not path.exists():
        raise ConfigurationError(f"bundled dataset {name!r} is missing from the installation ({path})")
    return path


def sft_phase(cfg: Any, service: Service, renderer: Any, conversations: Sequence[Any], *, subdir: str, steps: int,
              learning_rate: float, seed: int, recipe: str, what: str, batch_size: int = 8,
              max_length: int | None = 256) -> str:
    """A supervised phase inside a recipe's run (an RL warm-up, a distillation teacher): ``steps`` SFT steps on
    ``conversations`` in ``<log_path>/<subdir>`` with a constant learning rate, resuming or skipping like any SL
    run. Returns the final state path; a run that ends without a final checkpoint is a :class:`TrainingError`."""
    from cookbook.errors import TrainingError
    from cookbook.supervised.data import ConversationDataset
    from cookbook.supervised.train import SupervisedConfig, train

    batch = min(batch_size, len(conversations))
    dataset = ConversationDataset(list(conversations), batch)
    sl_cfg = SupervisedConfig(
        log_path=str(Path(cfg.log_path) / subdir), model_name=cfg.model_name, renderer_name=cfg.renderer_name,
        learning_rate=learning_rate, lr_schedule="constant", num_epochs=-(-steps // len(dataset)),
        batch_size=batch, max_length=max_length, lora_rank=cfg.lora_rank, save_every=0, eval_every=0,
        max_steps=steps, seed=seed, behavior_if_log_dir_exists="resume",
    )
    print(f"{recipe}: {what}, {steps} steps -> {sl_cfg.log_path}", file=sys.stderr)
    log = train(sl_cfg, service.client, dataset, (), renderer, Progress(("train_mean_nll",)))
    final = log.last_checkpoint()
    if final is None or not final.get("final"):
        raise TrainingError(f"{log.dir}: the {what} finished without a final checkpoint")
    return str(final["state_path"])
