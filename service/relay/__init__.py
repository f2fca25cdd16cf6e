"""The relay: Kafka records in, fal jobs driven, one result event out per request, offsets
committed. One module per role, each with one owner (the README's "Architecture" section
walks a record through them):

    facade.py     Relay: the wiring, run() and the calls of the composition root
    intake.py     fetch ahead, pause when the backlog is full, rewind, backpressure
    records.py    one record: the core's decision (core.intake) carried out
    backlog.py    requests waiting for a slot; the core's Scheduler picks who goes next
    runner.py     one job's life: submit or resume, watch, collect, end
    submit.py     submit to fal and make the job durable in the ledger
    watch/        one watcher per watch mode: poll, stream, webhook
    publish.py    the result event and the finished entry, then the offset
    cancels.py    cancel messages      rejects.py   invalid messages (dead letters)
    key_gate.py   waiting out a refused fal key
    writes.py     durable Kafka writes and the lost-acknowledgement rule
    ownership.py  partitions: take over, hand back
    commits.py    contiguous offsets and their commits
    context.py    one JobContext per job held    work.py  the relay's tasks

It knows the ports (``service.ports``), not aiokafka or httpx; decisions are the core's.
"""

from service.relay.config import RelayConfig
from service.relay.facade import Relay

__all__ = ["Relay", "RelayConfig"]
