from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
for line in (here / "django_websocket" / "__init__.py").read_text().splitlines():
    if line.startswith("__version__"):
        exec(line, version)

setup(
    name="django-websocket",
    version=version["__version__"],
    description="WebSocket (RFC 6455) for ordinary, synchronous Django views.",
    long_description=(here / "README.rst").read_text(encoding="utf-8"),
    long_description_content_type="text/x-rst",
    license="BSD-3-Clause",
    packages=find_packages(include=["django_websocket", "django_websocket.*"]),
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=["Django>=4.2"],
    extras_require={
        "gevent": ["gevent>=22.10"],
        "gevent-websocket": ["gevent>=22.10", "gevent-websocket>=0.10"],
        "gunicorn": ["gunicorn>=21"],
        "redis": ["redis>=4.5"],
        # Optional C unmasking of received frames (websockets' word-wise routine; wsaccel is
        # used too when installed); without it a pure-Python path is used.
        "speedups": ["websockets>=13"],
        "test": [
            "pytest>=7",
            "pytest-timeout>=2",
            "pytest-django>=4.5",
            "pytest-xdist>=3.5",
            "websockets>=13",
            "hypothesis>=6",
            "selenium>=4.11",  # browser tests (tests/test_browser.py), with Debian's chromium
        ],
        "docs": ["sphinx>=7"],
        "lint": ["ruff"],
    },
    classifiers=[
        "Development Status :: 4 - Beta",
        "Environment :: Web Environment",
        "Framework :: Django",
        "Framework :: Django :: 4.2",
        "Framework :: Django :: 5.2",
        "Framework :: Django :: 6.0",
        "Intended Audience :: Developers",
        "License :: OSI Approved :: BSD License",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Topic :: Internet :: WWW/HTTP",
    ],
)
