"""Worker run *inside the provisioning-only tools venv* (never imported by ``cookbook``).

``tml-renderers==0.2.1`` embeds the Kimi K2, GLM and Nemotron 3 tokenizers in a Rust extension that needs a
real ``torch`` loaded before it is imported. ``cookbook.tokenizers.tml_export`` runs this file with the tools
venv's Python (which has torch) and the unpacked tml wheel on ``PYTHONPATH``. The file only uses the standard
library, torch and tml_renderers.

Commands::

    python _tml_worker.py export OUTDIR CLASS [CLASS ...]
        For each tokenizer class write OUTDIR/CLASS.json:
        {"class", "ranks": [[id, base64(bytes)], ...] (every non-special id, from decode_bytes([id])),
         "specials": [{"name", "id", "text"}] (special_tokens() names, encode_special(name) ids, decoded text),
         "eos_token", "bos_token", "max_id"}
    python _tml_worker.py encode CLASS [CLASS ...]  < JSON list of strings
        Print {CLASS: [encode_ordinary(text) for every string]} (special-token text stays ordinary).
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import sys
from typing import Any

MAX_CONSECUTIVE_MISSES = 4096  # ids past the end of the vocabulary decode to errors


def _tokenizer(cls_name: str) -> Any:
    importlib.import_module("torch")  # the extension needs libtorch loaded first
    mod = importlib.import_module("tml_renderers.tokenizers")
    cls = getattr(mod, cls_name, None)
    if cls is None:
        raise SystemExit(f"tml_renderers.tokenizers has no class {cls_name!r}")
    return cls()


def export(outdir: str, cls_name: str) -> None:
    tok = _tokenizer(cls_name)
    specials: list[dict[str, Any]] = []
    special_ids: set[int] = set()
    for name in tok.special_tokens():
        sid = int(tok.encode_special(name))
        text = tok.decode_bytes([sid]).decode("utf-8")
        specials.append({"name": name, "id": sid, "text": text})
        special_ids.add(sid)
    ranks: list[list[Any]] = []
    i = misses = 0
    while misses < MAX_CONSECUTIVE_MISSES:
        if i not in special_ids:
            try:
                data = tok.decode_bytes([i])
            except Exception:  # the extension raises its own error types past the end
                misses += 1
            else:
                ranks.append([i, base64.b64encode(data).decode("ascii")])
                misses = 0
        i += 1
    result = {
        "class": cls_name,
        "ranks": ranks,
        "specials": sorted(specials, key=lambda s: s["id"]),
        "eos_token": getattr(tok, "eos_token", None),
        "bos_token": getattr(tok, "bos_token", None),
        "max_id": max([r[0] for r in ranks] + sorted(special_ids)),
    }
    tmp = os.path.join(outdir, f".{cls_name}.json.{os.getpid()}.partial")  # per process: never shared
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(tmp, os.path.join(outdir, f"{cls_name}.json"))


def encode(cls_names: list[str]) -> None:
    texts = json.load(sys.stdin)
    out = {}
    for cls_name in cls_names:
        tok = _tokenizer(cls_name)
        out[cls_name] = [list(tok.encode_ordinary(t)) for t in texts]
    json.dump(out, sys.stdout)


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "export":
        for cls_name in argv[2:]:
            export(argv[1], cls_name)
        return 0
    if len(argv) >= 2 and argv[0] == "encode":
        encode(argv[1:])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
