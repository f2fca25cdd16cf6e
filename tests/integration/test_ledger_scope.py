"""Where ledger entries are written, and RELAY_LEDGER_SCOPE=owned, on real Kafka with relays as
real processes and the fal emulator.

Every ledger entry goes to ledger partition = its source record's partition % the ledger's
partitions. The partition counts are chosen so that the modulo matters: 3 request partitions
on a ledger of 2 (request partitions 0 and 2 share ledger partition 0), and for the scale-out
4 request partitions on a ledger of 3 (0 and 3 share ledger partition 0), so that whichever
partitions the group's round-robin assignment gives the joining replica, its backfill reads
entries of a partition it does not own, and must keep none of their ends.

With scope "owned" a replica keeps the finished entries of the request partitions it owns
only; one that takes partitions over re-reads their ledger partitions (``ledger_backfilled``).
A second replica joining the group must still skip every re-published finished request,
whichever replica owns its partition: no second fal job, no second result event.

The emulator counts every submission; each test request's prompt names its request_id, so
"none twice" is checked per request, and every result event on the results topic is counted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from fal_emulator.config import EmulatorConfig
from fal_emulator.server import FalEmulator
from tests.integration.conftest import (
    Topics,
    consume,
    consume_all,
    emulator_running,
    events,
    produce,
    request,
)
from tests.integration.processes import RelayProcess, relay_env

pytestmark = pytest.mark.kafka

REQUEST_PARTITIONS = 3  # what ``topics`` gives the requests topic
LEDGER_PARTITIONS = 2  # RELAY_JOBS_TOPIC_PARTITIONS here (relay_env's 3 would make % a no-op)
# The scale-out test: a requests topic of its own with 4 partitions, and relay_env's ledger of 3.
# (aiokafka's round-robin assignor splits 3 request partitions {0, 2} / {1}, exactly along
# "% 2": no backfill would ever meet a partition it does not own.)
SCALE_REQUEST_PARTITIONS = 4
SCALE_LEDGER_PARTITIONS = 3
FINISHED = re.compile(r'^lynx_relay_ledger_entries\{state="finished"\} (\S+)$', re.M)


def video(rid: str) -> bytes:
    """A request whose prompt names its request_id."""
    return request(rid, f"video for {rid}")


def submissions_by_request(fal: FalEmulator) -> Counter[str]:
    """How often fal was asked for each request (by the request_id in its prompt)."""
    jobs: list[dict[str, Any]] = fal.stats(include_jobs=True)["jobs"]
    return Counter(job["input"]["prompt"].removeprefix("video for ") for job in jobs)


def partition_of(rid: str, partitions: int) -> int:
    """The requests-topic partition Kafka's default partitioner gives the key ``rid``."""
    parts = list(range(partitions))
    partition: int = DefaultPartitioner()(rid.encode(), parts, parts)
    return partition


def ids_covering(prefix: str, per_partition: int, partitions: int) -> dict[str, int]:
    """request_ids (keys) with ``per_partition`` of them in every request partition."""
    chosen: dict[str, int] = {}
    counts = Counter[int]()
    i = 0
    while min(counts[p] for p in range(partitions)) < per_partition:
        rid = f"{prefix}-{i}"
        p = partition_of(rid, partitions)
        if counts[p] < per_partition:
            chosen[rid] = p
            counts[p] += 1
        i += 1
    return chosen


async def produce_keyed(bootstrap: str, topic: str, rids: Iterable[str]) -> dict[str, int]:
    """Each request keyed by its request_id, placed by the default partitioner (how producers
    are told to publish); the partition each landed in."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    landed: dict[str, int] = {}
    try:
        for rid in rids:
            meta = await producer.send_and_wait(topic, video(rid), key=rid.encode())
            landed[rid] = meta.partition
    finally:
        await producer.stop()
    return landed


def parts_of(names: list[str]) -> set[int]:
    """Partition numbers of ``partitions_taken_over``'s "topic/partition" names."""
    return {int(name.rsplit("/", 1)[1]) for name in names}


def last(relay: RelayProcess, event: str) -> dict[str, Any]:
    lines = [line for line in relay.lines if line.get("event") == event]
    assert lines, f"{relay.name} never logged {event}"
    return lines[-1]


def one_line(relay: RelayProcess, event: str) -> dict[str, Any]:
    lines = [line for line in relay.lines if line.get("event") == event]
    assert len(lines) == 1, f"{relay.name} logged {event} {len(lines)} times"
    return lines[0]


async def finished_held(relay: RelayProcess, http: httpx.AsyncClient) -> int:
    """The relay's ``lynx_relay_ledger_entries{state="finished"}`` gauge (its view, now)."""
    (started,) = [line for line in relay.lines if line.get("event") == "relay_started"]
    text = (await http.get(f"http://127.0.0.1:{started['http_port']}/metrics")).text
    match = FINISHED.search(text)
    assert match is not None, "no finished ledger entries gauge"
    return int(float(match.group(1)))


async def with_requests_topic(topics: Topics, partitions: int) -> Topics:
    """``topics`` with a requests topic of its own of ``partitions`` partitions."""
    requests = f"{topics.requests}-p{partitions}"
    admin = AIOKafkaAdminClient(bootstrap_servers=topics.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(requests, num_partitions=partitions, replication_factor=1)]
        )
    finally:
        await admin.close()
    return dataclasses.replace(topics, requests=requests, partitions=partitions)


async def ledger_partition_count(topics: Topics) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=topics.bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topics.jobs])
        return len(described["partitions"])
    finally:
        await admin.close()


async def test_every_ledger_entry_sits_in_its_source_partition_modulo_the_ledgers(
    topics: Topics,
) -> None:
    """Default scope: intents, submits, ends and a rejection, from all three request
    partitions, each in ledger partition = source partition % 2."""
    rids = [f"pl-{i}" for i in range(6)]
    values = [video(rid) for rid in rids]
    values.insert(2, b"not json")  # produce() puts the i-th value in partition i % 3: here 2
    async with emulator_running(EmulatorConfig(run_time=(0.1, 0.3), seed=31)) as fal:
        env = relay_env(
            topics,
            fal.base_url,
            RELAY_JOBS_TOPIC_PARTITIONS=str(LEDGER_PARTITIONS),
            RELAY_MAX_IN_FLIGHT="10",
        )
        relay = await RelayProcess(env, "relay").start()
        try:
            await produce(topics.bootstrap, topics.requests, values)
            got = events(await consume(topics.bootstrap, topics.results, len(rids), within=60))
            await consume(topics.bootstrap, topics.dead_letters, 1, within=30)
            assert await relay.terminate(within=15) == 0
        finally:
            await relay.close()
        per_request = submissions_by_request(fal)

    assert sorted(got) == sorted(rids)
    assert {e["status"] for e in got.values()} == {"succeeded"}
    assert per_request == Counter(dict.fromkeys(rids, 1))
    assert await ledger_partition_count(topics) == LEDGER_PARTITIONS

    ledger = await consume_all(topics.bootstrap, topics.jobs, partitions=LEDGER_PARTITIONS)
    assert ledger
    misplaced = []
    seen: set[tuple[int, int, str]] = set()  # (source partition, ledger partition, state)
    for record in ledger:
        body = json.loads(record.value)
        source = body["source"]
        assert source["topic"] == topics.requests
        seen.add((source["partition"], record.partition, body["state"]))
        if record.partition != source["partition"] % LEDGER_PARTITIONS:
            misplaced.append((record.key, body["state"], source, record.partition))
    assert misplaced == []
    # Entries of every request partition, both ledger partitions used, 0 and 2 sharing one.
    assert {s for s, _l, _st in seen} == set(range(REQUEST_PARTITIONS))
    assert {(s, lp) for s, lp, _st in seen} == {(0, 0), (1, 1), (2, 0)}
    finished = {r.key.decode() for r in ledger if json.loads(r.value)["state"] == "finished"}
    assert finished == set(rids)
    rejected = [json.loads(r.value) for r in ledger if json.loads(r.value)["state"] == "rejected"]
    assert len(rejected) == 1
    assert rejected[0]["source"]["partition"] == 2


async def test_a_replica_joining_in_owned_scope_backfills_and_still_skips_every_duplicate(
    topics: Topics,
) -> None:
    """Relay A alone (scope owned) finishes requests in every partition; relay B joins and
    takes some partitions over, reading their ledger partitions again. Every finished request
    published again is skipped by whichever replica owns it (no fal job, no result event);
    new requests are processed once each. Each replica holds the ends of its partitions only."""
    topics = await with_requests_topic(topics, SCALE_REQUEST_PARTITIONS)
    all_parts = set(range(SCALE_REQUEST_PARTITIONS))
    first = ids_covering("own", per_partition=2, partitions=SCALE_REQUEST_PARTITIONS)
    fresh = ids_covering("own-new", per_partition=1, partitions=SCALE_REQUEST_PARTITIONS)
    everyone = [*first, *fresh]
    async with (
        emulator_running(EmulatorConfig(run_time=(0.1, 0.3), seed=32)) as fal,
        httpx.AsyncClient() as http,
    ):
        env = relay_env(
            topics,
            fal.base_url,
            RELAY_LEDGER_SCOPE="owned",
            RELAY_JOBS_TOPIC_PARTITIONS=str(SCALE_LEDGER_PARTITIONS),
            RELAY_MAX_IN_FLIGHT="20",
        )
        a = await RelayProcess(env, "a").start()
        b = RelayProcess(env, "b")
        try:
            await a.wait_for("partitions_taken_over", within=30)
            assert parts_of(last(a, "partitions_taken_over")["partitions"]) == all_parts
            assert await produce_keyed(topics.bootstrap, topics.requests, first) == first
            got_first = events(
                await consume(topics.bootstrap, topics.results, len(first), within=60)
            )
            # Logged once the finished entry is in the relay's view (the gauges read it).
            await a.wait_for("result_published", times=len(first), within=30)
            a_alone = await finished_held(a, http)
            ledger = await consume_all(
                topics.bootstrap, topics.jobs, partitions=SCALE_LEDGER_PARTITIONS
            )

            await b.start()
            b_ready = one_line(b, "ledger_ready")
            # The group rebalances (eager): A hands everything back and takes its share again.
            await b.wait_for("partitions_taken_over", within=30)
            await a.wait_for("partitions_taken_over", times=2, within=30)
            a_parts = parts_of(last(a, "partitions_taken_over")["partitions"])
            b_parts = parts_of(last(b, "partitions_taken_over")["partitions"])
            b_backfill = one_line(b, "ledger_backfilled")
            a_after = await finished_held(a, http)
            b_after = await finished_held(b, http)

            # Every finished request again (same key, same partition), then new ones.
            again = await produce_keyed(topics.bootstrap, topics.requests, first)
            assert again == first
            assert await produce_keyed(topics.bootstrap, topics.requests, fresh) == fresh
            for rid, partition in first.items():
                owner = b if partition in b_parts else a
                await owner.wait_for("duplicate_request_skipped", request_id=rid, within=30)
            got = events(await consume(topics.bootstrap, topics.results, len(everyone), 60))
            for rid, partition in fresh.items():
                owner = b if partition in b_parts else a
                await owner.wait_for("result_published", request_id=rid, within=30)
            a_end = await finished_held(a, http)
            b_end = await finished_held(b, http)
            codes = await asyncio.gather(a.terminate(within=20), b.terminate(within=20))
            assert list(codes) == [0, 0]
        finally:
            await asyncio.gather(a.close(), b.close())
        per_request = submissions_by_request(fal)

    assert sorted(got_first) == sorted(first)
    # The rebalance split the partitions between the two.
    assert a_parts
    assert b_parts
    assert a_parts | b_parts == all_parts
    assert not a_parts & b_parts

    # B started holding no end (nothing is owned before the first assignment) though it read
    # the whole ledger; then read again the ledger partitions of what it took over, only them.
    assert b_ready["entries"] == 0
    assert b_ready["records_read"] == len(ledger)
    b_ledger_parts = sorted({p % SCALE_LEDGER_PARTITIONS for p in b_parts})
    assert b_backfill["ledger_partitions"] == b_ledger_parts
    assert b_backfill["records_read"] == sum(1 for r in ledger if r.partition in b_ledger_parts)
    assert b_backfill["records_read"] > 0
    # Only part of the ledger, though what it read holds another partition's entries too.
    assert len(b_ledger_parts) < SCALE_LEDGER_PARTITIONS
    assert {p for p in all_parts - b_parts if p % SCALE_LEDGER_PARTITIONS in b_ledger_parts}
    # A read its ledger partitions once, at its first assignment (an empty ledger then); the
    # rebalance revoked everything and gave A back part of it: what it kept is not read again,
    # what it lost is forgotten (the gauges below).
    assert [
        line["records_read"] for line in a.lines if line.get("event") == "ledger_backfilled"
    ] == [0]

    # Each holds the ends of its own partitions, not the other's (ledger partition 0 has both
    # request partitions 0 and 3: the backfill kept only the owned one's).
    def finished_in(parts: set[int], rids: dict[str, int]) -> int:
        return sum(1 for p in rids.values() if p in parts)

    assert a_alone == len(first)
    assert b_after == finished_in(b_parts, first)
    assert a_after == finished_in(a_parts, first)
    assert b_after < len(first)
    assert a_end == finished_in(a_parts, first) + finished_in(a_parts, fresh)
    assert b_end == finished_in(b_parts, first) + finished_in(b_parts, fresh)

    # Every duplicate skipped once, by its partition's owner; the other never saw it.
    for rid, partition in first.items():
        owner, other = (b, a) if partition in b_parts else (a, b)
        assert owner.count("duplicate_request_skipped", request_id=rid) == 1
        assert other.count("duplicate_request_skipped", request_id=rid) == 0
    assert a.count("duplicate_request_skipped") + b.count("duplicate_request_skipped") == len(first)
    # One fal job and one result event per request, all succeeded; the duplicates added none.
    assert per_request == Counter(dict.fromkeys(everyone, 1))
    assert sorted(got) == sorted(everyone)
    results = await consume_all(topics.bootstrap, topics.results)
    assert len(results) == len(everyone)
    assert sorted(events(results)) == sorted(everyone)
    assert {json.loads(r.value)["status"] for r in results} == {"succeeded"}
