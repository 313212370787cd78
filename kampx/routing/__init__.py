"""The route-script API: `from kampx.routing import *` in a script gives every function
Kamailio's KEMI would (see api.py and its siblings)."""
from kampx.routing.api import *  # noqa: F401,F403
from kampx.routing.api import __all__ as _core_all
from kampx.routing.api_registrar import *  # noqa: F401,F403
from kampx.routing.api_registrar import __all__ as _registrar_all
from kampx.routing.api_auth import *  # noqa: F401,F403
from kampx.routing.api_auth import __all__ as _auth_all

__all__ = list(_core_all) + list(_registrar_all) + list(_auth_all)
