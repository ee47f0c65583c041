"""mnist-tfx: a TFX pipeline for MNIST, from IDX records to a served model.

Dependencies are pinned in requirements.lock (installed with uv, see the
Makefile); install_requires names the direct ones at the versions the lock
holds, so the package can also be installed into an existing TFX
environment or image of that stack.
"""

from setuptools import find_packages, setup

setup(
    name="mnist-tfx",
    version="0.1.0",
    description="A production-grade TFX pipeline for MNIST",
    python_requires=">=3.11,<3.12",  # asyncio.timeout and Runner; TFDV wheels stop at 3.11
    # bench/ (benchmarks) and deploy/ (container files) are not installed.
    packages=find_packages(include=["mnist_tfx", "mnist_tfx.*", "pipeline", "pipeline.*",
                                    "components", "components.*", "serving",
                                    "serving.*", "results"]),
    package_data={"serving": ["ui/*.html", "ui/*.js", "ui/*.css"]},  # the served page
    install_requires=[
        "tfx==1.16.0",
        "tensorflow==2.16.2",
        "tensorflow-model-analysis==0.47.1",
        "tensorflow-data-validation==1.16.1",
        "tensorflow-transform==1.16.0",
        "apache-beam[gcp]==2.60.0",
    ],
    entry_points={"console_scripts": ["mnist-tfx = mnist_tfx.cli:entry"]},
)
