"""HTTP calls to addresses that users configure: model endpoints and tool servers.

A platform user writes these URLs into artifacts, and a worker calls them from inside the
deployment, where cloud metadata (169.254.169.254), the database, Redis and Baton itself answer.
So such a call may reach a public address, or one in OUTBOUND_ALLOWED_NETWORKS, and nothing else.
The address is checked where the socket connects, after the name is resolved, and the socket
connects to the address that was checked: neither a name that resolves inwards nor one whose
answer changes between check and connect gets through. Redirects are not followed. A call sent
through the proxy of HTTP(S)_PROXY is checked before it leaves: the proxy connects, by the
operator's rules, to a name that does not resolve here.
"""

import ipaddress
import socket
from functools import lru_cache
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class OutboundRefused(Exception):
    """The destination is not one that model and tool calls may reach; nothing was sent."""


def post(url: str, **kwargs) -> requests.Response:
    return _request("POST", url, **kwargs)


def get(url: str, **kwargs) -> requests.Response:
    return _request("GET", url, **kwargs)


def permitted(address: IPAddress) -> bool:
    """A public address, or one the operator allowed (loopback, link-local and private ones
    are refused unless their network is listed)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if any(address in network for network in _allowed_networks(tuple(settings.OUTBOUND_ALLOWED_NETWORKS))):
        return True
    return address.is_global and not address.is_multicast


def _request(method: str, url: str, **kwargs) -> requests.Response:
    if requests.utils.get_environ_proxies(url):
        _check_before_the_proxy(url)
    with requests.Session() as session:
        session.mount("http://", _CheckedAdapter())
        session.mount("https://", _CheckedAdapter())
        return session.request(method, url, allow_redirects=False, **kwargs)


def _check_before_the_proxy(url: str) -> None:
    """The proxy connects, not this process: the name is checked here. One that does not
    resolve here is left to the proxy's own rules (locked-down networks resolve only there)."""
    parts = urlsplit(url)
    try:
        _addresses(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    except socket.gaierror:
        return


@lru_cache(maxsize=8)
def _allowed_networks(
    networks: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(network, strict=False) for network in networks)


def _addresses(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, refused whole if any of them is not permitted."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(info[4][0] for info in found))
    for address in addresses:
        if not permitted(ipaddress.ip_address(address.split("%")[0])):
            where = host if host == address else f"{host} ({address})"
            raise OutboundRefused(
                f"{where} is not an address model and tool calls may reach: they reach public "
                "addresses and OUTBOUND_ALLOWED_NETWORKS only"
            )
    return addresses


class _CheckedConnectionMixin:
    def _new_conn(self) -> socket.socket:
        try:
            addresses = _addresses(self.host, self.port)
        except socket.gaierror as error:
            raise NameResolutionError(self.host, self, error) from error
        name = self._dns_host
        try:
            for address in addresses[:-1]:
                self._dns_host = address
                try:
                    return super()._new_conn()
                except ConnectTimeoutError:  # refused or timed out: the next address, as urllib3 does
                    continue
            self._dns_host = addresses[-1]
            return super()._new_conn()
        finally:
            self._dns_host = name  # TLS checks the certificate against the name, not the address


class _CheckedHTTPConnection(_CheckedConnectionMixin, HTTPConnection):
    pass


class _CheckedHTTPSConnection(_CheckedConnectionMixin, HTTPSConnection):
    pass


class _CheckedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _CheckedHTTPConnection


class _CheckedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _CheckedHTTPSConnection


_CHECKED_POOLS = {"http": _CheckedHTTPConnectionPool, "https": _CheckedHTTPSConnectionPool}


class _CheckedAdapter(HTTPAdapter):
    """requests' adapter whose direct connections go to permitted addresses only."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _CHECKED_POOLS
