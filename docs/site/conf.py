"""Sphinx + MyST-NB configuration for the course site (`make site`; sources in docs/site/).

docs/site/build.py assembles the pages in build/site-src (notebooks already executed) and runs
sphinx-build with this file; nothing is executed here and no page loads anything from the network.
"""

project = "Transfer learning, hands on"
author = "the course authors"
copyright = (
    "the course authors. Code Apache-2.0; EuroSAT MIT (Helber et al. 2019); EfficientNet-Lite0 weights Apache-2.0"
)

# MathJax served from the site itself (the package's module name has dashes), not from a CDN.
extensions = ["myst_nb", "sphinx-mathjax-offline"]

# The notebooks arrive executed (by `make test` or by build.py): never execute during the build.
nb_execution_mode = "off"
nb_output_stderr = "show"
nb_merge_streams = True
# Widgets are rendered statically by build.py; no require.js / widget manager from a CDN.
nb_ipywidgets_js = {}
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

exclude_patterns = ["_build", "**.ipynb_checkpoints"]
html_theme = "furo"
html_title = project
html_last_updated_fmt = None  # the build date is on each page, with the device (reproducible otherwise)
html_show_sourcelink = False
html_copy_source = False
html_show_sphinx = False
