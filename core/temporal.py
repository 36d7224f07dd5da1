"""How every process connects to Temporal: the embedded dev server (plain), a self-hosted
cluster (optionally mTLS), or Temporal Cloud (mTLS with the namespace's certificate, or an API
key over TLS). One place, so that the API, the worker and the tools connect alike."""

from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.runtime import Runtime
from temporalio.service import TLSConfig

from core import tracing
from core.settings import Settings


def _read(path: Path | None) -> bytes | None:
    return None if path is None else path.read_bytes()


def tls_of(settings: Settings) -> bool | TLSConfig:
    """mTLS when a client certificate is set; TLS with the system's roots for an API key (or
    when asked for); plain otherwise."""
    if settings.temporal_tls_cert_file is not None:
        return TLSConfig(
            client_cert=_read(settings.temporal_tls_cert_file),
            client_private_key=_read(settings.temporal_tls_key_file),
            server_root_ca_cert=_read(settings.temporal_tls_ca_file),
            domain=settings.temporal_tls_server_name,
        )
    if settings.temporal_tls_ca_file is not None or settings.temporal_tls_server_name:
        return TLSConfig(
            server_root_ca_cert=_read(settings.temporal_tls_ca_file),
            domain=settings.temporal_tls_server_name,
        )
    return bool(settings.temporal_api_key or settings.temporal_tls)


def connect_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of Client.connect for these settings."""
    options: dict[str, Any] = {
        "namespace": settings.temporal_namespace,
        "tls": tls_of(settings),
    }
    if settings.temporal_api_key:
        options["api_key"] = settings.temporal_api_key.get_secret_value()
    return options


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    options = connect_options(settings)
    if runtime is not None:
        options["runtime"] = runtime
    # With tracing on (core.tracing): spans of the client's calls, and through the client, of
    # the workers' workflows and activities.
    if interceptors := tracing.interceptors():
        options["interceptors"] = interceptors
    return await Client.connect(settings.temporal_target, **options)
