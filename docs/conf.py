"""Sphinx configuration of the wmrl documentation (MyST markdown pages, API from docstrings).

Build (warnings are errors)::

    .venv/bin/python -m sphinx -W --keep-going -q -b html docs docs/_build/html
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
from pathlib import Path

from sphinx.util import logging

# The API pages import every module; keep the build on one thread like the tests.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import wmrl  # noqa: E402

_logger = logging.getLogger(__name__)

project = "wmrl"
author = "wmrl contributors"
copyright = "wmrl contributors"
version = release = wmrl.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# Section files of the benchmark report (docs/benchmarks_*.md, docs/benchmarks-*.md) are pulled
# into docs/benchmarks.md with MyST's ``{include}``; as stand-alone pages they would be documents
# outside every toctree (a warning, hence an error under -W).
exclude_patterns = ["_build", "benchmarks?*.md", "Thumbs.db", ".DS_Store"]

# -- MyST -----------------------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

# -- autodoc / napoleon ---------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}
# Type hints are shown in the signatures; the docstrings give shapes and meanings.
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
# Several signatures mention torch/tensordict/torchrl types; without intersphinx (the build runs
# offline) they are plain text, which is what nitpicky=False accepts.
nitpicky = False

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
napoleon_attr_annotations = True

# -- HTML -----------------------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"wmrl {release}"
html_theme_options = {
    "description": "Model-based RL with world models: PILCO and Dreamer on one protocol.",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "240px",
}
html_static_path: list[str] = []


# -- class signatures -----------------------------------------------------------------------------
# TorchRL's ``LossModule`` and ``EnvBase`` and tensordict's ``TensorDictModuleBase`` have
# metaclasses whose ``__call__`` (or a ``__new__``) takes ``(*args, **kwargs)``; autodoc reads the
# class signature from those first, so every subclass would be shown as ``Class(*args,
# **kwargs)``. Show the signature of the class's own ``__init__`` instead.
def _init_signature(app, what, name, obj, options, signature, return_annotation):
    import inspect as _inspect

    from sphinx.util.inspect import signature as _signature
    from sphinx.util.inspect import stringify_signature

    if what != "class" or not isinstance(obj, type) or signature != "(*args, **kwargs)":
        return None
    if getattr(obj, "_is_protocol", False):
        return "", return_annotation  # a Protocol is not instantiated
    for klass in obj.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None and klass is not object:
            break
    else:
        return None
    try:
        sig = _signature(init, bound_method=True, type_aliases=app.config.autodoc_type_aliases)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    if [p.kind for p in params] == [_inspect.Parameter.VAR_POSITIONAL,
                                    _inspect.Parameter.VAR_KEYWORD]:
        return None
    short = app.config.autodoc_typehints_format == "short"
    text = stringify_signature(sig, show_return_annotation=False, unqualified_typehints=short)
    return text, return_annotation


# -- public modules not placed on an API page ------------------------------------------------------
# docs/api/*.md place every public module (one with ``__all__``) by hand. A module added later is
# collected on docs/api/more.md until it is placed, so the reference always covers every public
# name. Modules that fail to import are left out (and reported at the "info" level).
_API_DIR = Path(__file__).resolve().parent / "api"
_PLACED = re.compile(r"^\.\. (?:automodule|py:module):: (\S+)", re.M)


def placed_modules() -> set[str]:
    """Modules named by an ``automodule`` or ``py:module`` directive on an API page."""
    return {m for page in _API_DIR.glob("*.md") for m in _PLACED.findall(page.read_text())}


def public_modules() -> list[str]:
    """``wmrl`` and every submodule that imports and declares ``__all__``."""
    names = ["wmrl"]
    for info in pkgutil.walk_packages(wmrl.__path__, "wmrl.", onerror=lambda name: None):
        if info.name == "wmrl.__main__":
            continue
        try:
            module = importlib.import_module(info.name)
        except Exception as err:  # a module under construction must not break the site
            _logger.info("API reference: %s left out (%s: %s)", info.name, type(err).__name__, err)
            continue
        if getattr(module, "__all__", None) is not None:
            names.append(info.name)
    return names


def unplaced_modules() -> list[str]:
    return sorted(set(public_modules()) - placed_modules())


def _collect_unplaced(app, docname, source):
    if docname != "api/more":
        return
    blocks = [f"\n## `{m}`\n\n```{{eval-rst}}\n.. automodule:: {m}\n```\n"
              for m in unplaced_modules()]
    source[0] += "".join(blocks) or "\nEvery public module is placed on one of the pages above.\n"


def _always_reread(app, env, added, changed, removed):
    return ["api/more"]  # the set of modules can change without the page changing


def setup(app):
    app.connect("autodoc-process-signature", _init_signature)
    app.connect("source-read", _collect_unplaced)
    app.connect("env-get-outdated", _always_reread)
