"""TLS settings shared by the model server and its client (PEM files; optional mutual TLS)."""

from __future__ import annotations

import dataclasses

import grpc


def _read(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise FileNotFoundError(f"cannot read the {what} '{path}': {e.strerror}.") from e


@dataclasses.dataclass(frozen=True)
class TlsConfig:
    """PEM files for a TLS gRPC channel.

    Server side: ``cert_file``/``key_file`` are the server's certificate chain and private key
    (both required); with ``ca_file`` the server requires client certificates signed by that CA
    (mutual TLS).
    Client side: ``ca_file`` is the trust root for the server's certificate (None = system roots);
    ``cert_file``/``key_file`` are the client's own certificate for mutual TLS (optional, both or
    neither); ``server_name`` overrides the host name checked against the server's certificate.
    """

    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    server_name: str | None = None

    def __post_init__(self):
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError(
                "TlsConfig needs both cert_file and key_file (a certificate and its private key) or neither; "
                f"got cert_file={self.cert_file!r}, key_file={self.key_file!r}."
            )

    def server_credentials(self) -> grpc.ServerCredentials:
        """Server credentials; requires client certificates when ``ca_file`` is set."""
        if self.cert_file is None:
            raise ValueError("a TLS server needs cert_file and key_file (PEM certificate chain and private key).")
        root = _read(self.ca_file, "CA certificate (ca_file)")
        return grpc.ssl_server_credentials(
            [(_read(self.key_file, "private key (key_file)"), _read(self.cert_file, "certificate (cert_file)"))],
            root_certificates=root,
            require_client_auth=root is not None,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Client credentials: trust ``ca_file`` (or system roots), present ``cert_file`` if set."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "CA certificate (ca_file)"),
            private_key=_read(self.key_file, "private key (key_file)"),
            certificate_chain=_read(self.cert_file, "certificate (cert_file)"),
        )

    def channel_options(self) -> list[tuple[str, str]]:
        """Extra channel options (the server-name override, if any)."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []
