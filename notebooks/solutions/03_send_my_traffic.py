import numpy as np
from tritonclient.utils import InferenceServerException

from labkit import traffic


def send_my_traffic(server):
    """40 good requests and 10 that reach the model and fail there (a NaN in the input)."""
    client = traffic.make_client(server, "grpc")
    rng = np.random.default_rng(0)
    for i in range(50):
        values = rng.normal(size=64).astype(np.float32)
        if i % 5 == 0:
            values[3] = np.nan  # the model rejects it, and counts it as an error
        try:
            traffic.infer(client, values)
        except InferenceServerException as err:
            assert "NaN" in err.message(), err  # only the failures we caused on purpose
    client.close()
    return 50
