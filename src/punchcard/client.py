"""A Python client for the Punchcard API.

Each method is one logical operation: it makes one Idempotency-Key and reuses it on
every retry, so retrying can never apply an operation twice. Network errors, 409
(a request with the same key still running, a sandbox busy with another clock move),
429 and 5xx are retried with
exponential backoff and jitter, waiting at least what a `Retry-After` asks (seconds or
an HTTP date, up to 60 s; anything else is ignored); other problems raise the domain error of their
`code` (`punchcard.errors`), or `ApiError`.

    client = Client("http://127.0.0.1:8000", api_key)
    token = client.place_order({...})["consistency_token"]
    client.balance("alice", consistency_token=token, wait_ms=2000)
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from punchcard.errors import BY_CODE
from punchcard.retry_after import retry_after_s

RETRY_STATUSES = {409, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER_S = 60.0  # the longest the server asks (an inquiry limit's minute)


def _p(value: object) -> str:
    """One path segment: an id is never read as a path or a query."""
    return quote(str(value), safe="")


class ApiError(Exception):
    """A problem response that is not a domain error (auth, idempotency misuse, ...)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body.get('code')}: {body.get('detail')}")
        self.status, self.code, self.body = status, body.get("code"), body


class Client:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 30.0,
        retries: int = 5,
        backoff_s: float = 0.1,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout_s,
            transport=transport,
        )
        self.retries = retries
        self.backoff_s = backoff_s

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # The transport ------------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        headers = {}
        if method in ("POST", "PUT", "PATCH"):
            headers["Idempotency-Key"] = uuid.uuid4().hex  # one per logical operation
        for attempt in range(self.retries + 1):
            try:
                response = self.http.request(
                    method, path, json=body, params=params, headers=headers
                )
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
                self._sleep(attempt)
                continue
            if (
                response.status_code in RETRY_STATUSES
                and attempt < self.retries
                and self._retryable(response)
            ):
                self._sleep(attempt, response.headers.get("retry-after"))
                continue
            return self._answer(response)
        raise AssertionError("unreachable")

    def _retryable(self, response: httpx.Response) -> bool:
        if response.status_code != 409:
            return True
        return _problem(response).get("code") in {"idempotency_key_in_flight", "sandbox_busy"}

    def _sleep(self, attempt: int, retry_after: str | None = None) -> None:
        delay = self.backoff_s * 2**attempt * (0.5 + random.random())
        asked = retry_after_s(retry_after, datetime.now(UTC))
        if asked is not None:
            delay = max(delay, min(asked, MAX_RETRY_AFTER_S))
        time.sleep(delay)

    def _answer(self, response: httpx.Response) -> Any:
        if response.status_code < 400:
            if response.headers.get("content-type", "").startswith("application/json"):
                return response.json()
            return response.text or None
        problem = _problem(response)
        error = BY_CODE.get(str(problem.get("code")))
        if error is not None:
            raise error(str(problem.get("detail")))
        raise ApiError(response.status_code, problem)

    def wait_for(self, token: str, timeout_s: float = 10.0) -> bool:
        """Read-your-writes: wait until reads include the write that gave `token`."""
        deadline = time.monotonic() + timeout_s
        while True:
            wait_ms = int(max(0.0, min(5.0, deadline - time.monotonic())) * 1000)
            answer = self.request(
                "GET", "/v1/consistency", params={"consistency_token": token, "wait_ms": wait_ms}
            )
            if answer["consistent"] or time.monotonic() >= deadline:
                return bool(answer["consistent"])

    # Members and rewards -------------------------------------------------------------------

    def enroll(self, member: str, **profile: Any) -> Any:
        return self.request("POST", "/v1/members", {"id": member, **profile})

    def member(self, member: str, **consistency: Any) -> Any:
        return self.request("GET", f"/v1/members/{_p(member)}", params=consistency or None)

    def balance(self, member: str, **consistency: Any) -> Any:
        return self.request("GET", f"/v1/members/{_p(member)}/balance", params=consistency or None)

    def timeline(self, member: str, cursor: str | None = None, limit: int = 50) -> Any:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        return self.request("GET", f"/v1/members/{_p(member)}/timeline", params=params)

    def rewards_of(self, member: str) -> Any:
        return self.request("GET", f"/v1/members/{_p(member)}/rewards")

    def redeem(self, member: str, reward: str, alias: str | None = None) -> Any:
        return self.request(
            "POST", f"/v1/members/{_p(member)}/rewards", {"reward": reward, "alias": alias}
        )

    def transfer_points(self, member: str, to: str, points: int) -> Any:
        """Move posted points from `member` to `to` (oldest lots first, expiry kept)."""
        return self.request(
            "POST", f"/v1/members/{_p(member)}/points/transfers", {"to": to, "points": points}
        )

    def balances(
        self, members: list[str] | None = None, gift_cards: list[str] | None = None
    ) -> Any:
        """Members' points and gift cards' balances read in one snapshot (at most 100 ids)."""
        params = {"member": list(members or []), "gift_card": list(gift_cards or [])}
        return self.request("GET", "/v1/balances", params=params)

    def catalogue(self) -> Any:
        return self.request("GET", "/v1/rewards")

    # Orders ----------------------------------------------------------------------------------

    def quote(self, order: dict[str, Any]) -> Any:
        return self.request("POST", "/v1/orders/quote", order)

    def place_order(self, order: dict[str, Any]) -> Any:
        return self.request("POST", "/v1/orders", order)

    def order(self, order_id: str) -> Any:
        return self.request("GET", f"/v1/orders/{_p(order_id)}")

    def close_order(self, order_id: str) -> Any:
        return self.request("POST", f"/v1/orders/{_p(order_id)}/close")

    def edit_order(self, order_id: str, parts: dict[str, Any]) -> Any:
        return self.request("PATCH", f"/v1/orders/{_p(order_id)}", parts)

    def refund(
        self, order_id: str, lines: list[dict[str, Any]] | None = None, *, all: bool = False
    ) -> Any:
        return self.request(
            "POST", f"/v1/orders/{_p(order_id)}/refunds", {"lines": lines, "all": all}
        )

    def void_order(self, order_id: str) -> Any:
        return self.request("POST", f"/v1/orders/{_p(order_id)}/void")

    # Gift cards ------------------------------------------------------------------------------

    def issue_gift_card(self, amount: str, card_id: str | None = None) -> Any:
        return self.request("POST", "/v1/gift-cards", {"amount": amount, "id": card_id})

    def gift_card(self, card_id: str) -> Any:
        return self.request("GET", f"/v1/gift-cards/{_p(card_id)}")

    def inquire(self, number: str, pin: str) -> Any:
        return self.request("POST", "/v1/gift-cards/inquiries", {"number": number, "pin": pin})

    def reload_gift_card(self, card_id: str, amount: str) -> Any:
        return self.request("POST", f"/v1/gift-cards/{_p(card_id)}/reload", {"amount": amount})

    def redeem_gift_card(self, card_id: str, amount: str, partial: bool = False) -> Any:
        return self.request(
            "POST", f"/v1/gift-cards/{_p(card_id)}/redeem", {"amount": amount, "partial": partial}
        )

    def transfer_gift_card(self, card_id: str, to: str, amount: str) -> Any:
        """Move money from `card_id` to `to` (same currency), all or nothing."""
        return self.request(
            "POST", f"/v1/gift-cards/{_p(card_id)}/transfers", {"to": to, "amount": amount}
        )

    def authorize(
        self, card_id: str, amount: str, *, partial: bool = False, hold: str | None = None
    ) -> Any:
        body = {"amount": amount, "partial": partial, "id": hold}
        return self.request("POST", f"/v1/gift-cards/{_p(card_id)}/holds", body)

    def capture(self, hold: str, amount: str | None = None) -> Any:
        return self.request("POST", f"/v1/gift-cards/holds/{_p(hold)}/capture", {"amount": amount})

    def void_hold(self, hold: str) -> Any:
        return self.request("POST", f"/v1/gift-cards/holds/{_p(hold)}/void")

    # Programs ---------------------------------------------------------------------------------

    def upload_program(
        self, source: str, *, live_from: str | None = None, activate: bool = True
    ) -> Any:
        body = {"source": source, "live_from": live_from, "activate": activate}
        return self.request("POST", "/v1/programs/versions", body)

    def versions(self) -> Any:
        return self.request("GET", "/v1/programs/versions")

    def activate_version(self, number: int, at: str | None = None) -> Any:
        return self.request("POST", f"/v1/programs/versions/{_p(number)}/activate", {"at": at})

    def diagram(self, name: str) -> Any:
        """A lifecycle's state diagram as Mermaid text."""
        return self.request("GET", f"/v1/programs/diagrams/{_p(name)}")

    # Webhooks and inbound events -------------------------------------------------------------

    def create_endpoint(self, url: str, event_types: list[str] | None = None) -> Any:
        return self.request(
            "POST", "/v1/webhooks/endpoints", {"url": url, "event_types": event_types}
        )

    def endpoints(self) -> Any:
        return self.request("GET", "/v1/webhooks/endpoints")

    def update_endpoint(self, endpoint_id: str, **changes: Any) -> Any:
        return self.request("PATCH", f"/v1/webhooks/endpoints/{_p(endpoint_id)}", changes)

    def delete_endpoint(self, endpoint_id: str) -> Any:
        return self.request("DELETE", f"/v1/webhooks/endpoints/{_p(endpoint_id)}")

    def rotate_secret(self, endpoint_id: str) -> Any:
        return self.request("POST", f"/v1/webhooks/endpoints/{_p(endpoint_id)}/rotate-secret")

    def attempts(self, endpoint_id: str, cursor: str | None = None, limit: int = 50) -> Any:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        return self.request(
            "GET", f"/v1/webhooks/endpoints/{_p(endpoint_id)}/attempts", params=params
        )

    def dead_letters(self, endpoint_id: str) -> Any:
        return self.request("GET", f"/v1/webhooks/endpoints/{_p(endpoint_id)}/dead-letters")

    def recover(self, endpoint_id: str, since: str) -> Any:
        return self.request(
            "POST", f"/v1/webhooks/endpoints/{_p(endpoint_id)}/recover", {"since": since}
        )

    def resend(self, message_id: str) -> Any:
        return self.request("POST", f"/v1/webhooks/messages/{_p(message_id)}/resend")

    def create_source(self, mapping: str = "generic") -> Any:
        return self.request("POST", "/v1/inbound/sources", {"mapping": mapping})

    def inbound_events(self, source_id: str) -> Any:
        return self.request("GET", f"/v1/inbound/sources/{_p(source_id)}/events")

    # Sandboxes and the clock -----------------------------------------------------------------

    def create_sandbox(self, name: str, start: str, *, copy_programs: bool = True) -> Any:
        body = {"name": name, "start": start, "copy_programs": copy_programs}
        return self.request("POST", "/v1/sandboxes", body)

    def delete_sandbox(self, sandbox_id: str) -> Any:
        return self.request("DELETE", f"/v1/sandboxes/{_p(sandbox_id)}")

    def move_clock(self, to: str | None = None, advance: str | None = None) -> Any:
        return self.request("POST", "/v1/clock", {"to": to, "advance": advance})


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"code": "http_error", "detail": response.text[:200]}
    return body if isinstance(body, dict) else {"code": "http_error", "detail": str(body)[:200]}
