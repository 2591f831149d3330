"""Who acts: the principal the registry authenticated, never a name the caller types.

Against an MLflow tracking server with basic auth, the principal is the MLflow user whose credentials
the server accepted (asked of the server itself: /users/get for that user, which only the user may read). In embedded mode there is no server
to ask; the principal is the operating-system account running the command, which is what logged in.
"""
from __future__ import annotations

import getpass
import socket


class PrincipalError(RuntimeError):
    """The registry did not accept the caller's credentials, or there were none to give it."""


def os_principal() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def authenticated_principal(tracking_uri: str, username: str | None, password: str | None) -> str:
    """The MLflow user the tracking server authenticated, or the OS account for an embedded store."""
    if not tracking_uri.startswith(("http://", "https://")):
        return os_principal()
    import requests

    if not username:
        raise PrincipalError(f"{tracking_uri} is a tracking server: release actions need your own MLflow "
                             "credentials (MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)")
    base = tracking_uri.rstrip("/")
    try:
        r = requests.get(f"{base}/api/2.0/mlflow/users/get", params={"username": username},
                         auth=(username, password or ""), timeout=30)
    except requests.RequestException as e:
        raise PrincipalError(f"{tracking_uri}: could not reach the tracking server to authenticate: {e}") from None
    if r.status_code == 200 and r.json().get("user", {}).get("username") == username:
        return username
    if r.status_code in (401, 403):
        raise PrincipalError(f"{tracking_uri} refused the credentials of MLflow user {username!r}")
    raise PrincipalError(f"{tracking_uri} runs without MLflow's basic-auth app (users/get answered "
                         f"{r.status_code}): release actions there cannot be attributed to a person; start it "
                         "with --app-name basic-auth")
