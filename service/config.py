"""Settings: every environment variable of the contract, read once by the composition root.

Nothing reads the environment at import time. A bad value becomes a ``SettingsError`` whose
message names the variable (and never echoes a secret).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.core.storage import template_problems
from service.decoding import InputPolicy
from service.errors import SettingsError
from service.tenants import Tenants, load_tenants

_MONTH_S = 32 * 24 * 3600.0


def is_local_url(url: str) -> bool:
    """True for a loopback URL (the emulator), where FAL_KEY may be left out."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Field ``foo_bar`` is read from the environment variable ``FOO_BAR``."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = Field(default="localhost:9092", min_length=1)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None  # a client certificate (mutual TLS), optional
    kafka_ssl_keyfile: str | None = None

    fal_key: SecretStr | None = None
    fal_queue_url: str = Field(default="https://queue.fal.run", pattern=r"^https?://[^/\s]+")
    fal_endpoint: str = Field(
        default="fal-ai/lynx", pattern=r"^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+(/[A-Za-z0-9._/-]+)?$"
    )

    relay_requests_topic: str = Field(default="lynx.requests", min_length=1)
    relay_results_topic: str = Field(default="lynx.results", min_length=1)
    relay_dead_letter_topic: str = Field(default="lynx.requests.dlq", min_length=1)
    relay_group_id: str = Field(default="lynx-relay", min_length=1)
    relay_max_in_flight: int = Field(default=8, ge=1, le=100_000)
    relay_http_port: int = Field(default=8000, ge=0, le=65535)
    relay_log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Settings the contract leaves open; each has a default and is documented in the README.
    relay_http_host: str = "0.0.0.0"  # noqa: S104 - a pod's probes and scrapes come from outside
    relay_poll_min_interval_s: float = Field(default=1.0, gt=0, le=600)
    relay_poll_max_interval_s: float = Field(default=10.0, gt=0, le=600)
    relay_job_timeout_s: float = Field(default=3600.0, gt=0)
    relay_shutdown_grace_s: float = Field(default=10.0, ge=0, le=600)
    relay_commit_interval_s: float = Field(default=1.0, gt=0, le=60)
    relay_jobs_topic: str = Field(default="lynx.relay.jobs", min_length=1)
    relay_create_jobs_topic: bool = True
    # The requests, results and dead-letter (and progress) topics, created when missing.
    relay_create_topics: bool = True
    relay_topics_partitions: int = Field(default=6, ge=1, le=10_000)
    relay_topics_replication: int | None = Field(default=None, ge=1, le=32)  # None: auto
    relay_jobs_topic_partitions: int = Field(default=12, ge=1, le=10_000)
    relay_jobs_topic_replication: int | None = Field(default=None, ge=1, le=32)  # None: auto
    relay_dedupe_retention_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    # Whose finished requests a replica remembers: "all" (every partition's: a request_id is
    # a duplicate wherever it was seen) or "owned" (only the partitions it owns: memory and
    # restore scale out with replicas; a duplicate is caught when it lands in the partition of
    # the first, which keying requests by request_id ensures). README "Scale".
    relay_ledger_scope: Literal["all", "owned"] = "all"
    # A local checkpoint of the ledger view (service.adapters.ledger_checkpoint): a restarted
    # replica loads it and reads only the ledger's tail. Unset: every start reads it whole.
    relay_ledger_checkpoint_dir: Path | None = None
    relay_ledger_checkpoint_interval_s: float = Field(default=300.0, ge=1, le=86_400)
    # Older than this, a checkpoint is not trusted (a tombstone it missed may be compacted
    # away: Kafka keeps tombstones delete.retention.ms, a day by default).
    relay_ledger_checkpoint_max_age_s: float = Field(default=43_200.0, gt=0, le=86_400)
    relay_group_instance_id: str | None = None
    relay_session_timeout_s: float | None = Field(default=None, ge=6, le=1800)
    relay_price_per_video_second: float = Field(default=0.60, ge=0)
    relay_max_message_bytes: int = Field(default=1_048_576, ge=1024, le=100 * 1_048_576)
    relay_max_prompt_chars: int = Field(default=5_000, ge=1, le=1_000_000)
    relay_max_data_uri_bytes: int = Field(default=10 * 1_048_576, ge=0, le=100 * 1_048_576)
    relay_image_url_allow_http: bool = False
    relay_image_url_allowed_hosts: str | None = None  # comma-separated; unset: any host
    relay_progress_topic: str | None = Field(default=None, min_length=1)
    relay_progress_min_interval_s: float = Field(default=1.0, ge=0.1, le=3600)
    relay_progress_max_logs: int = Field(default=50, ge=0, le=10_000)
    relay_watch_mode: Literal["poll", "stream", "webhook"] = "poll"
    relay_webhook_url: str | None = Field(default=None, pattern=r"^https?://[^/\s]+")
    relay_webhook_safety_poll_s: float = Field(default=60.0, gt=0, le=3600)
    fal_jwks_url: str = Field(
        default="https://rest.alpha.fal.ai/.well-known/jwks.json", pattern=r"^https?://[^/\s]+"
    )
    # fal's Platform API (its request history), with the same FAL_KEY as the queue.
    fal_api_url: str = Field(default="https://api.fal.ai/v1", pattern=r"^https?://[^/\s]+")
    # Ask fal's request history about a submit whose answer was lost; false: behave as before.
    relay_fal_history: bool = True
    # Reconciling an ambiguous submit with that history (README "When a submit's answer is lost").
    relay_reconcile_interval_s: float = Field(default=10.0, gt=0, le=3600)
    relay_reconcile_give_up_s: float = Field(default=1200.0, gt=0, le=7 * 24 * 3600)
    relay_reconcile_skew_s: float = Field(default=30.0, ge=0, le=3600)
    relay_fal_http_transport: Literal["aiohttp", "httpx"] = "aiohttp"
    relay_fal_max_connections: int = Field(default=64, ge=1, le=1024)
    # Sharing the fal account (README "Sharing one fal account").
    relay_tenants_file: str | None = None
    relay_fal_concurrency: int | None = Field(default=None, ge=1, le=100_000)
    relay_backlog_max_requests: int = Field(default=100_000, ge=1, le=10_000_000)
    relay_backlog_body_bytes: int = Field(default=8 * 1_048_576, ge=0, le=4096 * 1_048_576)
    relay_priority_aging_s: float = Field(default=300.0, gt=0, le=7 * 24 * 3600)
    # One start per this long for a tenant with a budget, per replica (README "budgets").
    relay_budget_pace_s: float = Field(default=1.0, ge=0, le=3600)
    # The daily budget's period: 86400 is the UTC day; shorter for short-period budgets.
    relay_budget_day_s: float = Field(default=86_400.0, ge=1, le=86_400)
    # Output storage (README "Output storage"): unset keeps fal's URLs. Credentials come from
    # the store's standard chain (AWS_* variables, IRSA's web identity, instance metadata).
    relay_output_url: str | None = Field(default=None, pattern=r"^(s3|s3a|gs|az|abfs)://[^/\s]+")
    relay_output_endpoint_url: str | None = Field(default=None, pattern=r"^https?://[^/\s]+")
    relay_output_region: str | None = None
    relay_output_key_template: str = "{tenant}/{request_id}.mp4"
    relay_output_event_url: Literal["object", "presigned"] = "object"
    relay_output_presign_ttl_s: int = Field(default=7 * 86_400, ge=60, le=7 * 86_400)
    relay_output_max_copies: int = Field(default=4, ge=1, le=256)
    relay_output_part_mib: int = Field(default=8, ge=5, le=512)
    relay_output_retry_s: float = Field(default=600.0, ge=0, le=7 * 86_400)
    relay_output_on_failure: Literal["fail", "fal_url"] = "fail"
    # fal's own copies: their lifetime, whether to delete them once copied, whether fal keeps
    # the request's JSON payloads at all.
    relay_fal_output_ttl_s: int | None = Field(default=None, ge=60, le=10 * 365 * 86_400)
    relay_fal_delete_after_copy: bool = False
    relay_fal_store_io: bool = True

    @field_validator(
        "fal_key",
        "kafka_sasl_mechanism",
        "kafka_sasl_username",
        "kafka_sasl_password",
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        "relay_group_instance_id",
        "relay_jobs_topic_replication",
        "relay_topics_replication",
        "relay_session_timeout_s",
        "relay_webhook_url",
        "relay_progress_topic",
        "relay_image_url_allowed_hosts",
        "relay_tenants_file",
        "relay_fal_concurrency",
        "relay_output_url",
        "relay_output_endpoint_url",
        "relay_output_region",
        "relay_fal_output_ttl_s",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `FAL_KEY=` in a manifest or an empty Secret means "not set", not "a key of no text".
        return None if value == "" else value

    @field_validator(
        "kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile", "relay_tenants_file"
    )
    @classmethod
    def _cafile_exists(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        if self.relay_poll_min_interval_s > self.relay_poll_max_interval_s:
            raise ValueError("RELAY_POLL_MIN_INTERVAL_S must not exceed RELAY_POLL_MAX_INTERVAL_S")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together")
        if self.relay_watch_mode == "webhook" and not self.relay_webhook_url:
            raise ValueError("RELAY_WEBHOOK_URL is required with RELAY_WATCH_MODE=webhook")
        if self.relay_dedupe_retention_s <= self.relay_job_timeout_s:
            # The ledger entry of a job still running must outlive the job.
            raise ValueError("RELAY_DEDUPE_RETENTION_S must exceed RELAY_JOB_TIMEOUT_S")
        if (
            self.relay_tenants_file is not None
            and self.relay_dedupe_retention_s < _MONTH_S
            and load_tenants(self.relay_tenants_file).monthly_budgets
        ):
            # Spend is rebuilt from the ledger at start: it must still hold the month's jobs.
            raise ValueError(
                "a monthly budget in RELAY_TENANTS_FILE needs RELAY_DEDUPE_RETENTION_S of at "
                f"least {_MONTH_S:.0f} (32 days): spend is rebuilt from the job ledger"
            )
        if self.fal_key is None and not is_local_url(self.fal_queue_url):
            raise ValueError("FAL_KEY is required unless FAL_QUEUE_URL is a local emulator")
        problem = template_problems(self.relay_output_key_template)
        if problem:
            raise ValueError(f"RELAY_OUTPUT_KEY_TEMPLATE: {problem}")
        if self.relay_fal_delete_after_copy and self.relay_output_url is None:
            raise ValueError("RELAY_FAL_DELETE_AFTER_COPY needs RELAY_OUTPUT_URL (a copy first)")
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                "KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD are required "
                f"with KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}"
            )
        return self

    @property
    def input_policy(self) -> InputPolicy:
        hosts = self.relay_image_url_allowed_hosts
        return InputPolicy(
            max_message_bytes=self.relay_max_message_bytes,
            max_prompt_chars=self.relay_max_prompt_chars,
            max_data_uri_bytes=self.relay_max_data_uri_bytes,
            allow_http=self.relay_image_url_allow_http,
            allowed_hosts=None
            if hosts is None
            else frozenset(h.strip().lower() for h in hosts.split(",") if h.strip()),
        )

    @cached_property
    def tenants(self) -> Tenants:
        """The tenants file, read once (``load_settings`` reads it, so a bad file stops the
        start like any bad setting)."""
        return load_tenants(self.relay_tenants_file)

    @property
    def fal_history_off(self) -> str | None:
        """Why fal's request history is not asked, or None when it is."""
        if not self.relay_fal_history:
            return "RELAY_FAL_HISTORY=false"
        if self.fal_key is None and not is_local_url(self.fal_api_url):
            # A local queue without a key: the emulator's placeholder key is not sent to fal.
            return "FAL_KEY is not set and FAL_API_URL is not a local emulator"
        return None

    @property
    def fal_key_value(self) -> str:
        # The emulator accepts any non-empty key; a placeholder keeps the header well-formed.
        return self.fal_key.get_secret_value() if self.fal_key else "local-emulator"


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Read the settings from ``environ`` (the CLI passes the process environment)."""
    try:
        lowered = {k.lower(): v for k, v in environ.items()}
        fields = {name: lowered[name] for name in Settings.model_fields if name in lowered}
        settings = Settings.model_validate(fields)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    settings.tenants  # noqa: B018 - read now: a bad tenants file is a bad setting
    return settings


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        name = str(error["loc"][0]).upper() if error["loc"] else ""
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{name}: {message}" if name else message)
    return "; ".join(problems)
