"""`index`: a static package index from a folder of wheels and sdists, for
GitHub Pages: PEP 503 HTML (what pip reads from a static host), PEP 691 JSON
next to it (index.json), PEP 658 `.metadata` files, `#sha256=` fragments and
`data-requires-python`. File names are kept exactly (hrefs are percent-encoded)."""

from __future__ import annotations

import hashlib
import html
import json
import shutil
import urllib.parse
from pathlib import Path

from ..errors import PipelineError
from .download import PROJECT, wheel_metadata
from .pick import requires_python


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_index(dist: Path, out: Path) -> Path:
    files = sorted([*dist.glob("*.whl"), *dist.glob("*.tar.gz")])
    if not files:
        raise PipelineError(f"index: no wheels or sdists in {dist}")
    project_dir = out / "simple" / PROJECT
    files_dir = out / "files"
    project_dir.mkdir(parents=True, exist_ok=True)
    files_dir.mkdir(parents=True, exist_ok=True)
    anchors, entries = [], []
    for path in files:
        data = path.read_bytes()
        shutil.copyfile(path, files_dir / path.name)
        url = f"../../files/{urllib.parse.quote(path.name)}"
        entry = {"filename": path.name, "url": url, "hashes": {"sha256": sha256(data)}}
        attrs = ""
        if path.suffix == ".whl":
            try:
                metadata = wheel_metadata(data, path.name).encode()
            except PipelineError as error:
                raise PipelineError(f"index: {str(error).removeprefix('download: ')}") from None
            (files_dir / f"{path.name}.metadata").write_bytes(metadata)
            python = requires_python(metadata.decode())
            entry["core-metadata"] = {"sha256": sha256(metadata)}
            digest = sha256(metadata)
            attrs += f' data-core-metadata="sha256={digest}" data-dist-info-metadata="sha256={digest}"'
            if python:
                entry["requires-python"] = python
                attrs += f' data-requires-python="{html.escape(python)}"'
        entries.append(entry)
        anchors.append(f'    <a href="{url}#sha256={sha256(data)}"{attrs}>{html.escape(path.name)}</a><br>')
    page = ["<!DOCTYPE html>", "<html>", f"  <head><title>Links for {PROJECT}</title></head>", "  <body>",
            f"    <h1>Links for {PROJECT}</h1>", *anchors, "  </body>", "</html>", ""]
    (project_dir / "index.html").write_text("\n".join(page))
    meta = {"api-version": "1.1"}
    (project_dir / "index.json").write_text(json.dumps({"meta": meta, "name": PROJECT, "files": entries}, indent=1))
    root = out / "simple"
    (root / "index.html").write_text(f'<!DOCTYPE html>\n<html><body><a href="{PROJECT}/">{PROJECT}</a></body></html>\n')
    (root / "index.json").write_text(json.dumps({"meta": meta, "projects": [{"name": PROJECT}]}))
    (out / ".nojekyll").write_text("")
    return root
