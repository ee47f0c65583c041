"""mnist-tfx: a TFX pipeline for MNIST, from IDX records to a served model.

Dependencies are pinned in requirements.lock (installed with uv, see the
Makefile); install_requires names only the direct ones, loosely, so the
package can also be installed into an existing TFX environment or image.
"""

from setuptools import find_packages, setup

setup(
    name="mnist-tfx",
    version="0.1.0",
    description="A production-grade TFX pipeline for MNIST",
    python_requires=">=3.9,<3.12",
    packages=find_packages(include=["pipeline", "pipeline.*", "components",
                                    "components.*", "serving", "serving.*"]),
    install_requires=[
        "tfx==1.16.0",
        "tensorflow==2.16.2",
        "tensorflow-model-analysis==0.47.1",
        "tensorflow-data-validation==1.16.1",
        "tensorflow-transform==1.16.0",
        "apache-beam[gcp]==2.60.0",
    ],
    entry_points={"console_scripts": ["mnist-tfx = pipeline.cli:main"]},
)
