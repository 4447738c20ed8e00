"""labkit.scrape: parsing Triton's text format, and clear errors on bad endpoints."""

from __future__ import annotations

import http.server
import threading
import time

import pytest

from labkit import scrape

TEXT = """\
# HELP demo_requests_total Requests handled by the model, by outcome
# TYPE demo_requests_total counter
demo_requests_total{model="m",outcome="error",version="1"} 3
demo_requests_total{model="m",outcome="success",version="1"} 40
# HELP demo_inflight_requests Requests being computed
# TYPE demo_inflight_requests gauge
demo_inflight_requests{model="m",version="1"} 2
# HELP demo_request_duration_seconds Compute time
# TYPE demo_request_duration_seconds histogram
demo_request_duration_seconds_count{model="m",version="1"} 40
demo_request_duration_seconds_sum{model="m",version="1"} 0.2
demo_request_duration_seconds_bucket{model="m",version="1",le="0.005"} 30
demo_request_duration_seconds_bucket{model="m",version="1",le="0.01"} 38
demo_request_duration_seconds_bucket{model="m",version="1",le="+Inf"} 40
"""


def test_parse_one_row_per_sample_with_label_columns():
    frame = scrape.parse(TEXT, when=100.0)
    assert len(frame) == 2 + 1 + 2 + 3  # 2 counters, 1 gauge, count + sum, 3 buckets
    assert list(frame.columns[:4]) == ["time", "family", "type", "sample"]
    assert {"le", "model", "outcome", "version"} <= set(frame.columns)
    assert (frame["time"] == 100.0).all()


def test_counter_family_loses_total_but_sample_keeps_it():
    frame = scrape.parse(TEXT)
    counters = frame[frame["type"] == "counter"]
    assert set(counters["family"]) == {"demo_requests"}
    assert set(counters["sample"]) == {"demo_requests_total"}
    assert scrape.value(frame, "demo_requests_total", outcome="success") == 40
    assert scrape.value(frame, "demo_requests_total") == 43


def test_le_stays_a_string():
    frame = scrape.parse(TEXT)
    buckets = scrape.select(frame, "demo_request_duration_seconds_bucket")
    assert list(buckets["le"]) == ["0.005", "0.01", "+Inf"]


def test_select_unknown_label_gives_nothing():
    frame = scrape.parse(TEXT)
    assert scrape.select(frame, "demo_requests_total", nosuchlabel="x").empty
    assert scrape.value(frame, "demo_requests_total", outcome="nope") == 0.0
    with pytest.raises(KeyError, match="did you mean demo_requests_total"):
        scrape.value(frame, "demo_request_total")


def test_empty_text_gives_empty_frame_with_columns():
    frame = scrape.parse("")
    assert frame.empty and "value" in frame.columns


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b"this is { not prometheus"
    delay = 0.0
    status = 200

    def do_GET(self):  # noqa: N802 (http.server's name)
        time.sleep(self.delay)
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_endpoint():
    """A local HTTP server whose answer each test sets: garbage, slow, or an error status."""
    servers = []

    def make(body: bytes = _Handler.body, delay: float = 0.0, status: int = 200) -> str:
        handler = type("H", (_Handler,), {"body": body, "delay": delay, "status": status})
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/metrics"

    yield make
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def test_scrape_down_server_names_url_at_once():
    from labkit.process import free_port

    url = f"http://127.0.0.1:{free_port()}/metrics"
    # a refused connection is reported as such (unreachable), not waited out as a slow server: the error
    # says ConnectionError, not "did not answer within ..."
    with pytest.raises(scrape.ScrapeError, match=f"could not reach {url}: ConnectionError".replace(".", r"\.")):
        scrape.scrape(url, timeout=2)


def test_scrape_slow_server_times_out_with_url(fake_endpoint):
    url = fake_endpoint(delay=3.0)
    with pytest.raises(scrape.ScrapeError, match="did not answer within 0.5 s") as err:
        scrape.scrape(url, timeout=0.5)
    assert url in str(err.value)


def test_scrape_garbage_says_not_prometheus(fake_endpoint):
    url = fake_endpoint(body=b"<html>hello</html>\n{{{ nonsense")
    with pytest.raises(scrape.ScrapeError, match="did not return Prometheus text format") as err:
        scrape.scrape(url)
    assert url in str(err.value)


def test_scrape_http_error_status(fake_endpoint):
    url = fake_endpoint(body=b"nope", status=503)
    with pytest.raises(scrape.ScrapeError, match="HTTP 503"):
        scrape.scrape(url)


def test_sampler_records_errors_and_keeps_going(fake_endpoint):
    good = fake_endpoint(body=TEXT.encode())
    with scrape.Sampler(good, interval=0.05) as sampler:
        # it scrapes again and again in the background (bounded wait: a stuck sampler fails here)
        scrape.settle(lambda: sampler.frame()["time"].nunique() >= 3, True, timeout=30, what="three scrapes")
    frame = sampler.frame()
    assert frame["time"].nunique() >= 3
    assert not sampler.errors

    from labkit.process import free_port

    with scrape.Sampler(f"http://127.0.0.1:{free_port()}/metrics", interval=0.05, timeout=0.5) as bad:
        # a failed scrape is recorded, and the sampler keeps going
        scrape.settle(lambda: len(bad.errors) >= 2, True, timeout=30, what="the sampler's second failed scrape")
    assert bad.frame().empty and len(bad.errors) >= 3  # the last one from the final scrape at stop


def test_counter_without_total_keeps_its_wire_name():
    text = (
        "# HELP nv_inference_request_success Number of successful inference requests\n"
        "# TYPE nv_inference_request_success counter\n"
        'nv_inference_request_success{model="m",version="1"} 7\n'
    )
    frame = scrape.parse(text)
    assert list(frame["sample"]) == ["nv_inference_request_success"]  # the parser alone says ..._total
    assert list(frame["family"]) == ["nv_inference_request_success"]
    assert scrape.value(frame, "nv_inference_request_success") == 7
