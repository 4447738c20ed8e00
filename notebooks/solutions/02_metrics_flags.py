def metrics_flags(port):
    """tritonserver flags: metrics on 127.0.0.1:port only, refreshed every 250 ms."""
    return [
        "--allow-metrics=true",
        f"--metrics-port={port}",
        "--metrics-address=127.0.0.1",  # without it the metrics port listens on every interface
        "--metrics-interval-ms=250",
    ]
