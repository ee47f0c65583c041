# The pipeline image for Kubeflow Pipelines v2 / Vertex AI and for Beam workers
# (Dataflow's --sdk_container_image, or a portable runner's environment).
# TFX's base image convention: the TFX image of the pinned version, plus this
# project installed on top. Build: docker build -t <registry>/mnist-tfx:<tag> .
FROM tensorflow/tfx:1.16.0

WORKDIR /pipeline
COPY setup.py README.md ./
COPY mnist_tfx ./mnist_tfx
COPY components ./components
COPY pipeline ./pipeline
COPY results ./results
COPY serving ./serving
# The base image carries TFX and its dependencies; install only our package.
RUN python -m pip install --no-cache-dir --no-deps . \
 && python -c "import components.example_gen, components.trainer.run"
ENV PYTHONPATH="/pipeline:${PYTHONPATH}"
