"""One place where configuration is read: environment variables (or a .env file)."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.caps import FrequencyCap
from core.routes import DEFAULT_ROUTE, RateUnit, Route, RoutesError, load_routes

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER_TOKEN = "simulator-token"


class Settings(BaseSettings):
    """Service settings; every field is an environment variable of the same name, upper-cased."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"

    # Unset: the embedded PostgreSQL under DATA_DIR (started by `make run` and the tests).
    database_url: str | None = None
    database_pool_size: int = Field(default=10, ge=1)
    # Longest a single statement may take before it fails (seconds).
    database_statement_timeout_seconds: float = Field(default=60.0, gt=0)

    # Unset: the embedded Temporal dev server started by `make run`.
    temporal_address: str | None = None
    temporal_namespace: str = "default"
    # A secured cluster or Temporal Cloud: mTLS with a client certificate and its key (PEM
    # files; the CA when the server's is not publicly trusted), or an API key (over TLS).
    temporal_tls: bool = False
    temporal_tls_cert_file: Path | None = None
    temporal_tls_key_file: Path | None = None
    temporal_tls_ca_file: Path | None = None
    temporal_tls_server_name: str | None = None
    temporal_api_key: SecretStr | None = None
    temporal_task_queue: str = "mailing"
    # Sends run on a task queue of their own so that the server can cap their rate.
    temporal_send_task_queue: str = "mailing-send"
    # How long the API waits for a dispatch workflow to take a pause, resume or cancel; past
    # it (no worker running), the API changes the row itself and the workflow catches up.
    control_timeout_seconds: float = Field(default=10.0, gt=0)

    # Base of the external API, e.g. https://probe.fbrq.cloud/v1. Unset: the built-in simulator.
    send_api_url: str | None = None
    send_api_token: str = PLACEHOLDER_TOKEN
    send_timeout_seconds: float = Field(default=10.0, gt=0)
    # Concurrency per worker and a global rate across all workers (messages per second).
    send_concurrency: int = Field(default=100, ge=1)
    send_rate_per_second: float | None = Field(default=None, gt=0)
    # Several gateways (core.routes): a JSON list of routes, or a JSON or YAML file of one.
    # Unset: one route `default` of SEND_API_URL, SEND_API_TOKEN and SEND_RATE_PER_SECOND.
    send_routes: str | None = None
    send_routes_file: Path | None = None
    # A route's circuit opens after this many failures in a row that show its gateway down
    # (refused, reset, 5xx, 429, timeout): its traffic goes to the next route that may serve
    # the client. It is probed after ROUTE_PROBE_INITIAL_SECONDS, then twice as long after
    # each failed probe, up to ROUTE_PROBE_MAX_SECONDS.
    route_failures_to_open: int = Field(default=5, ge=1)
    route_probe_initial_seconds: float = Field(default=1.0, gt=0)
    route_probe_max_seconds: float = Field(default=30.0, gt=0)
    # A text longer than this many SMS parts is refused (422).
    max_segments: int = Field(default=10, ge=1, le=255)
    # A message still `sent` this long after its send got no receipt in time: the statistics
    # count it apart (`sent_without_receipt`), and a resend may take it. Its status stays.
    receipt_wait_hours: float = Field(default=48.0, gt=0)
    # How many messages one client may get from every dispatch in a trailing period, e.g.
    # `3/24h` or `10/7d` (core.caps); unset: no cap. Judged by the workers at each send.
    frequency_cap: str | None = None
    send_retry_initial_seconds: float = Field(default=1.0, gt=0)
    send_retry_max_seconds: float = Field(default=300.0, gt=0)
    # Error budget: a dispatch pauses itself when more than this share of its last
    # ERROR_BUDGET_WINDOW attempts failed (any failure: rejected, unavailable, timed out).
    # Unset: off, and an outage of any length is ridden out.
    error_budget_share: float | None = Field(default=None, gt=0, lt=1)
    error_budget_window: int = Field(default=200, ge=10)

    # Per-client shape: clients selected and started per page.
    audience_page_size: int = Field(default=500, ge=1, le=5000)
    # Cohort shape: messages sent per batch activity.
    send_batch_size: int = Field(default=500, ge=1, le=5000)
    # Cohort shape: batch activities a cohort keeps in flight at once, each over its own
    # share of the cohort's messages (message id modulo this), so that every worker polling
    # the send queue takes a share of one cohort. One batch keeps one worker's
    # SEND_CONCURRENCY busy; two per worker overlap one's tail with the next. 8 serves up to
    # four workers that way and costs no more actions (the same batches, in parallel).
    cohort_parallel_batches: int = Field(default=8, ge=1, le=64)
    # Batch activities one worker process runs at once (they share its SEND_CONCURRENCY). A
    # worker at this many polls for no more, so that Temporal hands the next batch to a worker
    # with room: the batches of a cohort spread evenly over the workers instead of piling up
    # on whichever polled first.
    send_batches_per_worker: int = Field(default=2, ge=1, le=64)
    # Without a zone from the number, a client gets this one.
    default_timezone: str = "Europe/Moscow"
    # Bulk import: the largest file taken (413 above it), and how many rejected rows an
    # answer lists (all are counted).
    import_max_bytes: int = Field(default=1 << 30, ge=1)
    import_errors_shown: int = Field(default=100, ge=0, le=10_000)

    # On SIGTERM a worker lets what runs finish within this grace, then cancels the rest.
    worker_shutdown_seconds: float = Field(default=30.0, ge=0)
    # Each worker process serves its metrics (prometheus_client) on WORKER_METRICS_PORT and the
    # Temporal SDK's own (task slots, schedule-to-start latency, ...) on
    # WORKER_SDK_METRICS_PORT; 0 turns either off (two workers on one host need their own).
    worker_metrics_port: int = Field(default=9464, ge=0, le=65535)
    worker_sdk_metrics_port: int = Field(default=9465, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    # The daily report: a Temporal Schedule (REPORT_SCHEDULE_ID) starts it every day at
    # REPORT_HOUR in REPORT_TIMEZONE; it mails the previous day's figures to REPORT_RECIPIENTS
    # over SMTP. No recipients: the schedule still runs and the report is only logged.
    report_schedule_id: str = "daily-report"
    report_hour: int = Field(default=8, ge=0, le=23)
    report_timezone: str = "Europe/Moscow"
    report_recipients: list[str] = []
    report_sender: str = "mailing-service@localhost"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    simulator_host: str = "127.0.0.1"
    simulator_port: int = 8090
    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    # Where operators open the Temporal UI (the admin page links a dispatch's workflows there);
    # unset: the embedded dev server's UI on TEMPORAL_UI_PORT.
    temporal_ui_url: str | None = None

    # Authentication. With AUTH_ISSUER, tokens of that OIDC provider (Auth0, Keycloak, Entra ID,
    # Okta, any OpenID provider);
    # without, tokens the service signs itself with a key under DATA_DIR (`make token`).
    auth_issuer: str | None = None
    auth_audience: str = "mailing-api"
    # The client id of /docs (and the admin page) for the provider's authorization code flow.
    auth_client_id: str | None = None
    auth_algorithms: list[Literal["RS256", "ES256"]] = ["RS256", "ES256"]
    auth_jwks_refresh_seconds: float = Field(default=30.0, gt=0)
    # Where a provider's token carries its permissions (core.auth.ClaimRules): dotted claim
    # paths, comma-separated (`realm_access.roles`, `scp,roles`), each a list or a
    # space-separated string; unset: Auth0's `permissions`, else `scope` and `scp`.
    auth_permissions_claim: str | None = None
    # A JSON object from the provider's role or group names to our permissions, e.g.
    # {"mailing-operator": ["dispatches:read", "dispatches:control"]}; checked at start.
    auth_role_permissions: dict[str, list[str]] = {}
    # The admin page's sign-in with the provider (api/admin/oidc.py): the scopes it asks for
    # (space-separated), the client's secret when it is a confidential client, and how the
    # secret is sent (unset with a secret: client_secret_basic).
    auth_scopes: str = (
        "openid profile offline_access clients:read clients:write clients:opt-out "
        "dispatches:read dispatches:write dispatches:control receipts:write"
    )
    auth_client_secret: SecretStr | None = None
    auth_token_endpoint_auth: Literal["client_secret_basic", "client_secret_post"] | None = None
    # The sign-in's `prompt`, e.g. `consent`: a provider that keeps to OIDC Core 11 to the
    # letter (oidc-provider) grants offline_access, so a refresh token, only with it.
    auth_prompt: str | None = None
    # RFC 8707: the sign-in names the API (AUTH_AUDIENCE) in `resource` when the audience is an
    # absolute URI; false for a provider that refuses the parameter (Entra ID's v2 endpoints).
    auth_resource_indicator: bool = True
    # Seals the admin page's provider session (tokens, refresh token) in its cookie; unset:
    # derived from the embedded signing key (AUTH_SIGNING_KEY_FILE, or the one under DATA_DIR).
    auth_session_key: SecretStr | None = None
    # The embedded mode's key (PEM, RSA); unset: DATA_DIR/auth/signing-key.pem, made once.
    auth_signing_key_file: Path | None = None
    # Turns authentication off, for local experiments only (a warning at every start).
    auth_disabled: bool = False

    data_dir: Path = PROJECT_ROOT / ".data"
    log_level: str = "INFO"
    log_json: bool = False

    # The routes of SEND_ROUTES or SEND_ROUTES_FILE, with the definition they were read from.
    _routes_read: tuple[tuple[str | None, Path | None], list[Route]] | None = PrivateAttr(
        default=None
    )

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> "Settings":
        if self.environment != "production":
            return self
        missing = []
        routes_given = self.send_routes or self.send_routes_file
        if self.send_api_token == PLACEHOLDER_TOKEN and not routes_given:
            missing.append("SEND_API_TOKEN (the real token, not the placeholder)")
        if self.auth_disabled:
            missing.append("authentication (AUTH_DISABLED must not be true)")
        if not self.auth_issuer and self.auth_signing_key_file is None:
            missing.append("AUTH_ISSUER (an OIDC provider) or AUTH_SIGNING_KEY_FILE")
        sealed = self.auth_session_key or self.auth_signing_key_file
        if self.auth_issuer and self.auth_client_id and sealed is None:
            # A key made under each process's DATA_DIR would not open another's cookies.
            missing.append("AUTH_SESSION_KEY (the admin page's sessions, the same everywhere)")
        if self.database_url is None:
            missing.append("DATABASE_URL (not the embedded PostgreSQL)")
        if self.temporal_address is None:
            missing.append("TEMPORAL_ADDRESS (not the embedded dev server)")
        if missing:
            raise ValueError("in production, set " + "; ".join(missing))
        return self

    @model_validator(mode="after")
    def _client_authentication(self) -> "Settings":
        if self.auth_token_endpoint_auth is not None and self.auth_client_secret is None:
            raise ValueError(
                f"AUTH_TOKEN_ENDPOINT_AUTH={self.auth_token_endpoint_auth} needs AUTH_CLIENT_SECRET"
            )
        return self

    @model_validator(mode="after")
    def _temporal_credentials(self) -> "Settings":
        if (self.temporal_tls_cert_file is None) != (self.temporal_tls_key_file is None):
            raise ValueError("TEMPORAL_TLS_CERT_FILE and TEMPORAL_TLS_KEY_FILE go together (mTLS)")
        if self.temporal_api_key is not None and self.temporal_tls_cert_file is not None:
            raise ValueError("give TEMPORAL_API_KEY or a client certificate, not both")
        for name in ("temporal_tls_cert_file", "temporal_tls_key_file", "temporal_tls_ca_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name.upper()}: no such file: {path}")
        return self

    @field_validator("frequency_cap")
    @classmethod
    def _frequency_cap(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return FrequencyCap.parse(value).text

    @property
    def cap(self) -> FrequencyCap | None:
        return None if self.frequency_cap is None else FrequencyCap.parse(self.frequency_cap)

    @model_validator(mode="after")
    def _read_routes(self) -> "Settings":
        # Read now, so that a bad definition stops the process at start.
        self.routes  # noqa: B018
        return self

    @property
    def routes(self) -> list[Route]:
        """The send routes, by priority: SEND_ROUTES' (read once per definition), or the one
        route of SEND_API_URL, SEND_API_TOKEN and SEND_RATE_PER_SECOND."""
        source = (self.send_routes, self.send_routes_file)
        if source == (None, None):
            return [
                Route(
                    name=DEFAULT_ROUTE,
                    url=self.send_base_url,
                    token=self.send_api_token,
                    rate_per_second=self.send_rate_per_second,
                    rate_unit=RateUnit.MESSAGES,
                )
            ]
        if self._routes_read is None or self._routes_read[0] != source:
            try:
                routes = load_routes(routes_json=source[0], routes_file=source[1]) or []
            except RoutesError as error:
                raise ValueError(f"send routes: {error}") from None
            self._routes_read = (source, routes)
        return self._routes_read[1]

    @property
    def temporal_batch_task_queue(self) -> str:
        """The parallel batches' own queue, beside the send queue (its workers run at most
        SEND_BATCHES_PER_WORKER of them at once)."""
        return batch_task_queue(self.temporal_send_task_queue)

    @property
    def temporal_ui(self) -> str:
        return (self.temporal_ui_url or f"http://127.0.0.1:{self.temporal_ui_port}").rstrip("/")

    @property
    def temporal_target(self) -> str:
        return self.temporal_address or f"127.0.0.1:{self.temporal_port}"

    @property
    def send_base_url(self) -> str:
        url = self.send_api_url or f"http://{self.simulator_host}:{self.simulator_port}/v1"
        return url.rstrip("/")


def batch_task_queue(send_task_queue: str) -> str:
    return f"{send_task_queue}-batches"


@lru_cache
def get_settings() -> Settings:
    return Settings()
