"""The example project's own tests (examples/*/tests.py, in-process with django_websocket.testing),
run as a user runs them: ``python manage.py test`` in examples/."""

import os
import subprocess
import sys

from tests.servers import ROOT


def test_example_project_tests_pass(tmp_path):
    env = dict(os.environ, EXAMPLE_DATABASE=str(tmp_path / "examples.sqlite3"), PYTHONPATH=str(ROOT))
    env.pop("DJANGO_SETTINGS_MODULE", None)  # manage.py's own: exampleproject.settings
    result = subprocess.run(
        [sys.executable, "manage.py", "test", "--noinput", "-v", "2"],
        cwd=ROOT / "examples",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "\nOK" in result.stderr, result.stderr
