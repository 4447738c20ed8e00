"""labkit: the small helper package of the Triton custom-metrics course.

Every helper here is first shown in full, in plain code, in the notebook that
teaches it; later notebooks import it from here.

- ``labkit.triton``: start and stop a real Triton server (local process or Docker).
- ``labkit.traffic``: send requests (one, closed loop, open loop, phases).
- ``labkit.scrape``: read ``/metrics`` into a tidy pandas DataFrame; a background sampler.
- ``labkit.promql``: ``rate``, ``increase`` and ``histogram_quantile`` in pandas.
- ``labkit.plots``: the course's standard plots.
- ``labkit.prometheus``: a real Prometheus scraping given targets; PromQL into DataFrames.
- ``labkit.process``: child processes that never outlive the Python that started them.
"""

__version__ = "0.1.0"

#: The Triton release the course is verified on: the local binary from
#: ``nvidia-pytriton==0.7.0`` and the matching NGC container image.
TRITON_VERSION = "2.51.0"
#: The pinned default image of the Docker path. The environment variable ``TRITON_IMAGE``
#: overrides it in ``labkit.triton.start(mode="docker")`` (see ``labkit.triton.docker_image``),
#: ``docker/run_triton.sh`` and ``docker/compose.yaml``; what changed after 24.10: ``docs/versions.md``.
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
