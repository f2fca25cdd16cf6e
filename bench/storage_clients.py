"""What copying a result video into object storage costs, per S3 client: obstore vs aiobotocore.

Issue 16 ("copy results to the user's object storage") streams each finished video from fal's
URL into the user's bucket; the relay must not hold a video in memory (RSS growth at most 64 MiB
with 20 copies of 200 MB at once). This script decides the client by measurement:

- a real S3-compatible server (S3Proxy, ``scripts/s3proxy``, filesystem backend in a temporary
  folder) and the fal emulator (``--output-bytes``: a valid MP4 of the asked size, streamed) run
  as separate processes on loopback; their CPU is shown apart;
- every copy streams ``GET video.url`` with httpx into a new object with one client, in a fresh
  subprocess of its own (``storage_copy.py``), so RSS is never shared between clients or runs:
  ``obstore`` (``obstore.put_async(S3Store, key, response.aiter_raw())``: a multipart upload of
  ``chunk_size`` parts, default 5 MiB, up to ``max_concurrency`` parts in flight, default 12) and
  ``aiobotocore`` (create / upload_part / complete with 8 MiB parts, one part in flight, checksums
  only when required, as S3Proxy 2.6.0 refuses the SDK's default flexible checksums with 501);
  also ``httpx only`` (the download alone, discarded: the part of each figure that is not the
  S3 client) and ``obstore, HTTPStore`` (obstore fetches the URL itself: Rust end to end);
- in each worker: imports, the client, one tiny PUT (connections, lazy set-up) happen first; then
  the peak-RSS mark is reset (``/proc/self/clear_refs``) and VmRSS read as the baseline; CPU is
  ``time.process_time()`` (user + system, every thread: obstore's Tokio threads too) around the
  copy alone; peak growth is VmHWM - baseline, retained growth VmRSS after - baseline;
- each object is checked afterwards: its size, and its bytes against the SHA-256 of
  ``fal_emulator.media.output_chunks`` (read back from S3Proxy's folder), then deleted;
- runs alternate the client order; the median (min-max) of ``--runs`` is reported;
- then 20 copies of 200 MB at once in one worker, with the clients and settings of
  ``CONCURRENT_CASES``: aggregate throughput, CPU and RSS growth against the 64 MiB bound.

Run (from the project root)::

    uv run python bench/storage_clients.py           # 100 MB copies x 3 runs, then 20 x 200 MB
    uv run python bench/storage_clients.py --quick   # 10 MB x 1 run, then 4 x 20 MB: smoke run

The full run (~6 min on 2 cores) writes ``bench/results/storage-clients.md``; ``--quick``
writes only with ``--output``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.session
import httpx
from botocore.config import Config
from harness import (
    ROOT,
    bench_arguments,
    cell,
    drop_proxies,
    emulator_process,
    free_port,
    header_lines,
    proc_cpu_s,
    write_output,
)

from fal_emulator.media import output_chunks

MB = 1000 * 1000
MiB = 1024 * 1024
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "storage-clients.md"
S3PROXY_SCRIPT = ROOT / "scripts" / "s3proxy"
# scripts/s3proxy's defaults stop the JIT at C1 for a quick start in tests; here S3Proxy's
# throughput is measured (its SHA-256 and MD5 of every body), so it gets the full JIT.
S3PROXY_JVM_OPTS = "-XX:+UseSerialGC -XX:-UsePerfData -XX:+ExitOnOutOfMemoryError"
# S3Proxy holds a signed request's whole body to check its SHA-256: obstore's default of 12
# parts in flight per upload makes 240 parts of 5 MiB at once with 20 copies, more than the
# scripts' 512 MiB heap (the JVM exits on OutOfMemoryError).
S3PROXY_HEAP_OPTS = "-Xms256m -Xmx3g"
WORKER = ROOT / "bench" / "storage_copy.py"
IDENTITY = "lynx-local"
CREDENTIAL = "lynx-local-secret"
REGION = "us-east-1"
RSS_BOUND_MIB = 64


@dataclass(frozen=True)
class Case:
    """One client with its settings (``storage_copy.py --client``, ``--options``)."""

    label: str
    client: str
    options: dict[str, int] = field(default_factory=dict)


# The single-copy cells, in the order of the first run (the next run goes backwards).
OBSTORE = Case("obstore (5 MiB parts, 12 in flight)", "obstore")
OBSTORE_1 = Case("obstore (5 MiB parts, 1 in flight)", "obstore", {"max_concurrency": 1})
OBSTORE_1_PIECES = Case(
    "obstore (5 MiB parts, 1 in flight, 1 MiB pieces)",
    "obstore",
    {"max_concurrency": 1, "piece_size": MiB},
)
TUNED = {"max_concurrency": 1, "piece_size": MiB, "unsigned_payload": 1}
OBSTORE_TUNED = Case(
    "obstore (5 MiB parts, 1 in flight, 1 MiB pieces, unsigned payload)", "obstore", TUNED
)
BOTO_MULTIPART = Case("aiobotocore (8 MiB parts, 1 in flight)", "aiobotocore")
BOTO_STREAM = Case("aiobotocore (one streamed PUT, unsigned payload)", "aiobotocore-stream")
SINGLE_CASES = (
    Case("httpx only (download, discarded)", "httpx"),
    OBSTORE,
    OBSTORE_1,
    OBSTORE_1_PIECES,
    OBSTORE_TUNED,
    BOTO_MULTIPART,
    BOTO_STREAM,
    Case("obstore, HTTPStore source (Rust end to end)", "obstore-http"),
)
# The 20-at-once runs: obstore as it comes and tuned, tuned with a budget of 8 copies at a
# time, and both ways of aiobotocore.
CONCURRENT_CASES = (
    OBSTORE,
    OBSTORE_TUNED,
    Case("obstore (tuned as above, 8 copies at a time)", "obstore", {**TUNED, "max_copies": 8}),
    BOTO_MULTIPART,
    BOTO_STREAM,
)
PACKAGES = ("obstore", "aiobotocore", "botocore", "aiohttp", "httpx")


# --- the conductor: servers, jobs, workers, checks, report -------------------------------------


@dataclass(frozen=True)
class S3Proxy:
    endpoint: str
    folder: Path

    def cpu_s(self) -> float | None:
        pid = (self.folder / "s3proxy.pid").read_text().strip()
        return proc_cpu_s(int(pid))

    def client(self) -> Any:
        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=IDENTITY,
            aws_secret_access_key=CREDENTIAL,
            config=Config(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )


@contextlib.contextmanager
def s3proxy() -> Iterator[S3Proxy]:
    """A private S3Proxy on a free port in a temporary folder, always stopped."""
    with tempfile.TemporaryDirectory(prefix="bench-s3proxy-") as folder:
        port = str(free_port())
        command = [str(S3PROXY_SCRIPT), "--port", port, "--dir", folder]
        started = subprocess.run(
            [command[0], "start", *command[1:]],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            env={
                "LYNX_S3PROXY_JVM_OPTS": S3PROXY_JVM_OPTS,
                "LYNX_S3PROXY_HEAP_OPTS": S3PROXY_HEAP_OPTS,
                **os.environ,
            },
        )
        if started.returncode != 0:
            raise RuntimeError(f"scripts/s3proxy start failed:\n{started.stderr[-3000:]}")
        try:
            yield S3Proxy(started.stdout.strip().splitlines()[-1], Path(folder))
        finally:
            subprocess.run(
                [command[0], "stop", *command[1:]], capture_output=True, timeout=60, check=False
            )


@dataclass(frozen=True)
class Video:
    request_id: str
    url: str
    size: int
    width: int
    height: int

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for chunk in output_chunks(
            self.request_id, self.size, width=self.width, height=self.height
        ):
            digest.update(chunk)
        return digest.hexdigest()


def finished_videos(base_url: str, sizes: Sequence[int]) -> list[Video]:
    """One job per size on the emulator (``--run-time 0``), each with its output file size."""
    submitted = []
    with httpx.Client(base_url=base_url, headers={"Authorization": "Key bench"}) as http:
        for size in sizes:
            body = {
                "image_url": "https://images.example.com/subject.png",
                "prompt": f"bench [emulator:output-bytes={size}]",
            }
            answer = http.post("/fal-ai/lynx", json=body)
            answer.raise_for_status()
            submitted.append(answer.json())
        videos = []
        for job in submitted:
            deadline = time.monotonic() + 30
            while http.get(job["status_url"]).json()["status"] != "COMPLETED":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"job {job['request_id']} did not complete")
                time.sleep(0.01)
            video = http.get(job["response_url"]).json()["video"]
            videos.append(
                Video(
                    job["request_id"],
                    video["url"],
                    video["file_size"],
                    video["width"],
                    video["height"],
                )
            )
    return videos


@dataclass
class Outcome:
    label: str
    client: str
    copies: int
    bytes: int
    cpu_s: float
    wall_s: float
    baseline_mib: float
    peak_growth_mib: float | None
    retained_growth_mib: float
    server_cpu_s: float
    emulator_cpu_s: float

    @property
    def per_100mb(self) -> float:
        return 100 * MB / self.bytes

    @property
    def throughput(self) -> float:
        return self.bytes / MB / self.wall_s


def run_worker(
    case: Case,
    videos: Sequence[Video],
    *,
    server: S3Proxy,
    bucket: str,
    emulator_cpu: Callable[[], float | None],
) -> Outcome:
    """One worker process: copy ``videos`` at once; check every object, then delete it."""
    label, client, options = case.label, case.client, case.options
    prefix = f"{client}-{time.monotonic_ns()}"
    argv = [
        sys.executable,
        str(WORKER),
        "--client",
        client,
        "--options",
        json.dumps(options),
        "--endpoint",
        server.endpoint,
        "--bucket",
        bucket,
        "--prefix",
        prefix,
    ]
    for video in videos:
        argv += ["--url", video.url]
    server_cpu0, emulator_cpu0 = server.cpu_s() or 0.0, emulator_cpu() or 0.0
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False, cwd=ROOT)
    server_cpu, emulator_cpu1 = server.cpu_s() or 0.0, emulator_cpu() or 0.0
    if done.returncode != 0:
        log = (server.folder / "s3proxy.out").read_text(errors="replace")[-2000:]
        raise WorkerFailed(
            f"the {label} worker failed:\n{done.stderr[-4000:]}\nS3Proxy's log ends:\n{log}",
            summary=_error_line(done.stderr),
        )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    expected = sum(video.size for video in videos)
    if result["bytes"] != expected:
        raise RuntimeError(f"{label}: copied {result['bytes']} bytes, expected {expected}")
    if client != "httpx":
        s3 = server.client()
        for video, key in zip(videos, result["keys"], strict=True):
            path = server.folder / "data" / bucket / key
            digest = hashlib.sha256()
            with path.open("rb") as stored:
                while block := stored.read(4 * MiB):
                    digest.update(block)
            if path.stat().st_size != video.size or digest.hexdigest() != video.sha256():
                raise RuntimeError(f"{label}: {key} is not the video of {video.request_id}")
            s3.delete_object(Bucket=bucket, Key=key)
        s3.delete_object(Bucket=bucket, Key=f"{prefix}/warm-up")
    peak = result["peak_growth_kib"]
    return Outcome(
        label=label,
        client=client,
        copies=result["copies"],
        bytes=result["bytes"],
        cpu_s=result["cpu_s"],
        wall_s=result["wall_s"],
        baseline_mib=result["baseline_kib"] / 1024,
        peak_growth_mib=None if peak is None else peak / 1024,
        retained_growth_mib=result["retained_growth_kib"] / 1024,
        server_cpu_s=server_cpu - server_cpu0,
        emulator_cpu_s=emulator_cpu1 - emulator_cpu0,
    )


class WorkerFailed(RuntimeError):
    """A worker exited with an error; ``summary`` is its exception's first line."""

    def __init__(self, text: str, *, summary: str) -> None:
        super().__init__(text)
        self.summary = summary


@dataclass(frozen=True)
class Failure:
    label: str
    summary: str


def _error_line(stderr: str) -> str:
    """The last ``SomethingError: ...`` line of a traceback, short and table-safe."""
    lines = [
        line
        for line in stderr.splitlines()
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception)\b", line)
    ]
    line = lines[-1] if lines else (stderr.strip().splitlines() or ["exit status != 0"])[-1]
    line = re.sub(r"http://127\.0\.0\.1:\d+", "", line)  # the port and query say nothing
    line = re.sub(r"\?uploadId=[\w-]+", "", line)
    return line.replace("|", "/")[:240]


def _cell(values: Sequence[float | None], fmt: str) -> str:
    known = [value for value in values if value is not None]
    return cell(known, fmt) if known else "n/a"


def report(
    single: dict[str, list[Outcome]],
    concurrent: list[Outcome | Failure],
    *,
    size: int,
    runs: int,
    copies: int,
    copy_size: int,
    commands: str,
) -> str:
    jvm = " ".join(
        os.environ.get(name, default)
        for name, default in (
            ("LYNX_S3PROXY_HEAP_OPTS", S3PROXY_HEAP_OPTS),
            ("LYNX_S3PROXY_JVM_OPTS", S3PROXY_JVM_OPTS),
        )
    )
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in PACKAGES)
    lines = [
        "# Storage clients: streaming a result video into S3 (obstore vs aiobotocore)",
        "",
        *header_lines(),
        f"- packages: {versions}; S3Proxy 2.6.0 via scripts/s3proxy (filesystem backend "
        f"on local disk, Java 17, `{jvm}`)",
        f"- run: {size / MB:g} MB copies, {runs} run(s) a cell, alternating order; then "
        f"{copies} copies of {copy_size / MB:g} MB at once in one process",
        f"- command: `{commands}`",
        "- Each cell is a fresh worker process (httpx GET of the emulator's file, streamed into "
        "the client). CPU: the worker's `time.process_time()` (user + system, all threads) "
        "around the copy; RSS: growth of VmRSS over the baseline after imports, client and one "
        "tiny PUT, peak from VmHWM (reset first). Server and emulator CPU from /proc. "
        "Every object was checked byte for byte (SHA-256), then deleted. Median (min-max).",
        "",
        f"## One copy of {size / MB:g} MB",
        "",
        "| client | CPU s / 100 MB | wall s | MB/s | peak RSS growth MiB | RSS growth after MiB "
        "| baseline RSS MiB | S3Proxy CPU s | emulator CPU s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, outcomes in single.items():
        lines.append(
            f"| {label} "
            f"| {_cell([o.cpu_s * o.per_100mb for o in outcomes], '.3f')} "
            f"| {_cell([o.wall_s for o in outcomes], '.2f')} "
            f"| {_cell([o.throughput for o in outcomes], '.0f')} "
            f"| {_cell([o.peak_growth_mib for o in outcomes], '.1f')} "
            f"| {_cell([o.retained_growth_mib for o in outcomes], '.1f')} "
            f"| {_cell([o.baseline_mib for o in outcomes], '.1f')} "
            f"| {_cell([o.server_cpu_s for o in outcomes], '.2f')} "
            f"| {_cell([o.emulator_cpu_s for o in outcomes], '.2f')} |"
        )
    download = single.get(SINGLE_CASES[0].label, [])
    if download:
        base = statistics.median(o.cpu_s * o.per_100mb for o in download)
        lines += ["", "S3 client's own CPU per 100 MB (the cell minus `httpx only`, medians):", ""]
        for label, outcomes in list(single.items())[1:]:
            total = statistics.median(o.cpu_s * o.per_100mb for o in outcomes)
            if outcomes[0].client == "obstore-http":  # downloads without httpx
                lines.append(f"- {label}: {total:.3f} s (no httpx download: its whole CPU)")
            else:
                lines.append(f"- {label}: {total - base:.3f} s")
    lines += [
        "",
        f"## {copies} copies of {copy_size / MB:g} MB at once (bound: RSS growth at most "
        f"{RSS_BOUND_MIB} MiB)",
        "",
        "| client | total MB | wall s | MB/s | CPU s / 100 MB | peak RSS growth MiB "
        "| within bound | RSS growth after MiB | S3Proxy CPU s | emulator CPU s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | :---: | ---: | ---: | ---: |",
    ]
    for o in concurrent:
        if isinstance(o, Failure):
            lines.append(f"| {o.label} | failed: {o.summary} |" + " |" * 8)
            continue
        within = (
            "n/a"
            if o.peak_growth_mib is None
            else ("yes" if o.peak_growth_mib <= RSS_BOUND_MIB else "no")
        )
        peak = "n/a" if o.peak_growth_mib is None else f"{o.peak_growth_mib:.1f}"
        lines.append(
            f"| {o.label} | {o.bytes / MB:,.0f} | {o.wall_s:.1f} | {o.throughput:.0f} "
            f"| {o.cpu_s * o.per_100mb:.3f} | {peak} | {within} "
            f"| {o.retained_growth_mib:.1f} | {o.server_cpu_s:.1f} | {o.emulator_cpu_s:.1f} |"
        )
    lines += ["", *comparison(single), "", *NOTES]
    return "\n".join(lines) + "\n"


def comparison(single: dict[str, list[Outcome]]) -> list[str]:
    """The pairs that decide: obstore tuned vs aiobotocore's multipart (the like-for-like
    resumable upload), and aiobotocore's streamed PUT vs obstore tuned (medians)."""

    def median(label: str, figure: Callable[[Outcome], float | None]) -> float:
        return statistics.median(
            value for value in map(figure, single.get(label, [])) if value is not None
        )

    def cpu(o: Outcome) -> float:
        return o.cpu_s * o.per_100mb

    def peak(o: Outcome) -> float | None:
        return o.peak_growth_mib

    base = median(SINGLE_CASES[0].label, cpu)
    lines = ["## Comparison (one copy, medians)", ""]
    for worse, better in ((BOTO_MULTIPART, OBSTORE_TUNED), (OBSTORE_TUNED, BOTO_STREAM)):
        a, b = median(worse.label, cpu), median(better.label, cpu)
        lines.append(
            f"- {better.label} vs {worse.label}: CPU {b:.3f} vs {a:.3f} s / 100 MB "
            f"({a / b:.2f}x; the client's own share {(a - base) / (b - base):.2f}x), "
            f"peak RSS growth {median(better.label, peak):.1f} vs "
            f"{median(worse.label, peak):.1f} MiB"
        )
    return lines


NOTES = [
    "## Notes",
    "",
    "- S3Proxy is the slowest part on this machine: its CPU per 100 MB (MD5 for the ETag, "
    "SHA-256 of signed bodies, file writes) is above any client's, so MB/s measures S3Proxy "
    "more than the client; CPU and RSS are the client's own figures.",
    "- Unsigned payload: the request's signature covers `UNSIGNED-PAYLOAD` instead of the "
    "body's SHA-256 (normal over HTTPS, where TLS protects the body). It saves hashing in the "
    "client and in the server.",
    "- The streamed PUT sends the download as the body of one PutObject (Content-Length from "
    "the source): nothing is buffered, but a failure restarts from the first byte, one PUT "
    "takes at most 5 GB, and botocore accepts only bytes or a file-like body, so the stream "
    "is wrapped (`read` never called, `__aiter__` streamed by aiohttp under aiobotocore): it "
    "relies on aiobotocore's transport passing the object to aiohttp as it is.",
    "- obstore's multipart upload buffers each 5 MiB part and by default keeps up to 12 in "
    "flight per upload: with 20 copies that is up to 240 parts at once, which a slow server "
    "turns into RSS, and which took S3Proxy past a 512 MiB heap (it holds a signed body whole "
    "to check its SHA-256).",
    "- obstore given a Python (async) iterator: the process may abort (SIGABRT) at exit if the "
    "event loop closes right after `put_async` returns; the workers wait 0.2 s before exiting.",
    "- `obstore, HTTPStore source`: obstore fetches the URL in Rust (5 MiB chunks and parts, 12 "
    "in flight): least CPU, but most RSS, and kept after the copy.",
]


def main(argv: Sequence[str] | None = None) -> None:
    quick, output = bench_arguments(
        __doc__, "10 MB copies, 1 run, then 4 x 20 MB: a smoke run", DEFAULT_OUTPUT, argv
    )
    drop_proxies()
    size, runs, copies, copy_size = (
        (10 * MB, 1, 4, 20 * MB) if quick else (100 * MB, 3, 20, 200 * MB)
    )
    command = "uv run python bench/storage_clients.py" + (" --quick" if quick else "")
    with (
        s3proxy() as server,
        emulator_process(["--run-time", "0", "--output-bytes", str(size)]) as emulator,
    ):
        bucket = "bench"
        server.client().create_bucket(Bucket=bucket)
        single: dict[str, list[Outcome]] = {case.label: [] for case in SINGLE_CASES}
        for run in range(runs):
            cases = SINGLE_CASES if run % 2 == 0 else tuple(reversed(SINGLE_CASES))
            for case in cases:
                (video,) = finished_videos(emulator.base_url, [size])
                outcome = run_worker(
                    case, [video], server=server, bucket=bucket, emulator_cpu=emulator.server_cpu_s
                )
                single[case.label].append(outcome)
                print(
                    f"run {run + 1}: {case.label}: {outcome.cpu_s:.2f} s CPU, "
                    f"{outcome.wall_s:.2f} s,"
                    f" peak +{outcome.peak_growth_mib} MiB",
                    file=sys.stderr,
                )
        concurrent: list[Outcome | Failure] = []
        for case in CONCURRENT_CASES:
            videos = finished_videos(emulator.base_url, [copy_size] * copies)
            try:
                outcome = run_worker(
                    case, videos, server=server, bucket=bucket, emulator_cpu=emulator.server_cpu_s
                )
            except WorkerFailed as failed:  # reported in the table; the other cases still run
                print(failed, file=sys.stderr)
                concurrent.append(Failure(case.label, failed.summary))
                continue
            concurrent.append(outcome)
            print(
                f"{copies} at once: {case.label}: {outcome.throughput:.0f} MB/s, "
                f"peak +{outcome.peak_growth_mib} MiB",
                file=sys.stderr,
            )
    write_output(
        report(
            single,
            concurrent,
            size=size,
            runs=runs,
            copies=copies,
            copy_size=copy_size,
            commands=command,
        ),
        output,
    )


if __name__ == "__main__":
    main()
