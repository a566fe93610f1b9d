"""What one ``configure`` froze: the values every request of that configuration reads.

A Server builds a new Settings on each successful configure (and adds its
metrics recorder when it starts serving); drivers and the exchange read the
current one once per request. Nothing writes its attributes.
"""

from . import forwarding
from .compression import Policy
from .request import Limits


def freeze(cfg, handle, certificates, access, recorder, redis, logger):
    """The Settings of the merged config ``cfg`` and what configure built for it."""
    return Settings(handle=handle, stream_body=getattr(handle, "stream_body", False), cfg=cfg,
                    limits=Limits.from_config(cfg), compression=Policy(cfg["compression"]),
                    trusted=forwarding.TrustedProxies(cfg["trusted_proxies"]), access=access,
                    recorder=recorder, redis=redis, logger=logger, certificates=certificates)


class Settings:
    """handle, stream_body, cfg, limits, compression, trusted, access, recorder,
    redis, logger, certificates (see /docs/architecture.rst)."""

    __slots__ = ("handle", "stream_body", "cfg", "limits", "compression", "trusted", "access",
                 "recorder", "redis", "logger", "certificates")

    def __init__(self, **values):
        for name in self.__slots__:
            object.__setattr__(self, name, values.get(name))

    def __setattr__(self, name, value):
        raise AttributeError("Settings are frozen; use replace()")

    def replace(self, **changes):
        """A copy with ``changes`` applied."""
        values = {name: getattr(self, name) for name in self.__slots__}
        values.update(changes)
        return Settings(**values)
