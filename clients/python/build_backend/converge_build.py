"""A PEP 517 build backend in the standard library only.

`pip install ./clients/python` then needs nothing from a package index (setuptools would need
the `wheel` package, which a machine without network access may lack). It builds a pure-Python
wheel of `converge_client` (PEP 427), an sdist, and an editable wheel (PEP 660, a .pth file).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile
import zipfile
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "converge_client"
DIST = "converge-client"
VERSION = "0.1.0"
TAG = "py3-none-any"


def _metadata() -> str:
    readme = ""
    path = os.path.join(ROOT, "README.md")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            readme = f.read()
    return (
        "Metadata-Version: 2.1\n"
        f"Name: {DIST}\n"
        f"Version: {VERSION}\n"
        "Summary: Python client for converge serve: publish, consume, inbox, outbox, sagas "
        "and the shared store\n"
        "License: Apache-2.0\n"
        "Requires-Python: >=3.11\n"
        "Classifier: Programming Language :: Python :: 3\n"
        "Classifier: Typing :: Typed\n"
        "Description-Content-Type: text/markdown\n"
        "\n" + readme)


def _package_files() -> list[tuple[str, str]]:
    """(path in the archive, path on disk) of the package's files."""
    out = []
    pkg = os.path.join(ROOT, NAME)
    for name in sorted(os.listdir(pkg)):
        if name.endswith(".py") or name == "py.typed":
            out.append((f"{NAME}/{name}", os.path.join(pkg, name)))
    return out


def _digest(data: bytes) -> str:
    d = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={d}"


def _write_wheel(directory: str, files: list[tuple[str, bytes]]) -> str:
    dist_info = f"{NAME}-{VERSION}.dist-info"
    files = files + [
        (f"{dist_info}/METADATA", _metadata().encode("utf-8")),
        (f"{dist_info}/WHEEL", (f"Wheel-Version: 1.0\nGenerator: converge_build\n"
                                f"Root-Is-Purelib: true\nTag: {TAG}\n").encode()),
    ]
    record = "".join(f"{path},{_digest(data)},{len(data)}\n" for path, data in files)
    record += f"{dist_info}/RECORD,,\n"
    name = f"{NAME}-{VERSION}-{TAG}.whl"
    with zipfile.ZipFile(os.path.join(directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files:
            z.writestr(zipfile.ZipInfo(path, date_time=(2026, 1, 1, 0, 0, 0)), data)
        z.writestr(zipfile.ZipInfo(f"{dist_info}/RECORD", date_time=(2026, 1, 1, 0, 0, 0)),
                   record)
    return name


def get_requires_for_build_wheel(config_settings: Any = None) -> list[str]:
    return []


def get_requires_for_build_sdist(config_settings: Any = None) -> list[str]:
    return []


def get_requires_for_build_editable(config_settings: Any = None) -> list[str]:
    return []


def build_wheel(wheel_directory: str, config_settings: Any = None,
                metadata_directory: Any = None) -> str:
    files = []
    for arc, disk in _package_files():
        with open(disk, "rb") as f:
            files.append((arc, f.read()))
    return _write_wheel(wheel_directory, files)


def build_editable(wheel_directory: str, config_settings: Any = None,
                   metadata_directory: Any = None) -> str:
    return _write_wheel(wheel_directory, [(f"{NAME}.pth", (ROOT + "\n").encode())])


def build_sdist(sdist_directory: str, config_settings: Any = None) -> str:
    base = f"{NAME}-{VERSION}"
    name = f"{base}.tar.gz"
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as t:
        entries = _package_files() + [
            ("pyproject.toml", os.path.join(ROOT, "pyproject.toml")),
            ("README.md", os.path.join(ROOT, "README.md")),
            ("build_backend/converge_build.py", os.path.abspath(__file__)),
        ]
        for arc, disk in entries:
            if os.path.exists(disk):
                t.add(disk, arcname=f"{base}/{arc}")
        pkg_info = _metadata().encode("utf-8")
        info = tarfile.TarInfo(f"{base}/PKG-INFO")
        info.size = len(pkg_info)
        t.addfile(info, io.BytesIO(pkg_info))
    return name
