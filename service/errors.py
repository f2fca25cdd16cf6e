"""The one error tree of lynx-relay. Vendor errors (httpx, aiokafka) are translated into it
at the seam that meets them, so the relay decides on ``code`` and ``retryable`` only.

    RelayError                      code            retryable
    +-- FalError
    |   +-- FalUnauthorized         unauthorized     no   (401/403: the key is wrong)
    |   +-- FalRejected             fal_rejected     no   (4xx: fal refused the input)
    |   +-- FalJobFailed            fal_failed       per fal (the job ran and failed)
    |   +-- FalUnavailable          fal_unavailable  yes  (transport errors, 5xx, 429)
    |   |   +-- FalSubmitUnknown    fal_unavailable  yes  (a submit sent, its answer lost: fal
    |   |                                                  may have created the job)
    |   +-- FalTimeout              timeout          yes  (our deadline or fal's)
    |   +-- FalResultExpired        result_expired   no   (fal no longer knows the job)
    |   +-- FalHistoryRefused       fal_rejected     no   (fal's request history cannot answer:
    |       |                                              4xx other than 401/403/408/429)
    |       +-- FalHistoryIncomplete fal_rejected    no   (more pages than the caller allowed)
    +-- StorageError                storage_failed   per cause (the output store refused or failed;
    |                                                      5xx, timeouts and resets are retryable)
    +-- SettingsError                                     (bad configuration; exit code 2)

``code`` is the error code of the contract's result event; ``details`` is fal's own detail
(a list of field errors or a string) when there is one. Messages never contain secrets.
"""

from __future__ import annotations

from typing import Any, ClassVar

from service.messages import ErrorCode


class RelayError(Exception):
    code: ClassVar[ErrorCode] = "internal_error"
    default_retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, details: Any = None, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.retryable = self.default_retryable if retryable is None else retryable


class FalError(RelayError):
    """Anything that went wrong talking to fal or inside fal."""

    def __init__(
        self,
        message: str,
        *,
        details: Any = None,
        retryable: bool | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
        billable_units: float | None = None,
    ) -> None:
        super().__init__(message, details=details, retryable=retryable)
        self.status_code = status_code
        self.retry_after = retry_after  # seconds fal asked us to wait (Retry-After)
        # What fal bills for the job that failed (a 422 may be billed; a 5xx never is).
        self.billable_units = billable_units


class FalUnauthorized(FalError):
    code = "unauthorized"


class FalRejected(FalError):
    code = "fal_rejected"


class FalJobFailed(FalError):
    code = "fal_failed"


class FalUnavailable(FalError):
    code = "fal_unavailable"
    default_retryable = True


class FalSubmitUnknown(FalUnavailable):
    """A submit was sent and its answer lost (a reset or timeout after sending, a gateway 5xx,
    an answer we cannot read): fal may or may not have created the job. Never sent again as
    is; fal's request history settles it (``service.relay.reconcile``)."""


class FalTimeout(FalError):
    code = "timeout"
    default_retryable = True


class FalResultExpired(FalError):
    code = "result_expired"


class FalHistoryRefused(FalError):
    """fal's request history will not answer this question (an unknown endpoint or route, a
    query it refuses): the caller goes on without it, as before there was one. Its code is the
    contract's word for "fal refused", should it ever reach a result event."""

    code = "fal_rejected"


class FalHistoryIncomplete(FalHistoryRefused):
    """The window holds more requests than the caller would page through: the answer would be
    partial, and a partial answer cannot tell that a request is absent."""


class SettingsError(RelayError):
    """A setting is missing or has a bad value; the message names the variable."""


class StorageError(RelayError):
    """Copying a video to the output store failed (RELAY_OUTPUT_URL): the store refused
    (credentials, bucket) or failed (5xx, a reset), or the copy did not verify."""

    code = "storage_failed"
    default_retryable = True
