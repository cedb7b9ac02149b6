"""cluster/grafana: the dashboard is valid Grafana JSON and charts only metrics the code exports."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
INGEST_METRICS = {"stemcell_ingest_frames_total", "stemcell_ingest_frames_analysed_total",
                  "stemcell_ingest_frames_dropped_total", "stemcell_ingest_reconnects_total", "stemcell_ingest_camera_state"}


def exported_names() -> set[str]:
    """Metric names created with ray.util.metrics anywhere in the product code."""
    pattern = re.compile(r'(?:Counter|Gauge|Histogram)\(\s*"(stemcell_\w+)"')
    return {m for folder in ("actors", "app") for f in (REPO / folder).glob("*.py") for m in pattern.findall(f.read_text())}


def test_dashboard_panels_query_exported_metrics_with_rays_prefix() -> None:
    dashboard = json.loads((REPO / "cluster" / "grafana" / "stemcell.json").read_text())
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("frames in", "analysed", "dropped", "reconnects", "p99", "events per app", "gpu share", "learning"):
        assert topic in titles
    queried = {m for p in dashboard["panels"] for t in p["targets"] for m in re.findall(r"\bray_(stemcell_\w+)", t["expr"])}
    queried = {re.sub(r"_(bucket|sum|count)$", "", m) for m in queried}
    assert queried <= exported_names(), queried - exported_names()
    assert {"stemcell_events_total", "stemcell_model_updates_total", "stemcell_gpu_share"} | INGEST_METRICS <= queried


def test_provisioning_and_scrape_configs_parse() -> None:
    provider = yaml.safe_load((REPO / "cluster" / "grafana" / "dashboards.yaml").read_text())
    assert provider["providers"][0]["type"] == "file"
    scrape = yaml.safe_load((REPO / "cluster" / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["file_sd_configs"][0]["files"] == ["/tmp/ray/prom_metrics_service_discovery.json"]
