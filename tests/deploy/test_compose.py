"""docker-compose.yml, checked without a Docker engine: valid against the Compose
specification's JSON schema (deploy/schemas/compose-spec.json, from compose-spec/compose-spec),
nothing starting before what it needs is healthy, healthchecks and restart policies on every
long-running service, no secret in the file, workers scalable, Prometheus scraping them."""

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "deploy" / "schemas" / "compose-spec.json"
LONG_RUNNING = {"postgres", "temporal", "temporal-ui", "api", "worker", "simulator", "prometheus"}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_the_file_is_valid_compose() -> None:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    validator.validate(compose())
    # The schema does refuse what Compose refuses.
    broken = compose()
    broken["services"]["api"]["depends_on"]["temporal"] = {"condition": "service_ready"}
    broken["services"]["worker"]["healthcheck"]["interval"] = 5
    assert len(list(validator.iter_errors(broken))) == 2


def test_nothing_starts_before_what_it_needs_is_ready() -> None:
    services = compose()["services"]
    assert set(services) == LONG_RUNNING | {"migrate"}
    expected = {
        "temporal": {"postgres": "service_healthy"},
        "temporal-ui": {"temporal": "service_healthy"},
        "migrate": {"postgres": "service_healthy"},
        "api": {"migrate": "service_completed_successfully", "temporal": "service_healthy"},
        "worker": {"migrate": "service_completed_successfully", "temporal": "service_healthy"},
        "prometheus": {"api": "service_healthy", "worker": "service_healthy"},
    }
    for name, needs in expected.items():
        depends = services[name]["depends_on"]
        assert isinstance(depends, dict), f"{name}: depends_on without conditions"
        assert {dep: spec["condition"] for dep, spec in depends.items()} == needs, name
    # A condition on health needs a healthcheck to mean anything.
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], (name, dependency)


def test_every_long_running_service_is_checked_and_restarted() -> None:
    services = compose()["services"]
    for name in LONG_RUNNING:
        service = services[name]
        if name != "temporal-ui":  # the UI image ships no probe command; nothing waits on it
            assert "healthcheck" in service, name
        assert service.get("restart") == "unless-stopped", name
    assert services["migrate"]["restart"] == "no"
    # The probes are the ones the services serve.
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert "9464/readyz" in " ".join(services["worker"]["healthcheck"]["test"])


def test_no_secret_in_the_file_and_every_one_in_the_example() -> None:
    text = COMPOSE.read_text()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert {"POSTGRES_PASSWORD", "SEND_API_TOKEN"} <= required
    example = (ROOT / ".env.example").read_text()
    for name in required:
        assert re.search(rf"^{name}=", example, re.MULTILINE), name
    for service in compose()["services"].values():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in ("PASSWORD", "TOKEN", "PWD", "SECRET")):
                assert str(value).startswith("${"), key
            assert "simulator-token" not in str(value)


def test_workers_scale_and_are_scraped() -> None:
    worker = compose()["services"]["worker"]
    assert "ports" not in worker and "container_name" not in worker
    assert worker["stop_grace_period"] == "40s"  # beyond WORKER_SHUTDOWN_SECONDS (30)
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["mailing-api"]["static_configs"][0]["targets"] == ["api:8000"]
    assert jobs["mailing-worker"]["dns_sd_configs"][0] == {
        "names": ["worker"],
        "type": "A",
        "port": 9464,
    }
