"""What the benchmarks share: processes on loopback, their logs and metrics, and the report header.

- ``kafka_broker()``: a private single-node broker (``scripts/kafka start`` in a temporary folder),
  always stopped; ``Topics`` / ``create_topics`` for fresh topics per run;
- ``emulator_process(args)``: ``python -m fal_emulator serve`` (or any command that serves the
  emulator, e.g. ``bench/tls_emulator.py``) as a child process on a free loopback port, waited for
  and stopped with SIGTERM, then SIGKILL;
- ``JsonLogProcess`` / ``RelayProcess``: a child process whose JSON log lines on stdout are read as
  they come (a subclass's ``on_line`` collects what it needs), with ``until``, ``terminate``
  (SIGTERM), ``kill`` (SIGKILL) and ``close`` (whatever happened, the process is gone);
- ``metric_samples`` (Prometheus text), ``proc_cpu_s`` / ``proc_rss_bytes`` (``/proc``, Linux);
- ``git_commit``, ``header_lines`` (date, commit, machine), ``cell`` (median (min-max)),
  ``write_output``.

Everything binds or connects to 127.0.0.1 only, every wait has a timeout, and every process a
context manager or ``close`` started is stopped on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
KAFKA_SCRIPT = ROOT / "scripts" / "kafka"

KAFKA_START_S = 600.0  # the first start on a machine fetches Kafka's jars with Maven
KAFKA_STOP_S = 120.0
EMULATOR_START_S = 20.0
EMULATOR_STOP_S = 10.0
RELAY_START_S = 90.0
RELAY_STOP_S = 60.0
PUBLISH_S = 60.0
HTTP_S = 5.0
LOG_TAIL = 30
PROXY_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


# --- small things -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(url: str, *, context: ssl.SSLContext | None = None, timeout: float = HTTP_S) -> bytes:
    # An opener without proxies: this must reach the loopback port, whatever the environment.
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    with opener.open(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def clean_env() -> dict[str, str]:
    """This environment without relay, Kafka, fal or proxy settings."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RELAY_", "KAFKA_", "FAL_")) and not k.lower().endswith("_proxy")
    }


def drop_proxies() -> None:
    """Loopback only: a proxy from the environment would change what httpx mounts."""
    for name in PROXY_VARIABLES:
        os.environ.pop(name, None)


def seconds(value: float) -> str:
    return format(value, "g")


def epoch(iso: object) -> float:
    """An RFC 3339 time (the relay's ``ts``, the emulator's ``submitted_at``) as Unix seconds."""
    return datetime.fromisoformat(str(iso)).timestamp()


# --- /proc --------------------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads), from /proc; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the ")" that closes the command name; utime and stime are 14 and 15.
    fields = text.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_bytes(pid: int) -> int | None:
    """Resident set size of a process (``VmRSS``), from /proc; None if gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


# --- the broker ---------------------------------------------------------------------------------


@contextlib.contextmanager
def kafka_broker() -> Iterator[str]:
    """A private single-node broker in a temporary folder; stopped (and removed) afterwards."""
    with tempfile.TemporaryDirectory(prefix="lynx-bench-kafka-") as folder:
        port = str(free_port())
        command = [str(KAFKA_SCRIPT), "start", "--port", port, "--dir", folder]
        try:
            print(f"starting Kafka on 127.0.0.1:{port} ...", file=sys.stderr)
            started = subprocess.run(
                command,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=KAFKA_START_S,
                check=False,
            )
            if started.returncode != 0:
                raise RuntimeError(f"could not start Kafka:\n{started.stderr[-3000:]}")
            yield started.stdout.strip().splitlines()[-1]
        finally:
            # Also after a start that timed out: the broker runs in its own session.
            stopped = subprocess.run(
                [str(KAFKA_SCRIPT), "stop", "--port", port, "--dir", folder],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=KAFKA_STOP_S,
                check=False,
            )
            if stopped.returncode != 0:
                print(f"warning: kafka stop failed:\n{stopped.stderr[-2000:]}", file=sys.stderr)


@dataclass(frozen=True, slots=True)
class Topics:
    requests: str
    results: str
    dead_letters: str
    jobs: str
    group: str

    @classmethod
    def fresh(cls, prefix: str, label: str) -> Topics:
        base = f"{prefix}.{label}.{uuid.uuid4().hex[:8]}"
        return cls(
            requests=f"{base}.requests",
            results=f"{base}.results",
            dead_letters=f"{base}.dlq",
            jobs=f"{base}.jobs",
            group=f"{base}.group",
        )


async def create_topics(
    bootstrap: str, topics: Topics, *, request_partitions: int, other_partitions: int
) -> None:
    """Requests, results and dead letters (replication 1); the relay creates its ledger topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(topics.requests, num_partitions=request_partitions, replication_factor=1),
                NewTopic(topics.results, num_partitions=other_partitions, replication_factor=1),
                NewTopic(
                    topics.dead_letters, num_partitions=other_partitions, replication_factor=1
                ),
            ]
        )
    finally:
        await admin.close()


async def publish(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]], within: float
) -> int:
    """Send ``(key, value)`` records with acks=all; returns how many."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        async with asyncio.timeout(within):
            sent = []
            for key, value in records:
                sent.append(await producer.send(topic, value, key=key))
            await asyncio.gather(*sent)
            return len(sent)
    finally:
        await producer.stop()


def request_record(request_id: str, prompt: str = "bench") -> tuple[bytes, bytes]:
    """A valid request, keyed by its id."""
    request = {
        "request_id": request_id,
        "input": {"image_url": "https://example.com/s.png", "prompt": prompt},
    }
    return request_id.encode(), json.dumps(request).encode()


# --- the emulator process -----------------------------------------------------------------------


class Emulator:
    """The emulator as a child process on 127.0.0.1."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        base_url: str,
        log: IO[bytes],
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.process = process
        self.base_url = base_url
        self._log = log
        self._context = context

    def server_cpu_s(self) -> float | None:
        return proc_cpu_s(self.process.pid)

    def stats(self, *, jobs: bool = False) -> dict[str, Any]:
        query = "?jobs=1" if jobs else ""
        url = f"{self.base_url}/_emulator/stats{query}"
        timeout = 60.0 if jobs else HTTP_S  # a list of 20,000 jobs takes a moment
        body: dict[str, Any] = json.loads(http_get(url, context=self._context, timeout=timeout))
        return body

    def calls(self) -> dict[str, int]:
        """The emulator's own count of queue calls, by kind (a stream counts as status)."""
        return {kind: int(counts["total"]) for kind, counts in self.stats()["calls"].items()}

    def log_text(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]


def emulator_command(port: int, *options: str) -> list[str]:
    """``python -m fal_emulator serve`` on 127.0.0.1:port, quiet logs and the options given."""
    return [
        sys.executable,
        "-m",
        "fal_emulator",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *options,
        "--log-level",
        "warning",
    ]


@contextlib.contextmanager
def emulator_process(
    options: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    command: Callable[[int], list[str]] | None = None,
    scheme: str = "http",
    context: ssl.SSLContext | None = None,
) -> Iterator[Emulator]:
    """Start the emulator, wait until it answers, and stop it with SIGTERM (then SIGKILL).

    ``options`` are ``fal-emulator serve`` options; ``command`` (port -> argv) replaces the whole
    command line, e.g. for the TLS runner, whose base URL is ``https``: pass ``scheme`` and the
    ``context`` that trusts its certificate."""
    with tempfile.TemporaryFile() as log:
        emulator = _start_emulator(
            log, options, env=env, command=command, scheme=scheme, context=context
        )
        try:
            yield emulator
        finally:
            _stop_emulator(emulator)


def _start_emulator(
    log: IO[bytes],
    options: Sequence[str],
    *,
    env: Mapping[str, str] | None,
    command: Callable[[int], list[str]] | None,
    scheme: str,
    context: ssl.SSLContext | None,
) -> Emulator:
    # The free port may be taken between our probe and the emulator's bind: try a few.
    for _ in range(3):
        port = free_port()
        argv = command(port) if command is not None else emulator_command(port, *options)
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        emulator = Emulator(process, f"{scheme}://127.0.0.1:{port}", log, context)
        deadline = time.monotonic() + EMULATOR_START_S
        while time.monotonic() < deadline and process.poll() is None:
            try:
                emulator.stats()
            except (OSError, urllib.error.URLError, ValueError):
                time.sleep(0.05)
            else:
                return emulator
        if process.poll() is None:
            _stop_emulator(emulator)
            raise RuntimeError(f"the emulator did not answer in {EMULATOR_START_S:.0f} s")
    raise RuntimeError(f"the emulator exited at start:\n{emulator.log_text()}")


def _stop_emulator(emulator: Emulator) -> None:
    process = emulator.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=EMULATOR_STOP_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=EMULATOR_STOP_S)
            print("warning: the emulator ignored SIGTERM and was killed", file=sys.stderr)
    if process.returncode not in (0, -signal.SIGTERM):
        print(
            f"warning: the emulator exited with {process.returncode}:\n{emulator.log_text()}",
            file=sys.stderr,
        )


# --- processes that log JSON lines --------------------------------------------------------------


class JsonLogProcess:
    """A child process whose JSON log lines on stdout are read as they come.

    Subclasses override ``on_line`` to collect what they need; ``until`` waits for a condition
    on what was collected (woken by every line) and fails when the process exits first."""

    name = "process"

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.process: asyncio.subprocess.Process | None = None
        self.tail: list[str] = []
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._stderr: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def on_line(self, line: dict[str, Any]) -> None:
        """One JSON object the process logged."""

    async def spawn(self, argv: Sequence[str], stderr: IO[bytes]) -> None:
        self._stderr = stderr
        self.process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=ROOT,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            limit=1024 * 1024,
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        # Read to the end: a full pipe would stall the process.
        while raw := await self.process.stdout.readline():
            text = raw.decode(errors="replace").rstrip("\n")
            self.tail = [*self.tail[-(LOG_TAIL - 1) :], text]
            try:
                line = json.loads(text)
            except ValueError:
                continue
            if not isinstance(line, dict):
                continue
            self.on_line(line)
            self._changed.set()
        self._changed.set()

    async def until(self, done: Callable[[], bool], within: float, what: str) -> None:
        try:
            async with asyncio.timeout(within):
                while not done():
                    if self._reader is not None and self._reader.done():
                        raise RuntimeError(
                            f"the {self.name} exited before {what}\n{self.diagnostics()}"
                        )
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise RuntimeError(f"no {what} within {within:.0f} s\n{self.diagnostics()}") from None

    async def terminate(self, within: float = RELAY_STOP_S) -> int:
        """SIGTERM, then wait for the exit and the end of its output."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(within):
            code = await self.process.wait()
            if self._reader is not None:
                await self._reader
        return code

    async def kill(self) -> None:
        """SIGKILL (a crash), and wait for the exit."""
        assert self.process is not None
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        async with asyncio.timeout(RELAY_STOP_S):
            await self.process.wait()
            if self._reader is not None:
                await asyncio.gather(self._reader, return_exceptions=True)

    async def close(self) -> None:
        """Whatever happened before: the process is gone afterwards."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    def diagnostics(self) -> str:
        err = ""
        if self._stderr is not None:
            self._stderr.seek(0)
            err = self._stderr.read().decode(errors="replace")[-2000:]
        return "last stdout lines:\n" + "\n".join(self.tail) + f"\nstderr:\n{err}"


class RelayProcess(JsonLogProcess):
    """``python -m service run``; ``start`` returns once it logged ``relay_started``."""

    name = "relay"

    def __init__(self, env: Mapping[str, str]) -> None:
        super().__init__(env)
        self.started: dict[str, Any] | None = None

    def on_line(self, line: dict[str, Any]) -> None:
        if line.get("event") == "relay_started":
            self.started = line

    async def start(self, stderr: IO[bytes], within: float = RELAY_START_S) -> None:
        await self.spawn([sys.executable, "-m", "service", "run"], stderr)
        await self.until(lambda: self.started is not None, within, "relay_started")

    @property
    def http_port(self) -> int:
        assert self.started is not None
        return int(self.started["http_port"])

    def metrics_text(self) -> str:
        return http_get(f"http://127.0.0.1:{self.http_port}/metrics").decode()


def relay_env(
    bootstrap: str,
    fal_queue_url: str,
    topics: Topics,
    *,
    in_flight: int,
    jobs_partitions: int,
    http_port: int | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The relay's environment: this one without relay, Kafka, fal or proxy settings, plus
    the broker, the emulator, the topics and loopback ops endpoints."""
    return {
        **clean_env(),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "FAL_QUEUE_URL": fal_queue_url,
        # fal's request history, from the same emulator (its Platform API is under /v1).
        "FAL_API_URL": fal_queue_url.rstrip("/") + "/v1",
        "RELAY_REQUESTS_TOPIC": topics.requests,
        "RELAY_RESULTS_TOPIC": topics.results,
        "RELAY_DEAD_LETTER_TOPIC": topics.dead_letters,
        "RELAY_GROUP_ID": topics.group,
        "RELAY_JOBS_TOPIC": topics.jobs,
        "RELAY_JOBS_TOPIC_PARTITIONS": str(jobs_partitions),
        "RELAY_HTTP_HOST": "127.0.0.1",
        "RELAY_HTTP_PORT": str(free_port() if http_port is None else http_port),
        "RELAY_MAX_IN_FLIGHT": str(in_flight),
        **(extra or {}),
    }


def metric_samples(text: str, family_name: str) -> list[tuple[str, dict[str, str], float]]:
    """``(sample name, labels, value)`` of one metric family in Prometheus text."""
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        if family.name == family_name
        for sample in family.samples
    ]


# --- the report ---------------------------------------------------------------------------------


def git_commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        )
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit} (with uncommitted changes)" if dirty else commit


def date_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def machine_text() -> str:
    return (
        f"{os.cpu_count()} cores, {platform.machine()}, {platform.system()}; "
        f"Python {platform.python_version()}"
    )


def header_lines(commit: str | None = None) -> list[str]:
    """The ``- date: ...; commit: ...`` and ``- machine: ...`` lines every report starts with."""
    return [
        f"- date: {date_text()}; commit: {git_commit() if commit is None else commit}",
        f"- machine: {machine_text()}",
    ]


def cell(values: Sequence[float], fmt: str) -> str:
    """``median (min-max)``; just the value for a single run."""
    med = format(statistics.median(values), fmt)
    if len(values) == 1:
        return med
    return f"{med} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def write_output(text: str, output: Path | None) -> None:
    """Print the report; write it to ``output`` too, when given."""
    print(text)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        print(f"wrote {output}", file=sys.stderr)


def bench_arguments(
    doc: str | None, quick_help: str, default_output: Path, argv: Sequence[str] | None
) -> tuple[bool, Path | None]:
    """The command line every bench script shares: ``--quick`` and ``--output``; returns
    (quick, where to write the Markdown or None)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"where to write the Markdown (default: {default_output.relative_to(ROOT)}; "
        "with --quick: nowhere)",
    )
    args = parser.parse_args(argv)
    output: Path | None = args.output or (None if args.quick else default_output)
    return bool(args.quick), output
