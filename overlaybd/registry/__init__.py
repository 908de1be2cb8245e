"""Registry access: HTTP client (client.py), URL resolution and tokens (auth.py), credential
providers (creds.py) and the remote blob file object (blob.py)."""

from .blob import RegistryBlob, RegistryContext, context_for, reason_for
from .creds import CredentialProvider, match_auths

__all__ = ["RegistryBlob", "RegistryContext", "context_for", "reason_for", "CredentialProvider",
           "match_auths"]
