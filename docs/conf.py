"""Sphinx configuration of the django-websocket documentation.

Build (warnings are errors)::

    python -m sphinx -W -b html docs docs/_build/html
"""

import os
import sys
from pathlib import Path

# autodoc imports the package, whose upper layers need a configured Django: use the test project.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"

import django  # noqa: E402

django.setup()

import django_websocket  # noqa: E402
from django_websocket.conf import DEFAULTS  # noqa: E402

# -- Project -------------------------------------------------------------------------------------

project = "django-websocket"
author = "the django-websocket authors"
copyright = "2010-2026, the django-websocket authors"
release = django_websocket.__version__
version = ".".join(release.split(".")[:2])

# -- General -------------------------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

# No network at build time: no intersphinx. Unresolved Python references stay plain text.
nitpicky = False

root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = []
pygments_style = "sphinx"
default_role = "literal"

autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": True}
autodoc_typehints = "none"
add_module_names = False

# -- HTML ----------------------------------------------------------------------------------------

html_theme = "alabaster"
html_title = f"django-websocket {release}"
html_static_path = []
html_theme_options = {
    "description": "WebSocket for ordinary, synchronous Django views",
    "fixed_sidebar": True,
    "show_relbars": True,
}


# -- Project-specific markup ---------------------------------------------------------------------

from docutils import nodes  # noqa: E402
from docutils.statemachine import StringList  # noqa: E402
from sphinx.util.docutils import SphinxDirective  # noqa: E402


def _show_default(value):
    if isinstance(value, tuple) and not value:
        return "()"
    return repr(value)


class SettingsSummary(SphinxDirective):
    """``.. websocket-settings-summary::``: a table of every setting of
    ``django_websocket.conf.DEFAULTS`` with its default, read from the code so that it is never
    out of date. Each name links to the setting's ``.. setting::`` entry."""

    has_content = False

    def run(self):
        # Re-read the page whenever the defaults change.
        self.env.note_dependency(str(ROOT / "django_websocket" / "conf.py"))
        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 45 55",
            "",
            "   * - Setting",
            "     - Default",
        ]
        for name in sorted(DEFAULTS):
            lines.append(f"   * - :setting:`{name}`")
            lines.append(f"     - ``{_show_default(DEFAULTS[name])}``")
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="django_websocket/conf.py"), self.content_offset, container)
        return container.children


def setup(app):
    # ``.. setting:: NAME`` marks a setting's entry; ``:setting:`NAME``` links to it.
    app.add_crossref_type("setting", "setting", indextemplate="pair: %s; setting")
    # ``.. check:: django_websocket.W001`` marks a system check; ``:check:`...``` links to it.
    app.add_crossref_type("check", "check", indextemplate="pair: %s; system check")
    app.add_directive("websocket-settings-summary", SettingsSummary)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
