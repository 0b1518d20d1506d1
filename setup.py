from pathlib import Path

from setuptools import find_packages, setup

TEST_REQUIRES = ["pytest>=8.0", "pytest-xdist>=3.5", "responses>=0.25", "hypothesis>=6.100"]

setup(
    name="storm_bt",
    version="0.1.0",
    description="STORM spatio-temporal factor model with Qlib, a numba trading environment and backtrader",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # handlers/ and strategies/ are the Qlib-facing source folders that qrun YAMLs name; they are
    # installed inside the package (storm_bt.handlers, storm_bt.strategies), never at the top of
    # site-packages where other projects may own those generic names.
    packages=[*find_packages(include=["storm_bt", "storm_bt.*"]), "storm_bt.handlers", "storm_bt.strategies"],
    package_dir={"storm_bt.handlers": "handlers", "storm_bt.strategies": "strategies"},
    package_data={"storm_bt.data": ["universes/*.txt"]},
    install_requires=[
        "pyqlib>=0.9.7,<0.10",
        # CPU build available locally; an open range would pull the newest multi-GB CUDA build.
        "torch==2.13.0",
        "accelerate>=1.0",
        "pandas>=2.2",
        "numpy>=2.0",
        "backtrader==1.9.78.123",
        "yfinance>=0.2.60",
        "gymnasium>=1.0",
        "stable-baselines3>=2.4",
        "numba>=0.60",
        "h5py>=3.10",
        "pandas_market_calendars>=4.4",
        "lightgbm>=4.0",
        "mlflow>=2.10",
        "requests>=2.31",
        "curl_cffi>=0.7",
        "ruamel.yaml>=0.17.38",
        "tqdm>=4.66",
        "rich>=13.0",
        "filelock>=3.12",  # locks on shared state (provider, run folders); also pulled in by Qlib
        "statsmodels>=0.14",  # Newey-West (HAC) standard errors
        "arch>=7.0",  # block bootstrap
        "ray>=2.9",  # runs spread over a cluster (storm-bt evaluate --executor ray)
    ],
    extras_require={
        "test": TEST_REQUIRES,
        "dev": [*TEST_REQUIRES, "ruff>=0.6", "tox>=4.0"],
    },
    entry_points={"console_scripts": ["storm-bt=storm_bt.cli:main"]},
)
