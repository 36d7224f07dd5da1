"""The settings of a secured Temporal (a self-hosted cluster with mTLS, or Temporal Cloud with
mTLS or an API key) become the client's connection options. Not run against the cloud here."""

from pathlib import Path

import pytest
from pydantic import ValidationError
from temporalio.service import TLSConfig

from core.settings import Settings
from core.temporal import connect_options


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_the_embedded_server_is_plain() -> None:
    assert connect_options(settings()) == {"namespace": "default", "tls": False}


def test_mtls_with_the_namespaces_certificate(tmp_path: Path) -> None:
    cert, key, ca = tmp_path / "client.pem", tmp_path / "client.key", tmp_path / "ca.pem"
    cert.write_bytes(b"CERT")
    key.write_bytes(b"KEY")
    ca.write_bytes(b"CA")
    options = connect_options(
        settings(
            temporal_address="mailing.a1b2c.tmprl.cloud:7233",
            temporal_namespace="mailing.a1b2c",
            temporal_tls_cert_file=cert,
            temporal_tls_key_file=key,
            temporal_tls_ca_file=ca,
            temporal_tls_server_name="mailing.a1b2c.tmprl.cloud",
        )
    )
    tls = options["tls"]
    assert isinstance(tls, TLSConfig)
    assert (tls.client_cert, tls.client_private_key, tls.server_root_ca_cert) == (
        b"CERT",
        b"KEY",
        b"CA",
    )
    assert tls.domain == "mailing.a1b2c.tmprl.cloud"
    assert options["namespace"] == "mailing.a1b2c" and "api_key" not in options


def test_an_api_key_goes_over_tls_and_stays_secret() -> None:
    chosen = settings(
        temporal_address="us-east-1.aws.api.temporal.io:7233",
        temporal_namespace="mailing.a1b2c",
        temporal_api_key="secret-key-123",
    )
    options = connect_options(chosen)
    assert options["tls"] is True and options["api_key"] == "secret-key-123"
    assert "secret-key-123" not in repr(chosen) and "secret-key-123" not in str(chosen)


def test_plain_tls_to_a_private_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"CA")
    tls = connect_options(settings(temporal_tls_ca_file=ca))["tls"]
    assert isinstance(tls, TLSConfig) and tls.server_root_ca_cert == b"CA"
    assert tls.client_cert is None
    assert connect_options(settings(temporal_tls=True))["tls"] is True


def test_credentials_that_cannot_work_are_refused_at_start(tmp_path: Path) -> None:
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text("CERT")
    key.write_text("KEY")
    refused = [
        ({"temporal_tls_cert_file": cert}, "go together"),
        ({"temporal_tls_cert_file": cert, "temporal_tls_key_file": tmp_path / "no"}, "no such"),
        (
            {"temporal_tls_cert_file": cert, "temporal_tls_key_file": key, "temporal_api_key": "k"},
            "not both",
        ),
    ]
    for values, message in refused:
        with pytest.raises(ValidationError, match=message):
            settings(**values)
