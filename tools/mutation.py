"""Mutation score of the maths and renderer core, one file at a time (mutmut 3.x).

    python tools/mutation.py                        # every target, with its default tests
    python tools/mutation.py cookbook/rl/kl.py      # one target
    python tools/mutation.py --max-children 1 --show-survivors --json reports/mutation.json
    python tools/mutation.py cookbook/losses.py --keep /tmp/mut --rerun-open   # after adding tests

For each target file the script copies the project (``cookbook/``, ``tests/``, ``specs/``, ``golden/``,
``pyproject.toml``) into a scratch folder, writes a ``setup.cfg`` ``[mutmut]`` section that mutates only
that file and runs only the tests that cover it, runs ``mutmut run`` there, and then classifies every
mutant itself from the mutant's source:

* **error-text mutants do not count.** A mutant whose every change lies in code that only words an
  error message is an *error-text* mutant: it changes what an error says, not what the code does. The
  project's rule is that checks test behaviour, never our wording, so no test should kill it; these are
  reported apart and left out of the score. "Only words an error" is decided on the syntax tree of the
  original function (not on lines, so multi-line messages are recognised):
    - a ``raise`` statement (its message, f-string parts, formatting calls);
    - an argument passed to a module function's parameter that is itself only used to word errors
      (``_array(x, "x")`` where ``_array`` uses ``name`` only in its ``raise``) — found by a fixpoint
      over the module, so helpers that forward a name to other helpers count too;
    - the value of a local variable only used in those places (``where = f"group {i}" ...``);
    - the elements of a literal tuple iterated over when the loop variable is only used there.
  Everything else counts, including strings that steer behaviour (``loss_type == "ipo"``, metric
  names, dictionary keys).
* the score is ``killed / (killed + survived + timeout + suspicious + no tests)``; ``timeout`` counts as
  killed (the mutant made the tests hang, which they detect).

The script prints one line per file (killed, survived, error-text, score) and exits non-zero when a
file scores below ``--fail-under`` (default 90%). It never imports ``cookbook`` itself: it only copies
files and drives mutmut, so it runs from any environment that has mutmut, pytest and the project's
test dependencies installed.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# target file -> the narrowest test selection that covers it (pytest node ids or files)
TARGETS: dict[str, list[str]] = {
    "cookbook/losses.py": [
        "tests/math/test_losses_spec.py",
        "tests/math/test_losses_props.py",
        "tests/math/test_dpo.py",
        "tests/math/test_losses_edges.py",
    ],
    "cookbook/rl/advantages.py": [
        "tests/math/test_advantages.py",
        "tests/math/test_losses_spec.py",
    ],
    "cookbook/rl/kl.py": [
        "tests/math/test_kl.py",
        "tests/math/test_losses_spec.py",
    ],
    "cookbook/renderers/base.py": [
        "tests/renderers/test_base.py",
    ],
}

COPY = ("cookbook", "tests", "specs", "golden", "pyproject.toml")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache", "*.egg-info", "mutants")

# mutmut's exit-code statuses, grouped for the score
KILLED = {"killed", "timeout", "caught by type check"}
COUNTED = KILLED | {"survived", "suspicious", "no tests", "segfault"}


@dataclass
class FileScore:
    target: str
    tests: list[str]
    statuses: dict[str, int] = field(default_factory=dict)
    error_text: int = 0
    survivors: dict[str, str] = field(default_factory=dict)  # mutant name -> diff

    @property
    def killed(self) -> int:
        return sum(self.statuses.get(s, 0) for s in KILLED)

    @property
    def counted(self) -> int:
        return sum(self.statuses.get(s, 0) for s in COUNTED)

    @property
    def survived(self) -> int:
        return self.counted - self.killed

    @property
    def score(self) -> float:
        return 100.0 * self.killed / self.counted if self.counted else 100.0


# ------------------------------------------------------------------------------------------------ classify


def _loads(node: ast.AST, name: str) -> list[ast.Name]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Load)]


def _error_regions(func: ast.FunctionDef, error_params: dict[str, set[int | str]]) -> list[ast.AST]:
    """The sub-trees of ``func`` whose value only ever reaches an error message.

    * every ``raise`` statement;
    * an argument of a call to a module function at a parameter that is itself error text
      (``_array(x, "x")``: ``_array`` uses its ``name`` only to word its errors);
    * the value assigned to a local variable that is only used in those regions;
    * the elements of a literal tuple looped over whose loop variable is only used in those regions
      (``for name, arr in zip(("a", "b"), arrays)`` with ``name`` only in ``raise``).
    """
    regions: list[ast.AST] = _Regions([n for n in ast.walk(func) if isinstance(n, ast.Raise)])
    for node in ast.walk(func):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in error_params:
            params = error_params[node.func.id]
            regions += [a for i, a in enumerate(node.args) if i in params]
            regions += [k.value for k in node.keywords if k.arg in params]
    changed = True
    while changed:
        changed = False
        for node in ast.walk(func):
            # a local variable that only words errors: ``where = f"group {i}" if ... else "rewards"``
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                loads = _loads(func, node.targets[0].id)
                if loads and not _inside(node.value, regions) and all(_inside(x, regions) for x in loads):
                    regions.append(node.value)
                    changed = True
            if not (isinstance(node, ast.For) and isinstance(node.target, ast.Tuple)):
                continue
            names = [t.id if isinstance(t, ast.Name) else None for t in node.target.elts]
            columns: list[list[ast.AST]] = [[] for _ in names]
            it = node.iter
            if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "zip":
                for i, arg in enumerate(it.args[: len(names)]):
                    if isinstance(arg, ast.Tuple | ast.List):
                        columns[i] = list(arg.elts)
            elif isinstance(it, ast.Tuple | ast.List):
                for row in it.elts:
                    if isinstance(row, ast.Tuple) and len(row.elts) == len(names):
                        for i, el in enumerate(row.elts):
                            columns[i].append(el)
            for i, name in enumerate(names):
                if name is None or not columns[i] or all(any(c is r for r in regions) for c in columns[i]):
                    continue
                if all(_inside(load, regions) for load in _loads(node, name)):
                    regions += columns[i]
                    changed = True
    return regions


class _Regions(list):  # type: ignore[type-arg]
    """A list of sub-trees with a fast membership test for "this node lies inside one of them"."""

    def __init__(self, items: list[ast.AST] | None = None) -> None:
        super().__init__()
        self.ids: set[int] = set()
        for item in items or []:
            self.append(item)

    def append(self, item: ast.AST) -> None:  # type: ignore[override]
        super().append(item)
        self.ids.update(id(sub) for sub in ast.walk(item))

    def __iadd__(self, items):  # type: ignore[no-untyped-def, override]
        for item in items:
            self.append(item)
        return self


def _inside(node: ast.AST, regions: list[ast.AST]) -> bool:
    if isinstance(regions, _Regions):
        return id(node) in regions.ids
    return any(node is sub for region in regions for sub in ast.walk(region))


def error_text_parameters(tree: ast.Module) -> dict[str, set[int | str]]:
    """Module functions' parameters (by position and name) used only to word error messages (fixpoint)."""
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    out: dict[str, set[int | str]] = {name: set() for name in funcs}
    changed = True
    while changed:
        changed = False
        for name, func in funcs.items():
            regions = _error_regions(func, out)
            for i, arg in enumerate(func.args.args):
                if i in out[name]:
                    continue
                loads = _loads(func, arg.arg)
                if loads and all(_inside(load, regions) for load in loads):
                    out[name] |= {i, arg.arg}
                    changed = True
    return out


def _differs_only_in_error_text(original: ast.AST, mutant: ast.AST, regions: list[ast.AST]) -> bool:
    """True when every difference between the two trees lies inside an error-text region of ``original``."""
    seen_difference = False

    def same(a: object, b: object) -> bool:
        if isinstance(a, ast.AST) and isinstance(b, ast.AST):
            return walk(a, b)
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        return type(a) is type(b) and a == b

    def walk(a: ast.AST, b: ast.AST) -> bool:
        nonlocal seen_difference
        equal = type(a) is type(b) and all(same(v, getattr(b, k, None)) for k, v in ast.iter_fields(a))
        if equal:
            return True
        if _inside(a, regions):
            seen_difference = True
            return True
        if type(a) is not type(b):
            return False
        for k, v in ast.iter_fields(a):
            w = getattr(b, k, None)
            if isinstance(v, ast.AST) and isinstance(w, ast.AST):
                if not walk(v, w):
                    return False
            elif isinstance(v, list) and isinstance(w, list) and len(v) == len(w):
                for x, y in zip(v, w):
                    if isinstance(x, ast.AST) and isinstance(y, ast.AST):
                        if not walk(x, y):
                            return False
                    elif not same(x, y):
                        return False
            elif not same(v, w):
                return False
        return True

    return walk(original, mutant) and seen_difference


_SOURCES: dict[Path, dict[str, ast.FunctionDef]] = {}


def _function_sources(mutated_file: Path) -> dict[str, ast.FunctionDef]:
    """Every top-level function and method of mutmut's generated file, by name (parsed once)."""
    if mutated_file in _SOURCES:
        return _SOURCES[mutated_file]
    tree = ast.parse(mutated_file.read_text(encoding="utf-8"))
    out: dict[str, ast.FunctionDef] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            out[node.name] = node
        elif isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, ast.FunctionDef):
                    out[f"{node.name}.{sub.name}"] = sub
    _SOURCES[mutated_file] = out
    return out


def _generated_names(mutant: str) -> tuple[str, str]:
    """mutmut 3 names: ``module.x_fn__mutmut_3`` (function) or ``module.xǁClassǁmethod__mutmut_3``.

    Returns the keys of the original copy and of the mutant in :func:`_function_sources`.
    """
    local = mutant.rpartition(".")[2]
    base = local.rpartition("__mutmut_")[0]
    if "ǁ" in base:  # method: xǁClassǁname
        _, cls, _meth = base.split("ǁ", 2)
        return f"{cls}.{base}__mutmut_orig", f"{cls}.{local}"
    return f"{base}__mutmut_orig", local


def classify_error_text(original_file: Path, mutated_file: Path, names: list[str]) -> set[str]:
    """The mutants (of one generated file) that only change the text of an error."""
    original = ast.parse(original_file.read_text(encoding="utf-8"))
    params = error_text_parameters(original)
    originals = {n.name: n for n in original.body if isinstance(n, ast.FunctionDef)}
    for node in original.body:
        if isinstance(node, ast.ClassDef):
            originals.update({f"{node.name}.{m.name}": m for m in node.body if isinstance(m, ast.FunctionDef)})
    functions = _function_sources(mutated_file)
    out = set()
    region_cache: dict[str, list[ast.AST]] = {}
    for name in names:
        orig_key, mut_key = _generated_names(name)
        mut = functions.get(mut_key)
        plain = orig_key.removesuffix("__mutmut_orig")
        plain = plain.replace("x_", "", 1) if "." not in plain else plain.split(".", 1)[0] + "." + plain.rsplit("ǁ", 1)[-1]
        orig = originals.get(plain)
        if orig is None or mut is None:
            continue
        if plain not in region_cache:
            region_cache[plain] = _error_regions(orig, params)
        regions = region_cache[plain]
        o = ast.Module(body=list(orig.body), type_ignores=[])
        m = ast.Module(body=list(mut.body), type_ignores=[])
        if _differs_only_in_error_text(o, m, regions):
            out.add(name)
    return out


def _diff(mutated_file: Path, name: str) -> str:
    import difflib

    functions = _function_sources(mutated_file)
    orig_key, mut_key = _generated_names(name)
    if orig_key not in functions or mut_key not in functions:
        return "(source not found)"
    a = ast.unparse(functions[orig_key].body).splitlines()  # type: ignore[arg-type]
    b = ast.unparse(functions[mut_key].body).splitlines()  # type: ignore[arg-type]
    return "\n".join(line for line in difflib.unified_diff(a, b, lineterm="", n=1) if not line.startswith(("---", "+++")))


# ------------------------------------------------------------------------------------------------ run


# the pytest plugin entry point would import the unmutated package before mutmut's copy of it
PYTEST_ARGS = ["-p", "no:cookbook_mock", "-p", "no:randomly", "-q"]


def _prepare(scratch: Path, target: str, tests: list[str], pytest_args: list[str]) -> None:
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, scratch / name, ignore=IGNORE)
        elif src.exists():
            shutil.copy2(src, scratch / name)
    _prepare_cfg(scratch, target, tests, pytest_args)


def _prepare_cfg(scratch: Path, target: str, tests: list[str], pytest_args: list[str]) -> None:
    (scratch / "setup.cfg").write_text(
        textwrap.dedent(
            """\
            [mutmut]
            source_paths = cookbook
            only_mutate = {target}
            also_copy =
                specs
                golden
            pytest_add_cli_args_test_selection =
            {tests}
            pytest_add_cli_args =
            {args}
            """
        ).format(
            target=target,
            tests="\n".join(f"    {t}" for t in tests),
            args="\n".join(f"    {a}" for a in pytest_args),
        ),
        encoding="utf-8",
    )


def _read_results(scratch: Path, target: str) -> dict[str, int | None]:
    meta = scratch / "mutants" / (target + ".meta")
    if not meta.exists():
        raise SystemExit(f"mutmut produced no results for {target} (expected {meta}); see its output above")
    data = json.loads(meta.read_text(encoding="utf-8"))
    return dict(data.get("exit_code_by_key", {}))


def _status(code: int | None) -> str:
    from mutmut.stats import status_by_exit_code

    return str(status_by_exit_code[code])


def _score(scratch: Path, target: str, tests: list[str]) -> FileScore:
    codes = _read_results(scratch, target)
    mutated = scratch / "mutants" / target
    error_text = classify_error_text(scratch / target, mutated, list(codes))
    score = FileScore(target, tests)
    counts: Counter[str] = Counter()
    for name, code in codes.items():
        if name in error_text:
            score.error_text += 1
            continue
        status = _status(code)
        counts[status] += 1
        if status in COUNTED and status not in KILLED:
            score.survivors[name] = _diff(mutated, name)
    score.statuses = dict(counts)
    return score


def _mutmut(scratch: Path, max_children: int, quiet: bool, names: list[str] | None = None) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TINKER_TELEMETRY": "0",
           "TOKENIZERS_PARALLELISM": "false", "HYPOTHESIS_PROFILE": os.environ.get("HYPOTHESIS_PROFILE", "ci"),
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *(names or [])]
    proc = subprocess.run(cmd, cwd=scratch, env=env, text=True,
                          stdout=subprocess.PIPE if quiet else None, stderr=subprocess.STDOUT if quiet else None)
    if proc.returncode != 0:
        if quiet and proc.stdout:
            print(proc.stdout[-4000:], file=sys.stderr)
        raise SystemExit(f"mutmut run failed in {scratch} (exit {proc.returncode})")


def rerun_open(scratch: Path, target: str, tests: list[str], *, max_children: int, quiet: bool) -> FileScore:
    """Re-run an earlier run's surviving and unchecked mutants against the current tests and specs.

    The mutants of the source are those of the earlier run (the source file must not have changed);
    a mutant killed then stays killed (tests were only added).
    """
    for name in ("tests", "specs", "golden"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, scratch / name, ignore=IGNORE, dirs_exist_ok=True)
    _prepare_cfg(scratch, target, tests, PYTEST_ARGS)
    codes = _read_results(scratch, target)
    error_text = classify_error_text(scratch / target, scratch / "mutants" / target, list(codes))
    open_names = [n for n, c in codes.items() if n not in error_text and _status(c) not in KILLED]
    if open_names:
        print(f"  re-running {len(open_names)} open mutants of {len(codes)}", flush=True)
        _mutmut(scratch, max_children, quiet, open_names)
        # mutmut resets every cached verdict when the test selection changes; the mutants that were
        # killed before stay killed (tests were only added), so their earlier codes are restored
        merge_meta(scratch, target, {n: c for n, c in codes.items() if n not in set(open_names)})
    return _score(scratch, target, tests)


def merge_meta(scratch: Path, target: str, keep_codes: dict[str, int | None]) -> None:
    meta = scratch / "mutants" / (target + ".meta")
    data = json.loads(meta.read_text(encoding="utf-8"))
    data.setdefault("exit_code_by_key", {}).update(keep_codes)
    tmp = meta.with_suffix(".meta.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(meta)


def run_target(
    target: str, tests: list[str], *, max_children: int, keep: Path | None, quiet: bool, reuse: bool = False,
    rerun: bool = False,
) -> FileScore:
    scratch = Path(tempfile.mkdtemp(prefix="mutation-")) if keep is None else keep / target.replace("/", "_")
    if (reuse or rerun) and (scratch / "mutants" / (target + ".meta")).exists():
        if rerun:
            return rerun_open(scratch, target, tests, max_children=max_children, quiet=quiet)
        return _score(scratch, target, tests)
    if keep is not None and scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        _prepare(scratch, target, tests, PYTEST_ARGS)
        _mutmut(scratch, max_children, quiet)
        return _score(scratch, target, tests)
    finally:
        if keep is None:
            shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", help=f"files to mutate (default: {', '.join(TARGETS)})")
    parser.add_argument("--tests", nargs="+", help="test selection (default: the target's own list)")
    parser.add_argument("--max-children", type=int, default=2, help="parallel mutant runs (default 2)")
    parser.add_argument("--fail-under", type=float, default=90.0, help="minimum score per file, in %% (default 90)")
    parser.add_argument("--show-survivors", action="store_true", help="print the diff of every surviving mutant")
    parser.add_argument("--json", type=Path, help="write the figures as JSON to this file")
    parser.add_argument("--keep", type=Path, help="keep the scratch folders under this directory")
    parser.add_argument("--reuse", action="store_true",
                        help="with --keep: score an earlier run's results again instead of running mutmut")
    parser.add_argument("--rerun-open", action="store_true",
                        help="with --keep: re-run an earlier run's surviving / unchecked mutants with the current tests")
    parser.add_argument("--verbose", action="store_true", help="show mutmut's own output")
    args = parser.parse_args(argv)

    targets = args.targets or list(TARGETS)
    unknown = [t for t in targets if t not in TARGETS and not args.tests]
    if unknown:
        parser.error(f"no default tests for {unknown}; pass --tests")
    scores = []
    for target in targets:
        if not (ROOT / target).is_file():
            parser.error(f"{target}: no such file under {ROOT}")
        tests = args.tests or TARGETS[target]
        print(f"mutation: {target} with {' '.join(tests)}", flush=True)
        scores.append(run_target(target, tests, max_children=args.max_children, keep=args.keep, quiet=not args.verbose,
                                 reuse=args.reuse, rerun=args.rerun_open))

    width = max(len(s.target) for s in scores)
    print(f"\n{'file':<{width}}  killed  survived  error-text  score")
    for s in scores:
        print(f"{s.target:<{width}}  {s.killed:>6}  {s.survived:>8}  {s.error_text:>10}  {s.score:5.1f}%")
        other = {k: v for k, v in s.statuses.items() if k not in ("killed", "survived")}
        if other:
            print(f"{'':<{width}}  ({', '.join(f'{k}: {v}' for k, v in sorted(other.items()))})")
    if args.show_survivors:
        for s in scores:
            for name, diff in s.survivors.items():
                print(f"\n# {name}\n{diff}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = [{**asdict(s), "killed": s.killed, "survived": s.survived, "score": round(s.score, 2)} for s in scores]
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    low = [s for s in scores if s.score < args.fail_under]
    if low:
        print(f"\nbelow {args.fail_under:g}%: {', '.join(s.target for s in low)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
