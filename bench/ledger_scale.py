"""The job ledger's restore at scale: memory, start-to-ready and lookup cost at 7 M entries.

Issue 17: a million requests a day kept for 7 days is 7,000,000 ledger entries, and every
replica reads the whole ledger topic into a ``LedgerView`` when it starts. Targets: at most
600 MiB of ledger memory, ready in at most 30 s (5 s from a local checkpoint), a dedupe lookup
(``LedgerView.decide``) in at most 5 µs. Every part is real and on loopback:

- a private single-node Kafka broker (``harness.kafka_broker()``); per design a fresh ledger
  topic configured as ``service.adapters.ledger.ensure_ledger_topic`` configures it (12
  partitions, ``cleanup.policy=compact,delete``, ``retention.ms`` 7 days,
  ``min.compaction.lag.ms=0``, replication 1);
- the entries, written by ``bench/LedgerGen.java`` (compiled with ``javac`` against the broker's
  own kafka-clients jar): ~100k records/s here at 7 M, where aiokafka's ``send()`` manages ~11k
  (ten minutes for 7 M) and its ``create_batch()``/``send_batch()`` ~65k with the records
  already encoded (Python's ``encode_entry`` alone makes ~24k a second). Entry i is a pure
  function of i, held twice: in Java and in ``entry_records`` below. Before a topic is filled,
  a sample from the generator (the first 10,000 entries, which hold every kind, and the last
  2,000) is checked, in the design's own tree, against ``encode_entry`` of the entry
  ``entry_records`` builds (identical bytes) and ``decode_entry`` (the same entry back); if the
  codec no longer writes those bytes, the records are encoded by that tree's ``encode_entry`` in
  a child process and only sent by Java (``--stdin``; ``--python-encoder`` forces that, at ~20k
  records/s). Keys are v4 UUID texts, sent with the key-hashing default partitioner, as the
  relay's producer sends them; record timestamps are the entries' ``at``; no compression (the
  relay's producer uses none);
- the mix (per 10,000): 10 ``submitted`` (a ``FalRef``; submitted within the last hour),
  1 ``intent`` (with a digest), 50 ``rejected`` (keyed ``source:<topic>:<p>:<o>``), and
  ``finished``: 200 failed, 50 cancelled, the rest succeeded (shape, ``run_s``, tenant among 5,
  fal request id, units 5.0625, amount 3.0375); finished and rejected entries' ``at`` spread
  evenly, in offset order, over the 7 days before the run less 2 hours (so none ages out during
  a run). By default finished jobs' entries also carry ``received_at`` and a small metadata
  dict, as the issue's brief describes them; ``--lean-finished`` writes them as
  ``service/relay/publish.py`` does today (neither). ``--history`` writes each finished job's
  intent and submitted entries before it under its key (3 records a job, the topic as the
  relay leaves it while compaction has not run: the active segment is never compacted);
  ``--small-batches`` writes one record a batch, as one-entry transactions do (their commit
  markers are not reproduced);
- per design a **fresh child process** (``python bench/ledger_scale.py _child measure``), so its
  RSS holds nothing else: it imports the ledger, the settings, aiokafka (and numpy and msgspec,
  should the design use them) first, then reads VmRSS and its CPU time, builds ``Settings``
  from the environment, ``LedgerView(timedelta(days=7))``, ``KafkaLedger(settings, view,
  "bench")`` (with ``checkpoint=service.app.checkpoint_place(settings)`` where the design has
  one, as the relay builds it) and awaits ``start()`` (it returns once caught up: **ready**).
  Ledger memory = VmRSS after ``gc.collect()`` at ready - VmRSS before; peak = VmHWM - that
  VmRSS; CPU = user + system of all its threads. Then ``view.decide(request_id, source, now)``
  for 100,000 random present request_ids (each with its own source: DONE, RESUME or RECONCILE
  is the expected answer, and checked) and 100,000 absent ones (NEW), three passes each, the
  median µs a call (the loop included); then ``stop()`` (timed: a checkpoint is written there);
- designs: **new** = ``service/`` in this working tree as it is when the script runs;
  **today's** = commit c9ab591 (``--baseline-commit``), checked out with ``git worktree add
  --detach`` under /tmp (removed at the end) and run with the same interpreter, PYTHONPATH and
  cwd set to it. Today's design needs ~1.6-2.2 KB an entry (11-15 GB at 7 M), so it is measured at
  ``--baseline-entries`` (1,000,000) on a topic of its own and its 7 M figures extrapolated
  linearly (said so in the table);
- **from a checkpoint** (only when ``Settings`` has ``relay_ledger_checkpoint_dir``): a child
  with ``RELAY_LEDGER_CHECKPOINT_DIR`` set to an empty folder starts (a full read), stops
  (writing the checkpoint: timed, and its size reported), ``--checkpoint-tail`` entries (10,000:
  a quarter hour at a million a day) are written, and a second child with the same folder is
  measured.

Run (from the project root)::

    uv run python bench/ledger_scale.py                    # 7 M entries, today's at 1 M: writes
                                                           # bench/results/ledger-scale.md
    uv run python bench/ledger_scale.py --quick            # 200,000 entries, today's at 50,000;
                                                           # prints only (unless --output)
    uv run python bench/ledger_scale.py --generate-only    # fill the 7 M topic, report the rate

Needs Java 17+ with ``javac`` (the broker's ``scripts/kafka`` needs Java anyway). The full run
generates ~3 GB into the broker's temporary folder; it runs its children one at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import inspect
import json
import os
import random
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from harness import ROOT, clean_env, git_commit, header_lines, kafka_broker, write_output

if TYPE_CHECKING:
    from service.core.ledger import LedgerEntry

DEFAULT_OUTPUT = ROOT / "bench" / "results" / "ledger-scale.md"
GENERATOR_SOURCE = ROOT / "bench" / "LedgerGen.java"
BASELINE_COMMIT = "c9ab591"
MiB = 1024 * 1024
TARGET_ENTRIES = 7_000_000
TARGET_MEMORY_MIB = 600
TARGET_READY_S = 30.0
TARGET_CHECKPOINT_READY_S = 5.0
TARGET_LOOKUP_US = 5.0
# Below this many entries a row is not scaled to 7 M for the verdicts: the process's fixed
# costs (the consumer's buffers, a few MiB) would be scaled as if they were per entry.
JUDGED_FROM = 1_000_000
RETENTION = timedelta(days=7)
# Entries end this long before the run starts, so none ages past the retention while it runs.
SPAN_MARGIN = timedelta(hours=2)
LEDGER_PARTITIONS = 12
SAMPLE_HEAD = 10_000  # every kind, in its proportion (the kinds repeat every 10,000 entries)
SAMPLE_TAIL = 2_000  # the largest offsets and latest times
LOOKUP_PASSES = 3
ABSENT_BASE = 10**12  # indices of request_ids that are never written
CHILD_TIMEOUT_S = 3 * 3600.0  # today's design at 7 M would take minutes, not hours
GENERATE_TIMEOUT_S = 3 * 3600.0
# Modules a design may import lazily: imported before the first RSS reading, so that they do not
# count as ledger memory.
OPTIONAL_MODULES = ("numpy", "msgspec")
# The generator's JVM: young garbage (a record's strings) dies young under the parallel collector;
# G1 with a 1 GiB heap ran old collections (the producer's 512 KiB batches are humongous to it).
JVM_OPTS = ("-Xmx2g", "-XX:+UseParallelGC")
# Where a change makes "new" differ from today's design (the report names the files changed).
LEDGER_PATHS = ("service/",)

# --- the entries (keep in step with LedgerGen.java: the constants of the same names) ------------

SOURCE_TOPIC = "lynx.requests"
SOURCE_PARTITIONS = 12
KEY_A = 0x1000_0000_0000_0001
KEY_B = 0x2000_0000_0000_0003
FAL_A = 0x3000_0000_0000_0005
FAL_B = 0x4000_0000_0000_0007
AUX = 0x5000_0000_0000_0009
DIGEST = 0x6000_0000_0000_000B
TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")
WRITERS = (
    "lynx-relay-7d9f8b6c4-2xkqz:1:3f9a2c1b",
    "lynx-relay-7d9f8b6c4-9bq7m:1:a40c77e2",
    "lynx-relay-7d9f8b6c4-tw5rd:1:0be19d53",
    "lynx-relay-7d9f8b6c4-2xkqz:1:c6d2f8a0",
)
CAMPAIGNS = ("spring", "retarget", "organic")
SHAPES = ("None|None|None|None", "720p|16:9|None|None", "480p|9:16|121|30")
FAL_BASE = "https://queue.fal.run/fal-ai/lynx/requests/"
UNITS = 5.0625
AMOUNT = 3.0375
MASK64 = (1 << 64) - 1
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Per 10,000 entries, by (i * 7919) % 10,000 (a permutation of each block of 10,000).
KIND_BOUNDS = (
    (10, "submitted"),
    (11, "intent"),
    (61, "rejected"),
    (261, "failed"),
    (311, "cancelled"),
    (10_000, "succeeded"),
)
KIND_STATE = {
    "submitted": "submitted",
    "intent": "intent",
    "rejected": "rejected",
    "failed": "finished",
    "cancelled": "finished",
    "succeeded": "finished",
}
# What ``decide`` answers for a request_id seen again with its own source.
EXPECTED_INTAKE = {"submitted": "resume", "intent": "reconcile", "finished": "done"}


def mix64(z: int) -> int:
    """splitmix64's finalizer, on unsigned 64-bit words: a bijection, as in Java."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def uuid_text(i: int, a: int, b: int) -> str:
    hi = (mix64(i + a) & 0xFFFF_FFFF_FFFF_0FFF) | 0x4000
    lo = (mix64(i + b) & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000
    return str(uuid.UUID(int=(hi << 64) | lo))


def kind_of(i: int) -> str:
    m = (i * 7919) % 10_000
    return next(kind for bound, kind in KIND_BOUNDS if m < bound)


def request_key(i: int) -> str:
    return uuid_text(i, KEY_A, KEY_B)


def ms_time(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


@dataclass(frozen=True, slots=True)
class Spec:
    """Which entries a generator run writes, and their times."""

    first: int
    count: int
    base_index: int  # entry base_index is written at base_ms ...
    base_ms: int
    step_us: int  # ... and each later one step_us after it (finished and rejected entries)
    open_ms: int  # open (submitted, intent) entries: within the hour before this
    rich: bool  # finished jobs carry received_at and metadata
    history: bool  # a finished job's intent and submitted entries come before it

    def closed_at(self, i: int) -> int:
        return self.base_ms + (i - self.base_index) * self.step_us // 1000

    def java_args(self) -> list[str]:
        args = [
            *("--first", str(self.first), "--count", str(self.count)),
            *("--base-index", str(self.base_index), "--base-ms", str(self.base_ms)),
            *("--step-us", str(self.step_us), "--open-ms", str(self.open_ms)),
        ]
        return args + ["--rich"] * self.rich + ["--history"] * self.history

    def sample(self) -> list[Spec]:
        """The ranges a codec check looks at: the head (every kind) and the tail."""
        head = min(self.count, SAMPLE_HEAD)
        tail = min(self.count - head, SAMPLE_TAIL)
        parts = [Spec(**{**asdict(self), "count": head})]
        if tail > 0:
            last = self.first + self.count - tail
            parts.append(Spec(**{**asdict(self), "first": last, "count": tail}))
        return parts


@dataclass(frozen=True, slots=True)
class Record:
    key: str
    entry: LedgerEntry
    writer: str
    timestamp_ms: int


def entry_records(i: int, spec: Spec) -> list[Record]:
    """Entry i's records, oldest first, as ``LedgerGen.records`` writes them (imports the
    ledger of whichever tree is on the path: call it in a child)."""
    from service.core.ledger import FalRef, LedgerEntry, Source  # noqa: PLC0415

    kind = kind_of(i)
    aux = mix64(i + AUX) >> 1
    writer = WRITERS[(aux >> 12) % len(WRITERS)]
    source = Source(SOURCE_TOPIC, i % SOURCE_PARTITIONS, i // SOURCE_PARTITIONS)
    if kind == "rejected":
        key = f"source:{SOURCE_TOPIC}:{source.partition}:{source.offset}"
        at = spec.closed_at(i)
        entry = LedgerEntry(key=key, state="rejected", source=source, at=ms_time(at))
        return [Record(key, entry, writer, at)]
    key = request_key(i)
    tenant = TENANTS[(aux >> 8) % len(TENANTS)]
    metadata = {"user": f"u{(aux >> 24) % 100_000}", "campaign": CAMPAIGNS[(aux >> 40) % 3]}
    fal_id = uuid_text(i, FAL_A, FAL_B)
    url = FAL_BASE + fal_id
    fal = FalRef(fal_id, f"{url}/status", url, f"{url}/cancel")
    digest = "".join(f"{mix64(i + DIGEST + n * 0x1_0000_0000):016x}" for n in range(4))

    def opened(state: str, at: int, received: int) -> Record:
        entry = LedgerEntry(
            key=key,
            state="submitted" if state == "submitted" else "intent",
            source=source,
            at=ms_time(at),
            fal=fal if state == "submitted" else None,
            digest=digest if state == "intent" else None,
            received_at=ms_time(received),
            metadata=metadata,
            tenant=tenant,
            units=UNITS,
        )
        return Record(key, entry, writer, at)

    if kind in ("submitted", "intent"):
        at = spec.open_ms - aux % 3_600_000
        return [opened(kind, at, at - 1500 - (aux >> 20) % 5000)]
    at = spec.closed_at(i)
    if kind == "cancelled":
        entry = LedgerEntry(
            key=key, state="finished", source=source, at=ms_time(at), status="cancelled"
        )
        return [Record(key, entry, writer, at)]
    run_ms = 40_000 + aux % 80_000
    intent_at = at - run_ms - 3000
    received = intent_at - (aux >> 20) % 30_000
    records = []
    if spec.history:
        records = [
            opened("intent", intent_at, received),
            opened("submitted", intent_at + 1500, received),
        ]
    ok = kind == "succeeded"
    entry = LedgerEntry(
        key=key,
        state="finished",
        source=source,
        at=ms_time(at),
        received_at=ms_time(received) if spec.rich else None,
        metadata=metadata if spec.rich else None,
        status="succeeded" if ok else "failed",
        shape=SHAPES[(aux >> 16) % len(SHAPES)] if ok else None,
        run_s=run_ms / 1000 if ok else None,
        tenant=tenant,
        fal_request_id=fal_id,
        units=UNITS if ok else None,
        amount=AMOUNT if ok else None,
    )
    return [*records, Record(key, entry, writer, at)]


def expected_counts(first: int, count: int) -> dict[str, int]:
    """Entries held per state once entries [first, first + count) are read."""
    # Any 10,000 consecutive indices hold every residue once (7919 is prime to 10,000).
    blocks, rest = divmod(count, 10_000)
    kinds = dict.fromkeys(KIND_STATE, 0)
    low = 0
    for bound, kind in KIND_BOUNDS:
        kinds[kind] = (bound - low) * blocks
        low = bound
    for i in range(first + count - rest, first + count):
        kinds[kind_of(i)] += 1
    states = {"intent": 0, "submitted": 0, "finished": 0, "rejected": 0}
    for kind, n in kinds.items():
        states[KIND_STATE[kind]] += n
    return states


# --- framing (LedgerGen's --dry-run output and --stdin input) -----------------------------------


def write_frame(out: IO[bytes], key: bytes, value: bytes, timestamp_ms: int) -> None:
    out.write(struct.pack(">i", len(key)) + key + struct.pack(">i", len(value)) + value)
    out.write(struct.pack(">q", timestamp_ms))


def read_frames(data: bytes) -> Iterator[tuple[bytes, bytes, int]]:
    at = 0
    while at < len(data):
        (length,) = struct.unpack_from(">i", data, at)
        key = data[at + 4 : at + 4 + length]
        at += 4 + length
        (length,) = struct.unpack_from(">i", data, at)
        value = data[at + 4 : at + 4 + length]
        at += 4 + length
        (timestamp,) = struct.unpack_from(">q", data, at)
        at += 8
        yield key, value, timestamp


# --- the child process (runs with the design's tree on its path) -------------------------------


def rss_bytes() -> int:
    return _status_kib("VmRSS") * 1024


def hwm_bytes() -> int:
    return _status_kib("VmHWM") * 1024


def _status_kib(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {name} in /proc/self/status")


def service_root() -> str:
    import service  # noqa: PLC0415

    return str(Path(service.__file__).resolve().parent.parent)


def child_probe(params: dict[str, Any]) -> dict[str, Any]:
    from service.config import Settings  # noqa: PLC0415

    fields = getattr(Settings, "model_fields", {})
    return {"root": service_root(), "checkpoint": "relay_ledger_checkpoint_dir" in fields}


def child_verify(params: dict[str, Any]) -> dict[str, Any]:
    """Compare LedgerGen's sample with this tree's codec: identical bytes, the same entry back."""
    from service.adapters.ledger_codec import decode_entry, encode_entry  # noqa: PLC0415

    spec = Spec(**params["spec"])
    expected = [
        r for i in range(spec.first, spec.first + spec.count) for r in entry_records(i, spec)
    ]
    got = list(read_frames(Path(params["file"]).read_bytes()))
    problems: list[str] = []
    if len(got) != len(expected):
        problems.append(f"{len(got)} records from the generator, {len(expected)} expected")
    for (key, value, timestamp), want in zip(got, expected, strict=False):
        ours = encode_entry(want.entry, want.writer)
        if key.decode() != want.key or timestamp != want.timestamp_ms:
            problems.append(f"{want.key}: key or timestamp differ ({key!r}, {timestamp})")
        elif value != ours:
            problems.append(
                f"{want.key}: generator wrote\n  {value!r}\nencode_entry writes\n  {ours!r}"
            )
        elif decode_entry(want.key, value) != (want.entry, want.writer):
            problems.append(f"{want.key}: decode_entry does not give the entry back")
        if len(problems) >= 3:
            break
    return {"root": service_root(), "checked": len(got), "problems": problems}


def child_encode(params: dict[str, Any]) -> dict[str, Any]:
    """Frame this tree's ``encode_entry`` of every entry of the spec on stdout (for --stdin)."""
    from service.adapters.ledger_codec import encode_entry  # noqa: PLC0415

    spec = Spec(**params["spec"])
    out = sys.stdout.buffer
    for i in range(spec.first, spec.first + spec.count):
        for r in entry_records(i, spec):
            write_frame(out, r.key.encode(), encode_entry(r.entry, r.writer), r.timestamp_ms)
    out.flush()
    return {"root": service_root()}


def child_measure(params: dict[str, Any]) -> dict[str, Any]:
    # Everything a design may load, loaded first: the readings after it are the ledger's.
    for name in OPTIONAL_MODULES:
        with contextlib.suppress(ImportError):
            __import__(name)
    import aiokafka  # noqa: F401, PLC0415

    from service.adapters import ledger as adapter  # noqa: PLC0415
    from service.config import Settings  # noqa: PLC0415
    from service.core.ledger import LedgerView, Source  # noqa: PLC0415

    # Where the composition root builds the checkpoint's place from the settings (the new
    # design), the ledger is built the same way; today's KafkaLedger takes no checkpoint.
    place_of: Callable[[Any], Any] | None = None
    with contextlib.suppress(ImportError):
        from service import app  # noqa: PLC0415

        place_of = getattr(app, "checkpoint_place", None)
    if "checkpoint" not in inspect.signature(adapter.KafkaLedger).parameters:
        place_of = None

    gc.collect()
    rss_before = rss_bytes()
    result: dict[str, Any] = {"root": service_root(), "rss_before": rss_before}

    async def run() -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        settings = Settings()  # from the environment, as the relay reads it
        view = LedgerView(RETENTION)
        options = {} if place_of is None else {"checkpoint": place_of(settings)}
        ledger = adapter.KafkaLedger(settings, view, "bench", **options)
        await ledger.start()
        result["ready_s"] = time.perf_counter() - wall
        result["cpu_s"] = time.process_time() - cpu
        gc.collect()
        result["rss_ready"] = rss_bytes()
        result["hwm_ready"] = hwm_bytes()
        result["entries"] = len(view)
        result["counts"] = view.counts()
        result["bad_records"] = getattr(ledger, "bad_records", None)
        result["records_read"] = getattr(ledger, "records_read", None)
        result["checkpoint"] = options.get("checkpoint") is not None
        result.update(lookups(view.decide, Source, params))
        wall = time.perf_counter()
        await ledger.stop()
        result["stop_s"] = time.perf_counter() - wall

    asyncio.run(run())
    return result


def lookups(decide: Callable[..., Any], source_type: Any, params: dict[str, Any]) -> dict[str, Any]:
    """µs per ``decide`` for present request_ids (their own source) and absent ones."""
    rng = random.Random(17)
    ranges: list[tuple[int, int]] = params["ranges"]
    total = sum(count for _first, count in ranges)
    present: list[tuple[str, Any, str]] = []
    while len(present) < params["lookups"]:
        n = rng.randrange(total)
        for first, count in ranges:
            if n < count:
                i = first + n
                break
            n -= count
        kind = kind_of(i)
        if kind != "rejected":
            source = source_type(SOURCE_TOPIC, i % SOURCE_PARTITIONS, i // SOURCE_PARTITIONS)
            present.append((request_key(i), source, EXPECTED_INTAKE[KIND_STATE[kind]]))
    absent = [
        (request_key(ABSENT_BASE + n), source_type(SOURCE_TOPIC, 0, n), "new")
        for n in range(params["lookups"])
    ]
    now = datetime.now(UTC)
    out: dict[str, Any] = {}
    for name, cases in (("present", present), ("absent", absent)):
        calls = [(key, source) for key, source, _want in cases]
        wrong = sum(str(decide(k, s, now).value) != want for k, s, want in cases)
        passes = []
        for _ in range(LOOKUP_PASSES):
            started = time.perf_counter()
            for key, source in calls:
                decide(key, source, now)
            passes.append((time.perf_counter() - started) / len(calls) * 1e6)
        out[f"lookup_{name}_us"] = statistics.median(passes)
        out[f"lookup_{name}_wrong"] = wrong
    return out


CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "probe": child_probe,
    "verify": child_verify,
    "encode": child_encode,
    "measure": child_measure,
}


def child_main(mode: str, params_json: str) -> int:
    params = json.loads(params_json)
    result = CHILDREN[mode](params)
    if "result" in params:
        Path(params["result"]).write_text(json.dumps(result))
    return 0


# --- the parent: trees, topics, generation, children --------------------------------------------


@dataclass(frozen=True, slots=True)
class Tree:
    label: str
    root: Path


def child_env(tree: Tree, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**clean_env(), "PYTHONPATH": str(tree.root), **(extra or {})}


def run_child(
    tree: Tree,
    mode: str,
    params: dict[str, Any],
    *,
    env: dict[str, str] | None = None,
    timeout: float = CHILD_TIMEOUT_S,
) -> dict[str, Any]:
    """Run a child in ``tree`` (PYTHONPATH and cwd) and return what it wrote."""
    with tempfile.TemporaryDirectory(prefix="ledger-scale-child-") as folder:
        result = Path(folder) / "result.json"
        log = Path(folder) / "log"
        argv = [sys.executable, str(Path(__file__).resolve()), "_child", mode]
        argv.append(json.dumps({**params, "result": str(result)}))
        with log.open("wb") as out:
            done = subprocess.run(
                argv,
                cwd=tree.root,
                env=env or child_env(tree),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        if done.returncode != 0 or not result.exists():
            tail = log.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"child {mode} in {tree.root} exited {done.returncode}:\n{tail}")
        body: dict[str, Any] = json.loads(result.read_text())
    # PYTHONPATH must win over the venv's editable install of /work/main.
    if Path(body["root"]) != tree.root.resolve():
        raise RuntimeError(f"child {mode} imported service from {body['root']}, not {tree.root}")
    return body


@contextlib.contextmanager
def baseline_tree(commit: str) -> Iterator[Tree]:
    """Today's design: a detached worktree of ``commit`` under /tmp, removed afterwards."""
    path = Path(tempfile.gettempdir()) / f"ledger-base-{uuid.uuid4().hex[:8]}"
    added = subprocess.run(
        ["git", "worktree", "add", "--detach", str(path), commit],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if added.returncode != 0:
        raise RuntimeError(f"git worktree add {commit} failed:\n{added.stderr}")
    try:
        yield Tree(f"today's ({commit})", path)
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(path)],
            cwd=ROOT,
            check=False,
            capture_output=True,
            timeout=120,
        )


def tree_change(commit: str) -> str:
    """How ``service/`` in the working tree differs from ``commit`` (read-only git)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    changed = git("diff", "--name-only", commit, "--", *LEDGER_PATHS).splitlines()
    new = git("ls-files", "--others", "--exclude-standard", "--", *LEDGER_PATHS).splitlines()
    if not changed and not new:
        return f"identical to {commit}: the new rows measure today's design again"
    return f"{len(changed)} tracked file(s) changed since {commit}, {len(new)} new: " + ", ".join(
        [*changed, *new][:8]
    )


async def create_ledger_topic(bootstrap: str, topic: str) -> None:
    """As ``ensure_ledger_topic`` creates it (replication 1: one broker)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    topic,
                    num_partitions=LEDGER_PARTITIONS,
                    replication_factor=1,
                    topic_configs={
                        "cleanup.policy": "compact,delete",
                        "retention.ms": str(int(RETENTION.total_seconds() * 1000)),
                        "min.compaction.lag.ms": "0",
                    },
                )
            ]
        )
    finally:
        await admin.close()


def kafka_libs() -> Path:
    """The jars ``scripts/kafka`` fetched (its cache folder and version, defaults included)."""
    cache = Path(os.environ.get("LYNX_KAFKA_CACHE", Path.home() / ".cache" / "lynx-relay"))
    return cache / f"kafka-{os.environ.get('KAFKA_VERSION', '4.4.0')}" / "libs"


@dataclass
class Generator:
    """LedgerGen compiled into a folder, and how to run it."""

    classes: Path
    bootstrap: str
    small_batches: bool
    python_encoder: bool  # every record from the tree's encode_entry (~20k records/s)

    def command(self, *args: str) -> list[str]:
        libs = kafka_libs()
        log4j = libs.parent / "config" / "log4j2.properties"
        return [
            "java",
            *JVM_OPTS,
            f"-Dlog4j2.configurationFile={log4j}",
            "-Dlynx.kafka.log.level=WARN",
            "-cp",
            f"{self.classes}{os.pathsep}{libs}/*",
            "LedgerGen",
            "--bootstrap",
            self.bootstrap,
            *args,
            *(["--small-batches"] if self.small_batches else []),
        ]


def compile_generator(folder: Path) -> None:
    subprocess.run(
        ["javac", "-d", str(folder), "-cp", f"{kafka_libs()}/*", str(GENERATOR_SOURCE)],
        check=True,
        timeout=300,
    )


@dataclass
class Generated:
    topic: str
    entries: int
    records: int
    value_bytes: int  # keys and values
    seconds: float  # from the first send to the last acknowledgement
    wall_s: float  # the whole generator run (JVM start, the encoder if any)
    cpu_s: float  # the generator's (and encoder's) CPU
    topic_bytes: int
    encoder: str
    what: str = ""  # e.g. "the tail after the checkpoint"

    @property
    def rate(self) -> float:
        return self.records / self.seconds


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def generator_summary(stderr: str) -> dict[str, Any]:
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    try:
        summary: dict[str, Any] = json.loads(last)
    except ValueError:
        raise RuntimeError(f"LedgerGen failed:\n{stderr[-4000:]}") from None
    return summary


def generate(gen: Generator, tree: Tree, topic: str, spec: Spec) -> Generated:
    """Fill ``topic`` with the entries of ``spec``: Java's own JSON when ``tree``'s codec
    writes the same bytes, else ``tree``'s ``encode_entry`` output, piped to Java."""
    problems = [] if gen.python_encoder else check_codec(gen, tree, spec)
    wall, cpu = time.perf_counter(), children_cpu_s()
    if gen.python_encoder:
        encoder = "encode_entry in Python, sent by LedgerGen --stdin (--python-encoder)"
        stderr = pipe_encoded(gen, tree, topic, spec)
    elif not problems:
        encoder = "LedgerGen's JSON (a sample checked against encode_entry)"
        done = subprocess.run(
            gen.command("--topic", topic, *spec.java_args()),
            capture_output=True,
            text=True,
            timeout=GENERATE_TIMEOUT_S,
            check=False,
        )
        stderr = done.stderr
    else:
        print(
            f"{tree.label}: codec check failed, encoding in Python:\n{problems[0]}", file=sys.stderr
        )
        encoder = "encode_entry in Python, sent by LedgerGen --stdin (the codec check failed)"
        stderr = pipe_encoded(gen, tree, topic, spec)
    summary = generator_summary(stderr)
    return Generated(
        topic=topic,
        entries=spec.count,
        records=int(summary["records"]),
        value_bytes=int(summary["bytes"]),
        seconds=float(summary["seconds"]),
        wall_s=time.perf_counter() - wall,
        cpu_s=children_cpu_s() - cpu,
        topic_bytes=int(summary["topic_bytes"]),
        encoder=encoder,
    )


def check_codec(gen: Generator, tree: Tree, spec: Spec) -> list[str]:
    """Problems found comparing LedgerGen's sample with ``tree``'s codec (none: it matches)."""
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ledger-scale-sample-") as folder:
        for n, part in enumerate(spec.sample()):
            sample = Path(folder) / f"sample-{n}.bin"
            with sample.open("wb") as out:
                done = subprocess.run(
                    gen.command("--dry-run", *part.java_args()),
                    stdout=out,
                    stderr=subprocess.PIPE,
                    text=False,
                    timeout=600,
                    check=False,
                )
            if done.returncode != 0:
                raise RuntimeError(f"LedgerGen --dry-run failed:\n{done.stderr.decode()[-4000:]}")
            checked = run_child(tree, "verify", {"spec": asdict(part), "file": str(sample)})
            problems += checked["problems"]
    return problems


def pipe_encoded(gen: Generator, tree: Tree, topic: str, spec: Spec) -> str:
    params = json.dumps({"spec": asdict(spec)})
    argv = [sys.executable, str(Path(__file__).resolve()), "_child", "encode", params]
    with tempfile.TemporaryFile() as err:
        encoder = subprocess.Popen(
            argv, cwd=tree.root, env=child_env(tree), stdout=subprocess.PIPE, stderr=err
        )
        try:
            done = subprocess.run(
                gen.command("--topic", topic, "--stdin"),
                stdin=encoder.stdout,
                capture_output=True,
                text=True,
                timeout=GENERATE_TIMEOUT_S,
                check=False,
            )
        finally:
            if encoder.stdout is not None:
                encoder.stdout.close()
            encoder.wait(timeout=60)
        if encoder.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"the encoder failed:\n{err.read().decode()[-4000:]}")
    return done.stderr


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class Row:
    design: str
    entries: int  # held at ready
    expected: int
    records: int  # read by the start (the ledger's count, else the topic's records)
    memory_mib: float
    peak_mib: float
    ready_s: float
    cpu_s: float
    stop_s: float
    lookup_present_us: float | None
    lookup_absent_us: float | None
    checks: list[str] = field(default_factory=list)
    factor: float = 1.0  # > 1: extrapolated from a measurement at entries / factor

    @property
    def bytes_per_entry(self) -> float:
        return self.memory_mib * MiB / max(self.entries, 1)

    @property
    def cpu_us_per_entry(self) -> float:
        return self.cpu_s / max(self.entries, 1) * 1e6

    def scaled(self, factor: float, design: str) -> Row:
        return Row(
            design=design,
            entries=round(self.entries * factor),
            expected=round(self.expected * factor),
            records=round(self.records * factor),
            memory_mib=self.memory_mib * factor,
            peak_mib=self.peak_mib * factor,
            ready_s=self.ready_s * factor,
            cpu_s=self.cpu_s * factor,
            stop_s=self.stop_s * factor,
            lookup_present_us=None,
            lookup_absent_us=None,
            factor=factor,
        )


@dataclass(frozen=True, slots=True)
class Where:
    """The topic a child reads, and how many lookups of each kind it times."""

    bootstrap: str
    topic: str
    lookups: int


def measure(
    tree: Tree,
    design: str,
    where: Where,
    *,
    ranges: list[tuple[int, int]],
    records: int,
    extra_env: dict[str, str] | None = None,
) -> Row:
    env = child_env(
        tree,
        {
            "KAFKA_BOOTSTRAP_SERVERS": where.bootstrap,
            "RELAY_JOBS_TOPIC": where.topic,
            "RELAY_CREATE_JOBS_TOPIC": "false",
            # A local queue URL: Settings asks for FAL_KEY otherwise; nothing calls it.
            "FAL_QUEUE_URL": "http://127.0.0.1:9",
            **(extra_env or {}),
        },
    )
    print(f"measuring {design} ({where.topic}) ...", file=sys.stderr)
    got = run_child(tree, "measure", {"ranges": ranges, "lookups": where.lookups}, env=env)
    want = {"intent": 0, "submitted": 0, "finished": 0, "rejected": 0}
    for first, count in ranges:
        for state, n in expected_counts(first, count).items():
            want[state] += n
    expected = sum(count for _first, count in ranges)
    checks = []
    if got["entries"] != expected or got["counts"] != want:
        checks.append(f"held {got['entries']:,} {got['counts']}, expected {expected:,} {want}")
    if got.get("bad_records"):
        checks.append(f"{got['bad_records']} unreadable records")
    for name in ("present", "absent"):
        if got[f"lookup_{name}_wrong"]:
            checks.append(f"{got[f'lookup_{name}_wrong']} {name} lookups decided otherwise")
    if extra_env and not got["checkpoint"]:
        checks.append("no checkpoint place given to KafkaLedger (not wired as in service.app)")
    read = got.get("records_read")
    return Row(
        design=design,
        entries=int(got["entries"]),
        expected=expected,
        # What the ledger says it read, where it counts (a start from a checkpoint reads the
        # tail only); else the topic's records.
        records=records if read is None else int(read),
        memory_mib=(got["rss_ready"] - got["rss_before"]) / MiB,
        peak_mib=(got["hwm_ready"] - got["rss_before"]) / MiB,
        ready_s=float(got["ready_s"]),
        cpu_s=float(got["cpu_s"]),
        stop_s=float(got["stop_s"]),
        lookup_present_us=float(got["lookup_present_us"]),
        lookup_absent_us=float(got["lookup_absent_us"]),
        checks=checks,
    )


@dataclass
class Plan:
    entries: int
    baseline_entries: int
    lookups: int
    checkpoint_tail: int
    rich: bool
    history: bool
    small_batches: bool
    python_encoder: bool
    baseline_commit: str
    generate_only: bool
    skip_baseline: bool


@dataclass
class Outcome:
    rows: list[Row] = field(default_factory=list)
    generated: list[Generated] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checkpoint_bytes: int | None = None
    checkpoint_stop_s: float | None = None


def main_spec(plan: Plan, entries: int, started_ms: int) -> Spec:
    """``entries`` entries spread over the retention before the run, less a margin at its old
    end: the oldest entry stays that much younger than the retention while the run lasts."""
    span_ms = int((RETENTION - SPAN_MARGIN).total_seconds() * 1000)
    return Spec(
        first=0,
        count=entries,
        base_index=0,
        base_ms=started_ms - span_ms,
        step_us=span_ms * 1000 // entries,
        open_ms=started_ms,
        rich=plan.rich,
        history=plan.history,
    )


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run_all(plan: Plan, bootstrap: str, work: Path) -> Outcome:
    outcome = Outcome()
    started_ms = int(time.time() * 1000)
    classes = work / "classes"
    compile_generator(classes)
    gen = Generator(classes, bootstrap, plan.small_batches, plan.python_encoder)
    run_id = uuid.uuid4().hex[:8]
    new = Tree("new (this working tree)", ROOT)

    topic = f"bench.ledger-scale.{run_id}.new"
    made = fill(gen, new, topic, main_spec(plan, plan.entries, started_ms))
    outcome.generated.append(made)
    if plan.generate_only:
        return outcome
    where = Where(bootstrap, topic, plan.lookups)
    outcome.rows.append(
        measure(new, "new", where, ranges=[(0, plan.entries)], records=made.records)
    )
    if run_child(new, "probe", {})["checkpoint"]:
        checkpoint_rows(plan, outcome, gen, where, tree=new, records=made.records, work=work)
    else:
        note = "From a checkpoint: not measured, Settings has no relay_ledger_checkpoint_dir yet."
        outcome.notes.append(note)
        print(note, file=sys.stderr)

    if not plan.skip_baseline:
        with baseline_tree(plan.baseline_commit) as base:
            topic = f"bench.ledger-scale.{run_id}.today"
            made = fill(gen, base, topic, main_spec(plan, plan.baseline_entries, started_ms))
            outcome.generated.append(made)
            row = measure(
                base,
                base.label,
                Where(bootstrap, topic, plan.lookups),
                ranges=[(0, plan.baseline_entries)],
                records=made.records,
            )
            outcome.rows.append(row)
            factor = plan.entries / plan.baseline_entries
            if factor != 1:
                outcome.rows.append(row.scaled(factor, f"{base.label}, extrapolated x{factor:g}"))
    return outcome


def fill(gen: Generator, tree: Tree, topic: str, spec: Spec) -> Generated:
    asyncio.run(create_ledger_topic(gen.bootstrap, topic))
    print(f"generating {spec.count:,} entries into {topic} ...", file=sys.stderr)
    made = generate(gen, tree, topic, spec)
    print(
        f"  {made.records:,} records in {made.seconds:.1f} s ({made.rate:,.0f}/s)", file=sys.stderr
    )
    return made


def checkpoint_rows(
    plan: Plan,
    outcome: Outcome,
    gen: Generator,
    where: Where,
    *,
    tree: Tree,
    records: int,
    work: Path,
) -> None:
    """A start that writes a checkpoint at stop, entries written meanwhile, then a start from
    the checkpoint."""
    folder = work / "checkpoint"
    folder.mkdir()
    env = {"RELAY_LEDGER_CHECKPOINT_DIR": str(folder)}
    ranges = [(0, plan.entries)]
    first = measure(
        tree,
        "new, checkpoint on (none yet)",
        where,
        ranges=ranges,
        records=records,
        extra_env=env,
    )
    outcome.rows.append(first)
    outcome.checkpoint_bytes = folder_bytes(folder)
    outcome.checkpoint_stop_s = first.stop_s
    if plan.checkpoint_tail:
        # Written after the checkpoint, at the present time: what a restart finds new.
        now_ms = int(time.time() * 1000)
        tail = Spec(
            first=plan.entries,
            count=plan.checkpoint_tail,
            base_index=plan.entries,
            base_ms=now_ms,
            step_us=1000,
            open_ms=now_ms,
            rich=plan.rich,
            history=plan.history,
        )
        made = generate(gen, tree, where.topic, tail)
        made.what = "written after the checkpoint"
        outcome.generated.append(made)
        records += made.records
        ranges = [*ranges, (plan.entries, plan.checkpoint_tail)]
    design = f"new, from the checkpoint (+{plan.checkpoint_tail:,} newer entries)"
    row = measure(tree, design, where, ranges=ranges, records=records, extra_env=env)
    if row.records >= records:
        row.checks.append("read the whole topic: the checkpoint was not used")
    outcome.rows.append(row)


# --- the report ---------------------------------------------------------------------------------


def fmt_us(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What the report's header says about the run itself."""

    command: str
    commit: str
    change: str  # service/ against the baseline commit
    load: str


def report(plan: Plan, outcome: Outcome, info: RunInfo) -> str:
    finished = (
        "with received_at and a metadata dict (the issue's brief)"
        if plan.rich
        else "as service/relay/publish.py writes them (no received_at, no metadata)"
    )
    lines = [
        f"# Ledger restore at scale: {plan.entries:,} entries",
        "",
        *header_lines(info.commit),
        f"- command: `{info.command}`",
        f"- service/ at run time: {info.change}",
        f"- load average (1 min) at start and end: {info.load} (anything else running skews every "
        "figure here)",
        f"- entries: per 10,000, 9,689 finished succeeded, 200 failed, 50 cancelled, 50 rejected, "
        f"10 submitted, 1 intent; finished jobs {finished}"
        + (
            "; each finished job's intent and submitted entries before it (--history)"
            if plan.history
            else ""
        )
        + "; v4 UUID request_ids; `at` spread over 7 days (less 2 h) in offset order",
        "- topics: 12 partitions, compact,delete, retention 7 days, one broker on loopback; "
        + (
            "one record a batch (--small-batches)"
            if plan.small_batches
            else "large batches (512 KiB, linger 20 ms)"
        )
        + ", no transactions (no commit markers), no compression",
        "- not reproduced: the relay writes each entry in a transaction (a commit marker per "
        "transaction and partition, skipped by a read_committed reader), and a real topic is "
        "compacted late: with Kafka's default 1 GiB segments and 7-day segment.ms the active "
        "segment, which compaction never touches, can hold the whole week, each job's intent "
        "and submitted entries included (`--history` writes those)",
        "",
        "## Generation",
        "",
        "| topic | entries | records | key+value MB | on disk MiB | s | records/s | MB/s | CPU s "
        "| encoder |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for g in outcome.generated:
        what = f" ({g.what})" if g.what else ""
        lines.append(
            f"| `{g.topic}`{what} | {g.entries:,} | {g.records:,} | {g.value_bytes / 1e6:,.0f} "
            f"| {g.topic_bytes / MiB:,.0f} | {g.seconds:.1f} (wall {g.wall_s:.1f}) "
            f"| {g.rate:,.0f} | {g.value_bytes / 1e6 / g.seconds:.1f} | {g.cpu_s:.1f} "
            f"| {g.encoder} |"
        )
    lines += [
        "",
        "s: first send to last acknowledgement (wall: the generator's whole run, JVM start "
        "included, the codec check before it not); CPU: the generator's (and encoder's), not "
        "the broker's; on disk: the topic after the run (describeLogDirs).",
    ]
    if not outcome.rows:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "## Restore",
        "",
        "| design | entries held | records read | ledger memory MiB | MiB per million "
        "| bytes per entry | peak MiB | ready s | CPU s | µs CPU per entry "
        "| lookup µs present | lookup µs absent |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in outcome.rows:
        style = "*" if r.factor != 1 else ""
        lines.append(
            f"| {r.design} | {r.entries:,} | {r.records:,} | {style}{r.memory_mib:,.0f}{style} "
            f"| {r.memory_mib / (r.entries / 1e6):,.0f} | {r.bytes_per_entry:,.0f} "
            f"| {style}{r.peak_mib:,.0f}{style} | {style}{r.ready_s:.1f}{style} "
            f"| {style}{r.cpu_s:.1f}{style} | {r.cpu_us_per_entry:.1f} "
            f"| {fmt_us(r.lookup_present_us)} | {fmt_us(r.lookup_absent_us)} |"
        )
    notes = [
        "Ledger memory: VmRSS at ready after gc.collect() - VmRSS after the imports, in a fresh "
        "process per row; peak: VmHWM at ready - the same. Ready: KafkaLedger(...).start() "
        "returning (caught up), from before Settings; CPU: user + system of the child (all "
        "threads) over that time, per entry held; the broker shares the 2 cores. Records read: "
        "KafkaLedger.records_read where the design counts them, else the topic's records. "
        f"Lookups: median of {LOOKUP_PASSES} passes over {plan.lookups:,} calls, the Python loop "
        "included.",
    ]
    for r in outcome.rows:
        if r.factor != 1:
            notes.append(
                f"*{r.design}*: the row above it times {r.factor:g} ({r.expected / r.factor:,.0f}"
                f" -> {r.expected:,} entries): memory, peak, ready and CPU assumed linear in the "
                "entries (per-entry figures and lookups are not extrapolated)."
            )
    if outcome.checkpoint_bytes is not None:
        notes.append(
            f"Checkpoint: written by stop() in {outcome.checkpoint_stop_s:.1f} s, "
            f"{outcome.checkpoint_bytes / MiB:,.1f} MiB on disk."
        )
    checks = [f"{r.design}: {c}" for r in outcome.rows for c in r.checks]
    notes.append(
        "Checks: "
        + (
            "; ".join(checks)
            if checks
            else "every row held the entries (and states) written, read no unreadable record, "
            "and decided every lookup as expected."
        )
    )
    for note in notes:
        lines += ["", note]
    lines += ["", "## Against the targets", "", *verdicts(outcome)]
    for note in outcome.notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def verdicts(outcome: Outcome) -> list[str]:
    """Each measured row (and each extrapolation to 7 M) against the issue's targets; a row
    measured below 7 M is scaled there linearly, and says so."""
    out = []
    for r in outcome.rows:
        if r.factor != 1 and r.expected != TARGET_ENTRIES:
            continue  # an extrapolation to another size (a --quick run): the row above says it
        if r.expected < JUDGED_FROM:
            out.append(
                f"- {r.design}: measured at {r.expected:,} entries, too few to judge against "
                "the 7 M targets (fixed costs would be scaled with the rest)"
            )
            continue
        scale = TARGET_ENTRIES / r.expected
        guess = "" if scale == 1 else f" (measured at {r.expected:,}, x{scale:g}: a linear guess)"
        memory, ready = r.memory_mib * scale, r.ready_s * scale
        limit = TARGET_CHECKPOINT_READY_S if "from the checkpoint" in r.design else TARGET_READY_S
        if r.lookup_present_us is None or r.lookup_absent_us is None:
            lookup = "not extrapolated"
        else:
            worst = max(r.lookup_present_us, r.lookup_absent_us)
            lookup = f"{worst:.2f} µs ({_ok(worst <= TARGET_LOOKUP_US)} {TARGET_LOOKUP_US:g})"
        out.append(
            f"- {r.design}{guess}: memory {memory:,.0f} MiB "
            f"({_ok(memory <= TARGET_MEMORY_MIB)} {TARGET_MEMORY_MIB}); ready {ready:.1f} s "
            f"({_ok(ready <= limit)} {limit:g}); lookup {lookup}"
        )
    return out


def _ok(within: bool) -> str:
    return "within" if within else "over"


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["_child"]:
        return child_main(args_in[1], args_in[2])
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200,000 entries, today's at 50,000")
    parser.add_argument("--entries", type=int, default=None, help="default 7,000,000")
    parser.add_argument(
        "--baseline-entries", type=int, default=None, help="today's design (default 1,000,000)"
    )
    parser.add_argument("--baseline-commit", default=BASELINE_COMMIT)
    parser.add_argument("--skip-baseline", action="store_true", help="measure the new design only")
    parser.add_argument("--lookups", type=int, default=100_000, help="per kind (present, absent)")
    parser.add_argument(
        "--checkpoint-tail",
        type=int,
        default=None,
        help="entries written between the checkpoint "
        "and the start from it (default 10,000; quick 1,000)",
    )
    parser.add_argument(
        "--lean-finished",
        action="store_true",
        help="finished entries as service/relay/publish.py writes them (no received_at, metadata)",
    )
    parser.add_argument("--history", action="store_true", help="intent, submitted, finished a job")
    parser.add_argument("--small-batches", action="store_true", help="one record a batch")
    parser.add_argument(
        "--python-encoder",
        action="store_true",
        help="encode every record with the tree's encode_entry (slow), not LedgerGen's JSON",
    )
    parser.add_argument(
        "--generate-only", action="store_true", help="fill the new design's topic and stop"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"where to write the Markdown (default: {DEFAULT_OUTPUT.relative_to(ROOT)}; "
        "with --quick or --generate-only: nowhere)",
    )
    args = parser.parse_args(args_in)
    quick = bool(args.quick)
    plan = Plan(
        entries=args.entries or (200_000 if quick else TARGET_ENTRIES),
        baseline_entries=args.baseline_entries or (50_000 if quick else 1_000_000),
        lookups=args.lookups,
        checkpoint_tail=(1_000 if quick else 10_000)
        if args.checkpoint_tail is None
        else args.checkpoint_tail,
        rich=not args.lean_finished,
        history=bool(args.history),
        small_batches=bool(args.small_batches),
        python_encoder=bool(args.python_encoder),
        baseline_commit=args.baseline_commit,
        generate_only=bool(args.generate_only),
        skip_baseline=bool(args.skip_baseline),
    )
    output: Path | None = args.output or (None if quick or plan.generate_only else DEFAULT_OUTPUT)
    command = "uv run python bench/ledger_scale.py " + " ".join(args_in)
    commit = git_commit()
    change = tree_change(plan.baseline_commit)
    load_at_start = os.getloadavg()[0]
    with kafka_broker() as bootstrap, tempfile.TemporaryDirectory(prefix="ledger-scale-") as work:
        outcome = run_all(plan, bootstrap, Path(work))
    load = f"{load_at_start:.1f}, {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    write_output(report(plan, outcome, RunInfo(command.strip(), commit, change, load)), output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
