from setuptools import find_packages, setup

setup(
    name="pxed",
    version="0.1.0",
    description="Bare-metal provisioning control server (netboot, disk images, boot queues)",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    license="MIT",
    python_requires=">=3.11",
    # twisted.plugins is a namespace-style drop-in directory (no __init__.py
    # of ours); it must be listed explicitly so `pip install .` copies the
    # plugin next to Twisted's own.
    # An explicit root lets `pip install -e .` use a plain .pth entry for the
    # project directory, which is what Twisted's plugin scan looks through;
    # setuptools' import-hook editable mode would hide twisted/plugins/.
    package_dir={"": "."},
    packages=[
        *find_packages(include=["pxed", "pxed.*"]),
        "pxed.db.migrations.versions",
        "twisted.plugins",
    ],
    package_data={
        "pxed.db": ["migrations/*.py", "migrations/versions/*.py", "migrations/*.mako"],
        "twisted.plugins": ["pxed_plugin.py"],
        # The management OS's build script and the files it packs: pxed runs
        # it at first start (pxed/mgmtosbuild.py), also from `pip install .`.
        "pxed": ["mgmtos/*"],
        # The web dashboard's files, served as they are (no build step).
        "pxed.web": ["dashboard/*.html", "dashboard/*.css", "dashboard/js/*.js"],
    },
    include_package_data=True,
    install_requires=[
        "twisted[tls]>=25.5,<27",  # tests/web/test_sendfile.py passes on 25.5-26.10
        "klein>=24.8,<25",
        "treq>=24.9,<27",
        "sqlalchemy>=2.0.30,<2.2",
        "alembic>=1.13,<2",
        "python-multipart>=0.0.20,<0.1",
        "zstandard>=0.22,<1",
        # FastCDC content-defined chunking (its compiled chunker, ~1.5 GB/s
        # here), for the chunk store (pxed/chunkstore.py).
        "fastcdc>=1.7,<2",
        "docker>=7,<8",
        "msgspec>=0.18.6,<0.24",
        "prometheus-client>=0.20,<0.27",
        # Power control: BMC passwords sealed with AES-GCM; IPMI lanplus.
        "cryptography>=42,<51",
        "pyghmi>=1.5.70,<2",
        # pxectl, the command line (pxed/cli/).
        "click>=8.1,<9",
        "httpx>=0.27,<1",
    ],
    extras_require={
        "postgres": ["psycopg[binary]>=3.1,<4"],
        "test": [
            "pytest>=8,<10",
            "pytest-twisted>=1.14,<2",
            # One worker per core; pyproject.toml's addopts (tests/conftest.py
            # says which tests share one).
            "pytest-xdist>=3.6,<4",
            "hypothesis>=6.100,<7",
            "schemathesis>=4.30,<5",
            "ruff>=0.6",
            # The Redfish BMC of the power tests (pxed/testing/redfish_bmc.py)
            # and the password file it reads.
            "sushy-tools>=1.3,<3",
            "bcrypt>=4,<6",
            # The dashboard's browser tests (tests/web/dashboard/), driving
            # Debian's chromium through chromium-driver.
            "selenium>=4.15,<5",
        ],
    },
    entry_points={
        "console_scripts": ["pxed-admin=pxed.admin:main", "pxectl=pxed.cli:main"],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: System :: Installation/Setup",
    ],
)
