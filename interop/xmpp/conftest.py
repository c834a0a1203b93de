"""Makes the XMPP fixtures (fixtures.py) available to the tests in this folder. If the suite's
root conftest also loads them (`pytest_plugins = ["xmpp.fixtures"]`), the hooks there are
idempotent and the definitions here simply take precedence for this folder."""

from .fixtures import *  # noqa: F401,F403
