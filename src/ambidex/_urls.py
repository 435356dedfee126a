"""Checking the base URL of an HTTP service (the LLM server, the job service) and its host."""

from __future__ import annotations

import ipaddress

import httpx

__all__ = ["checked_http_url", "is_loopback_host"]


def checked_http_url(url: str, what: str, example: str, error: type[Exception]) -> str:
    """``url`` without a trailing ``/``, if it is an absolute http(s) URL with a host.

    Args:
        url: the URL to check.
        what: how messages name it, e.g. ``"base_url='x'"``.
        example: what to say is expected, e.g. ``"expected e.g. 'http://...'"``.
        error: the exception type to raise.

    Raises:
        error: not a URL, not http(s), no host, or a query or fragment.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise error(f"{what} is not a URL ({exc}); {example}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise error(f"{what} is not an http(s) URL with a host; {example}")
    if parsed.query or parsed.fragment:
        raise error(f"{what} must not have a query or fragment; {example}")
    return str(parsed).rstrip("/")


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
