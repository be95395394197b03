"""TLS for the lean transport: the system trust store, SNI and hostname checks on.

`default_ssl_context` is built once per process: ``truststore`` (the operating system's own
verifier) when it is installed, except on Linux with OpenSSL older than 3.4, where
truststore re-adds the verify paths on every handshake and OpenSSL accumulates them
(sethmlarson/truststore#212); there, and when truststore is missing, a standard library
context with the system's CA paths (what truststore would read on Linux anyway), or
``certifi``'s bundle when the system has none and certifi is installed. Certificates are
always required and the host name always checked; ALPN offers ``http/1.1`` only.

`start_tls` wraps a connected TCP stream in a ``trio.SSLStream`` (SNI = the URL's host) and
completes the handshake, so a certificate problem surfaces at connect time.
"""

from __future__ import annotations

import functools
import os
import ssl
import sys

import trio

__all__ = ["default_ssl_context", "start_tls"]


def _truststore_is_safe() -> bool:
    return not sys.platform.startswith("linux") or ssl.OPENSSL_VERSION_INFO >= (3, 4)


def _system_context() -> ssl.SSLContext:
    if _truststore_is_safe():
        try:
            import truststore
        except ImportError:
            pass
        else:
            return truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context = ssl.create_default_context()  # CERT_REQUIRED, check_hostname, system paths
    paths = ssl.get_default_verify_paths()
    has_system_store = any(
        path and os.path.exists(path)
        for path in (paths.cafile, paths.capath, paths.openssl_cafile, paths.openssl_capath)
    )
    if not has_system_store:
        try:
            import certifi  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            pass
        else:
            context.load_verify_locations(cafile=certifi.where())
    return context


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """The shared client context (see the module docstring); built on first use."""
    context = _system_context()
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.set_alpn_protocols(["http/1.1"])
    return context


async def start_tls(
    tcp: trio.abc.Stream, host: str, context: ssl.SSLContext
) -> trio.SSLStream[trio.abc.Stream]:
    """``tcp`` wrapped in TLS for ``host`` (SNI and hostname check), handshake done.

    The TCP stream is closed if the handshake fails or is cancelled.

    Raises:
        trio.BrokenResourceError: the handshake failed (its ``__cause__`` is the
            ``ssl.SSLError``, e.g. ``SSLCertVerificationError``).
    """
    stream = trio.SSLStream(tcp, context, server_hostname=host, https_compatible=True)
    try:
        await stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream
