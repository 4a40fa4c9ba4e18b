"""What a service may touch: the one resolver for every path or URI that arrives from outside.

Every path, URI, job id and run name that comes in a gRPC request or a bus message goes through
an :class:`AccessPolicy` before the service opens, lists, writes, fetches or runs anything:

- a local path (plain, ``file://``, ``local://``) is canonicalised by its real path (``..`` and
  symlinks resolved) and must lie under a configured root;
- an object-store URI (``s3://bucket/key``, or any scheme a root names) must have no ``.`` or
  ``..`` segment and lie under a root of the same scheme, bucket and prefix;
- ``http(s)://`` may only be read, and only from an address the downloader's address guard allows
  (loopback, private, link-local and metadata addresses are refused unless allow-listed);
- ``pipe:`` (a shell command, as webdataset reads it) and fsspec protocol chains (``a::b``) are
  refused unless the operator allows them; any other scheme is refused;
- job ids and run names are identifiers, never paths.

Reading is allowed under the read roots and the write roots (what a service may write it may
read back); writing only under the write roots. Refusals are :class:`AccessDenied` (the caller
asked for something the settings forbid; it names the setting to change) or
:class:`InvalidReference` (the value is malformed). Neither ever quotes a file's content.

The roots apply to what arrives in requests and messages; a local command line (``winnow run``,
``winnow train``) runs as its user with the user's own paths and does not use this module.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from winnow.shared.address_guard import AddressPolicy

#: Settings (environment variables) a refusal points the operator at.
READ_ROOTS_SETTING = "WINNOW_READ_ROOTS"
WRITE_ROOTS_SETTING = "WINNOW_WRITE_ROOTS"
ALLOW_PIPE_SETTING = "WINNOW_ALLOW_PIPE_SOURCES"
ALLOW_CHAINS_SETTING = "WINNOW_ALLOW_PROTOCOL_CHAINS"
ALLOW_NETWORKS_SETTING = "WINNOW_ALLOW_NETWORKS"

LOCAL_SCHEMES = ("", "file", "local")
URL_SCHEMES = ("http", "https")
#: fsspec wrappers that only cache what they wrap; with chains allowed, the wrapped URI is checked.
CACHING_WRAPPERS = ("simplecache", "filecache", "blockcache")
IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
_GLOB_CHARS = re.compile(r"[*?\[{]")


class AccessDenied(PermissionError):
    """The settings do not let a service touch this path or URI; ``setting`` says which to change."""

    def __init__(self, message: str, setting: str) -> None:
        super().__init__(f"{message} (setting: {setting})")
        self.setting = setting


class InvalidReference(ValueError):
    """A path, URI or identifier in a request or message is malformed."""


def check_identifier(value: str, what: str) -> str:
    """``value`` when it is a plain identifier (letters, digits, ``._-``, at most 128, no path)."""
    if not IDENTIFIER.fullmatch(value or ""):
        raise InvalidReference(f"{what} must be an identifier of letters, digits, '.', '_' and '-' "
                               f"(at most 128, starting with a letter or digit), got {value[:80]!r}")
    return value


@dataclass(frozen=True)
class Location:
    """A canonical place: ``scheme`` ('' for the local disk), and the real path or ``bucket/key``."""

    scheme: str
    path: str

    def uri(self) -> str:
        return self.path if not self.scheme else f"{self.scheme}://{self.path}"

    def within(self, root: Location) -> bool:
        if self.scheme != root.scheme:
            return False
        if not root.path or root.path == "/":
            return True
        base = root.path.rstrip("/")
        return self.path == base or self.path.startswith(base + "/")


def _split_scheme(uri: str) -> tuple[str, str]:
    match = _SCHEME.match(uri)
    if match is None:
        return "", uri
    scheme = match.group(1).lower()
    rest = uri[match.end():]
    return scheme, rest[2:] if rest.startswith("//") else rest


def _object_location(scheme: str, rest: str, original: str) -> Location:
    parts = [part for part in rest.split("/") if part]
    if not parts:
        raise InvalidReference(f"{original!r} names no bucket")
    if any(part in (".", "..") for part in parts):
        raise InvalidReference(f"{original!r} has a '.' or '..' segment; give the object's own key")
    return Location(scheme, "/".join(parts))


def _local_location(rest: str, original: str) -> Location:
    if "\x00" in rest:
        raise InvalidReference(f"{original!r} holds a NUL byte")
    if _GLOB_CHARS.search(rest) and ".." in rest.split("/"):
        raise InvalidReference(f"{original!r} has '..' in a pattern; give the folder itself")
    return Location("", os.path.realpath(rest))


@dataclass(frozen=True)
class AccessPolicy:
    """Read and write roots plus the exceptions an operator switched on; see the module docstring."""

    read_roots: tuple[str, ...]
    write_roots: tuple[str, ...]
    allow_pipe_sources: bool = False
    allow_protocol_chains: bool = False
    allow_networks: tuple[str, ...] = ()
    resolve_host: Callable[[str], Iterable[str]] | None = None  # tests may pin DNS; default getaddrinfo
    _read: tuple[Location, ...] = field(init=False, repr=False, compare=False)
    _write: tuple[Location, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        write = tuple(self._root(uri) for uri in self.write_roots if uri)
        read = tuple(self._root(uri) for uri in self.read_roots if uri) + write
        object.__setattr__(self, "_write", write)
        object.__setattr__(self, "_read", read)

    @staticmethod
    def _root(uri: str) -> Location:
        scheme, rest = _split_scheme(uri)
        if scheme in LOCAL_SCHEMES:
            return Location("", os.path.realpath(os.path.expanduser(rest)))
        if scheme in URL_SCHEMES or "::" in uri:
            raise ValueError(f"a root must be a folder or an object-store prefix, got {uri!r}")
        return Location(scheme, "/".join(part for part in rest.split("/") if part))

    @property
    def _schemes(self) -> set[str]:
        return {root.scheme for root in self._read}

    # -- the checks ----------------------------------------------------------------------------

    def read(self, uri: str, what: str) -> str:
        """The canonical form of ``uri`` when this service may read it; raises otherwise."""
        return self._resolve(uri, what, write=False)

    def write(self, uri: str, what: str) -> str:
        """The canonical form of ``uri`` when this service may write there; raises otherwise."""
        return self._resolve(uri, what, write=True)

    def _resolve(self, uri: str, what: str, *, write: bool) -> str:
        if not uri:
            raise InvalidReference(f"{what} is empty")
        if "pipe:" in uri:  # anywhere: webdataset expands braces first, so '{pipe:...,x}' would run too
            if self.allow_pipe_sources and not write:
                return uri
            raise AccessDenied(f"{what}: 'pipe:' sources run a shell command and are refused", ALLOW_PIPE_SETTING)
        if "::" in uri:
            return self._chain(uri, what, write=write)
        scheme, rest = _split_scheme(uri)
        if scheme in URL_SCHEMES:
            if write:
                raise AccessDenied(f"{what}: a service never writes to {scheme}:// URLs", WRITE_ROOTS_SETTING)
            self.check_url(uri, what)
            return uri
        if scheme in LOCAL_SCHEMES:
            location = _local_location(rest, uri)
        elif scheme in self._schemes:
            location = _object_location(scheme, rest, uri)
        else:
            raise AccessDenied(f"{what}: the scheme {scheme!r} is not one this service reads or writes",
                               WRITE_ROOTS_SETTING if write else READ_ROOTS_SETTING)
        roots, setting = (self._write, WRITE_ROOTS_SETTING) if write else (self._read, READ_ROOTS_SETTING)
        if not any(location.within(root) for root in roots):
            raise AccessDenied(f"{what}: {uri[:200]!r} is outside the roots this service may "
                               f"{'write' if write else 'read'}", setting)
        if not location.scheme and _GLOB_CHARS.search(location.path):
            self._check_pattern(location.path, roots, uri, what, setting)
        return location.uri()

    def _check_pattern(self, pattern: str, roots: tuple[Location, ...], uri: str, what: str, setting: str) -> None:
        """A pattern (glob or webdataset braces) may only be in the file name, and its folder may hold no
        link that leads out: the real path of the pattern says nothing about what it will match."""
        folder = os.path.dirname(pattern)
        if _GLOB_CHARS.search(folder):
            raise InvalidReference(f"{what}: {uri[:200]!r} has a pattern in a folder name; only the file name "
                                   "may be one")
        if not os.path.isdir(folder):
            return
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_symlink():
                    real = Location("", os.path.realpath(entry.path))
                    if not any(real.within(root) for root in roots):
                        raise AccessDenied(f"{what}: the folder of {uri[:200]!r} holds a link that leads outside "
                                           "the roots", setting)

    def _chain(self, uri: str, what: str, *, write: bool) -> str:
        if not self.allow_protocol_chains:
            raise AccessDenied(f"{what}: fsspec protocol chains ('::') are refused", ALLOW_CHAINS_SETTING)
        *wrappers, target = uri.split("::")
        for wrapper in wrappers:
            if wrapper.split("://", 1)[0] not in CACHING_WRAPPERS:
                raise AccessDenied(f"{what}: only caching wrappers {CACHING_WRAPPERS} may be chained",
                                   ALLOW_CHAINS_SETTING)
        self._resolve(target, what, write=write)
        return uri

    def check_url(self, url: str, what: str) -> None:
        """Refuse an http(s) URL whose host is, or resolves to, an address the guard refuses."""
        parts = urlsplit(url)
        host = parts.hostname
        if not host:
            raise InvalidReference(f"{what}: {url[:200]!r} has no host")
        guard = AddressPolicy.from_strings(self.allow_networks)
        try:
            addresses = [str(ipaddress.ip_address(host))]
        except ValueError:
            try:
                addresses = list(self.resolve_host(host)) if self.resolve_host else sorted(
                    {info[4][0] for info in socket.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)})
            except OSError as exc:
                raise InvalidReference(f"{what}: cannot resolve the host of {url[:200]!r}: {exc}") from exc
        for address in addresses:
            reason = guard.refusal(address)
            if reason is not None:
                raise AccessDenied(f"{what}: {url[:200]!r} is refused: {reason}", ALLOW_NETWORKS_SETTING)

    def check_urls(self, urls: Iterable[str], what: str) -> None:
        """``check_url`` once per distinct scheme and host (a crawl lists thousands of one host's files)."""
        seen: set[tuple[str, str]] = set()
        for url in urls:
            parts = urlsplit(url)
            key = (parts.scheme, parts.netloc)
            if key not in seen:
                seen.add(key)
                self.check_url(url, what)

    def read_all(self, uris: Iterable[str], what: str) -> list[str]:
        """``read`` for many URIs, resolving each URL host once."""
        uris = list(uris)
        self.check_urls([u for u in uris if _split_scheme(u)[0] in URL_SCHEMES and "::" not in u], what)
        return [uri if _split_scheme(uri)[0] in URL_SCHEMES and "::" not in uri else self.read(uri, what)
                for uri in uris]

    def admit(self, ref, *, uri_access: str = "read", writes_job_root: bool = True) -> None:
        """Check a bus message's ShardRef before a stage touches it: its ids, its ``uri`` and ``job_root``."""
        check_identifier(ref.job_id, "job_id")
        if uri_access == "write":
            self.write(ref.uri, "uri")
        elif ref.uri:
            self.read(ref.uri, "uri")
        if writes_job_root and ref.job_root:
            self.write(ref.job_root, "job_root")

