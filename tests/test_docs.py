"""The documentation site: every public name is in the API reference, and ``mkdocs build --strict`` passes.

The strict build runs in the default suite when mkdocs and its plugins are installed (extra ``docs``, pulled in by
``test``) and is skipped otherwise. It renders the committed notebooks without executing them
(``BAYESFUSE_DOCS_EXECUTE=false``): ``tests/test_notebooks.py`` executes them, and the opt-in slow test below builds
the site with the notebooks executed in smoke mode. A negative control checks that the same strict configuration
fails on a broken link.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import bayesfuse

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
HAVE_MKDOCS = all(importlib.util.find_spec(m) is not None
                  for m in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "mkdocs_jupyter"))
needs_mkdocs = pytest.mark.skipif(not HAVE_MKDOCS, reason="mkdocs + plugins not installed (pip install -e '.[docs]')")


def _directives() -> set[str]:
    """Every ``::: dotted.path`` of the API reference pages."""
    found = set()
    for page in (DOCS / "api").glob("*.md"):
        found |= set(re.findall(r"^::: ([\w.]+)\s*$", page.read_text(), flags=re.M))
    return found


#: public modules besides those in ``bayesfuse.__all__``: every name of their ``__all__`` needs an API entry
EXTRA_PUBLIC_MODULES = ["bayesfuse.data", "bayesfuse.model", "bayesfuse.posterior", "bayesfuse.sklearn",
                        "bayesfuse.diagnostics.reference"]
#: subpackages that are building blocks of FusionModel (docs/architecture.md), not a user API
INTERNAL_MODULES = {"bayesfuse.cli": "the `bayesfuse` command, documented as a command",
                    "bayesfuse.module": "Pyro modules behind FusionModel", "bayesfuse.nn": "torch encoders / decoders",
                    "bayesfuse.train": "the SVI loop behind FusionModel.fit",
                    "bayesfuse.distributions": "the piecewise-exponential survival likelihood"}


def _public_modules() -> list[str]:
    top = [getattr(bayesfuse, n).__name__ for n in bayesfuse.__all__ if isinstance(getattr(bayesfuse, n), ModuleType)]
    return top + EXTRA_PUBLIC_MODULES


def _public_names() -> list[tuple[str, str]]:
    """``(module, name)`` of every public name: ``bayesfuse.__all__`` and the ``__all__`` of each public module
    (a module without ``__all__``: its public names defined there)."""
    out = [("bayesfuse", n) for n in bayesfuse.__all__ if n != "__version__"]
    for path in _public_modules():
        mod = importlib.import_module(path)
        names = getattr(mod, "__all__", None)
        if names is None:
            names = [n for n in vars(mod) if not n.startswith("_") and getattr(getattr(mod, n), "__module__", "") == path]
        out += [(path, n) for n in names]
    return out


def _documented_as(name: str, directives: set[str], module: str = "bayesfuse") -> str | None:
    """The API-reference path under which public ``module.name`` is documented, or None.

    A module is documented by its own directive; an object by a directive of its defining path, or through a
    module directive whose namespace exports it (a module page renders the members of its ``__all__``, or without
    one the public names defined in it).
    """
    obj = getattr(importlib.import_module(module), name)
    if isinstance(obj, ModuleType):
        return obj.__name__ if obj.__name__ in directives else None
    if hasattr(obj, "__qualname__") and hasattr(obj, "__module__"):
        path = f"{obj.__module__}.{obj.__qualname__}"
        if path in directives:
            return path
    for d in sorted(directives):
        try:
            mod = importlib.import_module(d)
        except ImportError:
            continue
        exported = getattr(mod, "__all__", None)
        if exported is None:     # a module page without __all__ renders the public names defined in it
            exported = [n for n in vars(mod) if not n.startswith("_") and getattr(getattr(mod, n), "__module__", "") == d]
        if name in exported and getattr(mod, name) is obj:
            return f"{d}.{name}"
    return None


def _has_docstring(obj) -> bool:
    """mkdocstrings hides objects without a docstring (``show_if_no_docstring`` is off): a public function or
    class needs one (a dataclass's generated ``Name(field, ...)`` text does not count)."""
    if not (inspect.isfunction(obj) or inspect.isclass(obj)):
        return True
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    return bool(doc and doc.strip()) and not doc.startswith(f"{obj.__name__}(")


def test_every_public_name_is_in_the_api_reference():
    directives = _directives()
    assert directives, "no ::: directives found under docs/api/"
    missing = [f"{m}.{n}" for m, n in _public_names() if _documented_as(n, directives, m) is None]
    assert not missing, f"public names without an API page: {missing}; add '::: <path>' to a docs/api/*.md page"
    undocumented = [f"{m}.{n}" for m, n in _public_names()
                    if not _has_docstring(getattr(importlib.import_module(m), n))]
    assert not undocumented, f"public names without a docstring (the API page would omit them): {undocumented}"


def test_every_subpackage_is_public_or_internal():
    """A new subpackage must be classified, so its names cannot slip past the check above."""
    subs = {f"bayesfuse.{m.name}" for m in pkgutil.iter_modules(bayesfuse.__path__) if not m.name.startswith("_")}
    public = {p for p in _public_modules() if p.count(".") == 1}
    assert subs - public - set(INTERNAL_MODULES) == set()
    assert public & set(INTERNAL_MODULES) == set()


def test_public_name_check_can_fail():
    """Negative controls: without the FusionModel page, or the metrics page, the checks report those names; an
    object without a docstring is reported."""
    directives = _directives() - {"bayesfuse.model.fusion_model.FusionModel"}
    assert _documented_as("FusionModel", directives) is None
    no_metrics = _directives() - {"bayesfuse.metrics"}
    assert _documented_as("concordance_harrell", no_metrics, "bayesfuse.metrics") is None
    assert _documented_as("concordance_harrell", _directives(), "bayesfuse.metrics") == \
        "bayesfuse.metrics.concordance_harrell"

    def no_doc():
        pass

    @dataclasses.dataclass
    class NoDoc:
        x: int

    assert not _has_docstring(no_doc) and not _has_docstring(NoDoc) and _has_docstring(bayesfuse.FusionModel)


def test_api_directives_resolve():
    """Each directive names an importable module or object (a typo would fail the strict build)."""
    unresolved = []
    for path in sorted(_directives()):
        parts = path.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            obj = functools.reduce(lambda o, a: getattr(o, a, None), parts[i:], obj)
            if obj is None:
                unresolved.append(path)
            break
        else:
            unresolved.append(path)
    assert _directives() and not unresolved, f"::: directives that do not resolve: {unresolved}"


def test_nav_lists_every_page():
    """Every markdown page and notebook is reachable from mkdocs.yml's nav (strict mode also warns on omitted files)."""
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = [p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")]
    pages += [f"notebooks/{p.name}" for p in (ROOT / "notebooks").glob("*.ipynb")]
    assert [p for p in pages if p not in nav] == []


def _build(config: Path, site: Path, execute: bool = False, extra_env: dict | None = None):
    env = {**os.environ, "BAYESFUSE_DOCS_EXECUTE": "true" if execute else "false", "NO_MKDOCS_2_WARNING": "1",
           "MPLBACKEND": "Agg", **(extra_env or {}),
           # notebook kernels import this tree's bayesfuse (their working directory is docs/notebooks)
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)


@needs_mkdocs
def test_mkdocs_build_strict(tmp_path):
    res = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    html = "".join(p.read_text() for p in (tmp_path / "site" / "api").rglob("*.html"))
    directives = _directives()
    unrendered = [f"{m}.{n}" for m, n in _public_names() if f'id="{_documented_as(n, directives, m)}"' not in html]
    assert not unrendered, f"public names with no rendered API entry: {unrendered}"
    assert (tmp_path / "site" / "notebooks" / "02_survival" / "index.html").exists()


@needs_mkdocs
def test_mkdocs_strict_fails_on_a_broken_link(tmp_path):
    """Negative control: the same configuration, one extra page linking to a missing page, must fail."""
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs, symlinks=False, ignore=shutil.ignore_patterns("notebooks"))
    (docs / "notebooks").symlink_to(ROOT / "notebooks")
    (docs / "faq.md").write_text((DOCS / "faq.md").read_text() + "\nSee [this page](no_such_page.md).\n")
    cfg = (ROOT / "mkdocs.yml").read_text().replace("docs_dir: docs", f"docs_dir: {docs}")
    cfg = cfg.replace("paths: [.]", f"paths: [{ROOT}]")
    (tmp_path / "mkdocs.yml").write_text(cfg)
    res = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert res.returncode != 0
    assert "no_such_page.md" in res.stdout + res.stderr


@pytest.mark.slow
@needs_mkdocs
def test_mkdocs_build_strict_with_executed_notebooks(tmp_path):
    """The site as published: notebooks executed during the build (smoke mode here, CI=1)."""
    res = _build(ROOT / "mkdocs.yml", tmp_path / "site", execute=True, extra_env={"CI": "1"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    page = (tmp_path / "site" / "notebooks" / "01_quickstart" / "index.html").read_text()
    assert "data:image/png;base64" in page          # executed: the figures are in the page
