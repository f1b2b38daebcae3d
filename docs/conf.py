"""Sphinx configuration of the ntkcore documentation (MyST Markdown, numpydoc API reference)."""

import ntkcore

project = "ntkcore"
author = "the ntkcore developers"
copyright = "the ntkcore developers, BSD-3-Clause"
version = release = ntkcore.__version__

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}  # .rst: for numpydoc's autosummary
root_doc = "index"
exclude_patterns = ["_build"]

myst_enable_extensions = ["amsmath", "dollarmath"]
myst_heading_anchors = 3

autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"  # the numpydoc sections give types, shapes and units
numpydoc_show_class_members = False
numpydoc_xref_param_type = False

html_theme = "furo"
html_title = f"ntkcore {release}"
