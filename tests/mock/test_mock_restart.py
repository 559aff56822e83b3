"""SIGKILL the `cookbook mock serve` process after save_state, restart it on the same state dir: the
checkpoints are still served (atomic writes, nothing kept only in memory)."""

from __future__ import annotations

import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tinker
from mock_helpers import ce_datum, corpus, train_client
from subprocess_env import subprocess_env
from tinker import types

pytestmark = pytest.mark.e2e


def _start(state_dir: Path) -> tuple[subprocess.Popen[str], str]:
    env = subprocess_env(PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cookbook", "mock", "serve", "--port", "0", "--state-dir", str(state_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 60
    lines = []
    while time.monotonic() < deadline:
        if not sel.select(timeout=deadline - time.monotonic()):
            break
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"on (http://[\d.]+:\d+)", line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise AssertionError("the server did not announce itself:\n" + "".join(lines))


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(10)
        if p.stdout:
            p.stdout.close()


def test_sigkill_restart_load_weights(tmp_path: Path, procs: list[subprocess.Popen[str]]):
    state = tmp_path / "state"
    proc, url = _start(state)
    procs.append(proc)
    service = tinker.ServiceClient(base_url=url, api_key="tml-mock")
    tc = train_client(service, seed=41)
    data = [ce_datum(t) for t in corpus(2, 8, seed=41)]
    tc.forward_backward(data, "cross_entropy").result()
    tc.optim_step(types.AdamParams(learning_rate=1e-2)).result()
    path = tc.save_state("before-kill").result().path
    sampler_path = tc.save_weights_for_sampler("s").result().path
    ref = tc.forward(data, "cross_entropy").result().metrics["loss:sum"]
    service.close("success").result()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)

    proc2, url2 = _start(state)
    procs.append(proc2)
    service2 = tinker.ServiceClient(base_url=url2, api_key="tml-mock")
    try:
        tc2 = service2.create_training_client_from_state_with_optimizer(path).result()
        again = tc2.forward(data, "cross_entropy").result().metrics["loss:sum"]
        assert again == ref
        tc2.forward_backward(data, "cross_entropy").result()
        tc2.optim_step(types.AdamParams(learning_rate=1e-2)).result()
        sampler = service2.create_sampling_client(model_path=sampler_path).result()
        res = sampler.sample(types.ModelInput.from_ints([1, 2]), 1, types.SamplingParams(max_tokens=3, seed=1)).result()
        assert len(res.sequences[0].tokens) >= 1
        runs = tinker.RestClient(base_url=url2, api_key="tml-mock").list_training_runs().result().training_runs
        assert len(runs) == 2  # the run from before the kill and the restored one
        assert np.isfinite(again)
    finally:
        service2.close("success").result()
