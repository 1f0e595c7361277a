"""The source archive and the wheel, as ``python -m build`` makes them from a copy of the
checkout, checked by ``twine check --strict`` and opened: the files a user's install needs
(templates, static files, ``py.typed``) are inside, and the metadata says what is true."""

import email.parser
import subprocess
import sys
import tarfile
import zipfile

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import django_websocket
from tests.quickstart import copy_checkout

# Files of django_websocket/ that are not Python code, and must be in both archives. The copy
# gets one of each kind too, so that the rules are checked even while the app ships none.
DATA_GLOBS = ("static/**/*", "templates/**/*")
PROBES = ("static/django_websocket/build-probe.js", "templates/django_websocket/build-probe.html")
USER_EXTRAS = {
    "gevent", "gevent-websocket", "gunicorn", "redis", "speedups",
    "uvicorn", "daphne", "hypercorn", "granian", "gunicorn-asgi",
}  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    work = tmp_path_factory.mktemp("build")
    source = work / "django-websocket"
    copy_checkout(source)
    for probe in PROBES:
        path = source / "django_websocket" / probe
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("/* packaging probe */\n")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(work / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (sdist,) = (work / "dist").glob("*.tar.gz")
    (wheel,) = (work / "dist").glob("*.whl")
    return source, sdist, wheel


def _package_data(source):
    package = source / "django_websocket"
    files = {"py.typed"}
    for pattern in DATA_GLOBS:
        files |= {p.relative_to(package).as_posix() for p in package.glob(pattern) if p.is_file()}
    return files


def test_twine_check_strict(built):
    _, sdist, wheel = built
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_the_wheel_holds_the_package_and_its_data(built):
    source, _, wheel = built
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {f"django_websocket/{name}" for name in _package_data(source)}
    assert {f"django_websocket/{probe}" for probe in PROBES} <= wanted
    assert not wanted - names, f"missing from the wheel: {sorted(wanted - names)}"
    modules = {p.relative_to(source).as_posix() for p in (source / "django_websocket").rglob("*.py")}
    assert not modules - names, f"modules missing from the wheel: {sorted(modules - names)}"
    # Only the package: no tests, examples or docs at the top of site-packages.
    tops = {name.split("/")[0] for name in names}
    assert tops == {"django_websocket", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}


def test_the_sdist_holds_the_checkout(built):
    source, sdist, _ = built
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    wanted = {f"django_websocket/{name}" for name in _package_data(source)}
    wanted |= {"pyproject.toml", "README.rst", "LICENSE", "MANIFEST.in", "run-tests", "run-example", "tox.ini"}
    wanted |= {".readthedocs.yaml", "docs/conf.py", "tests/test_install.py", "examples/quickstart/mysite/views.py"}
    assert not wanted - names, f"missing from the sdist: {sorted(wanted - names)}"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_the_metadata(built):
    _, _, wheel = built
    with zipfile.ZipFile(wheel) as archive:
        (path,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        meta = email.parser.Parser().parsestr(archive.read(path).decode())
    assert meta["Name"] == "django-websocket"
    version = Version(meta["Version"])
    assert str(version) == django_websocket.__version__
    assert version > Version("0.3.0"), "releases must sort above the 2010 app's 0.3.0"
    assert meta["Requires-Python"] == ">=3.10"
    assert meta["License-Expression"] == "BSD-3-Clause"
    assert "django-websocket contributors" in meta["Author"]
    assert set(meta.get_all("Provides-Extra")) == USER_EXTRAS, "test, docs and lint are dependency groups"
    requirements = [Requirement(r) for r in meta.get_all("Requires-Dist")]
    gunicorn = {r.name for r in requirements if r.marker and r.marker.evaluate({"extra": "gunicorn"})}
    assert {"gunicorn", "packaging"} <= gunicorn, "gunicorn's gevent workers import packaging"
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert urls["Documentation"] == "https://django-websocket.readthedocs.io/"
    classifiers = set(meta.get_all("Classifier"))
    for python in ("3.10", "3.11", "3.12", "3.13", "3.14"):
        assert f"Programming Language :: Python :: {python}" in classifiers
    for django in ("4.2", "5.2", "6.0"):
        assert f"Framework :: Django :: {django}" in classifiers
    from trove_classifiers import classifiers as known

    assert not classifiers - known, f"unknown to the package index: {classifiers - known}"
    assert "django_websocket" in meta.get_payload(), "the long description is README.rst"
