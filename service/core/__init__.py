"""The pure core: job lifecycle, offset tracking, intake accounting and polling cadence.

Nothing here awaits, reads a clock or draws a random number: time comes in as ``now`` and the
shell (``service.relay``) applies the decisions. Everything is tested without Kafka or HTTP.
"""
