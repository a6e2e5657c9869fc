"""Sphinx configuration of the wmrl documentation (MyST markdown pages, API from docstrings).

Build (warnings are errors)::

    .venv/bin/python -m sphinx -W --keep-going -q -b html docs docs/_build/html
"""

from __future__ import annotations

import os

# The API pages import every module; keep the build on one thread like the tests.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import wmrl  # noqa: E402

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


def setup(app):
    app.connect("autodoc-process-signature", _init_signature)
