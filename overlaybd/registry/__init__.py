"""Registry access: HTTP client (client.py), URL resolution and tokens (auth.py), credential
providers (creds.py) and the remote blob file object (blob.py)."""

from .blob import RegistryBlob, RegistryContext, context_for, reason_for
from .creds import CredentialProvider, match_auths

__all__ = [
           "CredentialProvider",
           "RegistryBlob",
           "RegistryContext",
           "context_for",
           "match_auths",
           "reason_for",
]
