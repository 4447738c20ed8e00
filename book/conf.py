"""Sphinx configuration of the course book (``make book``; sources staged by scripts/build_book.py)."""

project = "Custom metrics in Triton's Python backend"
author = "the course's authors"
copyright = "the course's authors"  # noqa: A001 (Sphinx's name)

extensions = ["myst_nb"]
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# the notebooks come executed (build/run/, or executed by scripts/build_book.py): never run them here
nb_execution_mode = "off"
nb_merge_streams = True
# anchors for the README's and docs' "#section" links, and for links between pages
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "dollarmath"]
suppress_warnings = ["myst.header"]  # notebooks open with "# NN Title", then "**Objectives**", then "##"

html_theme = "sphinx_book_theme"
html_title = "Triton custom metrics: the course"
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "use_download_button": True,
    "navbar_persistent": [],  # one search box (the sidebar's), not a second one in the header
}
html_last_updated_fmt = None
