"""The fal-key gate: a fal call refused for the key (401/403) waits for the key to work
again instead of failing its request.

The first refusal pauses intake (the intake asks ``refused``), turns /readyz red and logs
one error line; the call is tried again with capped backoff; the first call that is
accepted again clears it all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from service.core.backoff import Backoff
from service.errors import FalUnauthorized
from service.relay.tools import Tools

T = TypeVar("T")


class KeyGate:
    def __init__(self, tools: Tools, on_change: Callable[[], None]) -> None:
        self._clock = tools.clock
        self._metrics = tools.metrics
        self._log = tools.log
        self._on_change = on_change
        self.refused = False

    async def call(self, call: Callable[[], Awaitable[T]], log: Any) -> T:
        backoff = Backoff(2.0, 30.0)
        while True:
            try:
                result = await call()
            except FalUnauthorized as exc:
                if not self.refused:
                    self.refused = True
                    self._metrics.fal_key_refused.set(1)
                    self._log.error(
                        "fal_key_refused",
                        error=exc.message,
                        hint="check FAL_KEY; intake is paused until fal accepts it again",
                    )
                    self._on_change()
                await self._clock.sleep(backoff.next())
                continue
            if self.refused:
                self.refused = False
                self._metrics.fal_key_refused.set(0)
                self._log.info("fal_key_accepted")
                self._on_change()
            log.debug("fal_call_ok")
            return result
