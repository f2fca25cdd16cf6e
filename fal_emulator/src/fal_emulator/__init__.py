"""The fal queue emulator: a real HTTP server that speaks fal's queue protocol for Lynx.

fal cannot be reached from tests or local runs, so this package stands in for
``https://queue.fal.run``: submit, status (polled or streamed), result and cancel, with simulated
queueing, run times, failures, input validation, result retention and billing (the
``X-Fal-Billable-Units`` header); and for the request history and the pricing of fal's Platform
API, ``https://api.fal.ai/v1``. It is a development tool
of its own (the ``dev`` dependency group): it imports nothing from the relay's ``service``
package, and the relay's wheel and image carry none of it.

- ``config``: ``EmulatorConfig`` and its command-line options.
- ``faults``: injected faults (``Faults``, ``FaultKind``) and their seeded draw.
- ``lynx``: fal's input schema for Lynx (``LynxInput``), the emulator's own copy.
- ``jobs``: the pure simulation (plans, lifecycle table, scheduler, what each job is billed);
  takes ``now``, owns no clock.
- ``wire``: paths, auth and every response body, as pure functions of a job at a time.
- ``webhooks``: signed webhook delivery (``?fal_webhook=``): body, Ed25519 keys and JWKS, retries.
- ``platform_api``: fal's Platform API over the jobs (request history by endpoint, payload
  deletion) and the unit price (pricing), pure like ``wire``; served under
  ``FalEmulator.api_url`` (``{base_url}/v1``).
- ``server``: ``FalEmulator`` (aiohttp; ``reconfigure`` and ``POST /_emulator/config`` change the
  key, the faults, the webhook drop rate, the history mode and the unit price while it runs; the
  bill is in ``stats()``) and ``serve`` for ``fal-emulator serve``.
- ``cli`` (``fal-emulator serve | demo``, also ``python -m fal_emulator``), ``logs``, ``demo``.
"""

from fal_emulator.config import EmulatorConfig, add_arguments, config_from_arguments
from fal_emulator.faults import EndpointFaults, FaultKind, Faults
from fal_emulator.server import FalEmulator, serve

__all__ = [
    "EmulatorConfig",
    "EndpointFaults",
    "FalEmulator",
    "FaultKind",
    "Faults",
    "add_arguments",
    "config_from_arguments",
    "serve",
]
